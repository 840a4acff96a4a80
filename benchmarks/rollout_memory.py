"""Peak resident memory of single rollouts of about 1e6, 1e7 and 1e8 steps (add10 oracle).

Each rollout runs in a fresh subprocess, which prints its peak RSS
(ru_maxrss) before and after the rollout.  A constant-memory engine shows the
same peak for every length, apart from the grid (a few rows of 2n + 2 int8
cells for n-digit operands).

Usage: python benchmarks/rollout_memory.py [STEPS ...]
"""

from __future__ import annotations

import math
import subprocess
import sys

CHILD = """
import resource, sys, time
from dfst import get_expert, oracle_weights
from dfst.data import repdigit
from dfst.rollout import run_rollout
weights = oracle_weights(get_expert("add10"))
digits = int(sys.argv[1])
value = repdigit(9, digits, 10)
run_rollout(weights, "add10", 12, 34)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
result = run_rollout(weights, "add10", value, value)
seconds = time.perf_counter() - started
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(digits, result.steps, result.outcome, before, after, f"{seconds:.1f}")
"""


def main() -> None:
    targets = [int(float(t)) for t in sys.argv[1:]] or [10**6, 10**7, 10**8]
    print("digits | steps | outcome | peak RSS before (MiB) | peak RSS after (MiB) | seconds (incl. budget run)")
    for steps in targets:
        # add10 takes about 2·n² steps on n-digit repdigits
        digits = int(math.sqrt(steps / 2))
        output = subprocess.run([sys.executable, "-c", CHILD, str(digits)], capture_output=True, text=True,
                                check=True).stdout.split()
        n, taken, outcome, before, after, seconds = output
        print(f"{n} | {int(taken):.3e} | {outcome} | {int(before) / 1024:.1f} | {int(after) / 1024:.1f} | {seconds}")


if __name__ == "__main__":
    main()
