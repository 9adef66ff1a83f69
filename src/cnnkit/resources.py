"""What a run will need of the machine, checked before a run folder exists: memory and disk.

A setting inside its allowed range can still ask for more than the machine has
(``data.image_size=1000`` on a 2,000-image dataset wants ~20 GB of activations): it is refused
with a one-line error that says what fits, rather than ending in ``std::bad_alloc`` hours later
with a run left "running". The estimates are deliberately simple (measured factors over the
network's activations, the batch and the decoded images) and on the high side.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit.errors import ConfigError, RunError

MEMORY_ENV = "CNNKIT_MEMORY_LIMIT_MB"  # pretend the machine has this much (or allow more)
# Training keeps every layer's output for the backward pass and a gradient beside it, with the
# framework's temporaries: fitted to peak RSS of seed_cnn on 1,797 digits at 128 and 256 pixels
# (2.72 and 6.72 GB, batch 64, TensorFlow 2.21 on an AVX2-only CPU), this took 1.55 bytes per
# batch x activations x 4 bytes, and evaluation (batch 512, forward only) less than its largest
# layer's output. Both factors are rounded up, so that the estimate errs high (~1.3-1.4x there).
TRAIN_FACTOR = 2.0
EVAL_FACTOR = 1.5
BASE_BYTES = 1_500_000_000  # the framework itself, a model and a data pipeline (~1.4 GB fitted)


def available_memory() -> int:
    """Bytes this process may still allocate: the system's available memory, within the
    cgroup's limit where there is one (a container), or ``$CNNKIT_MEMORY_LIMIT_MB``."""
    if os.environ.get(MEMORY_ENV):
        try:
            return int(float(os.environ[MEMORY_ENV]) * 1e6)
        except ValueError:
            raise ConfigError(f"{MEMORY_ENV} must be a number of MB") from None
    free = _meminfo_available()
    limit = _cgroup_room()
    return min(free, limit) if limit is not None else free


def _meminfo_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # not Linux: all physical memory
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def _cgroup_room() -> int | None:
    for limit_file, used_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            limit_text = Path(limit_file).read_text().strip()
            if limit_text == "max" or int(limit_text) >= 1 << 60:
                return None
            return int(limit_text) - int(Path(used_file).read_text().strip())
        except (OSError, ValueError):
            continue
    return None


def layer_outputs(net: Any) -> list[int]:
    """The number of values each layer of ``net`` (nested models included) outputs per image."""
    sizes: list[int] = []
    for layer in net.layers:
        if getattr(layer, "layers", None):
            sizes.extend(layer_outputs(layer))
            continue
        try:
            outputs = layer.output
        except (AttributeError, ValueError):
            continue
        for output in outputs if isinstance(outputs, list | tuple) else [outputs]:
            dims = tuple(output.shape[1:])
            if dims and all(d is not None for d in dims):
                sizes.append(math.prod(int(d) for d in dims))
    return sizes


@dataclass(frozen=True)
class NetworkSize:
    """A network's weights and per-image activations as affine functions of its input's pixel
    count, from two builds at small sizes: a convolutional network's activations grow with the
    pixels, and so do the weights of a dense layer over its flattened features. Building it at
    the real size to count would itself take what is being checked (1 billion weights for
    seed_cnn at 1,000 x 1,000: 36 s and 12 GB just to initialise them)."""

    pixels: tuple[int, int]
    params: tuple[int, int]
    activations: tuple[int, int]  # values every layer outputs for one image, summed
    largest: tuple[int, int]  # the largest layer's output for one image

    @staticmethod
    def _at(values: tuple[int, int], pixels: tuple[int, int], p: float) -> float:
        (p1, p2), (v1, v2) = pixels, values
        return float(v1) if p1 == p2 else v1 + (v2 - v1) * (p - p1) / (p2 - p1)

    def at(self, pixels: float) -> tuple[float, float, float]:
        """(weights, activations, largest layer) for an input of ``pixels`` pixels."""
        return (self._at(self.params, self.pixels, pixels),
                self._at(self.activations, self.pixels, pixels),
                self._at(self.largest, self.pixels, pixels))  # fmt: skip


PROBE_SIDE = 128  # networks up to this side are built at their size; larger ones are extrapolated


def network_size(
    build: Callable[[tuple[int, int, int]], Any], shape: tuple[int, ...]
) -> NetworkSize:
    """Measure what ``build(input_shape)`` makes for ``shape`` (exactly up to PROBE_SIDE; above it,
    extrapolated from builds at PROBE_SIDE and half of it)."""
    height, width, channels = (int(v) for v in shape)
    if max(height, width) <= PROBE_SIDE:
        probes = [(height, width)]
    else:
        scale = PROBE_SIDE / max(height, width)
        big = (max(32, round(height * scale)), max(32, round(width * scale)))
        probes = [(max(32, big[0] // 2), max(32, big[1] // 2)), big]
    measured = []
    for h, w in probes:
        net = build((h, w, channels))
        sizes = layer_outputs(net) or [0]
        measured.append((h * w, net.count_params(), sum(sizes), max(sizes)))
        del net
    first, last = measured[0], measured[-1]
    return NetworkSize(*((first[i], last[i]) for i in range(4)))  # type: ignore[arg-type]


def training_memory(size: NetworkSize, pixels: float, batch: int, eval_batch: int) -> float:
    """Bytes training needs beyond the data already in memory (an estimate, on the high side)."""
    params, activations, largest = size.at(pixels)
    train = TRAIN_FACTOR * batch * activations * 4
    evaluate = EVAL_FACTOR * eval_batch * largest * 4  # forward only: the largest layer dominates
    weights = params * 4 * 6  # weights, gradients, optimizer moments, the best copy
    return BASE_BYTES + max(train, evaluate) + weights


def require_training_memory(size: NetworkSize, shape: tuple[int, ...], config: Any) -> None:
    """Refuse a run whose training would not fit in memory, saying which batch size or image
    size would."""
    height, width = int(shape[0]), int(shape[1])
    batch, eval_batch = config.train.batch_size, config.train.eval_batch_size
    needed = training_memory(size, height * width, batch, eval_batch)
    room = available_memory()
    if needed <= room:
        return
    fits = []
    smaller_batch = next((b for b in _halvings(batch)
                          if training_memory(size, height * width, b, min(b, eval_batch)) <= room), 0)  # fmt: skip
    if smaller_batch:
        fits.append(
            f"train.batch_size={smaller_batch} (with train.eval_batch_size={min(smaller_batch, eval_batch)})"
        )
    side = max(height, width)
    while (
        side > 8
        and training_memory(
            size,
            (side * height / max(height, width)) * (side * width / max(height, width)),
            batch,
            eval_batch,
        )
        > room
    ):
        side = side * 7 // 8
    if side > 8:
        fits.append(f"data.image_size={side // 8 * 8}")
    advice = (" or ".join(fits) + " would fit") if fits else "choose a smaller model"
    raise ConfigError(
        f"this run needs about {needed / 1e9:.1f} GB of memory (batch {batch} of "
        f"{height}x{width} images through model {config.model.name}) and {room / 1e9:.1f} GB is "
        f"available; {advice} (or set {MEMORY_ENV} to allow more)"
    )


def _halvings(batch: int) -> list[int]:
    out = []
    while batch > 1:
        batch //= 2
        out.append(batch)
    return out


def require_data_memory(images: int, shape: tuple[int, ...], what: str) -> None:
    """Refuse to hold ``images`` decoded images of ``shape`` (uint8) in memory when they cannot fit."""
    needed = images * math.prod(shape)
    room = available_memory() - BASE_BYTES
    if needed <= room:
        return
    side = int(math.sqrt(max(room, 0) / max(1, images * shape[-1]))) // 8 * 8
    raise ConfigError(
        f"{what}: {images:,} images of {'x'.join(map(str, shape))} need {needed / 1e9:.1f} GB of "
        f"memory and {max(room, 0) / 1e9:.1f} GB is available; "
        + (f"data.image_size={side} fits" if side >= 8 else "use data.train_subset")
        + f" (or set {MEMORY_ENV} to override the check)"
    )


def require_free_space(folder: Path, needed: int) -> None:
    """Refuse to start when checkpoints cannot fit, rather than failing an hour later."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:  # the runs folder may not exist yet
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise RunError(
            f"{folder} has {free / 1e6:.0f} MB free; training needs about {needed / 1e6:.0f} MB for "
            f"checkpoints: free some space or pass --runs-dir on another disk"
        )


def checkpoint_bytes(size: NetworkSize, pixels: float) -> int:
    """Disk a run's checkpoints need: about three copies of the weights (weights and Adam's two
    moments), written beside the last one, and the networks (best, last, model), one copy each."""
    return int(size.at(pixels)[0] * 4 * 12 + 50_000_000)
