"""How a client reaches the server: target, TLS, bearer token, deadline and retries, turned into a
gRPC channel (blocking or asyncio) and the metadata of each call.

Retries are gRPC's own (a service-config retry policy): only calls that end with UNAVAILABLE are
retried, with exponential backoff, and a call is never retried once the server has answered or
once more than the retry buffer of its request stream has been sent. Every other status is final:
retrying cannot fix a bad argument, a missing session or a refused token.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

SERVICE = "spikeshot.v1.SpikeShot"
DEFAULT_TARGET = "127.0.0.1:50051"
MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # what the client accepts; the server sets its own limit
MAX_ATTEMPTS = 5  # gRPC's ceiling on attempts of one call

Pem = str | os.PathLike | bytes


def _pem(value: Pem | None) -> bytes | None:
    """PEM bytes as given, or read from a path."""
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


@dataclass(frozen=True)
class Connection:
    """Where and how to call the server.

    ``ca``: PEM bundle (bytes or a path) that signed the server's certificate; ``cert`` and
    ``key``: the client's certificate chain and private key, for servers that require one.
    ``tls`` turns TLS on with the system's roots when neither is given. ``server_name``
    overrides the name checked against the server's certificate. ``token`` is sent as
    ``authorization: Bearer <token>``. ``timeout`` is the deadline in seconds of every call but
    live streams (None: no deadline). ``retries`` is how many times a call that ended with
    UNAVAILABLE is tried again (0..4), backing off from ``backoff_s`` up to ``max_backoff_s``.
    ``packed_events``: send events in the packed encoding (8 bytes an event instead of 13) to a
    server that takes it, as its ``ListModels`` says (asked once, before the first call that
    carries events); False: the four columns always.
    """

    target: str = DEFAULT_TARGET
    tls: bool = False
    ca: Pem | None = None
    cert: Pem | None = None
    key: Pem | None = None
    server_name: str | None = None
    token: str | None = None
    timeout: float | None = 60.0
    retries: int = 4
    backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    packed_events: bool = True

    def __post_init__(self):
        if not self.target:
            raise ValueError("target must be HOST:PORT (or another gRPC target), got ''")
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together: give both or neither")
        if not 0 <= self.retries < MAX_ATTEMPTS:
            raise ValueError(f"retries must be in 0..{MAX_ATTEMPTS - 1}, got {self.retries}")
        if not 0 < self.backoff_s <= self.max_backoff_s:
            raise ValueError(
                f"need 0 < backoff_s <= max_backoff_s, got {self.backoff_s} and "
                f"{self.max_backoff_s}"
            )
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds or None, got {self.timeout}")

    @property
    def secure(self) -> bool:
        return self.tls or self.ca is not None or self.cert is not None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata of every call."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def options(self) -> list[tuple[str, object]]:
        """Channel options: message sizes, the retry policy, the TLS name override."""
        policy = {
            "maxAttempts": self.retries + 1,
            "initialBackoff": f"{self.backoff_s}s",
            "maxBackoff": f"{self.max_backoff_s}s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
        method = {"name": [{"service": SERVICE}]}
        if self.retries:
            method["retryPolicy"] = policy
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.enable_retries", int(self.retries > 0)),
            ("grpc.service_config", json.dumps({"methodConfig": [method]})),
        ]
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return options

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(_pem(self.ca), _pem(self.key), _pem(self.cert))

    def channel(self) -> grpc.Channel:
        """A blocking channel."""
        if self.secure:
            return grpc.secure_channel(self.target, self.credentials(), self.options())
        return grpc.insecure_channel(self.target, self.options())

    def aio_channel(self) -> grpc.aio.Channel:
        """An asyncio channel (call from within the event loop)."""
        if self.secure:
            return grpc.aio.secure_channel(self.target, self.credentials(), self.options())
        return grpc.aio.insecure_channel(self.target, self.options())
