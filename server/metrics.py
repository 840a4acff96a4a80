"""Prometheus metrics of the dfst server: jobs, rollouts, training and workers.

Every server instance owns one :class:`ServerMetrics` with its own
``prometheus_client.CollectorRegistry``, so several servers can run in one
process (the tests do). The job manager calls the ``record_*`` methods, and
:func:`start_metrics_http_server` exposes the registry over HTTP for Prometheus.

Steps executed inside Ray actors are counted on the server: each worker returns
the rollout's total steps with every chunk, and the job manager passes the
difference to the previous chunk to :meth:`ServerMetrics.record_rollout_steps`.
The count is therefore the same in embedded and cluster mode and needs no Ray
metrics agent. A chunk that an actor loses when it crashes is never returned,
so it is not counted, and the rerun starts from the last saved state.

Label values are bounded sets (task, job kind, outcome) and are checked on every
call, so a bug cannot create one time series per job id or digit count.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

import dfst
from dfst.experts import TASKS

logger = logging.getLogger(__name__)

# Every metric name starts with this prefix.
METRIC_PREFIX = "dfst_"

# Default TCP port of the metrics endpoint of `dfst-client serve`, also used by the deploy/ manifests.
DEFAULT_METRICS_PORT = 9479

JOB_KINDS = ("eval", "training")
# Job states counted by the queued and running gauges.
ACTIVE_JOB_STATES = ("queued", "running")
# Terminal job states, used as the outcome label of finished jobs.
JOB_OUTCOMES = ("succeeded", "failed", "cancelled")
# Outcomes of one rollout, as in ``RolloutResult.outcome``.
ROLLOUT_OUTCOMES = ("correct", "wrong", "budget_exceeded", "non_finite")

# Job durations range from under a second (a few small pairs) to hours (training,
# or an LG search at tens of thousands of digits).
JOB_DURATION_BUCKETS_S = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, float("inf"))

# Length of the sliding window behind ``dfst_rollout_steps_per_second``.
DEFAULT_STEP_RATE_WINDOW_S = 30.0


def _check_label(name: str, value: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"invalid metric label {name}={value!r}; allowed values are {', '.join(allowed)}")
    return value


class StepRateWindow:
    """Steps per second per task over a sliding time window.

    Each report of ``steps`` is stored with its arrival time. The rate of a task
    is the sum of the steps reported within the last ``window_s`` seconds,
    divided by ``window_s``. While this object is younger than the window, the
    divisor is its age, so the first reports after start-up are not diluted.
    """

    def __init__(self, window_s: float = DEFAULT_STEP_RATE_WINDOW_S, clock: Callable[[], float] = time.monotonic):
        if window_s <= 0:
            raise ValueError(f"invalid step rate window {window_s!r} s; it must be positive")
        self._window_s = window_s
        self._clock = clock
        self._start = clock()
        self._lock = threading.Lock()
        # task -> deque of (arrival time in seconds, steps)
        self._events: dict[str, collections.deque[tuple[float, int]]] = {}

    def add(self, task: str, steps: int) -> None:
        now = self._clock()
        with self._lock:
            events = self._events.setdefault(task, collections.deque())
            events.append((now, steps))
            self._drop_old(events, now)

    def rates(self) -> dict[str, float]:
        """Return steps per second of every task that has reported steps."""
        now = self._clock()
        span = min(self._window_s, max(now - self._start, 1e-9))
        with self._lock:
            result = {}
            for task, events in self._events.items():
                self._drop_old(events, now)
                result[task] = sum(steps for _, steps in events) / span
            return result

    def _drop_old(self, events: collections.deque[tuple[float, int]], now: float) -> None:
        while events and events[0][0] < now - self._window_s:
            events.popleft()


class _StepRateCollector(Collector):
    """Exposes a :class:`StepRateWindow` as the gauge ``dfst_rollout_steps_per_second``."""

    def __init__(self, window: StepRateWindow):
        self._window = window

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "dfst_rollout_steps_per_second",
            "Rollout steps executed per second, averaged over a sliding window.",
            labels=["task"],
        )
        for task, rate in sorted(self._window.rates().items()):
            family.add_metric([task], rate)
        yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("dfst_rollout_steps_per_second", "", labels=["task"])


class ServerMetrics:
    """The metrics of one server instance, in a registry of their own."""

    def __init__(self, step_rate_window_s: float = DEFAULT_STEP_RATE_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic):
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry

        Info("dfst_build", "Version of the dfst package that serves.", registry=registry).info(
            {"version": dfst.__version__}
        )

        # jobs
        self.jobs_submitted = Counter(
            "dfst_jobs_submitted", "Jobs accepted by the server.", ["kind", "task"], registry=registry
        )
        self.jobs_finished = Counter(
            "dfst_jobs_finished", "Jobs that reached a terminal state.", ["kind", "task", "outcome"],
            registry=registry,
        )
        self.jobs_queued = Gauge("dfst_jobs_queued", "Jobs waiting to start.", ["kind"], registry=registry)
        self.jobs_running = Gauge("dfst_jobs_running", "Jobs running now.", ["kind"], registry=registry)
        self.job_duration = Histogram(
            "dfst_job_duration_seconds", "Time from a job's start to its terminal state.", ["kind", "outcome"],
            buckets=JOB_DURATION_BUCKETS_S, registry=registry,
        )

        # rollouts
        self.rollout_steps = Counter(
            "dfst_rollout_steps", "Rollout steps executed by the workers, halting step included.", ["task"],
            registry=registry,
        )
        self.rollouts_finished = Counter(
            "dfst_rollouts_finished", "Rollouts that finished, by outcome.", ["task", "outcome"], registry=registry
        )
        self.step_rate = StepRateWindow(step_rate_window_s, clock)
        registry.register(_StepRateCollector(self.step_rate))

        # training
        self.training_iterations = Counter(
            "dfst_training_iterations", "Optimiser iterations completed by training jobs.", ["task"],
            registry=registry,
        )
        self.training_loss = Gauge(
            "dfst_training_loss", "Latest training loss reported by a running training job of the task.", ["task"],
            registry=registry,
        )

        # workers
        self.workers = Gauge("dfst_workers", "Ray worker actors alive.", ["kind"], registry=registry)
        self.worker_restarts = Counter(
            "dfst_worker_restarts", "Ray worker actors restarted after a failure.", ["kind"], registry=registry
        )

        # Bounded label children exist from the start, so dashboards show zeros
        # before the first job and rate() includes the first increment.
        for kind in JOB_KINDS:
            self.jobs_queued.labels(kind)
            self.jobs_running.labels(kind)
            self.workers.labels(kind)
            self.worker_restarts.labels(kind)

        # Training jobs running per task. The task's loss series is removed when the last one ends.
        self._running_training_jobs: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    # jobs

    def record_job_submitted(self, kind: str, task: str) -> None:
        """Count a newly accepted job and add it to the queued gauge."""
        self.jobs_submitted.labels(_check_label("kind", kind, JOB_KINDS), _check_label("task", task, TASKS)).inc()
        self.record_job_transition(kind, task, None, "queued")

    def record_job_transition(self, kind: str, task: str, previous: str | None, current: str,
                              duration_s: float | None = None) -> None:
        """Move a job between the queued and running gauges, and count it once it is terminal.

        ``previous`` is ``None`` for a job that enters the gauges: a new job, or
        an unfinished job loaded from the store at start-up. ``duration_s`` is
        the time from the move to running to the terminal state, in seconds. It
        is observed only for terminal states and only when given, because a job
        cancelled while queued has none.
        """
        _check_label("kind", kind, JOB_KINDS)
        _check_label("task", task, TASKS)
        if previous is not None:
            _check_label("previous state", previous, ACTIVE_JOB_STATES)
        _check_label("state", current, ACTIVE_JOB_STATES + JOB_OUTCOMES)

        if previous is not None:
            self._active_gauge(previous).labels(kind).dec()
        if current in ACTIVE_JOB_STATES:
            self._active_gauge(current).labels(kind).inc()
        else:
            self.jobs_finished.labels(kind, task, current).inc()
            if duration_s is not None:
                self.job_duration.labels(kind, current).observe(max(duration_s, 0.0))

        if kind == "training":
            self._track_training_job(task, previous, current)

    def _active_gauge(self, state: str) -> Gauge:
        return self.jobs_queued if state == "queued" else self.jobs_running

    def _track_training_job(self, task: str, previous: str | None, current: str) -> None:
        with self._lock:
            if current == "running":
                self._running_training_jobs[task] += 1
            elif previous == "running":
                self._running_training_jobs[task] -= 1
                if self._running_training_jobs[task] <= 0:
                    del self._running_training_jobs[task]
                    # Older prometheus_client releases raise KeyError for a missing series.
                    with contextlib.suppress(KeyError):
                        self.training_loss.remove(task)

    # rollouts

    def record_rollout_steps(self, task: str, steps: int) -> None:
        """Count ``steps`` newly executed steps of one rollout (a chunk's delta, not a running total)."""
        if steps < 0:
            raise ValueError(f"invalid step count {steps}; report the steps of one chunk, zero or more")
        self.rollout_steps.labels(_check_label("task", task, TASKS)).inc(steps)
        self.step_rate.add(task, steps)

    def record_rollout_finished(self, task: str, outcome: str) -> None:
        self.rollouts_finished.labels(
            _check_label("task", task, TASKS), _check_label("outcome", outcome, ROLLOUT_OUTCOMES)
        ).inc()

    # training

    def record_training_progress(self, task: str, iterations: int, loss: float) -> None:
        """Count ``iterations`` new optimiser iterations and set the task's latest loss.

        With two training jobs of one task running at once, the gauge shows the
        loss of whichever reported last, because job ids are not labels.
        """
        if iterations < 0:
            raise ValueError(f"invalid iteration count {iterations}; report new iterations, zero or more")
        self.training_iterations.labels(_check_label("task", task, TASKS)).inc(iterations)
        self.training_loss.labels(task).set(loss)

    # workers

    def set_workers(self, kind: str, count: int) -> None:
        self.workers.labels(_check_label("kind", kind, JOB_KINDS)).set(count)

    def record_worker_restart(self, kind: str) -> None:
        self.worker_restarts.labels(_check_label("kind", kind, JOB_KINDS)).inc()


def series_names(registry: CollectorRegistry) -> set[str]:
    """Return every series name a scrape of ``registry`` can contain, suffixes included.

    Counters expose ``<name>_total`` and ``<name>_created``, histograms
    ``_bucket``, ``_sum``, ``_count`` and ``_created``, info metrics ``_info``.
    The names come from the metric types, so labelled metrics that have no
    sample yet are included too.
    """
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
        "gauge": ("",),
        "untyped": ("",),
        "unknown": ("",),
    }
    names = set()
    for family in registry.collect():
        for suffix in suffixes[family.type]:
            names.add(family.name + suffix)
    return names


@dataclass(frozen=True)
class MetricsHTTPServer:
    """A running metrics endpoint: ``http://host:port/metrics``."""

    host: str  # address the endpoint listens on
    port: int  # TCP port, resolved when 0 was requested
    _httpd: WSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        logger.info("metrics endpoint on %s:%d stopped", self.host, self.port)


def start_metrics_http_server(registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 0) -> MetricsHTTPServer:
    """Serve ``registry`` over HTTP on ``host:port`` (port 0 picks a free one) in a daemon thread."""
    if not 0 <= port <= 65535:
        raise ValueError(f"invalid metrics port {port}; use 0 to 65535 (0 picks a free port)")
    try:
        httpd, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        raise OSError(
            f"cannot start the metrics endpoint on {host}:{port}: {error}; choose another port with --metrics-port"
        ) from error
    server = MetricsHTTPServer(host=host, port=httpd.server_port, _httpd=httpd, _thread=thread)
    logger.info("metrics endpoint serving on %s", server.url)
    return server
