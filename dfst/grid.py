"""The 2-D symbol grid that experts and DFST agents act on.

Symbols are small integers: 0 is the blank, ``1 + v`` is the digit of value
``v`` and ``radix + 1`` is the operator (``+`` or ``×``).  Motions are integers
too, in the order of :data:`MOTIONS`.

A grid is stored densely over the bounding box of the cells written or visited
so far, with an origin offset, so its memory grows with the area the agent
touched and never with the number of steps.  The compiled kernels in
:mod:`dfst.kernels` use the same layout.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np

logger = logging.getLogger(__name__)

BLANK = 0
MOTIONS = ("U", "D", "L", "R", "S")
UP, DOWN, LEFT, RIGHT, STAY = range(5)
# Row and column change of each motion; rows grow downwards.
MOTION_ROW_DELTA = np.array([-1, 1, 0, 0, 0], dtype=np.int64)
MOTION_COL_DELTA = np.array([0, 0, -1, 1, 0], dtype=np.int64)

GRID_DTYPE = np.int8
# Number of spare cells added on each side whenever a grid grows.
GROWTH_MARGIN = 16


class AlphabetError(ValueError):
    """An operand or grid does not fit an alphabet."""


@dataclasses.dataclass(frozen=True)
class Alphabet:
    """Blank, the digits of a radix and one operator, in symbol-index order."""

    radix: int
    operator: str

    @property
    def size(self) -> int:
        """Number of symbols K."""
        return self.radix + 2

    @property
    def operator_symbol(self) -> int:
        return self.radix + 1

    @property
    def characters(self) -> tuple[str, ...]:
        """Printable character of each symbol; the blank prints as ``_``."""
        return ("_",) + tuple("0123456789"[: self.radix]) + (self.operator,)

    def digit_symbol(self, value: int) -> int:
        return 1 + value

    def digits_of(self, number: int) -> list[int]:
        """Return the digit values of a non-negative integer, most significant first."""
        if number < 0:
            raise AlphabetError(f"operand {number} is negative; only non-negative integers are allowed")
        return [int(c, 36) for c in format_number(number, self.radix)]

    def parse_digits(self, digits: str) -> int:
        """Return the integer written by a string of digit characters, most significant first."""
        return parse_number(digits, self.radix)

    def encode_number(self, number: int) -> np.ndarray:
        """Return the digit symbols of ``number``, most significant first."""
        return np.array([1 + v for v in self.digits_of(number)], dtype=GRID_DTYPE)


# Conversions in radices other than 2 are done in chunks of this many digits, which stays below
# CPython's limit on int/str conversion (4300 digits by default since 3.11)
# without changing that interpreter-wide setting.
_DECIMAL_CHUNK = 4000


def format_number(number: int, radix: int) -> str:
    """Return the digits of a non-negative integer in ``radix`` (2 to 10) as a string."""
    if radix == 2:
        return format(number, "b")
    if radix == 10:
        if number < 10**_DECIMAL_CHUNK:
            return str(number)
        chunks = []
        base = 10**_DECIMAL_CHUNK
        while number >= base:
            number, chunk = divmod(number, base)
            chunks.append(str(chunk).zfill(_DECIMAL_CHUNK))
        chunks.append(str(number))
        return "".join(reversed(chunks))
    digits = []
    while True:
        number, digit = divmod(number, radix)
        digits.append(str(digit))
        if number == 0:
            return "".join(reversed(digits))


def parse_number(digits: str, radix: int) -> int:
    """Return the integer written by ``digits`` in ``radix``, for any length."""
    if radix == 2 or len(digits) <= _DECIMAL_CHUNK:
        return int(digits, radix)
    value = 0
    for start in range(0, len(digits), _DECIMAL_CHUNK):
        chunk = digits[start : start + _DECIMAL_CHUNK]
        value = value * radix ** len(chunk) + int(chunk, radix)
    return value


def digit_count(number: int, radix: int) -> int:
    """Return the number of radix-``radix`` digits of a non-negative integer (1 for 0)."""
    if number < radix:
        return 1
    if radix == 2:
        return number.bit_length()
    # Estimate from the bit length, then correct by comparing with powers of the radix.
    count = max(1, int((number.bit_length() - 1) * math.log(2, radix)))
    while radix**count <= number:
        count += 1
    while count > 1 and radix ** (count - 1) > number:
        count -= 1
    return count


@dataclasses.dataclass
class Grid:
    """A dense window onto the unbounded grid.

    ``cells[i, j]`` is the symbol at row ``i - origin_row`` and column
    ``j - origin_col``; every cell outside the window is blank.
    """

    cells: np.ndarray
    origin_row: int
    origin_col: int

    @classmethod
    def from_row(cls, symbols: np.ndarray) -> Grid:
        """Return a grid whose row 0 contains ``symbols`` from column 0 on."""
        margin = 2
        cells = np.zeros((1 + 2 * margin, len(symbols) + 2 * margin), dtype=GRID_DTYPE)
        cells[margin, margin : margin + len(symbols)] = symbols
        return cls(cells, margin, margin)

    def copy(self) -> Grid:
        return Grid(self.cells.copy(), self.origin_row, self.origin_col)

    def get(self, row: int, col: int) -> int:
        i, j = row + self.origin_row, col + self.origin_col
        if 0 <= i < self.cells.shape[0] and 0 <= j < self.cells.shape[1]:
            return int(self.cells[i, j])
        return BLANK

    def set(self, row: int, col: int, symbol: int) -> None:
        self.ensure(row, col)
        self.cells[row + self.origin_row, col + self.origin_col] = symbol

    def ensure(self, row: int, col: int) -> None:
        """Grow the window so that it contains cell (row, col)."""
        self.cells, self.origin_row, self.origin_col = grow_to_contain(
            self.cells, self.origin_row, self.origin_col, row, col
        )

    def nonblank_cells(self) -> list[tuple[int, int, int]]:
        """Return (row, col, symbol) of every non-blank cell, in row-major order."""
        rows, cols = np.nonzero(self.cells)
        return [
            (int(i) - self.origin_row, int(j) - self.origin_col, int(self.cells[i, j]))
            for i, j in zip(rows, cols, strict=True)
        ]

    def render(
        self,
        alphabet: Alphabet,
        position: tuple[int, int] | None = None,
        rows: tuple[int, int] | None = None,
        cols: tuple[int, int] | None = None,
    ) -> str:
        """Render a region as text, one line per row, with the agent's cell in brackets.

        ``rows`` and ``cols`` are inclusive (first, last) ranges; by default the
        region is the bounding box of the non-blank cells and the agent.
        """
        cells = self.nonblank_cells()
        points = [(r, c) for r, c, _ in cells]
        if position is not None:
            points.append(position)
        if not points:
            points = [(0, 0)]
        if rows is None:
            rows = (min(p[0] for p in points), max(p[0] for p in points))
        if cols is None:
            cols = (min(p[1] for p in points), max(p[1] for p in points))
        characters = alphabet.characters
        lines = []
        for row in range(rows[0], rows[1] + 1):
            line = []
            for col in range(cols[0], cols[1] + 1):
                character = characters[self.get(row, col)]
                line.append(f"[{character}]" if position == (row, col) else f" {character} ")
            lines.append("".join(line).rstrip())
        return "\n".join(lines)


def grow_to_contain(
    cells: np.ndarray, origin_row: int, origin_col: int, row: int, col: int
) -> tuple[np.ndarray, int, int]:
    """Return (cells, origin_row, origin_col) widened so that (row, col) lies inside.

    The window grows by at least half its size on the side that is too small, so
    a sweep of n cells causes O(log n) copies.
    """
    i, j = row + origin_row, col + origin_col
    height, width = cells.shape
    if 0 <= i < height and 0 <= j < width:
        return cells, origin_row, origin_col
    add_top = max(0, -i) and max(-i, height // 2) + GROWTH_MARGIN
    add_bottom = max(0, i - height + 1) and max(i - height + 1, height // 2) + GROWTH_MARGIN
    add_left = max(0, -j) and max(-j, width // 2) + GROWTH_MARGIN
    add_right = max(0, j - width + 1) and max(j - width + 1, width // 2) + GROWTH_MARGIN
    grown = np.zeros((height + add_top + add_bottom, width + add_left + add_right), dtype=cells.dtype)
    grown[add_top : add_top + height, add_left : add_left + width] = cells
    return grown, origin_row + add_top, origin_col + add_left


@dataclasses.dataclass(frozen=True)
class Answer:
    """The number a halted grid contains, or the reason it is not a well-formed answer."""

    digits: str | None  # digit characters, most significant first, or None if malformed
    problem: str | None  # None when well formed


def read_answer(grid: Grid, alphabet: Alphabet) -> Answer:
    """Read the answer a halted agent left: one contiguous row of digits without leading zeros."""
    cells = grid.nonblank_cells()
    if not cells:
        return Answer(None, "the grid is empty")
    answer_rows = {row for row, _, _ in cells}
    if len(answer_rows) != 1:
        return Answer(None, f"non-blank cells lie on {len(answer_rows)} rows, expected 1")
    cols = [col for _, col, _ in cells]
    if max(cols) - min(cols) + 1 != len(cols):
        return Answer(None, "the answer row has blank gaps")
    symbols = [symbol for _, _, symbol in cells]
    if any(not 1 <= s <= alphabet.radix for s in symbols):
        return Answer(None, "the answer row contains an operator")
    characters = alphabet.characters
    digits = "".join(characters[s] for s in symbols)
    if len(digits) > 1 and digits[0] == "0":
        return Answer(digits, "the answer has a leading zero")
    return Answer(digits, None)


def problem_grid(alphabet: Alphabet, a: int, b: int) -> Grid:
    """Return the grid holding ``a`` op ``b`` on row 0, the first digit of ``a`` at column 0."""
    row = np.concatenate(
        [alphabet.encode_number(a), np.array([alphabet.operator_symbol], dtype=GRID_DTYPE), alphabet.encode_number(b)]
    )
    return Grid.from_row(row)
