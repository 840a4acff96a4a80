"""The rollout calls the workers make, against the API of :mod:`dfst.rollout`.

Workers call :func:`start_rollout`, :func:`advance`, :func:`finish` and
:func:`state_from_bytes` from here.  When :mod:`dfst.rollout` provides
``start_rollout`` these are the library's functions; otherwise a plain
compiled loop below stands in, with the same signatures and outcomes.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import sys
import time

import numba
import numpy as np

from dfst import kernels
from dfst.experts import get_expert
from dfst.grid import Grid, problem_grid, read_answer
from dfst.runner import step_limit
from dfst.weights import DFSTWeights

logger = logging.getLogger(__name__)

# Operands of the length-generalisation checks reach tens of thousands of digits.
sys.set_int_max_str_digits(0)

OUTCOMES = ("correct", "wrong", "budget_exceeded", "non_finite")
DTYPES = {"float32": np.float32, "float64": np.float64}


@dataclasses.dataclass
class FallbackState:
    """A rollout paused between chunks: grid, agent position, hidden state and counters."""

    task: str
    a: int
    b: int
    dtype: str  # "float32" or "float64"
    cells: np.ndarray  # (rows, cols) int8 grid window, as in dfst.grid.Grid
    origin_row: int  # array row of grid row 0
    origin_col: int  # array column of grid column 0
    i: int  # array row of the agent
    j: int  # array column of the agent
    h: np.ndarray  # (d,) hidden state
    steps: int  # steps taken, halting step included
    step_budget: int  # steps allowed before the outcome is budget_exceeded
    status: str  # "running", "halted", "budget_exceeded" or "non_finite"
    seconds: float  # time spent inside advance, in seconds

    def to_bytes(self) -> bytes:
        return pickle.dumps(dataclasses.asdict(self), protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(cls, data: bytes) -> FallbackState:
        return cls(**pickle.loads(data))


@dataclasses.dataclass(frozen=True)
class FallbackResult:
    """How a rollout ended."""

    outcome: str  # one of OUTCOMES
    steps: int  # steps taken, halting step included
    seconds: float  # time spent inside advance, in seconds
    first_wrong_digit: int | None  # least-significant-first index of the first wrong answer digit

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@numba.njit(cache=True)
def _rollout_loop(A, B, C, h, cells, origin_row, origin_col, i, j, max_steps):
    """Run the closed loop for at most ``max_steps`` steps; return (status, steps, grid, position, h)."""
    d = h.shape[0]
    num_symbols = B.shape[1]
    scratch = np.empty_like(h)
    steps = 0
    while steps < max_steps:
        x = cells[i, j]

        # symbol and motion scores, argmax with the first maximum winning
        best_symbol = 0
        best_score = -np.inf
        for s in range(num_symbols):
            score = 0.0
            for k in range(d):
                score += B[x, s, k] * h[k]
            if score > best_score:
                best_score = score
                best_symbol = s
        best_motion = 0
        best_motion_score = -np.inf
        for m in range(5):
            score = 0.0
            for k in range(d):
                score += C[x, m, k] * h[k]
            if score > best_motion_score:
                best_motion_score = score
                best_motion = m
        if not np.isfinite(best_score) or not np.isfinite(best_motion_score):
            return 3, steps, cells, origin_row, origin_col, i, j, h

        # h <- A[x] h
        for r in range(d):
            total = 0.0
            for k in range(d):
                total += A[x, r, k] * h[k]
            scratch[r] = total
        h, scratch = scratch, h

        cells[i, j] = best_symbol
        steps += 1
        if best_motion == 4:
            return 1, steps, cells, origin_row, origin_col, i, j, h
        if best_motion == 0:
            i -= 1
        elif best_motion == 1:
            i += 1
        elif best_motion == 2:
            j -= 1
        else:
            j += 1
        if i < 0 or j < 0 or i >= cells.shape[0] or j >= cells.shape[1]:
            cells, origin_row, origin_col, i, j = kernels.grow(cells, origin_row, origin_col, i, j)
    return 0, steps, cells, origin_row, origin_col, i, j, h


def _fallback_default_step_budget(task: str, a: int, b: int) -> int:
    return step_limit(a, b, get_expert(task).alphabet.radix)


def _fallback_start_rollout(weights: DFSTWeights, task: str, a: int, b: int, dtype: str = "float32",
                            step_budget: int | None = None) -> FallbackState:
    expert = get_expert(task)
    grid = problem_grid(expert.alphabet, a, b)
    budget = step_budget or _fallback_default_step_budget(task, a, b)
    h = np.array(weights.h0, dtype=DTYPES[dtype])
    return FallbackState(task, a, b, dtype, grid.cells, grid.origin_row, grid.origin_col, grid.origin_row,
                         grid.origin_col + expert.start_column(a), h, 0, budget, "running", 0.0)


def _fallback_advance(weights: DFSTWeights, state: FallbackState, max_steps: int) -> FallbackState:
    if state.status != "running":
        return state
    cast = weights.astype(DTYPES[state.dtype])
    allowed = min(max_steps, state.step_budget - state.steps)
    started = time.perf_counter()
    code, steps, cells, origin_row, origin_col, i, j, h = _rollout_loop(
        cast.A, cast.B, cast.C, state.h, state.cells, state.origin_row, state.origin_col, state.i, state.j, allowed
    )
    state.seconds += time.perf_counter() - started
    state.cells, state.origin_row, state.origin_col, state.i, state.j, state.h = cells, origin_row, origin_col, i, j, h
    state.steps += steps
    if code == 1:
        state.status = "halted"
    elif code == 3:
        state.status = "non_finite"
    elif state.steps >= state.step_budget:
        state.status = "budget_exceeded"
    return state


def _fallback_finish(state: FallbackState) -> FallbackResult:
    if state.status != "halted":
        outcome = state.status if state.status in OUTCOMES else "budget_exceeded"
        return FallbackResult(outcome, state.steps, state.seconds, None)
    expert = get_expert(state.task)
    answer = read_answer(Grid(state.cells, state.origin_row, state.origin_col), expert.alphabet)
    expected = np.base_repr(expert.compute(state.a, state.b), expert.alphabet.radix)
    if answer.problem is None and answer.digits == expected:
        return FallbackResult("correct", state.steps, state.seconds, None)
    written = (answer.digits or "")[::-1]
    wanted = expected[::-1]
    first_wrong = next((k for k in range(max(len(written), len(wanted)))
                        if k >= len(written) or k >= len(wanted) or written[k] != wanted[k]), 0)
    return FallbackResult("wrong", state.steps, state.seconds, first_wrong)


try:
    from dfst.rollout import RolloutState as _RolloutState
    from dfst.rollout import advance, default_step_budget, finish, start_rollout

    state_from_bytes = _RolloutState.from_bytes
    USING_LIBRARY_ENGINE = True
except ImportError:
    # NOTE: the compiled loop above stands in while dfst.rollout lacks its rollout engine.
    start_rollout = _fallback_start_rollout
    advance = _fallback_advance
    finish = _fallback_finish
    default_step_budget = _fallback_default_step_budget
    state_from_bytes = FallbackState.from_bytes
    USING_LIBRARY_ENGINE = False
