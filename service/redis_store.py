"""Sessions in Redis, shared by every replica: any replica serves any session.

Keys (prefix ``spikeshot:``):

- ``session:<id>``, a hash: ``owner``, ``created`` and ``last_used`` (seconds since the Unix
  epoch), ``version`` (decimal) and ``data`` (the session's ``spikeshot-session/1`` bytes,
  ``sessions.dump``). Its key expiry is the TTL, refreshed on each use.
- ``sessions`` and ``owner:<owner>``, sorted sets of the session ids, in total and of one owner,
  each scored by its expiry time; the caps count them once the expired are dropped.

Each operation is one Lua script: one round trip, applied whole or not at all. Create drops the
expired ids, checks both caps and writes in one step, so the caps hold across replicas. Commit
writes only when the stored version is the one the Adapt started from (optimistic concurrency;
else ``Aborted``, which the engine retries from the newer version), so two Adapts on two replicas
never interleave or lose an example, and a replica killed mid-Adapt leaves the session as it was.

Each replica caches each session's ``Session`` (settings, state) by id and version: a read sends
the cached version and gets the data back only when it changed, so a Classify with a warm cache is
one round trip that also refreshes the expiry.

Every call has a socket timeout and none is retried; a Redis that is down, slow or failing is
``Unavailable``, naming the store (never its password).
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from spikeshot.service.errors import (
    Aborted,
    FailedPrecondition,
    NotFound,
    Unavailable,
    check_text,
    echo,
)
from spikeshot.service.sessions import EMPTY, Session, Settings, State, dump, load
from spikeshot.service.store import SessionStore

PREFIX = "spikeshot:"
ALL = PREFIX + "sessions"

# KEYS of every script: the session's hash, the ids of all sessions, those of its owner.
# ARGV of every script begins: session id, owner, now, expiry time, TTL in milliseconds.
REFRESH = """
local function refresh()
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  for i = 2, 3 do
    redis.call('ZADD', KEYS[i], ARGV[4], ARGV[1])
    if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[5]) then
      redis.call('PEXPIRE', KEYS[i], ARGV[5])
    end
  end
end
"""
CREATE = """
-- ARGV[6..9]: cap in total, cap per owner, version, data. Returns {created (0|1), held, owned}.
for i = 2, 3 do redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[3]) end
local held, owned = redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3])
if held >= tonumber(ARGV[6]) or owned >= tonumber(ARGV[7]) then return {0, held, owned} end
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'created', ARGV[3], 'last_used', ARGV[3],
  'version', ARGV[8], 'data', ARGV[9])
refresh()
return {1, held, owned}
"""
READ = """
-- ARGV[6]: the version cached ('' none), ARGV[7]: '1' to mark the session used.
-- Returns nil (unknown or another's) or {version, created, last_used, data or nil if cached}.
local f = redis.call('HMGET', KEYS[1], 'owner', 'version', 'created', 'last_used')
if f[1] ~= ARGV[2] then return false end
if ARGV[7] == '1' then
  redis.call('HSET', KEYS[1], 'last_used', ARGV[3])
  refresh()
  f[4] = ARGV[3]
end
local data = false
if f[2] ~= ARGV[6] then data = redis.call('HGET', KEYS[1], 'data') end
return {f[2], f[3], f[4], data}
"""
COMMIT = """
-- ARGV[6..8]: the version the Adapt started from, the new version, the data.
local f = redis.call('HMGET', KEYS[1], 'owner', 'version')
if f[1] ~= ARGV[2] then return 'gone' end
if f[2] ~= ARGV[6] then return f[2] end
redis.call('HSET', KEYS[1], 'version', ARGV[7], 'data', ARGV[8], 'last_used', ARGV[3])
refresh()
return 'ok'
"""
DELETE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
for i = 2, 3 do redis.call('ZREM', KEYS[i], ARGV[1]) end
return 1
"""


def describe(url: str) -> str:
    """``url`` without credentials or options, for messages and logs."""
    parts = urlsplit(url)
    where = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
    db = parts.path.lstrip("/") if parts.scheme != "unix" else ""
    return f"{parts.scheme}://{where}" + (f"/{db}" if db else "")


class RedisStore(SessionStore):
    """Sessions in the Redis at ``url`` (see the module notes); ``timeout_s`` bounds each call."""

    def __init__(
        self,
        url: str,
        ttl_s: float,
        max_sessions: int,
        max_per_owner: int,
        timeout_s: float,
        clock: Callable[[], float],
    ):
        super().__init__(ttl_s, max_sessions, max_per_owner, clock)
        self.name = describe(url)
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._create, self._read, self._commit, self._delete = (
            self._redis.register_script(REFRESH + body) for body in (CREATE, READ, COMMIT, DELETE)
        )
        self._cache: OrderedDict[str, Session] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    def _call(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``, a Redis call, with its failures as ``Unavailable``."""
        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise Unavailable(
                f"the session store {self.name} is unreachable ({e}); retry later"
            ) from None
        except redis.RedisError as e:
            raise Unavailable(f"the session store {self.name} failed: {echo(str(e))}") from None

    def _script(self, script, session_id: str, owner: str, *args, now=None, client=None):
        now = self.clock() if now is None else now
        keys = (PREFIX + "session:" + session_id, ALL, PREFIX + "owner:" + owner)
        ttl_ms = max(1, round(self.ttl_s * 1000))
        head = (session_id, owner, repr(now), repr(now + self.ttl_s), ttl_ms)
        return self._call(script, keys=keys, args=(*head, *args), client=client)

    def _remember(self, session: Session) -> None:
        with self._lock:
            self._cache[session.id] = session
            self._cache.move_to_end(session.id)
            while len(self._cache) > self.max_sessions:
                self._cache.popitem(last=False)

    def _forget(self, session_id: str) -> None:
        with self._lock:
            self._cache.pop(session_id, None)

    def _cached(self, session_id: str) -> Session | None:
        with self._lock:
            return self._cache.get(session_id)

    def __len__(self) -> int:
        return self._call(self._redis.zcount, ALL, f"({self.clock()!r}", "+inf")

    def ping(self) -> None:
        self._call(self._redis.ping)

    def close(self) -> None:
        self._redis.close()

    def create(
        self, owner: str, settings: Settings, fingerprint: str, state: State = EMPTY
    ) -> Session:
        now = self.clock()
        session = Session(uuid.uuid4().hex, owner, settings, fingerprint, now, now, state)
        created, held, owned = self._script(
            self._create,
            session.id,
            owner,
            self.max_sessions,
            self.max_per_owner,
            state.version,
            dump(session),
            now=now,
        )
        if not created:
            self._check_caps(held, owned)
        self._remember(session)
        return session

    def _session(self, session_id: str, owner: str, cached: Session | None, reply) -> Session:
        """The session a ``READ`` reply describes, its state from ``cached`` when unchanged."""
        version, created, last_used, data = reply
        if data is not None:
            try:
                info, settings, state = load(data)
            except ValueError as e:
                raise FailedPrecondition(
                    f"session {echo(session_id)} in the session store cannot be read: {e}"
                ) from None
            if cached is None:
                cached = Session(
                    session_id, owner, settings, info["fingerprint"], float(created), 0.0, state
                )
            else:
                cached.state = state
        cached.last_used = float(last_used)
        self._remember(cached)
        return cached

    def get(self, owner: str, session_id: str) -> Session:
        check_text(session_id, "session_id")
        cached = self._cached(session_id)
        known = "" if cached is None else str(cached.state.version)
        reply = self._script(self._read, session_id, owner, known, "1")
        if reply is None:
            self._forget(session_id)
            raise NotFound(f"no session {echo(session_id)}")
        return self._session(session_id, owner, cached, reply)

    def list(self, owner: str) -> list[Session]:
        index = PREFIX + "owner:" + owner
        ids = [i.decode() for i in self._call(self._redis.zrangebyscore, index, "-inf", "+inf")]
        cached = [self._cached(i) for i in ids]
        pipe = self._redis.pipeline(transaction=False)
        for sid, c in zip(ids, cached, strict=True):
            known = "" if c is None else str(c.state.version)
            self._script(self._read, sid, owner, known, "0", client=pipe)
        replies = self._call(pipe.execute) if ids else []
        found = [
            self._session(sid, owner, c, reply)
            for sid, c, reply in zip(ids, cached, replies, strict=True)
            if reply is not None
        ]
        return sorted(found, key=lambda s: s.created)

    def delete(self, owner: str, session_id: str) -> None:
        check_text(session_id, "session_id")
        self._forget(session_id)
        if not self._script(self._delete, session_id, owner):
            raise NotFound(f"no session {echo(session_id)}")

    def commit(self, session: Session, state: State) -> None:
        base = state.version - 1
        done = self._script(
            self._commit, session.id, session.owner, str(base), state.version, dump(session, state)
        )
        if done == b"gone":
            self._forget(session.id)
            raise NotFound(f"session {session.id!r} was deleted during the Adapt")
        if done != b"ok":
            raise Aborted(
                f"session {session.id!r} is at version {done.decode()}: another Adapt committed "
                f"first, version {state.version} does not follow"
            )
        session.state, session.last_used = state, self.clock()
        self._remember(session)
