"""Where events come from: files, folders of support examples, numpy arrays, real-time replay of a
file, a live DV network stream and a camera.

A ``Source`` is the events of one camera: its sensor size and its events as time-ordered chunks
(``EVENT_DTYPE`` arrays), read once. Files are read lazily in chunks when their sensor size is known
up front (AEDAT4 states it; or pass ``sensor=``); other formats are read whole, because their size
rule needs every event (``spikeshot.events.recording``).

Live sources (``dv_network``, ``camera``) open, poll and close dv-processing's reader on a thread
of their own and hand the chunks over through a bounded queue, so that no caller's thread (or
event loop) ever waits inside dv-processing; ``Source.close()`` stops that thread, which
disconnects. Their timestamps are the camera's clock. dv-processing is the ``camera`` extra,
imported only when a live source is opened.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from spikeshot.clients.errors import SourceError
from spikeshot.events import aedat4
from spikeshot.events.array import Limits, as_events, validate
from spikeshot.events.formats import detect_format, iter_chunks, read
from spikeshot.events.recording import Recording, concat, rechunk

CHUNK_EVENTS = 100_000  # events per chunk of a file or array
EVENT_SUFFIXES = (".aedat4", ".bin", ".raw", ".dat", ".npy", ".npz")
POLL_S = 0.05  # how often waiting threads look for a stop request
DV_POLL_S = 0.002  # pause between polls of a dv-processing reader that had nothing new

Sensor = tuple[int, int]


class Source:
    """Events of one camera: ``width`` x ``height`` and time-ordered chunks, read once. ``close``
    releases what the source holds (a thread, a connection); it is safe to call twice."""

    def __init__(
        self,
        width: int,
        height: int,
        chunks: Iterable[np.ndarray],
        *,
        name: str = "",
        close: Callable[[], None] | None = None,
    ):
        if not (1 <= int(width) <= 65535 and 1 <= int(height) <= 65535):
            raise ValueError(f"sensor size must be in 1..65535, got {width}x{height}")
        self.width, self.height, self.name = int(width), int(height), name
        self._chunks, self._close = chunks, close

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self._chunks)

    def close(self) -> None:
        if self._close is not None:
            self._close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Source({self.name or 'events'}, {self.width}x{self.height})"


def _split(events: np.ndarray, chunk_events: int) -> Iterator[np.ndarray]:
    for i in range(0, len(events), chunk_events):
        yield events[i : i + chunk_events]


def from_array(
    events: np.ndarray,
    sensor: Sensor | None = None,
    *,
    chunk_events: int = CHUNK_EVENTS,
    name: str = "array",
) -> Source:
    """Events of an array (``EVENT_DTYPE`` or another library's field names), sorted by time if
    they are not. Without ``sensor`` the size is the largest coordinates plus one, which maps
    them to the model's sensor differently from the camera's true size: pass it when known."""
    events = validate(as_events(events), Limits(allow_empty=True), sort=True)
    if sensor is None:
        if not len(events):
            raise ValueError(f"{name}: no events, so no sensor size to infer: pass sensor=")
        sensor = (int(events["x"].max()) + 1, int(events["y"].max()) + 1)
    return Source(*sensor, _split(events, chunk_events), name=name)


def from_recording(recording: Recording, name: str = "recording") -> Source:
    """A whole recording (``spikeshot.events.read``'s result) on its own sensor."""
    return from_array(recording.events, (recording.width, recording.height), name=name)


def from_chunks(chunks: Iterable[np.ndarray], sensor: Sensor, name: str = "chunks") -> Source:
    """Time-ordered chunks of events (any iterable of arrays) from a ``sensor`` (width, height)."""
    return Source(*sensor, (as_events(c) for c in chunks), name=name)


def from_file(
    path: str | os.PathLike,
    *,
    sensor: Sensor | None = None,
    format: str | None = None,
    chunk_events: int = CHUNK_EVENTS,
) -> Source:
    """The events of a file in any format ``spikeshot.events`` reads (or an AEDAT4 FIFO)."""
    name = os.fspath(path)
    if not (os.path.isfile(path) or (os.path.exists(path) and aedat4.is_pipe(path))):
        raise FileNotFoundError(f"{name}: no such file")
    format = format or detect_format(path)
    if sensor is not None:
        return Source(*sensor, iter_chunks(path, chunk_events, format), name=name)
    if format == "aedat4":
        opened = aedat4.source(path)
        return Source(*opened.sensor, rechunk(opened.blocks, chunk_events), name=name)
    if aedat4.is_pipe(path):
        raise ValueError(f"{name}: a FIFO of {format} states no sensor size: pass sensor=")
    recording = read(path, format)
    return from_array(
        recording.events, (recording.width, recording.height), chunk_events=chunk_events, name=name
    )


def as_source(data, sensor: Sensor | None = None) -> Source:
    """``data`` as a ``Source``: a Source, a file path, a ``Recording``, an event array, or an
    iterable of event arrays (which needs ``sensor``)."""
    if isinstance(data, Source):
        return data
    if isinstance(data, str | os.PathLike):
        return from_file(data, sensor=sensor)
    if isinstance(data, Recording):
        return from_recording(data)
    if isinstance(data, np.ndarray):
        return from_array(data, sensor)
    if isinstance(data, Iterable) and not isinstance(data, bytes | bytearray):
        if sensor is None:
            raise ValueError("an iterable of event chunks needs sensor=(width, height)")
        return from_chunks(data, sensor)
    raise TypeError(
        f"expected events as a file path, an event array, a Recording, a Source or "
        f"an iterable of event arrays, got {type(data).__name__}"
    )


def support_folder(root: str | os.PathLike) -> list[tuple[str, Path]]:
    """The support set of a folder with one sub-folder per class, named by its label, holding that
    class's recordings (files ending in one of ``EVENT_SUFFIXES``; other files are ignored):
    ``(label, path)`` pairs sorted by label, then file name."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder (expected one sub-folder per class)")
    examples = []
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{root}: no class sub-folders (expected {root}/<label>/<recordings>)")
    for folder in classes:
        files = sorted(
            p
            for p in folder.iterdir()
            if p.suffix.lower() in EVENT_SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            raise ValueError(
                f"{folder}: no recordings (files ending in {', '.join(EVENT_SUFFIXES)})"
            )
        examples += [(folder.name, f) for f in files]
    return examples


def slices(chunks: Iterable[np.ndarray], duration_us: int) -> Iterator[tuple[np.ndarray, int]]:
    """Re-cut time-ordered chunks into the slices ``[t0 + k d, t0 + (k + 1) d)`` of ``d =
    duration_us`` (``t0`` the first timestamp): ``(events, end_us)`` for each slice that holds
    events, as soon as an event at or past its end arrives (or the chunks end)."""
    if duration_us < 1:
        raise ValueError(f"duration_us must be >= 1, got {duration_us}")
    t0 = end = None
    pending: list[np.ndarray] = []
    for block in chunks:
        if not len(block):
            continue
        if t0 is None:
            t0 = int(block["t"][0])
            end = t0 + duration_us
        while len(block):
            if block["t"][-1] < end:
                pending.append(block)
                break
            cut = int(np.searchsorted(block["t"], end))
            if cut:
                pending.append(block[:cut])
            if pending:
                yield concat(pending), end
                pending = []
            block = block[cut:]
            if len(block):  # the slice that holds the next event
                end = t0 + ((int(block["t"][0]) - t0) // duration_us + 1) * duration_us
    if pending:
        yield concat(pending), end


def replay(
    source: Source,
    *,
    rate: float = 1.0,
    chunk_us: int = 10_000,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Source:
    """``source`` at its recorded pace (``rate`` times faster), in chunks of ``chunk_us``
    microseconds of recording, each handed over once its time has passed on ``clock`` (seconds;
    ``sleep`` waits), as a camera would."""
    if not rate > 0:
        raise ValueError(f"rate must be > 0, got {rate}")

    def paced() -> Iterator[np.ndarray]:
        start = t0 = None
        for events, end_us in slices(source, chunk_us):
            if start is None:
                start, t0 = clock(), int(events["t"][0])
            delay = start + (end_us - t0) / 1e6 / rate - clock()
            if delay > 0:
                sleep(delay)
            yield events

    return Source(source.width, source.height, paced(), name=source.name, close=source.close)


def record(source: Source, seconds: float) -> np.ndarray:
    """The events of the first ``seconds`` of ``source`` (on its clock) as one array; then closes
    it. For a live source this takes ``seconds`` of real time."""
    parts, stop = [], None
    try:
        for chunk in source:
            if not len(chunk):
                continue
            if stop is None:
                stop = int(chunk["t"][0]) + round(seconds * 1e6)
            cut = int(np.searchsorted(chunk["t"], stop))
            parts.append(chunk[:cut])
            if cut < len(chunk):
                break
    finally:
        source.close()
    return concat(parts)


class _Worker:
    """Runs ``produce(stop)`` on a daemon thread and hands its items over through a bounded queue;
    ``produce`` returns when ``stop`` is set. Errors reach the reader."""

    _END = object()

    def __init__(
        self, produce: Callable[[threading.Event], Iterator], name: str, maxsize: int = 64
    ):
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(produce,), name=name, daemon=True)
        self._thread.start()

    def _run(self, produce) -> None:
        try:
            for item in produce(self._stop):
                if not self._put((True, item)):
                    return
            self._put((True, self._END))
        except BaseException as error:  # handed to the reader, who raises it
            self._put((False, error))

    def _put(self, entry) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def next(self, timeout: float | None = None):
        """The next item, or ``_END``; raises the producer's error, or ``TimeoutError``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                ok, item = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                if self._stop.is_set() or not self._thread.is_alive() and self._queue.empty():
                    return self._END
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"no answer within {timeout} s") from None
                continue
            if not ok:
                self._stop.set()
                raise item
            return item

    def __iter__(self) -> Iterator:
        while (item := self.next()) is not self._END:
            yield item
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()


def _live(open_reader: Callable[[], object], what: str, open_timeout: float) -> Source:
    """A Source over a dv-processing reader (network or camera), polled on a worker thread that
    opens it, and closes it when stopped or when the stream ends."""

    def produce(stop: threading.Event) -> Iterator:
        try:
            reader = open_reader()
        except Exception as error:  # dv-processing raises RuntimeError; drop its source location
            raise SourceError(f"{what}: cannot open: {str(error).split(' [', 1)[0]}") from None
        if not reader.isEventStreamAvailable():
            raise SourceError(f"{what} serves no event stream")
        yield tuple(reader.getEventResolution())
        while not stop.is_set():
            batch = reader.getNextEventBatch()
            if batch is None:
                if not reader.isRunning():
                    return
                time.sleep(DV_POLL_S)
            elif batch.size():
                yield as_events(batch.numpy())

    worker = _Worker(produce, f"spikeshot {what}")
    try:
        size = worker.next(open_timeout)
    except TimeoutError:
        worker.stop()
        raise SourceError(f"{what}: no stream description within {open_timeout} s") from None
    if size is _Worker._END:
        raise SourceError(f"{what}: the stream ended before it described itself")
    return Source(*size, worker, name=what, close=worker.stop)


def _dv():
    try:
        import dv_processing
    except ImportError:
        raise ImportError(
            "live sources need dv-processing: pip install 'spikeshot[camera]'"
        ) from None
    return dv_processing


def dv_network(address: str, port: int | None = None, *, open_timeout: float = 10.0) -> Source:
    """A live event stream served by DV software or a camera process (dv-processing's
    ``NetworkWriter``): over TCP at ``address:port``, or the Unix socket at path ``address`` when
    ``port`` is None."""
    dv = _dv()
    if port is None:
        return _live(
            lambda: dv.io.NetworkReader(dv.Path(address)), f"dv+unix://{address}", open_timeout
        )
    return _live(
        lambda: dv.io.NetworkReader(address, int(port)), f"dv://{address}:{port}", open_timeout
    )


def camera(serial: str | None = None, *, open_timeout: float = 10.0) -> Source:
    """The event stream of a camera connected to this machine (iniVation DVXplorer, DAVIS, ...)
    through dv-processing: the one with ``serial``, or the first found."""
    dv = _dv()
    if not dv.io.camera.discover():
        raise SourceError("no camera found: dv-processing sees no connected iniVation camera")
    what = f"camera {serial}" if serial else "camera"
    return _live(
        lambda: dv.io.camera.open(serial) if serial else dv.io.camera.open(), what, open_timeout
    )


def open_source(
    spec: str,
    *,
    sensor: Sensor | None = None,
    realtime: bool = False,
    rate: float = 1.0,
    chunk_us: int = 10_000,
) -> Source:
    """A source named by a string: ``camera`` or ``camera:SERIAL``, ``dv://HOST:PORT``,
    ``dv+unix://PATH``, or a file (replayed at its recorded pace times ``rate`` when
    ``realtime``; live sources are real-time anyway)."""
    if spec == "camera" or spec.startswith("camera:"):
        return camera(spec.partition(":")[2] or None)
    if spec.startswith("dv+unix://"):
        return dv_network(spec.removeprefix("dv+unix://"))
    if spec.startswith("dv://"):
        parts = urlsplit(spec)
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise ValueError(f"expected dv://HOST:PORT, got {spec!r}")
        return dv_network(parts.hostname, port)
    source = from_file(spec, sensor=sensor)
    return replay(source, rate=rate, chunk_us=chunk_us) if realtime else source
