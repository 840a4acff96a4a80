"""Conversions between job records and dfst.v1 messages."""

from __future__ import annotations

import json

from dfst.server.jobs import JobKind, JobRecord, JobState
from google.protobuf import json_format

from dfst.v1 import jobs_pb2

STATES = {
    JobState.QUEUED: jobs_pb2.JOB_STATE_QUEUED,
    JobState.RUNNING: jobs_pb2.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: jobs_pb2.JOB_STATE_SUCCEEDED,
    JobState.FAILED: jobs_pb2.JOB_STATE_FAILED,
    JobState.CANCELLED: jobs_pb2.JOB_STATE_CANCELLED,
}
STATE_NAMES = {value: key for key, value in STATES.items()}
CHECKS = {"plg": jobs_pb2.LENGTH_CHECK_PLG, "rlg": jobs_pb2.LENGTH_CHECK_RLG}
CHECK_NAMES = {value: key for key, value in CHECKS.items()}
DTYPES = {"float32": jobs_pb2.DTYPE_FLOAT32, "float64": jobs_pb2.DTYPE_FLOAT64}
DTYPE_NAMES = {value: key for key, value in DTYPES.items()}
OUTCOMES = {
    "correct": jobs_pb2.ROLLOUT_OUTCOME_CORRECT,
    "wrong": jobs_pb2.ROLLOUT_OUTCOME_WRONG,
    "budget_exceeded": jobs_pb2.ROLLOUT_OUTCOME_BUDGET_EXCEEDED,
    "non_finite": jobs_pb2.ROLLOUT_OUTCOME_NON_FINITE,
}
OUTCOME_NAMES = {value: key for key, value in OUTCOMES.items()}


def _timestamp(message, seconds: float | None) -> None:
    if seconds is not None:
        message.FromNanoseconds(int(seconds * 1e9))


def progress_to_proto(progress: dict) -> jobs_pb2.Progress:
    fields = jobs_pb2.Progress.DESCRIPTOR.fields_by_name
    return jobs_pb2.Progress(**{key: value for key, value in progress.items() if key in fields})


def rollout_to_proto(row: dict) -> jobs_pb2.RolloutResult:
    first_wrong = row.get("first_wrong_digit")
    return jobs_pb2.RolloutResult(
        index=row["index"], check=CHECKS[row["check"]], digits=row["digits"], a=row.get("a", ""), b=row.get("b", ""),
        outcome=OUTCOMES[row["outcome"]], steps=row["steps"], seconds=row.get("seconds", 0.0),
        first_wrong_digit=-1 if first_wrong is None else first_wrong,
    )


def job_to_proto(job: JobRecord) -> jobs_pb2.Job:
    message = jobs_pb2.Job(
        job_id=job.job_id, state=STATES[job.state], progress=progress_to_proto(job.progress), error=job.error,
        kind=jobs_pb2.JOB_KIND_EVAL if job.kind == JobKind.EVAL else jobs_pb2.JOB_KIND_TRAINING,
    )
    request = job.request
    if job.kind == JobKind.EVAL:
        spec = message.eval
        spec.task = request["task"]
        if request["digits"] is not None:
            spec.digits = request["digits"]
        else:
            spec.search.min, spec.search.max = request["search_min"], request["search_max"]
        spec.checks.extend(CHECKS[check] for check in request["checks"])
        spec.seed, spec.model, spec.step_budget = request["seed"], request["model"], request["step_budget"]
        spec.dtype = DTYPES[request["dtype"]]
        if job.report is not None:
            message.eval_report.CopyFrom(jobs_pb2.EvalReport(
                all_correct=job.report["all_correct"], plg=job.report["plg"], rlg=job.report["rlg"],
                report_json=job.report["report_json"],
            ))
    else:
        message.training.task = request["task"]
        message.training.config_json = json.dumps(request["config"], sort_keys=True)
        message.training.model_name = request["model_name"]
        if job.report is not None:
            message.training_report.CopyFrom(jobs_pb2.TrainingReport(**job.report))
    _timestamp(message.created_at, job.created_at)
    _timestamp(message.started_at, job.started_at)
    _timestamp(message.finished_at, job.finished_at)
    return message


def model_to_proto(model, default_name: str) -> jobs_pb2.Model:
    """Convert a registry entry (a dict or an object with the same attributes) to a Model message."""
    values = model if isinstance(model, dict) else vars(model)
    fields = jobs_pb2.Model.DESCRIPTOR.fields_by_name
    message = jobs_pb2.Model(**{key: value for key, value in values.items() if key in fields and value is not None})
    message.is_default = message.name == default_name
    return message


def message_to_dict(message) -> dict:
    """Return a message as a JSON-ready dict with the proto field names."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
