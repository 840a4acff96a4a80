"""Job states, their legal transitions and the job record."""

from __future__ import annotations

import dataclasses
import enum
import time
import uuid


class JobState(enum.StrEnum):
    """Lifecycle state of a job."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def is_terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class JobKind(enum.StrEnum):
    """Kind of work a job performs: an evaluation or a training run."""

    EVAL = "eval"
    TRAINING = "training"


# Legal transitions; every other change of state raises IllegalTransitionError.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.FAILED, JobState.CANCELLED}),
    JobState.RUNNING: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class IllegalTransitionError(RuntimeError):
    """A job was asked to move to a state its current state cannot reach."""


@dataclasses.dataclass
class JobRecord:
    """Everything the server stores about a job."""

    job_id: str  # server-assigned identifier (32 hex digits)
    kind: JobKind
    state: JobState
    request: dict  # the eval or training request, as JSON-ready values
    progress: dict = dataclasses.field(default_factory=dict)  # Progress fields, as JSON-ready values
    report: dict | None = None  # eval or training report once succeeded
    error: str = ""  # why the job failed; empty otherwise
    created_at: float = dataclasses.field(default_factory=time.time)  # Unix time, seconds
    started_at: float | None = None  # Unix time of the move to running, seconds
    finished_at: float | None = None  # Unix time of the move to a terminal state, seconds

    @classmethod
    def new(cls, kind: JobKind, request: dict) -> JobRecord:
        return cls(uuid.uuid4().hex, kind, JobState.QUEUED, request)

    def transition(self, target: JobState) -> None:
        """Move to ``target``, stamping the start and finish times; raise IllegalTransitionError if not allowed."""
        if target not in TRANSITIONS[self.state]:
            raise IllegalTransitionError(
                f"job {self.job_id} cannot move from {self.state.value} to {target.value}; "
                f"allowed: {', '.join(sorted(s.value for s in TRANSITIONS[self.state])) or 'none (terminal)'}"
            )
        self.state = target
        if target == JobState.RUNNING:
            self.started_at = time.time()
        if target.is_terminal():
            self.finished_at = time.time()
