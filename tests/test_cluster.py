"""Replicas sharing sessions in Redis (a real ``redis-server`` of each test's own): an engine does
everything through Redis that it does in memory; two engines on one Redis serve each other's
sessions with identical answers; concurrent Adapts through two engines lose no example; a Redis
that is down is UNAVAILABLE, with health NOT_SERVING, until it is back; a Redis with persistence
killed and restarted gives the sessions back; and two ``spikeshot serve`` replicas behind nginx
(``deploy/nginx/spikeshot.conf``) answer like direct calls, a replica killed during a Classify or an
Adapt retried around, the Adapt's session as it was until the retry commits."""

import contextlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
import redis_fixtures
from grpc_health.v1 import health_pb2, health_pb2_grpc
from service_fixtures import (
    adapt_requests,
    adapted,
    classify_requests,
    client,
    free_port,
    serving,
    status_of,
    tiny,
)
from test_engine import query, shot, support

from spikeshot.clients.connection import Connection
from spikeshot.models.checkpoint import save
from spikeshot.service.config import ServerConfig
from spikeshot.service.engine import ADAPT_ATTEMPTS, Engine
from spikeshot.service.errors import Aborted, Cancelled, NotFound, Unavailable
from spikeshot.service.executor import Control
from spikeshot.v1 import spikeshot_pb2 as pb
from spikeshot.v1 import spikeshot_pb2_grpc as pb_grpc

redis_server = redis_fixtures.redis_server  # the fixtures, for the tests of this module
persistent_redis_server = redis_fixtures.persistent_redis_server

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def replicas(redis_server, request):
    """``replicas(n)``: n engines of the tiny model on the test's Redis."""

    def make(n=1):
        config = ServerConfig(
            workers=1, session_store=redis_server.url, session_store_timeout_s=0.5
        )
        engines = [Engine([tiny()], config) for _ in range(n)]
        for e in engines:
            request.addfinalizer(e.close)
        return engines

    return make


def test_an_engine_does_everything_through_redis(replicas):
    (engine,) = replicas()
    sid = engine.create_session(owner="robot").session_id
    r = engine.adapt(sid, support("cup", "ball"), owner="robot")
    assert (r.examples, r.weights_version, r.classes) == (4, 1, ("cup", "ball"))
    p = engine.classify(sid, query(1), owner="robot")
    assert p.label == "ball" and p.weights_version == 1
    info = engine.get_session(sid, owner="robot")
    assert (info.examples, info.weights_version) == (4, 1) and info.expires_at > time.time()
    copy = engine.import_session(engine.export_session(sid, owner="robot"), owner="robot")
    assert engine.classify(copy.session_id, query(1), owner="robot").probabilities == (
        p.probabilities
    )
    windows = list(engine.classify_stream(sid, [query(1)], owner="robot"))
    assert windows and all(w.weights_version == 1 for w in windows)
    assert [s.session_id for s in engine.list_sessions(owner="robot")] == [sid, copy.session_id]
    for call in (
        lambda: engine.get_session(sid, owner="intruder"),
        lambda: engine.adapt(sid, support("x", "y"), owner="intruder"),
        lambda: engine.classify(sid, query(0), owner="intruder"),
        lambda: engine.classify_stream(sid, [], owner="intruder"),
        lambda: engine.export_session(sid, owner="intruder"),
        lambda: engine.delete_session(sid, owner="intruder"),
    ):
        with pytest.raises(NotFound):
            call()
    assert engine.list_sessions(owner="intruder") == []
    engine.delete_session(sid, owner="robot")
    with pytest.raises(NotFound):
        engine.classify(sid, query(1), owner="robot")


def test_a_session_created_on_one_replica_adapts_on_another_and_answers_the_same(replicas):
    one, two = replicas(2)
    sid = one.create_session().session_id
    two.adapt(sid, support("cup", "ball"))
    for cls in (0, 1):
        a, b = one.classify(sid, query(cls)), two.classify(sid, query(cls))
        assert a.probabilities == b.probabilities and a.weights_version == b.weights_version == 1
    one.adapt(sid, shot("plate", 2, 5))  # and back: two's cached version 1 is stale
    assert two.classify(sid, query(2)).weights_version == 2
    assert two.classify(sid, query(2)).probabilities == one.classify(sid, query(2)).probabilities


def test_concurrent_adapts_through_two_engines_lose_no_example(replicas):
    one, two = replicas(2)
    sid = one.create_session().session_id
    one.adapt(sid, support("a", "b"))
    inside, release = threading.Event(), threading.Event()

    def pause_once_in_the_inner_loop():
        if threading.current_thread().name.startswith("spikeshot-model") and not inside.is_set():
            inside.set()
            release.wait(30)
        return False

    result = {}
    first = threading.Thread(
        target=lambda: result.update(
            one=one.adapt(
                sid, shot("c", 2, 7), control=Control(is_cancelled=pause_once_in_the_inner_loop)
            )
        )
    )
    first.start()
    assert inside.wait(30)  # one's Adapt started from version 1 ...
    result["two"] = two.adapt(sid, shot("d", 3, 8))  # ... and two commits version 2 meanwhile
    release.set()
    first.join(30)
    assert result["two"].weights_version == 2 and result["one"].weights_version == 3
    info = one.get_session(sid)
    assert info.examples == 6 and set(info.classes) == {"a", "b", "c", "d"}
    assert two.classify(sid, query(2)).weights_version == 3


def test_an_adapt_that_loses_every_attempt_is_aborted_and_changes_nothing(replicas):
    (engine,) = replicas()
    sid = engine.create_session().session_id
    engine.adapt(sid, support("a", "b"))

    def lose(session, state):
        raise Aborted("another Adapt committed first")

    engine.sessions.commit = lose
    with pytest.raises(Aborted, match=f"each of this Adapt's {ADAPT_ATTEMPTS} attempts"):
        engine.adapt(sid, shot("c", 2))
    assert engine.get_session(sid).weights_version == 1


def test_an_adapt_stopped_midway_leaves_the_shared_session_as_it_was(replicas):
    one, two = replicas(2)
    sid = one.create_session().session_id
    one.adapt(sid, support("a", "b"))
    before = two.classify(sid, query(0))
    stop = Control(is_cancelled=lambda: threading.current_thread().name.startswith("spikeshot-m"))
    with pytest.raises(Cancelled):
        one.adapt(sid, shot("c", 2), control=stop)
    assert two.get_session(sid).examples == 4
    assert two.classify(sid, query(0)).probabilities == before.probabilities


def test_a_redis_that_is_down_is_unavailable_and_health_not_serving_until_it_is_back(
    redis_server,
):
    with (
        serving(session_store=redis_server.url, session_store_timeout_s=0.5) as running,
        client(running) as stub,
        grpc.insecure_channel(running.address) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        sid = adapted(stub, "cup", "ball")
        assert stub.Classify(classify_requests(sid, 0)).label == "cup"
        redis_server.stop()
        code, message = status_of(stub.Classify, classify_requests(sid, 0), timeout=10)
        assert code == grpc.StatusCode.UNAVAILABLE
        assert f"session store {redis_server.url} is unreachable" in message
        with pytest.raises(Unavailable):
            running.engine.create_session()
        deadline = time.monotonic() + 10
        while health.Check(health_pb2.HealthCheckRequest()).status != NOT_SERVING:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        redis_server.start()
        while health.Check(health_pb2.HealthCheckRequest()).status != SERVING:
            assert time.monotonic() < deadline + 10
            time.sleep(0.1)
        sid = adapted(stub, "cup", "ball")  # the restarted Redis kept nothing: a new session
        assert stub.Classify(classify_requests(sid, 1)).label == "ball"


def test_sessions_come_back_after_a_restart_of_a_redis_with_persistence(persistent_redis_server):
    config = ServerConfig(
        workers=1, session_store=persistent_redis_server.url, session_store_timeout_s=0.5
    )
    engine = Engine([tiny()], config)
    try:
        sid = engine.create_session(owner="robot").session_id
        engine.adapt(sid, support("cup", "ball"), owner="robot")
        engine.adapt(sid, shot("plate", 2, 5), owner="robot")
        before = [engine.classify(sid, query(c), owner="robot") for c in range(3)]
        info = engine.get_session(sid, owner="robot")
        persistent_redis_server.stop()  # SIGKILL: only what reached the append-only file is back
        persistent_redis_server.start()
        fresh = Engine([tiny()], config)  # a cache of nothing: reads the session from Redis
        try:
            for e in (engine, fresh):
                after = [e.classify(sid, query(c), owner="robot") for c in range(3)]
                assert [p.probabilities for p in after] == [p.probabilities for p in before]
                assert all(p.weights_version == 2 for p in after)
                again = e.get_session(sid, owner="robot")
                assert (
                    (again.examples, again.classes)
                    == (info.examples, info.classes)
                    == (
                        5,
                        ("cup", "ball", "plate"),
                    )
                )
                assert again.created_at == info.created_at
                assert again.expires_at > time.time()
            assert [s.session_id for s in fresh.list_sessions(owner="robot")] == [sid]
        finally:
            fresh.close()
    finally:
        engine.close()


# -- several processes: two `spikeshot serve` replicas behind nginx --------------------------------

NGINX = shutil.which("nginx")
BIN = Path(sys.executable).parent
DEPLOY_CONF = Path(__file__).resolve().parents[1] / "deploy" / "nginx" / "spikeshot.conf"


def wait_serving(address: str, timeout_s: float = 180) -> None:
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == SERVING:
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, f"{address} did not start serving"
            time.sleep(0.2)


def received(metrics_port: int, method: str = "Classify") -> float:
    """The events a replica received in ``method`` calls (its metrics page)."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    pattern = rf'^spikeshot_events_received_total\{{method="{method}"\}} (\S+)$'
    return float(re.search(pattern, text, re.M).group(1))


@contextlib.contextmanager
def processes():
    """Started subprocesses, stopped at the end: SIGTERM first (a SIGKILLed nginx master leaves
    its worker running, still listening), SIGKILL what has not exited 10 s later."""
    started: list[subprocess.Popen] = []
    try:
        yield started
    finally:
        for p in started:
            p.terminate()
        for p in started:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(30)


@contextlib.contextmanager
def cluster(redis_server, tmp_path, replicas: int = 2):
    """``replicas`` ``spikeshot serve`` of the tiny model on the test's Redis behind nginx with
    the deploy configuration (its upstream rewritten), all serving: the balancer's address, each
    replica's (port, metrics port) and the processes (the replicas first, then nginx)."""
    model = tmp_path / "tiny.json"
    save(tiny(), model)
    ports = [(free_port(), free_port()) for _ in range(replicas)]
    balancer = free_port()
    conf = DEPLOY_CONF.read_text()
    upstream = "".join(f"server 127.0.0.1:{p} max_fails=1 fail_timeout=10s;\n" for p, _ in ports)
    conf = re.sub(r"( *server 127\.0\.0\.1:5005[1-3].*\n)+", upstream, conf)
    conf = conf.replace("127.0.0.1:50050", f"127.0.0.1:{balancer}")
    (tmp_path / "nginx.conf").write_text(conf)
    (tmp_path / "nginx").mkdir()
    with processes() as started:
        for port, metrics_port in ports:
            args = ["serve", "--models", str(model), "--port", str(port)]
            args += ["--metrics-port", str(metrics_port), "--session-store", redis_server.url]
            args += ["--workers", "1", "--io-threads", "8", "--shutdown-grace-s", "1"]
            started.append(subprocess.Popen([BIN / "spikeshot", *args], stderr=subprocess.DEVNULL))
        started.append(
            subprocess.Popen(
                [NGINX, "-c", tmp_path / "nginx.conf", "-p", tmp_path / "nginx", "-e", "stderr"]
                + ["-g", "daemon off;"]
            )
        )
        for port, _ in ports:
            wait_serving(f"127.0.0.1:{port}")
        wait_serving(f"127.0.0.1:{balancer}", 30)
        yield f"127.0.0.1:{balancer}", ports, started


def busy_replica(ports, before: list[float], method: str) -> int:
    """The index of the replica whose ``method`` calls received events since ``before``."""
    deadline = time.monotonic() + 30
    while True:
        busy = [received(m, method) > b for (_, m), b in zip(ports, before, strict=True)]
        if any(busy):
            return busy.index(True)
        assert time.monotonic() < deadline, f"no replica received the {method} call"
        time.sleep(0.05)


@pytest.mark.skipif(NGINX is None, reason="nginx absent (Debian: apt-get install nginx)")
def test_replicas_behind_nginx_share_sessions_and_a_killed_one_is_retried_around(
    redis_server, tmp_path
):
    with cluster(redis_server, tmp_path) as (balancer, ports, started):
        with grpc.insecure_channel(balancer) as channel:
            stub = pb_grpc.SpikeShotStub(channel)
            sid = adapted(stub, "cup", "ball")
            through = stub.Classify(classify_requests(sid, 1))
        assert through.label == "ball"
        for port, _ in ports:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                direct = pb_grpc.SpikeShotStub(channel).Classify(classify_requests(sid, 1))
            assert direct.probabilities == through.probabilities

        # A Classify held open on one replica; that replica is killed; gRPC's retry (the client's
        # policy: UNAVAILABLE only) goes through nginx to the other.
        before = [received(m) for _, m in ports]
        sent, release = threading.Event(), threading.Event()

        def held_open():
            yield from classify_requests(sid, 1)
            sent.set()
            release.wait(60)

        result = {}
        with Connection(balancer, retries=4).channel() as channel:
            stub = pb_grpc.SpikeShotStub(channel)
            call = threading.Thread(target=lambda: result.update(r=stub.Classify(held_open())))
            call.start()
            assert sent.wait(30)
            busy = busy_replica(ports, before, "Classify")
            started[busy].send_signal(signal.SIGKILL)
            started[busy].wait(30)
            release.set()
            call.join(60)
        assert result["r"].label == "ball" and result["r"].probabilities == through.probabilities


@pytest.mark.skipif(NGINX is None, reason="nginx absent (Debian: apt-get install nginx)")
def test_a_replica_killed_during_an_adapt_leaves_the_session_intact_and_the_retry_adapts(
    redis_server, tmp_path
):
    with cluster(redis_server, tmp_path) as (balancer, ports, started):
        with grpc.insecure_channel(balancer) as channel:
            stub = pb_grpc.SpikeShotStub(channel)
            sid = adapted(stub, "cup", "ball")
            known = stub.GetSession(pb.GetSessionRequest(session_id=sid))
            classified = stub.Classify(classify_requests(sid, 2))
        assert (known.weights_version, known.examples) == (1, 4)

        # An Adapt of two more examples held open (its stream not ended: it cannot commit) on one
        # replica, which is killed; the client's retry (UNAVAILABLE only) replays the stream
        # through nginx to the other replica, which adapts once the stream ends.
        before = [received(m, "Adapt") for _, m in ports]
        sent, release = threading.Event(), threading.Event()

        def held_open():
            yield from adapt_requests(sid, [("plate", 2, 5), ("plate", 2, 6)])
            sent.set()
            release.wait(60)

        result = {}
        with Connection(balancer, retries=4).channel() as channel:
            stub = pb_grpc.SpikeShotStub(channel)
            call = threading.Thread(target=lambda: result.update(r=stub.Adapt(held_open())))
            call.start()
            assert sent.wait(30)
            busy = busy_replica(ports, before, "Adapt")
            started[busy].send_signal(signal.SIGKILL)
            started[busy].wait(30)
            survivor = f"127.0.0.1:{ports[1 - busy][0]}"
            with grpc.insecure_channel(survivor) as direct:
                stub_direct = pb_grpc.SpikeShotStub(direct)
                info = stub_direct.GetSession(pb.GetSessionRequest(session_id=sid))
                after_kill = stub_direct.Classify(classify_requests(sid, 2))
            assert (info.weights_version, info.examples) == (1, 4)
            assert list(info.classes) == ["cup", "ball"]
            assert after_kill.probabilities == classified.probabilities
            release.set()
            call.join(60)
        r = result["r"]
        assert (r.weights_version, r.examples, r.new_examples) == (2, 6, 2)
        with grpc.insecure_channel(survivor) as direct:
            info = pb_grpc.SpikeShotStub(direct).GetSession(pb.GetSessionRequest(session_id=sid))
        assert (info.weights_version, info.examples) == (2, 6)  # added once, not twice
        assert list(info.classes) == ["cup", "ball", "plate"]


@pytest.mark.skipif(NGINX is None, reason="nginx absent (Debian: apt-get install nginx)")
def test_the_balancer_keeps_a_client_connection_past_a_thousand_calls(redis_server, tmp_path):
    """nginx's default ends a connection with GOAWAY after 1,000 calls, and a client-streaming
    call that a gRPC Python client starts just then may be retried without its later messages
    (bench/cluster.py saw a Classify arrive as its header alone). The deploy configuration keeps
    the connection: the channel stays READY through 1,100 calls."""
    with cluster(redis_server, tmp_path, replicas=1) as (balancer, _, _):
        with grpc.insecure_channel(balancer) as channel:
            states = []
            channel.subscribe(states.append, try_to_connect=True)
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = pb_grpc.SpikeShotStub(channel)
            for _ in range(1100):
                stub.ListModels(pb.ListModelsRequest(), timeout=30)
            channel.unsubscribe(states.append)
    ready = states.index(grpc.ChannelConnectivity.READY)
    assert states[ready:] == [grpc.ChannelConnectivity.READY], states
