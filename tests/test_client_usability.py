"""dfst-client usability: option placement, messages, tables, progress lines, local checks, quiet Ray start."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import typer.main
from dfst.client import cli, watch
from dfst.client.cli import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, app
from dfst.server.app import DfstServer, ServerConfig
from dfst.server.manager import ManagerConfig
from dfst.server.plan import MAX_DIGITS
from dfst.workers.actors import WorkerConfig
from rich.console import Console
from typer.testing import CliRunner

runner = CliRunner()
DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "service.md"
UNREACHABLE = "127.0.0.1:1"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("client_usability")


@pytest.fixture(scope="module")
def address(ray_session, data_dir):
    config = ServerConfig(port=0, data_dir=data_dir,
                          manager=ManagerConfig(workers=WorkerConfig(num_workers=2)))
    server = DfstServer(config).start()
    yield server.address
    server.stop()


def forbid_connections(monkeypatch) -> None:
    """Make every later command fail if it opens a connection, embedded or remote."""
    monkeypatch.delenv("DFST_SERVER", raising=False)

    def fail(*_args, **_kwargs):
        raise AssertionError("the command opened a connection, so it started the embedded server")

    monkeypatch.setattr(cli, "open_stub", fail)


@pytest.fixture
def no_embedded_server(monkeypatch):
    forbid_connections(monkeypatch)


def test_root_server_option_before_subcommand(address):
    unreachable = runner.invoke(app, ["--server", UNREACHABLE, "models", "list"])
    reachable = runner.invoke(app, ["--server", address, "models", "list", "--json"])

    assert unreachable.exit_code == EXIT_UNAVAILABLE, unreachable.output
    assert f"no dfst server responded at {UNREACHABLE}" in unreachable.output
    assert reachable.exit_code == EXIT_OK, reachable.output
    assert "oracle-add10" in [model["name"] for model in json.loads(reachable.stdout)]


def test_subcommand_server_wins_over_root(address, monkeypatch):
    monkeypatch.setenv("DFST_SERVER", UNREACHABLE)
    subcommand_wins = runner.invoke(app, ["--server", UNREACHABLE, "eval", "--task", "add2", "--digits", "4",
                                          "--json", "--server", address])
    root_wins_over_env = runner.invoke(app, ["--server", address, "models", "list", "--json"])

    assert subcommand_wins.exit_code == EXIT_OK, subcommand_wins.output
    assert json.loads(subcommand_wins.stdout)["verdict"] == "all_correct"
    assert root_wins_over_env.exit_code == EXIT_OK, root_wins_over_env.output


@pytest.mark.parametrize("option, bad, allowed, other", [
    ("--dtype", "float16", ("float32", "float64"), "--check"),
    ("--check", "foo", ("plg", "rlg"), "--dtype"),
])
def test_bad_choice_names_option_and_value(option, bad, allowed, other):
    result = runner.invoke(app, ["eval", "--task", "add10", "--digits", "5", option, bad,
                                 "--server", UNREACHABLE])

    assert result.exit_code == EXIT_USAGE, result.output
    assert option in result.output
    assert f"'{bad}'" in result.output
    for value in allowed:
        assert f"'{value}'" in result.output
    assert other not in result.output


def test_jobs_list_keeps_full_job_id(address, monkeypatch):
    submitted = runner.invoke(app, ["eval", "--task", "add2", "--digits", "4", "--detach", "--server", address])
    job_id = submitted.stdout.strip()
    monkeypatch.setattr(cli, "stdout", Console(width=80))
    listed = runner.invoke(app, ["jobs", "list", "--server", address])

    assert submitted.exit_code == EXIT_OK, submitted.output
    assert len(job_id) >= 32
    assert listed.exit_code == EXIT_OK, listed.output
    assert job_id in listed.stdout
    assert "…" not in listed.stdout.split(job_id)[0].splitlines()[-1]


def test_eval_prints_progress_lines_without_terminal(address, monkeypatch):
    monkeypatch.setattr(watch, "PROGRESS_LINE_INTERVAL_S", 0.0)
    plain = runner.invoke(app, ["eval", "--task", "add10", "--digits", "20", "--server", address])
    as_json = runner.invoke(app, ["eval", "--task", "add10", "--digits", "20", "--json", "--server", address])

    assert plain.exit_code == EXIT_OK, plain.output
    assert "rollouts " in plain.stderr
    assert "steps/s" in plain.stderr
    assert as_json.exit_code == EXIT_OK, as_json.output
    assert as_json.stderr == ""


def test_report_table_labels_worker_and_wall_time(address, monkeypatch):
    monkeypatch.setattr(cli, "stdout", Console(width=120))
    result = runner.invoke(app, ["eval", "--task", "add10", "--digits", "5", "--server", address])

    assert result.exit_code == EXIT_OK, result.output
    assert "worker s" in result.stdout
    assert "seconds" not in result.stdout
    assert "wall time " in result.stdout


def test_json_keys_match_docs(address):
    result = runner.invoke(app, ["eval", "--task", "add2", "--digits", "4", "--json", "--server", address])
    document = json.loads(result.stdout)
    docs = DOCS.read_text()

    assert result.exit_code == EXIT_OK, result.output
    assert sorted(document) == ["all_correct", "error", "job_id", "plg", "report", "rlg", "state", "verdict"]
    for key in document:
        assert f"| `{key}` |" in docs
    for key in document["report"]:
        assert f"`{key}`" in docs
    for key in document["report"]["pairs"][0]:
        assert f"`{key}`" in docs


@pytest.mark.parametrize("arguments, message", [
    (["--task", "add7", "--digits", "5"], "unknown task 'add7'"),
    (["--task", "add10", "--digits", "10000000"], f"--digits must be between 1 and {MAX_DIGITS} digits"),
    (["--task", "add10", "--min-digits", "10", "--max-digits", "5"], "search range [10, 5] is empty"),
    (["--task", "add10", "--digits", "5", "--model", "no-such-model"], "no-such-model"),
    (["--task", "add2", "--digits", "5", "--model", "oracle-add10"], "use a model for task add2"),
])
def test_embedded_eval_checks_input_first(no_embedded_server, arguments, message):
    result = runner.invoke(app, ["eval", *arguments])

    assert result.exit_code == EXIT_USAGE, result.output
    assert message in result.output


def test_embedded_jobs_read_store_directly(address, data_dir, monkeypatch):
    submitted = runner.invoke(app, ["eval", "--task", "add2", "--digits", "4", "--detach", "--server", address])
    job_id = submitted.stdout.strip()
    watched = runner.invoke(app, ["jobs", "watch", job_id, "--json", "--server", address])
    forbid_connections(monkeypatch)
    monkeypatch.setenv("DFST_DATA_DIR", str(data_dir))
    listed = runner.invoke(app, ["jobs", "list", "--json"])
    shown = runner.invoke(app, ["jobs", "show", job_id, "--json"])
    missing = runner.invoke(app, ["jobs", "show", "no-such-job"])

    assert watched.exit_code == EXIT_OK, watched.output
    assert listed.exit_code == EXIT_OK, listed.output
    assert job_id in [job["job_id"] for job in json.loads(listed.stdout)]
    assert shown.exit_code == EXIT_OK, shown.output
    assert json.loads(shown.stdout)["state"] == "JOB_STATE_SUCCEEDED"
    assert missing.exit_code == EXIT_USAGE, missing.output
    assert "job 'no-such-job' not found" in missing.output


def test_eval_help_shows_digit_range():
    result = runner.invoke(app, ["eval", "--help"])
    eval_command = typer.main.get_command(app).commands["eval"]
    helps = {parameter.name: parameter.help for parameter in eval_command.params}

    assert result.exit_code == EXIT_OK
    assert str(2**32 - 1) not in result.output
    for name in ("digits", "min_digits", "max_digits"):
        assert f"1 to {MAX_DIGITS}" in helps[name]


def test_jobs_cancel_prints_readable_kind(address):
    submitted = runner.invoke(app, ["eval", "--task", "add10", "--digits", "5000", "--detach", "--server", address])
    job_id = submitted.stdout.strip()
    cancelled = runner.invoke(app, ["jobs", "cancel", job_id, "--server", address])

    assert submitted.exit_code == EXIT_OK, submitted.output
    assert cancelled.exit_code == EXIT_OK, cancelled.output
    assert f"eval job {job_id} cancelled" in cancelled.stdout
    assert "JOB_KIND" not in cancelled.stdout


def test_embedded_start_hides_ray_auth_notice(tmp_path):
    # A fresh process, because the test session's own Ray instance is already running.
    script = (
        "from dfst.client.connection import embedded_server\n"
        "from ray._raylet import AuthenticationMode, get_authentication_mode\n"
        "with embedded_server():\n"
        "    print('token' if get_authentication_mode() == AuthenticationMode.TOKEN else 'no token')\n"
    )
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RAY_AUTH")}
    environment.update(DFST_DATA_DIR=str(tmp_path), NUMBA_NUM_THREADS="1")
    completed = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                               timeout=180, check=False)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().splitlines()[-1] == "token"
    assert "Token authentication is enabled" not in completed.stderr
