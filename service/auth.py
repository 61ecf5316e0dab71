"""Who is calling: bearer tokens from a tokens file, client certificates, and the server's TLS
credentials.

The tokens file holds one ``TOKEN CALLER`` pair per line (blank lines and ``#`` comments ignored);
a caller sends ``authorization: Bearer TOKEN`` metadata and becomes the owner ``CALLER`` of the
sessions it creates. Tokens are at least ``MIN_TOKEN_CHARS`` characters long and are kept only as
SHA-256 digests.

The owner of a request is, in this order:

1. with a tokens file, the caller name of its token (a request without a valid one is
   UNAUTHENTICATED);
2. with mutual TLS (``tls_client_ca``), the identity of the client's certificate (its subject
   alternative name, or its common name when it has none);
3. otherwise ``ANONYMOUS``, one owner shared by every caller. Not the peer's address: that changes
   with each connection, and a client that reconnects would lose its sessions.

``Authenticator`` is a server interceptor that finds the owner before the servicer runs and hands
the servicer a context whose ``caller`` attribute holds it. Health checks need no credentials, so
that load balancers and orchestrators can probe the server; every other call, reflection
included, does when a tokens file is set.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from spikeshot.service import metrics
from spikeshot.service.config import ServerConfig
from spikeshot.service.errors import Unauthenticated

ANONYMOUS = "anonymous"
MIN_TOKEN_CHARS = 16
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)
BEHAVIORS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")  # of a handler


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def load_tokens(path: str | Path) -> dict[bytes, str]:
    """The tokens file's callers by SHA-256 digest of their token; ValueError names the line."""
    callers: dict[bytes, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        fields = text.split()
        where = f"{path}:{number}"
        if len(fields) != 2:
            raise ValueError(f"{where}: expected 'TOKEN CALLER', got {len(fields)} fields")
        token, caller = fields
        if len(token) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"{where}: the token of {caller!r} has {len(token)} characters, "
                f"fewer than {MIN_TOKEN_CHARS}"
            )
        if _digest(token) in callers:
            raise ValueError(
                f"{where}: the token of {caller!r} is already given to {callers[_digest(token)]!r}"
            )
        callers[_digest(token)] = caller
    if not callers:
        raise ValueError(f"{path}: no tokens")
    return callers


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from ``tls_cert`` and ``tls_key`` (None when they are unset); with
    ``tls_client_ca``, clients must present a certificate that it signed."""
    if not config.tls_cert:
        return None
    chain = Path(config.tls_cert).read_bytes()
    key = Path(config.tls_key).read_bytes()
    ca = Path(config.tls_client_ca).read_bytes() if config.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=ca, require_client_auth=ca is not None
    )


class CallerContext:
    """A servicer context with the request's owner in ``caller``; everything else is the
    wrapped context's."""

    def __init__(self, context: grpc.ServicerContext, caller: str):
        self._context = context
        self.caller = caller

    def __getattr__(self, name):
        return getattr(self._context, name)


class Authenticator(grpc.ServerInterceptor):
    """Finds each request's owner (see the module notes) or answers UNAUTHENTICATED."""

    def __init__(self, tokens: dict[bytes, str] | None = None, certificates: bool = False):
        self.tokens, self.certificates = tokens, certificates

    @classmethod
    def from_config(cls, config: ServerConfig) -> Authenticator:
        tokens = load_tokens(config.tokens_file) if config.tokens_file else None
        return cls(tokens, bool(config.tls_client_ca))

    def caller(self, context: grpc.ServicerContext) -> str:
        """The owner of the request of ``context``; ``Unauthenticated`` says what is missing."""
        if self.tokens is not None:
            metadata = dict(context.invocation_metadata() or ())
            scheme, _, token = str(metadata.get("authorization", "")).partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated(
                    "this server needs a bearer token: send metadata 'authorization: Bearer TOKEN'"
                )
            caller = self.tokens.get(_digest(token.strip()))
            if caller is None:
                raise Unauthenticated("the bearer token is not one this server accepts")
            return caller
        if self.certificates:
            identities = context.peer_identities()
            if not identities:
                raise Unauthenticated("the client certificate names no identity")
            return identities[0].decode()
        return ANONYMOUS

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        kind = next(k for k in BEHAVIORS if getattr(handler, k) is not None)
        wrapped = self._wrap(getattr(handler, kind), method.rsplit("/", 1)[-1])
        return handler._replace(**{kind: wrapped})

    def _wrap(self, behavior: Callable, method: str) -> Callable:
        def authenticated(request, context):
            start = time.perf_counter()
            try:
                caller = self.caller(context)
            except Unauthenticated as e:
                elapsed = time.perf_counter() - start
                metrics.REQUEST_SECONDS.labels(method, e.code).observe(elapsed)
                context.abort(grpc.StatusCode.UNAUTHENTICATED, e.message)
            return behavior(request, CallerContext(context, caller))

        return authenticated
