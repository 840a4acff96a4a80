"""RLG probes during training: is the current model exact on every repdigit pair of n digits?"""

from __future__ import annotations

import logging

from dfst.data import repdigit_pairs
from dfst.experts import get_expert
from dfst.weights import DFSTWeights

logger = logging.getLogger(__name__)


def rlg_probe(weights: DFSTWeights, task: str, digits: int) -> bool:
    """Return True if the rollout engine finds the model correct on every ``digits``-digit repdigit pair."""
    try:
        from dfst.rollout import run_rollout
    except ImportError as error:
        raise RuntimeError(
            "RLG probes need dfst.rollout.run_rollout, which is not available; set probe_every=0 "
            "or pass a probe function to train()"
        ) from error
    radix = get_expert(task).alphabet.radix
    for a, b in repdigit_pairs(digits, radix):
        if run_rollout(weights, task, a, b).outcome != "correct":
            return False
    return True
