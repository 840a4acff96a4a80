"""Number formatting and parsing in every radix, at any length."""

from __future__ import annotations

import random

import pytest

from dfst.grid import Alphabet, AlphabetError, digit_count, format_number, parse_number


@pytest.mark.parametrize("radix", [2, 3, 7, 10])
def test_format_parse_round_trip(radix):
    rng = random.Random(radix)
    numbers = [0, 1, radix - 1, radix, radix**2 - 1, radix**2]
    numbers += [rng.randrange(radix ** rng.randint(1, 12_000)) for _ in range(20)]
    for number in numbers:
        digits = format_number(number, radix)
        assert parse_number(digits, radix) == number
        assert digit_count(number, radix) == len(digits)


def test_digit_count_at_powers_of_ten():
    for exponent in (1, 2, 15, 4299, 4300, 4301, 9000):
        assert digit_count(10**exponent - 1, 10) == exponent
        assert digit_count(10**exponent, 10) == exponent + 1


def test_negative_operand_rejected():
    with pytest.raises(AlphabetError, match="negative"):
        Alphabet(10, "+").digits_of(-3)
