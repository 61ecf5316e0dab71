"""The session store: who owns each session, its settings, its support set and its adapted weights;
idle expiry, caps, and snapshots that survive a restart.

A session's learned state is one immutable ``State`` (support set, class labels, weights,
version). An Adapt builds a new ``State`` aside and ``commit`` swaps it in, so a reader holding the
previous one (a Classify running during an Adapt) sees one consistent set, and a failed Adapt
changes nothing.
Quantized weights are stored as integer levels (int8 up to 8 bits, else int16) plus one scale per
tensor, float weights as float32; only the adapted tensors are stored, the others are the model's.

Sessions are serialised (``dump``/``load``) as a safetensors file, format ``spikeshot-session/1``:
tensors ``support`` ([examples, bins, 2, height, width] float32) and ``weight.<parameter>``, and
under the metadata key ``session`` a JSON object with the settings, labels, scales, version and the
model's fingerprint. Never pickle. The same bytes are what ExportSession answers; a snapshot file
(``<session id>.safetensors`` in the snapshot directory) adds the id, owner and creation time. Each
snapshot is written to a temporary file, flushed to disk, then renamed over the old one. A restored
session's idle time starts again at the restart. ``load`` checks a whole file before anything of it
is stored; a snapshot that fails is moved aside (``<name>.rejected``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from spikeshot.models.quantize import ROUNDINGS, Quantizer
from spikeshot.service import pages
from spikeshot.service.errors import (
    MAX_TEXT_CHARS,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
    check_text,
    echo,
)

FORMAT = "spikeshot-session/1"
GRIDS = ("global", "per_tensor")
SUFFIX = ".safetensors"
WEIGHT = "weight."
REJECTED = ".rejected"
F32_MAX = float(np.finfo(np.float32).max)
log = logging.getLogger(__name__)


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
    per-parameter step sizes; ``weight_bits`` 0: float32 weights."""

    model: str
    ways: int
    inner_steps: int
    step_size: float | None
    weight_bits: int
    rounding: str = "nearest"
    grid: str = "global"
    seed: int = 0

    def __post_init__(self):
        checks = (
            ("model", isinstance(self.model, str), "must be a string"),
            ("ways", _is_int(self.ways) and self.ways >= 2, "must be an integer >= 2"),
            (
                "inner_steps",
                _is_int(self.inner_steps) and self.inner_steps >= 1,
                "must be an integer >= 1",
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
        cls, params: dict[str, torch.Tensor], bits: int = 0, scales: dict[str, float] | None = None
    ) -> Weights:
        """Keep ``params`` (values already on the grid of ``scales`` when ``bits`` > 0)."""
        if not bits:
            return cls(pages.tensors({k: v.detach().float() for k, v in params.items()}))
        q = Quantizer(bits)  # nearest rounding recovers the levels of values on the grid
        return cls(
            pages.tensors({k: q.to_int(v, scales[k]) for k, v in params.items()}),
            {k: float(scales[k]) for k in params},
        )

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
    """One session. ``state`` is replaced only by ``SessionStore.commit``; ``adapting`` is held by
    the Adapt in progress (Adapts of one session run one after the other)."""

    id: str
    owner: str
    settings: Settings
    fingerprint: str
    created: float
    last_used: float
    state: State = State()
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
    except (ValueError, RecursionError) as e:
        raise ValueError(f"not a safetensors file: {echo(str(e))}") from None
    meta = (header.get("__metadata__") or {}) if isinstance(header, dict) else None
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
        return Weights(pages.tensors(weights))
    q = Quantizer(bits)
    for k, v in weights.items():
        if v.dtype != q.int_dtype or bool(((v < q.qmin) | (v > q.qmax)).any()):
            raise ValueError(f"weight {echo(k)} is not {bits}-bit integers")
    return Weights(pages.tensors(weights), {k: float(s) for k, s in scales.items()})


def load(data: bytes, *, private: bool = False) -> tuple[dict, Settings, State]:
    """Parse and check ``dump``'s bytes (``private``: a snapshot's, with id, owner and creation
    time): (metadata, settings, state). Every metadata field's type and range and every tensor's
    dtype, rank and values are checked; the shapes against the model are the engine's check.
    ValueError says what is wrong."""
    info = _metadata(data, private)
    try:
        tensors = load_tensors(bytes(data))
    except Exception as e:  # safetensors raises errors of its own types
        raise ValueError(f"not a safetensors file: {echo(str(e))}") from None
    try:
        settings = Settings(**info["settings"])
    except InvalidArgument as e:
        raise ValueError(f"invalid session data: settings: {e}") from None
    except TypeError as e:
        raise ValueError(f"invalid session data: settings: {echo(str(e))}") from None
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


class SessionStore:
    """Sessions by id, with owners, idle expiry after ``ttl_s`` and caps in total and per owner.
    ``clock`` gives seconds since the Unix epoch (injectable for tests). With ``snapshot_dir``
    every change is written there and ``restore`` reads the sessions back."""

    def __init__(
        self,
        ttl_s: float,
        max_sessions: int,
        max_per_owner: int,
        snapshot_dir: str | Path | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.ttl_s, self.max_sessions, self.max_per_owner = ttl_s, max_sessions, max_per_owner
        self.snapshot_dir = None if snapshot_dir is None else Path(snapshot_dir)
        self.clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        if self.snapshot_dir is not None:
            self.snapshot_dir.mkdir(parents=True, exist_ok=True)

    def __len__(self) -> int:
        return len(self._sessions)

    def expires_at(self, session: Session) -> float:
        return session.last_used + self.ttl_s

    def _expired(self, session: Session, now: float) -> bool:
        return now >= self.expires_at(session) and not session.adapting.locked()

    def _sweep(self, now: float) -> None:
        """Drop expired sessions (caller holds the lock)."""
        for sid in [sid for sid, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[sid]
            self._unlink(sid)

    def create(
        self, owner: str, settings: Settings, fingerprint: str, state: State = State()
    ) -> Session:
        """A new session of ``owner``'s; ``ResourceExhausted`` past a cap."""
        now = self.clock()
        with self._lock:
            self._sweep(now)
            if len(self._sessions) >= self.max_sessions:
                raise ResourceExhausted(
                    f"the server holds its maximum of {self.max_sessions} sessions; delete one or "
                    "wait for idle ones to expire"
                )
            owned = sum(s.owner == owner for s in self._sessions.values())
            if owned >= self.max_per_owner:
                raise ResourceExhausted(
                    f"this caller holds its maximum of {self.max_per_owner} sessions; delete one"
                )
            session = Session(uuid.uuid4().hex, owner, settings, fingerprint, now, now, state)
            self._sessions[session.id] = session
        self._write(session)
        return session

    def get(self, owner: str, session_id: str) -> Session:
        """The session, marked as used now; ``NotFound`` when unknown, expired or another's."""
        check_text(session_id, "session_id")
        now = self.clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and self._expired(session, now):
                del self._sessions[session_id]
                self._unlink(session_id)
                session = None
            if session is None or session.owner != owner:
                raise NotFound(f"no session {echo(session_id)}")
            session.last_used = now
            return session

    def list(self, owner: str) -> list[Session]:
        """``owner``'s sessions, oldest first."""
        with self._lock:
            self._sweep(self.clock())
            return sorted(
                (s for s in self._sessions.values() if s.owner == owner), key=lambda s: s.created
            )

    def delete(self, owner: str, session_id: str) -> None:
        check_text(session_id, "session_id")
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.owner != owner:
                raise NotFound(f"no session {echo(session_id)}")
            del self._sessions[session_id]
        self._unlink(session_id)

    def commit(self, session: Session, state: State) -> None:
        """Make ``state`` the session's; ``NotFound`` if it was deleted meanwhile."""
        with self._lock:
            if self._sessions.get(session.id) is not session:
                raise NotFound(f"session {session.id!r} was deleted during the Adapt")
            session.state = state
            session.last_used = self.clock()
        self._write(session)

    def _path(self, session_id: str) -> Path:
        return self.snapshot_dir / f"{session_id}{SUFFIX}"

    def _write(self, session: Session) -> None:
        if self.snapshot_dir is None:
            return
        path = self._path(session.id)
        tmp = path.with_name(f".{session.id}.tmp")
        with open(tmp, "wb") as f:
            f.write(dump(session, private=True))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        if self._sessions.get(session.id) is not session:  # deleted while being written
            self._unlink(session.id)

    def _unlink(self, session_id: str) -> None:
        if self.snapshot_dir is not None:
            self._path(session_id).unlink(missing_ok=True)

    def restore(self, check: Callable[[Settings, str, State], None]) -> list[str]:
        """Read the snapshot directory's sessions back; ``check(settings, fingerprint, state)``
        raises for one this server cannot serve. A file that fails ``load`` or ``check`` is logged
        and moved aside (``<name>.rejected``), except one refused for its model
        (``FailedPrecondition``: the model is not here or has other weights), which is left for a
        server that has it. Leftover temporary files are removed. Returns the restored ids."""
        if self.snapshot_dir is None:
            return []
        for tmp in self.snapshot_dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        restored = []
        now = self.clock()
        for path in sorted(self.snapshot_dir.glob(f"*{SUFFIX}")):
            try:
                info, settings, state = load(path.read_bytes(), private=True)
                if path.name != f"{info['id']}{SUFFIX}":
                    raise ValueError(f"holds session {echo(info['id'])}")
                check(settings, info["fingerprint"], state)
            except FailedPrecondition as e:
                log.warning("snapshot %s not restored: %s", path, e)
                continue
            except (OSError, ValueError, ServiceError) as e:
                self._reject(path, e)
                continue
            sid, owner, created = info["id"], info["owner"], float(info["created"])
            with self._lock:
                self._sessions[sid] = Session(
                    sid, owner, settings, info["fingerprint"], created, now, state
                )
            restored.append(sid)
        return restored

    @staticmethod
    def _reject(path: Path, error: Exception) -> None:
        """Log why the snapshot ``path`` is not restored and move it aside."""
        aside = path.with_name(path.name + REJECTED)
        try:
            os.replace(path, aside)
        except OSError as e:
            log.warning("snapshot %s not restored: %s (nor moved aside: %s)", path, error, e)
        else:
            log.warning("snapshot %s not restored, moved to %s: %s", path, aside.name, error)
