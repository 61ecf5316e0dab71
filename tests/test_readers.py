"""File readers and writers: every figure of the real recordings' REFERENCE.json, round trips
through each writer and through an independent encoder (faery), wrap-around of every counter,
chunked reading, truncated and corrupt files, and AEDAT4 from a live FIFO."""

import io
import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import evt3 as evt3_package
import faery
import numpy as np
import pytest

from spikeshot.events import aedat4, dat, evt2, evt3, nmnist, npyfile
from spikeshot.events.array import EventError, make_events
from spikeshot.events.formats import detect_format, info, iter_chunks, read, write
from spikeshot.events.prophesee import read_header
from spikeshot.events.recording import FormatError, collect, rechunk

FILES = {
    "sample_nmnist.bin": "nmnist",
    "sample.aedat4": "aedat4",
    "evt3_sample.raw": "evt3",
    "evt2_sample.raw": "evt2",
    "sample_ncars.dat": "dat",
}
# REFERENCE.json took the EVT3 figures from expelliarmus, which counts every step back of TIME_LOW
# as a wrap of the 12 low bits and adds it on top of TIME_HIGH, so 11 backward steps of 3-11 us
# in this file became 11 jumps of 4096 us. The file's own TIME_HIGH words bound its last time
# (see test_evt3_reference_times_exceed_the_files_own_clock); these two figures are what
# Prophesee's decoding rule and the evt3 package give. The other figures are the reference's.
EVT3_TIMES = {"t_last_us": 11727457, "sum_t_minus_first": 954917491}


def figures(events: np.ndarray) -> dict:
    t, x, y = (events[k].astype(np.int64) for k in "txy")
    return {
        "events": len(events),
        "t_first_us": int(t[0]),
        "t_last_us": int(t[-1]),
        "on_events": int(events["p"].sum(dtype=np.int64)),
        "x_min": int(x.min()),
        "x_max": int(x.max()),
        "y_min": int(y.min()),
        "y_max": int(y.max()),
        "sum_x": int(x.sum()),
        "sum_y": int(y.sum()),
        "sum_t_minus_first": int((t - t[0]).sum()),
        "first3": [[int(v) for v in events[i].tolist()] for i in range(3)],
        "nondecreasing_t": bool((np.diff(t) >= 0).all()),
    }


@pytest.fixture
def reference(realdata) -> dict:
    return json.loads((realdata / "REFERENCE.json").read_text())


@pytest.mark.parametrize("name", FILES)
def test_real_file_reproduces_reference(realdata, reference, name):
    expected = {k: v for k, v in reference[name].items() if k not in ("file", "sensor")}
    if name == "evt3_sample.raw":
        expected.update(EVT3_TIMES)
    recording = read(realdata / name)
    assert detect_format(realdata / name) == FILES[name] == recording.format
    assert [recording.width, recording.height] == reference[name]["sensor"]
    assert figures(recording.events) == expected


@pytest.mark.parametrize("name", FILES)
def test_a_detected_file_is_opened_once_and_read_as_named(realdata, monkeypatch, name):
    read(realdata / name)  # kernels compiled or loaded from their cache beforehand
    opened = []
    real_open = open

    def counting_open(path, *args, **kwargs):
        opened.append(Path(path).name)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    detected = read(realdata / name)
    assert opened == [name]
    named = read(realdata / name, format=FILES[name])
    np.testing.assert_array_equal(detected.events, named.events)
    assert (detected.width, detected.height) == (named.width, named.height)
    chunks = list(iter_chunks(realdata / name, chunk_events=1000))
    np.testing.assert_array_equal(np.concatenate(chunks), named.events)
    assert opened == [name, name, name]


class _Trickle(io.RawIOBase):
    """A pipe's view of ``data``: each read returns 1 to 3 bytes."""

    def __init__(self, data: bytes, seed: int):
        self.data, self.at, self.rng = data, 0, np.random.default_rng(seed)

    def readable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), int(self.rng.integers(1, 4)), len(self.data) - self.at)
        buffer[:n] = self.data[self.at : self.at + n]
        self.at += n
        return n


def _header_line_by_line(data: bytes) -> tuple[dict, int]:
    """The header's first value of each key and its length, one line at a time."""
    values, size = {}, 0
    for line in data.splitlines(keepends=True):
        if not (line[:2] in (b"% ", b"%\n", b"%\r") or line == b"%"):
            break
        size += len(line)
        text = line[1:].decode("latin-1").strip()
        key, _, value = text.partition(" ")
        if key:
            values.setdefault(key.lower(), value.strip())
        if text == "end":
            break
    return values, size


@pytest.mark.parametrize("seed", range(40))
def test_read_header_takes_the_lines_a_line_by_line_reading_does(seed):
    """Random headers (long lines past the buffer, bare "%" lines, CRLF, repeated keys, data
    that starts with "%" or a newline), from a file's buffer and from a pipe's trickle."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(int(rng.integers(0, 12))):
        kind = rng.integers(0, 5)
        key = ["evt", "Width", "width", "format", "x" * int(rng.integers(1, 20))][kind]
        value = "v" * int(rng.choice([0, 3, 200, 9000]))
        lines.append(rng.choice([f"% {key} {value}", "%", f"% {key}"]) + rng.choice(["\n", "\r\n"]))
    if rng.random() < 0.5:
        lines.append("% end\n" + ("% after end\n" if rng.random() < 0.5 else ""))
    # Data that starts with "%x" only from a file: a pipe that shows the "%" alone cannot tell.
    head = "".join(lines).encode()
    from_file = head + bytes(rng.choice([b"%x\n", b"\n%", b"\x00"]))
    from_pipe = head + bytes(rng.choice([b"\n%", b"\x00"]))
    for data, stream in (
        (from_file, io.BytesIO(from_file)),
        (from_pipe, _Trickle(from_pipe, seed)),
    ):
        stream = io.BufferedReader(stream)
        values, size = _header_line_by_line(data)
        header = read_header(stream)
        assert (header.values, header.size) == (values, size)
        assert stream.read() == data[size:]


def test_aedat4_names_its_other_streams(realdata):
    assert read(realdata / "sample.aedat4").other_streams == ("imus", "triggers")


def test_evt3_reference_times_exceed_the_files_own_clock(realdata, reference):
    with open(realdata / "evt3_sample.raw", "rb") as stream:
        read_header(stream)
        words = np.frombuffer(stream.read(), dtype="<u2")
    high = (words[words >> 12 == 0x8] & 0xFFF).astype(np.int64)
    assert (np.diff(high) >= 0).all()  # no wrap: every time is below the next TIME_HIGH step
    bound = (int(high.max()) + 1) << 12
    ours = read(realdata / "evt3_sample.raw").events["t"]
    assert ours.max() < bound < reference["evt3_sample.raw"]["t_last_us"]


def test_evt3_agrees_with_the_evt3_package(realdata):
    theirs = evt3_package.decode_file(str(realdata / "evt3_sample.raw"))
    ours = read(realdata / "evt3_sample.raw").events
    assert np.array_equal(ours["t"], theirs.timestamp.astype(np.int64))
    assert np.array_equal(ours["x"], theirs.x) and np.array_equal(ours["y"], theirs.y)
    assert np.array_equal(ours["p"], theirs.polarity)


@pytest.mark.parametrize("name", FILES)
def test_chunks_of_a_real_file_equal_the_whole(realdata, name):
    whole = read(realdata / name).events
    chunks = list(iter_chunks(realdata / name, chunk_events=777))
    assert [len(c) for c in chunks[:-1]] == [777] * (len(chunks) - 1)
    assert 0 < len(chunks[-1]) <= 777
    assert np.array_equal(np.concatenate(chunks), whole)


def test_info_of_a_real_file(realdata, reference):
    summary = info(realdata / "sample.aedat4")
    ref = reference["sample.aedat4"]
    assert summary["format"] == "aedat4"
    assert (summary["width"], summary["height"]) == tuple(ref["sensor"])
    assert (summary["events"], summary["on_events"]) == (ref["events"], ref["on_events"])
    assert (summary["t_first_us"], summary["t_last_us"]) == (ref["t_first_us"], ref["t_last_us"])
    assert summary["duration_us"] == ref["t_last_us"] - ref["t_first_us"]
    assert summary["mean_rate_ev_s"] == pytest.approx(ref["events"] / summary["duration_us"] * 1e6)
    assert summary["other_streams"] == ["imus", "triggers"]


def test_nmnist_encoder_rebuilds_the_real_file(realdata):
    path = realdata / "sample_nmnist.bin"
    assert nmnist.encode(read(path).events) == path.read_bytes()


# --- synthetic recordings -------------------------------------------------------------------


def random_events(n, width, height, span_us, seed=0, dense=0):
    """Sorted random events; the first ``dense`` share one time and one row (EVT3 vectors)."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, span_us, n))
    x, y = rng.integers(0, width, n), rng.integers(0, height, n)
    t[:dense], y[:dense], x[:dense] = t[0], y[0], np.arange(dense) % width
    order = np.lexsort((x, y, t))
    return make_events(t[order], x[order], y[order], rng.integers(0, 2, n)[order])


def faery_write(path, events, width, height, version):
    out = np.zeros(len(events), dtype=faery.EVENTS_DTYPE)
    out["t"], out["x"], out["y"], out["on"] = events["t"], events["x"], events["y"], events["p"]
    stream = faery.events_stream_from_array(out, dimensions=(width, height))
    stream.to_file(path, version=version, zero_t0=False)


@pytest.mark.parametrize(
    ("version", "suffix", "span_us", "name"),
    [
        ("evt3", ".raw", 3 * (1 << 24), "evt3"),  # TIME_HIGH wraps every 2**24 us
        ("evt2", ".raw", (1 << 34) + 5_000_000, "evt2"),  # TIME_HIGH wraps every 2**34 us
        ("dat2", ".dat", 3 * (1 << 32), "dat"),  # the 32-bit time wraps every 2**32 us
    ],
)
def test_prophesee_formats_decode_an_independent_encoders_output(
    tmp_path, version, suffix, span_us, name
):
    events = random_events(30_000, 640, 480, span_us, dense=600)
    if version == "dat2":  # DAT has no room for a gap of 2**31 us or more: keep gaps short
        events["t"] = np.arange(len(events), dtype=np.int64) * (span_us // len(events))
    path = tmp_path / f"f{suffix}"
    faery_write(path, events, 640, 480, version)
    recording = read(path)
    assert recording.format == detect_format(path) == name
    assert (recording.width, recording.height) == (640, 480)
    assert np.array_equal(recording.events, events)
    chunks = list(iter_chunks(path, chunk_events=4096))
    assert np.array_equal(np.concatenate(chunks), events)


@pytest.mark.parametrize("suffix", [".aedat4", ".bin", ".npy", ".npz"])
def test_writers_round_trip(tmp_path, suffix):
    width, height = (34, 34) if suffix == ".bin" else (346, 260)
    span = 3 * (1 << 23) if suffix == ".bin" else 10**7  # N-MNIST's 23-bit time wraps twice
    events = random_events(5000, width, height, span, seed=1)
    path = tmp_path / f"rec{suffix}"
    write(path, events, width, height)
    recording = read(path)
    assert np.array_equal(recording.events, events)
    assert recording.format == detect_format(path) == suffix[1:].replace("bin", "nmnist")
    if suffix == ".npy":  # .npy has no room for the size: the largest coordinates plus one
        assert (recording.width, recording.height) == (
            int(events["x"].max()) + 1,
            int(events["y"].max()) + 1,
        )
    else:
        assert (recording.width, recording.height) == (width, height)
    assert np.array_equal(np.concatenate(list(iter_chunks(path, chunk_events=999))), events)


def test_nmnist_writes_a_marker_per_wrap(tmp_path):
    events = make_events([5, (1 << 23) + 7, 3 * (1 << 23)], [1, 2, 3], [4, 5, 6], [1, 0, 1])
    raw = np.frombuffer(nmnist.encode(events), dtype=np.uint8).reshape(-1, 5)
    assert raw[:, 1].tolist() == [4, 240, 5, 240, 240, 6]
    path = tmp_path / "wrap.bin"
    path.write_bytes(raw.tobytes())
    assert np.array_equal(read(path).events, events)


def test_empty_files(tmp_path):
    for suffix in (".aedat4", ".bin", ".npz"):
        path = tmp_path / f"empty{suffix}"
        write(path, make_events([], [], [], []), 34, 34)
        recording = read(path)
        assert len(recording.events) == 0 and (recording.width, recording.height) == (34, 34)
        assert list(iter_chunks(path)) == []
        summary = info(path)
        assert summary["events"] == 0 and summary["t_first_us"] is None
        assert summary["mean_rate_ev_s"] is None


def test_writers_reject_bad_events(tmp_path):
    events = random_events(10, 34, 34, 1000)
    with pytest.raises(EventError, match="x"):
        write(tmp_path / "a.bin", events, 20, 34)
    with pytest.raises(EventError, match="decrease"):
        write(tmp_path / "a.aedat4", events[::-1], 34, 34)
    with pytest.raises(ValueError, match="256x240"):
        nmnist.write(tmp_path / "a.bin", events, 300, 34)
    with pytest.raises(ValueError, match="no writer"):
        write(tmp_path / "a.raw", events, 34, 34, format="evt3")
    with pytest.raises(ValueError, match="writable format"):
        write(tmp_path / "a.txt", events, 34, 34)


def test_rechunk_exact_sizes():
    blocks = [np.arange(n) for n in (0, 5, 1, 0, 9, 3)]
    chunks = list(rechunk(iter(blocks), 4))
    assert [len(c) for c in chunks] == [4, 4, 4, 4, 2]
    assert np.concatenate(chunks).tolist() == np.concatenate(blocks).tolist()
    with pytest.raises(ValueError, match="positive"):
        list(iter_chunks("anything.bin", chunk_events=0))


# --- truncated and corrupt files -------------------------------------------------------------


def assert_format_error(path, offset, match):
    with pytest.raises(FormatError, match=match) as caught:
        read(path)
    assert caught.value.offset == offset
    assert str(path) in str(caught.value) and f"byte offset {offset}" in str(caught.value)


def test_truncated_nmnist(tmp_path):
    path = tmp_path / "cut.bin"
    path.write_bytes(nmnist.encode(random_events(100, 34, 34, 10**5))[:-2])
    assert_format_error(path, 5 * 99, "truncated")


def test_corrupt_nmnist_time_going_back(tmp_path):
    raw = bytearray(nmnist.encode(random_events(100, 34, 34, 10**5, seed=3)))
    raw[5 * 40 + 2] |= 0x7F  # event 40 jumps far ahead, so event 41 goes back
    path = tmp_path / "bad.bin"
    path.write_bytes(bytes(raw))
    assert_format_error(path, 5 * 41, "goes back")


@pytest.fixture
def prophesee_files(tmp_path):
    events = random_events(2000, 640, 480, 10**6, dense=200)
    paths = {}
    for version, suffix in (("evt2", ".raw"), ("evt3", ".raw"), ("dat2", ".dat")):
        paths[version] = tmp_path / f"{version}{suffix}"
        faery_write(paths[version], events, 640, 480, version)
    return paths


@pytest.mark.parametrize(("version", "word"), [("evt2", 4), ("evt3", 2), ("dat2", 8)])
def test_truncated_prophesee(prophesee_files, version, word):
    path = prophesee_files[version]
    data = path.read_bytes()
    path.write_bytes(data[:-1])
    assert_format_error(path, len(data) - word, "truncated")


def test_corrupt_evt2_word_type(prophesee_files):
    path = prophesee_files["evt2"]
    data = bytearray(path.read_bytes())
    at = len(data) - 4 * 50
    data[at + 3] = 0x50 | (data[at + 3] & 0x0F)  # type 0x5 does not exist
    path.write_bytes(bytes(data))
    assert_format_error(path, at, "word type 0x5")


def test_corrupt_evt3_word_type(prophesee_files):
    path = prophesee_files["evt3"]
    data = bytearray(path.read_bytes())
    at = len(data) - 2 * 50
    data[at + 1] = 0x90 | (data[at + 1] & 0x0F)  # type 0x9 does not exist
    path.write_bytes(bytes(data))
    assert_format_error(path, at, "word type 0x9")


def _outside_then_bad(version: str, data: bytearray) -> tuple[int, int]:
    """Put an event outside the 640x480 sensor and, later, an undecodable word or record into
    ``data`` (offsets counted from the end, which ends on a word); their offsets."""
    n = len(data)
    if version == "dat2":
        early, late = n - 8 * 40, n - 8 * 30
        data[early + 4 : early + 6] = (1000).to_bytes(2, "little")  # x = 1000
        data[late + 7] |= 0xF0  # polarity field 15
        return early, late
    word = 4 if version == "evt2" else 2
    kinds = (0, 1) if version == "evt2" else (2,)  # CD events; EVT3's ADDR_X
    early = next(at for at in range(n - word * 60, 0, -word) if data[at + word - 1] >> 4 in kinds)
    value = int.from_bytes(data[early : early + word], "little")
    if version == "evt2":
        value = (value & ~(0x7FF << 11)) | (1000 << 11)
    else:
        value = (value & ~0x7FF) | 1000
    data[early : early + word] = value.to_bytes(word, "little")
    late = n - word * 50
    data[late + word - 1] = 0x50 | (data[late + word - 1] & 0x0F)  # type 0x5: none in either
    if version == "evt3":
        data[late + 1] = 0x90 | (data[late + 1] & 0x0F)  # EVT 3.0 has a type 0x5; 0x9 it has not
    return early, late


@pytest.mark.parametrize("version", ["evt2", "evt3", "dat2"])
def test_the_first_problem_in_the_file_is_reported_whatever_the_blocks(prophesee_files, version):
    """Found by the fuzzer: an undecodable word was reported before an earlier event outside the
    stated sensor whenever both fell in one block, so the error depended on the block size."""
    path = prophesee_files[version]
    data = bytearray(path.read_bytes())
    early, _ = _outside_then_bad(version, data)
    path.write_bytes(bytes(data))
    module = {"evt2": evt2, "evt3": evt3, "dat2": dat}[version]
    for native in (True, False):
        for block_events in (1 << 20, 7):
            with pytest.raises(FormatError, match="outside the 640x480 sensor") as caught:
                collect(module.source(path, block_events=block_events, native=native))
            assert caught.value.offset == early, (native, block_events)


def test_corrupt_dat_polarity_and_coordinates(prophesee_files):
    path = prophesee_files["dat2"]
    good = path.read_bytes()
    at = len(good) - 8 * 30
    data = bytearray(good)
    data[at + 7] |= 0xF0  # polarity field 15
    path.write_bytes(bytes(data))
    assert_format_error(path, at, "polarity")
    data = bytearray(good)
    data[at + 4 : at + 6] = (1000).to_bytes(2, "little")  # x = 1000 on the stated 640x480 sensor
    path.write_bytes(bytes(data))
    assert_format_error(path, at, "outside the 640x480 sensor")


def test_truncated_and_corrupt_aedat4(tmp_path):
    path = tmp_path / "rec.aedat4"
    aedat4.write(path, random_events(50_000, 346, 260, 10**6), 346, 260)
    good = path.read_bytes()
    header_end = 18 + int.from_bytes(good[14:18], "little")
    packet_size = int.from_bytes(good[header_end + 4 : header_end + 8], "little")
    for cut, offset in [(10, 10), (header_end - 5, 14), (header_end + 20, header_end)]:
        path.write_bytes(good[:cut])
        assert_format_error(path, offset, "truncated|ends inside")
    second = header_end + 8 + packet_size  # the second packet's header
    data = bytearray(good)
    data[second + 8 : second + 40] = b"\xff" * 32
    path.write_bytes(bytes(data))
    assert_format_error(path, second, "corrupt packet")


def test_truncated_and_corrupt_npy(tmp_path):
    events = random_events(100, 34, 34, 1000)
    path = tmp_path / "rec.npy"
    npyfile.write(path, events, 34, 34)
    good = path.read_bytes()
    start = len(good) - 13 * 100
    path.write_bytes(good[: start + 13 * 60])
    assert_format_error(path, start + 13 * 60, "60 of the 100 events")
    bad = bytearray(good)
    bad[start + 13 * 70 + 12] = 127  # event 70's polarity (found by the fuzzer)
    path.write_bytes(bytes(bad))
    assert_format_error(path, start + 13 * 70, "polarity is 127, not 0 or 1")
    other = np.zeros(3, dtype=[("t", "<i8"), ("x", "<i4"), ("y", "<u2"), ("p", "u1")])
    other["x"][2] = -1  # no event column holds it
    np.save(path, other)
    assert_format_error(path, len(path.read_bytes()) - 15, "events.x: must be in 0..65535")
    np.save(path, np.arange(5))
    assert_format_error(path, 128, "structured")
    path.write_bytes(b"\x00" * 20)
    assert_format_error(path, 0, "neither a .npy nor a .npz")
    path = tmp_path / "rec.xyz"
    path.write_bytes(b"\x00" * 20)
    with pytest.raises(FormatError, match="unknown event file format"):
        read(path)


def test_stated_geometry_is_enforced(tmp_path):
    path = tmp_path / "small.npz"
    npyfile.write(path, random_events(50, 34, 34, 1000), 34, 34)
    with np.load(path) as archive:
        stored = archive["events"]
    np.savez(path, events=stored, width=np.int64(10), height=np.int64(34))
    with pytest.raises(FormatError, match="outside the 10x34 sensor"):
        read(path)


@pytest.mark.parametrize(
    "old, new, problem",
    [
        (b">EVTS<", b">IMUS<", "describes no event stream \\(its streams: imus\\)"),
        (b'"int">346<', b'"int">000<', "sizeX is '000', not in 1..65535"),
        (b"</dv>", b"</dx>", "its stream description is not XML"),
        (b'name="0"', b'name="x"', "names a stream 'x', not a stream id"),
    ],
)
def test_a_bad_aedat4_stream_description_is_a_format_error(tmp_path, old, new, problem):
    path = tmp_path / "rec.aedat4"
    aedat4.write(path, random_events(100, 346, 260, 1000), 346, 260)
    data = path.read_bytes()
    assert data.count(old) == 1 and len(old) == len(new)
    path.write_bytes(data.replace(old, new))
    assert_format_error(path, 18, f"bad header: .*{problem}")


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_bad_aedat4_packets_are_format_errors_at_their_offsets(tmp_path, codec):
    path = tmp_path / "rec.aedat4"
    written = np.zeros(20_000, dtype=faery.EVENTS_DTYPE)
    written["t"] = np.arange(20_000)
    stream = faery.events_stream_from_array(written, dimensions=(34, 34))
    stream.to_file(path, compression=(codec, 1))
    good = path.read_bytes()
    first = 18 + int.from_bytes(good[14:18], "little")
    second = first + 8 + int.from_bytes(good[first + 4 : first + 8], "little")
    cases = {
        "stream id 7 is not in the stream description": (first, b"\7", first),
        "do not decompress|ends early": (first + 8, b"\xff" * 8, first),  # its frame's magic
        "ends after .*: truncated": (second + 20, None, second),
    }
    for problem, (at, patch, offset) in cases.items():
        data = good[:at] if patch is None else good[:at] + patch + good[at + len(patch) :]
        path.write_bytes(data)
        assert_format_error(path, offset, problem)


@pytest.mark.parametrize(
    "header, shown",
    [
        (
            b"% evt 2.0\n% format EVT2;height=480;width=" + b"1" * 100,
            "a number of 100 digits x 480",
        ),
        (b"% evt 3.0\n% geometry 0x480", "0 x 480"),
        (b"% Version 2\n% Width 65536\n% Height 2", "65536 x 2"),
    ],
)
def test_a_stated_sensor_size_must_be_one_uint16_coordinates_address(tmp_path, header, shown):
    """A size no event could fill is refused at the header (found by fuzzing: a kernel took the
    huge one as an argument and raised OverflowError)."""
    is_dat = b"Version" in header
    path = tmp_path / ("rec.dat" if is_dat else "rec.raw")
    path.write_bytes(header + b"\n% end\n" + b"\x0c\x08" * is_dat + b"\x00" * 16)
    assert_format_error(path, 0, f"sensor size {shown} in the header is outside 1..65535")


def test_an_aedat4_header_that_would_crash_the_decoder_is_a_format_error(tmp_path):
    """A bad FlatBuffers offset in the header or a description that is not UTF-8 is a
    FormatError (found by fuzzing when the reader was ``aedat``, which aborted the process)."""
    path = tmp_path / "good.aedat4"
    aedat4.write(path, random_events(100, 34, 34, 1000), 34, 34)
    data = path.read_bytes()
    size = int.from_bytes(data[14:18], "little")
    xml = data.index(b"<dv")
    cases = {
        "its root offset points outside it": data[:18] + b"\xff\xff\x00\x00" + data[22:],
        "its stream description is not UTF-8": data[: xml + 1] + b"\xe1" + data[xml + 2 :],
        "the file ends inside its header": data[: 18 + size // 2],
    }
    for problem, corrupt in cases.items():
        path.write_bytes(corrupt)
        with pytest.raises(FormatError, match=problem):
            read(path)
    regression = Path(__file__).parent / "fuzz_regressions" / "aedat4" / "description-not-utf8"
    path.write_bytes(regression.read_bytes())
    with pytest.raises(FormatError, match="bad header"):
        read(path)


@pytest.mark.parametrize(
    "header",
    [
        b"{'descr': '<i8', 'fortran_order': False, 'shape': (",  # tokenize: EOF in a statement
        b"{'descr': '<i8', 'fortran_order': False, 'shape': )}",  # a syntax error
    ],
)
def test_an_unparsable_width_or_height_member_is_a_format_error(tmp_path, header):
    """numpy's header parser raised TokenError out of a ``width.npy`` member (found by fuzzing)."""
    path = tmp_path / "rec.npz"
    npyfile.write(path, random_events(50, 34, 34, 1000), 34, 34)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    padded = header.ljust(117) + b"\n"
    members["width.npy"] = b"\x93NUMPY\x01\x00" + len(padded).to_bytes(2, "little") + padded
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    assert_format_error(path, 0, "width.npy is unreadable: not a .npy array as numpy writes one")


def test_detect_format_needs_a_clue(tmp_path):
    path = tmp_path / "noversion.raw"
    path.write_bytes(b"% date today\n" + b"\x00" * 8)
    with pytest.raises(FormatError, match="evt2' or 'evt3"):
        detect_format(path)
    path = tmp_path / "header.dat"
    path.write_bytes(b"% Version 2\n\x0c\x08")
    assert detect_format(path) == "dat" and len(read(path).events) == 0
    with pytest.raises(ValueError, match="unknown format"):
        read(path, format="mp4")
    with pytest.raises(FormatError, match="EVT 3.0"):
        evt2.read(_evt3_file(tmp_path))
    assert dat.read(path).format == "dat" and evt3.read(_evt3_file(tmp_path)).format == "evt3"


def _evt3_file(tmp_path) -> Path:
    path = tmp_path / "tiny.raw"
    words = np.array([0x8001, 0x6005, 0x0003, 0x2804], dtype="<u2")
    path.write_bytes(b"% evt 3.0\n% end\n" + words.tobytes())
    return path


def test_evt3_vectors_and_state_across_chunks(tmp_path):
    """Hand-written words: a vector run that crosses every chunk boundary."""
    words = [0x8002, 0x6010, 0x0007, 0x3805, 0x4FFF, 0x5081, 0x2003, 0x6011, 0x0008, 0x4001]
    path = tmp_path / "vectors.raw"
    path.write_bytes(b"% evt 3.0\n" + np.array(words, dtype="<u2").tobytes())
    t0 = (2 << 12) | 0x10
    expected = (
        [(t0, x, 7, 1) for x in range(5, 17)]  # VECT_12 all set from base x 5
        + [(t0, 17, 7, 1), (t0, 24, 7, 1)]  # VECT_8 0x81 continues at x 17
        + [(t0, 3, 7, 0)]  # ADDR_X 3, polarity 0
        + [(t0 + 1, 25, 8, 1)]  # VECT_12 bit 0 continues at x 25 on row 8
    )
    events = read(path, format="evt3").events
    assert [tuple(e) for e in events.tolist()] == expected
    for n in (1, 2, 3):
        assert np.array_equal(np.concatenate(list(evt3.iter_chunks(path, n))), events)


# --- AEDAT4 from a live FIFO -----------------------------------------------------------------

FIFO_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, threading, time
    import numpy as np
    from spikeshot.events import formats

    source, fifo, keep = sys.argv[1], sys.argv[2], float(sys.argv[3])
    data = open(source, "rb").read()
    data = data[: int(len(data) * keep)]
    os.mkfifo(fifo)
    writes = []

    def feed():
        with open(fifo, "wb") as pipe:
            for i in range(0, len(data), 4096):
                pipe.write(data[i : i + 4096])
                pipe.flush()
                writes.append(time.monotonic())
                time.sleep(0.002)

    writer = threading.Thread(target=feed)
    writer.start()
    arrived, chunks = [], []
    for chunk in formats.iter_chunks(fifo, chunk_events=10_000):
        arrived.append(time.monotonic())
        chunks.append(chunk)
    writer.join()
    same = np.array_equal(np.concatenate(chunks), formats.read(source).events)
    print(json.dumps({"same": same, "first_chunk": arrived[0], "last_write": writes[-1]}))
    """
)


def run_fifo(source, fifo, keep=1.0):
    return subprocess.run(
        [sys.executable, "-c", FIFO_SCRIPT, str(source), str(fifo), str(keep)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_aedat4_from_a_fifo_leaves_the_callers_threads_free(tmp_path):
    source = tmp_path / "rec.aedat4"
    aedat4.write(source, random_events(30_000, 346, 260, 10**6, seed=5), 346, 260)
    # In one process, a reader that holds the GIL while it blocks on the pipe starves the thread
    # that feeds the pipe, and the script hangs (the timeout turns that into a failure). Here the
    # first chunk arrives while the writer thread is still writing.
    done = run_fifo(source, tmp_path / "live.aedat4")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["same"]
    assert result["first_chunk"] < result["last_write"]


def test_truncated_aedat4_from_a_fifo(tmp_path):
    source = tmp_path / "rec.aedat4"
    aedat4.write(source, random_events(30_000, 346, 260, 10**6, seed=6), 346, 260)
    done = run_fifo(source, tmp_path / "live.aedat4", keep=0.5)
    assert done.returncode != 0
    assert "FormatError" in done.stderr and "live.aedat4" in done.stderr
    data = source.read_bytes()
    cut, packet = len(data) // 2, 18 + int.from_bytes(data[14:18], "little")
    while packet + 8 + int.from_bytes(data[packet + 4 : packet + 8], "little") <= cut:
        packet += 8 + int.from_bytes(data[packet + 4 : packet + 8], "little")
    assert f"truncated (at byte offset {packet})" in done.stderr  # the packet the pipe cuts
