"""Bearer-token authentication, TLS and secret hygiene of the gRPC server, on 127.0.0.1 only.

The non-loopback code path is exercised with ``require_token=True`` on
loopback; no test binds any other address.
"""

from __future__ import annotations

import logging
import pathlib
import traceback

import grpc
import pytest
from dfst.server import auth
from dfst.server.app import DfstServer, ServerConfig
from dfst.server.auth import AuthConfigError, SecurityConfig
from grpc_health.v1 import health_pb2
from reliability_helpers import health_status, start_server, write_self_signed_certificate

from dfst.v1 import service_pb2, service_pb2_grpc

TOKEN = "s3cret-token-" + "x7Q2" * 6  # 37 characters, easy to search for in captured output
WRONG_TOKEN = "wrong-token-" + "k9Z1" * 6
DEADLINE_S = 10.0
UNKNOWN_JOB = "0" * 32


@pytest.fixture(scope="module")
def token_server(ray_session, tmp_path_factory):
    """A server on 127.0.0.1 that demands TOKEN on every rpc but health checks."""
    security = SecurityConfig(token=TOKEN, require_token=True)
    server = start_server(tmp_path_factory.mktemp("token-data"), security=security)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_server(ray_session, tmp_path_factory):
    """A server on 127.0.0.1 with TLS (self-signed certificate) and TOKEN."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = write_self_signed_certificate(folder)
    security = SecurityConfig(token=TOKEN, require_token=True, tls_cert_file=cert, tls_key_file=key)
    server = start_server(folder / "data", security=security)
    yield server, cert
    server.stop()


def _status_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("LOCALHOST", True), ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("example.org", False),
     ("", False)],
)
def test_is_loopback_table(host, expected):
    assert auth.is_loopback(host) is expected


def test_non_loopback_without_token_rejected(tmp_path):
    data_dir = tmp_path / "data"
    with pytest.raises(AuthConfigError, match="token is required"):
        DfstServer(ServerConfig(host="0.0.0.0", port=0, data_dir=data_dir))
    # The check runs before anything is created or bound.
    assert not data_dir.exists()


def test_require_token_without_token_rejected(tmp_path):
    with pytest.raises(AuthConfigError, match="require_token"):
        auth.check_security("127.0.0.1", SecurityConfig(require_token=True))


def test_non_loopback_with_token_accepted():
    auth.check_security("0.0.0.0", SecurityConfig(token=TOKEN))


def test_tls_cert_without_key_rejected(tmp_path):
    with pytest.raises(AuthConfigError, match="key file"):
        auth.check_security("127.0.0.1", SecurityConfig(tls_cert_file=tmp_path / "cert.pem"))


@pytest.mark.parametrize("bad", ["short", "has space in the middle of it", "tab\tinside-a-long-token", "é" * 20])
def test_bad_token_rejected_without_echo(bad):
    with pytest.raises(AuthConfigError) as caught:
        auth.validate_token(bad)
    assert bad not in str(caught.value)


def test_read_token_file_and_env(tmp_path, monkeypatch):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.setenv(auth.TOKEN_ENV, WRONG_TOKEN)
    assert auth.read_token(token_file) == TOKEN
    assert auth.read_token(None) == WRONG_TOKEN
    monkeypatch.delenv(auth.TOKEN_ENV)
    assert auth.read_token(None) is None


def test_read_token_missing_file(tmp_path):
    with pytest.raises(AuthConfigError, match="cannot read the token file"):
        auth.read_token(tmp_path / "absent")


def test_security_config_repr_hides_token():
    assert TOKEN not in repr(SecurityConfig(token=TOKEN))
    assert TOKEN not in repr(ServerConfig(security=SecurityConfig(token=TOKEN)))


def test_missing_token_unauthenticated(token_server):
    with grpc.insecure_channel(token_server.address) as channel:
        stub = service_pb2_grpc.DfstServiceStub(channel)
        call = lambda: stub.GetJob(service_pb2.GetJobRequest(job_id=UNKNOWN_JOB), timeout=DEADLINE_S)  # noqa: E731
        assert _status_of(call) == grpc.StatusCode.UNAUTHENTICATED


def test_wrong_token_unauthenticated(token_server):
    with auth.open_channel(token_server.address, token=WRONG_TOKEN) as channel:
        stub = service_pb2_grpc.DfstServiceStub(channel)
        call = lambda: stub.ListJobs(service_pb2.ListJobsRequest(), timeout=DEADLINE_S)  # noqa: E731
        assert _status_of(call) == grpc.StatusCode.UNAUTHENTICATED


def test_wrong_scheme_unauthenticated(token_server):
    with grpc.insecure_channel(token_server.address) as channel:
        stub = service_pb2_grpc.DfstServiceStub(channel)
        metadata = [("authorization", f"Basic {TOKEN}")]
        call = lambda: stub.ListJobs(service_pb2.ListJobsRequest(), timeout=DEADLINE_S, metadata=metadata)  # noqa: E731
        assert _status_of(call) == grpc.StatusCode.UNAUTHENTICATED


def test_streaming_rpc_without_token_unauthenticated(token_server):
    with grpc.insecure_channel(token_server.address) as channel:
        stub = service_pb2_grpc.DfstServiceStub(channel)
        call = lambda: list(stub.WatchJob(service_pb2.WatchJobRequest(job_id=UNKNOWN_JOB), timeout=DEADLINE_S))  # noqa: E731
        assert _status_of(call) == grpc.StatusCode.UNAUTHENTICATED


def test_reflection_without_token_unauthenticated(token_server):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(token_server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        call = lambda: list(stub.ServerReflectionInfo(requests, timeout=DEADLINE_S))  # noqa: E731
        assert _status_of(call) == grpc.StatusCode.UNAUTHENTICATED


def test_right_token_reaches_service(token_server):
    with auth.open_channel(token_server.address, token=TOKEN) as channel:
        stub = service_pb2_grpc.DfstServiceStub(channel)
        reply = stub.ListJobs(service_pb2.ListJobsRequest(), timeout=DEADLINE_S)
        assert list(reply.jobs) == []
        call = lambda: stub.GetJob(service_pb2.GetJobRequest(job_id=UNKNOWN_JOB), timeout=DEADLINE_S)  # noqa: E731
        assert _status_of(call) == grpc.StatusCode.NOT_FOUND


def test_health_check_needs_no_token(token_server):
    assert health_status(token_server.address) == health_pb2.HealthCheckResponse.SERVING


def test_tls_with_token(tls_server):
    server, cert = tls_server
    with auth.open_channel(server.address, token=TOKEN, root_certs_file=cert) as channel:
        stub = service_pb2_grpc.DfstServiceStub(channel)
        assert list(stub.ListJobs(service_pb2.ListJobsRequest(), timeout=DEADLINE_S).jobs) == []


def test_tls_without_token_unauthenticated(tls_server):
    server, cert = tls_server
    with auth.open_channel(server.address, root_certs_file=cert) as channel:
        stub = service_pb2_grpc.DfstServiceStub(channel)
        call = lambda: stub.ListJobs(service_pb2.ListJobsRequest(), timeout=DEADLINE_S)  # noqa: E731
        assert _status_of(call) == grpc.StatusCode.UNAUTHENTICATED


def test_plaintext_client_to_tls_fails(tls_server):
    server, _ = tls_server
    with auth.open_channel(server.address, token=TOKEN) as channel:
        stub = service_pb2_grpc.DfstServiceStub(channel)
        call = lambda: stub.ListJobs(service_pb2.ListJobsRequest(), timeout=DEADLINE_S)  # noqa: E731
        assert _status_of(call) == grpc.StatusCode.UNAVAILABLE


def test_untrusted_certificate_fails(tls_server, tmp_path):
    server, _ = tls_server
    other_cert, _ = write_self_signed_certificate(tmp_path)
    with auth.open_channel(server.address, token=TOKEN, root_certs_file=other_cert) as channel:
        stub = service_pb2_grpc.DfstServiceStub(channel)
        call = lambda: stub.ListJobs(service_pb2.ListJobsRequest(), timeout=DEADLINE_S)  # noqa: E731
        assert _status_of(call) == grpc.StatusCode.UNAVAILABLE


def test_tls_health_check(tls_server):
    server, cert = tls_server
    credentials = grpc.ssl_channel_credentials(root_certificates=pathlib.Path(cert).read_bytes())
    assert health_status(server.address, credentials) == health_pb2.HealthCheckResponse.SERVING


def test_token_absent_from_logs_and_errors(token_server, caplog):
    """Failing calls with the right and a wrong token leave neither token in logs, messages or tracebacks."""
    caplog.set_level(logging.DEBUG)
    texts = []
    for token in (TOKEN, WRONG_TOKEN):
        with auth.open_channel(token_server.address, token=token) as channel:
            stub = service_pb2_grpc.DfstServiceStub(channel)
            for _ in range(3):
                with pytest.raises(grpc.RpcError) as caught:
                    stub.GetJob(service_pb2.GetJobRequest(job_id=UNKNOWN_JOB), timeout=DEADLINE_S)
                texts.append(caught.value.details() or "")
                texts.append(str(caught.value))
                texts.append("".join(traceback.format_exception(caught.value)))
                texts.append(repr(caught.value.trailing_metadata()))
    texts.append(caplog.text)

    assert any("invalid bearer token" in text for text in texts)
    for text in texts:
        assert TOKEN not in text
        assert WRONG_TOKEN not in text


def _run_client(args: list[str], env: dict[str, str] | None = None):
    from dfst.client.cli import app
    from typer.testing import CliRunner

    return CliRunner().invoke(app, args, env=env)


def test_client_token_file_reaches_server(token_server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    result = _run_client(["--token-file", str(token_file), "jobs", "list", "--json", "--server", token_server.address])
    assert result.exit_code == 0, result.output
    assert TOKEN not in result.output


def test_client_token_env_reaches_server(token_server):
    result = _run_client(["jobs", "list", "--json", "--server", token_server.address], env={auth.TOKEN_ENV: TOKEN})
    assert result.exit_code == 0, result.output


def test_client_missing_token_exit_code(token_server, monkeypatch):
    monkeypatch.delenv(auth.TOKEN_ENV, raising=False)
    result = _run_client(["jobs", "show", UNKNOWN_JOB, "--server", token_server.address])
    assert result.exit_code == 2
    assert "UNAUTHENTICATED" in result.output


def test_client_wrong_token_hidden_in_output(token_server, caplog):
    caplog.set_level(logging.DEBUG)
    args = ["--verbose", "jobs", "show", UNKNOWN_JOB, "--server", token_server.address]
    result = _run_client(args, env={auth.TOKEN_ENV: WRONG_TOKEN})
    assert result.exit_code == 2
    assert "UNAUTHENTICATED" in result.output
    assert WRONG_TOKEN not in result.output
    assert WRONG_TOKEN not in caplog.text
    assert result.exception is None or WRONG_TOKEN not in "".join(traceback.format_exception(result.exception))


def test_client_tls_with_token(tls_server):
    server, cert = tls_server
    args = ["--tls-ca", str(cert), "jobs", "list", "--json", "--server", server.address]
    result = _run_client(args, env={auth.TOKEN_ENV: TOKEN})
    assert result.exit_code == 0, result.output


def test_serve_rejects_public_host_without_token(monkeypatch):
    monkeypatch.delenv(auth.TOKEN_ENV, raising=False)
    result = _run_client(["serve", "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 2
    assert "token is required" in result.output


def test_ipv6_loopback_with_token(ray_session, tmp_path):
    from dfst.server.manager import ManagerConfig
    from dfst.workers.actors import WorkerConfig

    config = ServerConfig(
        host="::1", port=0, data_dir=tmp_path / "data", security=SecurityConfig(token=TOKEN, require_token=True),
        manager=ManagerConfig(workers=WorkerConfig(num_workers=1)),
    )
    server = DfstServer(config).start()
    try:
        assert server.address.startswith("[::1]:")
        assert health_status(server.address) == health_pb2.HealthCheckResponse.SERVING
        with auth.open_channel(server.address, token=TOKEN) as channel:
            stub = service_pb2_grpc.DfstServiceStub(channel)
            assert list(stub.ListJobs(service_pb2.ListJobsRequest(), timeout=DEADLINE_S).jobs) == []
    finally:
        server.stop()


def test_client_tracebacks_show_no_locals():
    """Typer's pretty tracebacks would print local variables, a token among them."""
    from dfst.client.cli import app

    assert app.pretty_exceptions_show_locals is False
