"""Experts agree with Python's integers and leave only the answer on the grid."""

from __future__ import annotations

import random

import numpy as np
import pytest

from dfst.data import repdigit_pairs, transitions_used
from dfst.experts import TASKS, UnknownTaskError, get_expert
from dfst.experts.multiplication import multiplication_expert
from dfst.experts.spec import UNDEFINED
from dfst.grid import MOTIONS, read_answer
from dfst.runner import record_trace, run_expert


def small_pairs(radix: int) -> list[tuple[int, int]]:
    limit = radix**6 if radix == 2 else radix**3
    step = 1 if radix == 2 else 7  # every pair of up to 6 bits; a 1-in-7 grid of 3-digit decimal pairs
    pairs = [(a, b) for a in range(limit) for b in range(0, limit, step)]
    pairs += [(a, b) for a in range(radix * radix) for b in range(limit)]
    return pairs


def edge_pairs(radix: int) -> list[tuple[int, int]]:
    pairs = []
    for n in (1, 2, 5, 17, 64):
        top = radix**n
        pairs += [
            (top - 1, 1), (1, top - 1), (top - 1, top - 1), (top, 0), (0, top), (top, top - 1),
            (0, 0), (1, 0), (0, 1), (top // radix, top - 1), (top - 1, 0),
        ]
    return pairs


def check(expert, a: int, b: int) -> None:
    run = run_expert(expert, a, b)
    assert run.answer == expert.compute(a, b)
    assert read_answer(run.grid, expert.alphabet).problem is None


def test_every_small_pair(task):
    expert = get_expert(task)
    for a, b in small_pairs(expert.alphabet.radix):
        check(expert, a, b)


def test_edge_cases(task):
    expert = get_expert(task)
    for a, b in edge_pairs(expert.alphabet.radix):
        check(expert, a, b)


def test_random_pairs_up_to_300_digits(task):
    expert = get_expert(task)
    radix = expert.alphabet.radix
    rng = random.Random(1234)
    for _ in range(60):
        a = rng.randrange(radix ** rng.randint(1, 300))
        b = rng.randrange(radix ** rng.randint(1, 300))
        check(expert, a, b)


def test_repdigit_pairs(task):
    expert = get_expert(task)
    for length in (1, 3, 40):
        for a, b in repdigit_pairs(length, expert.alphabet.radix):
            check(expert, a, b)


def test_steps_grow_quadratically(task):
    expert = get_expert(task)
    radix = expert.alphabet.radix
    n = 200 if expert.operation == "add" else 60
    small = run_expert(expert, radix**n - 1, radix**n - 1).steps
    large = run_expert(expert, radix ** (2 * n) - 1, radix ** (2 * n) - 1).steps
    assert 3.5 < large / small < 4.5


def test_every_rule_is_reachable(task):
    expert = get_expert(task)
    radix = expert.alphabet.radix
    pairs = [(a, b) for a in range(radix**2) for b in range(radix**2)]
    # One-digit a and three-digit b with a middle 0: b reaches past a with a 0.
    pairs += [(a, radix**2 + b) for a in range(radix) for b in range(radix)]
    # The same with the operands swapped: a multiplier digit meets a 0 of a
    # with a carry pending from the digit to its right.
    pairs += [(radix**2 + a, b) for a in range(radix) for b in range(radix)]
    rng = random.Random(7)
    pairs += [(rng.randrange(radix**4), rng.randrange(radix**4)) for _ in range(300)]
    used = transitions_used(expert, pairs)
    defined = expert.next_state != UNDEFINED
    unused = [(expert.states[q], s) for q, s in np.argwhere(defined & ~used).tolist()]
    assert unused == []


def test_only_halting_state_stays(task):
    expert = get_expert(task)
    stay = MOTIONS.index("S")
    defined = expert.next_state != UNDEFINED
    stays = np.argwhere(defined & (expert.move == stay))
    assert {int(q) for q, _ in stays} == {expert.halt_state}


def test_trace_ends_with_halting_step(task):
    expert = get_expert(task)
    trace = record_trace(expert, 5, 3)
    assert trace.motions[-1] == MOTIONS.index("S")
    assert np.all(trace.motions[:-1] != MOTIONS.index("S"))
    assert len(trace) == run_expert(expert, 5, 3).steps


def test_unknown_task_lists_known_ones():
    with pytest.raises(UnknownTaskError) as error:
        get_expert("add7")
    for name in TASKS:
        assert name in str(error.value)


def test_negative_operand_rejected():
    with pytest.raises(ValueError, match="negative"):
        run_expert(get_expert("add10"), -1, 3)


@pytest.mark.parametrize("radix", [3, 7])
def test_multiplication_other_radices(radix):
    expert = multiplication_expert(radix)
    for a in range(radix**3):
        for b in range(0, radix**3, 5):
            check(expert, a, b)


def test_multiplication_radix_out_of_range():
    for radix in (1, 11):
        with pytest.raises(ValueError, match="radix"):
            multiplication_expert(radix)


def test_operands_beyond_int_str_limit():
    # CPython refuses int/str conversions of more than 4300 decimal digits by default.
    expert = get_expert("add10")
    a = 10**4400 - 1
    run = run_expert(expert, a, 1)
    assert run.answer == 10**4400
