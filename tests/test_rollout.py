"""The compiled rollout engine against the PyTorch reference, and its resumable state."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from dfst import get_expert, oracle_weights
from dfst.data import repdigit
from dfst.grid import MOTIONS, Grid
from dfst.rollout import (
    RolloutInputError,
    RolloutState,
    advance,
    advance_many,
    default_step_budget,
    engine,
    finish,
    kernel,
    native,
    run_rollout,
    start_rollout,
)
from dfst.rollout.budget import expert_step_counts
from dfst.rollout.reference import reference_rollout
from dfst.runner import count_steps
from dfst.weights import DFSTWeights


def perturbed(weights: DFSTWeights, scale: float, seed: int) -> DFSTWeights:
    rng = np.random.default_rng(seed)
    return DFSTWeights(*(t + scale * rng.standard_normal(t.shape).astype(t.dtype)
                         for t in (weights.A, weights.B, weights.C, weights.h0)))


def problems(task: str) -> list[tuple[int, int]]:
    radix = get_expert(task).alphabet.radix
    rng = np.random.default_rng(7)
    pairs = [(0, 0), (1, radix - 1), (repdigit(radix - 1, 4, radix), 1)]
    pairs += [(int(rng.integers(0, radix**5)), int(rng.integers(0, radix**3))) for _ in range(3)]
    return pairs


def nonblank(state: RolloutState) -> list[tuple[int, int, int]]:
    return Grid(state.cells, state.origin_row, state.origin_col).nonblank_cells()


def run_to_end(weights, state, chunk):
    while state.status == "running":
        state = advance(weights, state, chunk)
    return state


def test_oracle_rollout_correct(task):
    weights = oracle_weights(get_expert(task))
    for a, b in problems(task):
        result = run_rollout(weights, task, a, b)
        assert result.outcome == "correct", (a, b, result)
        assert result.answer_length == result.expected_length


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("noise", [0.0, 1e-3])
def test_engine_matches_reference(task, dtype, noise):
    weights = perturbed(oracle_weights(get_expert(task)), noise, seed=3) if noise else oracle_weights(get_expert(task))
    for a, b in problems(task)[:4]:
        reference = reference_rollout(weights, task, a, b, dtype=dtype)
        state = run_to_end(weights, start_rollout(weights, task, a, b, dtype=dtype), 10**9)
        assert state.status == reference.status
        assert state.steps == reference.steps
        assert (state.row, state.col) == (reference.row, reference.col)
        assert nonblank(state) == nonblank(reference)
        np.testing.assert_allclose(state.hidden, reference.hidden, rtol=1e-4, atol=1e-5)


# noise 0 keeps the hidden state one-hot (the kernels' sparse path), 1e-3 makes it dense
@pytest.mark.parametrize("noise", [0.0, 1e-3])
def test_numba_kernel_matches_native(task, noise, monkeypatch):
    if native.native_kernels() is None:
        pytest.skip("no C compiler: only the numba kernel exists here")
    weights = perturbed(oracle_weights(get_expert(task)), noise, seed=5)
    a, b = problems(task)[3]
    native_state = run_to_end(weights, start_rollout(weights, task, a, b), 10**9)
    monkeypatch.setattr(native, "native_kernels", lambda: None)
    numba_state = run_to_end(weights, start_rollout(weights, task, a, b), 10**9)
    assert numba_state.steps == native_state.steps
    assert np.array_equal(numba_state.hidden, native_state.hidden)
    assert np.array_equal(numba_state.cells, native_state.cells)


# 15 lanes on one problem observe the same symbols each round, so they form groups of 8, 4, 2 and 1
# that share W[x].  The other lanes differ, so groups also mix symbols and lanes finish at different rounds.
@pytest.mark.parametrize("task", ["add2", "mult10"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lockstep_groups_match_numba(task, dtype, monkeypatch):
    if native.native_kernels() is None:
        pytest.skip("no C compiler: only the numba kernel exists here")
    weights = perturbed(oracle_weights(get_expert(task)), 1e-3, seed=11)
    pairs = [problems(task)[4]] * 15 + problems(task)
    states = [start_rollout(weights, task, a, b, dtype=dtype) for a, b in pairs]
    native_states = advance_many(weights, states, 3000)
    monkeypatch.setattr(native, "native_kernels", lambda: None)
    numba_states = advance_many(weights, states, 3000)
    for x, y in zip(native_states, numba_states, strict=True):
        assert (x.status, x.steps, x.row, x.col) == (y.status, y.steps, y.row, y.col)
        assert np.array_equal(x.hidden, y.hidden)
        assert np.array_equal(x.cells, y.cells)


def block_test_weights(kind: str, task: str, dtype: str) -> DFSTWeights:
    """Return dense weights whose lanes stay in lane-major blocks, leave them, tie scores or overflow."""
    oracle = oracle_weights(get_expert(task))
    weights = perturbed(oracle, 1e-3, seed=13)
    if kind == "zeros":
        # observing symbol 0 applies the exact oracle A[0], whose rows without a one give zero coordinates
        A = weights.A.copy()
        A[0] = oracle.A[0]
        return DFSTWeights(A, weights.B, weights.C, weights.h0)
    if kind == "ties":
        # symbols 0 and 1 score the same, and so do motions 0 and 1, so each choice between them is a tie
        # that the first index wins, as numpy.argmax
        B, C = weights.B.copy(), weights.C.copy()
        B[:, 1], C[:, 1] = B[:, 0], C[:, 0]
        return DFSTWeights(weights.A, B, C, weights.h0)
    if kind == "overflow":
        # h grows by the factor per step, so the scores overflow after about 38 steps, before the rollouts halt
        growth = {"float32": 10, "float64": 1e8}[dtype]
        return DFSTWeights(weights.A * growth, weights.B, weights.C, weights.h0)
    return weights


# 16 lanes on one problem observe one symbol in most rounds, so their weights are broadcast.  The other
# lanes differ, so rounds also mix symbols (permuted weights).  Lanes enter blocks as others finish.
@pytest.mark.parametrize("kind", ["dense", "zeros", "ties", "overflow"])
@pytest.mark.parametrize(("task", "dtype"), [("add2", "float32"), ("mult2", "float32"), ("add10", "float32"),
                                             ("add2", "float64")])
def test_lane_major_blocks_match_numba(task, dtype, kind, monkeypatch):
    kernels = native.native_kernels()
    if kernels is None:
        pytest.skip("no C compiler: only the numba kernel exists here")
    prepared = engine._prepare(oracle_weights(get_expert(task)), task, dtype)
    vectors = prepared.W.shape[2] // kernel.VECTOR_WIDTH[dtype]
    if not kernels.has_blocks(dtype, vectors):
        pytest.skip("this CPU has no AVX-512 with DQ, so the native kernel has no lane-major blocks")
    weights = block_test_weights(kind, task, dtype)
    pairs = [problems(task)[4]] * 16 + problems(task)
    states = [start_rollout(weights, task, a, b, dtype=dtype) for a, b in pairs]
    states[-1] = advance(weights, states[-1], 5)
    before = kernels.block_steps()
    native_states = [advance_many(weights, states, chunk) for chunk in (7, 3000)]
    assert kernels.block_steps() > before
    monkeypatch.setattr(native, "native_kernels", lambda: None)
    numba_states = [advance_many(weights, states, chunk) for chunk in (7, 3000)]
    for native_run, numba_run in zip(native_states, numba_states, strict=True):
        for x, y in zip(native_run, numba_run, strict=True):
            assert (x.status, x.steps, x.row, x.col) == (y.status, y.steps, y.row, y.col)
            assert x.hidden.tobytes() == y.hidden.tobytes()
            assert np.array_equal(x.cells, y.cells)
    outcomes = {state.status for state in native_states[1]}
    if kind == "overflow":
        assert "non_finite" in outcomes


# run_lanes accepts rows of W padded past whole vectors, as the numba kernel does.  The engine never pads
# so far.  The C kernel keeps such lanes out of lane-major blocks, whose passes assume minimal padding.
@pytest.mark.parametrize("padded", [32, 48, 128])
def test_run_lanes_extra_padding_matches_numba(padded):
    if native.native_kernels() is None:
        pytest.skip("no C compiler: only the numba kernel exists here")
    num_symbols, d, lanes = 4, 11, 16
    scores = d + num_symbols + 5
    rng = np.random.default_rng(0)
    W = np.zeros((num_symbols, d, padded), dtype=np.float32)
    W[:, :, :scores] = rng.standard_normal((num_symbols, d, scores))
    hidden = rng.standard_normal((lanes, d)).astype(np.float32)
    arrays = [hidden, np.zeros(lanes * 100, dtype=np.int8), np.arange(lanes, dtype=np.int64) * 100,
              np.full(lanes, 10, np.int64), np.full(lanes, 10, np.int64), np.full(lanes, 5, np.int64),
              np.full(lanes, 5, np.int64), np.zeros(lanes, np.int64), np.full(lanes, 3, np.int64),
              np.zeros(lanes, np.int64)]
    native_arrays = [a.copy() for a in arrays]
    numba_arrays = [a.copy() for a in arrays]

    native.run_lanes(W, num_symbols, *native_arrays, table=native.lane_major_table(W))
    kernel.lockstep(W, num_symbols, *numba_arrays)

    for x, y in zip(native_arrays, numba_arrays, strict=True):
        assert x.tobytes() == y.tobytes()


def fused_rounding_weights(dtype: str) -> tuple[DFSTWeights, float]:
    """Return add2-shaped weights whose first h[0] is 2^-p when computed by fused multiply-adds, 0 otherwise.

    h[0] after one step is A[0, 0]·h0[0] + A[0, 1]·h0[1] = -(1 + 2e) + (1 + e)² = e² with e = 2^-(p/2),
    but (1 + e)² rounded alone to p significant bits is 1 + 2e, so an unfused sum gives 0.
    """
    bits = {"float32": 24, "float64": 54}[dtype]
    epsilon = 2.0 ** -(bits // 2)
    A = np.zeros((4, 2, 2), dtype=dtype)
    A[:, 0, 0] = -(1 + 2 * epsilon)
    A[:, 0, 1] = 1 + epsilon
    h0 = np.array([1.0, 1 + epsilon], dtype=dtype)
    return DFSTWeights(A, np.zeros((4, 4, 2), dtype=dtype), np.zeros((4, 5, 2), dtype=dtype), h0), epsilon**2


@pytest.mark.parametrize("kernel", ["native", "numba"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernels_fuse_multiply_add(kernel, dtype, monkeypatch):
    if kernel == "native" and native.native_kernels() is None:
        pytest.skip("no C compiler: only the numba kernel exists here")
    if kernel == "numba":
        monkeypatch.setattr(native, "native_kernels", lambda: None)
    weights, expected = fused_rounding_weights(dtype)

    state = advance(weights, start_rollout(weights, "add2", 1, 1, dtype=dtype), 1)

    assert state.steps == 1
    assert state.hidden[0] == expected


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_chunks_with_serialization_match_one_run(chunk):
    task = "add10"
    weights = perturbed(oracle_weights(get_expert(task)), 1e-3, seed=11)
    a, b = 987_654_321, 123_456_789
    whole = run_to_end(weights, start_rollout(weights, task, a, b), 10**9)
    state = start_rollout(weights, task, a, b)
    while state.status == "running":
        state = RolloutState.from_bytes(advance(weights, state, chunk).to_bytes())
    assert state.status == whole.status
    assert state.steps == whole.steps
    assert np.array_equal(state.hidden, whole.hidden)
    assert nonblank(state) == nonblank(whole)
    assert finish(state).outcome == finish(whole).outcome


RESUME_SCRIPT = """
import sys
import numpy as np
from dfst import get_expert, oracle_weights
from dfst.rollout import RolloutState, advance
from dfst.weights import DFSTWeights
rng = np.random.default_rng(11)
w = oracle_weights(get_expert("add10"))
w = DFSTWeights(*(t + 1e-3 * rng.standard_normal(t.shape).astype(t.dtype) for t in (w.A, w.B, w.C, w.h0)))
state = RolloutState.from_bytes(sys.stdin.buffer.read())
sys.stdout.buffer.write(advance(w, state, int(sys.argv[1])).to_bytes())
"""


def test_resume_in_fresh_subprocess():
    task = "add10"
    weights = perturbed(oracle_weights(get_expert(task)), 1e-3, seed=11)
    a, b = 987_654_321, 123_456_789
    whole = run_to_end(weights, start_rollout(weights, task, a, b), 10**9)
    assert whole.steps > 250
    state = advance(weights, start_rollout(weights, task, a, b), 100)
    completed = subprocess.run([sys.executable, "-c", RESUME_SCRIPT, "150"], input=state.to_bytes(),
                               capture_output=True, check=True, timeout=120)
    state = RolloutState.from_bytes(completed.stdout)
    assert state.steps == 250
    state = run_to_end(weights, state, 10**9)
    assert state.steps == whole.steps
    assert np.array_equal(state.hidden, whole.hidden)
    assert nonblank(state) == nonblank(whole)


def test_advance_many_matches_advance_alone():
    task = "add10"
    weights = perturbed(oracle_weights(get_expert(task)), 1e-3, seed=2)
    pairs = [(5, 7), (123_456, 99), (repdigit(9, 12, 10), repdigit(9, 12, 10)), (0, 1), (31_415, 27_182)]
    states = [start_rollout(weights, task, a, b) for a, b in pairs]
    states[1] = advance(weights, states[1], 33)
    for chunk in (1, 50, 10**9):
        together = advance_many(weights, states, chunk)
        alone = [advance(weights, state, chunk) for state in states]
        for x, y in zip(together, alone, strict=True):
            assert (x.status, x.steps, x.row, x.col) == (y.status, y.steps, y.row, y.col)
            assert np.array_equal(x.hidden, y.hidden)
            assert nonblank(x) == nonblank(y)
        states = together
    assert all(state.status == "halted" for state in states)


def test_advance_leaves_input_unchanged():
    weights = oracle_weights(get_expert("add2"))
    state = start_rollout(weights, "add2", 5, 3)
    before = state.to_bytes()
    advance(weights, state, 10)
    assert state.to_bytes() == before


def halted_with_row(digits: str, a: int, b: int) -> RolloutState:
    """Return a halted add10 state whose grid contains ``digits`` on one row."""
    state = start_rollout(oracle_weights(get_expert("add10")), "add10", a, b, step_budget=10)
    grid = Grid.from_row(np.array([1 + int(c) for c in digits], dtype=np.int8))
    state.cells, state.origin_row, state.origin_col = grid.cells, grid.origin_row, grid.origin_col
    state.status = "halted"
    return state


def test_wrong_answer_reports_first_digit():
    result = finish(halted_with_row("142", 100, 32))
    assert result.outcome == "wrong"
    assert result.first_wrong_digit == 1
    assert result.expected_length == 3
    assert result.answer_length == 3


def test_short_answer_reports_its_length():
    result = finish(halted_with_row("13", 100, 32))
    assert result.outcome == "wrong"
    assert result.first_wrong_digit == 2
    assert result.answer_length == 2


def test_leading_zero_is_malformed():
    result = finish(halted_with_row("0132", 100, 32))
    assert result.outcome == "wrong"
    assert result.answer_length is None
    assert "leading zero" in result.detail


def test_two_rows_is_malformed():
    state = halted_with_row("132", 100, 32)
    grid = Grid(state.cells, state.origin_row, state.origin_col)
    grid.set(1, 0, 2)
    state.cells, state.origin_row, state.origin_col = grid.cells, grid.origin_row, grid.origin_col
    result = finish(state)
    assert result.outcome == "wrong"
    assert result.answer_length is None
    assert "2 rows" in result.detail


def test_halting_at_once_is_malformed():
    weights = oracle_weights(get_expert("add10"))
    C = np.zeros_like(weights.C)
    C[:, MOTIONS.index("S"), :] = 1.0
    result = run_rollout(DFSTWeights(weights.A, weights.B, C, weights.h0), "add10", 12, 34)
    assert result.outcome == "wrong"
    assert result.steps == 1
    assert result.answer_length is None
    assert "operator" in result.detail


def test_budget_exceeded():
    weights = oracle_weights(get_expert("add10"))
    result = run_rollout(weights, "add10", 123, 456, step_budget=40, chunk_steps=16)
    assert result.outcome == "budget_exceeded"
    assert result.steps == 40


def test_exploding_hidden_state_is_non_finite():
    weights = oracle_weights(get_expert("add10"))
    result = run_rollout(DFSTWeights(weights.A * np.float32(1e20), weights.B, weights.C, weights.h0),
                         "add10", 123, 456)
    assert result.outcome == "non_finite"
    # 1e20 ** 2 is finite in float32 only up to 3.4e38, so h turns infinite after two steps
    assert result.steps == 2


def test_float64_delays_overflow():
    weights = oracle_weights(get_expert("add10"))
    scaled = DFSTWeights(weights.A * 1e20, weights.B, weights.C, weights.h0)
    result = run_rollout(scaled, "add10", 123, 456, dtype="float64")
    assert result.outcome == "non_finite"
    # 1e20 ** 16 exceeds the float64 maximum of 1.8e308
    assert result.steps == 16


def test_grid_limit_stops_runaway(monkeypatch):
    weights = oracle_weights(get_expert("add2"))
    A = np.zeros_like(weights.A)
    A[:] = np.eye(weights.hidden_dim, dtype=A.dtype)
    C = np.zeros_like(weights.C)
    C[:, MOTIONS.index("R"), :] = 1.0
    monkeypatch.setattr(engine, "MAX_GRID_CELLS", 4096)
    result = run_rollout(DFSTWeights(A, weights.B, C, weights.h0), "add2", 1, 1, step_budget=10**6)
    assert result.outcome == "budget_exceeded"
    assert "grid window" in result.detail
    assert result.steps < 4096


def test_invalid_inputs_rejected():
    weights = oracle_weights(get_expert("add10"))
    with pytest.raises(RolloutInputError, match="K=12 symbols but"):
        start_rollout(weights, "add2", 1, 1)
    broken = DFSTWeights(weights.A, weights.B, weights.C, np.full_like(weights.h0, np.nan))
    with pytest.raises(RolloutInputError, match="non-finite"):
        start_rollout(broken, "add10", 1, 1)
    with pytest.raises(RolloutInputError, match="non-negative"):
        start_rollout(weights, "add10", -1, 1)
    with pytest.raises(RolloutInputError, match="digits"):
        start_rollout(weights, "add10", 10 ** (engine.MAX_DIGITS + 5), 1)
    with pytest.raises(RolloutInputError, match="dtype"):
        start_rollout(weights, "add10", 1, 1, dtype="float16")
    with pytest.raises(RolloutInputError, match="still running"):
        finish(start_rollout(weights, "add10", 1, 1))
    with pytest.raises(RolloutInputError, match="invalid rollout state"):
        RolloutState.from_bytes(b"not a state")


def test_tampered_state_rejected_or_stopped():
    weights = oracle_weights(get_expert("add10"))
    state = start_rollout(weights, "add10", 12, 34)
    state.cells[0, 0] = 100
    with pytest.raises(RolloutInputError, match="outside the weights' alphabet"):
        advance(weights, state, 10)
    far = start_rollout(weights, "add10", 12, 34)
    far.row = 10**12
    stopped = advance(weights, far, 10)
    assert stopped.status == "budget_exceeded"
    assert "grid window" in stopped.detail


def test_state_bytes_round_trip_large_operands():
    weights = oracle_weights(get_expert("add10"))
    a = repdigit(7, 5000, 10)
    state = start_rollout(weights, "add10", a, a, step_budget=10)
    copy = RolloutState.from_bytes(state.to_bytes())
    assert copy.a == a
    assert np.array_equal(copy.cells, state.cells)
    assert copy.step_budget == 10


def test_expert_step_counts_match_runner(task):
    expert = get_expert(task)
    pairs = problems(task) + [(repdigit(1, 30, expert.alphabet.radix), 5)]
    assert expert_step_counts(expert, pairs) == [count_steps(expert, a, b) for a, b in pairs]


def test_default_budget_beyond_str_limit():
    a = repdigit(9, 5000, 10)
    budget = default_step_budget("add10", a, a)
    assert budget == int(expert_step_counts(get_expert("add10"), [(a, a)])[0] * 1.5) + 1000
    assert budget > 2 * 5000**2
