"""A real Prometheus scrapes a running dfst server during an evaluation, and the test reads the step counter back.

Prometheus (Debian package ``prometheus``) runs on a loopback port with a
temporary data folder and a configuration derived from
deploy/prometheus/prometheus.yml, so the shipped scrape configuration is the
one exercised.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import yaml
from dfst.server.metrics import DEFAULT_STEP_RATE_WINDOW_S
from metrics_helpers import report_steps, start_server, submit_eval, wait_for_job
from test_deploy import GRAFANA_VARIABLES, dashboard_queries

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
SCRAPE_INTERVAL_S = 1
STARTUP_TIMEOUT_S = 60
QUERY_TIMEOUT_S = 60


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_test_config(folder: pathlib.Path, metrics_port: int) -> pathlib.Path:
    """Write deploy/prometheus/prometheus.yml with a 1 s interval and the test server and discovery file as targets."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"]["scrape_interval"] = f"{SCRAPE_INTERVAL_S}s"
    config["global"]["evaluation_interval"] = f"{SCRAPE_INTERVAL_S}s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["dfst"]["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    # Ray's dashboard writes the real discovery file, and the test's Ray instance runs without one.
    discovery = folder / "ray_service_discovery.json"
    discovery.write_text("[]")
    jobs["ray"]["file_sd_configs"] = [{"files": [str(discovery)]}]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


class Prometheus:
    """A Prometheus process on a loopback port, stopped by :meth:`stop`."""

    def __init__(self, config: pathlib.Path, data_dir: pathlib.Path, log_path: pathlib.Path):
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is missing; install it with `apt-get install -y prometheus` (Debian) and rerun")
        self.port = free_loopback_port()
        self.log_path = log_path
        self._log = log_path.open("wb")
        self._process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                pytest.fail(f"prometheus exited with {self._process.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"prometheus not ready within {STARTUP_TIMEOUT_S} s: {self.log_path.read_text()[-2000:]}")

    def api(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()


def wait_for_value(prometheus: Prometheus, expr: str, expected: float) -> float | None:
    """Query ``expr`` until it returns ``expected`` or the timeout passes; return the last value seen."""
    deadline = time.monotonic() + QUERY_TIMEOUT_S
    value = None
    while time.monotonic() < deadline:
        result = prometheus.query(expr)
        if result:
            value = float(result[0]["value"][1])
            if value == expected:
                return value
        time.sleep(SCRAPE_INTERVAL_S)
    return value


def test_prometheus_scrapes_step_counter(ray_session, tmp_path):
    server = start_server(tmp_path / "dfst", chunk_steps=2000, metrics_port=0)
    prometheus = Prometheus(write_test_config(tmp_path, server.metrics_http.port), tmp_path / "tsdb",
                            tmp_path / "prometheus.log")
    try:
        job, streamed_steps = wait_for_job(server.address, submit_eval(server.address, "add10", 60))
        steps = report_steps(job)
        assert streamed_steps == steps

        seen = wait_for_value(prometheus, 'dfst_rollout_steps_total{job="dfst", task="add10"}', steps)
        assert seen == steps
        rollouts = wait_for_value(prometheus, 'sum(dfst_rollouts_finished_total{job="dfst", task="add10"})', 91)
        assert rollouts == 91

        targets = prometheus.api("targets")["activeTargets"]
        dfst_targets = [target for target in targets if target["labels"]["job"] == "dfst"]
        assert [target["health"] for target in dfst_targets] == ["up"]

        # Every dashboard query evaluates without error on real data.
        for query in dashboard_queries():
            for variable, value in GRAFANA_VARIABLES.items():
                query = query.replace(variable, value)
            prometheus.query(query)
        assert prometheus.query('sum(dfst_jobs_finished_total{outcome="succeeded"})')

        # Some scrape inside the step-rate window saw a positive rate.
        peak = prometheus.query(f"max_over_time(dfst_rollout_steps_per_second{{task=\"add10\"}}"
                                f"[{int(DEFAULT_STEP_RATE_WINDOW_S) + 60}s])")
        assert float(peak[0]["value"][1]) > 0
    finally:
        prometheus.stop()
        server.stop()
