"""dfst-client through Typer's CliRunner, against a real server on loopback."""

from __future__ import annotations

import json

import pytest
from dfst.client.cli import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, EXIT_WRONG, app
from dfst.server.app import DfstServer, ServerConfig
from dfst.server.manager import ManagerConfig
from dfst.workers.actors import WorkerConfig
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def address(ray_session, tmp_path_factory):
    config = ServerConfig(port=0, data_dir=tmp_path_factory.mktemp("client"),
                          manager=ManagerConfig(workers=WorkerConfig(num_workers=2)))
    server = DfstServer(config).start()
    yield server.address
    server.stop()



runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])

    assert result.exit_code == EXIT_OK
    assert result.output.startswith("dfst ")


def test_eval_json_all_correct(address):
    result = runner.invoke(app, ["eval", "--task", "add2", "--digits", "12", "--json", "--server", address])
    document = json.loads(result.stdout)

    assert result.exit_code == EXIT_OK, result.output
    assert document["verdict"] == "all_correct"
    assert document["plg"] == 12
    assert document["rlg"] == 12
    assert len(document["report"]["pairs"]) == 11
    for pair in document["report"]["pairs"]:
        assert pair["outcome"] == "correct"


def test_eval_table_output(address):
    result = runner.invoke(app, ["eval", "--task", "add10", "--digits", "5", "--check", "rlg", "--server", address])

    assert result.exit_code == EXIT_OK, result.output
    assert "PLG 0, RLG 0" not in result.stdout
    assert "every pair exact" in result.stdout


def test_eval_some_wrong_exits_1(address):
    # a budget of 50 steps is too small for 10-digit decimal additions
    result = runner.invoke(app, ["eval", "--task", "add10", "--digits", "10", "--step-budget", "50", "--json",
                                 "--server", address])
    document = json.loads(result.stdout)

    assert result.exit_code == EXIT_WRONG, result.output
    assert document["verdict"] == "some_wrong"


@pytest.mark.parametrize("arguments, message", [
    (["--digits", "0"], "--digits must be a positive number"),
    (["--digits", "-5"], "--digits must be a positive number"),
    (["--digits", "5", "--model", "missing-model"], "unknown model 'missing-model'"),
    (["--digits", "5", "--dtype", "float16"], "'float16' is not one of"),
])
def test_eval_invalid_input_exits_2(address, arguments, message):
    result = runner.invoke(app, ["eval", "--task", "add10", *arguments, "--server", address])

    assert result.exit_code == EXIT_USAGE, result.output
    assert message in result.output


def test_unknown_task_exits_2(address):
    result = runner.invoke(app, ["eval", "--task", "sub10", "--digits", "5", "--server", address])

    assert result.exit_code == EXIT_USAGE
    assert "unknown task 'sub10'" in result.output


def test_unreachable_server_exits_3():
    result = runner.invoke(app, ["models", "list", "--server", "127.0.0.1:1"])

    assert result.exit_code == EXIT_UNAVAILABLE
    assert "no dfst server responded at 127.0.0.1:1" in result.output


def test_jobs_and_models_commands(address):
    submitted = runner.invoke(app, ["eval", "--task", "add2", "--digits", "4", "--detach", "--server", address])
    job_id = submitted.stdout.strip()
    watched = runner.invoke(app, ["jobs", "watch", job_id, "--json", "--server", address])
    shown = runner.invoke(app, ["jobs", "show", job_id, "--json", "--server", address])
    listed = runner.invoke(app, ["jobs", "list", "--json", "--server", address])
    cancelled = runner.invoke(app, ["jobs", "cancel", job_id, "--server", address])
    models = runner.invoke(app, ["models", "list", "--json", "--server", address])

    assert submitted.exit_code == EXIT_OK
    assert watched.exit_code == EXIT_OK, watched.output
    assert json.loads(shown.stdout)["state"] == "JOB_STATE_SUCCEEDED"
    assert job_id in [job["job_id"] for job in json.loads(listed.stdout)]
    assert cancelled.exit_code == EXIT_USAGE
    assert "already succeeded" in cancelled.output
    assert "oracle-add10" in [model["name"] for model in json.loads(models.stdout)]
