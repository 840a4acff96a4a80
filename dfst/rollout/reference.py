"""The reference semantics of a closed-loop rollout: a plain PyTorch step loop.

Slow (tens of microseconds per step) and meant for checking the compiled
engine on short rollouts.  It follows the rules stated in
:mod:`dfst.rollout.engine`, computing ``A[x] h``, ``B[x] h`` and ``C[x] h``
with ``torch.mv``, whose summation order may differ from the engine's, so
hidden states agree to rounding and decisions agree unless two scores are
within rounding of each other.
"""

from __future__ import annotations

import numpy as np
import torch

from dfst.experts import get_expert
from dfst.grid import MOTION_COL_DELTA, MOTION_ROW_DELTA, STAY, Grid, problem_grid
from dfst.rollout.engine import default_step_budget
from dfst.rollout.state import RolloutState
from dfst.weights import DFSTWeights


def reference_rollout(
    weights: DFSTWeights, task: str, a: int, b: int, dtype: str = "float32", step_budget: int | None = None
) -> RolloutState:
    """Run the rollout step by step in PyTorch and return its final state."""
    expert = get_expert(task)
    weights.validate(expert.num_symbols)
    torch_dtype = getattr(torch, dtype)
    A, B, C, h = (torch.as_tensor(np.asarray(t), dtype=torch_dtype) for t in (weights.A, weights.B, weights.C,
                                                                                weights.h0))
    if step_budget is None:
        step_budget = default_step_budget(task, a, b)
    grid = problem_grid(expert.alphabet, a, b)
    row, col = 0, expert.start_column(a)
    steps = 0
    status = "running"
    detail = None

    while status == "running":
        if steps >= step_budget:
            status, detail = "budget_exceeded", f"no halt within the step budget of {step_budget} steps"
            break
        if not bool(torch.isfinite(h).all()):
            status, detail = "non_finite", f"the hidden state became non-finite after {steps} steps"
            break
        observed = grid.get(row, col)
        symbol_scores = torch.mv(B[observed], h)
        motion_scores = torch.mv(C[observed], h)
        h = torch.mv(A[observed], h)
        # numpy.argmax: first maximum wins, a NaN counts as the maximum
        written = int(np.argmax(symbol_scores.numpy()))
        motion = int(np.argmax(motion_scores.numpy()))
        grid.set(row, col, written)
        steps += 1
        if motion == STAY:
            status = "halted"
            break
        row += int(MOTION_ROW_DELTA[motion])
        col += int(MOTION_COL_DELTA[motion])

    final = Grid(grid.cells, grid.origin_row, grid.origin_col)
    return RolloutState(
        task=task, a=a, b=b, dtype=dtype, hidden=h.numpy().copy(), cells=final.cells,
        origin_row=final.origin_row, origin_col=final.origin_col, row=row, col=col, steps=steps,
        step_budget=step_budget, status=status, detail=detail,
    )
