"""PLG + RLG at 5000 digits for add10 on 2 worker processes: wall time and verdicts.

Runs the oracle DFST, and the trained model too if dfst/models/add10.safetensors
exists.  Usage: python benchmarks/main_job_eval.py [--digits N] [--workers W]
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from dfst import get_expert, oracle_weights
from dfst.checkpoint import load_checkpoint
from dfst.evaluation import evaluate
from dfst.rollout import kernel_name
from dfst.weights import DFSTWeights

MODEL = Path(__file__).resolve().parents[1] / "dfst" / "models" / "add10.safetensors"


def load_trained() -> DFSTWeights | None:
    if not MODEL.exists():
        return None
    weights, _ = load_checkpoint(MODEL, task="add10")
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--digits", type=int, default=5000, help="operand digit count n")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(f"kernel: {kernel_name()}, load average before: {os.getloadavg()}")
    models = {"oracle": oracle_weights(get_expert("add10"))}
    trained = load_trained()
    if trained is not None:
        models["trained"] = trained
    else:
        print(f"no trained model at {MODEL}; oracle only")
    for name, weights in models.items():
        report = evaluate(weights, "add10", args.digits, workers=args.workers, model_name=name)
        outcomes = {}
        for pair in report.pairs:
            outcomes[pair.outcome] = outcomes.get(pair.outcome, 0) + 1
        print(f"{name}: {len(report.pairs)} rollouts, verdicts {report.verdicts}, outcomes {outcomes}")
        print(f"{name}: {report.total_steps:.3e} steps in {report.wall_seconds:.1f} s wall on {args.workers} "
              f"workers = {report.wall_seconds * 1e9 * args.workers / report.total_steps:.1f} wall ns/step/core; "
              f"CPU {report.cpu_seconds:.1f} s = {report.cpu_seconds * 1e9 / report.total_steps:.1f} CPU ns/step, "
              f"{report.cpu_seconds / args.workers:.1f} s per worker if uncontended "
              f"(load average after: {os.getloadavg()})")


if __name__ == "__main__":
    main()
