"""The gRPC server on loopback with real gRPC clients: the happy path on synthetic event streams,
every status code, broken streams, TTL expiry, 32 concurrent clients, graceful draining, health,
reflection and message-size limits."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from service_fixtures import (
    GEOM,
    adapt_requests,
    adapted,
    classify_requests,
    client,
    code_of,
    events,
    new_session,
    serving,
    status_of,
    support,
    tiny,
    wire,
)

from spikeshot.events.binning import bin_events
from spikeshot.events.codec import pack
from spikeshot.service import metrics
from spikeshot.service.config import ServerConfig
from spikeshot.service.engine import Engine
from spikeshot.service.inputs import Chunk, EventInput
from spikeshot.service.server import SERVICE_NAME, start
from spikeshot.v1 import spikeshot_pb2 as pb
from spikeshot.v1 import spikeshot_pb2_grpc as pb_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def server():
    with serving() as running:
        yield running


@pytest.fixture
def stub(server):
    with client(server) as s:
        yield s


def errors_counted(method: str, code: str) -> float:
    return (
        metrics.REGISTRY.get_sample_value(
            "spikeshot_request_duration_seconds_count", {"method": method, "code": code}
        )
        or 0.0
    )


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_happy_path(stub):
    models = stub.ListModels(pb.ListModelsRequest()).models
    assert [m.name for m in models] == ["tiny"] and models[0].is_default
    m = models[0]
    assert (m.arch, m.ways, m.bins, m.height, m.width) == ("snn", 4, 4, 8, 8)
    assert (m.sensor_width, m.sensor_height, m.window_us, m.inner_steps, m.weight_bits) == (
        16,
        16,
        4000,
        2,
        8,
    )
    assert json.loads(m.card_json)["name"] == "tiny" and len(m.fingerprint) == 64

    session = stub.CreateSession(pb.CreateSessionRequest())
    s = session.settings
    assert (s.model, s.ways, s.inner_steps, s.step_size, s.weight_bits) == ("tiny", 4, 2, 5.0, 8)
    assert (s.rounding, s.grid) == (pb.ROUNDING_NEAREST, pb.WEIGHT_GRID_GLOBAL)
    assert session.weights_version == 0 and session.expires_at > session.created_at
    sid = session.session_id

    r = stub.Adapt(adapt_requests(sid, support("cup", "ball"), parts=3))
    assert list(r.classes) == ["cup", "ball"] and (r.examples, r.new_examples) == (4, 4)
    assert r.weights_version == 1 and r.steps == 2 and r.session_id == sid
    assert r.loss_after < r.loss_before and r.support_accuracy == 1.0
    assert min(r.timings.decode_ms, r.timings.bin_ms, r.timings.adapt_ms) > 0
    assert r.timings.total_ms >= r.timings.adapt_ms

    for cls, label in ((0, "cup"), (1, "ball")):
        p = stub.Classify(classify_requests(sid, cls))
        assert p.label == label and p.events == 300 and p.weights_version == 1
        assert [x.label for x in p.probabilities] == ["cup", "ball"]
        assert sum(x.probability for x in p.probabilities) == pytest.approx(1.0, abs=1e-6)
        assert p.timings.forward_ms > 0
    restricted = stub.Classify(classify_requests(sid, 0, candidates=["ball"]))
    assert restricted.label == "ball" and restricted.probabilities[0].probability == 1.0

    frames = bin_events(events(1, 99), GEOM).astype(np.float32)
    by_frames = stub.Classify(
        iter(
            [
                pb.ClassifyRequest(header=pb.ClassifyHeader(session_id=sid)),
                pb.ClassifyRequest(
                    frames=pb.Frames(
                        bins=4, height=8, width=8, type=pb.FRAME_TYPE_FLOAT32, data=frames.tobytes()
                    )
                ),
            ]
        )
    )
    by_events = stub.Classify(classify_requests(sid, 1))
    assert by_frames.label == "ball" and by_frames.events == 0
    assert [x.probability for x in by_frames.probabilities] == pytest.approx(
        [x.probability for x in by_events.probabilities], abs=1e-6
    )

    got = stub.GetSession(pb.GetSessionRequest(session_id=sid))
    assert (list(got.classes), got.examples, got.weights_version) == (["cup", "ball"], 4, 1)
    listed = stub.ListSessions(pb.ListSessionsRequest()).sessions
    assert [x.session_id for x in listed] == [sid]

    data = stub.ExportSession(pb.ExportSessionRequest(session_id=sid)).data
    copy = stub.ImportSession(pb.ImportSessionRequest(data=data))
    assert copy.session_id != sid and list(copy.classes) == ["cup", "ball"]
    assert copy.weights_version == 1 and copy.examples == 4
    again = stub.Classify(classify_requests(copy.session_id, 1))
    assert [x.probability for x in again.probabilities] == pytest.approx(
        [x.probability for x in by_events.probabilities], abs=1e-6
    )

    stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid))
    assert (
        status_of(stub.GetSession, pb.GetSessionRequest(session_id=sid))[0]
        == grpc.StatusCode.NOT_FOUND
    )
    assert [x.session_id for x in stub.ListSessions(pb.ListSessionsRequest()).sessions] == [
        copy.session_id
    ]


def test_classify_stream_answers_each_window(stub):
    sid = adapted(stub, "cup", "ball")
    first, second = events(0, 1, n=400), events(1, 2, n=400, t0=4000)
    first["t"][0] = 0  # the windows start at 0: [0, 4000) and [4000, 8000)
    stream = np.concatenate([first, second])

    def requests():
        yield pb.ClassifyStreamRequest(config=pb.StreamConfig(session_id=sid))
        for piece in np.array_split(stream, 8):
            yield pb.ClassifyStreamRequest(events=wire(piece))

    answers = list(stub.ClassifyStream(requests()))
    got = [(a.window_start_us, a.window_end_us, a.label, a.complete, a.events) for a in answers]
    assert got == [(0, 4000, "cup", True, 400), (4000, 8000, "ball", False, 400)]
    assert all(a.weights_version == 1 and a.timings.forward_ms > 0 for a in answers)


def packed(ev: np.ndarray, **fields) -> pb.Events:
    """``ev`` in the packed encoding, with ``fields`` set on top."""
    origin, dt, xyp = pack(ev)
    message = pb.Events(t_origin=origin, dt=dt.tobytes(), xyp=xyp.tobytes())
    message.sensor_width = message.sensor_height = 16
    for name, value in fields.items():
        setattr(message, name, value)
    return message


def test_packed_events_are_taken_and_their_errors_named_in_their_fields(stub):
    sid = adapted(stub, "cup", "ball")
    assert list(stub.ListModels(pb.ListModelsRequest()).event_encodings) == [
        pb.EVENT_ENCODING_COLUMNS,
        pb.EVENT_ENCODING_PACKED,
    ]

    def classify(*messages):
        header = pb.ClassifyRequest(header=pb.ClassifyHeader(session_id=sid))
        return stub.Classify(iter([header, *(pb.ClassifyRequest(events=m) for m in messages)]))

    query = events(1, 5)
    by_columns = classify(wire(query[:100]), wire(query[100:]))
    mixed = classify(packed(query[:100]), wire(query[100:]))  # chunks may differ in encoding
    assert by_columns.probabilities == mixed.probabilities and mixed.label == "ball"

    late = query.copy()
    late["t"][7] = late["t"][6] - 1  # time goes back at index 7
    outside = query.copy()
    outside["y"][3] = 16
    cases = [
        (packed(late), "events.dt", "chunk 0: events.dt: timestamps must not decrease"),
        (packed(outside), "events.xyp", "query, chunk 0: events.xyp: y must be < sensor height"),
        (packed(query, t=b"\0" * 8), "events", "set either t, x, y and p or t_origin, dt and xyp"),
        (packed(query, xyp=b"\0" * 4), "events.xyp", "events.xyp: 1 values but dt has 300"),
        (packed(query, dt=b"\0" * 5), "events.dt", "byte length 5 is not a multiple of 4"),
        (packed(query, t_origin=2**63 - 1), "events.t_origin", "at most 2^63 - 2^32"),
        (packed(query, t_origin=2**62), "events.dt", "at most 2^62"),
    ]
    for message, field, text in cases:
        code, details = status_of(classify, message)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and text in details, (field, details)
        assert f"{field}:" in details or field == "events"


def test_every_error_code(stub, server, caplog):
    sid = new_session(stub)
    code, details = status_of(stub.Classify, classify_requests(sid, 0))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "Adapt first" in details

    bad = events(0, 1)
    bad["x"][5] = 16
    code, details = status_of(
        stub.Adapt,
        iter(
            [
                pb.AdaptRequest(header=pb.AdaptHeader(session_id=sid)),
                pb.AdaptRequest(
                    example=pb.ExampleChunk(label="a", events=wire(bad), end_of_example=True)
                ),
            ]
        ),
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "events.x" in details and "index 5" in details
    code, details = status_of(
        stub.Adapt, iter([pb.AdaptRequest(example=pb.ExampleChunk(label="a"))])
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "AdaptHeader" in details
    code, details = status_of(
        stub.CreateSession, pb.CreateSessionRequest(settings=pb.SessionSettings(ways=9))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "ways=9" in details
    code, details = status_of(
        stub.CreateSession, pb.CreateSessionRequest(settings=pb.SessionSettings(rounding=7))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "rounding" in details
    code, details = status_of(
        stub.CreateSession, pb.CreateSessionRequest(settings=pb.SessionSettings(head=7))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details == "head: unknown value 7"

    code, details = status_of(stub.ExportSession, pb.ExportSessionRequest(session_id=sid, format=7))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details == "format: unknown value 7"
    to_nir = pb.ExportSessionRequest(session_id=adapted(stub, "a"), format=pb.EXPORT_FORMAT_NIR)
    code, details = status_of(stub.ExportSession, to_nir)  # the tiny model pools by maximum
    assert code == grpc.StatusCode.FAILED_PRECONDITION and details == (
        "model 'tiny' cannot be exported to NIR: max pooling has no NIR primitive: meta-train "
        'with model.pool_kind = "avg"'
    )

    code, details = status_of(stub.GetSession, pb.GetSessionRequest(session_id="nope"))
    assert code == grpc.StatusCode.NOT_FOUND and "nope" in details
    code, details = status_of(
        stub.CreateSession, pb.CreateSessionRequest(settings=pb.SessionSettings(model="other"))
    )
    assert code == grpc.StatusCode.NOT_FOUND and "'other'" in details

    foreign = Engine([tiny(seed=1)], ServerConfig(workers=1))
    try:
        fid = foreign.create_session().session_id
        foreign.adapt(
            fid,
            [Chunk("a", EventInput(bad[:5], 16, 16)), Chunk("b", EventInput(events(1, 2), 16, 16))],
        )
        data = foreign.export_session(fid)
    finally:
        foreign.close()
    code, details = status_of(stub.ImportSession, pb.ImportSessionRequest(data=data))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "fingerprint" in details
    code, details = status_of(stub.ImportSession, pb.ImportSessionRequest(data=b"junk"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "data" in details

    def stalled():
        yield from list(adapt_requests(sid, support("a", "b")))[:2]
        time.sleep(1.0)

    def stopped() -> float:  # the server notices through the engine's control or the stream
        return errors_counted("Adapt", "CANCELLED") + errors_counted("Adapt", "DEADLINE_EXCEEDED")

    seen = stopped()
    code, _ = status_of(stub.Adapt, stalled(), timeout=0.3)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    future = stub.Adapt.future(stalled())
    time.sleep(0.1)
    future.cancel()
    assert future.code() == grpc.StatusCode.CANCELLED
    wait_until(lambda: stopped() >= seen + 2)
    assert stub.GetSession(pb.GetSessionRequest(session_id=sid)).weights_version == 0

    server.engine.list_models = lambda: 1 / 0
    with caplog.at_level(logging.ERROR, "spikeshot.service.servicer"):
        code, details = status_of(stub.ListModels, pb.ListModelsRequest())
    assert code == grpc.StatusCode.INTERNAL and "ListModels" in details
    assert "division" not in details and "ZeroDivisionError" in caplog.text

    server.engine.executor.close()
    code, details = status_of(stub.Classify, classify_requests(sid, 0))
    assert code == grpc.StatusCode.FAILED_PRECONDITION  # checked before any model work
    code, details = status_of(stub.Adapt, adapt_requests(sid, support("a", "b")))
    assert code == grpc.StatusCode.UNAVAILABLE and "shutting down" in details


def test_caps_are_resource_exhausted():
    with (
        serving(max_sessions_per_owner=2, max_message_bytes=4096, io_threads=3) as running,
        client(running) as stub,
    ):
        new_session(stub), new_session(stub)
        code, details = status_of(stub.CreateSession, pb.CreateSessionRequest())
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "maximum of 2" in details
        sid = stub.ListSessions(pb.ListSessionsRequest()).sessions[0].session_id
        release = threading.Event()

        def held_open():
            yield pb.AdaptRequest(header=pb.AdaptHeader(session_id=sid))
            release.wait(60)  # held open until released

        streams = [stub.Adapt.future(held_open()) for _ in range(6)]  # 3 running, 3 waiting
        busy = grpc.StatusCode.RESOURCE_EXHAUSTED

        def refill() -> None:
            """Restart a stream refused because a probe took its place (the probe then waits
            for an io thread: hence its deadline)."""
            for i, s in enumerate(streams):
                if s.done() and s.exception() is not None and s.exception().code() == busy:
                    streams[i] = stub.Adapt.future(held_open())

        def probe() -> grpc.StatusCode:
            return code_of(stub.ListModels, pb.ListModelsRequest(), timeout=1)

        def saturated() -> bool:
            """Every stream in place and a new call refused (a stream that a probe displaced
            meanwhile is restarted on the next try)."""
            refill()
            return probe() == busy and not any(s.done() for s in streams)

        wait_until(saturated, timeout=30)
        release.set()
        assert [s.exception(30).code() for s in streams] == [grpc.StatusCode.INVALID_ARGUMENT] * 6
        assert code_of(stub.ListModels, pb.ListModelsRequest()) == grpc.StatusCode.OK
        code, _ = status_of(
            stub.Adapt,
            iter(
                [
                    pb.AdaptRequest(header=pb.AdaptHeader(session_id=sid)),
                    pb.AdaptRequest(
                        example=pb.ExampleChunk(
                            label="a", events=wire(events(0, n=1000)), end_of_example=True
                        )
                    ),
                ]
            ),
        )
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED  # larger than max_message_bytes


def test_a_broken_adapt_stream_leaves_the_session_unchanged(stub):
    sid = adapted(stub, "cup", "ball")
    before = stub.Classify(classify_requests(sid, 0))
    received = metrics.EVENTS_RECEIVED.labels("Adapt")
    start = received._value.get()
    cancelled = errors_counted("Adapt", "CANCELLED")

    def broken():
        yield from adapt_requests(sid, [("cat", 2, 5), ("dog", 3, 6)])
        wait_until(lambda: received._value.get() >= start + 600)  # the server decoded both
        raise ConnectionError("camera unplugged")

    code, _ = status_of(stub.Adapt, broken())
    assert code == grpc.StatusCode.UNKNOWN  # the client's verdict; the server sees a cancel
    wait_until(lambda: errors_counted("Adapt", "CANCELLED") > cancelled)
    got = stub.GetSession(pb.GetSessionRequest(session_id=sid))
    assert (list(got.classes), got.examples, got.weights_version) == (["cup", "ball"], 4, 1)
    after = stub.Classify(classify_requests(sid, 0))
    assert (after.label, after.weights_version) == (before.label, 1)
    assert list(after.probabilities) == list(before.probabilities)

    def ends_inside_an_example():
        requests = list(adapt_requests(sid, [("cat", 2, 5)], parts=2))
        yield from requests[:-1]

    code, details = status_of(stub.Adapt, ends_inside_an_example())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "end_of_example" in details
    assert stub.GetSession(pb.GetSessionRequest(session_id=sid)).examples == 4


class Clock:
    """Seconds that pass only when a test says so."""

    def __init__(self):
        self.now = 1.7e9

    def __call__(self) -> float:
        return self.now


def test_idle_sessions_expire_after_the_ttl():
    clock = Clock()
    with serving(clock, session_ttl_s=60) as running, client(running) as stub:
        sid = new_session(stub)
        clock.now += 35
        assert stub.GetSession(pb.GetSessionRequest(session_id=sid)).session_id == sid
        clock.now += 35  # 70 s old, but used 35 s ago: still alive
        stub.GetSession(pb.GetSessionRequest(session_id=sid))
        clock.now += 60.001
        code, _ = status_of(stub.GetSession, pb.GetSessionRequest(session_id=sid))
        assert code == grpc.StatusCode.NOT_FOUND
        assert list(stub.ListSessions(pb.ListSessionsRequest()).sessions) == []


def test_32_concurrent_clients_each_get_their_own_sessions_answers(server):
    """Each client labels two quadrants with names of its own; its answers must equal those of
    an in-process engine adapted alone on the same examples."""
    pairs = [(a, b) for a in range(4) for b in range(4) if a != b]
    barrier = threading.Barrier(32)

    def plan(i: int):
        a, b = pairs[i % len(pairs)]
        examples = [(f"client{i}-q{q}", q, 100 * i + 10 * q + k) for k in range(2) for q in (a, b)]
        return examples, [(q, 1000 + i) for q in (a, b)]

    def one_client(i: int):
        examples, queries = plan(i)
        with client(server) as stub:
            sid = new_session(stub)
            barrier.wait(timeout=30)
            stub.Adapt(adapt_requests(sid, examples), timeout=60)
            return [
                stub.Classify(classify_requests(sid, q, seed), timeout=60) for q, seed in queries
            ]

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one_client, range(32)))
    assert len(server.engine.sessions) == 32
    alone = Engine([tiny()], ServerConfig(workers=1))
    try:
        for i, answers in enumerate(results):
            examples, queries = plan(i)
            sid = alone.create_session().session_id
            alone.adapt(
                sid,
                [Chunk(label, EventInput(events(q, seed), 16, 16)) for label, q, seed in examples],
            )
            for answer, (q, seed) in zip(answers, queries, strict=True):
                expected = alone.classify(sid, EventInput(events(q, seed), 16, 16))
                assert answer.label == expected.label
                assert {x.label: x.probability for x in answer.probabilities} == pytest.approx(
                    expected.probabilities, abs=1e-5
                )
    finally:
        alone.close()


def test_drain_finishes_an_in_flight_adapt_and_refuses_new_calls():
    with serving() as running, grpc.insecure_channel(running.address) as channel:
        stub = pb_grpc.SpikeShotStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        sid = new_session(stub)
        requests = list(adapt_requests(sid, support("cup", "ball")))
        sent, release = threading.Event(), threading.Event()

        def slow():
            yield from requests[:-1]
            sent.set()
            release.wait(10)
            yield requests[-1]

        adapt = stub.Adapt.future(slow())
        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert next(watch).status == SERVING
        assert sent.wait(10)
        stopper = threading.Thread(target=running.stop, args=(10,))
        stopper.start()
        assert next(watch).status == NOT_SERVING
        watch.cancel()
        refused = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        wait_until(lambda: code_of(stub.ListModels, pb.ListModelsRequest(), timeout=5) in refused)
        assert stopper.is_alive() and not adapt.done()
        release.set()
        assert adapt.result(timeout=10).weights_version == 1
        stopper.join(10)
        assert not stopper.is_alive() and running.wait(0)


def test_health_and_reflection(server):
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == SERVING
        db = ProtoReflectionDescriptorDatabase(channel)
        assert SERVICE_NAME in db.get_services()
        assert "grpc.health.v1.Health" in db.get_services()
        service = DescriptorPool(db).FindServiceByName(SERVICE_NAME)
        assert {"Adapt", "Classify", "ClassifyStream", "ListModels"} <= {
            m.name for m in service.methods
        }


def test_a_port_in_use_is_an_error(server):
    config = ServerConfig(port=server.port, metrics_port=0)
    engine = Engine([tiny()], config)
    try:
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{server.port}"):
            start(config, engine)
    finally:
        engine.close()
