"""Training-data selection and transition coverage.

The paper's selection DS (arXiv 2511.22751, section 3) takes every pair of
numbers with at most ``k`` digits, then every pair of ``n``-digit repdigits
(one digit repeated n times), then random unique pairs of at most ``n`` digits
until ``N`` samples.  Each selection owns a seeded ``random.Random``, so the
same seed gives the same data on every machine and Python version ≥ 3.11.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random

import numpy as np

from dfst.experts import ExpertSpec, get_expert
from dfst.experts.spec import UNDEFINED
from dfst.runner import Trace, record_trace, visited_transitions

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
    """Parameters of the paper's data selection DS."""

    exhaustive_digits: int  # k: every pair with at most k digits
    digits: int  # n: repdigit length and maximum random operand length
    samples: int  # N: total number of pairs
    seed: int = 0


# Defaults that give the paper's sample counts N and lengths n.  The paper does
# not state k, so k is chosen to keep the exhaustive part below N.
DEFAULT_SELECTION = {
    "add2": SelectionConfig(exhaustive_digits=2, digits=3, samples=20),
    "add10": SelectionConfig(exhaustive_digits=1, digits=3, samples=225),
    "mult2": SelectionConfig(exhaustive_digits=3, digits=5, samples=750),
    "mult10": SelectionConfig(exhaustive_digits=1, digits=5, samples=10_000),
}


# select_covering_pairs draws random candidates in batches of this size, at
# most MAX_CANDIDATE_BATCHES times, until they cover every reachable transition.
CANDIDATE_BATCH = 2000
MAX_CANDIDATE_BATCHES = 10


class SelectionError(ValueError):
    """A data selection cannot be made with the given parameters."""


def repdigit(digit: int, length: int, radix: int) -> int:
    """Return the number written as ``digit`` repeated ``length`` times."""
    return digit * (radix**length - 1) // (radix - 1)


def repdigit_pairs(length: int, radix: int) -> list[tuple[int, int]]:
    """Return every pair of ``length``-digit repdigits (1 pair in binary, 81 in decimal)."""
    return [
        (repdigit(d, length, radix), repdigit(e, length, radix))
        for d in range(1, radix)
        for e in range(1, radix)
    ]


def random_operand(rng: random.Random, max_digits: int, radix: int, exact: bool = False) -> int:
    """Draw an operand with exactly ``max_digits`` digits, or a uniform digit count up to it."""
    length = max_digits if exact else rng.randint(1, max_digits)
    if length == 1:
        return rng.randrange(radix)
    return rng.randrange(radix ** (length - 1), radix**length)


def select_pairs(task: str, config: SelectionConfig | None = None) -> list[tuple[int, int]]:
    """Return the DS pairs for a task, in selection order."""
    expert = get_expert(task)
    config = config or DEFAULT_SELECTION[task]
    radix = expert.alphabet.radix
    if config.exhaustive_digits < 0 or config.digits < 1 or config.samples < 1:
        raise SelectionError(f"invalid selection {config}: k must be ≥ 0, n ≥ 1 and N ≥ 1")

    pairs: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()

    def add(pair: tuple[int, int]) -> None:
        if pair not in seen and len(pairs) < config.samples:
            seen.add(pair)
            pairs.append(pair)

    limit = radix**config.exhaustive_digits if config.exhaustive_digits else 0
    for a in range(limit):
        for b in range(limit):
            add((a, b))
    for pair in repdigit_pairs(config.digits, radix):
        add(pair)
    available = radix ** (2 * config.digits)
    if config.samples > available:
        raise SelectionError(
            f"N={config.samples} exceeds the {available} pairs with at most {config.digits} digits"
        )
    rng = random.Random(config.seed)
    while len(pairs) < config.samples:
        add((random_operand(rng, config.digits, radix), random_operand(rng, config.digits, radix)))
    return pairs


def build_dataset(task: str, pairs: list[tuple[int, int]]) -> list[Trace]:
    """Record the expert's trace on every pair."""
    expert = get_expert(task)
    return [record_trace(expert, a, b) for a, b in pairs]


def dataset_hash(traces: list[Trace]) -> str:
    """sha256 over the pairs and trace arrays, identifying a dataset exactly."""
    digest = hashlib.sha256()
    for trace in traces:
        digest.update(f"{trace.task}:{trace.a}:{trace.b};".encode())
        for array in (trace.observed, trace.written, trace.motions):
            digest.update(array.tobytes())
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Coverage:
    """Reachable (state, symbol) transitions and the subset a set of pairs exercises."""

    used: np.ndarray  # (Q, K) bool
    reachable: np.ndarray  # (Q, K) bool

    @property
    def missing(self) -> list[tuple[int, int]]:
        states, symbols = np.nonzero(self.reachable & ~self.used)
        return list(zip(states.tolist(), symbols.tolist(), strict=True))

    @property
    def fraction(self) -> float:
        return float((self.used & self.reachable).sum() / self.reachable.sum())

    @property
    def complete(self) -> bool:
        return not self.missing


def transitions_used(expert: ExpertSpec, pairs: list[tuple[int, int]]) -> np.ndarray:
    used = np.zeros(expert.next_state.shape, dtype=bool)
    for a, b in pairs:
        used |= visited_transitions(expert, a, b)
    return used


def reachable_transitions(expert: ExpertSpec) -> np.ndarray:
    """Return the (state, symbol) pairs the expert has rules for.

    The test suite checks that every rule is met on some input, so the defined
    transitions are exactly the reachable ones.
    """
    return expert.next_state != UNDEFINED


def coverage(task: str, pairs: list[tuple[int, int]]) -> Coverage:
    """Report which reachable transitions the pairs' traces exercise."""
    expert = get_expert(task)
    return Coverage(transitions_used(expert, pairs), reachable_transitions(expert))


def select_covering_pairs(task: str, max_digits: int | None = None, seed: int = 0) -> list[tuple[int, int]]:
    """Greedily pick few, short pairs whose traces cover every reachable transition.

    Candidates are every pair of numbers below radix**2 plus seeded random
    pairs with at most ``max_digits`` digits (default 4 for binary, 3 for
    decimal), drawn in batches of CANDIDATE_BATCH until the candidates cover
    every reachable transition, at most MAX_CANDIDATE_BATCHES batches.  Each
    step keeps the candidate that covers the most transitions not yet
    covered, preferring the smaller operand sum on ties.

    Raises SelectionError if the candidates cannot cover every transition.
    """
    expert = get_expert(task)
    radix = expert.alphabet.radix
    max_digits = max_digits or (4 if radix == 2 else 3)
    limit = radix**2
    available = radix ** (2 * max_digits)
    reachable = reachable_transitions(expert)
    candidates = {(a, b) for a in range(limit) for b in range(limit)}
    rng = random.Random(seed)
    usage: dict[tuple[int, int], np.ndarray] = {}
    covered = np.zeros_like(reachable)
    for batch in range(1, MAX_CANDIDATE_BATCHES + 1):
        while len(candidates) < limit * limit + batch * CANDIDATE_BATCH and len(candidates) < available:
            candidates.add((random_operand(rng, max_digits, radix), random_operand(rng, max_digits, radix)))
        for pair in sorted(candidates - usage.keys()):
            usage[pair] = visited_transitions(expert, *pair)
            covered |= usage[pair]
        if np.all(covered[reachable]) or len(candidates) >= available:
            break

    ordered = sorted(candidates, key=lambda pair: (pair[0] + pair[1], pair))
    usage_matrix = np.stack([usage[pair].ravel() for pair in ordered])  # (candidates, Q·K)
    used = np.zeros(usage_matrix.shape[1], dtype=bool)
    target = reachable.ravel()
    chosen: list[tuple[int, int]] = []
    while not np.all(used[target]):
        gains = (usage_matrix & ~used).sum(axis=1)
        best = int(np.argmax(gains))  # the first candidate in order among equal gains
        if gains[best] == 0:
            missing = int((target & ~used).sum())
            raise SelectionError(
                f"{len(ordered)} candidates with at most {max_digits} digits leave {missing} transitions "
                f"of {task} uncovered; raise max_digits"
            )
        chosen.append(ordered[best])
        used |= usage_matrix[best]
    return chosen
