"""Bearer-token authentication and TLS for the gRPC server, and the matching client channel.

The server binds to loopback unless configured otherwise.  Binding to any other
address requires a token: every rpc must then carry the gRPC metadata
``authorization: Bearer <token>``, or it fails with UNAUTHENTICATED.  The
standard health-checking service stays open so that load balancers and
Kubernetes probes, which send no token, can reach it; it reveals only whether
the server is serving.

Tokens are secrets: no function here logs them, puts them into an error
message or keeps them in a dataclass ``repr``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import logging
import os
import pathlib

import grpc

logger = logging.getLogger(__name__)

TOKEN_ENV = "DFST_TOKEN"
AUTHORIZATION_KEY = "authorization"  # gRPC metadata keys are lower case
BEARER_PREFIX = "Bearer "
# Methods reachable without a token: health checks only.
UNAUTHENTICATED_PREFIXES = ("/grpc.health.v1.Health/",)
MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 4096


class AuthConfigError(ValueError):
    """The token, certificate, key or bind address configuration is invalid."""


@dataclasses.dataclass(frozen=True)
class SecurityConfig:
    """Token and TLS settings of a server."""

    token: str | None = dataclasses.field(default=None, repr=False)  # shared secret; None disables token checks
    require_token: bool = False  # demand a token even on loopback (always true off loopback)
    tls_cert_file: pathlib.Path | None = None  # PEM certificate chain; with tls_key_file enables TLS
    tls_key_file: pathlib.Path | None = None  # PEM private key of tls_cert_file

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None


def is_loopback(host: str) -> bool:
    """Return True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1), brackets allowed."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def validate_token(token: str) -> str:
    """Return ``token`` if it can travel as gRPC metadata and is long enough; raise AuthConfigError otherwise.

    The message never contains the token itself.
    """
    if not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS:
        raise AuthConfigError(
            f"the token has {len(token)} characters; use {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS}, "
            "e.g. the output of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    if not all("!" <= char <= "~" for char in token):
        raise AuthConfigError("the token must consist of printable ASCII characters without spaces")
    return token


def read_token(token_file: str | os.PathLike | None = None) -> str | None:
    """Read a token from ``token_file`` (surrounding whitespace stripped), else from $DFST_TOKEN, else None."""
    if token_file is not None:
        path = pathlib.Path(token_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
            raise AuthConfigError(f"cannot read the token file {path}: {reason}") from None
        return validate_token(text.strip())
    value = os.environ.get(TOKEN_ENV)
    if value:
        return validate_token(value.strip())
    return None


def check_security(host: str, security: SecurityConfig) -> None:
    """Raise AuthConfigError if ``security`` is unsafe or incomplete for a server bound to ``host``."""
    if security.token is not None:
        validate_token(security.token)
    if security.token is None and (security.require_token or not is_loopback(host)):
        reason = "require_token is set" if security.require_token else f"{host} is not a loopback address"
        raise AuthConfigError(
            f"a token is required because {reason}; set ${TOKEN_ENV} or pass --token-file"
        )
    if (security.tls_cert_file is None) != (security.tls_key_file is None):
        raise AuthConfigError("TLS needs both a certificate file and a key file; pass --tls-cert and --tls-key")
    if not is_loopback(host) and not security.tls:
        logger.warning("serving %s without TLS: tokens and data cross the network in clear text", host)


def _digest(value: str | bytes) -> bytes:
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    return hashlib.sha256(data).digest()


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Rejects every rpc outside UNAUTHENTICATED_PREFIXES whose bearer token does not match.

    Both sides are hashed before ``hmac.compare_digest``, so the comparison
    takes the same time whatever the presented value's length and content.
    """

    def __init__(self, token: str):
        self._expected = _digest(BEARER_PREFIX + validate_token(token))
        self._rejected = 0

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if method.startswith(UNAUTHENTICATED_PREFIXES):
            return continuation(handler_call_details)
        presented = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == AUTHORIZATION_KEY:
                presented = value
                break
        if presented is not None and hmac.compare_digest(_digest(presented), self._expected):
            return continuation(handler_call_details)

        self._rejected += 1
        reason = "missing" if presented is None else "invalid"
        # Log the first rejection and then every 100th, never the presented value.
        if self._rejected == 1 or self._rejected % 100 == 0:
            logger.warning("rejected %s with a %s token (%d rejections so far)", method, reason, self._rejected)
        handler = continuation(handler_call_details)
        message = f"{reason} bearer token; send the metadata '{AUTHORIZATION_KEY}: Bearer <token>'"
        return _rejecting_handler(handler, message)


def _rejecting_handler(handler: grpc.RpcMethodHandler | None, message: str) -> grpc.RpcMethodHandler:
    """Return a handler of the same streaming kind as ``handler`` that aborts with UNAUTHENTICATED."""

    def abort(_request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    def abort_stream(_request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # unreachable; makes this a generator as streaming handlers must be

    request_streaming = handler is not None and handler.request_streaming
    response_streaming = handler is not None and handler.response_streaming
    if request_streaming and response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort_stream)
    if request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort_stream)
    return grpc.unary_unary_rpc_method_handler(abort)


def server_interceptors(security: SecurityConfig) -> list[grpc.ServerInterceptor]:
    """Return the interceptors that enforce ``security`` (none without a token)."""
    return [] if security.token is None else [TokenAuthInterceptor(security.token)]


def _read_pem(path: pathlib.Path, what: str) -> bytes:
    try:
        data = pathlib.Path(path).read_bytes()
    except OSError as error:
        raise AuthConfigError(f"cannot read the TLS {what} {path}: {error.strerror}") from None
    if b"-----BEGIN " not in data:
        raise AuthConfigError(f"the TLS {what} {path} is not a PEM file")
    return data


def add_port(server: grpc.Server, address: str, security: SecurityConfig) -> int:
    """Bind ``address`` with TLS when ``security`` has a certificate, plain TCP otherwise; return the port."""
    if not security.tls:
        return server.add_insecure_port(address)
    key = _read_pem(security.tls_key_file, "key")
    cert = _read_pem(security.tls_cert_file, "certificate")
    try:
        credentials = grpc.ssl_server_credentials([(key, cert)])
    except (ValueError, RuntimeError) as error:
        raise AuthConfigError(f"invalid TLS certificate or key: {error}") from None
    return server.add_secure_port(address, credentials)


class _BearerTokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the authorization metadata to every call of a channel."""

    def __init__(self, token: str):
        self._entry = (AUTHORIZATION_KEY, BEARER_PREFIX + validate_token(token))

    def _details(self, details):
        metadata = [entry for entry in (details.metadata or ()) if entry[0] != AUTHORIZATION_KEY]
        metadata.append(self._entry)
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)


def open_channel(
    target: str,
    token: str | None = None,
    root_certs_file: str | os.PathLike | None = None,
    server_name: str | None = None,
) -> grpc.Channel:
    """Open a channel to ``target`` (HOST:PORT), over TLS when ``root_certs_file`` is given, sending ``token``.

    ``server_name`` overrides the host name checked against the certificate,
    e.g. for a certificate issued to ``localhost`` reached as ``127.0.0.1``.
    """
    if root_certs_file is not None:
        roots = _read_pem(pathlib.Path(root_certs_file), "root certificates")
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=roots), options=options)
    else:
        channel = grpc.insecure_channel(target)
    if token is None:
        return channel
    return grpc.intercept_channel(channel, _BearerTokenInterceptor(token))
