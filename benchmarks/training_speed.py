"""Training iterations per second on the CPU: fused numba pass vs torch step loop vs parallel scan.

One iteration is a batch-32 gradient (the path under test) plus one Adam
step, on batches drawn from each task's training data (DS plus covering
pairs).  Each path runs single-threaded (torch and numba) for at least
``--seconds`` after a warm-up, and the script prints iterations/s and the
fused path's speed-up over the other two, all measured in this one run.

Usage: python benchmarks/training_speed.py [--tasks add2 add10] [--paths fused loop scan] [--seconds 3]
       [--batch-size 32]

The scan does O(T d³) work per trace, so for mult10 (d = 93) one iteration
takes minutes on a CPU; ``--paths fused loop`` leaves it out.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dfst.data import build_dataset  # noqa: E402
from dfst.experts import get_expert  # noqa: E402
from dfst.training.loop import TrainConfig, _gradient_step, _select, training_pairs  # noqa: E402
from dfst.training.model import DFST, pad_traces  # noqa: E402

PATHS = ("fused", "loop", "scan")


def iterations_per_second(task: str, path: str, batch_size: int, seconds: float) -> tuple[float, float]:
    """Return (iterations/s, mean padded batch length) of one training path."""
    expert = get_expert(task)
    pairs, extra = training_pairs(TrainConfig(task=task))
    data = pad_traces(build_dataset(task, pairs + extra))
    model = DFST(expert.num_symbols, expert.num_states, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=False)
    rng = np.random.Generator(np.random.PCG64(0))

    def step() -> int:
        batch = _select(data, rng.integers(0, len(data.lengths), size=batch_size))
        _gradient_step(model, batch, path)
        optimizer.step()
        return batch.observed.shape[1]

    step()  # warm-up: numba compilation, torch allocations
    count, lengths = 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or count < 3:
        lengths += step()
        count += 1
    return count / (time.perf_counter() - started), lengths / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["add2", "add10"], help="tasks to measure")
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per path and task")
    parser.add_argument("--batch-size", type=int, default=32, help="traces per batch")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS,
                        help="training paths to measure; the ratios need fused and the other path")
    args = parser.parse_args()
    torch.set_num_threads(1)

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, one thread")
    others = [path for path in args.paths if path != "fused"] if "fused" in args.paths else []
    print(f"{'task':8} {'d':>4} {'mean T':>7} " + " ".join(f"{p + ' it/s':>12}" for p in args.paths)
          + "".join(f" {'fused/' + p:>11}" for p in others))
    for task in args.tasks:
        rates = {}
        for path in args.paths:
            rates[path], mean_length = iterations_per_second(task, path, args.batch_size, args.seconds)
        d = get_expert(task).num_states
        print(
            f"{task:8} {d:4d} {mean_length:7.0f} " + " ".join(f"{rates[p]:12.1f}" for p in args.paths)
            + "".join(f" {rates['fused'] / rates[p]:10.1f}x" for p in others),
            flush=True,
        )


if __name__ == "__main__":
    main()
