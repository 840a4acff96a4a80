"""Bounded load test of the dfst server on loopback: concurrent clients submit and watch small evaluations.

Starts ``dfst-client serve`` on 127.0.0.1 in a subprocess (its own local Ray
instance) unless --server points at a running loopback server, then runs
--clients threads.  Each client submits --jobs-per-client evaluations (add2 at
8 digits, oracle model, PLG and RLG: 11 rollouts) one after another and
watches each to its end; a RESOURCE_EXHAUSTED reply (queue full) makes it wait
and submit again.  A monitor thread checks health every 0.2 s, counts the
queued and running jobs and reads the server's resident memory.

It prints throughput, latency percentiles, rejections, health latency and
memory, and exits 1 if any job was lost, duplicated, failed or wrong, if the
queue ever held more than its limit, or if a health check failed.

Usage: python benchmarks/load_test.py [--clients 50] [--jobs-per-client 4] [--max-active-jobs 16]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import pathlib
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dfst.v1 import jobs_pb2, service_pb2, service_pb2_grpc

logger = logging.getLogger(__name__)

RPC_TIMEOUT_S = 30.0  # deadline of every unary call
WATCH_TIMEOUT_S = 600.0  # deadline of one WatchJob call
HEALTH_TIMEOUT_S = 5.0  # deadline of one health check
MONITOR_PERIOD_S = 0.2  # interval of health checks, queue counts and memory samples
BACKOFF_S = (0.05, 0.5)  # range of the random wait after RESOURCE_EXHAUSTED
ROLLOUTS_PER_JOB = 11  # add2 at n digits: 10 PLG pairs and 1 RLG pair
ACTIVE_STATES = [jobs_pb2.JOB_STATE_QUEUED, jobs_pb2.JOB_STATE_RUNNING]


@dataclasses.dataclass
class LoadResult:
    """What one load run measured."""

    clients: int  # concurrent client threads
    accepted: list[str]  # job ids the server accepted, in acceptance order
    succeeded: set[str]  # accepted jobs that ended succeeded with every pair correct
    failures: list[str]  # one line per job that failed, was wrong or could not be watched
    rejections: int  # submissions rejected with RESOURCE_EXHAUSTED
    other_errors: list[str]  # unexpected rpc errors, one line each
    job_latencies_s: list[float]  # per job: first submission attempt to final event, seconds
    submit_latencies_s: list[float]  # per accepted SubmitEval call, seconds
    health_latencies_s: list[float]  # per health check, seconds
    health_failures: int  # health checks that did not return SERVING
    max_active_jobs_seen: int  # largest queued + running count the monitor saw
    rss_samples_kib: list[int]  # server resident memory samples, KiB; empty when not measurable
    wall_s: float  # duration of the client phase, seconds
    listed_ids: list[str]  # job ids ListJobs returned at the end


def percentile(values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile of ``values`` (nan when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def _rss_kib(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _client(address: str, jobs: int, spec: jobs_pb2.EvalSpec, result: LoadResult, lock: threading.Lock,
            start: threading.Barrier) -> None:
    rng = random.Random(threading.get_ident())
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.DfstServiceStub(channel)
        start.wait()
        for _ in range(jobs):
            first_attempt = time.monotonic()
            job_id = None
            while job_id is None:
                began = time.monotonic()
                try:
                    reply = stub.SubmitEval(service_pb2.SubmitEvalRequest(spec=spec), timeout=RPC_TIMEOUT_S)
                except grpc.RpcError as error:
                    with lock:
                        if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                            result.rejections += 1
                        else:
                            result.other_errors.append(f"SubmitEval: {error.code().name}: {error.details()}")
                            return
                    time.sleep(rng.uniform(*BACKOFF_S))
                    continue
                job_id = reply.job.job_id
                with lock:
                    result.accepted.append(job_id)
                    result.submit_latencies_s.append(time.monotonic() - began)
            try:
                events = list(stub.WatchJob(service_pb2.WatchJobRequest(job_id=job_id), timeout=WATCH_TIMEOUT_S))
            except grpc.RpcError as error:
                with lock:
                    result.failures.append(f"{job_id}: watch failed: {error.code().name}: {error.details()}")
                continue
            final = events[-1].job
            rollouts = {event.rollout.index for event in events if event.WhichOneof("event") == "rollout"}
            with lock:
                result.job_latencies_s.append(time.monotonic() - first_attempt)
                if final.state != jobs_pb2.JOB_STATE_SUCCEEDED or not final.eval_report.all_correct:
                    result.failures.append(f"{job_id}: state {final.state}, all_correct "
                                           f"{final.eval_report.all_correct}, error {final.error!r}")
                elif len(rollouts) != ROLLOUTS_PER_JOB:
                    result.failures.append(f"{job_id}: watched {len(rollouts)} of {ROLLOUTS_PER_JOB} rollouts")
                else:
                    result.succeeded.add(job_id)


def _monitor(address: str, pid: int | None, result: LoadResult, lock: threading.Lock, stop: threading.Event) -> None:
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        stub = service_pb2_grpc.DfstServiceStub(channel)
        while not stop.wait(MONITOR_PERIOD_S):
            began = time.monotonic()
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=HEALTH_TIMEOUT_S).status
                serving = status == health_pb2.HealthCheckResponse.SERVING
            except grpc.RpcError:
                serving = False
            elapsed = time.monotonic() - began
            try:
                active = len(stub.ListJobs(service_pb2.ListJobsRequest(limit=100_000, states=ACTIVE_STATES),
                                           timeout=RPC_TIMEOUT_S).jobs)
            except grpc.RpcError as error:
                active = 0
                with lock:
                    result.other_errors.append(f"ListJobs: {error.code().name}: {error.details()}")
            rss = _rss_kib(pid)
            with lock:
                result.health_latencies_s.append(elapsed)
                result.health_failures += not serving
                result.max_active_jobs_seen = max(result.max_active_jobs_seen, active)
                if rss is not None:
                    result.rss_samples_kib.append(rss)


def run_load(address: str, clients: int, jobs_per_client: int, spec: jobs_pb2.EvalSpec,
             server_pid: int | None = None) -> LoadResult:
    """Run ``clients`` threads of ``jobs_per_client`` jobs each against ``address``; return the measurements."""
    result = LoadResult(clients, [], set(), [], 0, [], [], [], [], 0, 0, [], 0.0, [])
    lock = threading.Lock()
    stop = threading.Event()
    start = threading.Barrier(clients + 1)
    monitor = threading.Thread(target=_monitor, args=(address, server_pid, result, lock, stop), daemon=True)
    threads = [threading.Thread(target=_client, args=(address, jobs_per_client, spec, result, lock, start))
               for _ in range(clients)]
    for thread in threads:
        thread.start()
    monitor.start()
    start.wait()
    began = time.monotonic()
    for thread in threads:
        thread.join()
    result.wall_s = time.monotonic() - began
    stop.set()
    monitor.join()
    with grpc.insecure_channel(address) as channel:
        listed = service_pb2_grpc.DfstServiceStub(channel).ListJobs(
            service_pb2.ListJobsRequest(limit=100_000), timeout=RPC_TIMEOUT_S
        ).jobs
    result.listed_ids = [job.job_id for job in listed]
    return result


def problems(result: LoadResult, max_active_jobs: int, expected_jobs: int) -> list[str]:
    """Return every violated property of a load run; empty when the run is clean."""
    found = list(result.other_errors) + list(result.failures)
    if len(result.accepted) != expected_jobs:
        found.append(f"{len(result.accepted)} jobs accepted, expected {expected_jobs}")
    if len(set(result.accepted)) != len(result.accepted):
        found.append("the server returned a job id twice")
    if result.succeeded != set(result.accepted):
        found.append(f"{len(set(result.accepted) - result.succeeded)} accepted jobs did not succeed")
    missing = set(result.accepted) - set(result.listed_ids)
    if missing:
        found.append(f"{len(missing)} accepted jobs are missing from ListJobs")
    if len(set(result.listed_ids)) != len(result.listed_ids):
        found.append("ListJobs returned a job twice")
    if result.max_active_jobs_seen > max_active_jobs:
        found.append(f"{result.max_active_jobs_seen} jobs were active at once, above the limit {max_active_jobs}")
    if result.health_failures:
        found.append(f"{result.health_failures} health checks did not return SERVING")
    return found


def summary(result: LoadResult) -> dict:
    """Return the headline numbers of a load run, times in milliseconds."""
    def ms(values: list[float], fraction: float) -> float:
        return round(1000 * percentile(values, fraction), 1)

    return {
        "clients": result.clients,
        "jobs_completed": len(result.succeeded),
        "rollouts_completed": len(result.succeeded) * ROLLOUTS_PER_JOB,
        "wall_s": round(result.wall_s, 2),
        "jobs_per_s": round(len(result.succeeded) / result.wall_s, 2) if result.wall_s else 0.0,
        "job_latency_ms": {name: ms(result.job_latencies_s, q) for name, q in (("p50", .5), ("p90", .9),
                                                                               ("p99", .99), ("max", 1.0))},
        "submit_latency_ms": {name: ms(result.submit_latencies_s, q) for name, q in (("p50", .5), ("p99", .99))},
        "resource_exhausted": result.rejections,
        "max_active_jobs_seen": result.max_active_jobs_seen,
        "health_checks": len(result.health_latencies_s),
        "health_failures": result.health_failures,
        "health_latency_ms": {name: ms(result.health_latencies_s, q) for name, q in (("p50", .5), ("p99", .99),
                                                                                     ("max", 1.0))},
        "server_rss_mib": {
            "first": round(result.rss_samples_kib[0] / 1024, 1) if result.rss_samples_kib else None,
            "max": round(max(result.rss_samples_kib) / 1024, 1) if result.rss_samples_kib else None,
            "last": round(result.rss_samples_kib[-1] / 1024, 1) if result.rss_samples_kib else None,
        },
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_server(data_dir: pathlib.Path, max_active_jobs: int, workers: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    command = [sys.executable, "-c", "from dfst.client.cli import main; main()", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--data-dir", str(data_dir), "--max-active-jobs", str(max_active_jobs),
               "--workers", str(workers), "--metrics-port", "0"]
    log_path = pathlib.Path(tempfile.gettempdir()) / f"dfst-load-server-{port}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - the server writes to it until it stops
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}; see {log.name}")
        try:
            with grpc.insecure_channel(address) as channel:
                status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                return process, address
        except grpc.RpcError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"the server did not report SERVING within 180 s; see {log.name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent client threads")
    parser.add_argument("--jobs-per-client", type=int, default=4, help="jobs each client submits in sequence")
    parser.add_argument("--digits", type=int, default=8, help="operand length of the add2 evaluations")
    parser.add_argument("--max-active-jobs", type=int, default=16, help="server queue limit (queued + running)")
    parser.add_argument("--workers", type=int, default=0, help="server rollout workers; 0 means one per CPU")
    parser.add_argument("--server", help="HOST:PORT of a running loopback server; default start one")
    parser.add_argument("--json-out", type=pathlib.Path, help="also write the summary as JSON to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    spec = jobs_pb2.EvalSpec(task="add2", digits=args.digits, model="oracle-add2")
    process = None
    with tempfile.TemporaryDirectory(prefix="dfst-load-") as folder:
        if args.server:
            address, pid = args.server, None
        else:
            process, address = _start_server(pathlib.Path(folder), args.max_active_jobs, args.workers)
            pid = process.pid
        try:
            logger.info("server %s; %d clients x %d jobs", address, args.clients, args.jobs_per_client)
            result = run_load(address, args.clients, args.jobs_per_client, spec, pid)
        finally:
            if process is not None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)

    numbers = summary(result)
    print(json.dumps(numbers, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(numbers, indent=2) + "\n")
    found = problems(result, args.max_active_jobs if process is not None else 10**9,
                     args.clients * args.jobs_per_client)
    for problem in found:
        print(f"FAILED: {problem}", file=sys.stderr)
    print(f"cpus: {os.cpu_count()}, python {sys.version.split()[0]}, grpcio {grpc.__version__}", file=sys.stderr)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
