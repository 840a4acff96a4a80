"""Dispatch of training jobs: one training actor per job, polled for progress.

:class:`TrainingJobsMixin` is part of :class:`dfst.server.manager.JobManager`;
it uses the manager's lock, store, metrics and event publishing.
"""

from __future__ import annotations

import logging
import pathlib
import time

import ray
from dfst.server.jobs import JobRecord, JobState
from dfst.workers import models
from dfst.workers.actors import start_training_worker

logger = logging.getLogger(__name__)

TRAINING_POLL_INTERVAL_S = 1.0  # interval between training progress polls


class TrainingJobsMixin:
    """Training-job methods of the job manager."""

    def _training_dir(self, job: JobRecord) -> pathlib.Path:
        name = job.request["model_name"] or f"{job.request['task']}-{job.job_id[:8]}"
        return self.store.data_dir / "training" / name

    def _admit_training(self, job: JobRecord) -> None:
        config = {**job.request["config"], "task": job.request["task"]}
        actor = start_training_worker(self.config.workers)
        # train() resumes from the state saved in its folder, so a resumed job continues where it stopped.
        ref = actor.train.remote(config, str(self._training_dir(job)))
        with self._lock:
            if job.state == JobState.QUEUED:
                self._transition(job, JobState.RUNNING)
            job.progress = {"iterations_total": int(config.get("iterations", 0))}
            self.store.save_job(job)
            self._training[job.job_id] = (actor, ref, 0.0)
        self._publish(job.job_id, "job", job)

    def _poll_training(self) -> None:
        for job_id, (actor, ref, polled) in list(self._training.items()):
            ready, _ = ray.wait([ref], timeout=0)
            job = self.get(job_id)
            if ready:
                self._finish_training(job, actor, ref)
                continue
            if time.monotonic() - polled < TRAINING_POLL_INTERVAL_S:
                continue
            record = ray.get(actor.progress.remote(), timeout=10)
            with self._lock:
                if job_id not in self._training:
                    continue
                self._training[job_id] = (actor, ref, time.monotonic())
                if record:
                    iterations_before = int(job.progress.get("iterations_done", 0))
                    job.progress = {**job.progress, "iterations_done": int(record.get("iteration", 0)),
                                    "loss": float(record.get("loss", 0.0))}
                    self.store.save_job(job)
                    self.metrics.record_training_progress(
                        job.request["task"], max(job.progress["iterations_done"] - iterations_before, 0),
                        job.progress["loss"],
                    )
            if record:
                self._publish(job_id, "progress", job.progress)

    def _finish_training(self, job: JobRecord, actor, ref) -> None:
        try:
            result = ray.get(ref)
        except ray.exceptions.RayError as error:
            logger.error("training job %s failed: %s", job.job_id, error)
            self._fail(job, f"training failed: {error}")
            ray.kill(actor)
            return
        ray.kill(actor)
        with self._lock:
            if self._training.pop(job.job_id, None) is None:
                return
            if not result.get("completed", True):
                return  # stopped by a cancellation, already recorded
            name = self._training_dir(job).name
            checkpoint = str(models.save_user_model(name, *models.load_model(result["model_path"])))
            job.report = {
                "model_name": name, "checkpoint_path": checkpoint,
                "final_loss": float(result.get("final_loss", 0.0)), "iterations": int(result.get("iterations_done", 0)),
            }
            # Iterations after the last progress poll are counted here, before the loss series goes away.
            self.metrics.record_training_progress(
                job.request["task"], max(job.report["iterations"] - int(job.progress.get("iterations_done", 0)), 0),
                job.report["final_loss"],
            )
            self._transition(job, JobState.SUCCEEDED)
            self.store.save_job(job)
        self._publish(job.job_id, "job", job)
