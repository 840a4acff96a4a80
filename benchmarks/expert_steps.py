"""Step counts of every expert: the constant c in c·n² for n-digit operands.

For each task, prints the steps (halting step included) on the repdigit pair
(r^n − 1) op (r^n − 1) and the mean over seeded random pairs with exactly n
digits, for each n, each with c = steps / n².  It also prints the states, the
DFST parameter count and the reachable transitions that the experts table in
README.md lists.

Usage: python benchmarks/expert_steps.py [--digits 100 1000] [--random-pairs 5]
"""

from __future__ import annotations

import argparse
import random

from dfst.data import random_operand, reachable_transitions
from dfst.experts import TASKS, get_expert
from dfst.runner import count_steps
from dfst.weights import count_parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", type=int, nargs="+", default=[100, 1000], help="operand lengths n")
    parser.add_argument("--random-pairs", type=int, default=5, help="random pairs per length")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random pairs")
    args = parser.parse_args()

    for task in TASKS:
        expert = get_expert(task)
        radix = expert.alphabet.radix
        parameters = count_parameters(expert.num_symbols, expert.num_states)
        transitions = int(reachable_transitions(expert).sum())
        print(
            f"{task}: K={expert.num_symbols} states={expert.num_states} parameters={parameters:,} "
            f"reachable transitions={transitions}"
        )
        rng = random.Random(args.seed)
        for n in args.digits:
            largest = radix**n - 1
            repdigit_steps = count_steps(expert, largest, largest)
            random_steps = []
            for _ in range(args.random_pairs):
                a = random_operand(rng, n, radix, exact=True)
                b = random_operand(rng, n, radix, exact=True)
                random_steps.append(count_steps(expert, a, b))
            mean = sum(random_steps) / len(random_steps)
            print(
                f"  n={n}: repdigit {repdigit_steps:,} steps (c={repdigit_steps / n**2:.2f}), "
                f"random mean {mean:,.0f} steps (c={mean / n**2:.2f})"
            )


if __name__ == "__main__":
    main()
