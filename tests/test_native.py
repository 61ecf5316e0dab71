"""The numba kernels against the numpy reference decoders they replace: random word streams of
every type (unknown types, events outside the sensor, bad fields, counter wrap-arounds, vector runs
past x = 65535) cut into random blocks, truncated files, the real recordings, and the fallback to
numpy where numba is not installed."""

import hashlib
import json
import re
import subprocess
import sys
import textwrap

import aedat
import numpy as np
import pytest

from spikeshot.events import aedat4, dat, evt2, evt3, nmnist
from spikeshot.events.array import as_events, empty
from spikeshot.events.recording import FormatError, collect, kernels, rechunk

pytest.importorskip("numba")

SENSORS = [None, (2048, 2048), (640, 480)]
EVT3_KINDS = [0x0, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0xA, 0xE, 0xF]
EVT3_WEIGHTS = [0.15, 0.35, 0.08, 0.1, 0.07, 0.08, 0.03, 0.06, 0.03, 0.03, 0.02]
EVT2_KINDS = [0x0, 0x1, 0x8, 0xA, 0xE, 0xF]
EVT2_WEIGHTS = [0.4, 0.4, 0.1, 0.04, 0.03, 0.03]


def outcome(decoder, blocks) -> list:
    """Each block's events, ending with the error (message, offset) where one is raised."""
    out = []
    for offset, data in blocks:
        try:
            out.append(decoder.decode(offset, data))
        except FormatError as error:
            out.append((str(error), error.offset))
            break
    return out


def state(decoder):
    skip = ("path", "sensor", "kernels", "reference")
    return {k: v for k, v in vars(decoder).items() if k not in skip}


def cut(data: bytes, record: int, rng, start: int = 100) -> list[tuple[int, bytes]]:
    """``data`` as (byte offset, bytes) blocks of whole records cut at random places."""
    n = len(data) // record
    edges = np.unique(np.concatenate(([0, n], rng.integers(0, n + 1, rng.integers(0, 6)))))
    pairs = zip(edges[:-1], edges[1:], strict=True)
    return [(start + record * a, data[record * a : record * b]) for a, b in pairs]


def assert_kernel_matches(make, data: bytes, record: int, rng):
    """The native decoder and the numpy reference give the same blocks, error and final state,
    and the kernel hands a block to the reference (to raise its error) only when it is bad."""
    native, reference = make(True), make(False)
    assert native.kernels is not None and reference.kernels is None
    handed = []
    native.reference = lambda *block, decode=native.reference: handed.append(1) or decode(*block)
    blocks = cut(data, record, rng)
    ours, theirs = outcome(native, blocks), outcome(reference, blocks)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        if isinstance(b, tuple):
            assert a == b
        else:
            assert a.dtype == b.dtype and np.array_equal(a, b)
    failed = bool(theirs) and isinstance(theirs[-1], tuple)
    assert len(handed) == failed
    if not failed:
        assert state(native) == state(reference)
    return theirs


def evt3_words(rng, n: int, unknown: bool) -> np.ndarray:
    kinds = rng.choice(EVT3_KINDS, n, p=EVT3_WEIGHTS)
    if unknown:
        kinds[rng.integers(n)] = rng.choice([0x1, 0x9, 0xB, 0xC, 0xD])
    return ((kinds << 12) | rng.integers(0, 1 << 12, n)).astype("<u2")


def evt2_words(rng, n: int, unknown: bool) -> np.ndarray:
    kinds = rng.choice(EVT2_KINDS, n, p=EVT2_WEIGHTS).astype(np.uint64)
    if unknown:
        kinds[rng.integers(n)] = rng.choice([0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x9, 0xB, 0xC, 0xD])
    return ((kinds << 28) | rng.integers(0, 1 << 28, n, dtype=np.uint64)).astype("<u4")


def dat_records(rng, n: int, bad: bool) -> np.ndarray:
    t = np.cumsum(rng.integers(0, 1 << 30, n, dtype=np.uint64)) % (1 << 32)  # wraps every few
    x, y = rng.integers(0, 1 << 14, n, dtype=np.uint64), rng.integers(0, 1 << 14, n, np.uint64)
    p = rng.integers(0, 2, n, dtype=np.uint64)
    if bad:
        p[rng.integers(n)] = rng.integers(2, 16)
    return np.stack([t, x | y << 14 | p << 28], axis=1).astype("<u4")


def nmnist_records(rng, n: int, bad: bool) -> np.ndarray:
    """Time-ordered records with wrap markers (y = 240); ``bad``: one time goes back."""
    raw = rng.integers(0, 256, (n, 5), dtype=np.uint8)
    raw[:, 1] = np.where(rng.random(n) < 0.02, 240, rng.integers(0, 240, n))
    t = np.sort(rng.integers(1, 1 << 23, n))  # ordered, and more so after each marker
    if bad:
        i = rng.integers(1, n)
        raw[i - 1 : i + 1, 1] = 7
        t[i] = t[i - 1] - 1
    raw[:, 2] = (raw[:, 2] & 0x80) | (t >> 16)
    raw[:, 3], raw[:, 4] = (t >> 8) & 0xFF, t & 0xFF
    return raw


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("sensor", SENSORS)
def test_evt3_kernel_matches_the_reference(seed, sensor):
    rng = np.random.default_rng(seed)
    words = evt3_words(rng, 4000, unknown=seed % 3 == 0)
    results = assert_kernel_matches(
        lambda native: evt3._Decoder("f.raw", sensor, native), words.tobytes(), 2, rng
    )
    assert results  # something was decoded or raised


@pytest.mark.parametrize("kind", range(16))
def test_evt3_kernel_matches_on_every_word_type(kind):
    rng = np.random.default_rng(kind)
    prefix = [0x8123, 0x6456, 0x0100, 0x3005]  # time, row and vector base set
    words = np.array([*prefix, (kind << 12) | 0x9A5, 0x2001, kind << 12], dtype="<u2")
    for sensor in SENSORS:
        assert_kernel_matches(
            lambda native, s=sensor: evt3._Decoder("f.raw", s, native), words.tobytes(), 2, rng
        )


def test_evt3_kernel_matches_past_x_65535():
    """A run of 6,000 full VECT_12 words from x = 2000 passes x = 65535 (stored modulo 2**16)."""
    words = np.array([0x8001, 0x0005, 0x37D0] + [0x4FFF] * 6000, dtype="<u2")
    rng = np.random.default_rng(0)
    blocks = assert_kernel_matches(
        lambda native: evt3._Decoder("f.raw", None, native), words.tobytes(), 2, rng
    )
    x = np.concatenate(blocks)["x"].astype(np.int64)
    assert len(x) == 72_000 and x.min() == 0 and x.max() == 65535


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("sensor", SENSORS)
def test_evt2_kernel_matches_the_reference(seed, sensor):
    rng = np.random.default_rng(seed)
    words = evt2_words(rng, 4000, unknown=seed % 3 == 0)
    assert_kernel_matches(
        lambda native: evt2._Decoder("f.raw", sensor, native), words.tobytes(), 4, rng
    )


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("sensor", [None, (1 << 14, 1 << 14), (12000, 15000)])
def test_dat_kernel_matches_the_reference(seed, sensor):
    rng = np.random.default_rng(seed)
    records = dat_records(rng, 3000, bad=seed % 3 == 0)
    results = assert_kernel_matches(
        lambda native: dat._Decoder("f.dat", sensor, native), records.tobytes(), 8, rng
    )
    if sensor is None and seed % 3:  # the 32-bit time wrapped and was unwrapped
        assert np.concatenate(results)["t"][-1] > 1 << 32


@pytest.mark.parametrize("seed", range(12))
def test_nmnist_kernel_matches_the_reference(seed):
    rng = np.random.default_rng(seed)
    records = nmnist_records(rng, 3000, bad=seed % 3 == 0)
    results = assert_kernel_matches(
        lambda native: nmnist._Decoder("f.bin", native), records.tobytes(), 5, rng
    )
    assert isinstance(results[-1], tuple) == (seed % 3 == 0)


def _evt_file(path, version: str, words: np.ndarray):
    path.write_bytes(f"% evt {version}\n% end\n".encode() + words.tobytes())


@pytest.mark.parametrize("drop", [0, 1, 3])
@pytest.mark.parametrize("name", ["evt3", "evt2", "dat", "nmnist"])
def test_files_read_the_same_natively(tmp_path, name, drop):
    """Whole files, valid or truncated inside a record, and small chunks: both paths agree."""
    rng = np.random.default_rng(drop)
    path = tmp_path / f"f.{name}"
    if name == "evt3":
        _evt_file(path, "3.0", evt3_words(rng, 20_000, unknown=False))
    elif name == "evt2":
        _evt_file(path, "2.0", evt2_words(rng, 20_000, unknown=False))
    elif name == "dat":
        header = b"% Width 16384\n% Height 16384\n\x0c\x08"
        path.write_bytes(header + dat_records(rng, 9000, bad=False).tobytes())
    else:
        path.write_bytes(nmnist_records(rng, 9000, bad=False).tobytes())
    if drop:
        path.write_bytes(path.read_bytes()[:-drop])
    module = {"evt3": evt3, "evt2": evt2, "dat": dat, "nmnist": nmnist}[name]
    for chunk in (1 << 20, 777):
        results = [read_all(module, path, chunk, native) for native in (True, False)]
        assert results[0] == results[1]
        assert ("truncated" in results[0]) == bool(drop)


def read_all(module, path, chunk: int, native: bool) -> str:
    """A digest of the file's events read in ``chunk``-sized blocks, or its error."""
    try:
        events = np.concatenate([*module.source(path, chunk, native).blocks, empty()])
    except FormatError as error:
        return str(error)
    return hashlib.sha256(events.tobytes()).hexdigest()


REAL = {"evt3_sample.raw": evt3, "evt2_sample.raw": evt2, "sample_ncars.dat": dat}
REAL["sample_nmnist.bin"] = nmnist


@pytest.mark.parametrize("name", REAL)
def test_real_recordings_read_the_same_natively(realdata, name):
    module = REAL[name]
    whole = collect(module.source(realdata / name, native=False)).events
    assert np.array_equal(collect(module.source(realdata / name)).events, whole)
    chunks = list(rechunk(module.source(realdata / name, 777).blocks, 777))
    assert np.array_equal(np.concatenate(chunks), whole)


def aedat_packet(records: np.ndarray) -> bytes:
    """A decompressed AEDAT4 event packet holding ``records`` (``aedat4.RECORD_DTYPE``): the size
    prefix, the root offset, b"EVTS", a vtable of one field, the table and the vector."""
    body = (16).to_bytes(4, "little") + b"EVTS"
    body += b"".join(v.to_bytes(2, "little") for v in (6, 8, 4)) + b"\0\0"  # vtable at 8
    body += (8).to_bytes(4, "little") + (8).to_bytes(4, "little")  # table at 16: vector at 28
    body += b"\0" * 4 + len(records).to_bytes(4, "little") + records.tobytes()
    return len(body).to_bytes(4, "little") + body


def decode_both(buf: bytes, size=(64, 48)):
    """What the kernel and the numpy reference make of the packet ``buf``: events, or the
    reference's ValueError and the kernel's (0, False)."""
    out = np.empty(len(buf) // 16 + 3, dtype=aedat4.EVENT_DTYPE)
    n, ok = kernels().aedat(np.frombuffer(buf, np.uint8), *size, out, 3)
    try:
        reference = aedat4.convert(aedat4.records(buf), size)
    except ValueError as error:
        assert (n, ok) == (0, False), str(error)
        return str(error)
    assert ok and np.array_equal(out[3 : 3 + n], reference)
    return reference


def test_aedat4_kernel_decodes_packets_as_the_reference_on_random_corruptions():
    rng = np.random.default_rng(7)
    records = np.zeros(40, dtype=aedat4.RECORD_DTYPE)
    records["t"] = np.sort(rng.integers(0, 10**6, 40))
    records["x"], records["y"] = rng.integers(0, 64, 40), rng.integers(0, 48, 40)
    records["p"] = rng.integers(0, 2, 40)
    good = aedat_packet(records)
    assert np.array_equal(decode_both(good)["t"], records["t"])
    for field, value, problem in [
        ("t", -5, "event #9 has the time -5"),
        ("p", 2, "event #9 has the polarity byte 2"),
        ("x", 64, "x=64, y=.* lies outside the 64x48 sensor"),
        ("y", 48, "y=48 lies outside the 64x48 sensor"),
    ]:
        bad = records.copy()
        bad[field][9] = value
        assert re.search(problem, decode_both(aedat_packet(bad)))
    outcomes = set()
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rng.integers(1, 4)):  # mostly the FlatBuffer's offsets, some records
            at = rng.integers(0, 40) if rng.random() < 0.8 else rng.integers(0, len(data))
            data[at] = rng.integers(0, 256)
        if rng.random() < 0.1:
            data = data[: rng.integers(0, len(data))]
        result = decode_both(bytes(data))
        outcomes.add(result if isinstance(result, str) else "events")
    assert "events" in outcomes and len(outcomes) > 8  # both ways taken, many different errors


AEDAT4_FILES = {"lz4": ("lz4", 1), "zstd": ("zstd", 1)}


@pytest.mark.parametrize("codec", AEDAT4_FILES)
def test_aedat4_reads_as_the_aedat_package_reads(tmp_path, codec):
    faery = pytest.importorskip("faery")
    rng = np.random.default_rng(3)
    written = np.zeros(30_000, dtype=faery.EVENTS_DTYPE)
    written["t"] = np.sort(rng.integers(0, 10**6, len(written)))
    written["x"], written["y"] = rng.integers(0, 346, len(written)), rng.integers(0, 260, 30_000)
    written["on"] = rng.integers(0, 2, len(written)).astype(bool)
    path = tmp_path / "rec.aedat4"
    stream = faery.events_stream_from_array(written, dimensions=(346, 260))
    stream.to_file(path, compression=AEDAT4_FILES[codec])
    assert_reads_as_aedat(path)


def test_the_real_aedat4_recording_reads_as_the_aedat_package_reads(realdata):
    assert_reads_as_aedat(realdata / "sample.aedat4")


def assert_reads_as_aedat(path):
    theirs = as_events(
        np.concatenate([p["events"] for p in aedat.Decoder(str(path)) if "events" in p])
    )
    for native in (True, False):
        for block_events in (1 << 20, 777):
            blocks = list(aedat4.source(path, block_events, native).blocks)
            assert np.array_equal(np.concatenate(blocks), theirs)
            assert max(map(len, blocks)) <= max(block_events, 8192)  # whole packets


def test_kernels_load_lazily():
    script = textwrap.dedent(
        """
        import sys
        import spikeshot.events, spikeshot.events.formats
        print("numba" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]
    assert kernels() is not None


NO_NUMBA = textwrap.dedent(
    """
    import hashlib, importlib.abc, json, sys

    class NoNumba(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "numba" or name.startswith("numba."):
                raise ImportError(f"numba is hidden in this test ({name})")
            return None

    sys.meta_path.insert(0, NoNumba())
    from spikeshot.events import formats, recording

    read = {p: formats.read(p).events.tobytes() for p in sys.argv[1:]}
    digests = {p: hashlib.sha256(data).hexdigest() for p, data in read.items()}
    print(json.dumps({"kernels": recording.kernels() is not None, "digests": digests}))
    """
)


def test_readers_fall_back_to_numpy_without_numba(tmp_path):
    rng = np.random.default_rng(7)
    _evt_file(tmp_path / "a.raw", "3.0", evt3_words(rng, 5000, unknown=False))
    _evt_file(tmp_path / "b.raw", "2.0", evt2_words(rng, 5000, unknown=False))
    (tmp_path / "c.bin").write_bytes(nmnist_records(rng, 3000, bad=False).tobytes())
    paths = [str(p) for p in (tmp_path / "a.raw", tmp_path / "b.raw", tmp_path / "c.bin")]
    done = subprocess.run([sys.executable, "-c", NO_NUMBA, *paths], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["kernels"] is False
    from spikeshot.events import formats

    for path in paths:
        ours = hashlib.sha256(formats.read(path).events.tobytes()).hexdigest()
        assert result["digests"][path] == ours
