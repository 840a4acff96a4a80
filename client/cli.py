"""dfst-client: evaluate and train DFST models through the dfst service.

Without --server or $DFST_SERVER every command starts a local Ray instance
and the same gRPC server in-process on a loopback port.

Exit codes: 0 every pair exact, 1 evaluation finished with some pair wrong,
2 usage error or invalid input, 3 service unavailable or internal failure.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import sys

import grpc
import typer
from dfst.client.connection import SERVER_ENV, ServiceUnavailableError, open_stub
from dfst.client.watch import TERMINAL_STATES, watch_job
from dfst.server import auth
from dfst.server.convert import (
    CHECK_NAMES,
    CHECKS,
    DTYPE_NAMES,
    DTYPES,
    OUTCOME_NAMES,
    STATE_NAMES,
    STATES,
    job_to_proto,
    message_to_dict,
)
from dfst.server.metrics import DEFAULT_METRICS_PORT
from dfst.server.plan import MAX_DIGITS
from dfst.server.service import DEFAULT_LIST_LIMIT
from dfst.server.store import DATA_DIR_ENV
from rich.console import Console
from rich.table import Table

import dfst
from dfst.v1 import jobs_pb2, service_pb2

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_WRONG = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
RPC_TIMEOUT_S = 30.0  # deadline of every unary call
# Ranges of the uint32 and uint64 request fields; larger options fail as usage errors, not in protobuf.
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
_USAGE_CODES = (
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAUTHENTICATED,
)

app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False, help=__doc__)
jobs_app = typer.Typer(help="List, show, watch and cancel jobs.")
models_app = typer.Typer(help="List models.")
app.add_typer(jobs_app, name="jobs")
app.add_typer(models_app, name="models")

ServerOption = typer.Option(
    None, "--server", help="Server address HOST:PORT; overrides the root --server; default $DFST_SERVER, else embedded."
)


class Check(enum.StrEnum):
    """Length-generalization checks a request can select."""

    plg = "plg"
    rlg = "rlg"


class Dtype(enum.StrEnum):
    """Floating-point types of a rollout."""

    float32 = "float32"
    float64 = "float64"


CheckOption = typer.Option(None, "--check", help="plg or rlg; repeatable; default both.")
DtypeOption = typer.Option(Dtype.float32, "--dtype", help="Floating-point type of the rollouts.")
JsonOption = typer.Option(False, "--json", help="Print one JSON document on stdout and no progress bars.")
stdout = Console()
stderr = Console(stderr=True, soft_wrap=True)  # messages stay on one line for scripts and logs
# Connection settings from the root options, read by every command that calls a remote server.
_connection = {"server": None, "token_file": None, "tls_ca": None, "tls_server_name": None}


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the dfst version and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log INFO messages on stderr."),
    server: str = typer.Option(
        None, "--server", help="Server address HOST:PORT for every command; default $DFST_SERVER, else embedded."
    ),
    token_file: str = typer.Option(
        None, "--token-file", help=f"File containing the server's bearer token; default ${auth.TOKEN_ENV}."
    ),
    tls_ca: str = typer.Option(None, "--tls-ca", help="PEM root certificates; connect to --server over TLS."),
    tls_server_name: str = typer.Option(
        None, "--tls-server-name", help="Host name expected in the server's certificate; default the --server host."
    ),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _connection.update(server=server, token_file=token_file, tls_ca=tls_ca, tls_server_name=tls_server_name)
    if version:
        typer.echo(f"dfst {dfst.__version__}")
        raise typer.Exit(EXIT_OK)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(EXIT_USAGE)


def _server_address(server: str | None) -> str | None:
    """Return the target address: the command's --server, else the root --server, else $DFST_SERVER, else None."""
    return server or _connection["server"] or os.environ.get(SERVER_ENV) or None


@contextlib.contextmanager
def _service(server: str | None):
    """Yield a stub; turn connection and rpc failures into exit codes with a message on stderr."""
    try:
        token = auth.read_token(_connection["token_file"])
        address = _server_address(server)
        with open_stub(address, token, _connection["tls_ca"], _connection["tls_server_name"]) as (stub, _address):
            yield stub
    except auth.AuthConfigError as error:
        stderr.print(f"error: {error}")
        raise typer.Exit(EXIT_USAGE) from None
    except ServiceUnavailableError as error:
        stderr.print(f"error: {error}")
        raise typer.Exit(EXIT_UNAVAILABLE) from None
    except grpc.RpcError as error:
        stderr.print(f"error: {error.code().name}: {error.details()}")
        raise typer.Exit(EXIT_USAGE if error.code() in _USAGE_CODES else EXIT_UNAVAILABLE) from None


def _show_progress(as_json: bool) -> str:
    """Return the progress mode of watch_job: bars on a terminal, plain lines otherwise, none with --json."""
    if as_json:
        return "off"
    return "bars" if sys.stderr.isatty() else "lines"


def _eval_exit_code(job: jobs_pb2.Job) -> int:
    if job.state != jobs_pb2.JOB_STATE_SUCCEEDED:
        return EXIT_UNAVAILABLE
    return EXIT_OK if job.eval_report.all_correct else EXIT_WRONG



def _verdict_cell(verdict: bool | None) -> str:
    """Return a table cell for a search step's verdict: pass, FAIL, or - when not checked."""
    if verdict is None:
        return "-"
    if verdict:
        return "pass"
    return "[red]FAIL[/red]"


def _print_eval(job: jobs_pb2.Job, as_json: bool) -> None:
    report = json.loads(job.eval_report.report_json) if job.eval_report.report_json else None
    if as_json:
        verdict = {jobs_pb2.JOB_STATE_SUCCEEDED: "all_correct" if job.eval_report.all_correct else "some_wrong"}
        document = {
            "job_id": job.job_id, "state": STATE_NAMES[job.state].value,
            "verdict": verdict.get(job.state, STATE_NAMES[job.state].value),
            "plg": job.eval_report.plg, "rlg": job.eval_report.rlg, "all_correct": job.eval_report.all_correct,
            "error": job.error, "report": report,
        }
        typer.echo(json.dumps(document, sort_keys=True))
        return
    if report is None:
        stderr.print(f"job {job.job_id} {STATE_NAMES[job.state].value}: {job.error or 'no report'}")
        return

    table = Table(title=f"{report['task']} with {report['model_name']}")
    if "pairs" in report:
        # one length: an LGReport
        # "worker s" sums the rollouts' seconds on the workers. Pairs run in parallel, so the sum exceeds wall time.
        for column in ("digits", "check", "verdict", "pairs", "correct", "steps", "worker s"):
            table.add_column(column, justify="right")
        for check, passed in report["verdicts"].items():
            pairs = [pair for pair in report["pairs"] if pair["check"] == check]
            table.add_row(
                str(report["digits"]), check.upper(), "pass" if passed else "[red]FAIL[/red]", str(len(pairs)),
                str(sum(pair["outcome"] == "correct" for pair in pairs)), f"{sum(p['steps'] for p in pairs):,}",
                f"{sum(pair['seconds'] for pair in pairs):.1f}",
            )
    else:
        # a search: an LGSearchResult
        for column in ("digits", "PLG", "RLG", "steps"):
            table.add_column(column, justify="right")
        for step in report["tried"]:
            verdicts = [_verdict_cell(step[check]) for check in ("plg", "rlg")]
            table.add_row(str(step["digits"]), *verdicts, f"{step['total_steps']:,}")
    stdout.print(table)
    verdict = "every pair exact" if job.eval_report.all_correct else "[red]some pairs wrong[/red]"
    stdout.print(f"PLG {job.eval_report.plg}, RLG {job.eval_report.rlg}: {verdict} (job {job.job_id})")
    if job.HasField("started_at") and job.HasField("finished_at"):
        wall_s = (job.finished_at.ToDatetime() - job.started_at.ToDatetime()).total_seconds()
        stdout.print(f"wall time {wall_s:.1f} s from start to finish of the job")


def _interrupted(stub, job_id: str, server: str | None) -> int:
    """Handle Ctrl+C during a watch: ask whether to cancel; without a terminal leave the job running."""
    if sys.stdin.isatty():
        if typer.confirm(f"\ncancel job {job_id}?", default=False):
            stub.CancelJob(service_pb2.CancelJobRequest(job_id=job_id), timeout=RPC_TIMEOUT_S)
            stderr.print(f"cancelled job {job_id}")
            return EXIT_UNAVAILABLE
    if _server_address(server):
        stderr.print(f"job {job_id} left running; follow it with `dfst-client jobs watch {job_id}`")
    else:
        # the embedded server stops with this process, and its store keeps the job for the next start
        stderr.print(f"job {job_id} left unfinished; the embedded server stops now and resumes the job the next "
                     f"time dfst-client runs without --server on the same data folder (${DATA_DIR_ENV})")
    return EXIT_UNAVAILABLE


def _check_locally(spec: jobs_pb2.EvalSpec) -> None:
    """Validate an evaluation request as the server does, so the embedded mode rejects it before Ray starts.

    The checks and messages are those of dfst.server.plan and the job manager. A bad value exits with code 2.
    """
    from dfst.server.plan import InvalidRequestError, load_request_model, validate_eval_request
    from dfst.workers import models

    length = spec.WhichOneof("length")
    try:
        request = validate_eval_request(
            task=spec.task, digits=spec.digits if length == "digits" else None,
            search=(spec.search.min, spec.search.max) if length == "search" else None,
            checks=[CHECK_NAMES[check] for check in spec.checks], seed=spec.seed, model=spec.model,
            dtype=DTYPE_NAMES[spec.dtype], step_budget=spec.step_budget, default_model=models.default_model_name,
        )
        load_request_model(request)
    except InvalidRequestError as error:
        stderr.print(f"error: {grpc.StatusCode.INVALID_ARGUMENT.name}: {error}")
        raise typer.Exit(EXIT_USAGE) from None


@app.command("eval")
def eval_command(
    task: str = typer.Option(..., "--task", help="Task: add2, add10, mult2 or mult10."),
    digits: int = typer.Option(None, "--digits", help=f"Operand length in digits, 1 to {MAX_DIGITS}."),
    min_digits: int = typer.Option(
        None, "--min-digits", help=f"Smallest length of an LG search, in digits, 1 to {MAX_DIGITS}."
    ),
    max_digits: int = typer.Option(
        None, "--max-digits", help=f"Largest length of an LG search, in digits, 1 to {MAX_DIGITS}."
    ),
    check: list[Check] | None = CheckOption,
    seed: int = typer.Option(0, "--seed", min=0, max=UINT64_MAX, help="Seed of the random PLG pairs."),
    model: str = typer.Option("", "--model", help="Model name or checkpoint path; default the task's default model."),
    dtype: Dtype = DtypeOption,
    step_budget: int = typer.Option(
        0, "--step-budget", min=0, max=UINT64_MAX, help="Steps per rollout; 0 for the engine's default."
    ),
    detach: bool = typer.Option(False, "--detach", help="Print the job id and return without waiting."),
    as_json: bool = JsonOption,
    server: str = ServerOption,
) -> None:
    """Evaluate PLG and RLG of a model at one length or over a search range."""
    check = check or []
    search_given = min_digits is not None or max_digits is not None
    if (digits is not None) == search_given or (search_given and (min_digits is None or max_digits is None)):
        stderr.print("error: give either --digits N or both --min-digits and --max-digits")
        raise typer.Exit(EXIT_USAGE)
    for value, name in ((digits, "--digits"), (min_digits, "--min-digits"), (max_digits, "--max-digits")):
        if value is not None and value < 1:
            stderr.print(f"error: {name} must be a positive number of digits, got {value}")
            raise typer.Exit(EXIT_USAGE)
        if value is not None and value > MAX_DIGITS:
            stderr.print(f"error: {name} must be between 1 and {MAX_DIGITS} digits, got {value}")
            raise typer.Exit(EXIT_USAGE)
    spec = jobs_pb2.EvalSpec(task=task, checks=[CHECKS[name.value] for name in check], seed=seed, model=model,
                             dtype=DTYPES[dtype.value], step_budget=step_budget)
    if digits is not None:
        spec.digits = digits
    else:
        spec.search.min, spec.search.max = min_digits, max_digits
    if _server_address(server) is None:
        _check_locally(spec)

    with _service(server) as stub:
        job = stub.SubmitEval(service_pb2.SubmitEvalRequest(spec=spec), timeout=RPC_TIMEOUT_S).job
        if detach:
            typer.echo(json.dumps({"job_id": job.job_id}) if as_json else job.job_id)
            raise typer.Exit(EXIT_OK)
        try:
            outcome = watch_job(stub, job.job_id, _show_progress(as_json))
        except KeyboardInterrupt:
            raise typer.Exit(_interrupted(stub, job.job_id, server)) from None
        _print_eval(outcome.job, as_json)
        raise typer.Exit(_eval_exit_code(outcome.job))


@app.command("train")
def train_command(
    task: str = typer.Option(..., "--task", help="Task: add2, add10, mult2 or mult10."),
    config: str = typer.Option("{}", "--config", help="TrainConfig fields as a JSON object."),
    name: str = typer.Option("", "--name", help="Name of the saved model; default <task>-<job id prefix>."),
    detach: bool = typer.Option(False, "--detach", help="Print the job id and return without waiting."),
    as_json: bool = JsonOption,
    server: str = ServerOption,
) -> None:
    """Train a model on the server and save it in the user registry."""
    spec = jobs_pb2.TrainingSpec(task=task, config_json=config, model_name=name)
    with _service(server) as stub:
        job = stub.SubmitTraining(service_pb2.SubmitTrainingRequest(spec=spec), timeout=RPC_TIMEOUT_S).job
        if detach:
            typer.echo(job.job_id)
            raise typer.Exit(EXIT_OK)
        try:
            outcome = watch_job(stub, job.job_id, _show_progress(as_json))
        except KeyboardInterrupt:
            raise typer.Exit(_interrupted(stub, job.job_id, server)) from None
        _print_job(outcome.job, as_json)
        raise typer.Exit(EXIT_OK if outcome.job.state == jobs_pb2.JOB_STATE_SUCCEEDED else EXIT_UNAVAILABLE)


def _kind_name(job: jobs_pb2.Job) -> str:
    """Return "eval" or "training" for JOB_KIND_EVAL or JOB_KIND_TRAINING."""
    return jobs_pb2.JobKind.Name(job.kind).removeprefix("JOB_KIND_").lower()


def _print_job(job: jobs_pb2.Job, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(message_to_dict(job), sort_keys=True))
        return
    stdout.print(f"{_kind_name(job)} job {job.job_id} {STATE_NAMES[job.state].value}")
    if job.error:
        stdout.print(f"error: {job.error}")
    if job.HasField("eval_report") and job.eval_report.report_json:
        _print_eval(job, as_json=False)
    if job.HasField("training_report"):
        report = job.training_report
        stdout.print(f"model {report.model_name}: loss {report.final_loss:.3g} after {report.iterations} iterations")


@contextlib.contextmanager
def _embedded_store():
    """Open the embedded server's job store, so that reading jobs needs neither Ray nor the server.

    The server's ListJobs and GetJob read this same SQLite store, so the output is the same.
    """
    from dfst.server.store import JobStore, StoreError, default_data_dir

    try:
        store = JobStore(default_data_dir())
    except StoreError as error:
        stderr.print(f"error: {error}")
        raise typer.Exit(EXIT_USAGE) from None
    try:
        yield store
    finally:
        store.close()


@jobs_app.command("list")
def jobs_list(
    limit: int = typer.Option(20, "--limit", min=0, max=UINT32_MAX, help="Maximum number of jobs shown; 0 means 100."),
    as_json: bool = JsonOption,
    server: str = ServerOption,
) -> None:
    """List jobs, newest first."""
    if _server_address(server) is None:
        with _embedded_store() as store:
            jobs = [job_to_proto(record) for record in store.list_jobs(limit or DEFAULT_LIST_LIMIT)]
    else:
        with _service(server) as stub:
            jobs = stub.ListJobs(service_pb2.ListJobsRequest(limit=limit), timeout=RPC_TIMEOUT_S).jobs
    if as_json:
        typer.echo(json.dumps([message_to_dict(job) for job in jobs], sort_keys=True))
        return
    table = Table()
    # Job ids are copied into `jobs watch` and `jobs cancel`, so their column never shrinks; the others wrap.
    table.add_column("job id", no_wrap=True, min_width=max((len(job.job_id) for job in jobs), default=6))
    for column in ("kind", "state", "task", "rollouts", "created"):
        table.add_column(column)
    for job in jobs:
        task = job.eval.task if job.kind == jobs_pb2.JOB_KIND_EVAL else job.training.task
        table.add_row(job.job_id, _kind_name(job), STATE_NAMES[job.state].value, task,
                      f"{job.progress.rollouts_done}/{job.progress.rollouts_total}",
                      job.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"))
    stdout.print(table)


@jobs_app.command("show")
def jobs_show(job_id: str, as_json: bool = JsonOption, server: str = ServerOption) -> None:
    """Show one job and its report."""
    if _server_address(server) is None:
        with _embedded_store() as store:
            record = store.load_job(job_id)
        if record is None:
            stderr.print(f"error: {grpc.StatusCode.NOT_FOUND.name}: job {job_id!r} not found; "
                         "`dfst-client jobs list` shows the known jobs")
            raise typer.Exit(EXIT_USAGE)
        _print_job(job_to_proto(record), as_json)
        return
    with _service(server) as stub:
        job = stub.GetJob(service_pb2.GetJobRequest(job_id=job_id), timeout=RPC_TIMEOUT_S).job
    _print_job(job, as_json)


@jobs_app.command("watch")
def jobs_watch(job_id: str, as_json: bool = JsonOption, server: str = ServerOption) -> None:
    """Follow a job until it finishes; the exit code is that of `eval` for evaluation jobs."""
    with _service(server) as stub:
        outcome = watch_job(stub, job_id, _show_progress(as_json))
    _print_job(outcome.job, as_json)
    if outcome.job.kind == jobs_pb2.JOB_KIND_EVAL:
        raise typer.Exit(_eval_exit_code(outcome.job))


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, as_json: bool = JsonOption, server: str = ServerOption) -> None:
    """Cancel a queued or running job."""
    with _service(server) as stub:
        job = stub.CancelJob(service_pb2.CancelJobRequest(job_id=job_id), timeout=RPC_TIMEOUT_S).job
    _print_job(job, as_json)


@models_app.command("list")
def models_list(
    task: str = typer.Option("", "--task", help="Only models of this task."),
    as_json: bool = JsonOption,
    server: str = ServerOption,
) -> None:
    """List the models evaluation jobs can use."""
    with _service(server) as stub:
        models = stub.ListModels(service_pb2.ListModelsRequest(task=task), timeout=RPC_TIMEOUT_S).models
    if as_json:
        typer.echo(json.dumps([message_to_dict(model) for model in models], sort_keys=True))
        return
    table = Table()
    for column in ("name", "task", "source", "d", "parameters", "default", "sha256"):
        table.add_column(column)
    for model in models:
        table.add_row(model.name, model.task, model.source, str(model.hidden_dim), f"{model.parameters:,}",
                      "yes" if model.is_default else "", model.sha256[:12])
    stdout.print(table)


@app.command("serve")
def serve_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind; loopback by default."),
    port: int = typer.Option(50051, "--port", help="TCP port; 0 picks a free one."),
    data_dir: str = typer.Option(None, "--data-dir", help="Folder of service.db; default $DFST_DATA_DIR."),
    workers: int = typer.Option(0, "--workers", help="Rollout actors; 0 means one per CPU."),
    chunk_steps: int = typer.Option(1_000_000_000, "--chunk-steps", help="Maximum rollout steps per chunk."),
    chunk_seconds: float = typer.Option(
        1.0, "--chunk-seconds",
        help="Wall seconds after which a chunk ends, with its progress report and checkpoint.",
    ),
    max_active_jobs: int = typer.Option(64, "--max-active-jobs", help="Queued plus running jobs allowed."),
    ray_address: str = typer.Option(
        None, "--ray-address", envvar="RAY_ADDRESS",
        help="Ray cluster to join, HOST:PORT of its head; default $RAY_ADDRESS, else a local instance.",
    ),
    metrics: bool = typer.Option(True, "--metrics/--no-metrics", help="Serve Prometheus metrics over HTTP."),
    metrics_host: str = typer.Option(None, "--metrics-host", help="Interface of the metrics endpoint; default --host."),
    metrics_port: int = typer.Option(
        DEFAULT_METRICS_PORT, "--metrics-port", help="TCP port of the metrics endpoint (/metrics); 0 picks a free one."
    ),
    token_file: str = typer.Option(
        None, "--token-file", help=f"File containing the bearer token clients must send; default ${auth.TOKEN_ENV}."
    ),
    require_token: bool = typer.Option(
        False, "--require-token", help="Demand the token on loopback too; off loopback it is always required."
    ),
    tls_cert: str = typer.Option(None, "--tls-cert", help="PEM certificate chain; serve over TLS."),
    tls_key: str = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert."),
) -> None:
    """Run the dfst server until SIGTERM or Ctrl+C."""
    import pathlib

    import ray
    from dfst.server.app import ServerConfig, serve
    from dfst.server.manager import ManagerConfig
    from dfst.server.store import JobStore, StoreError, default_data_dir
    from dfst.workers.actors import LOCAL_RAY_SYSTEM_CONFIG, WorkerConfig

    logging.getLogger().setLevel(logging.INFO)
    if metrics and not 0 <= metrics_port <= 65535:
        stderr.print(f"error: invalid --metrics-port {metrics_port}; use 0 to 65535 (0 picks a free port)")
        raise typer.Exit(EXIT_USAGE)
    try:
        security = auth.SecurityConfig(
            token=auth.read_token(token_file), require_token=require_token,
            tls_cert_file=pathlib.Path(tls_cert) if tls_cert else None,
            tls_key_file=pathlib.Path(tls_key) if tls_key else None,
        )
        auth.check_security(host, security)
    except auth.AuthConfigError as error:
        stderr.print(f"error: {error}")
        raise typer.Exit(EXIT_USAGE) from None
    config = ServerConfig(
        host=host, port=port, data_dir=pathlib.Path(data_dir) if data_dir else None,
        manager=ManagerConfig(max_active_jobs=max_active_jobs,
                              workers=WorkerConfig(num_workers=workers, chunk_steps=chunk_steps,
                                                   chunk_seconds=chunk_seconds)),
        security=security,
        metrics_host=metrics_host, metrics_port=metrics_port if metrics else None,
    )
    # Check the data folder before Ray starts, so a bad folder fails fast and leaves no Ray instance behind.
    try:
        JobStore(config.data_dir or default_data_dir()).close()
    except StoreError as error:
        stderr.print(f"error: {error}")
        raise typer.Exit(EXIT_USAGE) from None
    if ray_address:
        ray.init(address=ray_address, log_to_driver=False)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 _system_config=LOCAL_RAY_SYSTEM_CONFIG)
    try:
        serve(config)
    except StoreError as error:
        stderr.print(f"error: {error}")
        raise typer.Exit(EXIT_USAGE) from None
    except OSError as error:
        stderr.print(f"error: {error}")
        raise typer.Exit(EXIT_UNAVAILABLE) from None
    finally:
        ray.shutdown()


def main() -> None:
    app()


__all__ = ["STATES", "OUTCOME_NAMES", "TERMINAL_STATES", "app", "main"]
