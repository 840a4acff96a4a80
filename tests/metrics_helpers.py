"""Start a dfst server with metrics, submit an evaluation and read its report: helpers of the metrics tests."""

from __future__ import annotations

import json

import grpc
from dfst.server.app import DfstServer, ServerConfig
from dfst.server.manager import ManagerConfig
from dfst.workers.actors import WorkerConfig

from dfst.v1 import jobs_pb2, service_pb2, service_pb2_grpc

RPC_TIMEOUT_S = 30
WATCH_TIMEOUT_S = 300


def start_server(data_dir, num_workers: int = 2, chunk_steps: int = 300, metrics_port: int | None = None) -> DfstServer:
    """Start a server on 127.0.0.1 with the oracle models; Ray must already be initialised."""
    workers = WorkerConfig(num_workers=num_workers, chunk_steps=chunk_steps)
    config = ServerConfig(port=0, data_dir=data_dir, manager=ManagerConfig(workers=workers), metrics_port=metrics_port)
    return DfstServer(config).start()


def submit_eval(address: str, task: str, digits: int, seed: int = 3) -> str:
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.DfstServiceStub(channel)
        spec = jobs_pb2.EvalSpec(task=task, digits=digits, model=f"oracle-{task}", seed=seed)
        return stub.SubmitEval(service_pb2.SubmitEvalRequest(spec=spec), timeout=RPC_TIMEOUT_S).job.job_id


def wait_for_job(address: str, job_id: str, on_progress=None) -> tuple[jobs_pb2.Job, int]:
    """Watch a job to its end, and return the final job message and the steps summed over its streamed rollouts.

    ``on_progress`` is called once, at the first progress event.
    """
    final = None
    rollout_steps: dict[int, int] = {}
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.DfstServiceStub(channel)
        for event in stub.WatchJob(service_pb2.WatchJobRequest(job_id=job_id), timeout=WATCH_TIMEOUT_S):
            kind = event.WhichOneof("event")
            if kind == "job":
                final = event.job
            elif kind == "rollout":
                rollout_steps[event.rollout.index] = event.rollout.steps
            elif kind == "progress" and on_progress is not None:
                on_progress()
                on_progress = None
    return final, sum(rollout_steps.values())


def report_steps(job: jobs_pb2.Job) -> int:
    """Return the steps of every rollout in the job's report, summed."""
    report = json.loads(job.eval_report.report_json)
    return sum(pair["steps"] for pair in report["pairs"])
