"""``cnnkit launch``: start the processes of a data-parallel run on this machine and watch them.

Like ``torchrun --standalone``: ``launch(["train", ...], nproc=N)`` starts N ``cnnkit train``
processes with the variables that ``keras.distribution.initialize`` reads
(``KERAS_DISTRIBUTION_JOB_ADDRESSES``, ``..._NUM_PROCESSES``, ``..._PROCESS_ID``), the JAX
backend and ``train.distribute=data_parallel``, then supervises them:

- process 0's output is the run's (its narrative, progress and the run folder, last); the other
  processes' output is kept back, but for their errors;
- Ctrl-C or SIGTERM is passed to every process: they agree on a step, save and stop together
  (a second Ctrl-C kills them);
- when a process dies (a kill, a crash, the out-of-memory killer), the others would wait for it
  in their next collective until JAX's heartbeat timeout (100 s) and then abort with pages of
  C++ logs. Instead the launcher stops them at once (SIGTERM, then SIGKILL after ``grace``
  seconds: a process stuck in a collective cannot commit anything, so the last checkpoint is
  intact) and says in one line which process died.

Several machines: run one launcher per machine with ``nodes``, ``node_rank`` and the
``coordinator`` address of node 0 (what ``torchrun --nnodes --node-rank --rdzv-endpoint`` take);
under Slurm or Open MPI the processes can also be started by ``srun``/``mpirun`` directly, as JAX
detects them (the scale-out guide, docs/guides/scale-out.md).

Only the standard library is imported here: the launcher itself never starts Keras.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from cnnkit.env import ADDRESSES, NUM_PROCESSES, PROCESS_ID
from cnnkit.errors import CnnkitError

# What JAX, XLA and gloo print that says nothing a user can act on (and the pages of C++ log and
# stack trace of a process that JAX aborts because another one died).
_NOISE = re.compile(
    r"^([IWEF]\d{4} \d\d:\d\d:\d\d|\s+@ |\*\*\* |WARNING: All log messages|\[Gloo\]"
    r"|Additional GRPC error|:UNKNOWN:|RPC: /|Barrier result|This suggests|The tasks have"
    r"|\d+$|\s*$)"
)
_PEER = re.compile(r"Task (\d+) heartbeat timeout")


@dataclass
class _Worker:
    rank: int  # the process id in the whole run
    process: subprocess.Popen[str]
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    errors: list[str] = field(default_factory=list)


def launch(
    args: Sequence[str],
    nproc: int,
    nodes: int = 1,
    node_rank: int = 0,
    coordinator: str | None = None,
    grace: float = 10.0,
    debug: bool = False,
) -> int:
    """Run ``cnnkit ARGS`` (``train ...``) as ``nproc`` processes of a data-parallel run on this
    machine, processes ``node_rank * nproc ...`` of ``nodes * nproc``; return the exit status
    (0 when every process succeeded; else the first failure's: 1 for a process that died)."""
    args = list(args)
    if args[:1] == ["--"]:
        args = args[1:]
    if args[:1] != ["train"]:
        raise CnnkitError(
            "cnnkit launch runs `train` (new or --resume): cnnkit launch --nproc N -- train ..."
        )
    if nproc < 1 or nodes < 1 or not 0 <= node_rank < nodes:
        raise CnnkitError(
            f"--nproc and --nodes must be 1 or more and --node-rank in 0..{nodes - 1}"
        )
    if nodes > 1 and not coordinator:
        raise CnnkitError(
            "--nodes > 1 needs --coordinator HOST:PORT, an address of node 0 that every node "
            "reaches (the same on every node)"
        )
    backend = os.environ.get("KERAS_BACKEND", "jax")
    if backend != "jax":
        raise CnnkitError(
            f"data-parallel training runs on the JAX backend, not KERAS_BACKEND={backend}: "
            f"unset it or set KERAS_BACKEND=jax"
        )
    address = coordinator or f"127.0.0.1:{_free_port()}"
    total = nodes * nproc
    command = [sys.executable, "-m", "cnnkit", *(["--debug"] if debug else []), *args,
               "train.distribute=data_parallel"]  # fmt: skip
    workers = []
    for local in range(nproc):
        rank = node_rank * nproc + local
        env = {**os.environ, "KERAS_BACKEND": "jax", ADDRESSES: address,
               NUM_PROCESSES: str(total), PROCESS_ID: str(rank)}  # fmt: skip
        process = subprocess.Popen(
            command,
            env=env,
            # Process 0 speaks for the run (its stdout through a filter: gloo prints there).
            stdout=subprocess.PIPE if rank == 0 else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,  # signals reach them from the launcher only
        )
        workers.append(_Worker(rank, process))
    readers = [threading.Thread(target=_read, args=(w, debug), daemon=True) for w in workers]
    readers.append(threading.Thread(target=_pass_on, args=(workers[0], debug), daemon=True))
    for reader in readers:
        reader.start()
    return _supervise(workers, readers, total, grace, args)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _read(worker: _Worker, debug: bool) -> None:
    """Pass on process 0's messages (less the frameworks' noise); keep the others' back."""
    assert worker.process.stderr is not None
    for line in worker.process.stderr:
        line = line.rstrip("\n")
        worker.tail.append(line)
        if line.startswith("cnnkit: error:") or line.startswith("cnnkit: internal error:"):
            worker.errors.append(line)
        if worker.rank == 0 and (debug or not _NOISE.search(line)):
            print(line, file=sys.stderr, flush=True)


def _pass_on(worker: _Worker, debug: bool) -> None:
    """Process 0's stdout: the run's narrative and progress, and the run folder last."""
    assert worker.process.stdout is not None
    for line in worker.process.stdout:
        if debug or not _NOISE.search(line.rstrip("\n")):
            print(line, end="", flush=True)


def _supervise(
    workers: list[_Worker],
    readers: list[threading.Thread],
    total: int,
    grace: float,
    args: list[str],
) -> int:
    interrupts = 0

    def forward(signum: int, frame: object) -> None:
        nonlocal interrupts
        interrupts += 1
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGINT if interrupts == 1 else signal.SIGKILL)

    saved = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        failed: _Worker | None = None
        while any(w.process.poll() is None for w in workers):
            failed = failed or next((w for w in workers if (w.process.poll() or 0) != 0), None)
            if failed is not None:
                break
            time.sleep(0.1)
        failed = failed or next((w for w in workers if w.process.returncode != 0), None)
        if failed is None:
            return 0
        _stop(workers, grace)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    for reader in readers:
        reader.join(timeout=5)
    return _report(failed, workers, total, args)


def _stop(workers: list[_Worker], grace: float) -> None:
    """Let the others end on their own (they often fail together, as on bad input), then
    SIGTERM, then SIGKILL: within about ``grace`` seconds in all."""
    deadline = time.monotonic() + grace
    signalled = False
    while any(w.process.poll() is None for w in workers):
        left = deadline - time.monotonic()
        if left <= 0:
            for worker in workers:
                if worker.process.poll() is None:
                    worker.process.kill()
            break
        if not signalled and left < grace / 2:
            for worker in workers:
                if worker.process.poll() is None:
                    worker.process.terminate()
            signalled = True
        time.sleep(0.1)
    for worker in workers:
        worker.process.wait()


def _report(failed: _Worker, workers: list[_Worker], total: int, args: list[str]) -> int:
    """One line for the failure, unless process 0 has said it already; the exit status."""
    code = failed.process.returncode
    first = workers[0]
    if code > 0 and first.errors and first.process.returncode > 0:
        return first.process.returncode  # process 0's own one-line error, printed as it came
    if code > 0 and failed.errors:
        print(f"cnnkit: process {failed.rank}: {failed.errors[-1][len('cnnkit: ') :]}",
              file=sys.stderr)  # fmt: skip
        return code
    if code in (130, -signal.SIGINT):  # stopped on Ctrl-C; process 0 said how to resume
        return 130
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
    peer = next((m for line in failed.tail if (m := _PEER.search(line))), None)
    cause = f" after process {peer.group(1)} stopped answering (JAX's heartbeat)" if peer else ""
    resume = (
        "--resume RUN"
        if "--resume" not in args
        else " ".join(args[args.index("--resume") : args.index("--resume") + 2])
    )
    print(
        f"cnnkit: error: process {failed.rank} of {total} {how}{cause}; the others were stopped "
        f"and the last checkpoint is intact: continue with cnnkit launch --nproc N -- train "
        f"{resume} (any number of processes)",
        file=sys.stderr,
    )
    return 1
