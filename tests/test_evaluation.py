"""PLG and RLG checks, the LG report and the LG search."""

from __future__ import annotations

import numpy as np
import pytest

from dfst import get_expert, oracle_weights
from dfst.evaluation import LGReport, evaluate, lg_pairs, lg_search
from dfst.grid import digit_count
from dfst.rollout import RolloutInputError
from dfst.weights import DFSTWeights


def built(task: str) -> bool:
    try:
        get_expert(task)
    except NotImplementedError:
        return False
    return True


def test_lg_pairs_follow_definitions(task):
    radix = get_expert(task).alphabet.radix
    pairs = lg_pairs(task, 12, seed=4)
    plg = [p for p in pairs if p.check == "plg"]
    rlg = [p for p in pairs if p.check == "rlg"]
    assert len(plg) == 10
    assert all(digit_count(p.a, radix) == 12 and digit_count(p.b, radix) == 12 for p in plg[:5])
    assert all(digit_count(p.a, radix) <= 12 and digit_count(p.b, radix) <= 12 for p in plg[5:])
    assert len(rlg) == (radix - 1) ** 2
    assert all(len(set(np.base_repr(p.a, radix))) == 1 and digit_count(p.a, radix) == 12 for p in rlg)


def test_lg_pairs_seeded():
    assert lg_pairs("add10", 30, seed=1) == lg_pairs("add10", 30, seed=1)
    assert lg_pairs("add10", 30, seed=1) != lg_pairs("add10", 30, seed=2)


def test_lg_pairs_reject_bad_input():
    with pytest.raises(RolloutInputError, match="unknown checks"):
        lg_pairs("add10", 5, checks=("plg", "xlg"))
    with pytest.raises(RolloutInputError, match="positive"):
        lg_pairs("add10", 0)


def test_oracle_passes_lg_at_50_digits(task):
    report = evaluate(oracle_weights(get_expert(task)), task, 50, workers=1, model_name="oracle")
    assert report.verdicts == {"plg": True, "rlg": True}
    assert len(report.pairs) == 10 + (get_expert(task).alphabet.radix - 1) ** 2
    assert report.total_steps == sum(p.steps for p in report.pairs)
    assert report.model_sha256 == oracle_weights(get_expert(task)).sha256()


def test_two_workers_match_one():
    weights = oracle_weights(get_expert("add2"))
    one = evaluate(weights, "add2", 20, workers=1, seed=3)
    two = evaluate(weights, "add2", 20, workers=2, seed=3)
    assert [(p.a_digits, p.b_digits, p.outcome, p.steps) for p in one.pairs] == [
        (p.a_digits, p.b_digits, p.outcome, p.steps) for p in two.pairs
    ]
    assert two.workers == 2


def test_report_json_round_trip():
    report = evaluate(oracle_weights(get_expert("add2")), "add2", 8, workers=1)
    assert LGReport.from_json(report.to_json()) == report


def test_progress_reaches_total():
    calls = []
    evaluate(oracle_weights(get_expert("add2")), "add2", 8, workers=1, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (11, 11)


def broken_carry(task: str) -> DFSTWeights:
    """Return oracle weights that write 1 where the expert, observing a 9, writes 0 (and 0 for 1)."""
    weights = oracle_weights(get_expert(task))
    B = weights.B.copy()
    nine, zero, one = 10, 1, 2
    B[nine, [zero, one], :] = B[nine, [one, zero], :]
    return DFSTWeights(weights.A, B, weights.C, weights.h0)


def test_wrong_model_fails_rlg():
    report = evaluate(broken_carry("add10"), "add10", 6, workers=1, checks=("rlg",))
    assert report.verdicts == {"rlg": False}
    assert any(p.outcome != "correct" for p in report.pairs)


def test_lg_search_oracle_hits_cap():
    result = lg_search(oracle_weights(get_expert("add2")), "add2", start=4, cap_digits=40)
    assert (result.plg, result.rlg) == (40, 40)
    assert result.stopped_by == "cap_digits"
    assert [s.digits for s in result.tried] == [4, 8, 16, 32, 40]


def test_lg_search_stops_at_step_cap():
    result = lg_search(oracle_weights(get_expert("add2")), "add2", start=4, cap_digits=4096, cap_total_steps=200_000)
    assert result.stopped_by == "cap_total_steps"
    assert result.total_steps <= 200_000
    assert result.plg == result.tried[-1].digits


def failing_beyond(task: str, digits: int) -> DFSTWeights:
    """Return oracle weights whose hidden state overflows after about 2·digits² steps."""
    weights = oracle_weights(get_expert(task))
    steps = 2 * digits * digits
    # float32 overflows at 3.4e38 = growth ** steps
    growth = np.float32(np.exp(88.0 / steps))
    return DFSTWeights(weights.A * growth, weights.B, weights.C, weights.h0)


def test_lg_search_bisects_to_failure():
    weights = failing_beyond("add2", 24)
    result = lg_search(weights, "add2", start=4, cap_digits=256)
    assert result.stopped_by == "failure"
    assert 8 <= result.plg < 64
    failures = [s.digits for s in result.tried if not s.plg]
    assert min(failures) == result.plg + 1
    assert result.rlg <= result.plg


# The oracles run on the exact table path here: about 10 s for all four on 2 cores.
@pytest.mark.parametrize(("task", "digits"), [("add2", 2000), ("add10", 2000), ("mult2", 300), ("mult10", 300)])
def test_oracle_passes_lg_long(task, digits):
    if not built(task):
        pytest.skip(f"the {task} expert is not built yet")
    report = evaluate(oracle_weights(get_expert(task)), task, digits, workers=2, model_name="oracle")
    assert report.verdicts == {"plg": True, "rlg": True}
