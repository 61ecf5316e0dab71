"""Sessions in this process's memory, optionally saved as snapshots that survive a restart.

A snapshot file (``<session id>.safetensors`` in the snapshot directory) holds ``sessions.dump``'s
bytes with the id, owner and creation time. Each snapshot is written to a temporary file, flushed to
disk, then renamed over the old one. A restored session's idle time starts again at the restart. A
snapshot that fails ``sessions.load`` or the engine's check is moved aside (``<name>.rejected``).
A session whose Adapt is running does not expire.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from spikeshot.events.atomic import write_atomic
from spikeshot.service.errors import (
    Aborted,
    FailedPrecondition,
    NotFound,
    ServiceError,
    check_text,
    echo,
)
from spikeshot.service.sessions import EMPTY, Session, Settings, State, dump, load
from spikeshot.service.store import SessionStore

SUFFIX = ".safetensors"
REJECTED = ".rejected"
log = logging.getLogger(__name__)


class MemoryStore(SessionStore):
    """Sessions in a dict (see ``store.SessionStore``). With ``snapshot_dir`` every change is
    written there and ``restore`` reads the sessions back."""

    name = "memory"

    def __init__(
        self,
        ttl_s: float,
        max_sessions: int,
        max_per_owner: int,
        snapshot_dir: str | Path | None = None,
        clock: Callable[[], float] = time.time,
    ):
        super().__init__(ttl_s, max_sessions, max_per_owner, clock)
        self.snapshot_dir = None if snapshot_dir is None else Path(snapshot_dir)
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        if self.snapshot_dir is not None:
            self.snapshot_dir.mkdir(parents=True, exist_ok=True)

    def __len__(self) -> int:
        return len(self._sessions)

    def ping(self) -> None:
        """Memory always answers."""

    def close(self) -> None:
        """Nothing to close: the sessions stay readable until the store is dropped."""

    def _expired(self, session: Session, now: float) -> bool:
        return now >= self.expires_at(session) and not session.adapting.locked()

    def _sweep(self, now: float) -> None:
        """Drop expired sessions (caller holds the lock)."""
        for sid in [sid for sid, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[sid]
            self._unlink(sid)

    def create(
        self, owner: str, settings: Settings, fingerprint: str, state: State = EMPTY
    ) -> Session:
        now = self.clock()
        with self._lock:
            self._sweep(now)
            owned = sum(s.owner == owner for s in self._sessions.values())
            self._check_caps(len(self._sessions), owned)
            session = Session(uuid.uuid4().hex, owner, settings, fingerprint, now, now, state)
            self._sessions[session.id] = session
        self._write(session)
        return session

    def get(self, owner: str, session_id: str) -> Session:
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
        with self._lock:
            if self._sessions.get(session.id) is not session:
                raise NotFound(f"session {session.id!r} was deleted during the Adapt")
            if state.version != session.state.version + 1:
                raise Aborted(
                    f"session {session.id!r} is at version {session.state.version}: another "
                    f"Adapt committed first, version {state.version} does not follow"
                )
            session.state = state
            session.last_used = self.clock()
        self._write(session)

    def _path(self, session_id: str) -> Path:
        return self.snapshot_dir / f"{session_id}{SUFFIX}"

    def _write(self, session: Session) -> None:
        if self.snapshot_dir is None:
            return
        write_atomic(self._path(session.id), dump(session, private=True))
        if self._sessions.get(session.id) is not session:  # deleted while being written
            self._unlink(session.id)

    def _unlink(self, session_id: str) -> None:
        if self.snapshot_dir is not None:
            self._path(session_id).unlink(missing_ok=True)

    def restore(self, admit: Callable[[Settings, str, State], State]) -> list[str]:
        """Read the snapshot directory's sessions back. A file that fails ``load`` or ``admit``
        is logged and moved aside (``<name>.rejected``), except one refused for its model
        (``FailedPrecondition``: the model is not here or has other weights), which is left for a
        server that has it. Leftover temporary files are removed. Returns the restored ids."""
        if self.snapshot_dir is None:
            return []
        for tmp in self.snapshot_dir.glob(".*.tmp-*"):  # write_atomic's, left by a crash
            tmp.unlink(missing_ok=True)
        restored = []
        now = self.clock()
        for path in sorted(self.snapshot_dir.glob(f"*{SUFFIX}")):
            try:
                info, settings, state = load(path.read_bytes(), private=True)
                if path.name != f"{info['id']}{SUFFIX}":
                    raise ValueError(f"holds session {echo(info['id'])}")
                state = admit(settings, info["fingerprint"], state)
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
