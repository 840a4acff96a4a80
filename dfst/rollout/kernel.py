"""The compiled closed-loop step loop, for one rollout or several in lockstep.

Weights are stacked per observed symbol into one matrix ``W[x]`` stored
transposed as ``(d, R)``: row k is column k of ``[A[x]; B[x]; C[x]]``, so
``v = W[x]ᵀ h`` gives the next hidden state ``v[:d]``, the symbol scores
``v[d:d+K]`` and the motion scores ``v[d+K:d+K+5]`` in one pass.  R is
``d + K + 5`` rounded up to a multiple of :data:`VECTOR_WIDTH` with zero
columns, so the loop over R vectorises without a remainder.

Each score is accumulated over k = 0, 1, …, d-1 in that order by fused
multiply-adds (LLVM's ``llvm.fma``, correctly rounded by definition, so one
rounding per k on every CPU) and no other operation is fused or reordered
(no ``fastmath``), so the kernel's arithmetic is fixed and independent of the
machine's vector width and FMA support.  Terms with h[k] equal to zero are
skipped: they only add a signed zero, so skipping them can change the sign of
a zero score but never a comparison, and a one-hot hidden state (oracle
DFSTs, extracted automata) costs one row of W[x] instead of d.

Several rollouts (lanes) advance in lockstep: every round gives each active
lane one step.  A lane leaves the round robin when it halts, meets its step
target, its hidden state turns non-finite, or it moves outside its grid
window, which the caller then grows; the call returns then, so the window grows
before the other lanes run far ahead.  Lane grids share one flat ``int8``
buffer, lane l's window starting at ``offsets[l]`` with ``widths[l]`` columns.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils
from numba.extending import intrinsic

# Lane status codes shared with dfst.rollout.engine.
RUNNING = 0  # the lane may take more steps
HALTED = 1  # the lane emitted motion S
NON_FINITE = 2  # the hidden state before the next step contains NaN or infinity
NEEDS_GROWTH = 3  # the lane moved outside its grid window

MOTION_STAY = 4
# Rows of W are padded to a multiple of this many values (one 64-byte vector).
VECTOR_WIDTH = {"float32": 16, "float64": 8}

_ROW_DELTA = np.array([-1, 1, 0, 0, 0], dtype=np.int64)
_COL_DELTA = np.array([0, 0, -1, 1, 0], dtype=np.int64)


@intrinsic
def fma(typingctx, a, b, c):
    """Return a * b + c rounded once (IEEE 754 fusedMultiplyAdd) for three floats of one type."""
    if not (isinstance(a, numba.types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        real = args[0].type
        name = f"llvm.fma.{'f32' if real == ir.FloatType() else 'f64'}"
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(real, [real] * 3), name)
        return builder.call(function, args)

    return a(a, b, c), codegen


@numba.njit(cache=True, boundscheck=False, nogil=True)
def _argmax(scores, start, count):
    """Return the index in [0, count) of the maximum of scores[start:start+count], as numpy.argmax.

    The first maximum wins ties; a NaN counts as the maximum, and the first
    NaN wins.
    """
    best = scores[start]
    if best != best:
        return 0
    index = 0
    for i in range(1, count):
        value = scores[start + i]
        if value > best:
            best = value
            index = i
        elif value != value:
            return i
    return index


@numba.njit(cache=True, boundscheck=False, nogil=True)
def lockstep(W, num_symbols, hidden, cells, offsets, widths, heights, rows, cols, steps, targets, status):
    """Advance every RUNNING lane until it stops; return the number of steps taken in all.

    W: (K, d, R) stacked transposed weights; hidden: (L, d) in W's dtype;
    cells: flat int8 buffer of every lane's window; offsets, widths, heights,
    rows, cols, steps, targets, status: (L,) int64 per-lane values, updated in
    place.  ``rows[l], cols[l]`` are array indices into lane l's window.  A
    lane stops RUNNING when ``steps[l]`` reaches ``targets[l]``, or with
    status HALTED, NON_FINITE or NEEDS_GROWTH.
    """
    d = W.shape[1]
    width_r = W.shape[2]
    lanes = hidden.shape[0]
    scores = np.empty(width_r, dtype=W.dtype)
    active = np.empty(lanes, dtype=np.int64)
    count = 0
    for lane in range(lanes):
        if status[lane] == RUNNING and steps[lane] < targets[lane]:
            active[count] = lane
            count += 1
    total = 0

    while count > 0:
        kept = 0
        for slot in range(count):
            lane = active[slot]
            h = hidden[lane]
            position = offsets[lane] + rows[lane] * widths[lane] + cols[lane]
            observed = cells[position]
            matrix = W[observed]
            for r in range(width_r):
                scores[r] = 0.0
            for k in range(d):
                hk = h[k]
                if hk != 0.0:
                    row = matrix[k]
                    for r in range(width_r):
                        scores[r] = fma(row[r], hk, scores[r])
            if scores[0] - scores[0] != 0.0:
                # a non-finite h makes every score non-finite (inf * 0 is NaN),
                # so the full check runs only when the first score is suspect
                finite = True
                for k in range(d):
                    if h[k] - h[k] != 0.0:
                        finite = False
                if not finite:
                    status[lane] = NON_FINITE
                    continue

            written = _argmax(scores, d, num_symbols)
            motion = _argmax(scores, d + num_symbols, 5)
            cells[position] = written
            for k in range(d):
                h[k] = scores[k]
            steps[lane] += 1
            total += 1

            if motion == MOTION_STAY:
                status[lane] = HALTED
                continue
            i = rows[lane] + _ROW_DELTA[motion]
            j = cols[lane] + _COL_DELTA[motion]
            rows[lane] = i
            cols[lane] = j
            if i < 0 or j < 0 or i >= heights[lane] or j >= widths[lane]:
                # the caller grows the window; the other lanes resume on the next call
                status[lane] = NEEDS_GROWTH
                return total
            if steps[lane] < targets[lane]:
                active[kept] = lane
                kept += 1
        count = kept
    return total


def pack_table(next_state, write, move) -> np.ndarray:
    """Pack an expert table into one int32 per (state, symbol): next state, written symbol << 16, motion << 24.

    An undefined transition packs as -1.
    """
    packed = (next_state.astype(np.int32) | (write.astype(np.int32) << 16) | (move.astype(np.int32) << 24))
    return np.ascontiguousarray(np.where(next_state < 0, -1, packed).ravel(), dtype=np.int32)


@numba.njit(cache=True, boundscheck=False, nogil=True)
def expert_lockstep(table, num_symbols, cells, offsets, widths, heights, rows, cols, states, steps, targets, status):
    """Run an expert's packed table (see :func:`pack_table`) on several problems round-robin.

    Uses the lane protocol of :func:`lockstep`, with ``states`` holding each
    lane's expert state.  One expert step is a short chain of dependent loads,
    so interleaving lanes is what makes it fast.  A lane meeting an undefined
    transition stops as NON_FINITE.

    Most steps of the experts sweep over digits: the state stays, the symbol is
    written back unchanged and the motion repeats.  After such a step the lane
    continues the sweep while the next cell's transition is the same kind of
    step.  That reads one byte per cell instead of a table entry, and the
    steps, cells and states are exactly those of one step at a time.
    """
    lanes = states.shape[0]
    num_states = table.shape[0] // num_symbols
    # sweep[state * K + symbol]: 1 + the motion if that transition keeps the state and the symbol and
    # moves, else 0
    sweep = np.zeros(table.shape[0], dtype=np.int8)
    for state in range(num_states):
        for symbol in range(num_symbols):
            entry = table[state * num_symbols + symbol]
            if entry >= 0 and (entry & 0xFFFF) == state and ((entry >> 16) & 0xFF) == symbol:
                motion = entry >> 24
                if motion != MOTION_STAY:
                    sweep[state * num_symbols + symbol] = 1 + motion
    active = np.empty(lanes, dtype=np.int64)
    count = 0
    for lane in range(lanes):
        if status[lane] == RUNNING and steps[lane] < targets[lane]:
            active[count] = lane
            count += 1
    total = 0
    while count > 0:
        kept = 0
        for slot in range(count):
            lane = active[slot]
            position = offsets[lane] + rows[lane] * widths[lane] + cols[lane]
            entry = table[states[lane] * num_symbols + cells[position]]
            if entry < 0:
                status[lane] = NON_FINITE
                continue
            motion = entry >> 24
            cells[position] = (entry >> 16) & 0xFF
            state = entry & 0xFFFF
            states[lane] = state
            steps[lane] += 1
            total += 1
            if motion == MOTION_STAY:
                status[lane] = HALTED
                continue
            i = rows[lane] + _ROW_DELTA[motion]
            j = cols[lane] + _COL_DELTA[motion]
            height, width, offset = heights[lane], widths[lane], offsets[lane]
            if i >= 0 and j >= 0 and i < height and j < width:
                # continue a sweep: each further step leaves the cell, the state and the motion unchanged
                row_step, col_step = _ROW_DELTA[motion], _COL_DELTA[motion]
                base = state * num_symbols
                step_count = steps[lane]
                target = targets[lane]
                while step_count < target and sweep[base + cells[offset + i * width + j]] == 1 + motion:
                    step_count += 1
                    i += row_step
                    j += col_step
                    if i < 0 or j < 0 or i >= height or j >= width:
                        break
                total += step_count - steps[lane]
                steps[lane] = step_count
            rows[lane] = i
            cols[lane] = j
            if i < 0 or j < 0 or i >= height or j >= width:
                status[lane] = NEEDS_GROWTH
                return total
            if steps[lane] < targets[lane]:
                active[kept] = lane
                kept += 1
        count = kept
    return total
