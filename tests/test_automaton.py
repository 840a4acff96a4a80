"""The exact table path for DFSTs in automaton form against the rollout kernels."""

from __future__ import annotations

import numpy as np
import pytest

from dfst import get_expert, oracle_weights
from dfst.data import repdigit
from dfst.registry import load_model
from dfst.rollout import advance, advance_many, engine, start_rollout
from dfst.rollout.automaton import automaton_table
from dfst.weights import DFSTWeights


def with_tensors(weights: DFSTWeights, **tensors) -> DFSTWeights:
    fields = {"A": weights.A, "B": weights.B, "C": weights.C, "h0": weights.h0}
    fields.update(tensors)
    return DFSTWeights(**{name: np.array(value) for name, value in fields.items()})


def run_chunks(weights, state, chunk):
    while state.status == "running":
        state = advance(weights, state, chunk)
    return state


def both_paths(weights, task, a, b, chunk, monkeypatch, step_budget=None):
    """Return the final states of one rollout on the table path and on the kernels."""
    table_state = run_chunks(weights, start_rollout(weights, task, a, b, step_budget=step_budget), chunk)
    with monkeypatch.context() as patch:
        patch.setattr(engine, "AUTOMATON_TABLES", False)
        kernel_state = run_chunks(weights, start_rollout(weights, task, a, b, step_budget=step_budget), chunk)
    return table_state, kernel_state


def assert_same_state(first, second):
    assert first.status == second.status
    assert first.steps == second.steps
    assert (first.row, first.col) == (second.row, second.col)
    assert (first.origin_row, first.origin_col) == (second.origin_row, second.origin_col)
    assert np.array_equal(first.cells, second.cells)
    assert first.hidden.dtype == second.hidden.dtype
    assert first.hidden.tobytes() == second.hidden.tobytes()


def test_oracle_and_shipped_models_have_tables():
    for task in ("add2", "add10", "mult2", "mult10"):
        assert automaton_table(oracle_weights(get_expert(task))) is not None, task
    for name in ("add2", "add10"):
        assert automaton_table(load_model(name)[0]) is not None, name


def test_non_automaton_weights_have_no_table():
    weights = oracle_weights(get_expert("add10"))
    two_ones = weights.A.copy()
    two_ones[0, :, 0] = 0
    two_ones[0, :2, 0] = 1
    half = weights.A.copy()
    half[half == 1] = 0.5
    cases = {
        "perturbed A": with_tensors(weights, A=weights.A + np.float32(1e-6)),
        "two ones in a column": with_tensors(weights, A=two_ones),
        "entries of 0.5": with_tensors(weights, A=half),
        "h0 scaled": with_tensors(weights, h0=weights.h0 * np.float32(2)),
        "h0 with two entries": with_tensors(weights, h0=np.full_like(weights.h0, 0.25)),
    }
    for name, case in cases.items():
        assert automaton_table(case) is None, name


@pytest.mark.parametrize("chunk", [7, 10**9])
def test_table_matches_kernels_on_oracles(task, chunk, monkeypatch):
    weights = oracle_weights(get_expert(task))
    radix = get_expert(task).alphabet.radix
    for a, b in [(0, 0), (repdigit(radix - 1, 9, radix), 1), (123_456 % radix**6, 987 % radix**3)]:
        table_state, kernel_state = both_paths(weights, task, a, b, chunk, monkeypatch)
        assert table_state.status == "halted"
        assert_same_state(table_state, kernel_state)


def test_table_matches_kernels_on_shipped_model(monkeypatch):
    weights, _ = load_model("add10")
    for a, b in [(99_999, 1), (31_415_926, 27_182_818), (5, 123_456_789)]:
        table_state, kernel_state = both_paths(weights, "add10", a, b, 1000, monkeypatch)
        assert table_state.status == "halted"
        assert_same_state(table_state, kernel_state)


def test_table_matches_kernels_at_budget(monkeypatch):
    weights = oracle_weights(get_expert("mult10"))
    table_state, kernel_state = both_paths(weights, "mult10", 10**30 - 1, 10**30 - 1, 13, monkeypatch, step_budget=500)

    assert table_state.status == "budget_exceeded"
    assert_same_state(table_state, kernel_state)


def test_table_matches_kernels_with_zero_state(monkeypatch):
    # a zero column in A[1] sends the hidden state to the zero vector, which writes symbol 0 and moves up
    weights = oracle_weights(get_expert("add10"))
    A = weights.A.copy()
    A[1] = 0
    dying = with_tensors(weights, A=A)
    assert automaton_table(dying) is not None

    table_state, kernel_state = both_paths(dying, "add10", 4321, 1234, 50, monkeypatch, step_budget=400)

    assert not table_state.hidden.any()
    assert_same_state(table_state, kernel_state)


def test_dense_state_falls_back_to_kernels(monkeypatch):
    # a state reached by perturbed weights has a dense hidden vector, so the oracle continues it on the kernels
    oracle = oracle_weights(get_expert("add2"))
    noisy = with_tensors(oracle, A=oracle.A + np.float32(1e-4))
    start = advance(noisy, start_rollout(noisy, "add2", 45, 18), 10)
    assert np.count_nonzero(start.hidden) > 1

    table_state = advance_many(oracle, [start], 10**6)[0]
    with monkeypatch.context() as patch:
        patch.setattr(engine, "AUTOMATON_TABLES", False)
        kernel_state = advance_many(oracle, [start], 10**6)[0]

    assert_same_state(table_state, kernel_state)
