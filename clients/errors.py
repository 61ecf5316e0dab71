"""The client's errors: what the server answered, the server being out of reach, and event sources
that cannot be opened.

``ServerError`` carries the gRPC status code and the server's own message. ``ServerUnavailable``
(status UNAVAILABLE, after the retries) means the server could not be reached or is shutting down:
the one failure that waiting may fix. Every other code is an answer about the request itself.
"""

from __future__ import annotations

import grpc


class ServerError(Exception):
    """A call the server (or the channel) ended with a status other than OK; ``code`` is the
    ``grpc.StatusCode`` and ``details`` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str, method: str = ""):
        self.code, self.details, self.method = code, details, method
        where = f"{method}: " if method else ""
        super().__init__(f"{where}{code.name}: {details}")


class ServerUnavailable(ServerError):
    """The server could not be reached (or is shutting down), retries included."""


class SourceError(OSError):
    """An event source (a DV network stream, a camera) that cannot be opened or read."""


def from_rpc_error(error: grpc.RpcError, method: str = "") -> ServerError:
    """The ``ServerError`` (or ``ServerUnavailable``) for a failed call."""
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    details = error.details() if callable(getattr(error, "details", None)) else str(error)
    cls = ServerUnavailable if code == grpc.StatusCode.UNAVAILABLE else ServerError
    return cls(code, details or "", method)
