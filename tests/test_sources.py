"""Event sources of the client: files of every format, arrays, chunk iterables, support folders,
time slices, real-time replay pacing, recording a live source, and live DV network streams from a
fake camera (a dv-processing NetworkWriter in a child process) over TCP and a Unix socket."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from client_fixtures import fake_camera, sequence
from service_fixtures import free_port

from spikeshot.clients import sources
from spikeshot.clients.errors import SourceError
from spikeshot.events.array import make_events
from spikeshot.events.formats import read, write

WAVE = Path(__file__).resolve().parents[1] / "clients" / "examples" / "wave.aedat4"


def joined(source) -> np.ndarray:
    with source:
        return np.concatenate(list(source))


def random_events(n=2000, seed=0, span_us=1_000_000, width=40, height=30):
    rng = np.random.default_rng(seed)
    return make_events(
        np.sort(rng.integers(0, span_us, n)),
        rng.integers(0, width, n),
        rng.integers(0, height, n),
        rng.integers(0, 2, n),
    )


def test_an_aedat4_file_streams_lazily_in_chunks_on_its_stated_sensor():
    source = sources.from_file(WAVE, chunk_events=5000)
    assert (source.width, source.height) == (346, 260)
    chunks = list(source)
    assert len(chunks) > 2 and all(len(c) <= 5000 for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), read(WAVE).events)


@pytest.mark.parametrize("suffix", [".bin", ".npy", ".npz"])
def test_other_formats_take_the_readers_sensor_size(tmp_path, suffix):
    ev = random_events(width=30, height=30)
    path = tmp_path / f"rec{suffix}"
    write(path, ev, 34, 34)
    source = sources.from_file(path)
    expected = read(path)
    assert (source.width, source.height) == (expected.width, expected.height)
    np.testing.assert_array_equal(joined(source), ev)
    forced = sources.from_file(path, sensor=(64, 48))
    assert (forced.width, forced.height) == (64, 48)


def test_a_missing_file_is_named():
    with pytest.raises(FileNotFoundError, match="nowhere.aedat4"):
        sources.from_file("nowhere.aedat4")


def test_arrays_are_sorted_and_their_sensor_inferred_unless_given():
    ev = random_events(width=40, height=30)
    shuffled = ev[np.random.default_rng(1).permutation(len(ev))]
    source = sources.from_array(shuffled)
    assert (source.width, source.height) == (ev["x"].max() + 1, ev["y"].max() + 1)
    np.testing.assert_array_equal(joined(source)["t"], ev["t"])
    assert (
        sources.from_array(ev, (346, 260)).width,
        sources.from_array(ev, (346, 260)).height,
    ) == (346, 260)
    with pytest.raises(ValueError, match="no events"):
        sources.from_array(ev[:0])


def test_as_source_accepts_the_documented_kinds_and_names_the_rest(tmp_path):
    ev = random_events()
    assert sources.as_source(WAVE).width == 346
    assert sources.as_source(read(WAVE)).width == 346
    assert len(joined(sources.as_source(ev, (40, 30)))) == len(ev)
    chunks = sources.as_source(iter([ev[:10], ev[10:]]), sensor=(40, 30))
    np.testing.assert_array_equal(joined(chunks), ev)
    with pytest.raises(ValueError, match="needs sensor"):
        sources.as_source([ev[:10]])
    with pytest.raises(TypeError, match="got int"):
        sources.as_source(3)


def test_support_folder_lists_recordings_by_class_and_skips_other_files(tmp_path):
    for label in ("ball", "cup"):
        (tmp_path / label).mkdir()
        for i in range(2):
            write(tmp_path / label / f"{i}.npy", random_events(50, i), 40, 30)
    (tmp_path / "cup" / "notes.txt").write_text("not a recording")
    (tmp_path / "README.md").write_text("top-level files are ignored")
    found = sources.support_folder(tmp_path)
    assert [(label, p.name) for label, p in found] == [
        ("ball", "0.npy"),
        ("ball", "1.npy"),
        ("cup", "0.npy"),
        ("cup", "1.npy"),
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no recordings"):
        sources.support_folder(tmp_path)
    with pytest.raises(ValueError, match="no class sub-folders"):
        sources.support_folder(tmp_path / "ball")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        sources.support_folder(tmp_path / "missing")


def test_slices_cut_time_ordered_chunks_on_window_boundaries():
    ev = random_events(3000, span_us=500_000)
    ev = ev[(ev["t"] < 100_000) | (ev["t"] > 300_000)]  # a gap of empty windows
    cuts = np.sort(np.random.default_rng(2).choice(len(ev), 7, replace=False))
    got = list(sources.slices(np.split(ev, cuts), 25_000))
    t0 = int(ev["t"][0])
    index = (ev["t"] - t0) // 25_000
    expected = [(ev[index == k], t0 + (k + 1) * 25_000) for k in np.unique(index)]
    assert len(got) == len(expected)
    for (a, end_a), (b, end_b) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
        assert end_a == end_b


class FakeClock:
    """A clock that moves only when slept on, and notes when each chunk was handed over."""

    def __init__(self):
        self.now, self.handed = 100.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds


def test_replay_hands_each_chunk_over_once_its_time_has_passed():
    ev = read(WAVE).events
    t0 = int(ev["t"][0])
    assert (ev["t"][-1] - t0) / 1e6 == pytest.approx(1.0, abs=0.01)
    for rate in (1.0, 4.0):
        clock = FakeClock()
        source = sources.replay(
            sources.from_file(WAVE), rate=rate, chunk_us=20_000, clock=clock, sleep=clock.sleep
        )
        chunks = []
        for chunk in source:
            chunks.append(chunk)
            # Handed over no earlier than the end of its 20 ms of recording, scaled by the rate,
            # and (the clock moving only by sleeps) no later either.
            due = 100.0 + 20_000 * len(chunks) / 1e6 / rate
            assert clock.now == pytest.approx(due)
        np.testing.assert_array_equal(np.concatenate(chunks), ev)
        assert clock.now - 100.0 == pytest.approx(len(chunks) * 0.02 / rate)
    with pytest.raises(ValueError, match="rate must be > 0"):
        sources.replay(sources.from_file(WAVE), rate=0)


def test_record_takes_the_first_seconds_and_closes_the_source():
    closed = []
    ev = random_events(span_us=1_000_000)
    source = sources.Source(40, 30, iter(np.array_split(ev, 10)), close=lambda: closed.append(1))
    got = sources.record(source, 0.25)
    np.testing.assert_array_equal(got, ev[ev["t"] < ev["t"][0] + 250_000])
    assert closed == [1]


def test_a_live_dv_stream_over_tcp_delivers_the_cameras_events(tmp_path):
    port = free_port()
    ev = sequence([0, 1, 2, 3, 0, 1])
    with fake_camera(tmp_path, ev, port=port):
        source = sources.open_source(f"dv://127.0.0.1:{port}")
        assert (source.width, source.height) == (16, 16)
        assert source.name == f"dv://127.0.0.1:{port}"
        got = joined(source)  # ends when the camera process stops serving
    np.testing.assert_array_equal(got, ev)


def test_a_live_dv_stream_over_a_unix_socket(tmp_path):
    path = str(tmp_path / "camera.sock")
    ev = sequence([2, 3])
    with fake_camera(tmp_path, ev, socket_path=path):
        np.testing.assert_array_equal(joined(sources.open_source(f"dv+unix://{path}")), ev)


def test_closing_a_live_source_stops_its_thread(tmp_path):
    port = free_port()
    with fake_camera(tmp_path, sequence([0, 1] * 5), port=port, loop=True):
        source = sources.dv_network("127.0.0.1", port)
        first = next(iter(source))
        assert len(first) > 0
        worker = source._chunks
        source.close()
        deadline = time.monotonic() + 5
        while worker._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not worker._thread.is_alive()


def test_live_sources_that_cannot_open_say_why():
    start = time.monotonic()
    with pytest.raises(SourceError, match=r"dv://127.0.0.1:\d+: cannot open"):
        sources.dv_network("127.0.0.1", free_port(), open_timeout=5)
    assert time.monotonic() - start < 5
    import dv_processing

    if not dv_processing.io.camera.discover():
        with pytest.raises(SourceError, match="no camera found"):
            sources.open_source("camera")
    for bad in ("dv://127.0.0.1", "dv://:80", "dv://host:port"):
        with pytest.raises(ValueError, match="expected dv://HOST:PORT"):
            sources.open_source(bad)
