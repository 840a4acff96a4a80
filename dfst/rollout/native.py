"""Build and load the native lockstep kernel (``lockstep.c``), or fall back to numba.

The C kernel is compiled on first use with the system C compiler
(``$CC``, default ``cc``) for the host CPU (``-march=native``).  The shared
library is cached under ``$DFST_CACHE_DIR`` (default ``~/.cache/dfst``), keyed
by the source, the flags, the compiler version and the CPU's feature flags.  It computes exactly what the
numba kernel in :mod:`dfst.rollout.kernel` computes, with interleaved lanes
so several rollouts share the pipeline.  Without a working compiler, or with
``DFST_KERNEL=numba``, the numba kernel runs instead.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from dfst.rollout import kernel

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("lockstep.c")
# -ffp-contract=off fuses nothing but the kernel's explicit fma calls, as the numba kernel does;
# -fno-tree-loop-distribute-patterns keeps short copy loops inline instead of calling memcpy.
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-tree-loop-distribute-patterns", "-fPIC", "-shared",
         "-std=c11")
# Largest number of 64-byte vectors per row of W that lockstep.c handles (MAX_VECTORS there).
MAX_VECTORS = 16
_POINTER = ctypes.c_void_p
_INT = ctypes.c_int64
_ARGUMENTS = [_POINTER, _INT, _INT, _INT, _INT] + [_POINTER] * 11


def cache_dir() -> Path:
    return Path(os.environ.get("DFST_CACHE_DIR", Path.home() / ".cache" / "dfst"))


def _compiler_version(compiler: str) -> str:
    result = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30, check=True)
    return result.stdout


def _cpu_flags() -> str:
    """Return the CPU feature flags (Linux), so -march=native builds are not shared across CPU models."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        return platform.processor()


def _build(compiler: str) -> Path:
    identity = SOURCE.read_bytes() + " ".join(FLAGS).encode() + _compiler_version(compiler).encode()
    key = hashlib.sha256(identity + _cpu_flags().encode()).hexdigest()[:16]
    target = cache_dir() / f"lockstep-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # compile to a private name, then rename, so concurrent processes never load a partial file
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        partial = Path(scratch) / target.name
        subprocess.run([compiler, *FLAGS, "-o", str(partial), str(SOURCE)], capture_output=True, text=True,
                       timeout=300, check=True)
        os.replace(partial, target)
    logger.info("compiled the native rollout kernel to %s", target)
    return target


@functools.cache
def native_kernels() -> dict[str, ctypes._CFuncPtr] | None:
    """Return the C kernels by dtype name, or None when they cannot be built or DFST_KERNEL=numba."""
    if os.environ.get("DFST_KERNEL", "native") == "numba":
        return None
    compiler = os.environ.get("CC", "cc")
    try:
        library = ctypes.CDLL(str(_build(compiler)))
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", "") or error
        logger.warning("native rollout kernel unavailable (%s); using the slower numba kernel", detail)
        return None
    functions = {}
    for dtype in ("float32", "float64"):
        function = getattr(library, f"lockstep_{dtype}")
        function.restype = _INT
        function.argtypes = _ARGUMENTS
        functions[dtype] = function
    return functions


def kernel_name() -> str:
    """Return "native" or "numba": the kernel that :func:`run_lanes` uses in this process."""
    return "native" if native_kernels() is not None else "numba"


def run_lanes(W, num_symbols, hidden, cells, offsets, widths, heights, rows, cols, steps, targets, status) -> int:
    """Run :func:`dfst.rollout.kernel.lockstep` or its C twin; arguments and effects are the same."""
    functions = native_kernels()
    if functions is None or W.shape[2] > MAX_VECTORS * kernel.VECTOR_WIDTH[W.dtype.name]:
        return kernel.lockstep(W, num_symbols, hidden, cells, offsets, widths, heights, rows, cols, steps, targets,
                               status)
    for array in (W, hidden, cells, offsets, widths, heights, rows, cols, steps, targets, status):
        assert array.flags.c_contiguous
    active = np.empty(len(status), dtype=np.int64)
    num_lanes, d = hidden.shape
    total = functions[W.dtype.name](
        W.ctypes.data, num_symbols, d, W.shape[2], num_lanes, hidden.ctypes.data, cells.ctypes.data,
        offsets.ctypes.data, widths.ctypes.data, heights.ctypes.data, rows.ctypes.data, cols.ctypes.data,
        steps.ctypes.data, targets.ctypes.data, status.ctypes.data, active.ctypes.data,
    )
    if total < 0:
        raise ValueError(f"padded score width {W.shape[2]} is not a multiple of the vector width or above its maximum")
    return total
