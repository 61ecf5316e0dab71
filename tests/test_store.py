"""The session store's contract, the same test functions against both stores: the in-memory one
and Redis (a real ``redis-server`` of the test's own): what is stored comes back exactly, owners,
caps, expiry on the TTL refreshed by use, commits that follow the stored version, and, for Redis,
two stores (two replicas) on one server and a Redis that is down or slow."""

import time

import numpy as np
import pytest
import redis_fixtures
import torch
from test_sessions import SETTINGS, adapted_state

from spikeshot.service.config import ServerConfig
from spikeshot.service.errors import Aborted, NotFound, ResourceExhausted, Unavailable
from spikeshot.service.sessions import State
from spikeshot.service.store import open_store

redis_server = redis_fixtures.redis_server  # the fixture, for the tests of this module


def make_store(kind, request, **settings):
    """A store of ``kind`` ("memory" or "redis") with ``settings`` of ``ServerConfig``."""
    url = "memory" if kind == "memory" else request.getfixturevalue("redis_server").url
    config = ServerConfig(session_store=url, session_store_timeout_s=0.5, **settings)
    store = open_store(config, time.time)
    request.addfinalizer(store.close)
    return store


@pytest.fixture(params=["memory", "redis"])
def kind(request):
    return request.param


def same_state(a: State, b: State) -> bool:
    """Equal labels, classes, version, support frames and weights (both adapted)."""
    return (
        len(a.support) == len(b.support)
        and a.classes == b.classes
        and a.version == b.version
        and [s.label for s in a.support] == [s.label for s in b.support]
        and all(
            np.array_equal(s.frames, t.frames) for s, t in zip(a.support, b.support, strict=True)
        )
        and a.weights.scales == b.weights.scales
        and a.weights.tensors.keys() == b.weights.tensors.keys()
        and all(torch.equal(v, b.weights.tensors[k]) for k, v in a.weights.tensors.items())
    )


def test_what_is_stored_comes_back_exactly(kind, request):
    store = make_store(kind, request)
    state = adapted_state()
    s = store.create("robot", SETTINGS, "f" * 64, state)
    got = store.get("robot", s.id)
    assert (got.id, got.owner, got.settings, got.fingerprint) == (s.id, "robot", SETTINGS, "f" * 64)
    assert same_state(got.state, state) and got.created == s.created
    assert store.expires_at(got) == pytest.approx(got.last_used + store.ttl_s)


def test_owners_see_only_their_sessions(kind, request):
    store = make_store(kind, request)
    a = store.create("alice", SETTINGS, "f")
    b = store.create("bob", SETTINGS, "f")
    c = store.create("bob", SETTINGS, "f")
    assert store.get("alice", a.id).id == a.id
    for call in (store.get, store.delete):
        with pytest.raises(NotFound, match=b.id):
            call("alice", b.id)
    assert [s.id for s in store.list("bob")] == [b.id, c.id] and len(store) == 3
    store.delete("bob", b.id)
    with pytest.raises(NotFound):
        store.get("bob", b.id)
    assert [s.id for s in store.list("bob")] == [c.id] and len(store) == 2


def test_caps_in_total_and_per_owner(kind, request):
    store = make_store(kind, request, max_sessions=3, max_sessions_per_owner=2)
    store.create("a", SETTINGS, "f")
    gone = store.create("a", SETTINGS, "f")
    with pytest.raises(ResourceExhausted, match="maximum of 2 sessions"):
        store.create("a", SETTINGS, "f")
    store.delete("a", gone.id)
    store.create("a", SETTINGS, "f")
    store.create("b", SETTINGS, "f")
    with pytest.raises(ResourceExhausted, match="server holds its maximum of 3"):
        store.create("c", SETTINGS, "f")


def test_idle_sessions_expire_and_use_keeps_them(kind, request):
    store = make_store(kind, request, session_ttl_s=0.6)
    idle, used = store.create("", SETTINGS, "f"), store.create("", SETTINGS, "f")
    for _ in range(3):
        time.sleep(0.3)
        store.get("", used.id)
    with pytest.raises(NotFound):
        store.get("", idle.id)  # 0.9 s idle
    assert [s.id for s in store.list("")] == [used.id] and len(store) == 1


def test_a_commit_must_follow_the_stored_version(kind, request):
    store = make_store(kind, request)
    s = store.create("", SETTINGS, "f")
    one = adapted_state(version=1)
    store.commit(store.get("", s.id), one)
    assert same_state(store.get("", s.id).state, one)
    with pytest.raises(Aborted, match="another Adapt committed first"):
        store.commit(store.get("", s.id), adapted_state(version=1))  # built from version 0
    assert store.get("", s.id).state.version == 1
    store.delete("", s.id)
    with pytest.raises(NotFound, match="deleted during the Adapt"):
        store.commit(s, adapted_state(version=2))


def test_two_redis_stores_share_sessions_versions_and_caps(redis_server, request):
    one, two = (make_store("redis", request, max_sessions_per_owner=2) for _ in range(2))
    s = one.create("robot", SETTINGS, "f")
    assert two.get("robot", s.id).state.version == 0
    state = adapted_state(version=1)
    two.commit(two.get("robot", s.id), state)
    assert same_state(one.get("robot", s.id).state, state)  # one's cache held version 0
    with pytest.raises(Aborted):
        one.commit(s, adapted_state(version=1))
    two.create("robot", SETTINGS, "f")
    with pytest.raises(ResourceExhausted, match="maximum of 2"):
        one.create("robot", SETTINGS, "f")
    one.delete("robot", s.id)
    with pytest.raises(NotFound):
        two.get("robot", s.id)


def test_a_redis_that_is_down_or_slow_is_unavailable_then_serves_again(redis_server, request):
    store = make_store("redis", request)
    s = store.create("", SETTINGS, "f")
    with redis_server.paused():
        begin = time.monotonic()
        with pytest.raises(Unavailable, match=f"session store {redis_server.url}.* unreachable"):
            store.get("", s.id)
        assert time.monotonic() - begin < 2  # the socket timeout, 0.5 s, not a hang
    redis_server.stop()
    for call in (store.ping, lambda: store.get("", s.id), lambda: len(store)):
        with pytest.raises(Unavailable, match="unreachable"):
            call()
    redis_server.start()  # empty: it kept nothing
    store.ping()
    with pytest.raises(NotFound):
        store.get("", s.id)
    assert store.get("", store.create("", SETTINGS, "f").id).state.version == 0
