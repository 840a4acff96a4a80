"""Property-based hostile options for every dfst-client command that talks to a server.

Each invocation runs through Typer's CliRunner against a server on 127.0.0.1.
The exit code must be one of the documented codes (0 success, 2 usage error
or invalid input), never 1 from an uncaught exception, and the server must
keep serving.  ``serve`` is covered only where it fails before binding
(tests/test_security.py, tests/test_faults.py), so no example binds a port.
"""

from __future__ import annotations

import json

import pytest
from dfst.client.cli import app
from dfst.server.plan import MAX_DIGITS
from dfst.workers import models
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_helpers import health_status, start_server
from typer.testing import CliRunner

EXAMPLES = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
EXIT_OK, EXIT_USAGE = 0, 2
INTEGERS = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from([0, -1, 2**32, 2**64]))
TEXT = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=30),
    st.sampled_from(["", "add2", "ADD2", "../../etc/passwd", "oracle-add2", "--json", "-", "nan", "1e9", "a" * 300]),
)


@pytest.fixture(scope="module")
def server(ray_session, tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("cli-data"), num_workers=1, chunk_steps=50_000)
    yield running
    running.stop()


def _invoke(server, args: list[str]):
    result = CliRunner().invoke(app, [*args, "--server", server.address])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"dfst-client {args} raised {result.exception!r}\n{result.output}")
    return result


def _assert_serving(server) -> None:
    assert health_status(server.address) == health_pb2.HealthCheckResponse.SERVING


def _cancel(server, job_id: str) -> None:
    result = _invoke(server, ["jobs", "cancel", job_id])
    assert result.exit_code in (EXIT_OK, EXIT_USAGE), result.output  # usage: it finished first


def _valid_add2_models() -> set[str]:
    """Return the --model values an add2 evaluation accepts: the oracle, and the shipped model if there is one."""
    try:
        shipped = models.default_model_name("add2")
    except models.ModelNotFoundError:
        return {"oracle-add2"}
    return {"oracle-add2", "", shipped}


@st.composite
def eval_options(draw) -> tuple[list[str], bool]:
    """Return (options, valid): a quick add2 evaluation with one option replaced by a hostile value."""
    options = {"--task": "add2", "--digits": "3", "--model": "oracle-add2", "--seed": "0", "--dtype": "float32",
               "--step-budget": "0"}
    name = draw(st.sampled_from(sorted(options) + ["--check", "--min-digits"]))
    value = draw(st.one_of(TEXT, INTEGERS.map(str)))
    valid = True
    if name == "--task":
        valid = value == "add2"
    elif name == "--digits":
        valid = value.lstrip("-").isdigit() and 1 <= int(value) <= MAX_DIGITS
    elif name == "--model":
        valid = value in _valid_add2_models()
    elif name in ("--seed", "--step-budget"):
        valid = value.lstrip("-").isdigit() and 0 <= int(value) < 2**64
    elif name == "--dtype":
        valid = value in ("float32", "float64")
    elif name == "--check":
        valid = value in ("plg", "rlg")
    else:  # --min-digits together with --digits is a usage error
        valid = False
    options[name] = value
    args = ["eval", "--detach", "--json"]
    for key, item in options.items():
        args += [key, item]
    return args, valid


@EXAMPLES
@given(case=eval_options())
def test_eval_options_hostile(server, case):
    args, valid = case
    result = _invoke(server, args)
    if result.exit_code == EXIT_OK:
        _cancel(server, json.loads(result.stdout)["job_id"])
    assert result.exit_code == (EXIT_OK if valid else EXIT_USAGE), f"{args}: {result.output}"
    _assert_serving(server)


@EXAMPLES
@given(config=TEXT, name=TEXT.filter(lambda text: text != ""))
def test_train_options_hostile(server, config, name):
    """Training requests whose name is invalid, or whose config is not a valid TrainConfig, exit with 2."""
    if name.replace("-", "").replace("_", "").replace(".", "").isalnum() and name[0].isascii() and name[0].isalnum():
        name = "../" + name  # keep the request invalid: a valid one would start real training
    result = _invoke(server, ["train", "--detach", "--task", "add2", "--config", config, "--name", name])
    assert result.exit_code == EXIT_USAGE, f"{config!r} {name!r}: {result.output}"
    _assert_serving(server)


@EXAMPLES
@given(job_id=TEXT)
def test_job_commands_hostile(server, job_id):
    for command in ("show", "cancel", "watch"):
        args = ["jobs", command, "--", job_id] if job_id.startswith("-") else ["jobs", command, job_id]
        result = _invoke(server, args)
        assert result.exit_code == EXIT_USAGE, f"jobs {command} {job_id!r}: {result.output}"
    _assert_serving(server)


@EXAMPLES
@given(limit=INTEGERS)
def test_jobs_list_limit_hostile(server, limit):
    result = _invoke(server, ["jobs", "list", "--json", "--limit", str(limit)])
    expected = EXIT_OK if 0 <= limit < 2**32 else EXIT_USAGE
    assert result.exit_code == expected, f"--limit {limit}: {result.output}"
    _assert_serving(server)


@EXAMPLES
@given(task=TEXT)
def test_models_list_task_hostile(server, task):
    result = _invoke(server, ["models", "list", "--json", "--task", task])
    assert result.exit_code in (EXIT_OK, EXIT_USAGE), f"--task {task!r}: {result.output}"
    _assert_serving(server)
