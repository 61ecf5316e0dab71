"""The errors of the service, one class per gRPC status code.

Every class carries the status code's name in ``code`` (a ``grpc.StatusCode`` member name), so a
servicer maps any of them with ``grpc.StatusCode[error.code]`` and its message, and needs no table.
``InvalidArgument`` also names the offending ``field`` and, for events, the first bad ``index``.
This module does not import grpc: the in-process ``Engine`` raises the same errors.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of the service's errors; ``code`` is the gRPC status code's name."""

    code = "UNKNOWN"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidArgument(ServiceError):
    """The request itself is wrong (bad events or frames, settings, labels); retrying won't help.
    ``field`` names what is wrong (e.g. ``events.t``) and ``index`` the first bad element."""

    code = "INVALID_ARGUMENT"

    def __init__(self, message: str, field: str | None = None, index: int | None = None):
        super().__init__(message)
        self.field, self.index = field, index


class NotFound(ServiceError):
    """No such session or model for this caller (another caller's session is not found either)."""

    code = "NOT_FOUND"


class FailedPrecondition(ServiceError):
    """The session is not in a state for this request (e.g. Classify before any Adapt)."""

    code = "FAILED_PRECONDITION"


class ResourceExhausted(ServiceError):
    """A cap is reached: the executor's queue (retry later), sessions, or support examples."""

    code = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(ServiceError):
    """The request's deadline passed before its work finished; nothing was changed."""

    code = "DEADLINE_EXCEEDED"


class Cancelled(ServiceError):
    """The caller cancelled the request; nothing was changed."""

    code = "CANCELLED"


class Unavailable(ServiceError):
    """The engine is shutting down."""

    code = "UNAVAILABLE"


class Unauthenticated(ServiceError):
    """The request carries no valid credentials."""

    code = "UNAUTHENTICATED"


ERRORS: tuple[type[ServiceError], ...] = (
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    ResourceExhausted,
    DeadlineExceeded,
    Cancelled,
    Unavailable,
    Unauthenticated,
)
