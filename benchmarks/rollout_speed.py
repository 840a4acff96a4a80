"""Rollout speed per task shape (K, d) on one core, against the PyTorch reference and the arithmetic bound.

For each task the engine runs two models of the task's shape:

- one-hot: the oracle DFST.  It is in automaton form, so by default the engine
  runs it on its exact state table (dfst.rollout.automaton).  With the table
  path off, the kernels multiply one row of W[x] per step, because they skip
  the zero coordinates of the one-hot hidden state.
- dense: the oracle with every weight perturbed by 1e-6 · N(0, 1), whose hidden
  state has no zero coordinate, so every step does all (d + K + 5)·d
  multiply-adds.  It runs for at most a fixed number of steps, since it need
  not halt.

Columns are in ns per step on one core (CPU time of this process, which other
jobs on a shared machine disturb less than wall time).  They time the table
path on 16 one-hot rollouts in lockstep and the native kernel on one one-hot
rollout and on 16 one-hot rollouts.  Then the native kernel on 16 dense
rollouts of repdigit pairs and on 16 dense rollouts of random pairs with as
many digits, the numba kernel on 16 one-hot rollouts, and the PyTorch
reference loop on a shorter one-hot rollout.
Lanes that observe the same symbol share the loads of W[x], which happens
less often on random pairs.  The arithmetic bound is (d + K + 5)·d
multiply-adds divided by the core's peak float32 FMA rate, measured in this
run by ``fma_peak.c`` (built with ``$CC``, default ``cc``); the bound at the
nominal 32 FMAs per cycle and the ``/proc/cpuinfo`` clock is printed too.

Usage: python benchmarks/rollout_speed.py [--digits N] [--reference-digits N] [--tasks T ...]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dfst import get_expert, oracle_weights
from dfst.data import random_operand, repdigit
from dfst.experts import TASKS
from dfst.rollout import advance_many, engine, kernel_name, start_rollout
from dfst.rollout import native as native_module
from dfst.rollout.reference import reference_rollout
from dfst.weights import DFSTWeights

LANES = 16
NOMINAL_FMAS_PER_CYCLE = 32  # float32, two 512-bit FMA units
DENSE_STEPS = {"mult10": 400_000}  # steps of the dense run; other tasks take DEFAULT_DENSE_STEPS
DEFAULT_DENSE_STEPS = 2_000_000


def clock_hz() -> float:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) * 1e6
    raise RuntimeError("no 'cpu MHz' line in /proc/cpuinfo")


def peak_fmas_per_ns() -> float:
    """Build and run fma_peak.c; return the measured float32 multiply-adds per nanosecond of one core."""
    source = Path(__file__).with_name("fma_peak.c")
    with tempfile.TemporaryDirectory() as scratch:
        binary = Path(scratch) / "fma_peak"
        subprocess.run([os.environ.get("CC", "cc"), "-O2", "-march=native", str(source), "-o", str(binary)],
                       check=True, capture_output=True, text=True)
        rates = [float(subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout.split()[0])
                 for _ in range(3)]
    return max(rates)


def perturbed(weights: DFSTWeights, scale: float, seed: int = 0) -> DFSTWeights:
    rng = np.random.default_rng(seed)
    return DFSTWeights(*(t + scale * rng.standard_normal(t.shape).astype(t.dtype)
                         for t in (weights.A, weights.B, weights.C, weights.h0)))


def repdigit_states(weights, task: str, digits: int, lanes: int) -> list:
    radix = get_expert(task).alphabet.radix
    states = []
    for lane in range(lanes):
        value = repdigit(1 + lane % (radix - 1), digits, radix)
        states.append(start_rollout(weights, task, value, value, step_budget=10**12))
    return states


def random_states(weights, task: str, digits: int, lanes: int, seed: int = 0) -> list:
    """Return start states of ``lanes`` random pairs of exactly ``digits`` digits."""
    radix = get_expert(task).alphabet.radix
    rng = random.Random(seed)
    pairs = [(random_operand(rng, digits, radix, exact=True), random_operand(rng, digits, radix, exact=True))
             for _ in range(lanes)]
    return [start_rollout(weights, task, a, b, step_budget=10**12) for a, b in pairs]


def lockstep_ns_per_step(weights, task: str, digits: int, lanes: int) -> tuple[float, float]:
    """Return (CPU ns, wall ns) per step of ``lanes`` repdigit rollouts advanced together to their end."""
    states = repdigit_states(weights, task, digits, lanes)
    advance_many(weights, states, 1000)  # compile and warm up
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    finished = advance_many(weights, states, 10**12)
    cpu, wall = time.process_time() - cpu_started, time.perf_counter() - wall_started
    steps = sum(s.steps for s in finished)
    if not all(s.status == "halted" for s in finished):
        raise RuntimeError(f"an oracle rollout of {task} did not halt")
    return cpu / steps * 1e9, wall / steps * 1e9


def dense_ns_per_step(weights, task: str, digits: int, lanes: int, steps: int, random_pairs: bool = False) -> float:
    """Return CPU ns per step of ``lanes`` rollouts with no zero hidden coordinate, for ``steps`` steps in all.

    The lanes start on repdigit pairs, or on random pairs with ``random_pairs``.  Lanes of random pairs
    observe the same symbol less often, so fewer of them share the loads of W[x].
    """
    starts = (random_states if random_pairs else repdigit_states)(weights, task, digits, lanes)
    states = advance_many(weights, starts, 1000)
    started = time.process_time()
    advanced = advance_many(weights, states, steps // lanes)
    cpu = time.process_time() - started
    if any(np.count_nonzero(s.hidden) < len(s.hidden) for s in advanced):
        raise RuntimeError(f"a perturbed {task} rollout has a zero hidden coordinate, so it is not dense")
    return cpu / (sum(s.steps for s in advanced) - sum(s.steps for s in states)) * 1e9


def reference_ns_per_step(weights, task: str, digits: int) -> float:
    """Return CPU ns per step of the PyTorch reference loop on one repdigit rollout."""
    radix = get_expert(task).alphabet.radix
    value = repdigit(radix - 1, digits, radix)
    reference_rollout(weights, task, 1, 1, step_budget=10**9)  # warm up
    started = time.process_time()
    state = reference_rollout(weights, task, value, value, step_budget=10**9)
    return (time.process_time() - started) / state.steps * 1e9


def measure(task: str, digits: int, reference_digits: int, fmas_per_ns: float, clock: float) -> None:
    expert = get_expert(task)
    one_hot = oracle_weights(expert)
    dense = perturbed(one_hot, 1e-6)
    k, d = expert.num_symbols, expert.num_states
    digits = digits if task.startswith("add") else digits // 4

    table, _ = lockstep_ns_per_step(one_hot, task, digits, LANES)
    engine.AUTOMATON_TABLES = False
    try:
        single, _ = lockstep_ns_per_step(one_hot, task, digits, 1)
        lockstep, lockstep_wall = lockstep_ns_per_step(one_hot, task, digits, LANES)
        dense_steps = DENSE_STEPS.get(task, DEFAULT_DENSE_STEPS)
        dense_lockstep = dense_ns_per_step(dense, task, digits, LANES, dense_steps)
        dense_random = dense_ns_per_step(dense, task, digits, LANES, dense_steps, random_pairs=True)
        kernels = native_module.native_kernels
        native_module.native_kernels = lambda: None
        try:
            numba_lockstep, _ = lockstep_ns_per_step(one_hot, task, digits, LANES)
        finally:
            native_module.native_kernels = kernels
    finally:
        engine.AUTOMATON_TABLES = True
    reference = reference_ns_per_step(one_hot, task, reference_digits)

    fmas = (d + k + 5) * d
    bound = fmas / fmas_per_ns
    nominal_bound = fmas / NOMINAL_FMAS_PER_CYCLE / clock * 1e9
    print(f"{task} | {k} | {d} | {table:.1f} | {single:.1f} | {lockstep:.1f} | {lockstep_wall:.1f} | "
          f"{dense_lockstep:.1f} | {dense_random:.1f} | {numba_lockstep:.1f} | {reference:.0f} | "
          f"{reference / table:.0f}x | {reference / lockstep:.0f}x | {reference / dense_lockstep:.0f}x | "
          f"{bound:.1f} | {dense_lockstep / bound:.1f}x | {dense_random / bound:.1f}x | {nominal_bound:.1f} | "
          f"{dense_lockstep / nominal_bound:.1f}x",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", type=int, default=400,
                        help="operand digits of the compiled rollouts (a quarter of it for multiplication)")
    parser.add_argument("--reference-digits", type=int, default=12, help="operand digits of the reference rollout")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS, help="tasks to measure")
    args = parser.parse_args()
    torch.set_num_threads(1)
    clock = clock_hz()
    fmas_per_ns = peak_fmas_per_ns()
    print(f"kernel {kernel_name()}, cpuinfo clock {clock / 1e9:.2f} GHz, measured peak {fmas_per_ns:.1f} float32 "
          f"FMAs/ns (= {fmas_per_ns / NOMINAL_FMAS_PER_CYCLE:.2f} GHz at {NOMINAL_FMAS_PER_CYCLE} per cycle, or "
          f"{fmas_per_ns / 16:.2f} GHz at 16 per cycle, as on cores that split 512-bit FMAs in two), "
          f"load average {os.getloadavg()}")
    print("ns/step per core")
    print("task | K | d | table 16 lanes | one-hot 1 lane | one-hot 16 lanes | (wall) | dense 16 lanes | "
          "dense 16 random lanes | numba one-hot 16 lanes | reference | ref/table | ref/one-hot | ref/dense | "
          "bound | dense/bound | dense random/bound | nominal bound | dense/nominal bound")
    for task in args.tasks:
        measure(task, args.digits, args.reference_digits, fmas_per_ns, clock)


if __name__ == "__main__":
    main()
