"""The rollout calls the workers make: the compiled engine of :mod:`dfst.rollout`."""

from __future__ import annotations

import sys

from dfst.rollout import RolloutState, advance, default_step_budget, finish, start_rollout

# Operands of the length-generalisation checks reach tens of thousands of digits.
sys.set_int_max_str_digits(0)

state_from_bytes = RolloutState.from_bytes

__all__ = ["advance", "default_step_budget", "finish", "start_rollout", "state_from_bytes"]
