"""Servers, certificates and health probes shared by the security, fault, hostile-input and load tests.

Every server here binds to 127.0.0.1 on an ephemeral port.
"""

from __future__ import annotations

import datetime
import ipaddress
import pathlib

import grpc
from dfst.server.app import DfstServer, ServerConfig
from dfst.server.auth import SecurityConfig
from dfst.server.manager import ManagerConfig
from dfst.workers.actors import WorkerConfig
from grpc_health.v1 import health_pb2, health_pb2_grpc

HEALTH_DEADLINE_S = 5.0


def start_server(
    data_dir: pathlib.Path,
    security: SecurityConfig | None = None,
    max_active_jobs: int = 64,
    num_workers: int = 1,
    chunk_steps: int = 4_000_000,
    port: int = 0,
) -> DfstServer:
    """Start a server on 127.0.0.1 with its store in ``data_dir``; Ray must already be initialised."""
    workers = WorkerConfig(num_workers=num_workers, chunk_steps=chunk_steps)
    config = ServerConfig(
        host="127.0.0.1", port=port, data_dir=data_dir,
        manager=ManagerConfig(max_active_jobs=max_active_jobs, workers=workers),
        security=security or SecurityConfig(),
    )
    return DfstServer(config).start()


def health_status(address: str, credentials: grpc.ChannelCredentials | None = None, server_name: str | None = None):
    """Return the overall health status of the server at ``address`` (a HealthCheckResponse.ServingStatus)."""
    if credentials is None:
        channel = grpc.insecure_channel(address)
    else:
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel = grpc.secure_channel(address, credentials, options=options)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=HEALTH_DEADLINE_S)
    return reply.status


def write_self_signed_certificate(folder: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """Write a self-signed certificate for localhost and 127.0.0.1 and its key; return (cert path, key path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = folder / "server.crt"
    key_path = folder / "server.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path
