"""Data selection is deterministic, has the stated sizes and reports coverage correctly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dfst.data import (
    DEFAULT_SELECTION,
    coverage,
    repdigit_pairs,
    select_covering_pairs,
    select_pairs,
    transitions_used,
)
from dfst.experts import get_expert


def test_selection_sizes_and_determinism(task):
    config = DEFAULT_SELECTION[task]
    if task == "mult10":
        config = dataclasses.replace(config, samples=500)  # keeps the test fast
    first = select_pairs(task, config)
    second = select_pairs(task, config)
    assert first == second
    assert len(first) == config.samples
    assert len(set(first)) == len(first)


def test_selection_order_exhaustive_then_repdigits(task):
    config = DEFAULT_SELECTION[task]
    expert = get_expert(task)
    radix = expert.alphabet.radix
    pairs = select_pairs(task, dataclasses.replace(config, samples=min(config.samples, 400)))
    exhaustive = radix ** (2 * config.exhaustive_digits)
    assert pairs[:exhaustive] == [
        (a, b) for a in range(radix**config.exhaustive_digits) for b in range(radix**config.exhaustive_digits)
    ]
    repdigits = repdigit_pairs(config.digits, radix)
    assert pairs[exhaustive : exhaustive + len(repdigits)] == repdigits[: len(pairs) - exhaustive]
    assert all(max(a, b) < radix**config.digits for a, b in pairs)


def test_seed_changes_random_part():
    config = DEFAULT_SELECTION["add10"]
    first = select_pairs("add10", config)
    other = select_pairs("add10", dataclasses.replace(config, seed=config.seed + 1))
    assert first[:181] == other[:181]
    assert first[181:] != other[181:]


def test_coverage_of_hand_checked_example():
    # 0 + 0 in add2, step by step: MARK on '+' and on blank, FILL on '+',
    # RIGHT on '0' and blank, PICK on '0', CARRY0 on blank and on the marker,
    # MARK on blank again, FILL on the '0' of a, RIGHT on '+' and blank, PICK
    # on '+', CLEAN on blank and on the marker, and HALT on the '0'.
    expert = get_expert("add2")
    used = transitions_used(expert, [(0, 0)])
    names = {(expert.states[q], expert.alphabet.characters[s]) for q, s in np.argwhere(used).tolist()}
    assert names == {
        ("MARK", "+"), ("MARK", "_"), ("FILL", "+"), ("RIGHT", "0"), ("RIGHT", "_"), ("PICK", "0"),
        ("CARRY0", "_"), ("CARRY0", "+"), ("FILL", "0"), ("RIGHT", "+"), ("PICK", "+"),
        ("CLEAN", "_"), ("CLEAN", "+"), ("HALT", "0"),
    }
    report = coverage("add2", [(0, 0)])
    assert len(report.missing) == int(report.reachable.sum()) - len(names)


def test_covering_selection_is_complete(task):
    pairs = select_covering_pairs(task)
    assert coverage(task, pairs).complete


@pytest.mark.parametrize("task", ["mult2", "mult10"])
@pytest.mark.parametrize("seed", [0, 1])
def test_paper_selection_covers_multiplication(task, seed):
    config = dataclasses.replace(DEFAULT_SELECTION[task], seed=seed)
    report = coverage(task, select_pairs(task, config))
    assert report.missing == []
