"""Tests of the server's Prometheus metrics: names, labels, gauges, rates and the HTTP endpoint."""

from __future__ import annotations

import urllib.request

import pytest
from dfst.server.metrics import (
    JOB_KINDS,
    METRIC_PREFIX,
    ServerMetrics,
    StepRateWindow,
    series_names,
    start_metrics_http_server,
)
from prometheus_client.parser import text_string_to_metric_families


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def value(metrics: ServerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_registries_separate_per_instance():
    first, second = ServerMetrics(), ServerMetrics()
    first.record_rollout_steps("add10", 7)
    assert value(first, "dfst_rollout_steps_total", task="add10") == 7
    assert value(second, "dfst_rollout_steps_total", task="add10") is None


def test_metric_names_follow_conventions():
    names = series_names(ServerMetrics().registry)
    for name in names:
        assert name.startswith(METRIC_PREFIX), name
    expected = {
        "dfst_jobs_submitted_total",
        "dfst_jobs_finished_total",
        "dfst_jobs_queued",
        "dfst_jobs_running",
        "dfst_job_duration_seconds_bucket",
        "dfst_job_duration_seconds_sum",
        "dfst_job_duration_seconds_count",
        "dfst_rollout_steps_total",
        "dfst_rollouts_finished_total",
        "dfst_rollout_steps_per_second",
        "dfst_training_iterations_total",
        "dfst_training_loss",
        "dfst_workers",
        "dfst_worker_restarts_total",
        "dfst_build_info",
    }
    assert expected <= names


def test_label_names_are_bounded():
    # No metric may carry a per-job or per-size label.
    for family in ServerMetrics().registry.collect():
        for sample in family.samples:
            assert set(sample.labels) <= {"kind", "task", "outcome", "le", "version"}, sample


def test_job_lifecycle_moves_gauges():
    metrics = ServerMetrics()
    metrics.record_job_submitted("eval", "add10")
    assert value(metrics, "dfst_jobs_submitted_total", kind="eval", task="add10") == 1
    assert value(metrics, "dfst_jobs_queued", kind="eval") == 1
    assert value(metrics, "dfst_jobs_running", kind="eval") == 0

    metrics.record_job_transition("eval", "add10", "queued", "running")
    assert value(metrics, "dfst_jobs_queued", kind="eval") == 0
    assert value(metrics, "dfst_jobs_running", kind="eval") == 1

    metrics.record_job_transition("eval", "add10", "running", "succeeded", duration_s=4.0)
    assert value(metrics, "dfst_jobs_running", kind="eval") == 0
    assert value(metrics, "dfst_jobs_finished_total", kind="eval", task="add10", outcome="succeeded") == 1
    assert value(metrics, "dfst_job_duration_seconds_count", kind="eval", outcome="succeeded") == 1
    assert value(metrics, "dfst_job_duration_seconds_sum", kind="eval", outcome="succeeded") == 4.0
    assert value(metrics, "dfst_job_duration_seconds_bucket", kind="eval", outcome="succeeded", le="2.5") == 0
    assert value(metrics, "dfst_job_duration_seconds_bucket", kind="eval", outcome="succeeded", le="5.0") == 1


def test_cancel_while_queued_observes_no_duration():
    metrics = ServerMetrics()
    metrics.record_job_submitted("eval", "add2")
    metrics.record_job_transition("eval", "add2", "queued", "cancelled")
    assert value(metrics, "dfst_jobs_queued", kind="eval") == 0
    assert value(metrics, "dfst_jobs_running", kind="eval") == 0
    assert value(metrics, "dfst_jobs_finished_total", kind="eval", task="add2", outcome="cancelled") == 1
    assert value(metrics, "dfst_job_duration_seconds_count", kind="eval", outcome="cancelled") is None


def test_resumed_job_enters_gauges_uncounted():
    metrics = ServerMetrics()
    metrics.record_job_transition("eval", "add10", None, "queued")
    assert value(metrics, "dfst_jobs_queued", kind="eval") == 1
    assert value(metrics, "dfst_jobs_submitted_total", kind="eval", task="add10") is None


@pytest.mark.parametrize(
    ("kind", "task", "previous", "current"),
    [
        ("eval", "3f2a9c0d4b1e4f6a8b7c6d5e4f3a2b1c", None, "queued"),  # a job id is not a task
        ("benchmark", "add10", None, "queued"),
        ("eval", "add10", "queued", "paused"),
        ("eval", "add10", "succeeded", "running"),
    ],
)
def test_job_transition_rejects_unbounded_labels(kind, task, previous, current):
    with pytest.raises(ValueError, match="invalid metric label"):
        ServerMetrics().record_job_transition(kind, task, previous, current)


def test_rollout_counters():
    metrics = ServerMetrics()
    metrics.record_rollout_steps("add10", 1_000_000)
    metrics.record_rollout_steps("add10", 24_507)
    metrics.record_rollout_finished("add10", "correct")
    metrics.record_rollout_finished("add10", "wrong")
    metrics.record_rollout_finished("add10", "wrong")
    assert value(metrics, "dfst_rollout_steps_total", task="add10") == 1_024_507
    assert value(metrics, "dfst_rollouts_finished_total", task="add10", outcome="correct") == 1
    assert value(metrics, "dfst_rollouts_finished_total", task="add10", outcome="wrong") == 2
    with pytest.raises(ValueError, match="invalid step count"):
        metrics.record_rollout_steps("add10", -1)
    with pytest.raises(ValueError, match="invalid metric label"):
        metrics.record_rollout_finished("add10", "timeout")


def test_step_rate_window():
    clock = FakeClock()
    window = StepRateWindow(window_s=10.0, clock=clock)
    clock.now += 2.0
    window.add("add2", 400)
    # younger than the window: divide by its age, 2 s
    assert window.rates() == {"add2": pytest.approx(200.0)}

    clock.now += 8.0
    window.add("add2", 600)
    assert window.rates() == {"add2": pytest.approx(100.0)}

    # the first report leaves the window after 10 s
    clock.now += 3.0
    assert window.rates() == {"add2": pytest.approx(60.0)}
    clock.now += 10.0
    assert window.rates() == {"add2": 0.0}


def test_step_rate_gauge_exported():
    clock = FakeClock()
    metrics = ServerMetrics(step_rate_window_s=5.0, clock=clock)
    clock.now += 5.0
    metrics.record_rollout_steps("add10", 5000)
    assert value(metrics, "dfst_rollout_steps_per_second", task="add10") == pytest.approx(1000.0)


def test_training_loss_series_follows_jobs():
    metrics = ServerMetrics()
    for _ in range(2):
        metrics.record_job_submitted("training", "add2")
        metrics.record_job_transition("training", "add2", "queued", "running")
    metrics.record_training_progress("add2", iterations=50, loss=0.25)
    metrics.record_training_progress("add2", iterations=50, loss=0.125)
    assert value(metrics, "dfst_training_iterations_total", task="add2") == 100
    assert value(metrics, "dfst_training_loss", task="add2") == 0.125

    metrics.record_job_transition("training", "add2", "running", "succeeded", duration_s=60.0)
    assert value(metrics, "dfst_training_loss", task="add2") == 0.125
    metrics.record_job_transition("training", "add2", "running", "cancelled", duration_s=61.0)
    assert value(metrics, "dfst_training_loss", task="add2") is None
    assert value(metrics, "dfst_training_iterations_total", task="add2") == 100


def test_worker_metrics():
    metrics = ServerMetrics()
    for kind in JOB_KINDS:
        assert value(metrics, "dfst_worker_restarts_total", kind=kind) == 0
    metrics.set_workers("eval", 2)
    metrics.record_worker_restart("eval")
    assert value(metrics, "dfst_workers", kind="eval") == 2
    assert value(metrics, "dfst_worker_restarts_total", kind="eval") == 1


def test_http_endpoint_on_loopback():
    metrics = ServerMetrics()
    metrics.record_rollout_steps("add10", 123)
    server = start_metrics_http_server(metrics.registry, "127.0.0.1", 0)
    try:
        assert server.port > 0
        with urllib.request.urlopen(server.url, timeout=10) as response:
            text = response.read().decode()
    finally:
        server.stop()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("dfst_rollout_steps_total", (("task", "add10"),))] == 123
    assert samples[("dfst_jobs_queued", (("kind", "eval"),))] == 0


@pytest.mark.parametrize("port", [-1, 65536])
def test_http_endpoint_invalid_port(port):
    with pytest.raises(ValueError, match="invalid metrics port"):
        start_metrics_http_server(ServerMetrics().registry, "127.0.0.1", port)


def test_http_endpoint_port_in_use():
    first = start_metrics_http_server(ServerMetrics().registry, "127.0.0.1", 0)
    try:
        with pytest.raises(OSError, match="--metrics-port"):
            start_metrics_http_server(ServerMetrics().registry, "127.0.0.1", first.port)
    finally:
        first.stop()
