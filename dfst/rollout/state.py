"""Resumable rollout state and rollout results, with a compact pickle-free encoding."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np

DTYPES = ("float32", "float64")
STATUSES = ("running", "halted", "budget_exceeded", "non_finite")
OUTCOMES = ("correct", "wrong", "budget_exceeded", "non_finite")
# Version of the to_bytes layout; from_bytes rejects any other.
STATE_FORMAT = 1


class RolloutInputError(ValueError):
    """A rollout request or state is invalid: wrong weights, digits, dtype or encoding."""


@dataclasses.dataclass
class RolloutState:
    """Everything needed to resume a closed-loop rollout, and nothing from its past."""

    task: str  # task name, such as "add10"
    a: int  # first operand
    b: int  # second operand
    dtype: str  # "float32" or "float64": precision of the hidden state and of the arithmetic
    hidden: np.ndarray  # (d,) hidden state before the next step
    cells: np.ndarray  # (height, width) int8 grid window, as in dfst.grid.Grid
    origin_row: int  # array row of grid row 0
    origin_col: int  # array column of grid column 0
    row: int  # grid row of the agent's cell; may lie outside the window
    col: int  # grid column of the agent's cell; may lie outside the window
    steps: int  # steps taken so far, the halting step included
    step_budget: int  # the rollout stops as budget_exceeded after this many steps without halting
    status: str  # "running", "halted", "budget_exceeded" or "non_finite"
    seconds: float = 0.0  # wall time spent advancing, summed over calls; lockstep lanes split a call's time
    detail: str | None = None  # why the rollout stopped, where the status alone does not tell

    def copy(self) -> RolloutState:
        return dataclasses.replace(self, hidden=self.hidden.copy(), cells=self.cells.copy())

    def to_bytes(self) -> bytes:
        """Encode as an ``.npz`` archive: a JSON header plus the hidden state and grid arrays."""
        header = {
            "format": STATE_FORMAT,
            "task": self.task,
            # hex because int -> decimal str is capped at 4300 digits by default
            "a": hex(self.a),
            "b": hex(self.b),
            "dtype": self.dtype,
            "origin_row": self.origin_row,
            "origin_col": self.origin_col,
            "row": self.row,
            "col": self.col,
            "steps": self.steps,
            "step_budget": self.step_budget,
            "status": self.status,
            "seconds": self.seconds,
            "detail": self.detail,
        }
        buffer = io.BytesIO()
        encoded = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        np.savez(buffer, header=encoded, hidden=self.hidden, cells=self.cells)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> RolloutState:
        """Decode :meth:`to_bytes` output; raise RolloutInputError on anything else."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                header = json.loads(archive["header"].tobytes().decode())
                hidden = archive["hidden"]
                cells = archive["cells"]
            if header.get("format") != STATE_FORMAT:
                raise RolloutInputError(f"rollout state format {header.get('format')!r} is not {STATE_FORMAT}")
            state = cls(
                task=header["task"], a=int(header["a"], 16), b=int(header["b"], 16), dtype=header["dtype"],
                hidden=hidden, cells=cells, origin_row=int(header["origin_row"]),
                origin_col=int(header["origin_col"]), row=int(header["row"]), col=int(header["col"]),
                steps=int(header["steps"]), step_budget=int(header["step_budget"]), status=header["status"],
                seconds=float(header["seconds"]), detail=header["detail"],
            )
        except RolloutInputError:
            raise
        except (ValueError, KeyError, TypeError, OSError, EOFError) as error:
            raise RolloutInputError(f"invalid rollout state encoding: {error}") from error
        state.check()
        return state

    def check(self) -> None:
        """Raise RolloutInputError if the fields are inconsistent."""
        if self.dtype not in DTYPES:
            raise RolloutInputError(f"dtype {self.dtype!r} is not one of {DTYPES}")
        if self.status not in STATUSES:
            raise RolloutInputError(f"status {self.status!r} is not one of {STATUSES}")
        if self.hidden.ndim != 1 or self.hidden.dtype != np.dtype(self.dtype):
            raise RolloutInputError(
                f"hidden state must be 1-D {self.dtype}, got {self.hidden.dtype} {self.hidden.shape}"
            )
        if self.cells.ndim != 2 or self.cells.dtype != np.int8:
            raise RolloutInputError(f"cells must be a 2-D int8 array, got {self.cells.dtype} {self.cells.shape}")
        if not 0 <= self.steps <= self.step_budget:
            raise RolloutInputError(f"steps {self.steps} must lie in [0, step_budget={self.step_budget}]")


@dataclasses.dataclass
class RolloutResult:
    """The outcome of one finished rollout."""

    task: str  # task name
    a_digits: int  # digits of the first operand
    b_digits: int  # digits of the second operand
    outcome: str  # "correct", "wrong", "budget_exceeded" or "non_finite"
    steps: int  # steps taken, the halting step included
    seconds: float  # wall time spent advancing
    first_wrong_digit: int | None  # 0-based index from the most significant digit, for a wrong well-formed answer
    expected_length: int  # digits of the true result
    answer_length: int | None  # digits of the answer left on the grid, None if there is no well-formed answer
    detail: str | None  # reason for a malformed grid, a budget or a non-finite state

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
