"""Rollout speed per task shape (K, d) on one core, against the PyTorch reference and the arithmetic bound.

For each built task, with the oracle DFST: ns/step of the native kernel on one
rollout and on 16 rollouts in lockstep, of the numba kernel in lockstep, and of
the PyTorch reference loop on a shorter rollout.  The bound is the per-step
multiply-adds (d + K + 5)·d over 32 float32 FMAs per cycle (two 16-wide FMA
units) at the clock in /proc/cpuinfo.  Times are CPU time of this process
(time.process_time), which other jobs on a shared machine disturb less than
wall time.  The wall time of the 16-lane run is printed too.

Usage: python benchmarks/rollout_speed.py [--digits N] [--reference-digits N]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from dfst import get_expert, oracle_weights
from dfst.data import repdigit
from dfst.experts import TASKS
from dfst.rollout import advance_many, kernel_name, start_rollout
from dfst.rollout import native as native_module
from dfst.rollout.reference import reference_rollout

LANES = 16
FMAS_PER_CYCLE = 32  # float32, two 512-bit FMA units
ADD_LATENCY_CYCLES = 4  # float add latency of Intel cores since Skylake


def clock_hz() -> float:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) * 1e6
    raise RuntimeError("no 'cpu MHz' line in /proc/cpuinfo")


def lockstep_ns_per_step(weights, task: str, digits: int, lanes: int) -> tuple[float, float]:
    """Return (CPU ns, wall ns) per step of ``lanes`` repdigit rollouts advanced together."""
    radix = get_expert(task).alphabet.radix
    states = []
    for lane in range(lanes):
        digit = 1 + lane % (radix - 1)
        value = repdigit(digit, digits, radix)
        states.append(start_rollout(weights, task, value, value, step_budget=10**12))
    advance_many(weights, states, 1000)  # compile and warm up
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    finished = advance_many(weights, states, 10**12)
    cpu, wall = time.process_time() - cpu_started, time.perf_counter() - wall_started
    steps = sum(s.steps for s in finished)
    if not all(s.status == "halted" for s in finished):
        raise RuntimeError(f"an oracle rollout of {task} did not halt")
    return cpu / steps * 1e9, wall / steps * 1e9


def reference_ns_per_step(weights, task: str, digits: int) -> float:
    """Return CPU ns per step of the PyTorch reference loop on one repdigit rollout."""
    radix = get_expert(task).alphabet.radix
    value = repdigit(radix - 1, digits, radix)
    reference_rollout(weights, task, 1, 1, step_budget=10**9)  # warm up
    started = time.process_time()
    state = reference_rollout(weights, task, value, value, step_budget=10**9)
    return (time.process_time() - started) / state.steps * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--digits", type=int, default=400, help="operand digits of the compiled rollouts")
    parser.add_argument("--reference-digits", type=int, default=12, help="operand digits of the reference rollout")
    args = parser.parse_args()
    torch.set_num_threads(1)
    clock = clock_hz()
    print(f"kernel {kernel_name()}, clock {clock / 1e9:.2f} GHz, load average {os.getloadavg()}")
    header = ("task", "K", "d", "native 1 lane", f"native {LANES} lanes", "(wall)", f"numba {LANES} lanes",
              "reference", "ref/native", "bound", "native/bound")
    print("ns/step per core")
    print(" | ".join(header))
    for task in TASKS:
        try:
            expert = get_expert(task)
        except NotImplementedError:
            print(f"{task}: expert not built, skipped")
            continue
        weights = oracle_weights(expert)
        k, d = expert.num_symbols, expert.num_states
        digits = args.digits if task.startswith("add") else args.digits // 4
        single, _ = lockstep_ns_per_step(weights, task, digits, 1)
        lockstep, lockstep_wall = lockstep_ns_per_step(weights, task, digits, LANES)
        kernels = native_module.native_kernels
        native_module.native_kernels = lambda: None
        try:
            numba_lockstep, _ = lockstep_ns_per_step(weights, task, digits, LANES)
        finally:
            native_module.native_kernels = kernels
        reference = reference_ns_per_step(weights, task, args.reference_digits)
        bound = (d + k + 5) * d / FMAS_PER_CYCLE / clock * 1e9
        latency = d * ADD_LATENCY_CYCLES / clock * 1e9
        print(f"{task} | {k} | {d} | {single:.1f} | {lockstep:.1f} | {lockstep_wall:.1f} | {numba_lockstep:.1f} | "
              f"{reference:.0f} | "
              f"{reference / lockstep:.0f}x | {bound:.1f} | {lockstep / bound:.1f}x")
        print(f"  one-lane dependent chain: {d} adds x {ADD_LATENCY_CYCLES} cycles = {latency:.1f} ns/step")


if __name__ == "__main__":
    main()
