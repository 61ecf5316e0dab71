"""The asyncio client on ``grpc.aio``: ``AsyncClient`` and ``AsyncSession``, the surface of the
blocking ``Client`` and ``Session`` with coroutines (and an async iterator of predictions).

    async with AsyncClient("127.0.0.1:50051") as client:
        session = await client.create_session(ways=2)
        session.add_support_folder("support/")
        await session.adapt()
        async for window in session.classify_stream(sources.dv_network("127.0.0.1", 7777)):
            print(window.label)

Sources are read on worker threads (``asyncio.to_thread``), so a file being decoded or a camera
being polled never blocks the event loop. Queries and streams may also be async iterables of event
arrays (with ``sensor=``). Create the client inside the running event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable

import grpc

from spikeshot.clients import messages, wire
from spikeshot.clients.client import SupportQueue
from spikeshot.clients.connection import DEFAULT_TARGET, Connection
from spikeshot.clients.errors import from_rpc_error
from spikeshot.clients.messages import OnSent
from spikeshot.clients.results import (
    AdaptResult,
    ModelInfo,
    Prediction,
    SessionInfo,
    WindowPrediction,
    export_request,
    settings_message,
)
from spikeshot.clients.sources import Sensor, as_source, from_chunks
from spikeshot.v1 import spikeshot_pb2 as pb

_END = object()


async def _in_thread(iterable: Iterable) -> AsyncIterator:
    """The items of a blocking iterable, each fetched on a worker thread."""
    iterator = iter(iterable)
    while (item := await asyncio.to_thread(next, iterator, _END)) is not _END:
        yield item


async def _async_requests(
    first, chunks: AsyncIterable, sensor: Sensor | None, on_sent: OnSent
) -> AsyncIterator:
    """``first``, then the event messages of an async iterable of event arrays."""
    if sensor is None:
        raise ValueError("an async iterable of event chunks needs sensor=(width, height)")
    yield first
    async for chunk in chunks:
        for message in messages.event_messages(from_chunks([chunk], sensor), on_sent):
            yield message


class _Requests:
    """An async request iterator that keeps the error its messages raise and cancels the call
    (see ``client._Requests``)."""

    def __init__(self, messages: AsyncIterable):
        self._messages, self.error, self._call = messages, None, None

    def attach(self, call) -> None:
        self._call = call

    async def __aiter__(self) -> AsyncIterator:
        try:
            async for message in self._messages:
                yield message
        except Exception as error:
            self.error = error
            self._call.cancel()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


class AsyncSession(SupportQueue):
    """One session of the server (see ``client.Session``), with coroutine methods."""

    def __init__(self, client: AsyncClient, info: SessionInfo):
        super().__init__()
        self._client, self.info = client, info

    @property
    def id(self) -> str:
        return self.info.session_id

    def __repr__(self) -> str:
        return f"AsyncSession({self.id!r}, classes={list(self.info.classes)})"

    async def refresh(self) -> SessionInfo:
        self.info = (await self._client.session(self.id)).info
        return self.info

    async def adapt(
        self, *, replace_support: bool = False, timeout: float | None = ..., on_sent: OnSent = None
    ) -> AdaptResult:
        """Send the queued examples (emptying the queue) and adapt (see ``Session.adapt``)."""
        requests = messages.adapt_requests(self.id, self._take_support(), replace_support, on_sent)
        response = await self._client._stream_unary("Adapt", _in_thread(requests), timeout)
        return AdaptResult.from_proto(response)

    async def classify(
        self,
        events,
        *,
        sensor: Sensor | None = None,
        candidates: Iterable[str] = (),
        timeout: float | None = ...,
        on_sent: OnSent = None,
    ) -> Prediction:
        """Classify one query: events or frames as for ``Session.classify``, or an async
        iterable of event arrays."""
        if isinstance(events, AsyncIterable):
            stream = _async_requests(
                messages.classify_header(self.id, candidates),
                events,
                sensor,
                on_sent,
            )
        else:
            stream = _in_thread(
                messages.classify_requests(self.id, events, sensor, candidates, on_sent)
            )
        return Prediction.from_proto(await self._client._stream_unary("Classify", stream, timeout))

    async def classify_stream(
        self,
        events,
        *,
        sensor: Sensor | None = None,
        window_us: int = 0,
        hop_us: int = 0,
        candidates: Iterable[str] = (),
        timeout: float | None = None,
        on_sent: OnSent = None,
    ) -> AsyncIterator[WindowPrediction]:
        """Predictions for the windows of a stream as they come (see
        ``Session.classify_stream``); ``events`` may also be an async iterable of arrays."""
        config = messages.stream_config(self.id, window_us, hop_us, candidates)
        source = None
        if isinstance(events, AsyncIterable):
            stream = _async_requests(config, events, sensor, on_sent)
        else:
            source = await asyncio.to_thread(as_source, events, sensor)
            stream = _in_thread(
                messages.stream_requests(
                    self.id, source, None, window_us, hop_us, candidates, on_sent
                )
            )
        try:
            async for response in self._client._stream_stream(stream, timeout):
                yield WindowPrediction.from_proto(response)
        finally:
            if source is not None:
                source.close()

    async def export(self, *, format: str = "session", timeout: float | None = ...) -> bytes:
        """The session as bytes in ``format`` (see ``Session.export``)."""
        request = export_request(self.id, format)
        return (await self._client._unary("ExportSession", request, timeout)).data

    async def delete(self, *, timeout: float | None = ...) -> None:
        await self._client._unary(
            "DeleteSession", pb.DeleteSessionRequest(session_id=self.id), timeout
        )


class AsyncClient:
    """An asyncio connection to a spikeshot server; arguments as for ``client.Client``."""

    def __init__(self, target: str | Connection = DEFAULT_TARGET, **options):
        self.connection = (
            target if isinstance(target, Connection) else Connection(target, **options)
        )
        self._channel = self.connection.aio_channel()
        self._stub = wire.Stub(self._channel)
        self._stub.packed = None if self.connection.packed_events else False
        self._metadata = self.connection.metadata()

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _deadline(self, timeout):
        return self.connection.timeout if timeout is ... else timeout

    async def _unary(self, method: str, request, timeout=...):
        try:
            return await getattr(self._stub, method)(
                request, timeout=self._deadline(timeout), metadata=self._metadata
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error, method) from None

    async def _choose_encoding(self, method: str, timeout) -> None:
        """Before the first call that carries events: pack them if the server takes it."""
        if self._stub.packed is None:
            try:
                response = await self._stub.ListModels(
                    pb.ListModelsRequest(), timeout=self._deadline(timeout), metadata=self._metadata
                )
            except grpc.RpcError as error:
                raise from_rpc_error(error, method) from None
            self._stub.packed = pb.EVENT_ENCODING_PACKED in response.event_encodings

    async def _stream_unary(self, method: str, stream: AsyncIterable, timeout=...):
        await self._choose_encoding(method, timeout)
        requests = _Requests(stream)
        call = getattr(self._stub, method)(
            requests.__aiter__(), timeout=self._deadline(timeout), metadata=self._metadata
        )
        requests.attach(call)
        try:
            return await call
        except asyncio.CancelledError:
            requests.raise_error()
            raise
        except grpc.RpcError as error:
            requests.raise_error()
            raise from_rpc_error(error, method) from None
        finally:
            call.cancel()

    async def _stream_stream(self, stream: AsyncIterable, timeout) -> AsyncIterator:
        await self._choose_encoding("ClassifyStream", timeout)
        requests = _Requests(stream)
        call = self._stub.ClassifyStream(
            requests.__aiter__(), timeout=self._deadline(timeout), metadata=self._metadata
        )
        requests.attach(call)
        try:
            async for response in call:
                yield response
        except asyncio.CancelledError:
            requests.raise_error()
            raise
        except grpc.RpcError as error:
            requests.raise_error()
            raise from_rpc_error(error, "ClassifyStream") from None
        finally:
            call.cancel()

    async def models(self, *, timeout: float | None = ...) -> list[ModelInfo]:
        response = await self._unary("ListModels", pb.ListModelsRequest(), timeout)
        return [ModelInfo.from_proto(m) for m in response.models]

    async def create_session(
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
    ) -> AsyncSession:
        """A new session (settings as for ``Client.create_session``)."""
        settings = settings_message(
            model, ways, inner_steps, step_size, weight_bits, rounding, grid, seed, head
        )
        response = await self._unary(
            "CreateSession", pb.CreateSessionRequest(settings=settings), timeout
        )
        return AsyncSession(self, SessionInfo.from_proto(response))

    async def session(self, session_id: str, *, timeout: float | None = ...) -> AsyncSession:
        response = await self._unary(
            "GetSession", pb.GetSessionRequest(session_id=session_id), timeout
        )
        return AsyncSession(self, SessionInfo.from_proto(response))

    async def sessions(self, *, timeout: float | None = ...) -> list[AsyncSession]:
        response = await self._unary("ListSessions", pb.ListSessionsRequest(), timeout)
        return [AsyncSession(self, SessionInfo.from_proto(s)) for s in response.sessions]

    async def import_session(self, data: bytes, *, timeout: float | None = ...) -> AsyncSession:
        response = await self._unary("ImportSession", pb.ImportSessionRequest(data=data), timeout)
        return AsyncSession(self, SessionInfo.from_proto(response))
