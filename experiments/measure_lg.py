"""Measure PLG and RLG checks of a checkpoint with the library's rollout engine and record them.

Usage: python experiments/measure_lg.py CHECKPOINT DIGITS [DIGITS ...]

Runs ``dfst.evaluation.evaluate`` (one worker) at each digit count in the
order given, stops at the first failure, prints one JSON line per count and
stores the verdicts under ``lg`` in the checkpoint's JSON sidecar.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

from dfst.checkpoint import load_checkpoint, metadata_path, write_atomic
from dfst.evaluation import evaluate
from dfst.rollout import kernel_name


def main() -> None:
    path = Path(sys.argv[1])
    weights, metadata = load_checkpoint(path)
    task = metadata["task"]
    for digits in (int(x) for x in sys.argv[2:]):
        report = evaluate(weights, task, digits, workers=1, model_name=path.stem)
        failures = [
            {"check": p.check, "outcome": p.outcome, "a_digits": p.a_digits, "b_digits": p.b_digits}
            for p in report.pairs if p.outcome != "correct"
        ][:5]
        record = {
            "verdicts": report.verdicts,
            "rollouts": len(report.pairs),
            "total_steps": report.total_steps,
            "wall_seconds": round(report.wall_seconds, 1),
            "kernel": kernel_name(),
            "machine": f"{platform.machine()}, 1 worker process",
            "first_failures": failures,
        }
        print(json.dumps({"digits": digits, **record}), flush=True)
        document = json.loads(metadata_path(path).read_text())
        document.setdefault("lg", {})[str(digits)] = record
        write_atomic(metadata_path(path), (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())
        if not all(report.verdicts.values()):
            break


if __name__ == "__main__":
    main()
