"""Connection to a server: --server / $DFST_SERVER, or a server embedded on loopback."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import grpc
from dfst.server import auth

from dfst.v1 import service_pb2_grpc

logger = logging.getLogger(__name__)

SERVER_ENV = "DFST_SERVER"
CONNECT_TIMEOUT_S = 10.0  # time allowed for the channel to become ready
# Logger of Ray 2.60's notice that a new local cluster enabled token authentication by default.
RAY_AUTH_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


class ServiceUnavailableError(RuntimeError):
    """No server responded at the target address."""


@contextlib.contextmanager
def open_stub(
    server: str | None,
    token: str | None = None,
    root_certs_file: str | os.PathLike | None = None,
    server_name: str | None = None,
) -> Iterator[tuple[service_pb2_grpc.DfstServiceStub, str]]:
    """Yield (stub, address) for ``server``, $DFST_SERVER, or a server embedded in this process.

    A remote server gets ``token`` as bearer metadata on every call, over TLS
    checked against ``root_certs_file`` when that is given.
    """
    target = server or os.environ.get(SERVER_ENV)
    if target:
        with auth.open_channel(target, token, root_certs_file, server_name) as channel:
            _wait_ready(channel, target)
            yield service_pb2_grpc.DfstServiceStub(channel), target
        return
    with embedded_server() as address, grpc.insecure_channel(address) as channel:
        _wait_ready(channel, address)
        yield service_pb2_grpc.DfstServiceStub(channel), address


def _wait_ready(channel: grpc.Channel, target: str) -> None:
    try:
        grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT_S)
    except grpc.FutureTimeoutError as error:
        raise ServiceUnavailableError(
            f"no dfst server responded at {target} within {CONNECT_TIMEOUT_S:.0f} s; "
            f"start one with `dfst-client serve` or unset --server and {SERVER_ENV} to run one embedded"
        ) from error


@contextlib.contextmanager
def embedded_server() -> Iterator[str]:
    """Start a local Ray instance and the dfst server on a loopback ephemeral port; yield its address."""
    import ray
    from dfst.server.app import DfstServer, ServerConfig
    from dfst.workers.actors import LOCAL_RAY_SYSTEM_CONFIG

    started_ray = False
    if not ray.is_initialized():
        # When RAY_AUTH_MODE is unset, Ray 2.60 turns token authentication on for every new local cluster and
        # logs a warning that RAY_AUTH_MODE=disabled would turn it off.  Raising that one logger's level during
        # this ray.init changes no setting, so the private instance keeps token authentication on.
        notice_logger = logging.getLogger(RAY_AUTH_NOTICE_LOGGER)
        previous_level = notice_logger.level
        notice_logger.setLevel(logging.ERROR)
        try:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING, configure_logging=False,
                     _system_config=LOCAL_RAY_SYSTEM_CONFIG)
        finally:
            notice_logger.setLevel(previous_level)
        started_ray = True
    server = DfstServer(ServerConfig(port=0)).start()
    try:
        yield server.address
    finally:
        server.stop()
        if started_ray:
            ray.shutdown()
