"""Metrics of a running dfst server: real gRPC on loopback, one real local Ray instance."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import grpc
import ray
from dfst.server.app import DfstServer
from metrics_helpers import RPC_TIMEOUT_S, report_steps, start_server, submit_eval, wait_for_job
from prometheus_client.parser import text_string_to_metric_families

from dfst.v1 import jobs_pb2, service_pb2, service_pb2_grpc


def sample(server: DfstServer, name: str, **labels: str) -> float | None:
    return server.metrics.registry.get_sample_value(name, labels)


def test_step_counter_equals_report_steps(ray_session, tmp_path):
    # Chunks of 300 steps split each 20-digit rollout (about 2·20² steps) into several reports.
    server = start_server(tmp_path)
    try:
        job, streamed_steps = wait_for_job(server.address, submit_eval(server.address, "add10", 20))
        assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED
        steps = report_steps(job)
        assert streamed_steps == steps
        assert steps > 91 * 300
        assert sample(server, "dfst_rollout_steps_total", task="add10") == steps
        assert sample(server, "dfst_rollouts_finished_total", task="add10", outcome="correct") == 91
        assert sample(server, "dfst_jobs_submitted_total", kind="eval", task="add10") == 1
        assert sample(server, "dfst_jobs_finished_total", kind="eval", task="add10", outcome="succeeded") == 1
        assert sample(server, "dfst_jobs_queued", kind="eval") == 0
        assert sample(server, "dfst_jobs_running", kind="eval") == 0
        assert sample(server, "dfst_job_duration_seconds_count", kind="eval", outcome="succeeded") == 1
        assert sample(server, "dfst_workers", kind="eval") == 2
    finally:
        server.stop()


def test_cancel_updates_job_gauges(ray_session, tmp_path):
    server = start_server(tmp_path, num_workers=1, chunk_steps=1000)
    try:
        job_id = submit_eval(server.address, "add10", 300)
        with grpc.insecure_channel(server.address) as channel:
            stub = service_pb2_grpc.DfstServiceStub(channel)
            stub.CancelJob(service_pb2.CancelJobRequest(job_id=job_id), timeout=RPC_TIMEOUT_S)
        assert sample(server, "dfst_jobs_finished_total", kind="eval", task="add10", outcome="cancelled") == 1
        assert sample(server, "dfst_jobs_queued", kind="eval") == 0
        assert sample(server, "dfst_jobs_running", kind="eval") == 0
    finally:
        server.stop()


def test_worker_restart_counted(ray_session, tmp_path):
    # One worker and small chunks, so the job is still running when its worker process is killed.
    server = start_server(tmp_path, num_workers=1, chunk_steps=2000)
    # The only worker, idle before the job is submitted.
    [worker] = server.manager._idle

    def kill_worker() -> None:
        os.kill(ray.get(worker.pid.remote(), timeout=60), signal.SIGKILL)

    try:
        job, _ = wait_for_job(server.address, submit_eval(server.address, "add10", 100), on_progress=kill_worker)
        assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED
        assert sample(server, "dfst_worker_restarts_total", kind="eval") == 1
        # A chunk lost with the process runs again from the saved state, so no step is counted twice.
        assert sample(server, "dfst_rollout_steps_total", task="add10") == report_steps(job)
    finally:
        server.stop()


def test_replaced_worker_counted(ray_session, tmp_path):
    server = start_server(tmp_path, num_workers=1, chunk_steps=2000)
    [worker] = server.manager._idle

    def kill_worker_for_good() -> None:
        # no_restart=True: Ray does not restart the actor, so the manager must replace it.
        ray.kill(worker, no_restart=True)

    try:
        job, _ = wait_for_job(server.address, submit_eval(server.address, "add10", 100),
                              on_progress=kill_worker_for_good)
        assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED
        assert sample(server, "dfst_worker_restarts_total", kind="eval") == 1
        assert sample(server, "dfst_rollout_steps_total", task="add10") == report_steps(job)
    finally:
        server.stop()


def test_training_metrics(ray_session, tmp_path):
    server = start_server(tmp_path, num_workers=1)
    config = {"iterations": 300, "batch_size": 4, "log_every": 10, "checkpoint_every": 100}
    spec = jobs_pb2.TrainingSpec(task="add2", config_json=json.dumps(config))
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = service_pb2_grpc.DfstServiceStub(channel)
            job_id = stub.SubmitTraining(service_pb2.SubmitTrainingRequest(spec=spec), timeout=RPC_TIMEOUT_S).job.job_id
        job, _ = wait_for_job(server.address, job_id)
        assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED
        assert job.training_report.iterations == 300
        assert sample(server, "dfst_training_iterations_total", task="add2") == 300
        assert sample(server, "dfst_jobs_finished_total", kind="training", task="add2", outcome="succeeded") == 1
        # The loss series goes away with the last running training job of the task.
        assert sample(server, "dfst_training_loss", task="add2") is None
        assert sample(server, "dfst_jobs_running", kind="training") == 0
    finally:
        server.stop()


def test_metrics_endpoint_serves_registry(ray_session, tmp_path):
    server = start_server(tmp_path, metrics_port=0)
    try:
        assert server.metrics_http.host == "127.0.0.1"
        job, _ = wait_for_job(server.address, submit_eval(server.address, "add2", 8))
        with urllib.request.urlopen(server.metrics_http.url, timeout=10) as response:
            text = response.read().decode()
    finally:
        server.stop()
    values = {
        (item.name, tuple(sorted(item.labels.items()))): item.value
        for family in text_string_to_metric_families(text)
        for item in family.samples
    }
    assert values[("dfst_rollout_steps_total", (("task", "add2"),))] == report_steps(job)
    assert values[("dfst_build_info", (("version", "0.1.0"),))] == 1


def test_metrics_endpoint_off_by_default(ray_session, tmp_path):
    server = start_server(tmp_path)
    try:
        assert server.metrics_http is None
    finally:
        server.stop()


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_command_joins_ray_address(ray_session, tmp_path):
    # `dfst-client serve` as the cluster manifests run it: Ray's address from $RAY_ADDRESS, metrics on.
    grpc_port, metrics_port = free_loopback_port(), free_loopback_port()
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "NUMBA_NUM_THREADS": "1"}
    command = [sys.executable, "-c", "from dfst.client.cli import main; main()", "serve", "--host", "127.0.0.1",
               "--port", str(grpc_port), "--metrics-port", str(metrics_port), "--data-dir", str(tmp_path),
               "--workers", "1"]
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        text = None
        deadline = time.monotonic() + 120
        while text is None and time.monotonic() < deadline:
            assert process.poll() is None, log_path.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
                    text = response.read().decode()
            except OSError:
                time.sleep(0.5)
        assert text is not None, log_path.read_text()[-3000:]
        assert "dfst_jobs_queued" in text

        job, _ = wait_for_job(f"127.0.0.1:{grpc_port}", submit_eval(f"127.0.0.1:{grpc_port}", "add2", 6))
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        values = {
            (item.name, tuple(sorted(item.labels.items()))): item.value
            for family in text_string_to_metric_families(text)
            for item in family.samples
        }
        assert values[("dfst_rollout_steps_total", (("task", "add2"),))] == report_steps(job)
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=60)
    assert returncode == 0, log_path.read_text()[-3000:]
