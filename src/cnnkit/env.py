"""The machine and the backend: heavy imports, precision choice and the environment record.

Keras is imported through :func:`import_keras` so that TensorFlow's start-up chatter (the absl
pre-init banner, the oneDNN notice, "could not find cuda drivers") does not bury the output.
Other lines TensorFlow prints while importing are passed through; ``--debug`` passes all.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import re
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType
from typing import Any

# Lines TensorFlow prints on every start that say nothing a user can act on.
_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations are on"
    r"|cudart_stub|Could not find cuda drivers|cpu_feature_guard|To enable the following instructions"
    r"|failed call to cuInit|Unable to register cu(DNN|FFT|BLAS) factory|computation placer already"
    r"|TF-TRT Warning|This TensorFlow binary is optimized"
)

_VERBOSE = False
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
_X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def configure_cpu() -> None:
    """Set what TensorFlow reads only when it is imported; called when cnnkit is imported.

    oneDNN: TensorFlow turns its oneDNN kernels on by default only on CPUs with AVX512-VNNI,
    AVX512-BF16 or AMX, and runs Eigen's elsewhere: on an AVX2-only 2-core EPYC the fast_cnn
    step took 6.0-7.2 s with Eigen and 4.0-4.4 s with oneDNN (batch 512, float32; issue 16).
    So oneDNN is on for every x86 CPU, unless the user set ``TF_ENABLE_ONEDNN_OPTS`` (their
    value is kept) or TensorFlow was imported first (then what it chose stands; :func:`describe`
    reports what is active either way)."""
    if "tensorflow" in sys.modules:
        return
    if platform.machine().lower() in _X86:
        os.environ.setdefault(ONEDNN_ENV, "1")


def onednn_active() -> bool | None:
    """Whether TensorFlow runs oneDNN kernels in this process (None: not known here)."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def set_verbose(verbose: bool) -> None:
    """Let every line the frameworks print through (the CLI's ``--debug``)."""
    global _VERBOSE
    _VERBOSE = verbose


def backend_name() -> str:
    """The Keras backend that will be (or was) used; TensorFlow unless KERAS_BACKEND says otherwise."""
    if "keras" in sys.modules:
        return str(sys.modules["keras"].backend.backend())
    return os.environ.get("KERAS_BACKEND", "tensorflow")


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Pass on what C++ code prints to stderr meanwhile, less :data:`_NOISE` (all of it with
    ``--debug``)."""
    if _VERBOSE:
        yield
        return
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines():
                if line.strip() and not _NOISE.search(line):
                    print(line, file=sys.stderr)


def set_random_seed(seed: int) -> None:
    """``keras.utils.set_random_seed``: Python, NumPy, the backend, and TensorFlow when it is
    installed, whatever the backend (whose import is filtered like Keras's)."""
    keras = import_keras()
    with filtered_stderr():
        keras.utils.set_random_seed(seed)


@functools.cache
def import_keras() -> ModuleType:
    """Import Keras (and its backend) once, with the start-up noise filtered out."""
    if not _VERBOSE:
        # TensorFlow's C++ errors that matter reach Python as exceptions; the rest (such as
        # "NodeDef mentions attribute use_unbounded_threadpool" under op determinism) is noise.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with filtered_stderr():
        import keras

        # Device start-up prints here, inside the filter (XLA prints TensorFlow's lines too).
        if backend_name() == "tensorflow":
            import tensorflow as tf

            tf.config.list_logical_devices()
        elif backend_name() == "jax" and not joining():
            import jax

            jax.devices()  # (not before the processes of a distributed run have joined)
    return keras


# How a process learns that it is one of several training one run: cnnkit launch sets Keras's
# variables (keras.distribution.initialize reads them); a cluster's launcher that JAX detects on
# its own (Slurm, Open MPI) sets its own.
ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
NUM_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"
CLUSTER_VARIABLES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def joining() -> bool:
    """Whether this process was started as one of several (by cnnkit launch, or a cluster)."""
    if int(os.environ.get(NUM_PROCESSES, "1") or 1) > 1:
        return True
    return any(int(os.environ.get(name, "1") or 1) > 1 for name in CLUSTER_VARIABLES)


def cnnkit_version() -> str:
    """The installed cnnkit's version (pyproject.toml's), or ``0+unknown`` for a checkout run
    from its source folder without being installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cnnkit")
    except PackageNotFoundError:
        return "0+unknown"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_bf16() -> bool:
    """True where oneDNN has bf16 instructions to run mixed_bfloat16 fast (AMX or AVX512-BF16)."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def accelerators() -> list[str]:
    """The GPUs the active Keras backend can see (imports the backend)."""
    import_keras()
    name = backend_name()
    if name == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices("GPU")]
    if name == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform != "cpu"]
    if name == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def resolve_precision(setting: str) -> str:
    """Map ``train.precision`` (auto, bf16, fp32) to a Keras dtype policy name."""
    if setting == "bf16":
        return "mixed_bfloat16"
    if setting == "fp32":
        return "float32"
    return "mixed_bfloat16" if accelerators() or cpu_has_bf16() else "float32"


def enable_determinism() -> None:
    """Ask the backend for bit-identical results from run to run (``train.deterministic``)."""
    name = backend_name()
    if name == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif name == "torch":
        import torch

        torch.use_deterministic_algorithms(True)
    # JAX on a CPU is deterministic already; on a GPU set XLA_FLAGS=--xla_gpu_deterministic_ops=true.


def require(packages: str | tuple[str, ...], feature: str, extra: str) -> None:
    """Refuse ``feature`` with a one-line error when an optional package is not installed."""
    import importlib.util

    from cnnkit.errors import CnnkitError

    names = (packages,) if isinstance(packages, str) else packages
    missing = [name for name in names if importlib.util.find_spec(name) is None]
    if missing:
        what = f"the {names[0]} package" if len(names) == 1 else " and ".join(names)
        raise CnnkitError(f"{feature} needs {what}: pip install 'cnnkit[{extra}]'")


def describe_environment() -> dict[str, Any]:
    """What ``cnnkit env`` shows: :func:`describe`, and the precision ``train.precision=auto``
    picks on this machine."""
    return {**describe(), "precision_auto": resolve_precision("auto")}


def describe() -> dict[str, Any]:
    """What a run records about where it ran: versions, backend, CPU, accelerators."""
    keras = import_keras()
    import numpy
    import sklearn

    info: dict[str, Any] = {
        "cnnkit": cnnkit_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "keras": keras.__version__,
        "backend": backend_name(),
        "numpy": numpy.__version__,
        "scikit_learn": sklearn.__version__,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_bf16": cpu_has_bf16(),
        "cpu_flags": sorted(
            f for f in cpu_flags() if f.startswith(("avx", "amx", "fma", "sse4")) or f == "f16c"
        ),
        "accelerators": accelerators(),
    }
    backend = backend_name()
    if backend == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        info["onednn"] = onednn_active()  # what runs, not what the variable says
        info["onednn_setting"] = os.environ.get(ONEDNN_ENV, "(unset)")
    elif backend == "jax":
        import jax

        info["jax"] = jax.__version__
    elif backend == "torch":
        import torch

        info["torch"] = torch.__version__
    return info
