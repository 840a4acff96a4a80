"""Search for the largest digit count at which a model passes PLG, then RLG."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable

from dfst.evaluation.lg import LGReport, evaluate
from dfst.rollout import RolloutInputError
from dfst.weights import DFSTWeights

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class SearchStep:
    """One digit count tried."""

    digits: int  # n
    plg: bool | None  # PLG verdict, None when only RLG was checked
    rlg: bool  # RLG verdict
    total_steps: int  # rollout steps at this n
    wall_seconds: float  # wall time at this n


@dataclasses.dataclass
class LGSearchResult:
    """Derived PLG and RLG with every digit count tried."""

    task: str  # task name
    model_name: str  # label of the weights
    model_sha256: str  # DFSTWeights.sha256() of the weights
    plg: int  # largest n that passed PLG, 0 if none did
    rlg: int  # largest n ≤ plg that passed RLG, 0 if none did
    tried: list[SearchStep]  # in the order tried
    stopped_by: str  # "failure", "cap_digits" or "cap_total_steps": what ended the upward search
    total_steps: int  # rollout steps over all tries

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)


def lg_search(
    weights: DFSTWeights,
    task: str,
    start: int = 1,
    cap_digits: int = 4096,
    cap_total_steps: int = 10**11,
    seed: int = 0,
    workers: int | None = None,
    model_name: str = "model",
    progress: Callable[[LGReport], None] | None = None,
) -> LGSearchResult:
    """Find the largest passing n by doubling from ``start``, then bisection.

    PLG drives the search, and RLG is checked at each n as well.  If RLG
    then fails below PLG, a second bisection finds the largest passing RLG n.
    An evaluation is skipped when the steps used so far plus its estimated
    steps would exceed ``cap_total_steps``.  The estimate is the last
    evaluation's steps scaled by the square of the digit ratio.
    ``progress`` gets each report.

    NOTE: bisection assumes a verdict that passes at n passes at every
    smaller n, as the LG definitions do; a model that fails only at some
    smaller n is not detected.
    """
    if not isinstance(start, int) or start < 1 or cap_digits < start:
        raise RolloutInputError(f"need 1 ≤ start ≤ cap_digits, got start={start!r}, cap_digits={cap_digits!r}")
    tried: list[SearchStep] = []
    used = 0
    last: tuple[int, int] | None = None  # (digits, steps) of the latest evaluation

    def affordable(n: int) -> bool:
        if last is None:
            return True
        estimate = last[1] * (n / last[0]) ** 2
        return used + estimate <= cap_total_steps

    def run(n: int, checks: tuple[str, ...]) -> SearchStep:
        nonlocal used, last
        report = evaluate(weights, task, n, checks=checks, seed=seed, workers=workers, model_name=model_name)
        used += report.total_steps
        last = (n, report.total_steps)
        step = SearchStep(n, report.verdicts.get("plg"), report.verdicts["rlg"], report.total_steps,
                          report.wall_seconds)
        tried.append(step)
        logger.info("LG search %s: n=%d plg=%s rlg=%s", task, n, step.plg, step.rlg)
        if progress is not None:
            progress(report)
        return step

    # doubling on PLG
    passed, failed = 0, None
    stopped_by = "cap_digits"
    n = start
    while True:
        if not affordable(n):
            stopped_by = "cap_total_steps"
            break
        if run(n, ("plg", "rlg")).plg:
            passed = n
        else:
            failed = n
            stopped_by = "failure"
            break
        if n == cap_digits:
            break
        n = min(2 * n, cap_digits)

    # bisection on PLG between the last pass and the first failure
    while failed is not None and failed - passed > 1:
        middle = (passed + failed) // 2
        if not affordable(middle):
            break
        if run(middle, ("plg", "rlg")).plg:
            passed = middle
        else:
            failed = middle

    # RLG: largest passing n ≤ PLG, bisecting below the smallest failure if needed
    plg = passed
    rlg_pass = max((s.digits for s in tried if s.rlg and s.digits <= plg), default=0)
    rlg_fail = min((s.digits for s in tried if not s.rlg and rlg_pass < s.digits <= plg), default=None)
    while rlg_fail is not None and rlg_fail - rlg_pass > 1:
        middle = (rlg_pass + rlg_fail) // 2
        if not affordable(middle):
            break
        if run(middle, ("rlg",)).rlg:
            rlg_pass = middle
        else:
            rlg_fail = middle

    return LGSearchResult(task=task, model_name=model_name, model_sha256=weights.sha256(), plg=plg, rlg=rlg_pass,
                          tried=tried, stopped_by=stopped_by, total_steps=used)
