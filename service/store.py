"""The session store's contract, which the engine relies on without knowing the store behind it,
and ``open_store``, which picks the store a config names: ``memory`` (``MemoryStore``: this
process, snapshots optional) or a Redis URL (``RedisStore``: shared by every replica).

What every store keeps: sessions by id with an owner (another owner's session is NOT_FOUND), idle
expiry ``ttl_s`` seconds after the last use (``get`` and ``commit`` are uses, ``list`` is not),
caps on the sessions held in total and per owner (RESOURCE_EXHAUSTED), and ``commit``: the state
an Adapt built becomes the session's at once, only if its version follows the stored one, so of
two Adapts that started from one version the second to commit is ABORTED (and retried by the
engine) rather than interleaved or losing the first's examples.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from spikeshot.service.config import ServerConfig
from spikeshot.service.errors import ResourceExhausted
from spikeshot.service.sessions import EMPTY, Session, Settings, State


class SessionStore(ABC):
    """Sessions by id (see the module notes). ``clock`` gives seconds since the Unix epoch;
    ``name`` says where the sessions are, for messages (never a password)."""

    name: str

    def __init__(
        self, ttl_s: float, max_sessions: int, max_per_owner: int, clock: Callable[[], float]
    ):
        self.ttl_s, self.max_sessions, self.max_per_owner = ttl_s, max_sessions, max_per_owner
        self.clock = clock

    @abstractmethod
    def __len__(self) -> int:
        """The sessions held (not expired)."""

    @abstractmethod
    def create(
        self, owner: str, settings: Settings, fingerprint: str, state: State = EMPTY
    ) -> Session:
        """A new session of ``owner``'s; ``ResourceExhausted`` past a cap."""

    @abstractmethod
    def get(self, owner: str, session_id: str) -> Session:
        """The session, marked as used now; ``NotFound`` when unknown, expired or another's."""

    @abstractmethod
    def list(self, owner: str) -> list[Session]:
        """``owner``'s sessions, oldest first."""

    @abstractmethod
    def delete(self, owner: str, session_id: str) -> None:
        """Forget the session; ``NotFound`` as for ``get``."""

    @abstractmethod
    def commit(self, session: Session, state: State) -> None:
        """Make ``state`` the session's (and ``session.state``). ``state.version`` must be the
        stored version + 1: else ``Aborted`` (another commit came first); ``NotFound`` when the
        session was deleted or expired meanwhile."""

    def expires_at(self, session: Session) -> float:
        return session.last_used + self.ttl_s

    def restore(self, admit: Callable[[Settings, str, State], State]) -> list[str]:
        """Read sessions saved by an earlier process back (``MemoryStore``'s snapshots); the ids.
        ``admit(settings, fingerprint, state)`` gives the state to keep, and raises for one this
        server cannot serve."""
        return []

    @abstractmethod
    def ping(self) -> None:
        """Return when the store answers; ``Unavailable`` when it cannot be reached."""

    @abstractmethod
    def close(self) -> None:
        """Release what the store holds open (connections)."""

    def _check_caps(self, held: int, owned: int) -> None:
        """``ResourceExhausted`` when ``held`` sessions in total or ``owned`` of one owner leave
        no room for another."""
        if held >= self.max_sessions:
            raise ResourceExhausted(
                f"the server holds its maximum of {self.max_sessions} sessions; delete one or "
                "wait for idle ones to expire"
            )
        if owned >= self.max_per_owner:
            raise ResourceExhausted(
                f"this caller holds its maximum of {self.max_per_owner} sessions; delete one"
            )


def open_store(config: ServerConfig, clock: Callable[[], float]) -> SessionStore:
    """The store ``config.session_store`` names, with the config's TTL and caps."""
    c = config
    if c.session_store == "memory":
        from spikeshot.service.memory_store import MemoryStore

        return MemoryStore(
            c.session_ttl_s, c.max_sessions, c.max_sessions_per_owner, c.snapshot_dir or None, clock
        )
    from spikeshot.service.redis_store import RedisStore  # needs the redis package (server extra)

    return RedisStore(
        c.session_store,
        c.session_ttl_s,
        c.max_sessions,
        c.max_sessions_per_owner,
        c.session_store_timeout_s,
        clock,
    )
