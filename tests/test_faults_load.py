"""A small load run on loopback: 10 clients submit and watch 20 jobs through a queue limit of 4.

Checks correctness only: every job completes, none is lost or duplicated,
RESOURCE_EXHAUSTED enforces the limit, and health stays SERVING.  The timings
of the full run come from benchmarks/load_test.py.
"""

from __future__ import annotations

import pathlib
import sys

from reliability_helpers import start_server

from dfst.v1 import jobs_pb2

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import load_test  # noqa: E402

CLIENTS = 10
JOBS_PER_CLIENT = 2
MAX_ACTIVE_JOBS = 4


def test_ten_clients_complete_every_job(ray_session, tmp_path):
    server = start_server(tmp_path / "data", num_workers=2, max_active_jobs=MAX_ACTIVE_JOBS)
    try:
        spec = jobs_pb2.EvalSpec(task="add2", digits=8, model="oracle-add2")
        result = load_test.run_load(server.address, CLIENTS, JOBS_PER_CLIENT, spec)
    finally:
        server.stop()

    assert load_test.problems(result, MAX_ACTIVE_JOBS, CLIENTS * JOBS_PER_CLIENT) == []
    assert len(result.succeeded) == CLIENTS * JOBS_PER_CLIENT
    # Ten clients start together against a limit of four, so the limit must have rejected some submissions.
    assert result.rejections > 0
    assert 0 < result.max_active_jobs_seen <= MAX_ACTIVE_JOBS
    assert result.health_latencies_s
