"""Compiled (numba) loops shared by the expert runner and the rollout engine.

Grids here use the layout of :class:`dfst.grid.Grid`: a dense ``int8`` array
plus the array indices of cell (0, 0).  Positions are kept as array indices
inside the loops and converted back by the callers.
"""

from __future__ import annotations

import numba
import numpy as np

# Status codes returned by the compiled loops.
RUNNING = 0  # the step budget of this call ran out before the agent halted
HALTED = 1  # the agent emitted motion S
TRACE_FULL = 2  # the trace buffer ran out before the agent halted
UNDEFINED_TRANSITION = 3  # the expert met a (state, symbol) pair it has no rule for

_ROW_DELTA = np.array([-1, 1, 0, 0, 0], dtype=np.int64)
_COL_DELTA = np.array([0, 0, -1, 1, 0], dtype=np.int64)
_MARGIN = 16


@numba.njit(cache=True)
def grow(cells, origin_row, origin_col, i, j):
    """Return (cells, origin_row, origin_col, i, j) widened so that array index (i, j) is inside."""
    height, width = cells.shape
    add_top = 0
    add_bottom = 0
    add_left = 0
    add_right = 0
    if i < 0:
        add_top = max(-i, height // 2) + _MARGIN
    if i >= height:
        add_bottom = max(i - height + 1, height // 2) + _MARGIN
    if j < 0:
        add_left = max(-j, width // 2) + _MARGIN
    if j >= width:
        add_right = max(j - width + 1, width // 2) + _MARGIN
    grown = np.zeros((height + add_top + add_bottom, width + add_left + add_right), dtype=cells.dtype)
    grown[add_top : add_top + height, add_left : add_left + width] = cells
    return grown, origin_row + add_top, origin_col + add_left, i + add_top, j + add_left


@numba.njit(cache=True)
def run_table(
    next_state, write, move, cells, origin_row, origin_col, i, j, state, max_steps,
    trace_obs, trace_write, trace_move, record,
):
    """Run a transition table for at most ``max_steps`` steps.

    ``i, j`` are the array indices of the agent's cell.  When ``record`` is true
    the observed symbol, written symbol and motion of every step go into the
    trace arrays, whose length bounds the run.

    Returns (status, steps, cells, origin_row, origin_col, i, j, state).
    """
    steps = 0
    limit = max_steps
    if record and len(trace_obs) < limit:
        limit = len(trace_obs)
    while steps < limit:
        observed = cells[i, j]
        target = next_state[state, observed]
        if target < 0:
            return UNDEFINED_TRANSITION, steps, cells, origin_row, origin_col, i, j, state
        written = write[state, observed]
        motion = move[state, observed]
        if record:
            trace_obs[steps] = observed
            trace_write[steps] = written
            trace_move[steps] = motion
        cells[i, j] = written
        steps += 1
        state = target
        if motion == 4:
            return HALTED, steps, cells, origin_row, origin_col, i, j, state
        i += _ROW_DELTA[motion]
        j += _COL_DELTA[motion]
        if i < 0 or j < 0 or i >= cells.shape[0] or j >= cells.shape[1]:
            cells, origin_row, origin_col, i, j = grow(cells, origin_row, origin_col, i, j)
    if record and steps == len(trace_obs) and steps < max_steps:
        return TRACE_FULL, steps, cells, origin_row, origin_col, i, j, state
    return RUNNING, steps, cells, origin_row, origin_col, i, j, state
