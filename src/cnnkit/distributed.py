"""Data-parallel training over processes and devices: ``train.distribute=data_parallel``.

The engine is Keras's own, ``keras.distribution.DataParallel`` on the JAX backend: every variable
is replicated on every device of every process, each global batch is split over the devices, and
XLA all-reduces the gradients (and BatchNorm's batch statistics: they are those of the global
batch). Processes join through ``keras.distribution.initialize``, from the variables
``KERAS_DISTRIBUTION_JOB_ADDRESSES``, ``KERAS_DISTRIBUTION_NUM_PROCESSES`` and
``KERAS_DISTRIBUTION_PROCESS_ID`` (what ``cnnkit launch`` sets) or from a cluster's launcher that
JAX detects (Slurm, Open MPI).

What this module owns, so that the rest of cnnkit asks a :class:`Group` instead of JAX:

- which process this is, how many there are, and how many devices in all;
- the share of each global batch that this process feeds (:meth:`Group.shard`): every process
  draws the same seeded epoch order and takes its slice of every batch, so that the global batch
  is the one a single process would have trained on;
- agreement: a barrier at each checkpoint commit, "does any process want to stop" at each step
  (Ctrl-C or SIGTERM on any of them stops all at the same step), and the run folder's path
  handed from process 0, the only one that writes;
- the end of training: the processes leave the group together, and process 0 alone evaluates
  and reports on its own devices.

TensorFlow stays the engine of one-process training: its ``keras.distribution`` is a prototype
and MultiWorkerMirroredStrategy does not work with Keras 3's ``fit`` (keras-team/keras#20585).
PyTorch's DataParallel is on Keras's master but in no release (3.15): :data:`ENGINES` is where it
goes when it ships.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnkit.env import joining
from cnnkit.errors import ConfigError

log = logging.getLogger(__name__)

# The Keras backends whose keras.distribution trains data-parallel in a released Keras.
ENGINES = ("jax",)


@dataclass(frozen=True)
class Group:
    """The processes that train one run together (one process, one device: :data:`SINGLE`)."""

    process_id: int = 0
    num_processes: int = 1
    devices: int = 1  # of all processes
    distributed: bool = False  # a keras.distribution is set

    @property
    def primary(self) -> bool:
        """Process 0: the one that writes the run folder and evaluates."""
        return self.process_id == 0

    def shard(self, order: np.ndarray, batch: int) -> np.ndarray:
        """This process's images of ``order`` cut into global batches of ``batch``: its slice of
        each batch, so that the processes' slices put together are the batch. A last, shorter
        batch is first cut to a multiple of the devices (each device takes an equal share): at
        most ``devices - 1`` images of an epoch are left out, a different few each epoch."""
        if not self.distributed:
            return order
        full = len(order) // batch * batch
        rest = (len(order) - full) // self.devices * self.devices
        n, p = self.num_processes, self.process_id
        body = order[:full].reshape(-1, batch)[:, p * batch // n : (p + 1) * batch // n]
        tail = order[full : full + rest][p * rest // n : (p + 1) * rest // n]
        return np.concatenate([body.ravel(), tail])

    def local_batch(self, batch: int) -> int:
        """What this process feeds of a global batch of ``batch``."""
        return batch // self.num_processes if self.distributed else batch

    def barrier(self, name: str) -> None:
        """Wait until every process reaches this point (a checkpoint committed, say)."""
        if self.num_processes > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true in any process (every process gets the same answer)."""
        if self.num_processes == 1:
            return flag
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.array([int(flag)], dtype=np.int32))
        return bool(np.asarray(flags).any())

    def broadcast(self, text: str) -> str:
        """Process 0's ``text``, in every process."""
        if self.num_processes == 1:
            return text
        from jax.experimental import multihost_utils

        data = np.frombuffer(text.encode(), dtype=np.uint8) if self.primary else np.zeros(0)
        size = int(multihost_utils.broadcast_one_to_all(np.int32(len(data))))
        buffer = np.zeros(size, dtype=np.uint8)
        buffer[: len(data)] = data[:size]
        return bytes(np.asarray(multihost_utils.broadcast_one_to_all(buffer))).decode()

    def start(self) -> None:
        """Set Keras's DataParallel distribution over every device of the group: the network
        built next has its variables on all of them (``keras.backend.clear_session`` forgets it,
        so this comes just before the training network is built)."""
        if not self.distributed:
            return
        import jax
        import keras

        keras.distribution.set_distribution(
            # Each process feeds its own share of every batch (Group.shard), so nothing is
            # sharded for it; auto_shard_dataset only applies to tf.data pipelines.
            keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=False)
        )

    def finish(self) -> None:
        """Leave the group (every process together) and drop the distribution, so that process 0
        can evaluate on its own devices."""
        if not self.distributed:
            return
        import jax
        import keras

        if self.num_processes > 1:
            jax.distributed.shutdown()
        keras.distribution.set_distribution(None)


SINGLE = Group()


def join(distribute: str, batch_size: int) -> Group:
    """Join the processes of a ``train.distribute`` run (nothing for ``none``); refuse, in one
    line, a backend without a data-parallel engine or a global batch that does not split evenly
    over the devices. :meth:`Group.start` then sets the distribution."""
    if distribute == "none":
        return SINGLE
    from cnnkit import env

    backend = env.backend_name()
    if backend not in ENGINES:
        raise ConfigError(
            f"train.distribute={distribute} trains with keras.distribution on the JAX backend, "
            f"not {backend}: run it with KERAS_BACKEND=jax (pip install 'cnnkit[jax]'; the run's "
            f"model.keras works on every backend afterwards), or resume such a run in one "
            f"process with train.distribute=none"
        )
    env.require("jax", f"train.distribute={distribute}", "jax")
    keras = env.import_keras()
    import jax

    if joining() and not jax.distributed.is_initialized():
        with env.filtered_stderr():
            keras.distribution.initialize()
    devices = jax.devices()
    group = Group(jax.process_index(), jax.process_count(), len(devices), distributed=True)
    if batch_size % group.devices:
        fits = max(group.devices, batch_size // group.devices * group.devices)
        raise ConfigError(
            f"train.batch_size={batch_size} is the global batch and must divide by the "
            f"{group.devices} devices of the {group.num_processes} process(es) training together; "
            f"use train.batch_size={fits}"
        )
    log.debug("process %d of %d, %d device(s) in all", group.process_id, group.num_processes,
              group.devices)  # fmt: skip
    return group


def describe(group: Group) -> dict[str, Any]:
    """What run.json records about how a run (or one session of it) was trained."""
    return {"processes": group.num_processes, "devices": group.devices}
