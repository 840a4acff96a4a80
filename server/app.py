"""Start and stop the gRPC server: DfstService, health checking and reflection."""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import signal
import threading
from concurrent import futures

import grpc
from dfst.server import auth
from dfst.server.manager import JobManager, ManagerConfig
from dfst.server.metrics import ServerMetrics, start_metrics_http_server
from dfst.server.service import DfstServicer
from dfst.server.store import JobStore, default_data_dir
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dfst.v1 import service_pb2, service_pb2_grpc

logger = logging.getLogger(__name__)

SERVICE_NAME = service_pb2.DESCRIPTOR.services_by_name["DfstService"].full_name
SHUTDOWN_GRACE_S = 5.0  # time in-flight rpcs get to finish on shutdown


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Server settings: listening address, data folder, limits and security."""

    host: str = "127.0.0.1"  # interface to bind; loopback unless configured otherwise
    port: int = 50051  # TCP port; 0 picks a free one
    data_dir: pathlib.Path | None = None  # folder of service.db; None means $DFST_DATA_DIR or ~/.local/share/dfst
    max_rpc_threads: int = 16  # threads serving rpcs, watches included
    manager: ManagerConfig = ManagerConfig()  # job limits and worker placement
    security: auth.SecurityConfig = auth.SecurityConfig()  # token and TLS; a token is required off loopback
    metrics_host: str | None = None  # interface of the Prometheus endpoint; None means the same as host
    metrics_port: int | None = None  # TCP port of the Prometheus endpoint; None turns it off, 0 picks a free one
    # Accept checkpoint paths as models; None means only when bound to loopback, because
    # otherwise remote clients could probe which files exist on the server.
    allow_model_paths: bool | None = None


def _bracketed(host: str) -> str:
    """Return an IPv6 literal in brackets, as HOST:PORT addresses need; other hosts unchanged."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class DfstServer:
    """A running server: gRPC front end, job manager and store."""

    def __init__(self, config: ServerConfig = ServerConfig()):
        auth.check_security(config.host, config.security)
        self.config = config
        self.store = JobStore(config.data_dir or default_data_dir())
        self.metrics = ServerMetrics()
        allow_paths = config.allow_model_paths
        if allow_paths is None:
            allow_paths = auth.is_loopback(config.host)
        manager_config = dataclasses.replace(config.manager, allow_model_paths=allow_paths)
        self.manager = JobManager(self.store, manager_config, self.metrics)
        self.health = health.HealthServicer()
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.max_rpc_threads),
            interceptors=auth.server_interceptors(config.security),
        )
        service_pb2_grpc.add_DfstServiceServicer_to_server(DfstServicer(self.manager), self._grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._grpc)
        self.port = auth.add_port(self._grpc, f"{_bracketed(config.host)}:{config.port}", config.security)
        if self.port == 0:
            raise OSError(f"cannot bind {config.host}:{config.port}; pick another port with --port")
        self.metrics_http = None
        if config.metrics_port is not None:
            # The endpoint has no token check: it serves counts and rates only, no job content.
            self.metrics_http = start_metrics_http_server(
                self.metrics.registry, config.metrics_host or config.host, config.metrics_port
            )
        self._stopped = threading.Event()

    @property
    def address(self) -> str:
        return f"{_bracketed(self.config.host)}:{self.port}"

    def start(self) -> DfstServer:
        """Start the job manager (and its Ray workers), then accept rpcs."""
        self.manager.start()
        self._grpc.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        logger.info("dfst server listening on %s (pid %d, data %s)", self.address, os.getpid(), self.store.path)
        return self

    def stop(self, grace: float = SHUTDOWN_GRACE_S) -> None:
        """Stop accepting rpcs, stop the workers and close the store; unfinished jobs resume on the next start."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        logger.info("dfst server on %s shutting down", self.address)
        self.health.enter_graceful_shutdown()
        self.manager.stop()
        self._grpc.stop(grace).wait()
        self.store.close()
        if self.metrics_http is not None:
            self.metrics_http.stop()
        logger.info("dfst server stopped")

    def wait(self) -> None:
        self._grpc.wait_for_termination()


def serve(config: ServerConfig) -> None:
    """Run a server until SIGTERM or SIGINT; both stop it gracefully."""
    server = DfstServer(config).start()

    def on_signal(signum, _frame) -> None:
        logger.info("received signal %d", signum)
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.wait()
