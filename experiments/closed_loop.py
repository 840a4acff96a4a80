"""A minimal closed-loop DFST rollout (numba) for the training experiments.

Used for LG measurements while the library's rollout engine is not available;
the outcomes use the same names as ``dfst.rollout``: correct, wrong,
budget_exceeded, non_finite.
"""

from __future__ import annotations

import numba
import numpy as np

from dfst.experts import get_expert
from dfst.grid import Grid, problem_grid, read_answer
from dfst.kernels import grow
from dfst.weights import DFSTWeights

_ROW = np.array([-1, 1, 0, 0, 0], dtype=np.int64)
_COL = np.array([0, 0, -1, 1, 0], dtype=np.int64)


@numba.njit(cache=True)
def _rollout(A, B, C, h0, cells, origin_row, origin_col, i, j, budget):
    k, d, _ = A.shape
    h = h0.copy()
    h_next = np.empty_like(h)
    steps = 0
    while steps < budget:
        x = cells[i, j]
        best_w = 0
        best_score = -np.inf
        for s in range(k):
            acc = 0.0
            for q in range(d):
                acc += B[x, s, q] * h[q]
            if acc > best_score:
                best_score = acc
                best_w = s
        best_m = 0
        best_motion = -np.inf
        for s in range(5):
            acc = 0.0
            for q in range(d):
                acc += C[x, s, q] * h[q]
            if acc > best_motion:
                best_motion = acc
                best_m = s
        if not (np.isfinite(best_score) and np.isfinite(best_motion)):
            return 3, steps, cells, origin_row, origin_col
        for p in range(d):
            acc = 0.0
            for q in range(d):
                acc += A[x, p, q] * h[q]
            h_next[p] = acc
        h, h_next = h_next, h
        cells[i, j] = best_w
        steps += 1
        if best_m == 4:
            return 1, steps, cells, origin_row, origin_col
        i += _ROW[best_m]
        j += _COL[best_m]
        if i < 0 or j < 0 or i >= cells.shape[0] or j >= cells.shape[1]:
            cells, origin_row, origin_col, i, j = grow(cells, origin_row, origin_col, i, j)
    return 0, steps, cells, origin_row, origin_col


def rollout(weights: DFSTWeights, task: str, a: int, b: int, budget: int | None = None) -> tuple[str, int]:
    """Return (outcome, steps) of the DFST on (a, b)."""
    expert = get_expert(task)
    grid = problem_grid(expert.alphabet, a, b)
    n = max(len(expert.alphabet.digits_of(a)), len(expert.alphabet.digits_of(b)))
    budget = budget or 4 * (n + 2) * (n + 2) * expert.alphabet.radix + 10_000
    w = weights.astype(np.float32)
    status, steps, cells, orow, ocol = _rollout(
        w.A, w.B, w.C, w.h0, grid.cells, grid.origin_row, grid.origin_col,
        grid.origin_row, grid.origin_col + expert.start_column(a), budget,
    )
    if status == 0:
        return "budget_exceeded", steps
    if status == 3:
        return "non_finite", steps
    answer = read_answer(Grid(cells, orow, ocol), expert.alphabet)
    if answer.problem is None and int(answer.digits, expert.alphabet.radix) == expert.compute(a, b):
        return "correct", steps
    return "wrong", steps


def probe(weights: DFSTWeights, task: str, digits: int) -> bool:
    """RLG probe: correct on every repdigit pair of ``digits`` digits."""
    from dfst.data import repdigit_pairs

    radix = get_expert(task).alphabet.radix
    return all(rollout(weights, task, a, b)[0] == "correct" for a, b in repdigit_pairs(digits, radix))
