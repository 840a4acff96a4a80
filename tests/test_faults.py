"""Fault injection on loopback: a killed worker, a killed server, a dropped watcher, an unusable data folder.

Every server binds 127.0.0.1; the only processes killed are the rollout
worker and the server subprocess that these tests start themselves.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import grpc
import pytest
import ray
from grpc_health.v1 import health_pb2
from reliability_helpers import health_status, start_server

from dfst.v1 import jobs_pb2, service_pb2, service_pb2_grpc

RPC_TIMEOUT_S = 30.0
JOB_TIMEOUT_S = 240.0
CHUNK_STEPS = 2_000_000
# add2 repdigits at 5000 digits take about 50 million steps: about 25 chunks of CHUNK_STEPS.
LONG_RLG = dict(task="add2", digits=5000, checks=[jobs_pb2.LENGTH_CHECK_RLG], model="oracle-add2")
# add2 at 2500 digits, PLG and RLG: 11 rollouts of up to about 12.5 million steps each.
MANY_ROLLOUTS = dict(task="add2", digits=2500, model="oracle-add2")


def _stub(address: str) -> service_pb2_grpc.DfstServiceStub:
    return service_pb2_grpc.DfstServiceStub(grpc.insecure_channel(address))


def _submit(stub, **fields) -> str:
    spec = jobs_pb2.EvalSpec(**fields)
    return stub.SubmitEval(service_pb2.SubmitEvalRequest(spec=spec), timeout=RPC_TIMEOUT_S).job.job_id


def _get(stub, job_id: str) -> jobs_pb2.Job:
    return stub.GetJob(service_pb2.GetJobRequest(job_id=job_id), timeout=RPC_TIMEOUT_S).job


def _watch(stub, job_id: str) -> list[service_pb2.WatchJobResponse]:
    return list(stub.WatchJob(service_pb2.WatchJobRequest(job_id=job_id), timeout=JOB_TIMEOUT_S))


def _wait_until(condition, what: str, timeout_s: float = JOB_TIMEOUT_S, interval_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _verdicts(job: jobs_pb2.Job) -> dict:
    """Return the report without per-rollout timings, which differ between runs."""
    return _without_timings(json.loads(job.eval_report.report_json))


def _is_timing(key: str) -> bool:
    return "seconds" in key or "per_second" in key or key.endswith("_s")


def _without_timings(value):
    if isinstance(value, dict):
        return {key: _without_timings(item) for key, item in value.items() if not _is_timing(key)}
    if isinstance(value, list):
        return [_without_timings(item) for item in value]
    return value


# worker killed mid-rollout


def test_killed_worker_resumes_from_last_chunk(ray_session, tmp_path):
    server = start_server(tmp_path / "data", num_workers=1, chunk_steps=CHUNK_STEPS)
    try:
        stub = _stub(server.address)
        reference = _watch(stub, _submit(stub, **LONG_RLG))[-1].job
        assert reference.state == jobs_pb2.JOB_STATE_SUCCEEDED, reference.error

        worker = server.manager._idle[0]  # the only rollout worker, idle between jobs
        old_pid = ray.get(worker.pid.remote(), timeout=RPC_TIMEOUT_S)
        job_id = _submit(stub, **LONG_RLG)
        events: list[service_pb2.WatchJobResponse] = []
        errors: list[grpc.RpcError] = []

        def watch() -> None:
            try:
                events.extend(_watch(_stub(server.address), job_id))
            except grpc.RpcError as error:
                errors.append(error)

        watcher = threading.Thread(target=watch)
        watcher.start()
        _wait_until(lambda: _get(stub, job_id).progress.steps_done >= 3 * CHUNK_STEPS, "three chunks")
        steps_at_kill = _get(stub, job_id).progress.steps_done
        os.kill(old_pid, signal.SIGKILL)
        watcher.join(JOB_TIMEOUT_S)
        assert not watcher.is_alive()
        assert not errors, f"the watch failed: {errors[0].code().name}: {errors[0].details()}"

        final = events[-1].job
        assert final.state == jobs_pb2.JOB_STATE_SUCCEEDED, final.error
        assert _verdicts(final) == _verdicts(reference)
        assert ray.get(worker.pid.remote(), timeout=RPC_TIMEOUT_S) != old_pid  # Ray restarted the actor

        # Every chunk after the kill continued from the stored state: the progress of the single rollout
        # never went back, and each step forward is at most one chunk, so no more than the killed chunk's
        # work was done twice.
        progress = [event.progress.steps_done for event in events if event.WhichOneof("event") == "progress"]
        assert any(steps > steps_at_kill for steps in progress)
        assert all(later >= earlier for earlier, later in zip(progress, progress[1:], strict=False))
        assert all(later - earlier <= CHUNK_STEPS for earlier, later in zip(progress, progress[1:], strict=False))
        assert min(steps for steps in progress if steps > 0) == CHUNK_STEPS
    finally:
        server.stop()


# server killed mid-job


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_server_process(data_dir, port: int) -> subprocess.Popen:
    """Start `dfst-client serve` in a subprocess that joins this session's Ray instance; wait until SERVING."""
    command = [
        sys.executable, "-c", "from dfst.client.cli import main; main()", "serve", "--host", "127.0.0.1",
        "--port", str(port), "--data-dir", str(data_dir), "--workers", "1", "--chunk-steps", str(CHUNK_STEPS),
        "--ray-address", ray.get_runtime_context().gcs_address, "--metrics-port", "0",
    ]
    log = open(data_dir.parent / f"server-{port}-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115 - kept open
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "DFST_TOKEN": ""})

    def serving() -> bool:
        assert process.poll() is None, f"server exited with {process.returncode}; see {log.name}"
        try:
            return health_status(f"127.0.0.1:{port}") == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False

    _wait_until(serving, "the server subprocess", timeout_s=120, interval_s=0.5)
    return process


def _stored_rollouts(data_dir, job_id: str) -> dict[int, str]:
    database = sqlite3.connect(data_dir / "service.db")
    try:
        rows = database.execute("SELECT idx, result FROM rollouts WHERE job_id = ?", (job_id,)).fetchall()
    finally:
        database.close()
    return dict(rows)


def test_killed_server_resumes_jobs(ray_session, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    port = _free_port()
    process = _start_server_process(data_dir, port)
    try:
        stub = _stub(f"127.0.0.1:{port}")
        done_id = _submit(stub, task="add2", digits=8, model="oracle-add2")
        assert _watch(stub, done_id)[-1].job.state == jobs_pb2.JOB_STATE_SUCCEEDED
        long_id = _submit(stub, **MANY_ROLLOUTS)
        queued_id = _submit(stub, task="add2", digits=8, model="oracle-add2")
        _wait_until(lambda: _get(stub, long_id).progress.rollouts_done >= 3, "three finished rollouts")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()

    finished_before = _stored_rollouts(data_dir, long_id)
    assert 3 <= len(finished_before) < 11

    port = _free_port()
    process = _start_server_process(data_dir, port)
    try:
        stub = _stub(f"127.0.0.1:{port}")
        resumed = _watch(stub, long_id)[-1].job
        assert resumed.state == jobs_pb2.JOB_STATE_SUCCEEDED, resumed.error
        assert _watch(stub, queued_id)[-1].job.state == jobs_pb2.JOB_STATE_SUCCEEDED
        reference = _watch(stub, _submit(stub, **MANY_ROLLOUTS))[-1].job
        listed = stub.ListJobs(service_pb2.ListJobsRequest(), timeout=RPC_TIMEOUT_S).jobs
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)

    assert _verdicts(resumed) == _verdicts(reference)
    # Finished rollouts were kept byte for byte (a rerun would store a new timing), and none is stored twice.
    finished_after = _stored_rollouts(data_dir, long_id)
    assert len(finished_after) == 11
    for index, result in finished_before.items():
        assert finished_after[index] == result
    # No job was lost or duplicated.
    listed_ids = [job.job_id for job in listed]
    assert len(listed_ids) == len(set(listed_ids)) == 4
    assert {done_id, long_id, queued_id} <= set(listed_ids)
    assert all(job.state == jobs_pb2.JOB_STATE_SUCCEEDED for job in listed)


# client disconnects while watching


@pytest.fixture
def server(ray_session, tmp_path):
    running = start_server(tmp_path / "data", num_workers=1, chunk_steps=CHUNK_STEPS)
    yield running
    running.stop()


def test_dropped_watch_keeps_job_running(server):
    stub = _stub(server.address)
    job_id = _submit(stub, **MANY_ROLLOUTS)
    channel = grpc.insecure_channel(server.address)
    stream = service_pb2_grpc.DfstServiceStub(channel).WatchJob(
        service_pb2.WatchJobRequest(job_id=job_id), timeout=JOB_TIMEOUT_S
    )
    first_events = [next(stream) for _ in range(2)]
    assert first_events[0].WhichOneof("event") == "job"
    stream.cancel()
    channel.close()

    # The server drops the watcher's event queue, and the job carries on without it.
    _wait_until(lambda: not server.manager._subscribers.get(job_id), "the watch to be released", timeout_s=10)
    assert _get(stub, job_id).state in (jobs_pb2.JOB_STATE_QUEUED, jobs_pb2.JOB_STATE_RUNNING)
    _wait_until(lambda: _get(stub, job_id).progress.rollouts_done >= 2, "progress without a watcher")

    events = _watch(stub, job_id)
    rollouts = {event.rollout.index for event in events if event.WhichOneof("event") == "rollout"}
    assert events[-1].job.state == jobs_pb2.JOB_STATE_SUCCEEDED
    assert rollouts == set(range(11))


def test_client_reattaches_with_cli(server):
    from dfst.client.cli import app
    from typer.testing import CliRunner

    stub = _stub(server.address)
    job_id = _submit(stub, **MANY_ROLLOUTS)
    stream = stub.WatchJob(service_pb2.WatchJobRequest(job_id=job_id), timeout=JOB_TIMEOUT_S)
    next(stream)
    stream.cancel()

    result = CliRunner().invoke(app, ["jobs", "watch", job_id, "--json", "--server", server.address])
    assert result.exit_code == 0, result.output
    assert _get(stub, job_id).state == jobs_pb2.JOB_STATE_SUCCEEDED


# unusable data folder


def test_data_dir_is_a_file(tmp_path):
    from dfst.server.app import DfstServer, ServerConfig
    from dfst.server.store import StoreError

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(StoreError, match="not-a-folder"):
        DfstServer(ServerConfig(port=0, data_dir=blocker))


def test_serve_cli_data_dir_is_a_file(tmp_path):
    from dfst.client.cli import app
    from typer.testing import CliRunner

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    result = CliRunner().invoke(app, ["serve", "--port", "0", "--data-dir", str(blocker / "sub")])
    assert result.exit_code == 2
    assert "data folder" in result.output


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder the server cannot write: a read-only tmpfs mount for root, mode 0555 otherwise."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"root cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def test_read_only_data_dir_fails_at_start(read_only_dir):
    from dfst.server.app import DfstServer, ServerConfig
    from dfst.server.store import StoreError

    with pytest.raises(StoreError, match="writable|cannot") as caught:
        DfstServer(ServerConfig(port=0, data_dir=read_only_dir / "data"))
    assert str(read_only_dir) in str(caught.value)


def _tmpfs(folder, size: str):
    """Mount a tmpfs of ``size`` on ``folder`` for the duration of a test; needs root, as mounting does."""
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a full file system needs a tmpfs mount, which needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"root cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


@pytest.fixture
def tiny_dir(tmp_path):
    """A 256 KiB tmpfs mount."""
    yield from _tmpfs(tmp_path / "tiny", "256k")


@pytest.fixture
def small_dir(tmp_path):
    """A 16 MiB tmpfs mount: room for SQLite's write-ahead log, which grows to about 4 MiB between checkpoints."""
    yield from _tmpfs(tmp_path / "small", "16m")


def _fill(folder) -> None:
    """Write zeros into ``folder`` until the file system is full."""
    try:
        with open(folder / "filler", "wb") as filler:
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
    except OSError:
        pass  # ENOSPC: the file system is full


def test_full_disk_fails_at_start(tiny_dir):
    from dfst.server.app import DfstServer, ServerConfig
    from dfst.server.store import StoreError

    _fill(tiny_dir)
    with pytest.raises(StoreError, match="service.db"):
        DfstServer(ServerConfig(port=0, data_dir=tiny_dir))


def test_full_disk_rejects_submission(ray_session, tiny_dir):
    """A submission the store cannot write is rejected with a status, never acknowledged and lost."""
    server = start_server(tiny_dir, num_workers=1)
    try:
        stub = _stub(server.address)
        _fill(tiny_dir)
        with pytest.raises(grpc.RpcError) as caught:
            for _ in range(50):  # the WAL may absorb the first few writes
                _submit(stub, task="add2", digits=8, model="oracle-add2")
        assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "full" in caught.value.details()
        assert health_status(server.address) == health_pb2.HealthCheckResponse.SERVING
    finally:
        (tiny_dir / "filler").unlink(missing_ok=True)
        server.stop()


def test_full_disk_mid_job_waits_then_finishes(ray_session, small_dir):
    """Chunks that finish while the disk is full are kept until space returns; the job then completes."""
    server = start_server(small_dir, num_workers=1, chunk_steps=20_000)
    try:
        stub = _stub(server.address)
        # add2 repdigits at 2000 digits: about 8 million steps, so 400 chunks, which
        # keeps the job running for seconds after the first chunk even on an idle machine.
        job_id = _submit(stub, task="add2", digits=2000, checks=[jobs_pb2.LENGTH_CHECK_RLG], model="oracle-add2")
        _wait_until(lambda: _get(stub, job_id).progress.steps_done > 0, "the first chunk", timeout_s=60)
        _fill(small_dir)
        time.sleep(3)  # several chunks finish on the worker while no write can succeed
        assert _get(stub, job_id).state == jobs_pb2.JOB_STATE_RUNNING
        assert health_status(server.address) == health_pb2.HealthCheckResponse.SERVING

        (small_dir / "filler").unlink()
        final = _watch(stub, job_id)[-1].job
        assert final.state == jobs_pb2.JOB_STATE_SUCCEEDED, final.error
        assert final.eval_report.all_correct
        assert _stored_rollouts(small_dir, job_id).keys() == {0}
    finally:
        (small_dir / "filler").unlink(missing_ok=True)
        server.stop()
