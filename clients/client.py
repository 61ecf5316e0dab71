"""The blocking client: ``Client`` holds the connection, ``Session`` one session of the server.

    with Client("127.0.0.1:50051") as client:
        session = client.create_session(ways=2)
        session.add_support("cup", "cup.aedat4")
        session.add_support("ball", "ball.aedat4")
        session.adapt()
        print(session.classify("query.aedat4").label)
        for window in session.classify_stream(sources.replay(sources.from_file("live.aedat4"))):
            print(window.start_us, window.label)

Events may be a file path (any format ``spikeshot.events`` reads), an event array, a
``Recording``, a ``sources.Source`` or an iterable of event arrays (with ``sensor=``); support
examples and queries may also be frames (``messages.is_frames``). Requests stream their sources
from gRPC's sending thread, never the caller's. A source that fails while sending cancels the call,
so the server never takes a half-sent example or query for a whole one, and its error is raised.
Calls that fail raise ``ServerError`` (``ServerUnavailable`` when the server is out of reach).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc

from spikeshot.clients import messages, wire
from spikeshot.clients.connection import DEFAULT_TARGET, Connection
from spikeshot.clients.errors import from_rpc_error
from spikeshot.clients.messages import OnSent
from spikeshot.clients.results import (
    AdaptResult,
    ModelInfo,
    Prediction,
    ServerLimits,
    SessionInfo,
    WindowPrediction,
    export_request,
    settings_message,
)
from spikeshot.clients.sources import Sensor, Source, as_source, support_folder
from spikeshot.v1 import spikeshot_pb2 as pb

ATTACH_S = 10.0  # how long a failed request stream waits for its call object before giving up


class _Requests:
    """A request iterator that keeps the error its messages raise and cancels the call, rather
    than ending the stream (which the server would take as complete) or letting gRPC log it."""

    def __init__(self, messages: Iterable):
        self._messages = messages
        self.error: BaseException | None = None
        self._call = None
        self._attached = threading.Event()

    def attach(self, call) -> None:
        """The call to cancel when the messages fail."""
        self._call = call
        self._attached.set()

    def __iter__(self) -> Iterator:
        try:
            yield from self._messages
        except Exception as error:
            self.error = error
            if not self._attached.wait(ATTACH_S):
                raise
            self._call.cancel()

    def raise_error(self) -> None:
        """Raise the messages' error, if they failed."""
        if self.error is not None:
            raise self.error


class SupportQueue:
    """Support examples queued for the next Adapt (shared by the blocking and asyncio sessions)."""

    def __init__(self):
        self._support: list[tuple[str, object, Sensor | None]] = []

    def add_support(self, label: str, events, *, sensor: Sensor | None = None) -> None:
        """Queue one labelled example (events or frames) for the next ``adapt``; a file must
        exist now, and is read when ``adapt`` sends it."""
        if not isinstance(label, str) or not label:
            raise ValueError(f"a support example needs a non-empty label, got {label!r}")
        if isinstance(events, str | os.PathLike) and not os.path.exists(events):
            raise FileNotFoundError(f"{os.fspath(events)}: no such file")
        self._support.append((label, events, sensor))

    def add_support_folder(self, root: str | os.PathLike) -> list[tuple[str, Path]]:
        """Queue every recording of a folder with one sub-folder per class
        (``sources.support_folder``); returns the ``(label, path)`` pairs queued."""
        examples = support_folder(root)
        for label, path in examples:
            self.add_support(label, path)
        return examples

    @property
    def pending(self) -> int:
        """Examples queued for the next ``adapt``."""
        return len(self._support)

    def _take_support(self) -> list[tuple[str, object, Sensor | None]]:
        if not self._support:
            raise ValueError("no support examples queued: call add_support first")
        taken, self._support = self._support, []
        return taken


class Session(SupportQueue):
    """One session of the server: queue support examples, adapt, classify, stream, export.
    ``info`` is what the server last said about it (``refresh`` asks again)."""

    def __init__(self, client: Client, info: SessionInfo):
        super().__init__()
        self._client, self.info = client, info

    @property
    def id(self) -> str:
        return self.info.session_id

    def __repr__(self) -> str:
        return f"Session({self.id!r}, classes={list(self.info.classes)})"

    def refresh(self) -> SessionInfo:
        """Ask the server for the session's state (``GetSession``)."""
        self.info = self._client.session(self.id).info
        return self.info

    def adapt(
        self, *, replace_support: bool = False, timeout: float | None = ..., on_sent: OnSent = None
    ) -> AdaptResult:
        """Send the queued examples (emptying the queue, whatever the outcome) and adapt on the
        session's whole support set (only these examples when ``replace_support``)."""
        requests = messages.adapt_requests(self.id, self._take_support(), replace_support, on_sent)
        return AdaptResult.from_proto(self._client._stream_unary("Adapt", requests, timeout))

    def classify(
        self,
        events,
        *,
        sensor: Sensor | None = None,
        candidates: Iterable[str] = (),
        timeout: float | None = ...,
        on_sent: OnSent = None,
    ) -> Prediction:
        """Classify one query (events or frames), among ``candidates`` when given."""
        requests = messages.classify_requests(self.id, events, sensor, candidates, on_sent)
        return Prediction.from_proto(self._client._stream_unary("Classify", requests, timeout))

    def classify_stream(
        self,
        events,
        *,
        sensor: Sensor | None = None,
        window_us: int = 0,
        hop_us: int = 0,
        candidates: Iterable[str] = (),
        timeout: float | None = None,
        on_sent: OnSent = None,
    ) -> Iterator[WindowPrediction]:
        """Predictions for the windows of a stream (a live source, a replay, a file, chunks) as
        they come; window and hop 0 take the model card's. The source is opened now, the call
        starts at the first ``next``; leaving the loop cancels the call and closes the source."""
        source = as_source(events, sensor)
        requests = messages.stream_requests(
            self.id, source, None, window_us, hop_us, candidates, on_sent
        )
        return self._client._stream_stream(requests, source, timeout)

    def export(self, *, format: str = "session", timeout: float | None = ...) -> bytes:
        """The session as bytes: ``"session"``, the ``spikeshot-session/1`` file that
        ``Client.import_session`` makes a session of again; ``"nir"``, the NIR graph file of its
        adapted network (``nir.read`` reads it), which the server builds."""
        request = export_request(self.id, format)
        return self._client._unary("ExportSession", request, timeout).data

    def delete(self, *, timeout: float | None = ...) -> None:
        """Delete the session on the server."""
        self._client._unary("DeleteSession", pb.DeleteSessionRequest(session_id=self.id), timeout)


class Client:
    """A blocking connection to a spikeshot server. ``target`` is HOST:PORT or a ``Connection``;
    ``options`` are ``Connection``'s fields (``tls``, ``ca``, ``cert``, ``key``, ``server_name``,
    ``token``, ``timeout``, ``retries``, ...). A ``timeout`` of ``...`` in a call means the
    connection's."""

    def __init__(self, target: str | Connection = DEFAULT_TARGET, **options):
        self.connection = (
            target if isinstance(target, Connection) else Connection(target, **options)
        )
        self._channel = self.connection.channel()
        self._stub = wire.Stub(self._channel)
        self._stub.packed = None if self.connection.packed_events else False
        self._metadata = self.connection.metadata()

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _deadline(self, timeout):
        return self.connection.timeout if timeout is ... else timeout

    def _unary(self, method: str, request, timeout=...):
        try:
            return getattr(self._stub, method)(
                request, timeout=self._deadline(timeout), metadata=self._metadata
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error, method) from None

    def _choose_encoding(self, method: str, timeout) -> None:
        """Before the first call that carries events: pack them if the server takes it."""
        if self._stub.packed is None:
            try:
                response = self._stub.ListModels(
                    pb.ListModelsRequest(), timeout=self._deadline(timeout), metadata=self._metadata
                )
            except grpc.RpcError as error:
                raise from_rpc_error(error, method) from None
            self._stub.packed = pb.EVENT_ENCODING_PACKED in response.event_encodings

    def _stream_unary(self, method: str, messages, timeout=...):
        self._choose_encoding(method, timeout)
        requests = _Requests(messages)
        future = getattr(self._stub, method).future(
            iter(requests), timeout=self._deadline(timeout), metadata=self._metadata
        )
        requests.attach(future)
        try:
            return future.result()
        except grpc.FutureCancelledError:
            requests.raise_error()
            raise
        except grpc.RpcError as error:
            requests.raise_error()
            raise from_rpc_error(error, method) from None
        finally:
            future.cancel()

    def _stream_stream(self, messages, source: Source, timeout) -> Iterator[WindowPrediction]:
        requests = _Requests(messages)
        try:
            self._choose_encoding("ClassifyStream", timeout)
            call = self._stub.ClassifyStream(
                iter(requests), timeout=self._deadline(timeout), metadata=self._metadata
            )
            requests.attach(call)
            try:
                for response in call:
                    yield WindowPrediction.from_proto(response)
            except grpc.RpcError as error:
                requests.raise_error()
                raise from_rpc_error(error, "ClassifyStream") from None
            finally:
                call.cancel()
        finally:
            source.close()

    def models(self, *, timeout: float | None = ...) -> list[ModelInfo]:
        """The server's models, the default first."""
        response = self._unary("ListModels", pb.ListModelsRequest(), timeout)
        return [ModelInfo.from_proto(m) for m in response.models]

    def limits(self, *, timeout: float | None = ...) -> ServerLimits:
        """The server's limits (announced with its models by ``ListModels``)."""
        response = self._unary("ListModels", pb.ListModelsRequest(), timeout)
        return ServerLimits.from_proto(response.limits)

    def create_session(
        self,
        *,
        model: str = "",
        ways: int = 0,
        inner_steps: int = 0,
        step_size: float | None = None,
        weight_bits: int | None = None,
        rounding: str = "",
        grid: str = "",
        seed: int = 0,
        head: str = "",
        timeout: float | None = ...,
    ) -> Session:
        """A new session; empty or zero settings take the model card's (``step_size`` None: the
        card's, ``weight_bits`` None: the card's quantization, 0: float32 weights). ``rounding``
        is ``nearest`` or ``stochastic``, ``grid`` ``global`` or ``per_tensor``, ``head``
        ``meta`` (the meta-trained readout) or ``prototype`` (one set from the class means,
        with no inner step unless ``inner_steps`` asks for some)."""
        settings = settings_message(
            model, ways, inner_steps, step_size, weight_bits, rounding, grid, seed, head
        )
        response = self._unary("CreateSession", pb.CreateSessionRequest(settings=settings), timeout)
        return Session(self, SessionInfo.from_proto(response))

    def session(self, session_id: str, *, timeout: float | None = ...) -> Session:
        """One of this caller's sessions, by id."""
        response = self._unary("GetSession", pb.GetSessionRequest(session_id=session_id), timeout)
        return Session(self, SessionInfo.from_proto(response))

    def sessions(self, *, timeout: float | None = ...) -> list[Session]:
        """This caller's sessions, oldest first."""
        response = self._unary("ListSessions", pb.ListSessionsRequest(), timeout)
        return [Session(self, SessionInfo.from_proto(s)) for s in response.sessions]

    def import_session(self, data: bytes, *, timeout: float | None = ...) -> Session:
        """A new session from ``Session.export``'s bytes."""
        response = self._unary("ImportSession", pb.ImportSessionRequest(data=data), timeout)
        return Session(self, SessionInfo.from_proto(response))
