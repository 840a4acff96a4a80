"""Ray actors that run rollout chunks and training jobs.

A :class:`RolloutWorker` runs one chunk of one rollout per call.  It starts
the rollout or restores it from the state bytes of the previous chunk.  It
then advances it by at most ``chunk_steps`` steps, ending the chunk early once
it has run for ``chunk_seconds``, and returns the new state bytes or the result.
The server stores those bytes after every chunk, so a worker that Ray
restarts (``max_restarts``) or a task that Ray retries (``max_task_retries``)
resumes from the last chunk, never from step 0.

NOTE: the rollout engine runs on CPUs only; ``num_gpus`` and
``accelerator_type`` only steer Ray's placement on clusters that have them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time

import ray

from dfst.weights import DFSTWeights

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    """Placement and chunking of the rollout workers."""

    num_workers: int = 0  # rollout actors; 0 means one per CPU that Ray reports
    num_cpus: float = 1.0  # CPUs reserved per rollout actor
    num_gpus: float = 0.0  # GPUs reserved per rollout actor (placement only; the engine is CPU-only)
    accelerator_type: str | None = None  # Ray accelerator type such as "A100", or None for any node
    chunk_steps: int = 1_000_000_000  # maximum rollout steps per chunk
    # A chunk ends after this many wall seconds of stepping, so progress reports, checkpoints and
    # cancellation checks come about this often whatever the model's speed (checked between slices).
    chunk_seconds: float = 1.0
    max_restarts: int = 3  # times Ray restarts a dead actor
    max_task_retries: int = 3  # times Ray retries a chunk on a restarted actor
    training_num_cpus: float = 0.0  # CPUs reserved by a training actor; 0 shares those of the rollout actors


def _load_weights(model: str) -> tuple[DFSTWeights, dict]:
    from dfst.workers.models import load_model

    return load_model(model)


# Ray (2.x) starts worker processes at niceness 15, so any other busy process on the machine starves the
# rollouts: under two busy processes on 2 cores a 5000-digit add10 rollout took 1.7 s of wall time for
# 0.07 s of CPU time.  Local instances that dfst starts pass this to ray.init(_system_config=...).
LOCAL_RAY_SYSTEM_CONFIG = {"worker_niceness": 0}

# Steps of the first slice of a chunk.  Later slices are sized by the measured rate to end near chunk_seconds.
FIRST_SLICE_STEPS = 1_000_000


@ray.remote
class RolloutWorker:
    """Runs rollout chunks; keeps each model's weights loaded, keyed by sha256."""

    def __init__(self):
        os.environ.setdefault("NUMBA_NUM_THREADS", "1")
        self._weights: dict[str, DFSTWeights] = {}
        # True in an actor process that Ray started again after the previous one died;
        # the next reply carries it once, for the server's restart counter.
        self._restart_unreported = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        if self._restart_unreported:
            logger.warning("rollout worker restarted by Ray (pid %d)", os.getpid())

    def _weights_for(self, model: str, sha256: str, dtype: str) -> DFSTWeights:
        key = f"{sha256}:{dtype}"
        if key not in self._weights:
            weights, _ = _load_weights(model)
            if weights.sha256() != sha256:
                raise RuntimeError(f"model {model!r} changed on disk: sha256 {weights.sha256()}, expected {sha256}")
            self._weights[key] = weights.astype(dtype)
            logger.info("worker %d loaded model %s (sha256 %s, %s)", os.getpid(), model, sha256[:12], dtype)
        return self._weights[key]

    def run_chunk(self, unit: dict, state_bytes: bytes | None, chunk_steps: int,
                  chunk_seconds: float | None = None) -> dict:
        """Advance one rollout by at most ``chunk_steps`` steps, stopping early after ``chunk_seconds``.

        ``unit`` has task, a, b (decimal strings), model, sha256, dtype and step_budget.
        Returns {"status", "steps", "state", "restarted"} while running, and adds "result" once finished.
        "restarted" is true in the first reply after Ray restarted this actor.
        """
        from dfst.workers import engine

        weights = self._weights_for(unit["model"], unit["sha256"], unit["dtype"])
        if state_bytes is None:
            state = engine.start_rollout(
                weights, unit["task"], int(unit["a"]), int(unit["b"]), dtype=unit["dtype"],
                step_budget=unit["step_budget"] or None,
            )
        else:
            state = engine.state_from_bytes(state_bytes)
        state = _advance_for(engine, weights, state, chunk_steps, chunk_seconds)
        restarted, self._restart_unreported = self._restart_unreported, False
        if state.status == "running":
            return {"status": "running", "steps": int(state.steps), "state": state.to_bytes(), "restarted": restarted}
        result = engine.finish(state).to_dict()
        return {"status": state.status, "steps": int(state.steps), "state": None, "result": result,
                "restarted": restarted}

    def pid(self) -> int:
        return os.getpid()


def _advance_for(engine, weights, state, max_steps: int, seconds: float | None):
    """Advance ``state`` by at most ``max_steps`` steps in slices, until ``seconds`` of wall time have passed."""
    if seconds is None:
        return engine.advance(weights, state, max_steps)
    started, first_step = time.monotonic(), state.steps
    slice_steps = min(max_steps, FIRST_SLICE_STEPS)
    while True:
        state = engine.advance(weights, state, slice_steps)
        done = state.steps - first_step
        elapsed = time.monotonic() - started
        if state.status != "running" or done >= max_steps or elapsed >= seconds:
            return state
        rate = done / max(elapsed, 1e-6)
        slice_steps = int(min(max_steps - done, max(FIRST_SLICE_STEPS, rate * (seconds - elapsed))))


@ray.remote
class TrainingWorker:
    """Runs dfst.training.train in a thread; the server polls progress and can cancel."""

    def __init__(self):
        self._lock = threading.Lock()
        self._progress: dict = {}
        self._stop = threading.Event()

    def train(self, config: dict, out_dir: str) -> dict:
        """Train with ``config`` (TrainConfig fields), save into ``out_dir`` and return the result fields."""
        from dfst import training

        if not hasattr(training, "train") or not hasattr(training, "TrainConfig"):
            raise RuntimeError("training is not available: dfst.training has no train() or TrainConfig in this build")

        def on_progress(event) -> None:
            values = dataclasses.asdict(event) if dataclasses.is_dataclass(event) else dict(event)
            with self._lock:
                self._progress = values

        result = training.train(training.TrainConfig.from_json(config), out_dir, progress=on_progress,
                                should_stop=self._stop.is_set)
        values = dataclasses.asdict(result) if dataclasses.is_dataclass(result) else dict(vars(result))
        return {key: value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
                for key, value in values.items()}

    def progress(self) -> dict:
        with self._lock:
            return dict(self._progress)

    def cancel(self) -> None:
        self._stop.set()


def rollout_worker_options(config: WorkerConfig) -> dict:
    """Return the Ray actor options of a rollout worker under ``config``."""
    options = {
        "num_cpus": config.num_cpus, "num_gpus": config.num_gpus,
        "max_restarts": config.max_restarts, "max_task_retries": config.max_task_retries,
    }
    if config.accelerator_type:
        options["accelerator_type"] = config.accelerator_type
    return options


def start_rollout_workers(config: WorkerConfig) -> list:
    """Create the rollout actors; their number is config.num_workers or Ray's CPU count."""
    count = config.num_workers or max(1, int(ray.cluster_resources().get("CPU", 1) // max(config.num_cpus, 1e-9)))
    options = rollout_worker_options(config)
    workers = [RolloutWorker.options(**options).remote() for _ in range(count)]
    logger.info("started %d rollout workers (%s)", count, options)
    return workers


def start_training_worker(config: WorkerConfig):
    """Create one training actor, which serves progress() and cancel() while train() runs."""
    return TrainingWorker.options(num_cpus=config.training_num_cpus, max_concurrency=4).remote()
