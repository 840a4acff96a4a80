"""Build and load the native lockstep kernel (``lockstep.c``), or fall back to numba.

The C kernel is compiled on first use with the system C compiler
(``$CC``, default ``cc``) for the host CPU (``-march=native``), one shared
library per element type and number of 64-byte vectors in a row of W, so
that the vector count is a compile-time constant.  The libraries are cached
under ``$DFST_CACHE_DIR`` (default ``~/.cache/dfst``), keyed by the source,
the flags, the compiler version and the CPU's feature flags.  The kernel
computes exactly what the numba kernel in :mod:`dfst.rollout.kernel`
computes, stepping lanes with the same observed symbol together so that
they share each load of W.  Without a working compiler, or with
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
# the lane-major blocks, which lockstep.c includes
HEADER = Path(__file__).with_name("lockstep_blocks.h")
# -ffp-contract=off fuses nothing but the kernel's explicit fma calls, as the numba kernel does;
# -fno-tree-loop-distribute-patterns keeps short copy loops inline instead of calling memcpy.
# -funroll-loops unrolls the short argmax and mask loops (1 to 6% faster on mult2 and mult10 shapes).
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-tree-loop-distribute-patterns", "-funroll-loops",
         "-fPIC", "-shared", "-std=c11")
# Largest number of 64-byte vectors per row of W that lockstep.c handles, because its nonzero masks have 256 bits.
MAX_VECTORS = 16
# Largest alphabet that lockstep.c handles (MAX_SYMBOLS there), because cells are int8.
MAX_SYMBOLS = 128
_POINTER = ctypes.c_void_p
_INT = ctypes.c_int64
_ARGUMENTS = [_POINTER, _INT, _INT, _INT, _INT] + [_POINTER] * 12


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


def _build(compiler: str, dtype: str, vectors: int) -> Path:
    """Compile lockstep.c for one element type and vector count unless the cache has it, and return its path."""
    flags = (*FLAGS, f"-DLOCKSTEP_FLOAT64={int(dtype == 'float64')}", f"-DLOCKSTEP_VECTORS={vectors}")
    identity = SOURCE.read_bytes() + HEADER.read_bytes() + " ".join(flags).encode()
    identity += _compiler_version(compiler).encode()
    key = hashlib.sha256(identity + _cpu_flags().encode()).hexdigest()[:16]
    target = cache_dir() / f"lockstep-{dtype}-{vectors}-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # compile to a private name, then rename, so concurrent processes never load a partial file
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        partial = Path(scratch) / target.name
        subprocess.run([compiler, *flags, "-o", str(partial), str(SOURCE)], capture_output=True, text=True,
                       timeout=300, check=True)
        os.replace(partial, target)
    logger.info("compiled the native rollout kernel for %s, %d vectors per row, to %s", dtype, vectors, target)
    return target


class NativeKernels:
    """The C kernels of one compiler, built and loaded per (dtype, vectors per row) on first use."""

    def __init__(self, compiler: str):
        self.compiler = compiler
        self._functions: dict[tuple[str, int], ctypes._CFuncPtr | None] = {}
        self._libraries: dict[tuple[str, int], ctypes.CDLL] = {}

    def get(self, dtype: str, vectors: int) -> ctypes._CFuncPtr | None:
        """Return the kernel for ``dtype`` and ``vectors`` per row, or None when it fails to build."""
        key = (dtype, vectors)
        if key not in self._functions:
            try:
                library = ctypes.CDLL(str(_build(self.compiler, dtype, vectors)))
            except (OSError, subprocess.SubprocessError) as error:
                detail = getattr(error, "stderr", "") or error
                logger.warning("native rollout kernel for %s, %d vectors per row failed to build (%s); using the "
                               "slower numba kernel (set CC to a working C compiler to use the native one)",
                               dtype, vectors, detail)
                self._functions[key] = None
            else:
                self._libraries[key] = library
                function = getattr(library, f"lockstep_{dtype}")
                function.restype = _INT
                function.argtypes = _ARGUMENTS
                self._functions[key] = function
        return self._functions[key]

    def has_blocks(self, dtype: str, vectors: int) -> bool:
        """Return whether the kernel for ``dtype`` and ``vectors`` was built with lane-major blocks (AVX-512)."""
        if self.get(dtype, vectors) is None:
            return False
        return bool(ctypes.c_int64.in_dll(self._libraries[(dtype, vectors)], "lockstep_has_blocks").value)

    def block_steps(self) -> int:
        """Return the steps that the loaded kernels took in lane-major blocks, in this process."""
        return sum(ctypes.c_int64.in_dll(library, "lockstep_block_steps").value
                   for library in self._libraries.values())


@functools.cache
def native_kernels() -> NativeKernels | None:
    """Return the C kernels, or None when DFST_KERNEL=numba or the smallest one cannot be built."""
    if os.environ.get("DFST_KERNEL", "native") == "numba":
        return None
    kernels = NativeKernels(os.environ.get("CC", "cc"))
    # a probe build, so that kernel_name() reports whether a working compiler exists
    if kernels.get("float32", 1) is None:
        return None
    return kernels


def kernel_name() -> str:
    """Return "native" or "numba": the kernel that :func:`run_lanes` uses in this process."""
    return "native" if native_kernels() is not None else "numba"


def lane_major_table(W: np.ndarray) -> np.ndarray | None:
    """Return W (K, d, R) as the C kernel's lane-major table, or None when K exceeds the vector width.

    The table is W's first d + K + 5 scores transposed to (d, d + K + 5, K) and flattened, followed by
    one vector of zeros.  Entry (k, o) contains W[x, k, o] for every symbol x.  The kernel loads a whole
    vector from each entry (the zeros keep the last load inside the array), and one permutation by the
    lanes' observed symbols gives each lane its weight.  With K values per entry, mult2's table (14 KB)
    fits a 32 KB L1 cache, which one vector per entry (54 KB) would overflow.
    """
    num_symbols, d, _ = W.shape
    width = kernel.VECTOR_WIDTH[W.dtype.name]
    if num_symbols > width:
        return None
    scores = d + num_symbols + 5
    table = np.zeros(d * scores * num_symbols + width, dtype=W.dtype)
    table[: d * scores * num_symbols] = W[:, :, :scores].transpose(1, 2, 0).ravel()
    return table


def run_lanes(W, num_symbols, hidden, cells, offsets, widths, heights, rows, cols, steps, targets, status,
              table=None) -> int:
    """Run :func:`dfst.rollout.kernel.lockstep` or its C twin; arguments and effects are the same.

    ``table``, from :func:`lane_major_table`, lets the C kernel step dense lanes in lane-major blocks.
    """
    kernels = native_kernels()
    width = kernel.VECTOR_WIDTH[W.dtype.name]
    vectors, remainder = divmod(W.shape[2], width)
    function = None
    if kernels is not None and remainder == 0 and 1 <= vectors <= MAX_VECTORS and num_symbols <= MAX_SYMBOLS:
        function = kernels.get(W.dtype.name, vectors)
    if function is None:
        return kernel.lockstep(W, num_symbols, hidden, cells, offsets, widths, heights, rows, cols, steps, targets,
                               status)
    if table is not None:
        assert table.flags.c_contiguous
        assert table.dtype == W.dtype
        assert table.shape == (W.shape[1] * (W.shape[1] + num_symbols + 5) * num_symbols + width,)
    for array in (W, hidden, cells, offsets, widths, heights, rows, cols, steps, targets, status):
        assert array.flags.c_contiguous
    # the kernel's scratch: two lane lists, then each lane's cell index, observed symbol and density flag
    active = np.empty(5 * len(status), dtype=np.int64)
    num_lanes, d = hidden.shape
    total = function(
        W.ctypes.data, num_symbols, d, W.shape[2], num_lanes, hidden.ctypes.data, cells.ctypes.data,
        offsets.ctypes.data, widths.ctypes.data, heights.ctypes.data, rows.ctypes.data, cols.ctypes.data,
        steps.ctypes.data, targets.ctypes.data, status.ctypes.data, active.ctypes.data,
        None if table is None else table.ctypes.data,
    )
    if total < 0:
        raise ValueError(
            f"the native kernel rejected padded score width {W.shape[2]} (a multiple of {width} up to "
            f"{MAX_VECTORS * width}) or {num_symbols} symbols (at most {MAX_SYMBOLS})"
        )
    return total
