"""Evaluation requests, the pairs they expand to and the report they produce.

An evaluation at ``digits`` = n runs the PLG pairs (5 random pairs of exactly n
digits and 5 random pairs of at most n digits) and the RLG pairs (every pair of
n-digit repdigits) of arXiv 2511.22751, "Exact Learning of Arithmetic with
Differentiable Agents".  A search over [min, max] runs those checks at min,
2·min, 4·min, … and max, and stops at the first length where a pair fails.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import sys

from dfst.data import repdigit_pairs
from dfst.evaluation import LGReport, LGSearchResult, PairResult, SearchStep, lg_pairs
from dfst.experts import TASKS, UnknownTaskError, get_expert
from dfst.runner import count_steps

logger = logging.getLogger(__name__)

sys.set_int_max_str_digits(0)

CHECKS = ("plg", "rlg")
DTYPES = ("float32", "float64")
# Maximum operand length of a request, in digits. An add10 rollout at this length takes about 2·10¹⁰ steps.
MAX_DIGITS = 100_000
PAIR_FIELDS = tuple(field.name for field in dataclasses.fields(PairResult))
# Operand length of the pair whose step count calibrates c in the estimate c·n².  At this length the
# terms linear in n add about 6 % for add10, so estimates for longer operands run a little high.
CALIBRATION_DIGITS = 256


class InvalidRequestError(ValueError):
    """An evaluation or training request has a bad value; the message names it and what is allowed."""


@dataclasses.dataclass(frozen=True)
class EvalRequest:
    """A validated evaluation request."""

    task: str  # one of dfst.experts.TASKS with a built expert
    digits: int | None  # operand length, or None for a search
    search_min: int | None  # smallest length of a search, or None
    search_max: int | None  # largest length of a search, or None
    checks: tuple[str, ...]  # subset of CHECKS, in CHECKS order
    seed: int  # seed of the random PLG pairs
    model: str  # model name or checkpoint path; never empty after validation
    dtype: str  # one of DTYPES
    step_budget: int  # steps per rollout, 0 for the engine's default

    def lengths(self) -> list[int]:
        """Return the operand lengths to evaluate, in order."""
        if self.digits is not None:
            return [self.digits]
        lengths = []
        n = self.search_min
        while n < self.search_max:
            lengths.append(n)
            n *= 2
        lengths.append(self.search_max)
        return lengths

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EvalRequest:
        return cls(**{**data, "checks": tuple(data["checks"])})


def _check_digits(name: str, value: int) -> None:
    if not 1 <= value <= MAX_DIGITS:
        raise InvalidRequestError(f"{name} must be between 1 and {MAX_DIGITS} digits, got {value}")


def validate_eval_request(
    task: str, digits: int | None, search: tuple[int, int] | None, checks: list[str], seed: int, model: str,
    dtype: str, step_budget: int, default_model,
) -> EvalRequest:
    """Check every field and fill defaults; raise InvalidRequestError naming the bad value."""
    try:
        get_expert(task)
    except UnknownTaskError as error:
        raise InvalidRequestError(str(error)) from error
    except NotImplementedError as error:
        raise InvalidRequestError(
            f"task {task!r} has no expert yet; built tasks: {', '.join(built_tasks())}"
        ) from error
    if (digits is None) == (search is None):
        raise InvalidRequestError("give exactly one of digits or a search range [min, max]")
    if digits is not None:
        _check_digits("digits", digits)
    else:
        low, high = search
        _check_digits("search min", low)
        _check_digits("search max", high)
        if low > high:
            raise InvalidRequestError(f"search range [{low}, {high}] is empty; min must not exceed max")
    unknown = [check for check in checks if check not in CHECKS]
    if unknown:
        raise InvalidRequestError(f"unknown check {unknown[0]!r}; allowed checks are {', '.join(CHECKS)}")
    if dtype not in DTYPES:
        raise InvalidRequestError(f"unknown dtype {dtype!r}; allowed dtypes are {', '.join(DTYPES)}")
    if seed < 0 or step_budget < 0:
        raise InvalidRequestError(f"seed and step budget must be non-negative, got {seed} and {step_budget}")
    return EvalRequest(
        task=task, digits=digits, search_min=None if search is None else search[0],
        search_max=None if search is None else search[1],
        checks=tuple(check for check in CHECKS if check in (checks or CHECKS)),
        seed=seed, model=model or _default_model(default_model, task), dtype=dtype, step_budget=step_budget,
    )


def _default_model(default_model, task: str) -> str:
    try:
        return default_model(task)
    except LookupError as error:
        raise InvalidRequestError(f"{error}; pass a model name, e.g. oracle-{task}") from error


def built_tasks() -> list[str]:
    """Return the tasks whose experts exist."""
    built = []
    for task in TASKS:
        try:
            get_expert(task)
        except NotImplementedError:
            continue
        built.append(task)
    return built


@dataclasses.dataclass(frozen=True)
class Unit:
    """One rollout of an evaluation: a pair of operands at one length for one check."""

    index: int  # position in the job's pair list, from 0
    step: int  # position of the length in EvalRequest.lengths()
    check: str  # "plg" or "rlg"
    digits: int  # operand length of the check
    a: int
    b: int


def plan_units(request: EvalRequest) -> list[Unit]:
    """Return every rollout the request may run, grouped by length in search order.

    The pairs at each length are those of dfst.evaluation.lg_pairs, so the
    library and the service evaluate the same pairs for the same seed.
    """
    units: list[Unit] = []
    for step, digits in enumerate(request.lengths()):
        for pair in lg_pairs(request.task, digits, request.checks, request.seed):
            units.append(Unit(len(units), step, pair.check, digits, pair.a, pair.b))
    return units


@functools.cache
def steps_per_digit_squared(task: str) -> float:
    """Return c in the estimate c·n² of the expert's steps on n-digit operands."""
    expert = get_expert(task)
    operand = repdigit_pairs(CALIBRATION_DIGITS, expert.alphabet.radix)[-1][0]
    return count_steps(expert, operand, operand) / CALIBRATION_DIGITS**2


def estimate_steps(task: str, a: int, b: int) -> int:
    """Return an estimate of the expert's steps on (a, b) from the operand lengths."""
    radix = get_expert(task).alphabet.radix
    digits = max(_count_digits(a, radix), _count_digits(b, radix))
    return int(steps_per_digit_squared(task) * digits * digits) + 1


def _count_digits(number: int, radix: int) -> int:
    """Return the number of base-``radix`` digits of ``number`` (1 for 0).

    Converting a 100,000-digit operand to a string takes seconds, so the count
    starts from the bit length and is corrected with two powers of the radix.
    """
    number = abs(number)
    if number < radix:
        return 1
    digits = max(1, int((number.bit_length() - 1) * math.log(2, radix)))
    while radix**digits <= number:
        digits += 1
    while digits > 1 and radix ** (digits - 1) > number:
        digits -= 1
    return digits


def _length_report(request: EvalRequest, model_name: str, model_sha256: str, digits: int, rows: list[dict],
                   wall_seconds: float, workers: int) -> LGReport:
    pairs = [PairResult(**{field: row.get(field) for field in PAIR_FIELDS}) for row in rows]
    total_steps = sum(pair.steps for pair in pairs)
    return LGReport(
        task=request.task, model_name=model_name, model_sha256=model_sha256, digits=digits, seed=request.seed,
        dtype=request.dtype, pairs=pairs,
        verdicts={check: all(p.outcome == "correct" for p in pairs if p.check == check) for check in request.checks},
        total_steps=total_steps, wall_seconds=wall_seconds, cpu_seconds=sum(pair.seconds for pair in pairs),
        workers=workers, steps_per_second=total_steps / wall_seconds if wall_seconds > 0 else 0.0,
    )


def build_report(request: EvalRequest, model_sha256: str, units: list[Unit], results: dict[int, dict],
                 wall_seconds: float, workers: int) -> dict:
    """Return {"plg", "rlg", "all_correct", "report_json"} for a finished evaluation.

    ``report_json`` is the library's document: an LGReport for one length, an
    LGSearchResult for a search (whose ``tried`` lists the lengths run).
    """
    reports = []
    for step, digits in enumerate(request.lengths()):
        rows = [results[unit.index] for unit in units if unit.step == step and unit.index in results]
        if not rows:
            break
        reports.append(_length_report(request, request.model, model_sha256, digits, rows, wall_seconds, workers))

    plg = rlg = 0
    for report in reports:
        plg_passed = report.verdicts.get("plg", True)
        if not plg_passed:
            break
        plg = report.digits if "plg" in report.verdicts else 0
        if report.verdicts.get("rlg", False):
            rlg = report.digits
    if "plg" not in request.checks:
        plg = 0
    all_correct = bool(results) and all(row["outcome"] == "correct" for row in results.values())

    if request.digits is not None:
        document = reports[0].to_json()
    else:
        tried = [SearchStep(digits=report.digits, plg=report.verdicts.get("plg"), rlg=report.verdicts.get("rlg", True),
                            total_steps=report.total_steps, wall_seconds=report.cpu_seconds / max(workers, 1))
                 for report in reports]
        stopped_by = "failure" if not all_correct else "cap_digits"
        document = LGSearchResult(
            task=request.task, model_name=request.model, model_sha256=model_sha256, plg=plg, rlg=rlg, tried=tried,
            stopped_by=stopped_by, total_steps=sum(step.total_steps for step in tried),
        ).to_json()
    return {"plg": plg, "rlg": rlg, "all_correct": all_correct, "report_json": document}


def search_stopped(request: EvalRequest, units: list[Unit], results: dict[int, dict], step: int) -> bool:
    """Return True when length ``step`` is finished and some pair at it failed."""
    step_units = [unit for unit in units if unit.step == step]
    if not all(unit.index in results for unit in step_units):
        return False
    return any(results[unit.index]["outcome"] != "correct" for unit in step_units)


def load_request_model(request: EvalRequest, allow_paths: bool = True):
    """Load the request's model and check that it solves the request's task; return its weights.

    Raises InvalidRequestError for an unknown, unreadable or mismatched model.
    """
    from dfst.workers import models

    try:
        weights, metadata = models.load_model(request.model, allow_paths=allow_paths)
    except models.MODEL_ERRORS as error:
        raise InvalidRequestError(str(error)) from error
    task = models.model_task(metadata)
    if task is not None and task != request.task:
        raise InvalidRequestError(
            f"model {request.model!r} solves {task}, not {request.task}; use a model for task {request.task}"
        )
    return weights

