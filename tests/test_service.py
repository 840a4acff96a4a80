"""The evaluation service end to end: real gRPC on loopback and one real local Ray instance."""

from __future__ import annotations

import json
import pathlib
import sqlite3
import time

import grpc
import pytest
from dfst.server.app import DfstServer, ServerConfig
from dfst.server.jobs import IllegalTransitionError, JobKind, JobRecord, JobState
from dfst.server.manager import ManagerConfig
from dfst.server.plan import plan_units, validate_eval_request
from dfst.server.store import JobStore, StoreError
from dfst.workers.actors import WorkerConfig
from dfst.workers.models import default_model_name

from dfst.v1 import jobs_pb2, service_pb2, service_pb2_grpc

RPC_TIMEOUT_S = 30



def _start(data_dir: pathlib.Path, chunk_steps: int = 4_000_000, max_active_jobs: int = 64) -> DfstServer:
    config = ServerConfig(port=0, data_dir=data_dir, manager=ManagerConfig(
        max_active_jobs=max_active_jobs, workers=WorkerConfig(num_workers=2, chunk_steps=chunk_steps)))
    return DfstServer(config).start()


@pytest.fixture
def server(ray_session, tmp_path):
    running = _start(tmp_path)
    yield running
    running.stop()


def _stub(server: DfstServer):
    channel = grpc.insecure_channel(server.address)
    return service_pb2_grpc.DfstServiceStub(channel)


def _watch(stub, job_id: str) -> tuple[jobs_pb2.Job, dict[int, jobs_pb2.RolloutResult], list[str]]:
    job, rollouts, kinds = None, {}, []
    for event in stub.WatchJob(service_pb2.WatchJobRequest(job_id=job_id), timeout=120):
        kind = event.WhichOneof("event")
        kinds.append(kind)
        if kind == "job":
            job = event.job
        elif kind == "rollout":
            rollouts[event.rollout.index] = event.rollout
    return job, rollouts, kinds


def _submit(stub, **fields) -> jobs_pb2.Job:
    spec = jobs_pb2.EvalSpec(**fields)
    return stub.SubmitEval(service_pb2.SubmitEvalRequest(spec=spec), timeout=RPC_TIMEOUT_S).job


def test_job_state_transitions():
    job = JobRecord.new(JobKind.EVAL, {})
    job.transition(JobState.RUNNING)
    job.transition(JobState.SUCCEEDED)

    assert job.state.is_terminal()
    assert job.finished_at is not None
    with pytest.raises(IllegalTransitionError, match="cannot move from succeeded to running"):
        job.transition(JobState.RUNNING)


def test_store_rejects_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")

    with pytest.raises(StoreError, match="cannot create the data folder"):
        JobStore(blocker / "data")


def test_eval_report_matches_python_integers(server):
    stub = _stub(server)
    job = _submit(stub, task="add10", digits=20, model="oracle-add10", seed=7)
    final, rollouts, kinds = _watch(stub, job.job_id)

    assert final.state == jobs_pb2.JOB_STATE_SUCCEEDED
    assert kinds[0] == "job"
    assert "progress" in kinds
    assert len(rollouts) == 91
    assert all(row.outcome == jobs_pb2.ROLLOUT_OUTCOME_CORRECT for row in rollouts.values())
    request = validate_eval_request("add10", 20, None, [], 7, "oracle-add10", "float32", 0, default_model_name)
    units = plan_units(request)
    for unit in units:
        assert (rollouts[unit.index].a, rollouts[unit.index].b) == (str(unit.a), str(unit.b))
        assert len(str(unit.a)) <= 20
        assert len(str(unit.b)) <= 20
    report = json.loads(final.eval_report.report_json)
    assert report["verdicts"] == {"plg": True, "rlg": True}
    assert report["digits"] == 20
    assert len(report["pairs"]) == 91
    assert (final.eval_report.plg, final.eval_report.rlg) == (20, 20)
    assert final.eval_report.all_correct
    assert final.progress.rollouts_done == 91


def test_wrong_model_fails_pairs(server, tmp_path):
    from dfst import DFSTWeights, get_expert, oracle_weights
    from dfst.checkpoint import save_checkpoint

    weights = oracle_weights(get_expert("add10"))
    B = weights.B.copy()
    B[:, :, :] = 0
    B[:, 1, :] = 1  # writes the digit 0 everywhere
    path = save_checkpoint(tmp_path / "zeros.safetensors", DFSTWeights(weights.A, B, weights.C, weights.h0),
                           {"task": "add10"})
    stub = _stub(server)
    job = _submit(stub, task="add10", digits=3, model=str(path), checks=[jobs_pb2.LENGTH_CHECK_RLG], step_budget=5000)
    final, rollouts, _ = _watch(stub, job.job_id)

    assert final.state == jobs_pb2.JOB_STATE_SUCCEEDED
    assert not final.eval_report.all_correct
    assert all(row.outcome != jobs_pb2.ROLLOUT_OUTCOME_CORRECT for row in rollouts.values())
    assert final.progress.rollouts_done == 81


def test_chunk_handling_error_fails_job(server, monkeypatch):
    from dfst.server.manager import JobManager

    def broken_handler(self, ref):
        raise RuntimeError("simulated handler bug")

    monkeypatch.setattr(JobManager, "_handle_chunk", broken_handler)
    stub = _stub(server)
    job = _submit(stub, task="add2", digits=4, model="oracle-add2", checks=[jobs_pb2.LENGTH_CHECK_RLG])
    final, _, _ = _watch(stub, job.job_id)

    assert final.state == jobs_pb2.JOB_STATE_FAILED
    assert "simulated handler bug" in final.error
    listed = stub.ListJobs(service_pb2.ListJobsRequest(), timeout=RPC_TIMEOUT_S)
    assert any(other.job_id == job.job_id for other in listed.jobs)


def test_search_stops_at_first_failing_length(server):
    stub = _stub(server)
    job = _submit(stub, task="add2", search=jobs_pb2.DigitRange(min=4, max=64), model="oracle-add2", step_budget=3000)
    final, rollouts, _ = _watch(stub, job.job_id)
    report = json.loads(final.eval_report.report_json)

    # a 3000-step budget fits 32-digit binary additions (about 2·32² steps) but not 64-digit ones
    assert [step["digits"] for step in report["tried"]] == [4, 8, 16, 32, 64]
    assert (report["plg"], report["rlg"]) == (32, 32)
    assert (final.eval_report.plg, final.eval_report.rlg) == (32, 32)
    assert final.progress.rollouts_total == 5 * 11


def test_invalid_requests_get_status_codes(server):
    stub = _stub(server)
    cases = [
        ({"task": "add7", "digits": 5}, grpc.StatusCode.INVALID_ARGUMENT, "unknown task 'add7'"),
        ({"task": "add10", "digits": 0}, grpc.StatusCode.INVALID_ARGUMENT, "digits must be between 1"),
        ({"task": "add10", "digits": 5, "model": "nope"}, grpc.StatusCode.INVALID_ARGUMENT, "unknown model 'nope'"),
        ({"task": "add10", "digits": 5, "model": "oracle-add2"}, grpc.StatusCode.INVALID_ARGUMENT, "solves add2"),
    ]
    for fields, code, text in cases:
        with pytest.raises(grpc.RpcError) as caught:
            _submit(stub, **fields)
        assert caught.value.code() == code, fields
        assert text in caught.value.details(), fields

    with pytest.raises(grpc.RpcError) as caught:
        stub.GetJob(service_pb2.GetJobRequest(job_id="missing"), timeout=RPC_TIMEOUT_S)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_cancel_running_job_then_cancel_again(server):
    stub = _stub(server)
    job = _submit(stub, task="add10", digits=400, model="oracle-add10")
    cancelled = stub.CancelJob(service_pb2.CancelJobRequest(job_id=job.job_id), timeout=RPC_TIMEOUT_S).job
    final, _, _ = _watch(stub, job.job_id)

    assert cancelled.state == jobs_pb2.JOB_STATE_CANCELLED
    assert final.state == jobs_pb2.JOB_STATE_CANCELLED
    with pytest.raises(grpc.RpcError) as caught:
        stub.CancelJob(service_pb2.CancelJobRequest(job_id=job.job_id), timeout=RPC_TIMEOUT_S)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_queue_limit_is_resource_exhausted(ray_session, tmp_path):
    limited = _start(tmp_path, max_active_jobs=1)
    try:
        stub = _stub(limited)
        first = _submit(stub, task="add10", digits=400, model="oracle-add10")
        with pytest.raises(grpc.RpcError) as caught:
            _submit(stub, task="add10", digits=400, model="oracle-add10")
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        stub.CancelJob(service_pb2.CancelJobRequest(job_id=first.job_id), timeout=RPC_TIMEOUT_S)
    finally:
        limited.stop()


def _stored_progress(path: pathlib.Path, job_id: str) -> tuple[int, int]:
    """Return (finished rollouts, checkpoints at 10000 steps or fewer) of a job in a server's store."""
    database = sqlite3.connect(path, timeout=30)
    try:
        finished = database.execute("SELECT COUNT(*) FROM rollouts WHERE job_id = ?", (job_id,)).fetchone()[0]
        early = database.execute("SELECT COUNT(*) FROM checkpoints WHERE job_id = ? AND steps <= 10000",
                                 (job_id,)).fetchone()[0]
    finally:
        database.close()
    return finished, early


def test_restarted_server_resumes_without_redoing_rollouts(ray_session, tmp_path):
    # Every 150-digit RLG pair of add10 takes about 45000 steps, so 2000-step chunks
    # leave a stored checkpoint at 10000 steps or fewer at least 17 chunks from its
    # rollout's end: the server is stopped while that checkpoint still holds.
    first = _start(tmp_path, chunk_steps=2_000)
    stub = _stub(first)
    job = _submit(stub, task="add10", digits=150, model="oracle-add10", checks=[jobs_pb2.LENGTH_CHECK_RLG])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        finished, early = _stored_progress(tmp_path / "service.db", job.job_id)
        if finished >= 10 and early >= 1:
            break
        time.sleep(0.001)
    first.stop()

    database = sqlite3.connect(tmp_path / "service.db")
    finished_before = {index: result for index, result in database.execute("SELECT idx, result FROM rollouts "
                                                                            "WHERE job_id = ?", (job.job_id,))}
    checkpoints = database.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
    database.close()
    assert 10 <= len(finished_before) < 81
    assert checkpoints >= 1

    second = _start(tmp_path, chunk_steps=2_000)
    try:
        final, rollouts, _ = _watch(_stub(second), job.job_id)
    finally:
        second.stop()

    assert final.state == jobs_pb2.JOB_STATE_SUCCEEDED
    assert final.eval_report.all_correct
    assert len(rollouts) == 81
    database = sqlite3.connect(tmp_path / "service.db")
    finished_after = dict(database.execute("SELECT idx, result FROM rollouts WHERE job_id = ?", (job.job_id,)))
    database.close()
    for index, result in finished_before.items():
        assert finished_after[index] == result, f"rollout {index} was redone"


def test_training_job_saves_user_model(server, tmp_path, monkeypatch):
    monkeypatch.setenv("DFST_MODEL_DIR", str(tmp_path / "registry"))
    stub = _stub(server)
    config = json.dumps({"iterations": 300, "log_every": 50, "checkpoint_every": 100})
    spec = jobs_pb2.TrainingSpec(task="add2", config_json=config, model_name="service-add2")
    job = stub.SubmitTraining(service_pb2.SubmitTrainingRequest(spec=spec), timeout=RPC_TIMEOUT_S).job
    final, _, kinds = _watch(stub, job.job_id)

    assert final.state == jobs_pb2.JOB_STATE_SUCCEEDED, final.error
    assert final.training_report.model_name == "service-add2"
    assert final.training_report.iterations == 300
    assert (tmp_path / "registry" / "service-add2.safetensors").is_file()
    assert final.training_report.checkpoint_path == str(tmp_path / "registry" / "service-add2.safetensors")


def test_report_equals_library_evaluation(server):
    from dfst.evaluation import evaluate
    from dfst.registry import load_model

    stub = _stub(server)
    job = _submit(stub, task="add2", digits=24, model="add2", seed=3)
    final, _, _ = _watch(stub, job.job_id)
    service_report = json.loads(final.eval_report.report_json)
    weights, _ = load_model("add2")
    library_report = json.loads(evaluate(weights, "add2", 24, seed=3, workers=1, model_name="add2").to_json())

    for key in ("schema", "task", "model_name", "model_sha256", "digits", "seed", "dtype", "verdicts", "total_steps"):
        assert service_report[key] == library_report[key], key
    for served, computed in zip(service_report["pairs"], library_report["pairs"], strict=True):
        for key in ("check", "a_digits", "b_digits", "outcome", "steps", "first_wrong_digit"):
            assert served[key] == computed[key], key


def test_watch_reconnects_after_server_restart(ray_session, tmp_path):
    import threading

    from dfst.client.watch import watch_job

    # 2000-step chunks make each of the 81 rollouts (about 80000 steps) take 40 chunks, so the job is
    # still running when the server stops after the fifth finished rollout
    first = _start(tmp_path, chunk_steps=2_000)
    port = first.port
    stub = _stub(first)
    job = _submit(stub, task="add10", digits=200, model="oracle-add10", checks=[jobs_pb2.LENGTH_CHECK_RLG])
    outcome = {}
    watcher = threading.Thread(target=lambda: outcome.update(result=watch_job(stub, job.job_id, False)))
    watcher.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        progress = stub.GetJob(service_pb2.GetJobRequest(job_id=job.job_id), timeout=RPC_TIMEOUT_S).job.progress
        if progress.rollouts_done >= 5:
            break
        time.sleep(0.01)
    state_at_stop = stub.GetJob(service_pb2.GetJobRequest(job_id=job.job_id), timeout=RPC_TIMEOUT_S).job.state
    first.stop()
    second = DfstServer(ServerConfig(port=port, data_dir=tmp_path, manager=ManagerConfig(
        workers=WorkerConfig(num_workers=2, chunk_steps=2_000)))).start()
    try:
        watcher.join(timeout=120)
    finally:
        second.stop()

    assert state_at_stop == jobs_pb2.JOB_STATE_RUNNING
    assert not watcher.is_alive()
    assert outcome["result"].job.state == jobs_pb2.JOB_STATE_SUCCEEDED
    assert sorted(outcome["result"].rollouts) == list(range(81))


def test_health_and_reflection(server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    channel = grpc.insecure_channel(server.address)
    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="dfst.v1.DfstService"), timeout=RPC_TIMEOUT_S)
    replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=RPC_TIMEOUT_S)
    services = {service.name for reply in replies for service in reply.list_services_response.service}

    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert "dfst.v1.DfstService" in services
    assert "grpc.health.v1.Health" in services


def test_model_paths_refused_when_disallowed(ray_session, tmp_path):
    from dfst import get_expert, oracle_weights
    from dfst.checkpoint import save_checkpoint

    existing = save_checkpoint(tmp_path / "real.safetensors", oracle_weights(get_expert("add2")), {"task": "add2"})
    config = ServerConfig(port=0, data_dir=tmp_path / "data", allow_model_paths=False,
                          manager=ManagerConfig(workers=WorkerConfig(num_workers=1)))
    server = DfstServer(config).start()
    try:
        stub = _stub(server)
        messages = []
        for model in (str(existing), str(tmp_path / "missing.safetensors")):
            with pytest.raises(grpc.RpcError) as error:
                _submit(stub, task="add2", digits=4, model=model)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            messages.append(error.value.details())
        assert messages[0] == messages[1]
        assert "registry name" in messages[0]
        accepted = _submit(stub, task="add2", digits=4, model="oracle-add2")
        assert accepted.job_id
    finally:
        server.stop()


def test_model_paths_default_follows_loopback(tmp_path):
    server = DfstServer(ServerConfig(port=0, data_dir=tmp_path / "data"))
    try:
        assert server.manager.config.allow_model_paths
    finally:
        server.stop()
