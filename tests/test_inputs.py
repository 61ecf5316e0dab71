"""Requests' events and frames -> model frames: sensor mapping, chunks, windows, errors."""

import numpy as np
import pytest

from spikeshot.events import mapping
from spikeshot.events.array import empty, make_events
from spikeshot.events.binning import FrameGeometry, bin_events
from spikeshot.events.codec import PackedEvents, encode, pack
from spikeshot.events.mapping import map_to_sensor, sensor_region
from spikeshot.service.errors import InvalidArgument
from spikeshot.service.inputs import (
    MAX_TIMESTAMP_US,
    Chunk,
    EventInput,
    FrameInput,
    Sample,
    examples,
    frames_from_bytes,
    query,
)
from spikeshot.service.windows import Windower

GEOM = FrameGeometry(sensor_width=16, sensor_height=8, downsample=2, bins=4, window_us=4000)
CROPPED = FrameGeometry(
    sensor_width=16, sensor_height=8, crop=(0, 0, 14, 8), downsample=2, bins=4, window_us=4000
)


def ev(t, x=None, y=None, p=None):
    """Events stored field by field, as the wire's columns arrive: values ``make_events`` would
    refuse (a polarity of 3) reach validation as they are."""
    n = len(t)
    out = empty(n)
    out["t"], out["x"], out["y"] = t, x if x is not None else 0, y if y is not None else 0
    out["p"] = p if p is not None else 1
    return out


def test_sensor_region_is_the_largest_centred_region_of_the_cards_aspect_ratio():
    assert sensor_region(16, 8, 16, 8) == (0, 0, 16, 8)
    assert sensor_region(640, 480, 16, 8) == (0, 80, 640, 320)  # wider card: crop rows
    assert sensor_region(30, 30, 16, 8) == (0, 7, 30, 15)
    assert sensor_region(100, 10, 16, 8) == (40, 0, 20, 10)  # wider sensor: crop columns
    assert sensor_region(33, 8, 16, 8) == (8, 0, 16, 8)  # odd excess: the extra column right


def test_map_to_sensor_scales_the_region_and_marks_the_rest_off_the_cards_sensor():
    events = ev([0, 1, 2, 3, 4], x=[0, 639, 320, 5, 100], y=[80, 399, 240, 79, 400])
    out = map_to_sensor(events, 640, 480, 16, 8)
    # (0,80) -> (0,0); (639,399) -> (15,7); (320,240) -> (8,4); y=79 and y=400 are outside.
    assert out.events.t.tolist() == [0, 1, 2, 3, 4] and out.count() == 3
    assert out.inside.tolist() == [True, True, True, False, False]
    assert out.events.x[:3].tolist() == [0, 15, 8] and out.events.y.tolist() == [0, 7, 4, 8, 8]
    same = ev([0], x=[3], y=[2])
    mapped = map_to_sensor(same, 16, 8, 16, 8)
    assert mapped.inside is None and np.shares_memory(mapped.events.x, same)
    small = map_to_sensor(ev([0, 1], x=[0, 7], y=[0, 3]), 8, 4, 16, 8)  # upsampled: gaps
    assert small.events.x.tolist() == [0, 14] and small.events.y.tolist() == [0, 6]
    assert small.inside is None
    wide = map_to_sensor(ev([0, 1, 2, 3], x=[4, 5, 44, 45]), 50, 20, 16, 8)  # crop columns
    assert wide.events.x.tolist() == [16, 0, 15, 16]
    assert wide.inside.tolist() == [False, True, True, False]


def map_whole(events, width, height, card_width, card_height):
    """The module's mapping rule spelled out in int64, events outside the region dropped."""
    x0, y0, w, h = sensor_region(width, height, card_width, card_height)
    x, y = events["x"].astype(np.int64) - x0, events["y"].astype(np.int64) - y0
    keep = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    return make_events(
        events["t"][keep], x[keep] * card_width // w, y[keep] * card_height // h, events["p"][keep]
    )


@pytest.mark.parametrize("width, height", [(16, 8), (346, 260), (30, 40), (8, 4), (5000, 3000)])
def test_mapping_and_binning_chunk_by_chunk_equals_the_rule_applied_whole(
    width, height, monkeypatch
):
    monkeypatch.setattr(mapping, "PIECE_EVENTS", 300)  # large chunks alone, small ones merged
    rng = np.random.default_rng(2)
    t = np.sort(rng.integers(0, 9000, 3000))
    whole = ev(
        t, rng.integers(0, width, 3000), rng.integers(0, height, 3000), rng.integers(0, 2, 3000)
    )
    cuts = [0, 1, 100, 250, 250, 1300, 1400, 1450, 3000]
    parts = [
        EventInput(encode(whole[a:b]) if i % 2 else whole[a:b], width, height)
        for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True))
    ]
    mapped = map_whole(whole, width, height, 16, 8)
    inside = mapped[mapped["t"] < t[0] + 4000]  # the window starts at the first event
    sample = query(parts, CROPPED, 3000)
    np.testing.assert_array_equal(sample.frames, bin_events(inside, CROPPED, t0=t[0]))
    assert sample.events == len(inside)
    windower = Windower(CROPPED, 3000, hop_us=1500)
    windows = [w for part in parts for w in windower.push(part)] + windower.finish()
    assert [w.start_us for w in windows] == list(range(t[0], t[-1] + 1, 1500))
    for w in windows:
        inside = mapped[(mapped["t"] >= w.start_us) & (mapped["t"] < w.end_us)]
        np.testing.assert_array_equal(w.frames, bin_events(inside, CROPPED, t0=w.start_us))
        assert w.events == len(inside)


def test_an_example_over_chunks_equals_binning_it_whole():
    rng = np.random.default_rng(0)
    t = np.sort(rng.integers(100, 6000, 500))
    whole = ev(t, rng.integers(0, 16, 500), rng.integers(0, 8, 500), rng.integers(0, 2, 500))
    chunks = [
        Chunk("cup", EventInput(encode(whole[:100]), 16, 8), False),
        Chunk("", EventInput(whole[100:100], 16, 8), False),
        Chunk("cup", EventInput(encode(whole[100:]), 16, 8), False),
        Chunk(end_of_example=True),
    ]
    [sample] = list(examples(chunks, GEOM, 10_000))
    assert sample.label == "cup"
    np.testing.assert_array_equal(sample.frames, bin_events(whole, GEOM))
    inside = int((t < t[0] + 4000).sum())  # the window starts at the first event
    assert sample.events == inside < 500
    assert sample.frames.sum() == inside and sample.decode_ms > 0 and sample.bin_ms > 0


def test_several_examples_and_frames():
    frames = np.ones(GEOM.shape, np.uint16)
    chunks = [
        Chunk("a", EventInput(ev([0, 5]), 16, 8)),
        Chunk("b", FrameInput(frames)),
        Chunk("a", EventInput(ev([7]), 16, 8)),
    ]
    out = list(examples(chunks, GEOM, 10))
    assert [s.label for s in out] == ["a", "b", "a"]
    assert out[1].frames.dtype == np.float32 and out[1].events == 0 and out[1].frames.sum() == 256


@pytest.mark.parametrize(
    "chunks, field, index, text",
    [
        ([Chunk("", EventInput(ev([0]), 16, 8))], "label", None, "needs a label"),
        (
            [Chunk("a", EventInput(ev([0]), 16, 8), False), Chunk("b", None)],
            "label",
            None,
            "label changed to 'b'",
        ),
        (
            [Chunk("a", EventInput(ev([0]), 16, 8), False)],
            "end_of_example",
            None,
            "stream ended inside this example",
        ),
        ([Chunk("a", None)], "events", None, "example 0 ('a'): no events"),
        (
            [Chunk("a", EventInput(ev([0, 1, 2], x=[1, 16, 17]), 16, 8))],
            "events.x",
            1,
            "must be < sensor width 16",
        ),
        ([Chunk("a", EventInput(ev([0, 1], p=[1, 3]), 16, 8))], "events.p", 1, "polarity"),
        ([Chunk("a", EventInput(ev([5, 4, 3]), 16, 8))], "events.t", 1, "must not decrease"),
        (
            [
                Chunk("a", EventInput(ev([5]), 16, 8), False),
                Chunk("a", EventInput(ev([6, 4]), 16, 8)),
            ],
            "events.t",
            1,
            "chunk 1",
        ),
        (
            [Chunk("a", EventInput(ev([5]), 16, 8), False), Chunk("a", EventInput(ev([4]), 16, 8))],
            "events.t",
            0,
            "across chunks",
        ),
        (
            [Chunk("a", EventInput(ev([5]), 16, 8), False), Chunk("a", EventInput(ev([6]), 32, 8))],
            "events.sensor_width",
            None,
            "changed from 16x8 to",
        ),
        ([Chunk("a", EventInput(ev([5]), 0, 8))], "events.sensor_width", None, "1..65535"),
        (
            [
                Chunk("a", EventInput(ev([0, 1, 2]), 16, 8), False),
                Chunk("a", EventInput(ev([3, 4, 5]), 16, 8)),
            ],
            "events",
            1,
            "more than 4 events",
        ),
        ([Chunk("a", EventInput(ev(list(range(5))), 16, 8))], "events", 4, "exceed the limit"),
        (
            [Chunk("a", EventInput(encode(ev([0]))._replace(x=b"\0"), 16, 8))],
            "events.x",
            None,
            "byte length 1",
        ),
        (
            [
                Chunk("a", EventInput(ev([0], x=[0], y=[0]), 16, 8)),
                Chunk("b", EventInput(ev([0], x=[15]), 16, 8)),
            ],
            "events",
            None,
            "example 1 ('b'): no event falls inside the model's view",
        ),
        ([Chunk("a", FrameInput(np.zeros((4, 2, 4, 8))))], "frames.bins", None, "4 x 2 x 4 x 7"),
        ([Chunk("a", FrameInput(np.zeros(CROPPED.shape)))], "events", None, "no event falls"),
        ([Chunk("a", FrameInput(np.full(CROPPED.shape, -1.0)))], "frames.data", 0, "finite"),
        (
            [
                Chunk("a", EventInput(ev([0]), 16, 8), False),
                Chunk("a", FrameInput(np.ones(CROPPED.shape))),
            ],
            "frames",
            None,
            "cannot share",
        ),
        (
            [
                Chunk("a", FrameInput(np.ones(CROPPED.shape))),
                Chunk("b", FrameInput(np.ones((2, 2)))),
            ],
            "frames.bins",
            None,
            "example 1 ('b'), chunk 0",
        ),
    ],
)
def test_errors_name_the_example_the_field_and_the_first_bad_index(chunks, field, index, text):
    with pytest.raises(InvalidArgument) as err:
        list(examples(chunks, CROPPED, 4))
    assert err.value.field == field and err.value.index == index
    assert text in str(err.value)


def test_a_query_concatenates_its_chunks():
    sample = query([EventInput(ev([10, 20]), 16, 8), EventInput(ev([30], x=[4]), 16, 8)], GEOM, 10)
    assert sample.events == 3 and sample.frames[:, 1].sum() == 3 and sample.label == ""
    frames = np.ones(GEOM.shape, np.float32)
    assert query([FrameInput(frames)], GEOM, 10).frames.sum() == frames.sum()
    with pytest.raises(InvalidArgument, match="query: no events"):
        query([], GEOM, 10)


def test_frames_from_bytes():
    data = np.arange(4 * 2 * 4 * 8, dtype="<u2").tobytes()
    frames = frames_from_bytes(data, 4, 4, 8, np.dtype("<u2"))
    assert frames.shape == GEOM.shape and frames[0, 0, 0, 1] == 1
    with pytest.raises(
        InvalidArgument, match=r"512 bytes, but .* values of 4 bytes take 1024"
    ) as err:
        frames_from_bytes(data, 4, 4, 8, np.dtype("<f4"))
    assert err.value.field == "frames.data"


def stream_events(n=4000, span=20_000, seed=1):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(1000, 1000 + span, n))
    return ev(t, rng.integers(0, 16, n), rng.integers(0, 8, n), rng.integers(0, 2, n))


def run_windower(w: Windower, events, sizes):
    out, at = [], 0
    for size in sizes:
        out += w.push(EventInput(encode(events[at : at + size]), 16, 8))
        at += size
    return out + w.finish()


def test_windows_match_binning_each_window_whatever_the_chunking():
    events = stream_events()
    t0, last = int(events["t"][0]), int(events["t"][-1])
    for sizes in ([4000], [1] * 50 + [3950], [700] * 6):
        windows = run_windower(Windower(GEOM, 10_000, window_us=4000, hop_us=2000), events, sizes)
        starts = [w.start_us for w in windows]
        assert starts == list(range(t0, last + 1, 2000))
        for w in windows:
            inside = events[(events["t"] >= w.start_us) & (events["t"] < w.end_us)]
            assert w.end_us == w.start_us + 4000 and w.events == len(inside)
            np.testing.assert_array_equal(w.frames, bin_events(inside, GEOM, t0=w.start_us))
            assert w.complete == (last >= w.end_us)
        assert [w.complete for w in windows].count(False) == 2  # the two that began last


def test_a_window_is_given_only_once_an_event_reaches_its_end():
    w = Windower(GEOM, 100)
    assert w.push(EventInput(ev([0, 3999]), 16, 8)) == []
    [first] = w.push(EventInput(ev([4000]), 16, 8))
    assert (first.start_us, first.end_us, first.events, first.complete) == (0, 4000, 2, True)
    [last] = w.finish()
    assert (last.start_us, last.events, last.complete) == (4000, 1, False)


def test_empty_windows_are_skipped_and_a_longer_window_stretches_the_bins():
    w = Windower(GEOM, 100, window_us=8000, hop_us=2000)
    assert w.geometry.bin_us == 2000
    out = w.push(EventInput(ev([0, 10**9]), 16, 8)) + w.finish()
    assert [(x.start_us, x.events) for x in out] == [
        (0, 1),
        (10**9 - 6000, 1),
        (10**9 - 4000, 1),
        (10**9 - 2000, 1),
        (10**9, 1),
    ]
    gaps = Windower(GEOM, 100, window_us=1000 * 4, hop_us=10_000)  # hop past the window: gaps
    out = gaps.push(EventInput(ev([0, 5000, 10_500, 30_000]), 16, 8)) + gaps.finish()
    assert [(x.start_us, x.events) for x in out] == [(0, 1), (10_000, 1), (30_000, 1)]


def test_windower_settings_and_limits():
    with pytest.raises(InvalidArgument, match="window_us=4001 is not a positive multiple") as err:
        Windower(GEOM, 10, window_us=4001)
    assert err.value.field == "window_us"
    with pytest.raises(InvalidArgument, match="window_us=-4000"):
        Windower(GEOM, 10, window_us=-4000)
    with pytest.raises(InvalidArgument, match="shorter than one time bin") as err:
        Windower(GEOM, 10, hop_us=999)
    assert err.value.field == "hop_us"
    w = Windower(GEOM, 3)
    w.push(EventInput(ev([0, 1, 2]), 16, 8))
    with pytest.raises(InvalidArgument, match="more than 3 events within one window"):
        w.push(EventInput(ev([3]), 16, 8))
    w = Windower(GEOM, 10)
    w.push(EventInput(ev([5]), 16, 8))
    with pytest.raises(InvalidArgument, match="chunk 1: events.t") as err:
        w.push(EventInput(ev([4]), 16, 8))
    assert err.value.index == 0


def test_a_stream_from_a_larger_sensor_is_mapped():
    w = Windower(GEOM, 100)
    out = w.push(EventInput(ev([0, 4000], x=[639, 0], y=[399, 80]), 640, 480)) + w.finish()
    assert out[0].frames[0, 1, 3, 7] == 1 and out[1].frames[0, 1, 0, 0] == 1
    w = Windower(GEOM, 100)  # a window of events outside the sensor region only is skipped
    out = w.push(EventInput(ev([0, 4000, 8000], y=[80, 0, 80]), 640, 480)) + w.finish()
    assert [(x.start_us, x.events) for x in out] == [(0, 1), (8000, 1)]


def test_events_in_no_window_do_not_count_against_the_limit():
    w = Windower(GEOM, 3)  # outside the sensor region
    w.push(EventInput(ev([0, 1, 2], y=[80, 0, 479]), 640, 480))
    w.push(EventInput(ev([3, 4, 5], y=[81, 0, 1]), 640, 480))
    with pytest.raises(InvalidArgument, match="more than 3 events within one window"):
        w.push(EventInput(ev([6, 7], y=[100, 200]), 640, 480))
    gaps = Windower(GEOM, 2, hop_us=10_000)  # between windows
    assert len(gaps.push(EventInput(ev([0, 4000]), 16, 8))) == 1
    assert gaps.push(EventInput(ev([5000, 6000]), 16, 8)) == []
    assert gaps.push(EventInput(ev([7000, 8000]), 16, 8)) == []
    [last] = gaps.push(EventInput(ev([10_000, 20_000]), 16, 8))
    assert (last.start_us, last.events) == (10_000, 1)


def outcome(run, *args, **kw):
    """The samples (frames and event counts) of ``run(*args, **kw)``, one or an iterable of
    them, or its error (message, field, index)."""
    try:
        samples = run(*args, **kw)
        samples = [samples] if isinstance(samples, Sample) else list(samples)
        return [(s.frames.tobytes(), s.events, getattr(s, "start_us", 0)) for s in samples]
    except InvalidArgument as e:
        return (e.message, e.field, e.index)


def stream(parts: list[EventInput], geometry: FrameGeometry, limit: int, native: bool):
    """The windows of ``parts`` as one stream, overlapping (a hop of three bins)."""
    w = Windower(geometry, limit, hop_us=3 * geometry.bin_us, native=native)
    return [x for data in parts for x in w.push(data)] + w.finish()


def wire(events: np.ndarray, kind: int):
    """``events`` as a request carries them: the array (0), the four columns (1), or packed (2,
    where they pack; else the columns)."""
    if kind == 0:
        return events
    packing = pack(events) if kind == 2 else None
    if packing is not None:
        origin, dt, xyp = packing
        return PackedEvents(origin, dt.tobytes(), xyp.tobytes())
    return encode(events)


@pytest.mark.parametrize("sensor", [(16, 8), (346, 260), (8, 4), (50, 20), (20, 50)])
@pytest.mark.parametrize("geometry", [GEOM, CROPPED])
def test_the_fused_kernels_give_the_reference_samples_windows_and_errors(sensor, geometry):
    """``native.ingest`` (validate, map, bin in one pass) and ``native.map_chunk`` (a stream's
    validate and map) against the numpy path, on valid chunks and on chunks that break each
    rule: the same frames and counts, or the same error."""
    pytest.importorskip("numba")
    width, height = sensor
    rng = np.random.default_rng(width * height)
    rejected = []
    for case in range(40):
        n = int(rng.integers(1, 400))
        t = np.sort(rng.integers(-1000, 9000, n))
        x, y, p = rng.integers(0, width, n), rng.integers(0, height, n), rng.integers(0, 2, n)
        bad = int(rng.integers(0, n))
        match case % 8:
            case 1:
                x[bad] = width  # outside the sensor
            case 2:
                y[bad] = height + 3
            case 3:
                p[bad] = 2
            case 4:
                t[bad:] -= 5000  # time goes back
            case 5:
                t[bad:] += MAX_TIMESTAMP_US  # past the limit
        events = ev(t, x, y, p)
        cuts = np.unique(np.concatenate(([0, n], rng.integers(0, n + 1, 3))))
        chunks = [
            Chunk("a", EventInput(wire(events[a:b], k % 3), width, height), b == n)
            for k, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True))
        ]
        limit = 10_000 if case % 8 != 6 else n - 1  # too many events
        parts = [c.data for c in chunks]
        for run, data in ((examples, chunks), (query, parts), (stream, parts)):
            fused, reference = (
                outcome(run, data, geometry, limit, native=native) for native in (True, False)
            )
            assert fused == reference, (case, run.__name__)
            rejected.append(isinstance(fused, tuple))
    assert 0 < sum(rejected) < len(rejected)  # both kinds of chunk were tried
