"""Run experts on problems: final grid, answer, step count and trace."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from dfst import kernels
from dfst.experts import ExpertSpec
from dfst.grid import Grid, digit_count, problem_grid, read_answer

logger = logging.getLogger(__name__)

# Steps allowed per operand digit squared (plus a floor) before a run is
# declared stuck; far above every expert's constant.
STEP_LIMIT_PER_DIGIT_SQUARED = 200
STEP_LIMIT_FLOOR = 100_000


class ExpertRunError(RuntimeError):
    """An expert did not halt with a well-formed, correct answer."""


@dataclasses.dataclass
class ExpertRun:
    """The outcome of running an expert on one problem."""

    a: int
    b: int
    answer: int
    steps: int  # steps including the final halting step
    grid: Grid  # the grid after halting
    position: tuple[int, int]  # (row, col) where the agent halted


@dataclasses.dataclass
class Trace:
    """A policy trajectory: per step, the observed symbol, the written symbol and the motion.

    The last step is the halting step, whose motion is S.
    """

    task: str
    a: int
    b: int
    observed: np.ndarray  # (T,) int8 symbol indices
    written: np.ndarray  # (T,) int8 symbol indices
    motions: np.ndarray  # (T,) int8 indices into dfst.grid.MOTIONS

    def __len__(self) -> int:
        return len(self.observed)


def step_limit(a: int, b: int, radix: int) -> int:
    """Return a step count no correct expert run on (a, b) reaches."""
    digits = max(digit_count(a, radix), digit_count(b, radix))
    return STEP_LIMIT_FLOOR + STEP_LIMIT_PER_DIGIT_SQUARED * digits * digits


def _run(expert: ExpertSpec, a: int, b: int, trace_capacity: int):
    grid = problem_grid(expert.alphabet, a, b)
    record = trace_capacity > 0
    capacity = max(trace_capacity, 1)
    observed = np.zeros(capacity, dtype=np.int8)
    written = np.zeros(capacity, dtype=np.int8)
    motions = np.zeros(capacity, dtype=np.int8)
    limit = step_limit(a, b, expert.alphabet.radix)
    status, steps, cells, origin_row, origin_col, i, j, state = kernels.run_table(
        expert.next_state, expert.write, expert.move, grid.cells, grid.origin_row, grid.origin_col,
        grid.origin_row, grid.origin_col + expert.start_column(a), expert.start_state, limit,
        observed, written, motions, record,
    )
    grid = Grid(cells, origin_row, origin_col)
    return status, steps, grid, (i - origin_row, j - origin_col), state, (observed, written, motions)


def _check_halted(
    expert: ExpertSpec, a: int, b: int, status: int, steps: int, grid: Grid, state: int
) -> int:
    if status == kernels.UNDEFINED_TRANSITION:
        raise ExpertRunError(
            f"{expert.task} on ({a}, {b}) met a (state, symbol) pair without a rule "
            f"in state {expert.states[state]} after {steps} steps"
        )
    if status != kernels.HALTED:
        raise ExpertRunError(f"{expert.task} on ({a}, {b}) did not halt within {steps} steps")
    answer = read_answer(grid, expert.alphabet)
    if answer.problem is not None:
        raise ExpertRunError(f"{expert.task} on ({a}, {b}) left a malformed answer: {answer.problem}")
    value = expert.alphabet.parse_digits(answer.digits)
    if value != expert.compute(a, b):
        raise ExpertRunError(f"{expert.task} on ({a}, {b}) returned {value}, expected {expert.compute(a, b)}")
    return value


def run_expert(expert: ExpertSpec, a: int, b: int) -> ExpertRun:
    """Run an expert on (a, b) with the compiled runner and check its answer.

    Raises ExpertRunError if the expert does not halt with the right answer.
    """
    status, steps, grid, position, state, _ = _run(expert, a, b, trace_capacity=0)
    value = _check_halted(expert, a, b, status, steps, grid, state)
    return ExpertRun(a, b, value, steps, grid, position)


def count_steps(expert: ExpertSpec, a: int, b: int) -> int:
    """Return the number of steps the expert takes on (a, b), halting step included."""
    return run_expert(expert, a, b).steps


def record_trace(expert: ExpertSpec, a: int, b: int) -> Trace:
    """Record the expert's policy trajectory on (a, b)."""
    capacity = count_steps(expert, a, b)
    status, steps, grid, _, state, (observed, written, motions) = _run(expert, a, b, capacity)
    _check_halted(expert, a, b, status, steps, grid, state)
    return Trace(expert.task, a, b, observed[:steps].copy(), written[:steps].copy(), motions[:steps].copy())


def visited_transitions(expert: ExpertSpec, a: int, b: int) -> np.ndarray:
    """Return a (Q, K) boolean array of the (state, symbol) pairs the expert uses on (a, b)."""
    trace = record_trace(expert, a, b)
    used = np.zeros(expert.next_state.shape, dtype=bool)
    state = expert.start_state
    for observed in trace.observed:
        used[state, observed] = True
        state = expert.next_state[state, observed]
    return used
