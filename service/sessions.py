"""A session: who owns it, its settings, its support set and its adapted weights; and the bytes
that carry one (``dump``/``load``). The stores that hold sessions are ``store``'s.

A session's learned state is one immutable ``State`` (support set, class labels, weights,
version). An Adapt builds a new ``State`` aside and ``commit`` swaps it in, so a reader holding the
previous one (a Classify running during an Adapt) sees one consistent set, and a failed Adapt
changes nothing.
Quantized weights are stored as integer levels (int8 up to 8 bits, else int16) plus one scale per
tensor, float weights as float32; only the adapted tensors are stored, the others are the model's.

Sessions are serialised (``dump``/``load``) as a safetensors file, format ``spikeshot-session/1``:
tensors ``support`` ([examples, bins, 2, height, width] float32) and ``weight.<parameter>``, and
under the metadata key ``session`` a JSON object with the settings, labels, scales, version and the
model's fingerprint. Never pickle. The same bytes are what ExportSession answers and what a Redis
store holds; a snapshot file (``memory_store``) adds the id, owner and creation time. ``load``
checks a whole file before anything of it is stored.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from spikeshot.models.network import HEAD, HEADS
from spikeshot.models.quantize import ROUNDINGS, Quantizer
from spikeshot.service import pages
from spikeshot.service.errors import MAX_TEXT_CHARS, InvalidArgument, echo

FORMAT = "spikeshot-session/1"
GRIDS = ("global", "per_tensor")
WEIGHT = "weight."
F32_MAX = float(np.finfo(np.float32).max)
# Why bytes are not a session file, worded without the parsers' own messages.
NOT_SAFETENSORS = f"not a safetensors file, which a {FORMAT} file is: "
HEADER_RULE = "it must start with an 8-byte little-endian length and a JSON header of that length"
TENSORS_RULE = "its tensor data is truncated or does not match its header"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_positive(value: object) -> bool:
    """A number in (0, float32 max]: not NaN, infinite, negative or zero."""
    return _is_real(value) and 0 < value <= F32_MAX


@dataclass(frozen=True)
class Settings:
    """A session's inner loop, fixed at creation. ``step_size`` None: the model's learned
    per-parameter step sizes; ``weight_bits`` 0: float32 weights; ``head``: where each Adapt's
    inner loop starts (``network.HEADS``: the meta-trained readout, or one set to the support
    set's class means, after which no step is needed)."""

    model: str
    ways: int
    inner_steps: int
    step_size: float | None
    weight_bits: int
    rounding: str = "nearest"
    grid: str = "global"
    seed: int = 0
    head: str = "meta"

    def __post_init__(self):
        fewest_steps = 0 if self.head == "prototype" else 1  # the meta readout needs a step
        checks = (
            ("model", isinstance(self.model, str), "must be a string"),
            ("ways", _is_int(self.ways) and self.ways >= 2, "must be an integer >= 2"),
            ("head", self.head in HEADS, f"must be one of {HEADS}"),
            (
                "inner_steps",
                _is_int(self.inner_steps) and self.inner_steps >= fewest_steps,
                f"must be an integer >= {fewest_steps} with the {self.head} head",
            ),
            (
                "step_size",
                self.step_size is None or _is_positive(self.step_size),
                "must be finite (as float32) and > 0",
            ),
            (
                "weight_bits",
                _is_int(self.weight_bits) and self.weight_bits in (0, *range(2, 17)),
                "must be 0 (float32) or 2..16",
            ),
            ("rounding", self.rounding in ROUNDINGS, f"must be one of {ROUNDINGS}"),
            ("grid", self.grid in GRIDS, f"must be one of {GRIDS}"),
            (
                "seed",
                _is_int(self.seed) and 0 <= self.seed < 2**64,
                "must be an integer in 0..2^64-1",
            ),
        )
        for name, ok, rule in checks:
            if not ok:
                raise InvalidArgument(f"{name} {rule}, got {echo(getattr(self, name))}", name)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Shot(NamedTuple):
    """One support example: its label and its frames [bins, 2, height, width] (float32)."""

    label: str
    frames: np.ndarray


@dataclass(frozen=True)
class Weights:
    """Adapted tensors: integer levels and a scale per tensor when quantized, else float32."""

    tensors: dict[str, torch.Tensor]
    scales: dict[str, float] | None = None

    @classmethod
    def store(
        cls,
        params: dict[str, torch.Tensor],
        bits: int = 0,
        scales: dict[str, float] | None = None,
        shared: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
    ) -> Weights:
        """Keep ``params`` (values already on the grid of ``scales`` when ``bits`` > 0), as
        ``keep`` does."""
        if not bits:
            return cls.keep({k: v.detach().float() for k, v in params.items()}, None, shared)
        q = Quantizer(bits)  # nearest rounding recovers the levels of values on the grid
        levels = {k: q.to_int(v, scales[k]) for k, v in params.items()}
        return cls.keep(levels, {k: float(scales[k]) for k in params}, shared)

    @classmethod
    def keep(
        cls,
        tensors: dict[str, torch.Tensor],
        scales: dict[str, float] | None = None,
        shared: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
    ) -> Weights:
        """``tensors`` (levels with their ``scales``, else float32 values) in pages of their own;
        with ``shared`` (the engine's ``_Model.shared``), the hidden layers' as the equal tensors
        other sessions hold: sessions that took no inner step store only their readout."""
        held = {k: shared(k, v) for k, v in tensors.items() if k not in HEAD} if shared else {}
        own = pages.tensors({k: v for k, v in tensors.items() if k not in held})
        return cls({k: held[k] if k in held else own[k] for k in tensors}, scales)

    def values(self) -> dict[str, torch.Tensor]:
        """The float32 weights."""
        if self.scales is None:
            return dict(self.tensors)
        return {k: Quantizer.from_int(v, self.scales[k]) for k, v in self.tensors.items()}

    @property
    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.tensors.values())


@dataclass(frozen=True)
class State:
    """What an Adapt replaces at once. ``classes`` are the labels in output order (first seen
    first); ``version`` counts successful Adapts (0 with no weights)."""

    support: tuple[Shot, ...] = ()
    classes: tuple[str, ...] = ()
    weights: Weights | None = None
    version: int = 0


EMPTY = State()
"""The state of a session before any Adapt."""


def in_own_pages(shots: tuple[Shot, ...]) -> tuple[Shot, ...]:
    """The shots with their frames stacked, read-only, in memory pages of their own (``pages``)."""
    if not shots:
        return shots
    frames = pages.stack([s.frames for s in shots])
    return tuple(Shot(s.label, frames[i]) for i, s in enumerate(shots))


def classes_of(support: tuple[Shot, ...]) -> tuple[str, ...]:
    """The labels of a support set in first-seen order."""
    return tuple(dict.fromkeys(shot.label for shot in support))


@dataclass(eq=False)
class Session:
    """One session. ``state`` is replaced only by its store's ``commit`` (or, in a shared store,
    when a read finds a newer version); ``adapting`` is held by this process's Adapt in progress
    (Adapts of one session in one process run one after the other)."""

    id: str
    owner: str
    settings: Settings
    fingerprint: str
    created: float
    last_used: float
    state: State = EMPTY
    adapting: threading.Lock = field(default_factory=threading.Lock)


def dump(session: Session, state: State | None = None, *, private: bool = False) -> bytes:
    """The bytes of a session (its ``state`` unless another is given); ``private`` adds the id,
    owner and creation time (snapshots)."""
    state = session.state if state is None else state
    tensors = {}
    if state.support:
        tensors["support"] = torch.from_numpy(np.stack([s.frames for s in state.support]))
    if state.weights is not None:
        tensors.update({WEIGHT + k: v.contiguous() for k, v in state.weights.tensors.items()})
    meta = {
        "settings": session.settings.to_dict(),
        "fingerprint": session.fingerprint,
        "classes": list(state.classes),
        "support_labels": [s.label for s in state.support],
        "scales": None if state.weights is None else state.weights.scales,
        "version": state.version,
    }
    if private:
        meta.update(id=session.id, owner=session.owner, created=session.created)
    return save_tensors(tensors, metadata={"format": FORMAT, "session": json.dumps(meta)})


def _are_labels(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, str) and 0 < len(v) <= MAX_TEXT_CHARS for v in value
    )


LABELS = f"a list of labels (strings of 1..{MAX_TEXT_CHARS} characters)"
FIELDS = {  # the session JSON: field -> (what it must be, the check)
    "settings": ("an object", lambda v: isinstance(v, dict)),
    "fingerprint": ("a string", lambda v: isinstance(v, str)),
    "classes": (LABELS, _are_labels),
    "support_labels": (LABELS, _are_labels),
    "scales": (
        "null or an object of numbers > 0",
        lambda v: v is None or isinstance(v, dict) and all(map(_is_positive, v.values())),
    ),
    "version": ("an integer in 0..2^64-1", lambda v: _is_int(v) and 0 <= v < 2**64),
}
PRIVATE = {  # and those of a snapshot
    "id": ("a session id", lambda v: isinstance(v, str) and 0 < len(v) <= MAX_TEXT_CHARS),
    "owner": ("a string", lambda v: isinstance(v, str)),
    "created": ("a number", lambda v: _is_real(v) and abs(v) <= F32_MAX),
}


def _metadata(data: bytes, private: bool) -> dict:
    """The session JSON of a session file's header, each field checked."""
    try:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(bytes(data[8 : 8 + size]))
    except (ValueError, RecursionError):
        raise ValueError(NOT_SAFETENSORS + HEADER_RULE) from None
    if not isinstance(header, dict):
        raise ValueError(NOT_SAFETENSORS + "its JSON header must be an object")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ValueError(f"__metadata__ must be an object, got {echo(meta)}")
    if meta.get("format") != FORMAT:
        raise ValueError(f"format must be {FORMAT!r}, got {echo(meta.get('format'))}")
    try:
        info = json.loads(meta["session"])
    except (KeyError, TypeError, ValueError, RecursionError):
        info = None
    if not isinstance(info, dict):
        raise ValueError("invalid session data: metadata 'session' must be a JSON object")
    for name, (rule, ok) in (FIELDS | (PRIVATE if private else {})).items():
        if name not in info:
            raise ValueError(f"invalid session data: no {name!r}")
        if not ok(info[name]):
            raise ValueError(f"invalid session data: {name} must be {rule}, got {echo(info[name])}")
    return info


def _settings(values: dict) -> Settings:
    """The ``Settings`` of a session JSON's ``settings`` object."""
    names = [f.name for f in dataclasses.fields(Settings)]
    required = [f.name for f in dataclasses.fields(Settings) if f.default is dataclasses.MISSING]
    unknown = sorted(set(values) - set(names))
    missing = [n for n in required if n not in values]
    if unknown:
        raise ValueError(f"invalid session data: settings: unknown fields {echo(unknown)}")
    if missing:
        raise ValueError(f"invalid session data: settings: no {', '.join(map(repr, missing))}")
    try:
        return Settings(**values)
    except InvalidArgument as e:
        raise ValueError(f"invalid session data: settings: {e}") from None


def _weights(settings: Settings, weights: dict[str, torch.Tensor], scales) -> Weights | None:
    """A session file's weight tensors, checked: integer levels of the session's bits with one
    scale each, or finite float32 values; None when there are none."""
    bits = settings.weight_bits
    quantized = bool(bits and weights)
    if (scales is not None) != quantized or quantized and set(scales) != set(weights):
        raise ValueError("scales must give one scale per tensor of quantized weights, else be null")
    if not weights:
        return None
    if not bits:
        for k, v in weights.items():
            if v.dtype != torch.float32 or not bool(torch.isfinite(v).all()):
                raise ValueError(f"weight {echo(k)} must be finite float32 values")
        return Weights.keep(weights)
    q = Quantizer(bits)
    for k, v in weights.items():
        if v.dtype != q.int_dtype or bool(((v < q.qmin) | (v > q.qmax)).any()):
            raise ValueError(f"weight {echo(k)} is not {bits}-bit integers")
    return Weights.keep(weights, {k: float(s) for k, s in scales.items()})


def load(data: bytes, *, private: bool = False) -> tuple[dict, Settings, State]:
    """Parse and check ``dump``'s bytes (``private``: a snapshot's, with id, owner and creation
    time): (metadata, settings, state). Every metadata field's type and range and every tensor's
    dtype, rank and values are checked; the shapes against the model are the engine's check.
    ValueError says what is wrong."""
    info = _metadata(data, private)
    try:
        tensors = load_tensors(bytes(data))
    except Exception:  # safetensors raises errors of its own types, worded for Python
        raise ValueError(NOT_SAFETENSORS + TENSORS_RULE) from None
    settings = _settings(info["settings"])
    labels, classes, version = info["support_labels"], tuple(info["classes"]), info["version"]
    weights = {k[len(WEIGHT) :]: v for k, v in tensors.items() if k.startswith(WEIGHT)}
    unknown = sorted(set(tensors) - {"support"} - {WEIGHT + k for k in weights})
    if unknown:
        raise ValueError(f"unknown tensors {echo(unknown)}")
    support = tensors.get("support", torch.zeros(0, 1, 1, 1, 1))
    if support.dtype != torch.float32 or support.ndim != 5:
        raise ValueError(
            "support must be float32 of shape [examples, bins, 2, height, width], got "
            f"{str(support.dtype).removeprefix('torch.')} {list(support.shape)}"
        )
    if len(support) != len(labels):
        raise ValueError(f"{len(support)} support frames but {len(labels)} labels")
    frames = support.numpy()
    shots = in_own_pages(tuple(Shot(label, frames[i]) for i, label in enumerate(labels)))
    if classes != classes_of(shots):
        raise ValueError(f"classes {echo(list(classes))} do not match the support labels' order")
    if (version > 0) != bool(weights):
        raise ValueError(f"version {version} does not match {len(weights)} weight tensors")
    stored = _weights(settings, weights, info["scales"])
    return info, settings, State(shots, classes, stored, version)
