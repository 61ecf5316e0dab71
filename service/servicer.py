"""The gRPC servicer: ``spikeshot.v1`` messages to ``Engine`` calls and back, and nothing more.

Each method reads its request, calls the engine with the caller's ``owner`` (set by
``auth.Authenticator``) and a ``Control`` of the call's deadline and cancellation, and translates
the answer. Request streams are converted lazily, message by message, as the engine consumes
them, so a stream that breaks mid-way raises inside ``Engine.adapt`` and leaves the session as it
was.

Requests arrive as bytes and are parsed here (``add_to_server``), so that bytes protobuf cannot
parse are the client's error, INVALID_ARGUMENT, not gRPC's INTERNAL.

Errors: a ``ServiceError`` becomes the status code its ``code`` names, with its message (cut to
``MAX_DETAILS_BYTES``: status messages travel in size-limited metadata); a stream that broke or was
cancelled is CANCELLED; any other exception is INTERNAL, with its traceback logged here and not
sent. Every call records its latency, status and stage timings in ``metrics``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

import grpc
from google.protobuf.message import DecodeError

from spikeshot.clients.messages import FRAME_DTYPES
from spikeshot.clients.results import ModelInfo, Timings
from spikeshot.events.binning import FrameGeometry
from spikeshot.events.codec import EncodedEvents, PackedEvents
from spikeshot.service import inputs, metrics, windows
from spikeshot.service.config import ServerConfig
from spikeshot.service.engine import Engine
from spikeshot.service.errors import MAX_TEXT_CHARS, InvalidArgument, ServiceError
from spikeshot.service.executor import Control
from spikeshot.service.inputs import Chunk, EventInput, FrameInput, Input, frames_from_bytes
from spikeshot.v1 import spikeshot_pb2 as pb
from spikeshot.v1 import spikeshot_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

ROUNDINGS = {pb.ROUNDING_NEAREST: "nearest", pb.ROUNDING_STOCHASTIC: "stochastic"}
GRIDS = {pb.WEIGHT_GRID_GLOBAL: "global", pb.WEIGHT_GRID_PER_TENSOR: "per_tensor"}
HEADS = {pb.HEAD_META: "meta", pb.HEAD_PROTOTYPE: "prototype"}
FRAME_TYPE_NAMES = " or ".join(pb.FrameType.Name(v) for v in FRAME_DTYPES)
EXPORT_FORMATS = {pb.EXPORT_FORMAT_SESSION: "session", pb.EXPORT_FORMAT_NIR: "nir"}
ROUNDING_VALUES = {v: k for k, v in ROUNDINGS.items()}
GRID_VALUES = {v: k for k, v in GRIDS.items()}
HEAD_VALUES = {v: k for k, v in HEADS.items()}
SERVICE = pb.DESCRIPTOR.services_by_name["SpikeShot"]
MAX_DETAILS_BYTES = 2048
CALLS_PER_IO_THREAD = 2  # calls in progress or waiting for an io thread, per io thread
HANDLERS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}  # by (client streaming, server streaming); the service has no unary-stream method


def _known(table: dict[int, str], value: int, field: str) -> str:
    """The string of an enum value ``table`` names; ``InvalidArgument`` for any other value."""
    if value not in table:
        raise InvalidArgument(f"{field}: unknown value {value}", field)
    return table[value]


def _choice(table: dict[int, str], value: int, field: str) -> str | None:
    """The string of an enum value; None for the unspecified 0."""
    return None if value == 0 else _known(table, value, field)


def _parse(message_type, data: bytes, which: str):
    """A request message from its bytes; ``InvalidArgument`` when protobuf cannot parse them."""
    try:
        return message_type.FromString(data)
    except DecodeError as e:
        raise InvalidArgument(f"{which} cannot be parsed: {e}") from None


def _clip(message: str) -> str:
    """``message`` cut to ``MAX_DETAILS_BYTES`` bytes of UTF-8."""
    data = message.encode()
    if len(data) <= MAX_DETAILS_BYTES:
        return message
    return data[:MAX_DETAILS_BYTES].decode(errors="ignore") + "..."


def _first(requests: Iterator, kind: str, name: str):
    """The stream's first message, which must set ``kind`` (a ``name``)."""
    first = next(requests, None)
    if first is None or first.WhichOneof("kind") != kind:
        which = None if first is None else first.WhichOneof("kind")
        got = (
            "no message"
            if first is None
            else f"a message that sets {which}"
            if which
            else "a message that sets none of its fields"
        )
        raise InvalidArgument(f"the first message must set {kind} (the {name}), got {got}", kind)
    return getattr(first, kind)


def max_concurrent_calls(config: ServerConfig) -> int:
    """The calls a server of ``config`` holds at once, in progress or waiting for an io thread;
    gRPC answers RESOURCE_EXHAUSTED to the next."""
    return CALLS_PER_IO_THREAD * config.io_threads


def server_limits(engine_config: ServerConfig, server_config: ServerConfig) -> pb.ServerLimits:
    """The limits ``ListModels`` announces: the engine's caps and the server's transport limits."""
    c = engine_config
    return pb.ServerLimits(
        max_message_bytes=server_config.max_message_bytes,
        max_events=c.max_events,
        max_support_examples=c.max_support_examples,
        max_inner_steps=c.max_inner_steps,
        max_sessions_per_owner=c.max_sessions_per_owner,
        max_sessions=c.max_sessions,
        session_ttl_s=c.session_ttl_s,
        max_text_chars=MAX_TEXT_CHARS,
        max_window_us=windows.MAX_WINDOW_US,
        max_timestamp_us=inputs.MAX_TIMESTAMP_US,
        max_sensor_size=inputs.MAX_SENSOR,
        max_queued_jobs=c.queue_limit,
        max_concurrent_calls=max_concurrent_calls(server_config),
    )


def model_card(m: ModelInfo) -> pb.ModelCard:
    """The typed ``ModelCard`` of a model's card."""
    card, net = m.card, m.card["model"]
    g = FrameGeometry.from_dict(card["geometry"])
    x0, y0, crop_width, crop_height = g.crop_box
    inner = card.get("inner_loop") or {}
    quant = card.get("quantization")
    quantization = None
    if quant is not None:
        quantization = pb.Quantization(
            bits=quant["bits"],
            grid=GRID_VALUES[quant["mode"]],
            rounding=ROUNDING_VALUES[quant["rounding"]],
            frac_bits=quant.get("frac_bits"),
        )
    return pb.ModelCard(
        format=card.get("format", ""),
        name=m.name,
        network=pb.NetworkCard(
            arch=net["arch"],
            ways=net["ways"],
            bins=net["bins"],
            input_height=net["input_hw"][0],
            input_width=net["input_hw"][1],
            burn_in=net["burn_in"],
            channels=net["channels"],
            kernel=net["kernel"],
            pool=net["pool"],
            pool_kind=net["pool_kind"],
            alpha=net["alpha"],
            beta=net["beta"],
            alpha_rp=net["alpha_rp"],
            w_rp=net["w_rp"],
            input_gain=net["input_gain"],
            reset=net["reset"],
            surrogate_slope=net["surrogate_slope"],
            input_clip=net.get("input_clip"),
            zero_head=net["zero_head"],
        ),
        geometry=pb.InputGeometry(
            sensor_width=g.sensor_width,
            sensor_height=g.sensor_height,
            crop=pb.Crop(x0=x0, y0=y0, width=crop_width, height=crop_height),
            downsample=g.downsample,
            bins=g.bins,
            window_us=g.window_us,
            bin_us=g.bin_us,
            height=g.height,
            width=g.width,
        ),
        inner_loop=pb.InnerLoop(
            steps=inner.get("steps", m.inner_steps),
            step_size=inner.get("step_size", 0.0),
            learned_step_sizes=inner.get("learned_step_sizes", []),
            head=HEAD_VALUES[inner.get("head", "meta")],
        ),
        quantization=quantization,
        parameters=m.parameters,
        fingerprint=m.fingerprint,
    )


class _Call:
    """One RPC: its method name, owner, control, and the events it received."""

    def __init__(self, method: str, context: grpc.ServicerContext):
        self.method = method
        self.owner = context.caller
        self.control = Control.within(context.time_remaining(), lambda: not context.is_active())
        self.events = 0

    def data(self, message, kind: str) -> Input | None:
        """The ``Events`` or ``Frames`` a message carries in its oneof ``kind``, or None."""
        which = message.WhichOneof(kind)
        if which == "events":
            e = message.events
            t, dt = e.t, e.dt  # each read of a bytes field copies it: read each column once
            if dt or e.xyp or e.t_origin:
                if t or e.x or e.y or e.p:
                    raise InvalidArgument(
                        "events: set either t, x, y and p or t_origin, dt and xyp, not both",
                        "events",
                    )
                events, n = PackedEvents(e.t_origin, dt, e.xyp), len(dt) // 4
            else:
                events, n = EncodedEvents(t, e.x, e.y, e.p), len(t) // 8
            self.events += n
            metrics.EVENTS_RECEIVED.labels(self.method).inc(n)
            return EventInput(events, e.sensor_width, e.sensor_height)
        if which == "frames":
            f = message.frames
            if f.type not in FRAME_DTYPES:
                got = pb.FrameType.Name(f.type) if f.type == 0 else f"the unknown value {f.type}"
                raise InvalidArgument(
                    f"frames.type must be {FRAME_TYPE_NAMES}, got {got}", "frames.type"
                )
            return FrameInput(
                frames_from_bytes(f.data, f.bins, f.height, f.width, FRAME_DTYPES[f.type])
            )
        return None

    def chunks(self, requests: Iterator[pb.AdaptRequest]) -> Iterator[Chunk]:
        """The example chunks after an Adapt's header."""
        for i, request in enumerate(requests, 1):
            if request.WhichOneof("kind") != "example":
                raise InvalidArgument(
                    f"message {i}: every message after the AdaptHeader must be an ExampleChunk",
                    "example",
                )
            example = request.example
            yield Chunk(example.label, self.data(example, "data"), example.end_of_example)

    def inputs(self, requests: Iterator, what: str, carries: str) -> Iterator[Input]:
        """The events (or frames) after a Classify's header or a ClassifyStream's config: every
        message after the first (the ``what``) must set one of ``carries``."""
        for i, request in enumerate(requests, 1):
            data = self.data(request, "kind")
            if data is None:
                raise InvalidArgument(
                    f"message {i}: every message after the {what} must set {carries}", "events"
                )
            yield data

    def observe(self, t: Timings, *, forward: bool = True) -> None:
        """Record a request's stage timings (``forward``: also its queue wait and forward pass)."""
        metrics.observe_stages(decode=t.decode_ms, bin=t.bin_ms, inner_loop=t.adapt_ms)
        if forward:
            metrics.observe_stages(forward=t.forward_ms)
            metrics.QUEUE_SECONDS.labels(self.method).observe(t.queue_ms / 1000.0)


class SpikeShotServicer(pb_grpc.SpikeShotServicer):
    """The ``spikeshot.v1.SpikeShot`` service over an ``Engine``."""

    def __init__(self, engine: Engine, config: ServerConfig | None = None):
        """``config``: the server's (its transport limits, announced by ``ListModels``); default
        the engine's."""
        self.engine = engine
        self.limits = server_limits(engine.config, config or engine.config)

    @contextlib.contextmanager
    def _rpc(self, method: str, context: grpc.ServicerContext) -> Iterator[_Call]:
        """Run one RPC's body: map its errors to status codes and record its metrics."""
        start = time.perf_counter()
        code, message, call = "CANCELLED", "the request stream broke", None
        reason = code.lower()
        try:
            call = _Call(method, context)
            yield call
            code = "OK"
        except ServiceError as e:
            code, message = e.code, e.message
            field = getattr(e, "field", None) or ""
            reason = field if field.startswith("events") else code.lower()
        except grpc.RpcError:
            pass  # the client cancelled, or its stream broke: CANCELLED
        except Exception:
            log.exception("%s failed", method)
            code, message, reason = "INTERNAL", f"internal error in {method}", "internal"
        finally:
            metrics.REQUEST_SECONDS.labels(method, code).observe(time.perf_counter() - start)
            if code != "OK":
                if call is not None and call.events:
                    metrics.EVENTS_REJECTED.labels(reason).inc(call.events)
        if code != "OK":
            context.abort(grpc.StatusCode[code], _clip(message))

    def _refuse(self, method: str, context: grpc.ServicerContext, error: ServiceError) -> None:
        """Answer ``error`` to a call that never reached its method, recorded like any other."""
        with self._rpc(method, context):
            raise error

    def handler(self, method) -> grpc.RpcMethodHandler:
        """The handler of ``method`` (a descriptor of the service's): requests as bytes, each
        parsed before the method reads it; responses serialised by protobuf."""
        request_type = getattr(pb, method.input_type.name)
        behaviour = getattr(self, method.name)
        if method.client_streaming:

            def parsed(requests, context):
                messages = (_parse(request_type, r, f"message {i}") for i, r in enumerate(requests))
                return behaviour(messages, context)

        else:

            def parsed(request, context):
                try:
                    message = _parse(request_type, request, "the request")
                except InvalidArgument as e:
                    self._refuse(method.name, context, e)
                return behaviour(message, context)

        make = HANDLERS[method.client_streaming, method.server_streaming]
        response_type = getattr(pb, method.output_type.name)
        return make(parsed, response_serializer=response_type.SerializeToString)

    def CreateSession(self, request, context):
        with self._rpc("CreateSession", context) as call:
            s = request.settings
            info = self.engine.create_session(
                owner=call.owner,
                model=s.model or None,
                ways=s.ways or None,
                inner_steps=s.inner_steps or None,
                step_size=s.step_size or None,
                weight_bits=s.weight_bits if s.HasField("weight_bits") else None,
                rounding=_choice(ROUNDINGS, s.rounding, "rounding"),
                grid=_choice(GRIDS, s.grid, "grid"),
                seed=s.seed,
                head=_choice(HEADS, s.head, "head"),
            )
            return info.to_proto()

    def GetSession(self, request, context):
        with self._rpc("GetSession", context) as call:
            return self.engine.get_session(request.session_id, owner=call.owner).to_proto()

    def ListSessions(self, request, context):
        with self._rpc("ListSessions", context) as call:
            infos = self.engine.list_sessions(owner=call.owner)
            return pb.ListSessionsResponse(sessions=[i.to_proto() for i in infos])

    def DeleteSession(self, request, context):
        with self._rpc("DeleteSession", context) as call:
            self.engine.delete_session(request.session_id, owner=call.owner)
            return pb.DeleteSessionResponse()

    def Adapt(self, request_iterator, context):
        with self._rpc("Adapt", context) as call:
            header = _first(request_iterator, "header", "AdaptHeader")
            r = self.engine.adapt(
                header.session_id,
                call.chunks(request_iterator),
                owner=call.owner,
                replace_support=header.replace_support,
                control=call.control,
            )
            metrics.ADAPTATIONS.inc()
            call.observe(r.timings)
            return r.to_proto()

    def Classify(self, request_iterator, context):
        with self._rpc("Classify", context) as call:
            header = _first(request_iterator, "header", "ClassifyHeader")
            p = self.engine.classify(
                header.session_id,
                call.inputs(request_iterator, "ClassifyHeader", "events or frames"),
                owner=call.owner,
                candidates=list(header.candidates),
                control=call.control,
            )
            metrics.CLASSIFICATIONS.labels("Classify").inc()
            call.observe(p.timings)
            return p.to_proto()

    def ClassifyStream(self, request_iterator, context):
        with self._rpc("ClassifyStream", context) as call:
            config = _first(request_iterator, "config", "StreamConfig")
            windows = self.engine.classify_stream(
                config.session_id,
                call.inputs(request_iterator, "StreamConfig", "events"),
                owner=call.owner,
                window_us=config.window_us or None,
                hop_us=config.hop_us or None,
                candidates=list(config.candidates),
                control=call.control,
            )
            batch = None
            for w in windows:
                t = w.timings
                # The windows of one forward pass share its queue and forward times: record once.
                call.observe(t, forward=(t.queue_ms, t.forward_ms) != batch)
                batch = (t.queue_ms, t.forward_ms)
                metrics.CLASSIFICATIONS.labels("ClassifyStream").inc()
                yield w.to_proto()

    def ExportSession(self, request, context):
        with self._rpc("ExportSession", context) as call:
            data = self.engine.export_session(
                request.session_id,
                owner=call.owner,
                format=_known(EXPORT_FORMATS, request.format, "format"),
            )
            return pb.ExportSessionResponse(data=data)

    def ImportSession(self, request, context):
        with self._rpc("ImportSession", context) as call:
            return self.engine.import_session(request.data, owner=call.owner).to_proto()

    def ListModels(self, request, context):
        with self._rpc("ListModels", context):
            return pb.ListModelsResponse(
                models=[m.to_proto(card=model_card(m)) for m in self.engine.list_models()],
                limits=self.limits,
                event_encodings=[pb.EVENT_ENCODING_COLUMNS, pb.EVENT_ENCODING_PACKED],
            )


def add_to_server(servicer: SpikeShotServicer, server: grpc.Server) -> None:
    """Register ``servicer`` like the generated ``add_SpikeShotServicer_to_server``, but with its
    own parsing of requests (``SpikeShotServicer.handler``)."""
    handlers = {m.name: servicer.handler(m) for m in SERVICE.methods}
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),)
    )
    server.add_registered_method_handlers(SERVICE.full_name, handlers)
