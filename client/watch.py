"""Watch a job to its end: progress bars, reconnection after dropped connections, and the final record."""

from __future__ import annotations

import dataclasses
import logging
import sys
import time

import grpc
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from dfst.v1 import jobs_pb2, service_pb2

logger = logging.getLogger(__name__)

WATCH_DEADLINE_S = 600.0  # deadline of one WatchJob call; the client renews it until the job ends
RECONNECT_WINDOW_S = 60.0  # how long the client keeps retrying a dropped watch before it gives up
RECONNECT_DELAY_S = 1.0  # pause between reconnection attempts
PROGRESS_LINE_INTERVAL_S = 10.0  # minimum seconds between plain progress lines when stderr is not a terminal
TERMINAL_STATES = (jobs_pb2.JOB_STATE_SUCCEEDED, jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELLED)


@dataclasses.dataclass
class WatchOutcome:
    """Final job record and rollouts of a watch."""

    job: jobs_pb2.Job  # the last job record received
    rollouts: dict[int, jobs_pb2.RolloutResult]  # finished rollouts by pair index


class _Bars:
    """Rich progress bars on stderr: steps against the expected total, rollouts finished."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        if not enabled:
            return
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(),
            TextColumn("{task.fields[done_text]}"), TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(), TimeRemainingColumn(),
            console=Console(file=sys.stderr), transient=False,
        )
        self.steps = self.progress.add_task("steps", total=None, done_text="", rate="")
        self.rollouts = self.progress.add_task("rollouts", total=None, done_text="", rate="")
        self.started = time.monotonic()
        self.progress.start()

    def update(self, progress: jobs_pb2.Progress) -> None:
        if not self.enabled:
            return
        elapsed = max(time.monotonic() - self.started, 1e-9)
        if progress.iterations_total:
            self.progress.update(self.steps, description="iterations", completed=progress.iterations_done,
                                 total=progress.iterations_total,
                                 done_text=f"{progress.iterations_done}/{progress.iterations_total}",
                                 rate=f"loss {progress.loss:.3g}")
            return
        self.progress.update(self.steps, completed=progress.steps_done, total=progress.steps_expected or None,
                             done_text=f"{progress.steps_done / 1e6:.1f}M/{progress.steps_expected / 1e6:.1f}M",
                             rate=f"{progress.steps_done / elapsed / 1e6:.1f}M steps/s")
        self.progress.update(self.rollouts, completed=progress.rollouts_done, total=progress.rollouts_total or None,
                             done_text=f"{progress.rollouts_done}/{progress.rollouts_total}", rate="")

    def close(self) -> None:
        if self.enabled:
            self.progress.stop()


class _Lines:
    """Plain progress lines on stderr, at most one per PROGRESS_LINE_INTERVAL_S, for logs and pipes."""

    def __init__(self):
        self.started = time.monotonic()
        self.last_line = self.started

    def update(self, progress: jobs_pb2.Progress) -> None:
        now = time.monotonic()
        if now - self.last_line < PROGRESS_LINE_INTERVAL_S:
            return
        self.last_line = now
        elapsed = max(now - self.started, 1e-9)
        if progress.iterations_total:
            line = f"iterations {progress.iterations_done}/{progress.iterations_total}, loss {progress.loss:.3g}"
        else:
            line = (f"steps {progress.steps_done / 1e6:.1f}M of about {progress.steps_expected / 1e6:.1f}M, "
                    f"rollouts {progress.rollouts_done}/{progress.rollouts_total}, "
                    f"{progress.steps_done / elapsed / 1e6:.1f}M steps/s")
        print(f"{elapsed:.0f} s: {line}", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def watch_job(stub, job_id: str, show_progress: bool | str) -> WatchOutcome:
    """Follow a job until it is terminal, reconnecting after UNAVAILABLE or an expired deadline.

    ``show_progress`` is "bars" (or True) for rich bars, "lines" for plain lines every
    PROGRESS_LINE_INTERVAL_S seconds, and "off" (or False) for no progress output.
    """
    bars = _Lines() if show_progress == "lines" else _Bars(show_progress in (True, "bars"))
    rollouts: dict[int, jobs_pb2.RolloutResult] = {}
    job = None
    lost_since = None
    try:
        while True:
            try:
                stream = stub.WatchJob(service_pb2.WatchJobRequest(job_id=job_id), timeout=WATCH_DEADLINE_S)
                for event in stream:
                    lost_since = None
                    kind = event.WhichOneof("event")
                    if kind == "job":
                        job = event.job
                        bars.update(job.progress)
                    elif kind == "progress":
                        bars.update(event.progress)
                    else:
                        rollouts[event.rollout.index] = event.rollout
                if job is not None and job.state in TERMINAL_STATES:
                    bars.update(job.progress)
                    return WatchOutcome(job, rollouts)
            except grpc.RpcError as error:
                if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > RECONNECT_WINDOW_S:
                    raise
                logger.warning("watch of job %s interrupted (%s); reconnecting", job_id, error.code().name)
                time.sleep(RECONNECT_DELAY_S)
    finally:
        bars.close()
