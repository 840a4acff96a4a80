"""Declarative expert descriptions and their compiled transition tables.

An expert is a grid agent δ(q, σ) → (q', σ', m).  Each expert module describes
its transitions once, as :class:`Rule` objects grouped by phase; everything
else (the compiled table, traces, the oracle DFST, coverage reports, docs) is
derived from that description.

Halting rule shared by every expert: the agent halts by entering the absorbing
state ``HALT``, in which it rewrites the observed symbol and stays (motion S).
No other transition uses S, so a rollout of any agent, expert or learned, has
halted at the first step whose motion is S.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Iterable, Sequence

import numpy as np

from dfst.grid import MOTIONS, STAY, Alphabet

logger = logging.getLogger(__name__)

HALT = "HALT"
KEEP = -1  # a Rule's ``write`` value meaning "rewrite the observed symbol"
START_CELLS = ("operator", "first_digit")
UNDEFINED = -1  # table entry of a (state, symbol) pair that the expert never meets


class ExpertDefinitionError(ValueError):
    """An expert description is inconsistent."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """Transitions of one state on a set of observed symbols."""

    state: str
    symbols: tuple[int, ...]  # observed symbol indices this rule covers
    next_state: str
    write: int  # symbol index to write, or KEEP
    move: str  # one of MOTIONS


class SymbolClasses:
    """Names for sets of symbol indices of one alphabet, for writing rules."""

    def __init__(self, alphabet: Alphabet):
        self.alphabet = alphabet
        self.blank = (0,)
        self.operator = (alphabet.operator_symbol,)
        self.digits = tuple(range(1, alphabet.radix + 1))
        self.all = tuple(range(alphabet.size))

    def digit(self, value: int) -> tuple[int, ...]:
        return (1 + value,)


@dataclasses.dataclass(frozen=True)
class ExpertSpec:
    """A compiled expert: alphabet, state names and the transition table."""

    task: str
    operation: str  # "add" or "mult"
    alphabet: Alphabet
    states: tuple[str, ...]
    start_state: int
    start_cell: str  # "operator" or "first_digit": where on row 0 the agent starts
    halt_state: int
    next_state: np.ndarray  # (Q, K) int16, UNDEFINED where the expert never goes
    write: np.ndarray  # (Q, K) int8, the symbol written
    move: np.ndarray  # (Q, K) int8, index into MOTIONS
    description: str  # one paragraph on how the expert computes

    @property
    def num_states(self) -> int:
        return len(self.states)

    @property
    def num_symbols(self) -> int:
        return self.alphabet.size

    @property
    def table_hash(self) -> str:
        """sha256 of the transition table, identifying the expert's exact behaviour."""
        digest = hashlib.sha256()
        digest.update(self.task.encode())
        for array in (self.next_state, self.write, self.move):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def defined_transitions(self) -> list[tuple[int, int]]:
        """Return every (state, symbol) pair with a defined transition."""
        states, symbols = np.nonzero(self.next_state != UNDEFINED)
        return list(zip(states.tolist(), symbols.tolist(), strict=True))

    def start_column(self, a: int) -> int:
        """Return the column on row 0 where the agent starts on the problem (a, b)."""
        if self.start_cell == "first_digit":
            return 0
        return len(self.alphabet.digits_of(a))

    def compute(self, a: int, b: int) -> int:
        """Return the true result of the expert's operation."""
        return a + b if self.operation == "add" else a * b


def compile_rules(
    task: str,
    operation: str,
    alphabet: Alphabet,
    start_state: str,
    start_cell: str,
    rules: Iterable[Rule],
    halt_symbols: Sequence[int],
    description: str,
) -> ExpertSpec:
    """Compile rules into an :class:`ExpertSpec`, adding the halting state.

    ``halt_symbols`` are the symbols the agent can observe once halted; the
    halting state gets rules for those only, so that every defined transition
    of the table is reachable.

    States are numbered in order of first appearance; ``HALT`` comes last.
    """
    rules = list(rules)
    if start_cell not in START_CELLS:
        raise ExpertDefinitionError(f"{task}: start cell {start_cell!r} is not one of {START_CELLS}")
    names: list[str] = [start_state]
    for rule in rules:
        for name in (rule.state, rule.next_state):
            if name not in names and name != HALT:
                names.append(name)
    names.append(HALT)
    index = {name: i for i, name in enumerate(names)}
    shape = (len(names), alphabet.size)
    next_state = np.full(shape, UNDEFINED, dtype=np.int16)
    write = np.zeros(shape, dtype=np.int8)
    move = np.zeros(shape, dtype=np.int8)

    for rule in rules:
        if rule.state == HALT:
            raise ExpertDefinitionError(f"{task}: rules must not define the halting state")
        if rule.move not in MOTIONS or rule.move == "S":
            raise ExpertDefinitionError(
                f"{task}: state {rule.state} uses motion {rule.move!r}; rules may use U, D, L, R"
            )
        q = index[rule.state]
        for symbol in rule.symbols:
            if next_state[q, symbol] != UNDEFINED:
                raise ExpertDefinitionError(f"{task}: state {rule.state} defines symbol {symbol} twice")
            next_state[q, symbol] = index[rule.next_state]
            write[q, symbol] = symbol if rule.write == KEEP else rule.write
            move[q, symbol] = MOTIONS.index(rule.move)

    halt = index[HALT]
    for symbol in halt_symbols:
        next_state[halt, symbol] = halt
        write[halt, symbol] = symbol
        move[halt, symbol] = STAY

    return ExpertSpec(
        task=task,
        operation=operation,
        alphabet=alphabet,
        states=tuple(names),
        start_state=index[start_state],
        start_cell=start_cell,
        halt_state=halt,
        next_state=next_state,
        write=write,
        move=move,
        description=description,
    )


def rule(state: str, symbols: Sequence[int], next_state: str, write: int, move: str) -> Rule:
    """Shorthand constructor used by the expert descriptions."""
    return Rule(state, tuple(symbols), next_state, write, move)
