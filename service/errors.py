"""The errors of the service, one class per gRPC status code.

Every class carries the status code's name in ``code`` (a ``grpc.StatusCode`` member name), so a
servicer maps any of them with ``grpc.StatusCode[error.code]`` and its message, and needs no table.
``InvalidArgument`` also names the offending ``field`` and, for events, the first bad ``index``.
This module does not import grpc: the in-process ``Engine`` raises the same errors.

Status messages travel in size-limited metadata, so a message repeats a client's value through
``echo`` (its first ``ECHO_CHARS`` characters), and ids, names and labels longer than
``MAX_TEXT_CHARS`` are refused at the door (``check_text``).
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


class Aborted(ServiceError):
    """A concurrent change won: another Adapt of the session (on this or another replica)
    committed first, each time this one tried; nothing was changed, retrying may succeed."""

    code = "ABORTED"


class DeadlineExceeded(ServiceError):
    """The request's deadline passed before its work finished; nothing was changed."""

    code = "DEADLINE_EXCEEDED"


class Cancelled(ServiceError):
    """The caller cancelled the request; nothing was changed."""

    code = "CANCELLED"


class Unavailable(ServiceError):
    """The engine is shutting down, or its session store cannot be reached in time (retry)."""

    code = "UNAVAILABLE"


class Unauthenticated(ServiceError):
    """The request carries no valid credentials."""

    code = "UNAUTHENTICATED"


ERRORS: tuple[type[ServiceError], ...] = (
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    ResourceExhausted,
    Aborted,
    DeadlineExceeded,
    Cancelled,
    Unavailable,
    Unauthenticated,
)


MAX_TEXT_CHARS = 256
"""The most characters of a session id, model name or label."""
ECHO_CHARS = 64
"""The most characters of a client's value that an error message repeats."""


def echo(value: object) -> str:
    """``repr(value)`` for an error message, cut after ``ECHO_CHARS`` characters (a string's
    length then follows)."""
    text = repr(value)
    if len(text) <= ECHO_CHARS:
        return text
    length = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[:ECHO_CHARS]}...{length}"


def check_text(value: str, field: str, where: str = "") -> str:
    """``value``, or ``InvalidArgument`` naming ``field`` (after ``where``) when it is longer than
    ``MAX_TEXT_CHARS`` characters."""
    if len(value) > MAX_TEXT_CHARS:
        raise InvalidArgument(
            f"{where}{field} has {len(value)} characters, more than the limit of {MAX_TEXT_CHARS}",
            field,
        )
    return value
