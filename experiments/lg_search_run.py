"""Derive PLG and RLG of a checkpoint with ``dfst.evaluation.lg_search`` (one worker).

Usage: python experiments/lg_search_run.py CHECKPOINT [CAP_DIGITS]

Prints one JSON line: plg, rlg, what stopped the search and the digit counts tried.
"""

from __future__ import annotations

import json
import sys

from dfst.checkpoint import load_checkpoint
from dfst.evaluation import lg_search


def main() -> None:
    weights, metadata = load_checkpoint(sys.argv[1])
    cap = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    result = lg_search(weights, metadata["task"], start=1, cap_digits=cap, workers=1)
    tried = [(step.digits, step.plg, step.rlg) for step in result.tried]
    print(json.dumps({"checkpoint": sys.argv[1], "plg": result.plg, "rlg": result.rlg,
                      "stopped_by": result.stopped_by, "tried": tried}))


if __name__ == "__main__":
    main()
