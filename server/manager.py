"""The job manager: submission, cancellation, watching, and dispatch to Ray workers.

One dispatcher thread owns all Ray calls.  An evaluation job becomes one unit
of work per pair; each unit runs as a sequence of chunks on the rollout
workers, and the state after every chunk and every finished rollout go to the
store before anything else sees them.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import logging
import queue
import threading
import time

import ray
from dfst.server.jobs import JobKind, JobRecord, JobState
from dfst.server.metrics import ServerMetrics
from dfst.server.plan import (
    EvalRequest,
    Unit,
    build_report,
    estimate_steps,
    load_request_model,
    plan_units,
    search_stopped,
)
from dfst.server.store import JobStore, StoreError
from dfst.server.training_jobs import TrainingJobsMixin
from dfst.workers.actors import (
    RolloutWorker,
    WorkerConfig,
    rollout_worker_options,
    start_rollout_workers,
)

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.1  # maximum wait of the dispatcher for a finished chunk
MAX_CHUNK_FAILURES = 3  # failed chunks of one pair (a worker killed, e.g. out of memory) before its job fails
STORE_RETRY_S = 1.0  # interval between attempts to store a finished chunk while the store fails (e.g. disk full)


class JobNotFoundError(LookupError):
    """No job has the given id."""


class JobConflictError(RuntimeError):
    """The job's state does not allow the request (e.g. cancelling a finished job)."""


class QueueFullError(RuntimeError):
    """The number of unfinished jobs reached the configured limit."""


class ShuttingDownError(RuntimeError):
    """The manager is stopping and accepts no new jobs."""


@dataclasses.dataclass(frozen=True)
class ManagerConfig:
    """Limits of the job manager and placement of its workers."""

    max_active_jobs: int = 64  # queued plus running jobs; more submissions get QueueFullError
    workers: WorkerConfig = WorkerConfig()  # rollout and training actor placement
    allow_model_paths: bool = True  # accept checkpoint file paths as models, not only registry names


@dataclasses.dataclass
class _EvalRun:
    """In-memory execution state of one running evaluation job."""

    job: JobRecord
    request: EvalRequest
    units: list[Unit]
    sha256: str  # sha256 of the model's weights
    results: dict[int, dict]  # finished rollouts by unit index
    checkpoints: dict[int, tuple[int, bytes]]  # (steps, state bytes) of started, unfinished rollouts
    step: int = 0  # index of the length being evaluated
    pending: collections.deque = dataclasses.field(default_factory=collections.deque)  # units not started
    continuing: collections.deque = dataclasses.field(default_factory=collections.deque)  # units between chunks
    inflight: set = dataclasses.field(default_factory=set)  # units with a chunk on a worker
    failures: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # failed chunks per unit


class JobManager(TrainingJobsMixin):
    """Owns the store, the Ray workers and the dispatcher thread."""

    def __init__(self, store: JobStore, config: ManagerConfig = ManagerConfig(), metrics: ServerMetrics | None = None):
        self.store = store
        self.config = config
        self.metrics = metrics if metrics is not None else ServerMetrics()
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._subscribers: dict[str, list[queue.Queue]] = collections.defaultdict(list)
        self._runs: dict[str, _EvalRun] = {}
        self._training: dict[str, tuple] = {}  # job id -> (actor, result ref, last poll time)
        self._inflight: dict = {}  # chunk ref -> (worker, job id, unit index)
        self._idle: list = []
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> None:
        """Start the workers and the dispatcher; resume every unfinished job in the store."""
        self._idle = start_rollout_workers(self.config.workers)
        for job in self.store.list_jobs(limit=1_000_000, states=[JobState.QUEUED, JobState.RUNNING]):
            logger.info("resuming %s job %s in state %s", job.kind.value, job.job_id, job.state.value)
            self.metrics.record_job_transition(job.kind.value, job.request["task"], None, job.state.value)
        self._thread = threading.Thread(target=self._dispatch_loop, name="dfst-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop dispatching and release the workers; unfinished jobs stay in the store to resume later."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for worker in self._idle + [entry[0] for entry in self._inflight.values()]:
            ray.kill(worker)
        for actor, _, _ in self._training.values():
            ray.kill(actor)
        self._publish_shutdown()
        logger.info("job manager stopped")

    # requests

    def submit_eval(self, request: EvalRequest) -> JobRecord:
        """Store a queued evaluation job; raise InvalidRequestError for an unknown or mismatched model."""
        self._load_weights(request)
        return self._submit(JobRecord.new(JobKind.EVAL, request.to_dict()))

    def submit_training(self, task: str, config: dict, model_name: str) -> JobRecord:
        return self._submit(JobRecord.new(JobKind.TRAINING, {"task": task, "config": config, "model_name": model_name}))

    def _submit(self, job: JobRecord) -> JobRecord:
        if self._stopping.is_set():
            raise ShuttingDownError("the server is shutting down; submit the job again once it is back")
        with self._lock:
            active = len(self.store.list_jobs(self.config.max_active_jobs, [JobState.QUEUED, JobState.RUNNING]))
            if active >= self.config.max_active_jobs:
                raise QueueFullError(
                    f"{active} jobs are queued or running, the limit is {self.config.max_active_jobs}; "
                    "wait for one to finish or cancel one"
                )
            self.store.save_job(job)
        self.metrics.record_job_submitted(job.kind.value, job.request["task"])
        logger.info("queued %s job %s", job.kind.value, job.job_id)
        self._wake.set()
        return copy.deepcopy(job)

    def get(self, job_id: str) -> JobRecord:
        job = self.store.load_job(job_id)
        if job is None:
            raise JobNotFoundError(f"job {job_id!r} not found; `dfst-client jobs list` shows the known jobs")
        return job

    def list(self, limit: int, states: list[JobState] | None = None) -> list[JobRecord]:
        return self.store.list_jobs(limit, states)

    def rollouts(self, job_id: str) -> dict[int, dict]:
        return self.store.load_rollouts(job_id)

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued or running job; raise JobConflictError if it already finished."""
        with self._lock:
            job = self.get(job_id)
            if job.state.is_terminal():
                raise JobConflictError(
                    f"job {job_id} already {job.state.value}; only queued or running jobs can be cancelled"
                )
            self._transition(job, JobState.CANCELLED)
            self.store.save_job(job)
            self.store.delete_checkpoints(job_id)
            self._runs.pop(job_id, None)
            training = self._training.pop(job_id, None)
        if training is not None:
            training[0].cancel.remote()
        logger.info("cancelled job %s", job_id)
        self._publish(job_id, "job", job)
        return job

    def subscribe(self, job_id: str) -> queue.Queue:
        """Return a queue of ("job" | "progress" | "rollout", payload) events of the job."""
        events: queue.Queue = queue.Queue()
        with self._lock:
            self._subscribers[job_id].append(events)
        return events

    def unsubscribe(self, job_id: str, events: queue.Queue) -> None:
        with self._lock:
            if events in self._subscribers.get(job_id, []):
                self._subscribers[job_id].remove(events)

    def _publish(self, job_id: str, kind: str, payload) -> None:
        with self._lock:
            targets = list(self._subscribers.get(job_id, []))
        for events in targets:
            events.put((kind, copy.deepcopy(payload)))

    def _publish_shutdown(self) -> None:
        with self._lock:
            targets = [events for subscribers in self._subscribers.values() for events in subscribers]
        for events in targets:
            events.put(("shutdown", None))

    # models

    def _load_weights(self, request: EvalRequest):
        return load_request_model(request, allow_paths=self.config.allow_model_paths)

    def _transition(self, job: JobRecord, target: JobState) -> None:
        """Move ``job`` to ``target`` and update the job metrics."""
        previous = job.state
        job.transition(target)
        duration_s = None
        if target.is_terminal() and job.started_at is not None:
            duration_s = job.finished_at - job.started_at
        self.metrics.record_job_transition(job.kind.value, job.request["task"], previous.value, target.value,
                                           duration_s)

    # dispatch

    def _dispatch_loop(self) -> None:
        logger.info("dispatcher started")
        while not self._stopping.is_set():
            try:
                self.metrics.set_workers("eval", len(self._idle) + len(self._inflight))
                self.metrics.set_workers("training", len(self._training))
                self._admit_jobs()
                self._fill_workers()
                self._poll_training()
                refs = list(self._inflight)
                if not refs:
                    self._wake.wait(POLL_INTERVAL_S)
                    self._wake.clear()
                    continue
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=POLL_INTERVAL_S, fetch_local=True)
                for ref in ready:
                    self._handle_chunk_or_fail(ref)
            except Exception:  # noqa: BLE001 - the dispatcher must outlive one bad job
                logger.exception("dispatcher iteration failed; continuing")
                time.sleep(POLL_INTERVAL_S)
        logger.info("dispatcher stopped")

    def _admit_jobs(self) -> None:
        """Turn queued and resumed jobs of the store into runs."""
        for job in reversed(self.store.list_jobs(self.config.max_active_jobs, [JobState.QUEUED, JobState.RUNNING])):
            if job.job_id in self._runs or job.job_id in self._training:
                continue
            try:
                if job.kind == JobKind.EVAL:
                    self._admit_eval(job)
                else:
                    self._admit_training(job)
            except Exception as error:  # noqa: BLE001 - any failure to plan a job fails that job only
                logger.exception("job %s failed to start", job.job_id)
                self._fail(job, f"failed to start: {error}")

    def _admit_eval(self, job: JobRecord) -> None:
        request = EvalRequest.from_dict(job.request)
        weights = self._load_weights(request)
        units = plan_units(request)
        run = _EvalRun(job, request, units, weights.sha256(), self.store.load_rollouts(job.job_id),
                       self.store.load_checkpoints(job.job_id))
        with self._lock:
            if self.get(job.job_id).state.is_terminal():
                return
            if job.state == JobState.QUEUED:
                self._transition(job, JobState.RUNNING)
            self._runs[job.job_id] = run
            self.store.save_job(job)
        self._publish(job.job_id, "job", job)
        self._enter_step(run, 0)

    def _enter_step(self, run: _EvalRun, step: int) -> None:
        """Queue the units of length ``step``, or finish the job if the search is over."""
        while True:
            run.step = step
            lengths = run.request.lengths()
            if step > 0 and search_stopped(run.request, run.units, run.results, step - 1):
                self._finish_eval(run)
                return
            if step >= len(lengths):
                self._finish_eval(run)
                return
            todo = [unit.index for unit in run.units if unit.step == step and unit.index not in run.results]
            if todo:
                run.continuing.extend(index for index in todo if index in run.checkpoints)
                run.pending.extend(index for index in todo if index not in run.checkpoints)
                self._update_progress(run)
                return
            step += 1

    def _fill_workers(self) -> None:
        chunk_steps, chunk_seconds = self.config.workers.chunk_steps, self.config.workers.chunk_seconds
        while self._idle:
            picked = None
            with self._lock:
                for run in self._runs.values():
                    queue_ = run.continuing if run.continuing else run.pending
                    if queue_:
                        picked = (run, queue_.popleft())
                        break
            if picked is None:
                return
            run, index = picked
            unit = run.units[index]
            payload = {
                "task": run.request.task, "a": str(unit.a), "b": str(unit.b), "model": run.request.model,
                "sha256": run.sha256, "dtype": run.request.dtype, "step_budget": run.request.step_budget,
            }
            state = run.checkpoints.get(index, (0, None))[1]
            worker = self._idle.pop()
            ref = worker.run_chunk.remote(payload, state, chunk_steps, chunk_seconds)
            self._inflight[ref] = (worker, run.job.job_id, index)
            run.inflight.add(index)

    def _handle_chunk_or_fail(self, ref) -> None:
        """Handle a finished chunk; an unexpected error fails its job instead of stalling it."""
        _, job_id, index = self._inflight[ref]
        try:
            self._handle_chunk(ref)
        except Exception as error:  # noqa: BLE001 - one bad chunk fails its own job, never the dispatcher
            logger.exception("handling a chunk of job %s, pair %d failed", job_id, index)
            entry = self._inflight.pop(ref, None)
            if entry is not None:
                self._idle.append(entry[0])
            with self._lock:
                run = self._runs.get(job_id)
            if run is not None:
                self._fail(run.job, f"internal error while handling pair {index}: {error}")

    def _handle_chunk(self, ref) -> None:
        worker, job_id, index = self._inflight.pop(ref)
        try:
            reply = ray.get(ref)
        except ray.exceptions.RayError as error:
            reply = None
            failure = error
        if reply is None and isinstance(failure, ray.exceptions.RayActorError):
            # Ray gave up on the actor (its restarts are spent, or it was killed for memory): replace it
            ray.kill(worker)
            worker = RolloutWorker.options(**rollout_worker_options(self.config.workers)).remote()
            logger.warning("replaced a dead rollout worker: %s", str(failure).splitlines()[0])
            # The replacement is a new actor, so its replies never carry "restarted": count it here.
            self.metrics.record_worker_restart("eval")
        self._idle.append(worker)
        with self._lock:
            run = self._runs.get(job_id)
        if run is None:
            return  # cancelled while the chunk ran
        run.inflight.discard(index)
        if reply is None:
            run.failures[index] += 1
            logger.error("chunk of job %s, pair %d failed (%d of %d): %s", job_id, index, run.failures[index],
                         MAX_CHUNK_FAILURES, str(failure).splitlines()[0])
            if run.failures[index] >= MAX_CHUNK_FAILURES:
                self._fail(run.job, f"rollout of pair {index} failed {run.failures[index]} times on workers; "
                                    f"last error: {str(failure).splitlines()[0]}")
            else:
                run.continuing.appendleft(index)  # resumes from its last checkpoint, if any
            return
        # The worker reports the rollout's total steps, so the chunk's own steps are the difference.
        self.metrics.record_rollout_steps(run.request.task, reply["steps"] - run.checkpoints.get(index, (0, None))[0])
        if reply.get("restarted"):
            self.metrics.record_worker_restart("eval")
        if reply["status"] == "running":
            stored = self._store_with_retry(
                lambda: self.store.save_checkpoint(job_id, index, reply["steps"], reply["state"]),
                f"the checkpoint of job {job_id}, pair {index}",
            )
            if not stored:
                return  # stopping: the pair resumes from its previous checkpoint on the next start
            run.checkpoints[index] = (reply["steps"], reply["state"])
            run.continuing.append(index)
            self._update_progress(run)
            return

        unit = run.units[index]
        result = {"index": index, "check": unit.check, "digits": unit.digits, **reply["result"]}
        with self._lock:
            if job_id not in self._runs:
                return
        if not self._store_with_retry(lambda: self.store.save_rollout(job_id, index, result),
                                      f"the result of job {job_id}, pair {index}"):
            return  # stopping: the pair reruns from its last checkpoint on the next start
        run.results[index] = result
        self.metrics.record_rollout_finished(run.request.task, result["outcome"])
        run.checkpoints.pop(index, None)
        self._publish(job_id, "rollout", {"a": str(unit.a), "b": str(unit.b), **result})
        self._update_progress(run)
        step_units = [u.index for u in run.units if u.step == run.step]
        if all(i in run.results for i in step_units):
            self._enter_step(run, run.step + 1)

    def _store_with_retry(self, write, record: str) -> bool:
        """Call ``write`` until the store accepts it; return False if the manager stops first.

        A failed write (disk full, I/O error) blocks dispatching instead of
        dropping the finished chunk, so no result is ever acknowledged and lost.
        """
        attempts = 0
        while True:
            try:
                write()
            except StoreError as error:
                attempts += 1
                if attempts == 1 or attempts % 60 == 0:
                    logger.error("cannot store %s (attempt %d): %s; retrying every %.0f s", record, attempts, error,
                                 STORE_RETRY_S)
                if self._stopping.wait(STORE_RETRY_S):
                    return False
                continue
            if attempts:
                logger.info("stored %s after %d failed attempts", record, attempts)
            return True

    def _update_progress(self, run: _EvalRun) -> None:
        done = sum(result["steps"] for result in run.results.values())
        running = sum(steps for steps, _ in run.checkpoints.values())
        remaining = sum(estimate_steps(run.request.task, unit.a, unit.b)
                        for unit in run.units if unit.index not in run.results)
        run.job.progress = {
            "steps_done": done + running, "steps_expected": done + max(remaining, running),
            "rollouts_done": len(run.results), "rollouts_total": len(run.units),
        }
        with self._lock:
            if run.job.job_id in self._runs:
                try:
                    self.store.save_job(run.job)
                except StoreError as error:
                    # Progress is rewritten after the next chunk, so a missed write loses nothing.
                    logger.warning("cannot store the progress of job %s: %s", run.job.job_id, error)
        self._publish(run.job.job_id, "progress", run.job.progress)

    def _finish_eval(self, run: _EvalRun) -> None:
        wall_seconds = time.time() - (run.job.started_at or run.job.created_at)
        workers = len(self._idle) + len(self._inflight)
        report = build_report(run.request, run.sha256, run.units, run.results, wall_seconds, workers)
        with self._lock:
            if self._runs.pop(run.job.job_id, None) is None:
                return
            run.job.report = report
            self._transition(run.job, JobState.SUCCEEDED)
        if not self._store_with_retry(lambda: self.store.save_job(run.job), f"the report of job {run.job.job_id}"):
            return  # stopping: the stored job is still running and finishes from its stored rollouts on restart
        logger.info("job %s succeeded: plg %d, rlg %d, all correct %s", run.job.job_id, report["plg"],
                    report["rlg"], report["all_correct"])
        self._publish(run.job.job_id, "job", run.job)

    def _fail(self, job: JobRecord, error: str) -> None:
        with self._lock:
            self._runs.pop(job.job_id, None)
            self._training.pop(job.job_id, None)
            current = self.store.load_job(job.job_id)
            if current is None or current.state.is_terminal():
                return
            current.error = error
            self._transition(current, JobState.FAILED)
            self.store.save_job(current)
        self._publish(job.job_id, "job", current)
