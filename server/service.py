"""The DfstService servicer: request checks and status codes around the job manager."""

from __future__ import annotations

import json
import logging
import queue

import grpc
from dfst.server import convert
from dfst.server.manager import JobConflictError, JobManager, JobNotFoundError, QueueFullError, ShuttingDownError
from dfst.server.plan import InvalidRequestError, validate_eval_request
from dfst.workers import models

from dfst.experts import TASKS
from dfst.v1 import service_pb2, service_pb2_grpc

logger = logging.getLogger(__name__)

DEFAULT_LIST_LIMIT = 100
WATCH_POLL_S = 0.5  # interval at which a watch checks that its client is still connected

_STATUS = {
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    JobNotFoundError: grpc.StatusCode.NOT_FOUND,
    JobConflictError: grpc.StatusCode.FAILED_PRECONDITION,
    QueueFullError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ShuttingDownError: grpc.StatusCode.UNAVAILABLE,
}


def _abort(context: grpc.ServicerContext, error: Exception):
    code = next(code for kind, code in _STATUS.items() if isinstance(error, kind))
    logger.info("rejected request: %s: %s", code.name, error)
    context.abort(code, str(error))


class DfstServicer(service_pb2_grpc.DfstServiceServicer):
    """Maps each rpc to the job manager and each failure to a gRPC status code."""

    def __init__(self, manager: JobManager):
        self.manager = manager

    def SubmitEval(self, request, context):
        spec = request.spec
        try:
            length = spec.WhichOneof("length")
            request_ = validate_eval_request(
                task=spec.task, digits=spec.digits if length == "digits" else None,
                search=(spec.search.min, spec.search.max) if length == "search" else None,
                checks=[convert.CHECK_NAMES[check] for check in spec.checks if check in convert.CHECK_NAMES],
                seed=spec.seed, model=spec.model,
                dtype=convert.DTYPE_NAMES.get(spec.dtype, "float32"), step_budget=spec.step_budget,
                default_model=models.default_model_name,
            )
            job = self.manager.submit_eval(request_)
        except (InvalidRequestError, QueueFullError, ShuttingDownError) as error:
            _abort(context, error)
        return service_pb2.SubmitEvalResponse(job=convert.job_to_proto(job))

    def SubmitTraining(self, request, context):
        spec = request.spec
        try:
            if spec.task not in TASKS:
                raise InvalidRequestError(f"unknown task {spec.task!r}; known tasks are {', '.join(TASKS)}")
            try:
                config = json.loads(spec.config_json or "{}")
            except json.JSONDecodeError as error:
                raise InvalidRequestError(f"config_json is not valid JSON: {error}") from error
            if not isinstance(config, dict):
                raise InvalidRequestError(f"config_json must be a JSON object, got {type(config).__name__}")
            job = self.manager.submit_training(spec.task, config, spec.model_name)
        except (InvalidRequestError, QueueFullError, ShuttingDownError) as error:
            _abort(context, error)
        return service_pb2.SubmitTrainingResponse(job=convert.job_to_proto(job))

    def GetJob(self, request, context):
        try:
            job = self.manager.get(request.job_id)
        except JobNotFoundError as error:
            _abort(context, error)
        return service_pb2.GetJobResponse(job=convert.job_to_proto(job))

    def ListJobs(self, request, context):
        states = [convert.STATE_NAMES[state] for state in request.states if state in convert.STATE_NAMES]
        jobs = self.manager.list(request.limit or DEFAULT_LIST_LIMIT, states or None)
        return service_pb2.ListJobsResponse(jobs=[convert.job_to_proto(job) for job in jobs])

    def CancelJob(self, request, context):
        try:
            job = self.manager.cancel(request.job_id)
        except (JobNotFoundError, JobConflictError) as error:
            _abort(context, error)
        return service_pb2.CancelJobResponse(job=convert.job_to_proto(job))

    def ListModels(self, request, context):
        entries = []
        for model in models.list_models():
            message = convert.model_to_proto(model, "")
            if request.task and message.task != request.task:
                continue
            message.is_default = bool(message.task) and message.name == models.default_model_name(message.task)
            entries.append(message)
        entries.sort(key=lambda message: (message.task, message.name))
        return service_pb2.ListModelsResponse(models=entries)

    def WatchJob(self, request, context):
        events = self.manager.subscribe(request.job_id)
        try:
            try:
                job = self.manager.get(request.job_id)
            except JobNotFoundError as error:
                _abort(context, error)
            yield service_pb2.WatchJobResponse(job=convert.job_to_proto(job))
            for row in self.manager.rollouts(request.job_id).values():
                yield service_pb2.WatchJobResponse(rollout=convert.rollout_to_proto(row))
            if job.state.is_terminal():
                return
            while context.is_active():
                try:
                    kind, payload = events.get(timeout=WATCH_POLL_S)
                except queue.Empty:
                    continue
                if kind == "shutdown":
                    context.abort(
                        grpc.StatusCode.UNAVAILABLE, "the server is shutting down; watch again once it is back"
                    )
                if kind == "job":
                    yield service_pb2.WatchJobResponse(job=convert.job_to_proto(payload))
                    if payload.state.is_terminal():
                        return
                elif kind == "progress":
                    yield service_pb2.WatchJobResponse(progress=convert.progress_to_proto(payload))
                else:
                    yield service_pb2.WatchJobResponse(rollout=convert.rollout_to_proto(payload))
        finally:
            self.manager.unsubscribe(request.job_id, events)

