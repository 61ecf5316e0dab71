"""Hostile and malformed input: every case answers a clear status code whose message names the
field in the .proto's terms, never INTERNAL, and leaves what the server stores exactly as it was.

Frames whose declared shape overflows, windows and timestamps past int64, client strings too long
to echo, bytes protobuf cannot parse, session files that are not whole sessions (on import and on
restore), values no model or grid holds, and health checks while draining."""

from __future__ import annotations

import json
import logging
import threading
import time

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from service_fixtures import (
    GEOM,
    adapt_requests,
    adapted,
    classify_requests,
    client,
    events,
    header_of,
    new_session,
    observed,
    serving,
    session_ids,
    status_of,
    support,
    tiny,
    wire,
)

from spikeshot.events.binning import bin_events
from spikeshot.service import metrics
from spikeshot.service.config import ServerConfig
from spikeshot.service.engine import Engine
from spikeshot.service.inputs import MAX_TIMESTAMP_US, Chunk, EventInput
from spikeshot.service.server import SERVICE_NAME
from spikeshot.service.sessions import FORMAT
from spikeshot.v1 import spikeshot_pb2 as pb
from spikeshot.v1 import spikeshot_pb2_grpc as pb_grpc

INVALID = grpc.StatusCode.INVALID_ARGUMENT
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
INT64_MAX = 2**63 - 1
LONG = "x" * 20_000  # past gRPC's metadata limits if a message repeated it whole
JUNK = b"\xff" * 12  # a varint longer than 10 bytes: no message parses it


@pytest.fixture(scope="module")
def server():
    with serving(max_sessions_per_owner=1000) as running:
        yield running


@pytest.fixture
def stub(server):
    with client(server) as s:
        yield s


@pytest.fixture
def raw(server):
    """Calls with requests as raw bytes: ``raw(method, data)`` (a list for a request stream)."""
    with grpc.insecure_channel(server.address) as channel:

        def call(method: str, data, streaming: bool = False):
            path = f"/{SERVICE_NAME}/{method}"
            if streaming:
                return channel.stream_unary(path)(iter(data), timeout=30)
            return channel.unary_unary(path)(data, timeout=30)

        yield call


def frames_message(bins: int, height: int, width: int, data: bytes = b"") -> pb.Frames:
    return pb.Frames(bins=bins, height=height, width=width, type=pb.FRAME_TYPE_FLOAT32, data=data)


def classify_frames(sid: str, frames: pb.Frames):
    yield pb.ClassifyRequest(header=pb.ClassifyHeader(session_id=sid))
    yield pb.ClassifyRequest(frames=frames)


def adapt_then(sid: str, *chunks: pb.ExampleChunk, replace_support: bool = False):
    """An Adapt stream: one good example, then ``chunks``."""
    yield pb.AdaptRequest(header=pb.AdaptHeader(session_id=sid, replace_support=replace_support))
    yield pb.AdaptRequest(
        example=pb.ExampleChunk(label="cup", events=wire(events(0, 7)), end_of_example=True)
    )
    for chunk in chunks:
        yield pb.AdaptRequest(example=chunk)


def stream(sid: str, *chunks: pb.Events, window_us: int = 0, hop_us: int = 0):
    config = pb.StreamConfig(session_id=sid, window_us=window_us, hop_us=hop_us)
    yield pb.ClassifyStreamRequest(config=config)
    for chunk in chunks:
        yield pb.ClassifyStreamRequest(events=chunk)


def late(t_last: int = INT64_MAX, n: int = 300) -> np.ndarray:
    """Quadrant-0 events whose last timestamp is ``t_last``."""
    ev = events(0, 3, n=n)
    ev["t"] += t_last - int(ev["t"][-1])
    return ev


def stream_status(stub, requests) -> tuple[grpc.StatusCode, str]:
    return status_of(lambda r: list(stub.ClassifyStream(r)), requests)


# -- 1. frames whose declared shape overflows ----------------------------------------------------


def test_frames_whose_declared_shape_overflows_are_invalid_argument(stub):
    sid = adapted(stub, "cup", "ball")
    code, details = status_of(stub.Classify, classify_frames(sid, frames_message(2**31, 2**31, 2)))
    assert code == INVALID and details.startswith("frames.data: 0 bytes")
    code, details = status_of(
        stub.Classify, classify_frames(sid, frames_message(2**31, 2**31, 1, b"\0" * 4))
    )
    assert code == INVALID and f"take {2**65}" in details  # not a wrapped-around negative count
    frames = pb.ExampleChunk(label="ball", frames=frames_message(2**31, 2**31, 2))
    code, details = status_of(stub.Adapt, adapt_then(sid, frames))
    assert code == INVALID and "frames.data" in details
    # No bins: no bytes are due, but no array holds 2**32 x 2**32 pixels (found by the fuzzer).
    code, details = status_of(
        stub.Classify, classify_frames(sid, frames_message(0, 2**32 - 1, 2**32 - 1))
    )
    assert code == INVALID and details.startswith("frames.bins must be positive"), details


# -- 2. windows and timestamps past int64 --------------------------------------------------------


def test_stream_windows_past_int64_are_invalid_argument(stub):
    sid = adapted(stub, "cup", "ball")
    chunk = wire(events(0, 3))
    code, details = stream_status(stub, stream(sid, chunk, window_us=2**64 - 4))
    assert code == INVALID and details.startswith(f"window_us={2**64 - 4} exceeds the limit")
    code, details = stream_status(stub, stream(sid, chunk, hop_us=2**63))
    assert code == INVALID and details.startswith(f"hop_us={2**63} exceeds the limit")


def test_timestamps_past_the_limit_are_invalid_argument_everywhere(stub):
    sid = adapted(stub, "cup", "ball")
    chunk = wire(late())
    code, details = stream_status(stub, stream(sid, chunk))
    assert code == INVALID and "chunk 0: events.t: timestamps must be at most" in details
    assert "first bad index" in details
    code, details = status_of(
        stub.Classify,
        iter(
            [
                pb.ClassifyRequest(header=pb.ClassifyHeader(session_id=sid)),
                pb.ClassifyRequest(events=chunk),
            ]
        ),
    )
    assert code == INVALID and details.startswith("query, chunk 0: events.t: timestamps must be")
    example = pb.ExampleChunk(label="ball", events=chunk, end_of_example=True)
    code, details = status_of(stub.Adapt, adapt_then(sid, example))
    assert code == INVALID and details.startswith("example 1 ('ball'), chunk 0: events.t")


def test_windows_up_to_the_timestamp_limit_end_inside_int64(stub):
    sid = adapted(stub, "cup", "ball")
    answers = list(stub.ClassifyStream(stream(sid, wire(late(MAX_TIMESTAMP_US)))))
    assert len(answers) == 1 and answers[0].events == 300 and answers[0].label == "cup"
    assert answers[0].window_end_us == answers[0].window_start_us + GEOM.window_us <= INT64_MAX


def test_bin_edges_past_int64_do_not_wrap_around():
    near = late(INT64_MAX, n=50)
    at_zero = near.copy()
    at_zero["t"] -= near["t"][0]
    np.testing.assert_array_equal(bin_events(near, GEOM), bin_events(at_zero, GEOM))
    assert bin_events(near, GEOM).sum() == 50  # the event at 2^63 - 1 included
    assert bin_events(near[-1:], GEOM, t0=INT64_MAX - 1).sum() == 1


# -- 3. client strings too long to echo ----------------------------------------------------------


@pytest.mark.parametrize("text", [LONG, "\U0001f600" * 5000, "\x00" * 20_000])
def test_overlong_ids_names_and_labels_are_invalid_argument_with_short_messages(stub, text):
    sid = adapted(stub, "cup", "ball")
    n = len(text)
    calls = [
        (stub.GetSession, pb.GetSessionRequest(session_id=text), "session_id"),
        (stub.DeleteSession, pb.DeleteSessionRequest(session_id=text), "session_id"),
        (stub.ExportSession, pb.ExportSessionRequest(session_id=text), "session_id"),
        (stub.Adapt, adapt_requests(text, support("cup")), "session_id"),
        (stub.Classify, classify_requests(text, 0), "session_id"),
        (lambda r: list(stub.ClassifyStream(r)), stream(text), "session_id"),
        (
            stub.CreateSession,
            pb.CreateSessionRequest(settings=pb.SessionSettings(model=text)),
            "model",
        ),
        (stub.Adapt, adapt_requests(sid, [(text, 1, 3)]), "example 0: label"),
        (stub.Adapt, adapt_then(sid, pb.ExampleChunk(label=text)), "example 1: label"),
        (stub.Classify, classify_requests(sid, 0, candidates=[text]), "candidates"),
    ]
    for call, request, field in calls:
        code, details = status_of(call, request)
        assert (code, details) == (
            INVALID,
            f"{field} has {n} characters, more than the limit of 256",
        )


def test_unknown_ids_names_and_labels_are_echoed_in_part(stub):
    sid = adapted(stub, "cup", "ball")
    text = "y" * 256
    for call, request, code in [
        (stub.GetSession, pb.GetSessionRequest(session_id=text), grpc.StatusCode.NOT_FOUND),
        (
            stub.CreateSession,
            pb.CreateSessionRequest(settings=pb.SessionSettings(model=text)),
            grpc.StatusCode.NOT_FOUND,
        ),
        (stub.Classify, classify_requests(sid, 0, candidates=[text]), INVALID),
    ]:
        got, details = status_of(call, request)
        assert got == code and "'yyyy" in details and "(256 characters)" in details
        assert len(details) < 200
    long_labels = [(f"{i}" + "z" * 255, i % 4, i) for i in range(5)]  # five classes, four ways
    code, details = status_of(stub.Adapt, adapt_requests(new_session(stub), long_labels))
    assert code == INVALID and "5 classes" in details and len(details) < 200


# -- 4. bytes protobuf cannot parse --------------------------------------------------------------


def errors_counted(method: str, code: str) -> float:
    labels = {"method": method, "code": code}
    name = "spikeshot_request_duration_seconds_count"
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_requests_protobuf_cannot_parse_are_invalid_argument(stub, raw, server):
    before = errors_counted("GetSession", "INVALID_ARGUMENT")
    code, details = status_of(raw, "GetSession", bytes.fromhex("0a03fffefd"))  # bad UTF-8
    assert code == INVALID and details.startswith("the request cannot be parsed")
    assert "spikeshot.v1.GetSessionRequest" in details and "UTF-8" in details
    assert errors_counted("GetSession", "INVALID_ARGUMENT") == before + 1
    for method in [
        "CreateSession",
        "GetSession",
        "ListSessions",
        "DeleteSession",
        "ExportSession",
        "ImportSession",
        "ListModels",
    ]:
        assert status_of(raw, method, JUNK)[0] == INVALID, method
    sid = adapted(stub, "cup", "ball")
    header = pb.AdaptRequest(header=pb.AdaptHeader(session_id=sid)).SerializeToString()
    code, details = status_of(raw, "Adapt", [header, JUNK], streaming=True)
    assert code == INVALID and details.startswith("message 1 cannot be parsed")
    code, details = status_of(raw, "Classify", [JUNK], streaming=True)
    assert code == INVALID and details.startswith("message 0 cannot be parsed")
    with grpc.insecure_channel(server.address) as channel:
        path = f"/{SERVICE_NAME}/ClassifyStream"
        code, _ = status_of(lambda r: list(channel.stream_stream(path)(r)), iter([JUNK]))
        assert code == INVALID
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest()).status == SERVING
    assert stub.GetSession(pb.GetSessionRequest(session_id=sid)).weights_version == 1


# -- 5, 6. session files that are not whole sessions, or hold values no model or grid holds -------


def with_header(data: bytes, header: dict) -> bytes:
    """``data`` with another safetensors header (padded to 8 bytes like safetensors')."""
    size = int.from_bytes(data[:8], "little")
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + size :]


def rewritten(data: bytes, change) -> bytes:
    """``data`` with ``change(tensors, info)`` applied to its tensors and session JSON."""
    tensors = load_tensors(data)
    info = json.loads(header_of(data)["__metadata__"]["session"])
    change(tensors, info)
    return save_tensors(tensors, metadata={"format": FORMAT, "session": json.dumps(info)})


def metadata_not_an_object(data: bytes) -> bytes:
    return with_header(data, {**header_of(data), "__metadata__": [1]})


def support_to(value):
    def change(tensors, info):
        tensors["support"][0, 0, 0, 0, 0] = value

    return lambda data: rewritten(data, change)


def no_weights(version):
    def change(tensors, info):
        for k in [k for k in tensors if k.startswith("weight.")]:
            del tensors[k]
        info.update(version=version, scales=None)

    return lambda data: rewritten(data, change)


def tensor(name, value):
    def change(tensors, info):
        tensors[name] = value(tensors[name])

    return lambda data: rewritten(data, change)


def scale(value):
    def change(tensors, info):
        info["scales"]["out.bias"] = value

    return lambda data: rewritten(data, change)


def field(**changes):
    return lambda data: rewritten(data, lambda tensors, info: info.update(changes))


def without_the_bias(data):
    def change(tensors, info):
        del tensors["weight.out.bias"]
        del info["scales"]["out.bias"]

    return rewritten(data, change)


def setting(**changes):
    return lambda data: rewritten(data, lambda tensors, info: info["settings"].update(changes))


EMPTY_BIAS = tensor("weight.out.bias", lambda _: torch.zeros(0, dtype=torch.int8))
TAMPERED = {  # name: (of float32 weights?, the tampering, a part of the message)
    "metadata a list": (False, metadata_not_an_object, "__metadata__ must be an object"),
    "bfloat16 support": (
        False,
        tensor("support", lambda v: v.bfloat16()),
        "support must be float32 of shape [examples, bins, 2, height, width], got bfloat16",
    ),
    "0-d support": (False, tensor("support", lambda _: torch.tensor(1.0)), "got float32 []"),
    "8-bit weight of shape [0]": (False, EMPTY_BIAS, "weight 'out.bias' has shape [0]"),
    "16-bit levels in an 8-bit session": (
        False,
        tensor("weight.out.bias", lambda v: v.short()),
        "weight 'out.bias' is not 8-bit integers",
    ),
    "a scale that is a list": (False, scale([0.0078125]), "scales must be null or an object"),
    "a NaN scale": (False, scale(float("nan")), "scales must be null or an object"),
    "a scale of -1e30": (False, scale(-1e30), "scales must be null or an object"),
    "a scale off the grid": (
        False,
        scale(0.5),
        "scale 0.5 of weight 'out.bias' is not 0.0078125, the step of the session's 8-bit global",
    ),
    "version -7 without weights": (False, no_weights(-7), "version must be an integer in"),
    "version 1.5": (False, field(version=1.5), "version must be an integer in"),
    "a missing weight": (False, without_the_bias, "the weights must be those of the parameters"),
    "a fingerprint that is a number": (False, field(fingerprint=7), "fingerprint must be a string"),
    "ways 4.0": (False, setting(ways=4.0), "ways must be an integer >= 2, got 4.0"),
    "a step size past float32": (False, setting(step_size=1e300), "step_size must be finite"),
    "labels that are numbers": (False, field(support_labels=[1, 2, 3, 4]), "support_labels must"),
    "NaN support": (False, support_to(float("nan")), "support example 0: frames.data must be"),
    "-1e9 support": (False, support_to(-1e9), "frames.data must be finite and in 0..2000000"),
    "3e38 support": (False, support_to(3e38), "frames.data must be finite and in 0..2000000"),
    "an all-NaN float weight": (
        True,
        tensor("weight.out.weight", lambda v: torch.full_like(v, float("nan"))),
        "weight 'out.weight' must be finite float32 values",
    ),
    "float32 weights with scales": (
        True,
        field(scales={"out.bias": 1.0}),
        "scales must give one scale per tensor of quantized weights",
    ),
}


@pytest.fixture(scope="module")
def exports(server):
    """The bytes of an adapted 8-bit session and of an adapted float32 one."""
    with client(server) as stub:
        out = {}
        for bits in (8, 0):
            sid = new_session(stub, weight_bits=bits)
            stub.Adapt(adapt_requests(sid, support("cup", "ball")))
            out[bits == 0] = stub.ExportSession(pb.ExportSessionRequest(session_id=sid)).data
        return out


@pytest.mark.parametrize("name", TAMPERED)
def test_imports_that_are_not_whole_sessions_are_invalid_argument_and_store_nothing(
    stub, exports, name
):
    as_float, tamper, message = TAMPERED[name]
    data = tamper(exports[as_float])
    before = session_ids(stub)
    code, details = status_of(stub.ImportSession, pb.ImportSessionRequest(data=data))
    assert code == INVALID and details.startswith("data: ") and message in details, details
    assert len(details) < 1024
    assert session_ids(stub) == before


def test_untampered_exports_still_import(stub, exports):
    for data in exports.values():
        copy = stub.ImportSession(pb.ImportSessionRequest(data=data))
        assert copy.weights_version == 1 and copy.examples == 4


# -- 7. snapshots that cannot be restored --------------------------------------------------------


def test_restore_moves_aside_each_snapshot_it_cannot_validate(tmp_path, caplog):
    folder = tmp_path / "snapshots"
    config = ServerConfig(workers=1, snapshot_dir=str(folder))
    first = Engine([tiny()], config)
    try:
        sid = first.create_session(owner="robot").session_id
        first.adapt(
            sid,
            [Chunk(label, EventInput(events(q, s), 16, 16)) for label, q, s in support("a", "b")],
            owner="robot",
        )
        answer = first.classify(sid, EventInput(events(0, 99), 16, 16), owner="robot")
    finally:
        first.close()
    good = (folder / f"{sid}.safetensors").read_bytes()

    def copy(name: str, tamper) -> str:
        data = rewritten(good, lambda t, info: info.update(id=name))
        (folder / f"{name}.safetensors").write_bytes(tamper(data))
        return name

    bad = [
        copy("listed", metadata_not_an_object),
        copy("empty", EMPTY_BIAS),
        copy("nan", support_to(float("nan"))),
        copy("unnamed", field(id=3)),
        copy("uncreated", field(created="yesterday")),
    ]
    other = copy("other", field(fingerprint="0" * 64))
    with caplog.at_level(logging.WARNING, "spikeshot.service.sessions"):
        second = Engine([tiny()], config)
    try:
        assert [s.session_id for s in second.list_sessions(owner="robot")] == [sid]
        again = second.classify(sid, EventInput(events(0, 99), 16, 16), owner="robot")
        assert again.probabilities == answer.probabilities
    finally:
        second.close()
    for name in bad:
        assert not (folder / f"{name}.safetensors").exists()
        assert (folder / f"{name}.safetensors.rejected").exists()
        assert (
            f"{name}.safetensors not restored, moved to {name}.safetensors.rejected" in caplog.text
        )
    assert (folder / f"{other}.safetensors").exists()  # kept for a server with its model
    assert (
        f"{other}.safetensors not restored: the session was adapted on other weights" in caplog.text
    )


# -- 8. health while draining --------------------------------------------------------------------


def test_health_check_answers_not_serving_while_the_server_drains():
    with serving() as running, grpc.insecure_channel(running.address) as channel:
        stub = pb_grpc.SpikeShotStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        sid = new_session(stub)
        requests = list(adapt_requests(sid, support("cup", "ball")))
        received = metrics.EVENTS_RECEIVED.labels("Adapt")
        start, release = received._value.get(), threading.Event()

        def slow():
            yield from requests[:-1]
            release.wait(30)
            yield requests[-1]

        adapt = stub.Adapt.future(slow())
        wait_for(lambda: received._value.get() >= start + 900)  # the Adapt is in progress
        stopper = threading.Thread(target=running.stop, args=(30,))
        stopper.start()
        try:
            for service in ("", SERVICE_NAME):
                wait_for(lambda s=service: check(health, s) == NOT_SERVING)
            code, details = status_of(stub.ListModels, pb.ListModelsRequest(), timeout=5)
            assert (code, details) == (grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            assert stopper.is_alive() and not adapt.done()
        finally:
            release.set()
        assert adapt.result(timeout=30).weights_version == 1
        stopper.join(30)
        assert not stopper.is_alive()


def check(health, service: str):
    return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


# -- rejected requests change nothing -------------------------------------------------------------


def test_rejected_requests_leave_the_session_exactly_as_it_was(stub, raw, exports):
    sid = adapted(stub, "cup", "ball")
    overflow = frames_message(2**31, 2**31, 2)
    header = pb.AdaptRequest(header=pb.AdaptHeader(session_id=sid)).SerializeToString()
    example = pb.AdaptRequest(
        example=pb.ExampleChunk(label="cat", events=wire(events(2, 5)), end_of_example=True)
    ).SerializeToString()
    rejected = {
        "Adapt, then frames that overflow": lambda: stub.Adapt(
            adapt_then(sid, pb.ExampleChunk(label="cat", frames=overflow))
        ),
        "Adapt replacing the support set, then a late timestamp": lambda: stub.Adapt(
            adapt_then(
                sid,
                pb.ExampleChunk(label="cat", events=wire(late()), end_of_example=True),
                replace_support=True,
            )
        ),
        "Adapt, then an overlong label": lambda: stub.Adapt(
            adapt_then(sid, pb.ExampleChunk(label=LONG, events=wire(events(2, 5))))
        ),
        "Adapt, then bytes protobuf cannot parse": lambda: raw(
            "Adapt", [header, example, JUNK], streaming=True
        ),
        "Adapt, then support frames of 3e38": lambda: stub.Adapt(
            adapt_then(
                sid,
                pb.ExampleChunk(
                    label="cat",
                    frames=frames_message(4, 8, 8, np.full(GEOM.shape, 3e38, "<f4").tobytes()),
                    end_of_example=True,
                ),
            )
        ),
        "Classify frames that overflow": lambda: stub.Classify(classify_frames(sid, overflow)),
        "ClassifyStream, a window past int64": lambda: list(
            stub.ClassifyStream(stream(sid, wire(events(0, 3)), window_us=2**64 - 4))
        ),
        "ClassifyStream, a late timestamp": lambda: list(
            stub.ClassifyStream(stream(sid, wire(late())))
        ),
        "GetSession bytes protobuf cannot parse": lambda: raw("GetSession", JUNK),
        "DeleteSession an overlong id": lambda: stub.DeleteSession(
            pb.DeleteSessionRequest(session_id=sid + LONG)
        ),
        "ImportSession version -7": lambda: stub.ImportSession(
            pb.ImportSessionRequest(data=no_weights(-7)(exports[False]))
        ),
        "ImportSession a NaN scale": lambda: stub.ImportSession(
            pb.ImportSessionRequest(data=scale(float("nan"))(exports[False]))
        ),
    }
    before = observed(stub, sid)
    for name, call in rejected.items():
        code, _ = status_of(call)
        assert code == INVALID, name
        assert observed(stub, sid) == before, name
