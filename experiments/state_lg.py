"""Check PLG and RLG of the full-precision parameters in a training state, in float32 and float64 rollouts.

Usage: python experiments/state_lg.py RUN/training_state.safetensors TASK DIGITS [DIGITS ...]

``model.safetensors`` contains float32 weights even after a ``--dtype float64``
run, because ``DFST.to_weights`` casts them.  The training state keeps the
parameters in the training dtype, so this script reads them from there and
runs ``dfst.evaluation.evaluate`` (one worker) at each digit count with
float64 rollouts on the uncast weights and float32 rollouts on the cast ones.
Prints one JSON line per digit count and rollout dtype.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from dfst.checkpoint import load_tensors
from dfst.evaluation import evaluate
from dfst.weights import DFSTWeights


def main() -> None:
    tensors = load_tensors(Path(sys.argv[1]))
    task = sys.argv[2]
    arrays = [np.ascontiguousarray(tensors[f"param.{name}"]) for name in ("A", "B", "C", "h0")]
    variants = {
        "float64": DFSTWeights(*(a.astype(np.float64) for a in arrays)),
        "float32": DFSTWeights(*(np.ascontiguousarray(a.astype(np.float32)) for a in arrays)),
    }
    print(json.dumps({"state": sys.argv[1], "stored_dtype": str(arrays[0].dtype)}), flush=True)
    for digits in (int(x) for x in sys.argv[3:]):
        for dtype, weights in variants.items():
            report = evaluate(weights, task, digits, workers=1, dtype=dtype)
            failures = [
                {"check": p.check, "outcome": p.outcome, "a_digits": p.a_digits, "b_digits": p.b_digits,
                 "first_wrong_digit": p.first_wrong_digit}
                for p in report.pairs if p.outcome != "correct"
            ][:3]
            print(json.dumps({"digits": digits, "rollout_dtype": dtype, "verdicts": report.verdicts,
                              "rollouts": len(report.pairs), "total_steps": report.total_steps,
                              "first_failures": failures}), flush=True)


if __name__ == "__main__":
    main()
