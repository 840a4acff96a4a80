"""The DfstService servicer: request checks and status codes around the job manager."""

from __future__ import annotations

import json
import logging
import math
import queue
import re
import types
import typing

import grpc
from dfst.server import convert
from dfst.server.manager import JobConflictError, JobManager, JobNotFoundError, QueueFullError, ShuttingDownError
from dfst.server.plan import InvalidRequestError, validate_eval_request
from dfst.server.store import StoreError, StoreFullError
from dfst.workers import models

from dfst.experts import TASKS
from dfst.v1 import service_pb2, service_pb2_grpc

logger = logging.getLogger(__name__)

DEFAULT_LIST_LIMIT = 100
WATCH_POLL_S = 0.5  # interval at which a watch checks that its client is still connected
# Names of trained models, as the model registry accepts them; no separators, so no path leaves the registry.
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

_STATUS = {
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    JobNotFoundError: grpc.StatusCode.NOT_FOUND,
    JobConflictError: grpc.StatusCode.FAILED_PRECONDITION,
    QueueFullError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ShuttingDownError: grpc.StatusCode.UNAVAILABLE,
    StoreFullError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    StoreError: grpc.StatusCode.UNAVAILABLE,
}


def _enum_names(values, names: dict, field: str) -> list[str]:
    """Map enum values to names, skipping the zero value; raise InvalidRequestError for values the contract lacks."""
    unknown = [value for value in values if value != 0 and value not in names]
    if unknown:
        allowed = ", ".join(f"{value} ({name})" for value, name in sorted(names.items()))
        raise InvalidRequestError(f"{field} has unknown value {unknown[0]}; allowed values are {allowed}")
    return [names[value] for value in values if value != 0]


def _validate_training_config(task: str, config: dict) -> None:
    """Raise InvalidRequestError unless ``config`` makes a valid TrainConfig for ``task``."""
    try:
        from dfst.training import TrainConfig, TrainingError
    except ImportError:
        return  # NOTE: without dfst.training the job fails on its worker instead of at submission
    hints = typing.get_type_hints(TrainConfig)
    for name, value in config.items():
        if name in hints and not _json_value_fits(value, hints[name]):
            expected = getattr(hints[name], "__name__", str(hints[name]))
            raise InvalidRequestError(f"invalid training config: {name}={value!r} is not a valid {expected}")
    try:
        TrainConfig.from_json({**config, "task": task}).validate()
    except (TrainingError, TypeError, ValueError) as error:
        raise InvalidRequestError(f"invalid training config: {error}") from error


def _json_value_fits(value, annotation) -> bool:
    """Return True if a JSON value has the annotated type; integers must also fit in a signed 64-bit integer."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(_json_value_fits(value, option) for option in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if typing.get_origin(annotation) is tuple:
        item_type = typing.get_args(annotation)[0]
        return isinstance(value, list) and all(_json_value_fits(item, item_type) for item in value)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, annotation)


# Exceptions of model resolution: the registry's ModelNotFoundError, ValueError subclasses for an invalid
# name or a broken checkpoint file, and OSError for a path the server cannot read.
MODEL_ERRORS = (models.ModelNotFoundError, ValueError, OSError)


# Longest status message sent back, in characters.  Messages echo request
# values, and a status message must fit in gRPC's trailing metadata (8 KiB by
# default) or the client sees RESOURCE_EXHAUSTED instead of the real code.
MAX_STATUS_MESSAGE_CHARS = 1000


def _shorten(message: str) -> str:
    """Return ``message``, with its middle elided if it is longer than MAX_STATUS_MESSAGE_CHARS."""
    if len(message) <= MAX_STATUS_MESSAGE_CHARS:
        return message
    keep = (MAX_STATUS_MESSAGE_CHARS - 20) // 2
    return f"{message[:keep]} …[{len(message) - 2 * keep} characters elided]… {message[-keep:]}"


def _abort(context: grpc.ServicerContext, error: Exception):
    code = next(code for kind, code in _STATUS.items() if isinstance(error, kind))
    message = _shorten(str(error))
    logger.info("rejected request: %s: %s", code.name, message)
    context.abort(code, message)


def _default_model_or_none(task: str) -> str | None:
    try:
        return models.default_model_name(task)
    except models.ModelNotFoundError:
        return None


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
                checks=_enum_names(spec.checks, convert.CHECK_NAMES, "checks"),
                seed=spec.seed, model=spec.model,
                dtype=(_enum_names([spec.dtype], convert.DTYPE_NAMES, "dtype") or ["float32"])[0],
                step_budget=spec.step_budget,
                default_model=models.default_model_name,
            )
            job = self.manager.submit_eval(request_)
        except (InvalidRequestError, QueueFullError, ShuttingDownError, StoreError) as error:
            _abort(context, error)
        except MODEL_ERRORS as error:
            _abort(context, InvalidRequestError(f"invalid model {spec.model!r}: {error}"))
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
            if spec.model_name and not MODEL_NAME_PATTERN.fullmatch(spec.model_name):
                raise InvalidRequestError(
                    f"invalid model name {spec.model_name!r}; use 1 to 64 letters, digits, '_', '.' or '-', "
                    "starting with a letter or digit"
                )
            _validate_training_config(spec.task, config)
            job = self.manager.submit_training(spec.task, config, spec.model_name)
        except (InvalidRequestError, QueueFullError, ShuttingDownError, StoreError) as error:
            _abort(context, error)
        return service_pb2.SubmitTrainingResponse(job=convert.job_to_proto(job))

    def GetJob(self, request, context):
        try:
            job = self.manager.get(request.job_id)
        except JobNotFoundError as error:
            _abort(context, error)
        return service_pb2.GetJobResponse(job=convert.job_to_proto(job))

    def ListJobs(self, request, context):
        try:
            states = _enum_names(request.states, convert.STATE_NAMES, "states")
        except InvalidRequestError as error:
            _abort(context, error)
        jobs = self.manager.list(request.limit or DEFAULT_LIST_LIMIT, states or None)
        return service_pb2.ListJobsResponse(jobs=[convert.job_to_proto(job) for job in jobs])

    def CancelJob(self, request, context):
        try:
            job = self.manager.cancel(request.job_id)
        except (JobNotFoundError, JobConflictError, StoreError) as error:
            _abort(context, error)
        return service_pb2.CancelJobResponse(job=convert.job_to_proto(job))

    def ListModels(self, request, context):
        entries = []
        for model in models.list_models():
            message = convert.model_to_proto(model, "")
            if request.task and message.task != request.task:
                continue
            message.is_default = bool(message.task) and message.name == _default_model_or_none(message.task)
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

