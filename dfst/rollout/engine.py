"""Closed-loop rollouts of DFST weights on the grid, in constant memory.

At each step the agent observes the symbol x under its cell, computes
``v = [A[x]; B[x]; C[x]] h``, writes the argmax of the symbol scores, moves by
the argmax of the motion scores (U, D, L, R, S; rows grow downwards) and sets
``h = A[x] h``.  Ties go to the lowest index and a NaN score counts as the
maximum, as in ``numpy.argmax``.  The rollout halts at the first step whose
motion is S; that step counts and its write is applied.  A hidden state that
contains NaN or infinity stops the rollout as "non_finite" before the step that
would use it.  Only the hidden state, the position and the grid window are
kept, so memory does not grow with the number of steps.
"""

from __future__ import annotations

import functools
import logging
import os
import time

import numpy as np

from dfst.experts import ExpertSpec, get_expert
from dfst.grid import Grid, grow_to_contain, problem_grid, read_answer
from dfst.rollout import kernel
from dfst.rollout.automaton import AutomatonTable, automaton_table
from dfst.rollout.budget import expert_step_counts
from dfst.rollout.native import lane_major_table, run_lanes
from dfst.rollout.state import DTYPES, RolloutInputError, RolloutResult, RolloutState
from dfst.weights import DFSTWeights, WeightsError

logger = logging.getLogger(__name__)

# Operands may have at most this many digits: building the grid and the true
# result takes time quadratic in the digit count, and rollouts of about 2·n²
# steps are out of reach well before it.
MAX_DIGITS = 100_000
# A grid window may hold at most this many cells (256 MiB of int8); a rollout
# that would grow it further stops as budget_exceeded.  A correct run of the
# experts needs a few rows times twice the digit count.
MAX_GRID_CELLS = 1 << 28
# The default step budget is the expert's step count times this factor plus
# DEFAULT_BUDGET_MARGIN.
DEFAULT_BUDGET_FACTOR = 1.5
DEFAULT_BUDGET_MARGIN = 1000
# Steps per kernel call in run_rollout when chunk_steps is not given.
DEFAULT_CHUNK_STEPS = 1 << 62

_KERNEL_STATUS = {kernel.HALTED: "halted", kernel.NON_FINITE: "non_finite"}
# Run weights in automaton form on their exact table (dfst.rollout.automaton) instead of the
# kernels.  The results are identical; False forces the kernels, for comparisons and benchmarks.
# The environment variable DFST_AUTOMATON_TABLES=0 sets it to False in a new process.
AUTOMATON_TABLES = os.environ.get("DFST_AUTOMATON_TABLES", "1") != "0"


def _expert(task: str) -> ExpertSpec:
    try:
        return get_expert(task)
    except NotImplementedError as error:
        raise RolloutInputError(f"task {task!r} has no expert yet: {error}") from error


def _check_operands(expert: ExpertSpec, a: int, b: int) -> None:
    radix = expert.alphabet.radix
    for name, value in (("a", a), ("b", b)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise RolloutInputError(f"operand {name}={value!r} must be a non-negative integer")
        if value >= _digit_limit(radix):
            raise RolloutInputError(
                f"operand {name} has more than {MAX_DIGITS} digits in radix {radix}; use at most {MAX_DIGITS}"
            )


@functools.cache
def _digit_limit(radix: int) -> int:
    return radix**MAX_DIGITS


def default_step_budget(task: str, a: int, b: int) -> int:
    """Return the expert's step count on (a, b) times 1.5, plus 1000."""
    expert = _expert(task)
    _check_operands(expert, a, b)
    return budget_from_steps(expert_step_counts(expert, [(a, b)])[0])


def budget_from_steps(expert_steps: int) -> int:
    return int(expert_steps * DEFAULT_BUDGET_FACTOR) + DEFAULT_BUDGET_MARGIN


class _PreparedWeights:
    """Weights stacked per symbol as W (K, d, R) in one dtype, for the kernels."""

    def __init__(self, weights: DFSTWeights, dtype: str):
        self.weights = weights
        k, d = weights.num_symbols, weights.hidden_dim
        scores = d + k + 5
        width = kernel.VECTOR_WIDTH[dtype]
        padded = -(-scores // width) * width
        stacked = np.concatenate([weights.A, weights.B, weights.C], axis=1)  # (K, d + K + 5, d)
        self.W = np.zeros((k, d, padded), dtype=dtype)
        self.W[:, :, :scores] = stacked.transpose(0, 2, 1)
        self.h0 = np.ascontiguousarray(weights.h0, dtype=dtype)
        self.lane_table = lane_major_table(self.W)
        # None unless the weights are in automaton form; then rollouts run on the exact table
        self.automaton: AutomatonTable | None = automaton_table(weights)


# One prepared copy per dtype of the weights used last, so chunked calls skip the restacking.
_prepared_cache: dict[str, _PreparedWeights] = {}


def _prepare(weights: DFSTWeights, task: str, dtype: str) -> _PreparedWeights:
    if dtype not in DTYPES:
        raise RolloutInputError(f"dtype {dtype!r} is not one of {DTYPES}")
    expert = _expert(task)
    cached = _prepared_cache.get(dtype)
    if cached is not None and cached.weights is weights:
        if weights.num_symbols != expert.num_symbols:
            raise RolloutInputError(
                f"the weights have K={weights.num_symbols} symbols but task {task} has {expert.num_symbols}"
            )
        return cached
    try:
        weights.validate(expert.num_symbols)
    except WeightsError as error:
        raise RolloutInputError(f"weights do not fit task {task}: {error}") from error
    prepared = _PreparedWeights(weights, dtype)
    _prepared_cache[dtype] = prepared
    return prepared


def start_rollout(
    weights: DFSTWeights, task: str, a: int, b: int, dtype: str = "float32", step_budget: int | None = None
) -> RolloutState:
    """Return the state before the first step: the problem grid, the start cell and h0."""
    expert = _expert(task)
    _check_operands(expert, a, b)
    prepared = _prepare(weights, task, dtype)
    if step_budget is None:
        step_budget = default_step_budget(task, a, b)
    if not isinstance(step_budget, int) or step_budget < 1:
        raise RolloutInputError(f"step budget {step_budget!r} must be a positive integer")
    grid = problem_grid(expert.alphabet, a, b)
    return RolloutState(
        task=task, a=a, b=b, dtype=dtype, hidden=prepared.h0.copy(), cells=grid.cells,
        origin_row=grid.origin_row, origin_col=grid.origin_col, row=0, col=expert.start_column(a),
        steps=0, step_budget=step_budget, status="running",
    )


def _check_state(weights: DFSTWeights, state: RolloutState, dtype: str) -> None:
    state.check()
    if state.dtype != dtype:
        raise RolloutInputError(f"states advanced together must share one dtype, got {state.dtype} and {dtype}")
    if state.hidden.shape != (weights.hidden_dim,):
        raise RolloutInputError(
            f"state hidden size {state.hidden.shape[0]} does not match the weights' d={weights.hidden_dim}"
        )
    # the kernels index W by the observed symbol without bounds checks
    if state.cells.size and (state.cells.min() < 0 or state.cells.max() >= weights.num_symbols):
        raise RolloutInputError(
            f"state grid has symbols in [{state.cells.min()}, {state.cells.max()}], "
            f"outside the weights' alphabet [0, {weights.num_symbols})"
        )


def _grow_lanes(lanes: list[RolloutState]) -> None:
    """Grow each running lane's window to contain its cell, or stop it at the grid limit."""
    for state in lanes:
        if state.status != "running":
            continue
        i, j = state.row + state.origin_row, state.col + state.origin_col
        height, width = state.cells.shape
        # the window needed at least, checked before allocating it
        if (max(height, i + 1) - min(0, i)) * (max(width, j + 1) - min(0, j)) > MAX_GRID_CELLS:
            state.status = "budget_exceeded"
            state.detail = f"the grid window would exceed {MAX_GRID_CELLS} cells after {state.steps} steps"
            continue
        cells, origin_row, origin_col = grow_to_contain(state.cells, state.origin_row, state.origin_col,
                                                        state.row, state.col)
        if cells.size > MAX_GRID_CELLS:
            state.status = "budget_exceeded"
            state.detail = f"the grid window would exceed {MAX_GRID_CELLS} cells after {state.steps} steps"
            continue
        state.cells, state.origin_row, state.origin_col = cells, origin_row, origin_col


def advance_many(weights: DFSTWeights, states: list[RolloutState], max_steps: int) -> list[RolloutState]:
    """Advance each state by at most ``max_steps`` steps, in lockstep; return new states.

    Each result equals what :func:`advance` gives for that state alone.  The
    states must share one dtype and fit the weights; the inputs are not changed.
    """
    if not isinstance(max_steps, int) or max_steps < 0:
        raise RolloutInputError(f"max_steps {max_steps!r} must be a non-negative integer")
    lanes = [state.copy() for state in states]
    if not lanes:
        return lanes
    dtype = lanes[0].dtype
    for state in lanes:
        _check_state(weights, state, dtype)
        prepared = _prepare(weights, state.task, dtype)
    targets = np.array([min(s.steps + max_steps, s.step_budget) for s in lanes], dtype=np.int64)
    started = time.perf_counter()

    while True:
        _grow_lanes(lanes)
        running = [n for n, s in enumerate(lanes) if s.status == "running" and s.steps < targets[n]]
        if not running:
            break
        _run_kernel(prepared, [lanes[n] for n in running], targets[running])

    elapsed = time.perf_counter() - started
    for state in lanes:
        state.seconds += elapsed / len(lanes)
        if state.status == "running" and state.steps >= state.step_budget:
            state.status = "budget_exceeded"
            state.detail = f"no halt within the step budget of {state.step_budget} steps"
    return lanes


def _run_kernel(prepared: _PreparedWeights, lanes: list[RolloutState], targets: np.ndarray) -> None:
    """Pack the lanes into flat arrays, run the kernel once and unpack the results into the states."""
    sizes = np.array([s.cells.size for s in lanes], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    cells = np.concatenate([s.cells.ravel() for s in lanes])
    heights = np.array([s.cells.shape[0] for s in lanes], dtype=np.int64)
    widths = np.array([s.cells.shape[1] for s in lanes], dtype=np.int64)
    rows = np.array([s.row + s.origin_row for s in lanes], dtype=np.int64)
    cols = np.array([s.col + s.origin_col for s in lanes], dtype=np.int64)
    steps = np.array([s.steps for s in lanes], dtype=np.int64)
    status = np.zeros(len(lanes), dtype=np.int64)
    hidden = np.stack([s.hidden for s in lanes])
    targets = np.ascontiguousarray(targets, dtype=np.int64)

    table = prepared.automaton if AUTOMATON_TABLES else None
    table_states = table.states_of(hidden) if table is not None else None
    if table_states is None:
        run_lanes(prepared.W, prepared.weights.num_symbols, hidden, cells, offsets, widths, heights, rows, cols,
                  steps, targets, status, prepared.lane_table)
    else:
        steps_before = steps.copy()
        kernel.expert_lockstep(table.packed, prepared.weights.num_symbols, cells, offsets, widths, heights, rows,
                               cols, table_states, steps, targets, status)
        moved = steps > steps_before
        hidden[moved] = table.hidden_of(table_states[moved], hidden.dtype)

    for n, state in enumerate(lanes):
        state.cells = cells[offsets[n] : offsets[n] + sizes[n]].reshape(heights[n], widths[n]).copy()
        state.hidden = hidden[n].copy()
        state.row = int(rows[n]) - state.origin_row
        state.col = int(cols[n]) - state.origin_col
        state.steps = int(steps[n])
        # NEEDS_GROWTH and RUNNING both leave the lane running
        state.status = _KERNEL_STATUS.get(int(status[n]), "running")
        if state.status == "non_finite":
            state.detail = f"the hidden state became non-finite after {state.steps} steps"


def advance(weights: DFSTWeights, state: RolloutState, max_steps: int) -> RolloutState:
    """Return the state after at most ``max_steps`` more steps; the input state is not changed."""
    return advance_many(weights, [state], max_steps)[0]


def _expected_digits(expert: ExpertSpec, a: int, b: int) -> str:
    characters = expert.alphabet.characters
    return "".join(characters[1 + v] for v in expert.alphabet.digits_of(expert.compute(a, b)))


def _digit_count(expert: ExpertSpec, number: int) -> int:
    return len(expert.alphabet.digits_of(number))


def finish(state: RolloutState) -> RolloutResult:
    """Judge a rollout that is no longer running against the true result."""
    state.check()
    if state.status == "running":
        raise RolloutInputError(f"rollout of {state.task} is still running after {state.steps} steps; advance it first")
    expert = _expert(state.task)
    expected = _expected_digits(expert, state.a, state.b)
    result = RolloutResult(
        task=state.task, a_digits=_digit_count(expert, state.a), b_digits=_digit_count(expert, state.b),
        outcome=state.status, steps=state.steps, seconds=state.seconds, first_wrong_digit=None,
        expected_length=len(expected), answer_length=None, detail=state.detail,
    )
    if state.status != "halted":
        return result

    answer = read_answer(Grid(state.cells, state.origin_row, state.origin_col), expert.alphabet)
    if answer.problem is not None:
        result.outcome = "wrong"
        result.detail = answer.problem
        return result
    result.answer_length = len(answer.digits)
    if answer.digits == expected:
        result.outcome = "correct"
        return result
    result.outcome = "wrong"
    mismatch = next((n for n, (x, y) in enumerate(zip(answer.digits, expected, strict=False)) if x != y), None)
    result.first_wrong_digit = mismatch if mismatch is not None else min(len(answer.digits), len(expected))
    result.detail = f"the answer has {len(answer.digits)} digits, expected {len(expected)}"
    return result


def run_rollout(
    weights: DFSTWeights,
    task: str,
    a: int,
    b: int,
    dtype: str = "float32",
    step_budget: int | None = None,
    chunk_steps: int | None = None,
) -> RolloutResult:
    """Run one rollout to the end, ``chunk_steps`` steps per kernel call, and judge it."""
    if chunk_steps is not None and (not isinstance(chunk_steps, int) or chunk_steps < 1):
        raise RolloutInputError(f"chunk_steps {chunk_steps!r} must be a positive integer")
    state = start_rollout(weights, task, a, b, dtype, step_budget)
    while state.status == "running":
        state = advance(weights, state, chunk_steps or DEFAULT_CHUNK_STEPS)
    return finish(state)
