"""The fuzzing targets: what the service reads from clients and files, each with its oracle.

A target is called with one input's bytes and raises ``Finding`` (or lets any unexpected exception
out) when the code under test misbehaves: an exception other than the clear error it documents, a
gRPC status INTERNAL or UNKNOWN, a call past its deadline (a hang), a non-finite output, two paths
that must agree disagreeing, or a rejected request that changed a session. ``seeds()`` gives valid
inputs to start from. ``tests/fuzzing.py`` runs the targets under atheris; the suite replays the
seeds and runs each briefly (``tests/test_fuzz.py``).

- ``events``: the wire codec's columns, validation, sensor mapping and binning of an ``Adapt``
  example, a ``Classify`` query and a ``ClassifyStream`` stream; frames must not depend on how
  the events were cut into chunks, and the fused kernel must give what numpy gives (frames,
  counts, errors).
- ``frames``: the ``Frames`` message's shape, type and values.
- ``evt2``, ``evt3``, ``dat``, ``nmnist``, ``aedat4``, ``npy``: the file readers on the input as a
  file; the numba kernels must give what the numpy reference gives, read in one block or in many.
- ``session``: importing ``spikeshot-session/1`` bytes; an accepted session classifies to finite
  probabilities and exports to bytes that import again.
- ``rpc``: raw bytes to each method of a server of the tiny model (messages of a stream
  length-prefixed); after a rejected request, a fixed adapted session is exactly as it was.
"""

from __future__ import annotations

import contextlib
import functools
import math
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import grpc
import numpy as np

from spikeshot.clients.messages import FRAME_DTYPES
from spikeshot.events import aedat4, dat, evt2, evt3, nmnist, npyfile
from spikeshot.events.array import EventError, Limits, make_events, validate
from spikeshot.events.binning import FrameGeometry
from spikeshot.events.codec import EncodedEvents, PackedEvents, decode, encode, pack
from spikeshot.events.recording import FormatError, collect
from spikeshot.service import inputs, windows
from spikeshot.service.config import ServerConfig
from spikeshot.service.engine import Engine
from spikeshot.service.errors import ServiceError
from spikeshot.service.inputs import Chunk, EventInput, FrameInput
from spikeshot.service.server import SERVICE_NAME
from spikeshot.v1 import spikeshot_pb2 as pb

GEOM = FrameGeometry(sensor_width=16, sensor_height=16, downsample=2, bins=4, window_us=4000)
MAX_EVENTS = 1 << 20
TIMEOUT_S = 10.0  # a call that takes longer is a hang


class Finding(AssertionError):
    """The code under test misbehaved on this input."""


class Input:
    """Reads typed values off the front of an input's bytes; past the end, zeros and empty."""

    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        out = self.data[self.at : self.at + n]
        self.at += len(out)
        return out

    def int(self, bits: int) -> int:
        return int.from_bytes(self.take(bits // 8).ljust(bits // 8, b"\0"), "little")

    def pick(self, options):
        return options[self.int(8) % len(options)]

    def blob(self) -> bytes:
        """Bytes prefixed by a 16-bit length."""
        return self.take(self.int(16))

    def rest(self) -> bytes:
        return self.take(len(self.data))


def blob(data: bytes) -> bytes:
    return struct.pack("<H", len(data)) + data


# -- events: codec, validation, mapping, binning, windowing ---------------------------------------

SENSORS = [(16, 16), (32, 16), (8, 8), (640, 480), (1, 1), (65535, 65535), (0, 5), (70000, 16)]


def _columns(src: Input, n: int) -> EncodedEvents:
    """Four columns of about ``n`` events (their lengths as the input says: maybe inconsistent)."""
    t = np.cumsum(np.frombuffer(src.take(2 * n).ljust(2 * n, b"\0"), "<u2").astype(np.int64))
    t = t + src.pick([0, 2**62 - 5000, -10, 2**63 - 100_000])
    if src.int(8) % 5 == 0:  # raw timestamps, in any order
        t = np.frombuffer(src.take(8 * n).ljust(8 * n, b"\0"), "<i8")
    cols = [t.astype("<i8").tobytes()]
    for size in (2, 2, 1):  # now and then a byte more or less than n values take
        length = max(0, size * n + src.pick([0, 0, 0, 1, -1]))
        cols.append(src.take(length).ljust(length, b"\0"))
    return EncodedEvents(*cols)


def _packed_columns(src: Input, n: int) -> PackedEvents:
    """The packed encoding's columns of about ``n`` events, from any origin."""
    origin = src.pick([0, 2**62 - 5000, -10, 2**63 - 2**32, 2**63 - 2**32 + 1, -(2**63)])
    dt, xyp = (src.take(max(0, 4 * n + src.pick([0, 0, 0, 2, -4]))) for _ in range(2))
    return PackedEvents(origin, dt, xyp)


def _chunks(src: Input) -> list[EventInput]:
    """One to four chunks of one sensor, in the four columns or (one in four) packed."""
    sensor = src.pick(SENSORS)
    return [
        EventInput((_columns, _columns, _columns, _packed_columns)[src.int(8) % 4](src, n), *sensor)
        for n in [src.int(8) * 4 for _ in range(1 + src.int(8) % 4)]
    ]


def _repacked(parts: list[EventInput]) -> list[EventInput]:
    """``parts`` with each column chunk that decodes and packs in the packed encoding."""
    out = []
    for part in parts:
        if isinstance(part.events, EncodedEvents):
            with contextlib.suppress(EventError):
                packing = pack(decode(*part.events))
                if packing is not None:
                    origin, dt, xyp = packing
                    part = EventInput(
                        PackedEvents(origin, dt.tobytes(), xyp.tobytes()),
                        part.sensor_width,
                        part.sensor_height,
                    )
        out.append(part)
    return out


def _outcome(run: Callable[[], list[np.ndarray]]):
    """Frames (and small arrays of counts), or None for a clear rejection; anything else
    propagates."""
    try:
        frames = run()
    except ServiceError:
        return None
    for f in frames:
        if f.ndim == 4 and f.shape != GEOM.shape or not np.isfinite(f).all() or (f < 0).any():
            raise Finding(f"frames of shape {f.shape} with values {f.min()}..{f.max()}")
    return frames


def _exactly(run, *args, **kw) -> list:
    """The arrays ``run`` returns, or its error's type and message."""
    try:
        return run(*args, **kw)
    except ServiceError as e:
        return [type(e).__name__, str(e)]


def _whole(parts: list[EventInput]) -> list[EventInput]:
    """The events of ``parts`` in one chunk (when each part decodes)."""
    arrays = []
    for p in parts:
        cols = p.events
        if not isinstance(cols, EncodedEvents):
            return parts
        sizes = [len(cols.t) // 8, len(cols.x) // 2, len(cols.y) // 2, len(cols.p)]
        if len(set(sizes)) != 1 or any(len(c) % s for c, s in zip(cols, (8, 2, 2, 1), strict=True)):
            return parts
        arrays.append(cols)
    joined = EncodedEvents(*(b"".join(c[i] for c in arrays) for i in range(4)))
    return [EventInput(joined, parts[0].sensor_width, parts[0].sensor_height)]


def fuzz_events(data: bytes) -> None:
    src = Input(data)
    parts = _chunks(src)
    window_us, hop_us = src.pick([0, 0, 4000, 2000, 3, 2**64 - 4, 8000]), src.pick([0, 0, 1000, 1])
    label = src.pick(["cup", "", "x" * 300])

    def example(chunks, native=True):
        last = len(chunks) - 1
        items = [Chunk(label, c, i == last) for i, c in enumerate(chunks)]
        samples = inputs.examples(items, GEOM, MAX_EVENTS, native=native)
        return [x for s in samples for x in (s.frames, np.array([s.events]))]

    def query(chunks, native=True):
        s = inputs.query(chunks, GEOM, MAX_EVENTS, native=native)
        return [s.frames, np.array([s.events])]

    def stream(chunks, native=True):
        w = windows.Windower(GEOM, MAX_EVENTS, window_us, hop_us, native=native)
        out = [x for c in chunks for x in w.push(c)] + w.finish()
        return [x.frames for x in out] + [
            np.array([x.start_us, x.end_us, x.events, x.complete]) for x in out
        ]

    whole = _whole(parts)
    for run in (example, query):
        for chunks in (parts, whole):
            fused, reference = (_exactly(run, chunks, native=n) for n in (True, False))
            if not _same(fused, reference):
                raise Finding(f"{run.__name__}: the fused kernel and numpy disagree")
        cut, one = _outcome(lambda r=run: r(parts)), _outcome(lambda r=run: r(whole))
        if (cut is None) != (one is None) or (cut is not None and not _same(cut, one)):
            raise Finding(f"{run.__name__}: frames depend on how the events were cut into chunks")
        packed = _outcome(lambda r=run: r(_repacked(parts)))
        if (cut is None) != (packed is None) or (cut is not None and not _same(cut, packed)):
            raise Finding(f"{run.__name__}: packed events give other frames than their columns")
    if not _same(*(_exactly(stream, parts, native=n) for n in (True, False))):
        raise Finding("stream: the fused kernel and numpy disagree")
    try:
        cut = stream(parts)
    except ServiceError:
        return
    if len(whole) == 1:
        again = stream(whole)
        if not _same(cut, again):
            raise Finding("stream: windows depend on how the events were cut into chunks")


def seeds_events() -> list[bytes]:
    out = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        out.append(bytes([seed % 4, 1 + seed % 3]) + rng.bytes(2000))
    return out


# -- frames -----------------------------------------------------------------------------------

SHAPES = [GEOM.shape, (2**31, 2**31, 2, 1), (0, 2, 8, 8), (4, 2, 8, 8), (1, 2, 1, 1)]


def fuzz_frames(data: bytes) -> None:
    src = Input(data)
    bins, _, height, width = src.pick(SHAPES)
    if src.int(8) % 2:
        bins, height, width = src.int(32), src.int(32), src.int(32)
    kind = src.pick(list(FRAME_DTYPES.values()))
    payload = src.rest()

    def run():
        frames = inputs.frames_from_bytes(payload, bins, height, width, kind)
        frames = inputs.check_frames(frames, GEOM, MAX_EVENTS, "query")
        return [frames, inputs.query([FrameInput(frames)], GEOM, MAX_EVENTS).frames]

    _outcome(run)


def seeds_frames() -> list[bytes]:
    ones = np.ones(GEOM.shape, "<f4").tobytes()
    return [
        b"\0\0\0" + ones,
        b"\0\0\1" + np.ones(GEOM.shape, "<u2").tobytes(),
        b"\1\1" + b"\0" * 12,
    ]


# -- file readers -----------------------------------------------------------------------------

READERS = {
    "evt2": evt2,
    "evt3": evt3,
    "dat": dat,
    "nmnist": nmnist,
    "aedat4": aedat4,
    "npy": npyfile,
}
SUFFIXES = {"evt2": ".raw", "evt3": ".raw", "dat": ".dat", "nmnist": ".bin", "aedat4": ".aedat4"}


def _read(module, path: Path, **options):
    """``(events, width, height)`` or ``(message, offset)`` of a ``FormatError``."""
    try:
        r = collect(module.source(path, **options))
    except FormatError as e:
        return (str(e), e.offset)
    return (r.events, r.width, r.height)


def _same(a, b) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y
        for x, y in zip(a, b, strict=True)
    )


@functools.cache
def _scratch(name: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=f"spikeshot-fuzz-{name}-"))
    return folder / f"input{SUFFIXES.get(name, '.npy')}"


def fuzz_reader(name: str, data: bytes) -> None:
    module, path = READERS[name], _scratch(name)
    ways = {"one block": {}, "small blocks": {"block_events": 7}}
    if name != "npy":
        ways["numpy reference"] = {"native": False}
    path.write_bytes(data)
    results = {way: _read(module, path, **options) for way, options in ways.items()}
    first, got = next(iter(results.items()))
    for way, other in results.items():
        if not _same(got, other):
            raise Finding(f"{name}: {first} and {way} disagree: {got!r:.300} / {other!r:.300}")
    if len(got) == 3:
        events, width, height = got
        # Events in file order, inside the sensor, polarity 0/1 (an EventError is a finding).
        validate(events, Limits(width, height, allow_empty=True), sort=True)


def _recording(n: int, width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 50_000, n))
    return make_events(
        t, rng.integers(0, width, n), rng.integers(0, height, n), rng.integers(0, 2, n)
    )


def reader_seeds(name: str) -> list[bytes]:
    import faery

    out = []
    with tempfile.TemporaryDirectory() as folder:
        for seed, (width, height) in enumerate([(34, 34), (640, 480)]):
            events = _recording(300, width, height, seed)
            path = Path(folder) / f"seed{seed}{SUFFIXES.get(name, '.npy')}"
            if name in ("evt2", "evt3", "dat"):
                rows = np.zeros(len(events), dtype=faery.EVENTS_DTYPE)
                for a, b in (("t", "t"), ("x", "x"), ("y", "y"), ("on", "p")):
                    rows[a] = events[b]
                stream = faery.events_stream_from_array(rows, dimensions=(width, height))
                stream.to_file(path, version={"dat": "dat2"}.get(name, name), zero_t0=False)
            elif name == "npy":
                npyfile.write(path.with_suffix(".npz"), events, width, height)
                out.append(path.with_suffix(".npz").read_bytes())
                npyfile.write(path, events, width, height)
            elif name == "nmnist" and width > 255:
                continue
            else:
                READERS[name].write(path, events, width, height)
            out.append(path.read_bytes())
    return out


# -- session import ---------------------------------------------------------------------------


@functools.cache
def _engine():
    """An engine of the tests' tiny model (8-bit sessions)."""
    from service_fixtures import tiny

    engine = Engine([tiny()], ServerConfig(port=0, metrics_port=0, workers=1))
    engine.warm_up()
    return engine


def _finite(probabilities) -> None:
    p = list(probabilities)
    if not all(math.isfinite(x) and 0 <= x <= 1 for x in p) or (p and abs(sum(p) - 1) > 1e-3):
        raise Finding(f"probabilities {p}")


def fuzz_session(data: bytes) -> None:
    engine = _engine()
    try:
        sid = engine.import_session(data).session_id
    except ServiceError:
        return
    try:
        info = engine.get_session(sid)
        if info.weights_version:
            for cls in range(4):
                _finite(engine.classify(sid, _query(cls)).probabilities.values())
        copy = engine.import_session(engine.export_session(sid)).session_id
        engine.delete_session(copy)
    finally:
        engine.delete_session(sid)


def _query(cls: int, seed: int = 7) -> EventInput:
    from service_fixtures import events

    return EventInput(encode(events(cls, seed=seed)), GEOM.sensor_width, GEOM.sensor_height)


def _exports() -> list[bytes]:
    """Exports of a new, an adapted 8-bit and an adapted float32 session of the tiny model."""
    from service_fixtures import support

    engine, out = _engine(), []
    for bits in (8, 0):
        sid = engine.create_session(weight_bits=bits).session_id
        out.append(engine.export_session(sid))
        engine.adapt(
            sid, [Chunk(label, _query(cls, seed)) for label, cls, seed in support("cup", "ball")]
        )
        out.append(engine.export_session(sid))
        engine.delete_session(sid)
    return out


# -- raw bytes to each RPC --------------------------------------------------------------------

PLACEHOLDER = b"@" * 32  # replaced by the fixed session's id (a uuid4 in hex: 32 characters)
UNARY = {
    "CreateSession": pb.Session,
    "GetSession": pb.Session,
    "ListSessions": pb.ListSessionsResponse,
    "DeleteSession": pb.DeleteSessionResponse,
    "ExportSession": pb.ExportSessionResponse,
    "ImportSession": pb.Session,
    "ListModels": pb.ListModelsResponse,
}
STREAMS = {"Adapt": pb.AdaptResponse, "Classify": pb.ClassifyResponse}
BIDI = {"ClassifyStream": pb.ClassifyStreamResponse}
METHODS = [*UNARY, *STREAMS, *BIDI]
FAILURES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}


class Rpc:
    """A server of the tiny model, a channel to it and a fixed adapted session (re-made when an
    accepted request changed or deleted it)."""

    def __init__(self):
        from service_fixtures import client, serving

        self.stack = contextlib.ExitStack()
        running = self.stack.enter_context(serving(max_sessions_per_owner=10_000))
        self.stub = self.stack.enter_context(client(running))
        channel = self.stack.enter_context(grpc.insecure_channel(running.address))
        path = f"/{SERVICE_NAME}/"
        self.calls = {
            **{
                m: channel.unary_unary(path + m, response_deserializer=r.FromString)
                for m, r in UNARY.items()
            },
            **{
                m: channel.stream_unary(path + m, response_deserializer=r.FromString)
                for m, r in STREAMS.items()
            },
            **{
                m: channel.stream_stream(path + m, response_deserializer=r.FromString)
                for m, r in BIDI.items()
            },
        }
        self.sid = ""
        self.renew()

    def renew(self) -> None:
        from service_fixtures import adapted, observed

        for s in self.stub.ListSessions(pb.ListSessionsRequest()).sessions:
            self.stub.DeleteSession(pb.DeleteSessionRequest(session_id=s.session_id))
        self.sid = adapted(self.stub, "cup", "ball")
        self.before = observed(self.stub, self.sid)

    def call(self, method: str, messages: list[bytes]):
        messages = [m.replace(PLACEHOLDER, self.sid.encode()) for m in messages]
        call = self.calls[method]
        if method in UNARY:
            return [call(messages[0] if messages else b"", timeout=TIMEOUT_S)]
        if method in STREAMS:
            return [call(iter(messages), timeout=TIMEOUT_S)]
        return list(call(iter(messages), timeout=TIMEOUT_S))


@functools.cache
def _rpc() -> Rpc:
    return Rpc()


def fuzz_rpc(data: bytes) -> None:
    from service_fixtures import observed

    rpc, src = _rpc(), Input(data)
    method = src.pick(METHODS)
    if method in UNARY:
        messages = [src.rest()]
    else:
        messages = [src.blob() for _ in range(src.int(8) % 16)]
    try:
        responses = rpc.call(method, messages)
    except grpc.RpcError as e:
        if e.code() in FAILURES:
            raise Finding(f"{method}: {e.code().name}: {e.details()}") from None
        if observed(rpc.stub, rpc.sid) != rpc.before:
            raise Finding(
                f"{method} was rejected ({e.code().name}) but changed the session"
            ) from None
        return
    for r in responses:
        if method in ("Classify", "ClassifyStream"):
            _finite(p.probability for p in r.probabilities)
    rpc.renew()


def seeds_rpc() -> list[bytes]:
    from service_fixtures import events, wire

    sid = PLACEHOLDER.decode()

    def unary(method, message):
        return bytes([METHODS.index(method)]) + message.SerializeToString()

    def stream(method, *messages):
        body = b"".join(blob(m.SerializeToString()) for m in messages)
        return bytes([METHODS.index(method), len(messages)]) + body

    example = [
        pb.AdaptRequest(
            example=pb.ExampleChunk(
                label=label, events=wire(events(cls, seed)), end_of_example=True
            )
        )
        for label, cls, seed in (("cup", 0, 1), ("ball", 1, 2), ("cat", 2, 3))
    ]
    return [
        unary("CreateSession", pb.CreateSessionRequest(settings=pb.SessionSettings(weight_bits=8))),
        unary("GetSession", pb.GetSessionRequest(session_id=sid)),
        unary("ListSessions", pb.ListSessionsRequest()),
        unary("DeleteSession", pb.DeleteSessionRequest(session_id=sid)),
        unary("ExportSession", pb.ExportSessionRequest(session_id=sid)),
        unary("ImportSession", pb.ImportSessionRequest(data=_exports()[1])),
        unary("ListModels", pb.ListModelsRequest()),
        stream("Adapt", pb.AdaptRequest(header=pb.AdaptHeader(session_id=sid)), *example),
        stream(
            "Classify",
            pb.ClassifyRequest(header=pb.ClassifyHeader(session_id=sid)),
            pb.ClassifyRequest(events=wire(events(1, 5))),
        ),
        stream(
            "ClassifyStream",
            pb.ClassifyStreamRequest(config=pb.StreamConfig(session_id=sid, window_us=2000)),
            pb.ClassifyStreamRequest(events=wire(events(0, 5))),
            pb.ClassifyStreamRequest(events=wire(events(3, 6, t0=4000))),
        ),
    ]


# -- the registry -----------------------------------------------------------------------------


class Target(NamedTuple):
    fuzz: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]


TARGETS = {
    "events": Target(fuzz_events, seeds_events),
    "frames": Target(fuzz_frames, seeds_frames),
    **{
        name: Target(functools.partial(fuzz_reader, name), functools.partial(reader_seeds, name))
        for name in READERS
    },
    "session": Target(fuzz_session, _exports),
    "rpc": Target(fuzz_rpc, seeds_rpc),
}
