"""SQLite persistence of jobs, finished rollouts and rollout checkpoints.

A job row is rewritten on every change, a rollout row is written once when the
rollout finishes, and a checkpoint row contains the latest chunk state of an
unfinished rollout, so a restarted server resumes without redoing work.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import sqlite3
import threading
from collections.abc import Iterator

from dfst.server.jobs import JobKind, JobRecord, JobState

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "DFST_DATA_DIR"
DATABASE_NAME = "service.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    request TEXT NOT NULL,
    progress TEXT NOT NULL,
    report TEXT,
    error TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS rollouts (
    job_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    job_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    steps INTEGER NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (job_id, idx)
);
"""


class StoreError(RuntimeError):
    """The data folder or database cannot be used."""


class StoreFullError(StoreError):
    """A write failed because the file system of the data folder is full."""


@contextlib.contextmanager
def _writing(db: sqlite3.Connection, record: str, path: pathlib.Path) -> Iterator[None]:
    """Turn a failed write into StoreError (StoreFullError when the disk is full), rolling back its transaction."""
    try:
        yield
    except sqlite3.Error as error:
        if db.in_transaction:
            db.execute("ROLLBACK")
        if getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            message = f"cannot store the {record}: the disk of {path} is full; free space and retry"
            raise StoreFullError(message) from error
        raise StoreError(f"cannot store the {record} in {path}: {error}") from error


def default_data_dir() -> pathlib.Path:
    """Return $DFST_DATA_DIR, or ~/.local/share/dfst."""
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        return pathlib.Path(configured).expanduser()
    return pathlib.Path.home() / ".local" / "share" / "dfst"


class JobStore:
    """Thread-safe SQLite store; one connection shared under a lock."""

    def __init__(self, data_dir: pathlib.Path):
        self.data_dir = pathlib.Path(data_dir)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(
                f"cannot create the data folder {self.data_dir}: {error.strerror}; "
                f"set {DATA_DIR_ENV} or --data-dir to a writable folder"
            ) from error
        if not os.access(self.data_dir, os.W_OK | os.X_OK):
            raise StoreError(
                f"the data folder {self.data_dir} is not writable; "
                f"set {DATA_DIR_ENV} or --data-dir to a writable folder"
            )
        self.path = self.data_dir / DATABASE_NAME
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as error:
            raise StoreError(f"cannot open the job database {self.path}: {error}") from error
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as error:
            self._db.close()
            raise StoreError(f"cannot open the job database {self.path}: {error}") from error
        logger.info("job store at %s", self.path)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def save_job(self, job: JobRecord) -> None:
        row = (
            job.job_id, job.kind.value, job.state.value, json.dumps(job.request), json.dumps(job.progress),
            None if job.report is None else json.dumps(job.report), job.error,
            job.created_at, job.started_at, job.finished_at,
        )
        with self._lock, _writing(self._db, f"job {job.job_id}", self.path):
            self._db.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)

    def load_job(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else _job_from_row(row)

    def list_jobs(self, limit: int, states: list[JobState] | None = None) -> list[JobRecord]:
        """Return up to ``limit`` jobs, newest first, optionally only in ``states``."""
        query = "SELECT * FROM jobs"
        params: list = []
        if states:
            query += f" WHERE state IN ({', '.join('?' for _ in states)})"
            params.extend(state.value for state in states)
        query += " ORDER BY created_at DESC LIMIT ?"
        params.append(limit)
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        return [_job_from_row(row) for row in rows]

    def save_rollout(self, job_id: str, index: int, result: dict) -> None:
        """Store a finished rollout and drop its checkpoint, in one transaction."""
        with self._lock, _writing(self._db, f"rollout {index} of job {job_id}", self.path):
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO rollouts VALUES (?, ?, ?)", (job_id, index, json.dumps(result)))
            self._db.execute("DELETE FROM checkpoints WHERE job_id = ? AND idx = ?", (job_id, index))
            self._db.execute("COMMIT")

    def load_rollouts(self, job_id: str) -> dict[int, dict]:
        with self._lock:
            rows = self._db.execute("SELECT idx, result FROM rollouts WHERE job_id = ? ORDER BY idx", (job_id,))
            return {int(index): json.loads(result) for index, result in rows.fetchall()}

    def save_checkpoint(self, job_id: str, index: int, steps: int, state: bytes) -> None:
        with self._lock, _writing(self._db, f"checkpoint of rollout {index} of job {job_id}", self.path):
            self._db.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?)", (job_id, index, steps, state))

    def load_checkpoints(self, job_id: str) -> dict[int, tuple[int, bytes]]:
        """Return {index: (steps, state bytes)} of the job's unfinished rollouts."""
        with self._lock:
            rows = self._db.execute("SELECT idx, steps, state FROM checkpoints WHERE job_id = ?", (job_id,)).fetchall()
        return {int(index): (int(steps), bytes(state)) for index, steps, state in rows}

    def delete_checkpoints(self, job_id: str) -> None:
        with self._lock, _writing(self._db, f"checkpoint deletion of job {job_id}", self.path):
            self._db.execute("DELETE FROM checkpoints WHERE job_id = ?", (job_id,))


def _job_from_row(row) -> JobRecord:
    job_id, kind, state, request, progress, report, error, created_at, started_at, finished_at = row
    return JobRecord(
        job_id=job_id, kind=JobKind(kind), state=JobState(state), request=json.loads(request),
        progress=json.loads(progress), report=None if report is None else json.loads(report), error=error,
        created_at=created_at, started_at=started_at, finished_at=finished_at,
    )
