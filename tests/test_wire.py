"""Event-carrying requests serialised straight from the array: the bytes protobuf would write."""

import numpy as np
import pytest

from spikeshot.clients import wire
from spikeshot.events.array import EventError, make_events
from spikeshot.events.codec import encode, pack
from spikeshot.v1 import spikeshot_pb2 as pb


def events(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return make_events(
        np.sort(rng.integers(0, 2**40, n)),
        rng.integers(0, 1280, n),
        rng.integers(0, 720, n),
        rng.integers(0, 2, n),
    )


def proto_events(e: np.ndarray, width: int, height: int) -> pb.Events:
    t, x, y, p = encode(e)
    return pb.Events(t=t, x=x, y=y, p=p, sensor_width=width, sensor_height=height)


@pytest.mark.parametrize("n", [0, 1, 127, 128, 20_000])
@pytest.mark.parametrize("size", [(0, 0), (34, 34), (1280, 720)])
def test_query_and_stream_chunks_match_protobuf(n, size):
    e = events(n, n)
    data = wire.serialize(wire.EventChunk(e, *size))
    assert data == pb.ClassifyRequest(events=proto_events(e, *size)).SerializeToString()
    assert data == pb.ClassifyStreamRequest(events=proto_events(e, *size)).SerializeToString()
    parsed = pb.ClassifyRequest.FromString(data)
    assert parsed.WhichOneof("kind") == "events"
    assert np.array_equal(np.frombuffer(parsed.events.t, "<i8"), e["t"])


def proto_packed(e: np.ndarray, width: int, height: int) -> pb.Events:
    origin, dt, xyp = pack(e)
    return pb.Events(
        t_origin=origin,
        dt=dt.tobytes(),
        xyp=xyp.tobytes(),
        sensor_width=width,
        sensor_height=height,
    )


@pytest.mark.parametrize("n", [1, 127, 20_000])
@pytest.mark.parametrize("origin", [0, 5, -(2**40), 2**62])
def test_packed_chunks_match_protobuf(n, origin):
    e = events(n, n)
    e["t"] = e["t"] % 2**32 - e["t"][0] % 2**32 + origin  # a span under 2^32 us
    e.sort(order="t")
    for chunk, expected in (
        (wire.EventChunk(e, 1280, 720), pb.ClassifyRequest(events=proto_packed(e, 1280, 720))),
        (
            wire.EventChunk(e, 1280, 720, label="wave", end_of_example=True),
            pb.AdaptRequest(
                example=pb.ExampleChunk(
                    label="wave", events=proto_packed(e, 1280, 720), end_of_example=True
                )
            ),
        ),
    ):
        data = wire.serialize(chunk, packed=True)
        assert data == expected.SerializeToString()
        assert len(data) <= 8 * n + 64  # 8 bytes an event and a header, where columns take 13


@pytest.mark.parametrize(
    "change",
    [
        lambda e: e["t"].__setitem__(-1, e["t"][0] + 2**32),  # spans 2^32 us
        lambda e: e["t"].__setitem__(1, e["t"][0] - 1),  # before the first
        lambda e: e["y"].__setitem__(0, 2**15),  # a row the packing cannot hold
        lambda e: e["p"].__setitem__(0, 2),  # a polarity it would change
    ],
)
def test_events_that_would_change_in_packing_go_as_columns(change):
    """Out-of-range events travel unchanged, for the server to name what is wrong with them."""
    e = events(50, 3)
    e["t"] -= e["t"][0]
    change(e)
    data = wire.serialize(wire.EventChunk(e, 1280, 720), packed=True)
    assert data == pb.ClassifyRequest(events=proto_events(e, 1280, 720)).SerializeToString()


@pytest.mark.parametrize("label", ["", "wave", "ジェスチャー" * 30])
@pytest.mark.parametrize("end", [False, True])
def test_adapt_example_chunks_match_protobuf(label, end):
    e = events(300, 1)
    chunk = wire.EventChunk(e, 346, 260, label=label, end_of_example=end)
    expected = pb.AdaptRequest(
        example=pb.ExampleChunk(label=label, events=proto_events(e, 346, 260), end_of_example=end)
    )
    assert wire.serialize(chunk) == expected.SerializeToString()


def test_other_messages_go_through_protobuf():
    header = pb.ClassifyRequest(header=pb.ClassifyHeader(session_id="s", candidates=["a"]))
    assert wire.serialize(header) == header.SerializeToString()


def test_chunks_refuse_arrays_that_are_not_events():
    with pytest.raises(EventError, match="EVENT_DTYPE"):
        wire.EventChunk.of(np.zeros(3), 34, 34)
    with pytest.raises(EventError, match="1-D"):
        wire.EventChunk.of(events(4).reshape(2, 2), 34, 34)
