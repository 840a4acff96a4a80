"""Constant-memory closed-loop rollouts of DFSTs on the grid.

>>> from dfst import get_expert, oracle_weights
>>> from dfst.rollout import run_rollout
>>> run_rollout(oracle_weights(get_expert("add10")), "add10", 457, 68).outcome
'correct'
"""

from dfst.rollout.engine import (
    MAX_DIGITS,
    MAX_GRID_CELLS,
    advance,
    advance_many,
    default_step_budget,
    finish,
    run_rollout,
    start_rollout,
)
from dfst.rollout.native import kernel_name
from dfst.rollout.state import OUTCOMES, STATUSES, RolloutInputError, RolloutResult, RolloutState

__all__ = [
    "MAX_DIGITS",
    "MAX_GRID_CELLS",
    "OUTCOMES",
    "STATUSES",
    "RolloutInputError",
    "RolloutResult",
    "RolloutState",
    "advance",
    "advance_many",
    "default_step_budget",
    "finish",
    "kernel_name",
    "run_rollout",
    "start_rollout",
]
