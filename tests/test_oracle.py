"""The oracle DFST (Theorem 2.1 of arXiv 2511.22751) acts exactly like its expert, step for step."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from dfst.data import repdigit
from dfst.experts import get_expert
from dfst.grid import problem_grid
from dfst.kernels import grow
from dfst.oracle import oracle_weights
from dfst.runner import record_trace
from dfst.weights import count_parameters


@numba.njit(cache=True)
def matvec(M, h):
    out = np.zeros(M.shape[0], dtype=h.dtype)
    for r in range(M.shape[0]):
        total = h.dtype.type(0)
        for k in range(M.shape[1]):
            total += M[r, k] * h[k]
        out[r] = total
    return out


@numba.njit(cache=True)
def first_mismatch(A, B, C, h0, cells, origin_row, origin_col, i, j, observed, written, motions):
    """Run the DFST in closed loop and return the first step whose action differs from the trace, or -1."""
    h = h0.copy()
    row_delta = np.array([-1, 1, 0, 0, 0])
    col_delta = np.array([0, 0, -1, 1, 0])
    for step in range(len(observed)):
        x = cells[i, j]
        if x != observed[step]:
            return step
        symbol = np.argmax(matvec(B[x], h))
        motion = np.argmax(matvec(C[x], h))
        if symbol != written[step] or motion != motions[step]:
            return step
        h = matvec(A[x], h)
        cells[i, j] = symbol
        if motion == 4:
            return -1 if step == len(observed) - 1 else step
        i += row_delta[motion]
        j += col_delta[motion]
        if i < 0 or j < 0 or i >= cells.shape[0] or j >= cells.shape[1]:
            cells, origin_row, origin_col, i, j = grow(cells, origin_row, origin_col, i, j)
    return len(observed)


# Operand lengths whose repdigit traces exceed one million steps.
MILLION_STEP_DIGITS = {"add2": 720, "add10": 710, "mult2": 420, "mult10": 420}


@pytest.mark.parametrize("task", sorted(MILLION_STEP_DIGITS))
def test_oracle_matches_expert_for_a_million_steps(task):
    expert = get_expert(task)
    radix = expert.alphabet.radix
    a = repdigit(radix - 1, MILLION_STEP_DIGITS[task], radix)
    b = repdigit(1, MILLION_STEP_DIGITS[task] - 3, radix) * radix + 1
    trace = record_trace(expert, a, b)
    weights = oracle_weights(expert)
    grid = problem_grid(expert.alphabet, a, b)

    mismatch = first_mismatch(
        weights.A, weights.B, weights.C, weights.h0, grid.cells, grid.origin_row, grid.origin_col,
        grid.origin_row, grid.origin_col + expert.start_column(a), trace.observed, trace.written, trace.motions,
    )

    assert len(trace) >= 1_000_000
    assert mismatch == -1


def test_oracle_shapes_and_parameter_count(task):
    expert = get_expert(task)
    weights = oracle_weights(expert)
    weights.validate(expert.num_symbols)
    assert weights.hidden_dim == expert.num_states
    assert weights.num_parameters == count_parameters(expert.num_symbols, expert.num_states)
