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
session's idle time starts again at the restart.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
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
from spikeshot.service.errors import InvalidArgument, NotFound, ResourceExhausted, ServiceError

FORMAT = "spikeshot-session/1"
GRIDS = ("global", "per_tensor")
SUFFIX = ".safetensors"
WEIGHT = "weight."
log = logging.getLogger(__name__)


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
            ("ways", self.ways >= 2, "must be >= 2"),
            ("inner_steps", self.inner_steps >= 1, "must be >= 1"),
            (
                "step_size",
                self.step_size is None or 0 < self.step_size < math.inf,
                "must be finite and > 0",
            ),
            (
                "weight_bits",
                self.weight_bits == 0 or 2 <= self.weight_bits <= 16,
                "must be 0 (float32) or 2..16",
            ),
            ("rounding", self.rounding in ROUNDINGS, f"must be one of {ROUNDINGS}"),
            ("grid", self.grid in GRIDS, f"must be one of {GRIDS}"),
            ("seed", 0 <= self.seed < 2**64, "must be in 0..2^64-1"),
        )
        for name, ok, rule in checks:
            if not ok:
                raise InvalidArgument(f"{name} {rule}, got {getattr(self, name)!r}", name)

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


def load(data: bytes) -> tuple[dict, Settings, State]:
    """Parse ``dump``'s bytes: (metadata, settings, state); ValueError says what is wrong."""
    try:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(bytes(data[8 : 8 + size]))
        meta = header.get("__metadata__") or {}
    except (ValueError, AttributeError) as e:
        raise ValueError(f"not a safetensors file: {e}") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"format must be {FORMAT!r}, got {meta.get('format')!r}")
    try:
        tensors = load_tensors(bytes(data))
        info = json.loads(meta["session"])
        settings = Settings(**info["settings"])
        labels, classes = info["support_labels"], tuple(info["classes"])
        version, scales = int(info["version"]), info["scales"]
    except Exception as e:  # any malformed field: safetensors, JSON, keys, types
        raise ValueError(f"invalid session data: {e!r}") from None
    support = tensors.pop("support", torch.zeros(0))
    if len(support) != len(labels):
        raise ValueError(f"{len(support)} support frames but {len(labels)} labels")
    frames = support.numpy()
    shots = in_own_pages(tuple(Shot(str(label), frames[i]) for i, label in enumerate(labels)))
    if classes != classes_of(shots):
        raise ValueError(f"classes {list(classes)} do not match the support labels' order")
    weights = {k[len(WEIGHT) :]: v for k, v in tensors.items() if k.startswith(WEIGHT)}
    if set(tensors) - {WEIGHT + k for k in weights}:
        raise ValueError(f"unknown tensors {sorted(set(tensors) - {WEIGHT + k for k in weights})}")
    if (version > 0) != bool(weights):
        raise ValueError(f"version {version} does not match {len(weights)} weight tensors")
    if settings.weight_bits and weights:
        q = Quantizer(settings.weight_bits)
        if not isinstance(scales, dict) or set(scales) != set(weights):
            raise ValueError("quantized weights need one scale per tensor")
        for k, v in weights.items():
            if v.dtype != q.int_dtype or int(v.min()) < q.qmin or int(v.max()) > q.qmax:
                raise ValueError(f"weight {k} is not {settings.weight_bits}-bit integers")
        stored = Weights(pages.tensors(weights), {k: float(s) for k, s in scales.items()})
    elif weights:
        if any(v.dtype != torch.float32 for v in weights.values()):
            raise ValueError("float weights must be float32")
        stored = Weights(pages.tensors(weights))
    else:
        stored = None
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
        now = self.clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and self._expired(session, now):
                del self._sessions[session_id]
                self._unlink(session_id)
                session = None
            if session is None or session.owner != owner:
                raise NotFound(f"no session {session_id!r}")
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
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.owner != owner:
                raise NotFound(f"no session {session_id!r}")
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
        raises ValueError for one this server cannot serve. Unreadable files are logged and left
        in place; leftover temporary files are removed. Returns the restored ids."""
        if self.snapshot_dir is None:
            return []
        for tmp in self.snapshot_dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        restored = []
        now = self.clock()
        for path in sorted(self.snapshot_dir.glob(f"*{SUFFIX}")):
            try:
                info, settings, state = load(path.read_bytes())
                check(settings, info["fingerprint"], state)
                sid, owner, created = str(info["id"]), str(info["owner"]), float(info["created"])
                if path.name != f"{sid}{SUFFIX}":
                    raise ValueError(f"holds session {sid!r}")
            except (OSError, KeyError, TypeError, ValueError, ServiceError) as e:
                log.warning("snapshot %s not restored: %s", path, e)
                continue
            with self._lock:
                self._sessions[sid] = Session(
                    sid, owner, settings, info["fingerprint"], created, now, state
                )
            restored.append(sid)
        return restored
