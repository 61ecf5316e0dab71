"""Events and frames -> the request messages of ``spikeshot.proto``.

Events travel in the wire codec's columns (``spikeshot.events.codec``), at most ``MESSAGE_EVENTS``
per message (13 bytes an event: about 2.6 MB, well under the server's default 16 MB limit); the
messages that carry them are ``wire.EventChunk``s, serialised straight from the event array.
Frames (a 4-D ``[bins, 2, height, width]`` array of counts in the model's geometry) travel whole.
The request generators open their sources lazily, as the call consumes them, and close them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

from spikeshot.clients.sources import Sensor, Source, as_source
from spikeshot.clients.wire import EventChunk
from spikeshot.v1 import spikeshot_pb2 as pb

MESSAGE_EVENTS = 200_000
# The wire's frame types (``FrameType``) and the values they carry, for client and server alike.
FRAME_DTYPES = {pb.FRAME_TYPE_FLOAT32: np.dtype("<f4"), pb.FRAME_TYPE_UINT16: np.dtype("<u2")}

OnSent = Callable[[int], None] | None  # called with the event count of each message sent


def is_frames(data) -> bool:
    """True for a 4-D numeric array (frames), not an event array."""
    return isinstance(data, np.ndarray) and data.dtype.names is None and data.ndim == 4


def frames_message(frames: np.ndarray) -> pb.Frames:
    """Frames ``[bins, 2, height, width]``: uint16 counts travel as such, anything else as
    float32."""
    if not is_frames(frames) or frames.shape[1] != 2:
        raise ValueError(
            f"frames must be a [bins, 2, height, width] array, got shape "
            f"{getattr(frames, 'shape', None)}"
        )
    kind = pb.FRAME_TYPE_UINT16 if frames.dtype == np.uint16 else pb.FRAME_TYPE_FLOAT32
    dtype = FRAME_DTYPES[kind]
    bins, _, height, width = frames.shape
    return pb.Frames(
        bins=bins,
        height=height,
        width=width,
        type=kind,
        data=np.ascontiguousarray(frames, dtype=dtype).tobytes(),
    )


def event_messages(source: Source, on_sent: OnSent = None) -> Iterator[EventChunk]:
    """The query or stream messages of a source's non-empty chunks, split to
    ``MESSAGE_EVENTS``."""
    for chunk in source:
        for i in range(0, len(chunk), MESSAGE_EVENTS):
            piece = chunk[i : i + MESSAGE_EVENTS]
            yield EventChunk.of(piece, source.width, source.height)
            if on_sent is not None:
                on_sent(len(piece))


def _with_last(items: Iterator) -> Iterator[tuple[object, bool]]:
    """``(item, is_last)`` for each item."""
    previous = sentinel = object()
    for item in items:
        if previous is not sentinel:
            yield previous, False
        previous = item
    if previous is not sentinel:
        yield previous, True


def adapt_requests(
    session_id: str,
    examples: Iterable[tuple[str, object, Sensor | None]],
    replace_support: bool = False,
    on_sent: OnSent = None,
) -> Iterator[pb.AdaptRequest | EventChunk]:
    """The Adapt stream: the header, then each ``(label, data, sensor)`` example as chunks (data
    as for ``sources.as_source``, or frames)."""
    yield pb.AdaptRequest(
        header=pb.AdaptHeader(session_id=session_id, replace_support=replace_support)
    )
    for label, data, sensor in examples:
        if is_frames(data):
            yield pb.AdaptRequest(
                example=pb.ExampleChunk(
                    label=label, frames=frames_message(data), end_of_example=True
                )
            )
            continue
        with as_source(data, sensor) as source:
            sent = False
            for message, last in _with_last(event_messages(source, on_sent)):
                yield message._replace(label=label, end_of_example=last)
                sent = True
        if not sent:
            raise ValueError(f"support example {label!r} ({source.name}) holds no events")


def classify_header(session_id: str, candidates: Iterable[str] = ()) -> pb.ClassifyRequest:
    """The first message of Classify."""
    return pb.ClassifyRequest(
        header=pb.ClassifyHeader(session_id=session_id, candidates=list(candidates))
    )


def classify_requests(
    session_id: str,
    data,
    sensor: Sensor | None = None,
    candidates: Iterable[str] = (),
    on_sent: OnSent = None,
) -> Iterator[pb.ClassifyRequest | EventChunk]:
    """The Classify stream: the header, then the query's event chunks or frames."""
    yield classify_header(session_id, candidates)
    if is_frames(data):
        yield pb.ClassifyRequest(frames=frames_message(data))
        return
    with as_source(data, sensor) as source:
        sent = False
        for message in event_messages(source, on_sent):
            yield message
            sent = True
    if not sent:
        raise ValueError(f"the query ({source.name}) holds no events")


def stream_config(
    session_id: str, window_us: int = 0, hop_us: int = 0, candidates: Iterable[str] = ()
) -> pb.ClassifyStreamRequest:
    """The first message of ClassifyStream (0: the model card's window; a hop equal to it)."""
    return pb.ClassifyStreamRequest(
        config=pb.StreamConfig(
            session_id=session_id, window_us=window_us, hop_us=hop_us, candidates=list(candidates)
        )
    )


def stream_requests(
    session_id: str,
    data,
    sensor: Sensor | None = None,
    window_us: int = 0,
    hop_us: int = 0,
    candidates: Iterable[str] = (),
    on_sent: OnSent = None,
) -> Iterator[pb.ClassifyStreamRequest | EventChunk]:
    """The ClassifyStream stream: the config, then the events as they come."""
    yield stream_config(session_id, window_us, hop_us, candidates)
    with as_source(data, sensor) as source:
        yield from event_messages(source, on_sent)
