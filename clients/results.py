"""What the service answers, as plain frozen dataclasses: one set for both sides. The ``Engine``
returns them, the servicer sends them (``to_proto``) and the clients read them back
(``from_proto``); fields as in ``spikeshot.proto``, probabilities as a dict from label to
probability, in output order. ``to_dict`` gives JSON-ready dicts.

A step size the wire sends as 0 ("the model's learned step sizes") is None here: ``from_proto`` and
``to_proto`` map one to the other.

This module imports only the standard library and the generated protobuf module: the client
imports it without torch, and the server, whose install holds the client's, imports it from here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from spikeshot.v1 import spikeshot_pb2 as pb

ROUNDINGS = ("nearest", "stochastic")
GRIDS = ("global", "per_tensor")
HEADS = ("meta", "prototype")  # the Head enum's HEAD_META, HEAD_PROTOTYPE
EXPORT_FORMATS = ("session", "nir")  # ExportFormat's EXPORT_FORMAT_SESSION, EXPORT_FORMAT_NIR


def _enum_name(enum, value: int, prefix: str) -> str:
    """``ROUNDING_NEAREST`` -> ``nearest``; unspecified -> ``""``."""
    name = enum.Name(value).removeprefix(prefix).lower()
    return "" if name == "unspecified" else name


def _enum_value(enum, name: str, prefix: str) -> int:
    """``nearest`` -> ``ROUNDING_NEAREST``; ``""`` -> unspecified."""
    return enum.Value(f"{prefix}{(name or 'unspecified').upper()}")


def _same_fields(cls, message, **extra):
    """``cls`` from the fields of ``message`` that share its field names, plus ``extra``."""
    names = [f.name for f in dataclasses.fields(cls) if f.name not in extra]
    return cls(**{n: getattr(message, n) for n in names}, **extra)


def _message(message_type, result, drop: tuple[str, ...] = (), **extra):
    """A ``message_type`` from the fields of ``result`` (but those in ``drop``), plus ``extra``:
    ``_same_fields`` the other way."""
    names = [f.name for f in dataclasses.fields(result) if f.name not in (*extra, *drop)]
    return message_type(**{n: getattr(result, n) for n in names}, **extra)


class _Result:
    def to_dict(self) -> dict:
        """The result as a JSON-ready dict (nested dataclasses become dicts)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Timings(_Result):
    """Milliseconds per stage of a request on the server (0 for stages that did not run)."""

    decode_ms: float = 0.0
    bin_ms: float = 0.0
    queue_ms: float = 0.0
    adapt_ms: float = 0.0
    forward_ms: float = 0.0
    total_ms: float = 0.0

    @classmethod
    def from_proto(cls, m: pb.Timings) -> Timings:
        return _same_fields(cls, m)

    def to_proto(self) -> pb.Timings:
        return _message(pb.Timings, self)


def _probabilities(items) -> dict[str, float]:
    return {p.label: p.probability for p in items}


def _probability_messages(probabilities: dict[str, float]) -> list[pb.LabelProbability]:
    return [pb.LabelProbability(label=k, probability=v) for k, v in probabilities.items()]


@dataclass(frozen=True)
class Prediction(_Result):
    """The answer to one query."""

    label: str
    probabilities: dict[str, float]
    weights_version: int
    events: int
    timings: Timings

    @classmethod
    def from_proto(cls, m: pb.ClassifyResponse) -> Prediction:
        return _same_fields(
            cls,
            m,
            probabilities=_probabilities(m.probabilities),
            timings=Timings.from_proto(m.timings),
        )

    def to_proto(self) -> pb.ClassifyResponse:
        return _message(
            pb.ClassifyResponse,
            self,
            probabilities=_probability_messages(self.probabilities),
            timings=self.timings.to_proto(),
        )


@dataclass(frozen=True)
class WindowPrediction(_Result):
    """The answer for the window ``[start_us, end_us)`` of a stream (on the events' clock)."""

    start_us: int
    end_us: int
    label: str
    probabilities: dict[str, float]
    events: int
    complete: bool
    weights_version: int
    timings: Timings

    @classmethod
    def from_proto(cls, m: pb.ClassifyStreamResponse) -> WindowPrediction:
        return _same_fields(
            cls,
            m,
            start_us=m.window_start_us,
            end_us=m.window_end_us,
            probabilities=_probabilities(m.probabilities),
            timings=Timings.from_proto(m.timings),
        )

    def to_proto(self) -> pb.ClassifyStreamResponse:
        return _message(
            pb.ClassifyStreamResponse,
            self,
            ("start_us", "end_us"),
            window_start_us=self.start_us,
            window_end_us=self.end_us,
            probabilities=_probability_messages(self.probabilities),
            timings=self.timings.to_proto(),
        )


@dataclass(frozen=True)
class AdaptResult(_Result):
    """The outcome of an Adapt: losses before and after, support accuracy, the session's labels."""

    session_id: str
    loss_before: float
    loss_after: float
    support_accuracy: float
    examples: int
    new_examples: int
    classes: tuple[str, ...]
    weights_version: int
    steps: int
    timings: Timings

    @classmethod
    def from_proto(cls, m: pb.AdaptResponse) -> AdaptResult:
        return _same_fields(cls, m, classes=tuple(m.classes), timings=Timings.from_proto(m.timings))

    def to_proto(self) -> pb.AdaptResponse:
        return _message(pb.AdaptResponse, self, timings=self.timings.to_proto())


@dataclass(frozen=True)
class Settings(_Result):
    """A session's settings as the server resolved them (``step_size`` None: the model's learned
    step sizes; ``weight_bits`` 0: float32 weights). A plain view: the server keeps and checks
    its own (``spikeshot.service.sessions.Settings``, the same fields)."""

    model: str
    ways: int
    inner_steps: int
    step_size: float | None
    weight_bits: int
    rounding: str
    grid: str
    seed: int
    head: str

    @classmethod
    def from_proto(cls, m: pb.SessionSettings) -> Settings:
        return _same_fields(
            cls,
            m,
            step_size=m.step_size or None,
            rounding=_enum_name(pb.Rounding, m.rounding, "ROUNDING_"),
            grid=_enum_name(pb.WeightGrid, m.grid, "WEIGHT_GRID_"),
            head=_enum_name(pb.Head, m.head, "HEAD_"),
        )

    def to_proto(self) -> pb.SessionSettings:
        return _message(
            pb.SessionSettings,
            self,
            step_size=self.step_size or 0.0,
            rounding=_enum_value(pb.Rounding, self.rounding, "ROUNDING_"),
            grid=_enum_value(pb.WeightGrid, self.grid, "WEIGHT_GRID_"),
            head=_enum_value(pb.Head, self.head, "HEAD_"),
        )


@dataclass(frozen=True)
class SessionInfo(_Result):
    """A session as the server holds it (times in seconds since the Unix epoch)."""

    session_id: str
    settings: Settings
    classes: tuple[str, ...]
    examples: int
    weights_version: int
    created_at: float
    last_used_at: float
    expires_at: float

    @classmethod
    def from_proto(cls, m: pb.Session) -> SessionInfo:
        return _same_fields(
            cls, m, settings=Settings.from_proto(m.settings), classes=tuple(m.classes)
        )

    def to_proto(self) -> pb.Session:
        return _message(pb.Session, self, settings=self.settings.to_proto())


@dataclass(frozen=True)
class ModelInfo(_Result):
    """A meta-trained model of the server, with its model card as a dict (``step_size`` None:
    learned step sizes; ``weight_bits`` 0: float32)."""

    name: str
    is_default: bool
    card: dict
    arch: str
    ways: int
    bins: int
    height: int
    width: int
    sensor_width: int
    sensor_height: int
    window_us: int
    inner_steps: int
    step_size: float | None
    weight_bits: int
    parameters: int
    fingerprint: str

    @classmethod
    def from_proto(cls, m: pb.Model) -> ModelInfo:
        return _same_fields(
            cls,
            m,
            card=json.loads(m.card_json) if m.card_json else {},
            step_size=m.step_size or None,
        )

    def to_proto(self, card: pb.ModelCard | None = None) -> pb.Model:
        """The ``Model`` message; ``card``: its typed ``ModelCard`` (the server's, built from
        ``self.card``)."""
        return _message(
            pb.Model,
            self,
            ("card",),
            card_json=json.dumps(self.card),
            step_size=self.step_size or 0.0,
            card=card,
        )


@dataclass(frozen=True)
class ServerLimits(_Result):
    """The limits of the server (``ServerLimits`` in ``spikeshot.proto``: message bytes, events per
    example or query, support examples, inner steps, sessions, ...); all 0 from a server that
    announces none."""

    max_message_bytes: int
    max_events: int
    max_support_examples: int
    max_inner_steps: int
    max_sessions_per_owner: int
    max_sessions: int
    session_ttl_s: float
    max_text_chars: int
    max_window_us: int
    max_timestamp_us: int
    max_sensor_size: int
    max_queued_jobs: int
    max_concurrent_calls: int

    @classmethod
    def from_proto(cls, m: pb.ServerLimits) -> ServerLimits:
        return _same_fields(cls, m)


def settings_message(
    model: str = "",
    ways: int = 0,
    inner_steps: int = 0,
    step_size: float | None = None,
    weight_bits: int | None = None,
    rounding: str = "",
    grid: str = "",
    seed: int = 0,
    head: str = "",
) -> pb.SessionSettings:
    """The ``SessionSettings`` of a new session; empty or zero values (and a None
    ``step_size``) take the model card's."""
    if rounding and rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    if grid and grid not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}")
    if head and head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    message = pb.SessionSettings(
        model=model,
        ways=ways,
        inner_steps=inner_steps,
        step_size=step_size or 0.0,
        seed=seed,
        rounding=_enum_value(pb.Rounding, rounding, "ROUNDING_"),
        grid=_enum_value(pb.WeightGrid, grid, "WEIGHT_GRID_"),
        head=_enum_value(pb.Head, head, "HEAD_"),
    )
    if weight_bits is not None:
        message.weight_bits = weight_bits
    return message


def export_request(session_id: str, format: str = "session") -> pb.ExportSessionRequest:
    """The ``ExportSessionRequest`` of a session in ``format`` (one of ``EXPORT_FORMATS``)."""
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {EXPORT_FORMATS}, got {format!r}")
    return pb.ExportSessionRequest(
        session_id=session_id, format=pb.ExportFormat.Value(f"EXPORT_FORMAT_{format.upper()}")
    )
