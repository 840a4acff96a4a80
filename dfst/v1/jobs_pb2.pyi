import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class JobKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_KIND_UNSPECIFIED: _ClassVar[JobKind]
    JOB_KIND_EVAL: _ClassVar[JobKind]
    JOB_KIND_TRAINING: _ClassVar[JobKind]

class LengthCheck(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LENGTH_CHECK_UNSPECIFIED: _ClassVar[LengthCheck]
    LENGTH_CHECK_PLG: _ClassVar[LengthCheck]
    LENGTH_CHECK_RLG: _ClassVar[LengthCheck]

class Dtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[Dtype]
    DTYPE_FLOAT32: _ClassVar[Dtype]
    DTYPE_FLOAT64: _ClassVar[Dtype]

class RolloutOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLLOUT_OUTCOME_UNSPECIFIED: _ClassVar[RolloutOutcome]
    ROLLOUT_OUTCOME_CORRECT: _ClassVar[RolloutOutcome]
    ROLLOUT_OUTCOME_WRONG: _ClassVar[RolloutOutcome]
    ROLLOUT_OUTCOME_BUDGET_EXCEEDED: _ClassVar[RolloutOutcome]
    ROLLOUT_OUTCOME_NON_FINITE: _ClassVar[RolloutOutcome]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_KIND_UNSPECIFIED: JobKind
JOB_KIND_EVAL: JobKind
JOB_KIND_TRAINING: JobKind
LENGTH_CHECK_UNSPECIFIED: LengthCheck
LENGTH_CHECK_PLG: LengthCheck
LENGTH_CHECK_RLG: LengthCheck
DTYPE_UNSPECIFIED: Dtype
DTYPE_FLOAT32: Dtype
DTYPE_FLOAT64: Dtype
ROLLOUT_OUTCOME_UNSPECIFIED: RolloutOutcome
ROLLOUT_OUTCOME_CORRECT: RolloutOutcome
ROLLOUT_OUTCOME_WRONG: RolloutOutcome
ROLLOUT_OUTCOME_BUDGET_EXCEEDED: RolloutOutcome
ROLLOUT_OUTCOME_NON_FINITE: RolloutOutcome

class DigitRange(_message.Message):
    __slots__ = ("min", "max")
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    min: int
    max: int
    def __init__(self, min: _Optional[int] = ..., max: _Optional[int] = ...) -> None: ...

class EvalSpec(_message.Message):
    __slots__ = ("task", "digits", "search", "checks", "seed", "model", "dtype", "step_budget")
    TASK_FIELD_NUMBER: _ClassVar[int]
    DIGITS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    STEP_BUDGET_FIELD_NUMBER: _ClassVar[int]
    task: str
    digits: int
    search: DigitRange
    checks: _containers.RepeatedScalarFieldContainer[LengthCheck]
    seed: int
    model: str
    dtype: Dtype
    step_budget: int
    def __init__(self, task: _Optional[str] = ..., digits: _Optional[int] = ..., search: _Optional[_Union[DigitRange, _Mapping]] = ..., checks: _Optional[_Iterable[_Union[LengthCheck, str]]] = ..., seed: _Optional[int] = ..., model: _Optional[str] = ..., dtype: _Optional[_Union[Dtype, str]] = ..., step_budget: _Optional[int] = ...) -> None: ...

class TrainingSpec(_message.Message):
    __slots__ = ("task", "config_json", "model_name")
    TASK_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    task: str
    config_json: str
    model_name: str
    def __init__(self, task: _Optional[str] = ..., config_json: _Optional[str] = ..., model_name: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("steps_done", "steps_expected", "rollouts_done", "rollouts_total", "iterations_done", "iterations_total", "loss")
    STEPS_DONE_FIELD_NUMBER: _ClassVar[int]
    STEPS_EXPECTED_FIELD_NUMBER: _ClassVar[int]
    ROLLOUTS_DONE_FIELD_NUMBER: _ClassVar[int]
    ROLLOUTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_DONE_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    steps_done: int
    steps_expected: int
    rollouts_done: int
    rollouts_total: int
    iterations_done: int
    iterations_total: int
    loss: float
    def __init__(self, steps_done: _Optional[int] = ..., steps_expected: _Optional[int] = ..., rollouts_done: _Optional[int] = ..., rollouts_total: _Optional[int] = ..., iterations_done: _Optional[int] = ..., iterations_total: _Optional[int] = ..., loss: _Optional[float] = ...) -> None: ...

class RolloutResult(_message.Message):
    __slots__ = ("index", "check", "digits", "a", "b", "outcome", "steps", "seconds", "first_wrong_digit")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    DIGITS_FIELD_NUMBER: _ClassVar[int]
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    FIRST_WRONG_DIGIT_FIELD_NUMBER: _ClassVar[int]
    index: int
    check: LengthCheck
    digits: int
    a: str
    b: str
    outcome: RolloutOutcome
    steps: int
    seconds: float
    first_wrong_digit: int
    def __init__(self, index: _Optional[int] = ..., check: _Optional[_Union[LengthCheck, str]] = ..., digits: _Optional[int] = ..., a: _Optional[str] = ..., b: _Optional[str] = ..., outcome: _Optional[_Union[RolloutOutcome, str]] = ..., steps: _Optional[int] = ..., seconds: _Optional[float] = ..., first_wrong_digit: _Optional[int] = ...) -> None: ...

class EvalReport(_message.Message):
    __slots__ = ("all_correct", "plg", "rlg", "report_json")
    ALL_CORRECT_FIELD_NUMBER: _ClassVar[int]
    PLG_FIELD_NUMBER: _ClassVar[int]
    RLG_FIELD_NUMBER: _ClassVar[int]
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    all_correct: bool
    plg: int
    rlg: int
    report_json: str
    def __init__(self, all_correct: _Optional[bool] = ..., plg: _Optional[int] = ..., rlg: _Optional[int] = ..., report_json: _Optional[str] = ...) -> None: ...

class TrainingReport(_message.Message):
    __slots__ = ("model_name", "checkpoint_path", "final_loss", "iterations")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_PATH_FIELD_NUMBER: _ClassVar[int]
    FINAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    checkpoint_path: str
    final_loss: float
    iterations: int
    def __init__(self, model_name: _Optional[str] = ..., checkpoint_path: _Optional[str] = ..., final_loss: _Optional[float] = ..., iterations: _Optional[int] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "kind", "state", "eval", "training", "progress", "eval_report", "training_report", "error", "created_at", "started_at", "finished_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EVAL_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    EVAL_REPORT_FIELD_NUMBER: _ClassVar[int]
    TRAINING_REPORT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    kind: JobKind
    state: JobState
    eval: EvalSpec
    training: TrainingSpec
    progress: Progress
    eval_report: EvalReport
    training_report: TrainingReport
    error: str
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., kind: _Optional[_Union[JobKind, str]] = ..., state: _Optional[_Union[JobState, str]] = ..., eval: _Optional[_Union[EvalSpec, _Mapping]] = ..., training: _Optional[_Union[TrainingSpec, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., eval_report: _Optional[_Union[EvalReport, _Mapping]] = ..., training_report: _Optional[_Union[TrainingReport, _Mapping]] = ..., error: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "task", "source", "sha256", "hidden_dim", "parameters", "is_default")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_DIM_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    task: str
    source: str
    sha256: str
    hidden_dim: int
    parameters: int
    is_default: bool
    def __init__(self, name: _Optional[str] = ..., task: _Optional[str] = ..., source: _Optional[str] = ..., sha256: _Optional[str] = ..., hidden_dim: _Optional[int] = ..., parameters: _Optional[int] = ..., is_default: _Optional[bool] = ...) -> None: ...
