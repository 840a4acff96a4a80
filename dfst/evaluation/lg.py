"""Length-generalisation (LG) checks after arXiv 2511.22751 ("Exact Learning of Arithmetic with Differentiable Agents").

PLG(n) passes when the model is exact on 5 random pairs of exactly n digits
and 5 random pairs of at most n digits.  RLG(n) passes when it is exact on
every pair of n-digit repdigits (1 pair in binary, 81 in decimal).  The
reported RLG is only defined up to the reported PLG.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import multiprocessing
import os
import random
import time
from collections.abc import Callable

from dfst.data import random_operand, repdigit_pairs
from dfst.experts import get_expert
from dfst.rollout import RolloutInputError, advance_many, finish, start_rollout
from dfst.rollout.budget import expert_step_counts
from dfst.rollout.engine import budget_from_steps
from dfst.weights import DFSTWeights

logger = logging.getLogger(__name__)

CHECKS = ("plg", "rlg")
PLG_EXACT_PAIRS = 5
PLG_AT_MOST_PAIRS = 5
# Rollouts one worker advances in lockstep.  4, 8 and 16 lanes measured
# within 10% of each other for add10; more lanes keep the kernel busy longer
# when some rollouts end early.
LANES = 16
# Steps per lane between refills of finished lanes.
REFILL_STEPS = 1 << 20
REPORT_SCHEMA = 1


@dataclasses.dataclass(frozen=True)
class LGPair:
    """One evaluated problem."""

    check: str  # "plg" or "rlg"
    a: int  # first operand
    b: int  # second operand


def lg_pairs(task: str, digits: int, checks=CHECKS, seed: int = 0) -> list[LGPair]:
    """Return the PLG and RLG problems for n = ``digits``, drawn with ``random.Random(seed)``."""
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise RolloutInputError(f"unknown checks {unknown}; known checks are {CHECKS}")
    if not isinstance(digits, int) or digits < 1:
        raise RolloutInputError(f"digit count {digits!r} must be a positive integer")
    radix = get_expert(task).alphabet.radix
    pairs = []
    if "plg" in checks:
        rng = random.Random(seed)
        for _ in range(PLG_EXACT_PAIRS):
            pairs.append(LGPair("plg", random_operand(rng, digits, radix, exact=True),
                                random_operand(rng, digits, radix, exact=True)))
        for _ in range(PLG_AT_MOST_PAIRS):
            pairs.append(LGPair("plg", random_operand(rng, digits, radix), random_operand(rng, digits, radix)))
    if "rlg" in checks:
        pairs += [LGPair("rlg", a, b) for a, b in repdigit_pairs(digits, radix)]
    return pairs


@dataclasses.dataclass
class PairResult:
    """The rollout outcome of one LG pair."""

    check: str  # "plg" or "rlg"
    a_digits: int  # digits of the first operand
    b_digits: int  # digits of the second operand
    outcome: str  # "correct", "wrong", "budget_exceeded" or "non_finite"
    steps: int  # steps the model took
    seconds: float  # this pair's share of the lockstep wall time
    first_wrong_digit: int | None  # 0-based from the most significant digit, for a wrong answer
    detail: str | None  # reason for a malformed answer, a budget or a non-finite state


@dataclasses.dataclass
class LGReport:
    """Results of the LG checks at one digit count."""

    task: str  # task name
    model_name: str  # label of the evaluated weights
    model_sha256: str  # DFSTWeights.sha256() of the evaluated weights
    digits: int  # n
    seed: int  # seed of the random PLG pairs
    dtype: str  # rollout precision
    pairs: list[PairResult]  # one entry per rollout, in lg_pairs order
    verdicts: dict[str, bool]  # check name -> every pair of that check correct
    total_steps: int  # steps summed over rollouts
    wall_seconds: float  # wall time of the whole evaluation
    cpu_seconds: float  # CPU time of the rollout work summed over workers, budget runs of the expert included
    workers: int  # worker processes used
    steps_per_second: float  # total_steps / wall_seconds

    def to_json(self) -> str:
        return json.dumps({"schema": REPORT_SCHEMA, **dataclasses.asdict(self)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> LGReport:
        data = json.loads(text)
        if data.pop("schema", None) != REPORT_SCHEMA:
            raise ValueError(f"LG report schema is not {REPORT_SCHEMA}; re-run the evaluation with this version")
        data["pairs"] = [PairResult(**p) for p in data["pairs"]]
        return cls(**data)


def _run_batch(weights: DFSTWeights, task: str, pairs: list[LGPair], dtype: str) -> tuple[list[PairResult], float]:
    """Run rollouts in lockstep, LANES at a time, refilling lanes as they finish; return them and the CPU seconds."""
    cpu_started = time.process_time()
    budgets = [budget_from_steps(s) for s in expert_step_counts(get_expert(task), [(p.a, p.b) for p in pairs])]
    results: list[PairResult | None] = [None] * len(pairs)
    queue = list(range(len(pairs)))
    lanes: list[tuple[int, object]] = []
    while queue or lanes:
        while queue and len(lanes) < LANES:
            n = queue.pop(0)
            lanes.append((n, start_rollout(weights, task, pairs[n].a, pairs[n].b, dtype, budgets[n])))
        states = advance_many(weights, [state for _, state in lanes], REFILL_STEPS)
        kept = []
        for (n, _), state in zip(lanes, states, strict=True):
            if state.status == "running":
                kept.append((n, state))
                continue
            result = finish(state)
            results[n] = PairResult(pairs[n].check, result.a_digits, result.b_digits, result.outcome, result.steps,
                                    result.seconds, result.first_wrong_digit, result.detail)
        lanes = kept
    return results, time.process_time() - cpu_started


def _batches(pairs: list[LGPair]) -> list[list[int]]:
    """Split pair indices into lockstep batches of similar length, longest first."""
    def size(n: int) -> int:
        # the longer operand's length is a proxy for the step count
        return max(pairs[n].a, pairs[n].b).bit_length()

    order = sorted(range(len(pairs)), key=size, reverse=True)
    return [order[i : i + LANES] for i in range(0, len(order), LANES)]


def evaluate(
    weights: DFSTWeights,
    task: str,
    digits: int,
    checks=CHECKS,
    seed: int = 0,
    workers: int | None = None,
    model_name: str = "model",
    progress: Callable[[int, int], None] | None = None,
    dtype: str = "float32",
) -> LGReport:
    """Run the LG checks at n = ``digits`` and return the report.

    Rollouts run in ``workers`` processes (default: the CPU count; 1 runs in
    this process), in lockstep batches of similar length.  ``progress`` is
    called with (rollouts done, rollouts total) after each batch.
    """
    pairs = lg_pairs(task, digits, checks, seed)
    # reject unfit weights here, not in every worker
    start_rollout(weights, task, pairs[0].a, pairs[0].b, dtype, step_budget=1)
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise RolloutInputError(f"workers {workers} must be at least 1")
    batches = _batches(pairs)
    results: list[PairResult | None] = [None] * len(pairs)
    done = 0
    cpu_seconds = 0.0
    started = time.perf_counter()
    logger.info("evaluating %s at %d digits: %d rollouts in %d batches on %d workers", task, digits, len(pairs),
                len(batches), workers)

    def collect(batch: list[int], outcome: tuple[list[PairResult], float]) -> None:
        nonlocal done, cpu_seconds
        batch_results, batch_cpu_seconds = outcome
        cpu_seconds += batch_cpu_seconds
        for n, result in zip(batch, batch_results, strict=True):
            results[n] = result
        done += len(batch)
        if progress is not None:
            progress(done, len(pairs))

    if workers == 1:
        for batch in batches:
            collect(batch, _run_batch(weights, task, [pairs[n] for n in batch], dtype))
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(_run_batch, weights, task, [pairs[n] for n in batch], dtype): batch
                       for batch in batches}
            for future in concurrent.futures.as_completed(futures):
                collect(futures[future], future.result())

    wall = time.perf_counter() - started
    verdicts = {check: all(r.outcome == "correct" for r in results if r.check == check) for check in checks}
    total_steps = sum(r.steps for r in results)
    logger.info("%s at %d digits: %s, %d steps in %.1f s", task, digits, verdicts, total_steps, wall)
    return LGReport(
        task=task, model_name=model_name, model_sha256=weights.sha256(), digits=digits, seed=seed, dtype=dtype,
        pairs=results, verdicts=verdicts, total_steps=total_steps, wall_seconds=wall, cpu_seconds=cpu_seconds,
        workers=workers,
        steps_per_second=total_steps / wall if wall > 0 else 0.0,
    )
