"""The gRPC server: the SpikeShot service, health, reflection, authentication, TLS and metrics.

``start(config)`` builds the engine (unless given one), listens on ``config.host:config.port`` and
returns a ``RunningServer``. The server's ``io_threads`` only read and write streams and convert
messages; model work runs on the engine's bounded executor. Each RPC in progress holds one of
them (a live ``ClassifyStream`` for as long as it lasts); at most as many calls again wait for
one, and a call beyond that is RESOURCE_EXHAUSTED rather than queued without bound.

Reflection answers under ``grpc.reflection.v1`` (what grpcurl and newer tools ask first) and the
older ``grpc.reflection.v1alpha``, one implementation for both (``enable_reflection``).

Health (``grpc.health.v1``) answers SERVING for the whole server ("") and for
``spikeshot.v1.SpikeShot``, and NOT_SERVING from the moment the server starts draining: while the
calls in flight finish, new calls other than health checks are UNAVAILABLE (``Drain``), and health
keeps answering, so that a load balancer's Check sees NOT_SERVING rather than a refused call.
Health is also NOT_SERVING while the session store does not answer (``StoreWatch``: a shared Redis
that is down or slow), and SERVING again once it does.
``serve(config)`` is the blocking ``spikeshot serve``: it stops gracefully on SIGTERM or SIGINT,
giving requests in flight a grace period to finish.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as reflection_v1alpha_pb2

from spikeshot.service import allocator, metrics
from spikeshot.service.auth import BEHAVIORS, EXEMPT_PREFIXES, Authenticator, server_credentials
from spikeshot.service.config import ServerConfig
from spikeshot.service.engine import Engine
from spikeshot.service.errors import Unavailable
from spikeshot.service.servicer import SpikeShotServicer, add_to_server, max_concurrent_calls
from spikeshot.v1 import spikeshot_pb2 as pb

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SpikeShot"].full_name
REFLECTION_V1 = "grpc.reflection.v1"
REFLECTION_V1_FILE = "grpc/reflection/v1/reflection.proto"
REFLECTION_V1_SERVICE = f"{REFLECTION_V1}.ServerReflection"
STORE_CHECK_S = 1.0  # how often health asks the session store whether it answers
log = logging.getLogger(__name__)


class Drain(grpc.ServerInterceptor):
    """Once ``close`` is called, refuses the calls that arrive with UNAVAILABLE (health checks
    aside, which go on answering) and waits for those that arrived before. Whether a call is
    admitted is decided as it arrives; an admitted call is counted from the moment it starts."""

    def __init__(self):
        self._calls = 0
        self._closed = False
        self._idle = threading.Condition()

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(EXEMPT_PREFIXES):
            return handler
        kind = next(k for k in BEHAVIORS if getattr(handler, k) is not None)
        with self._idle:
            closed = self._closed
        return handler._replace(
            **{kind: _refused if closed else self._counted(getattr(handler, kind))}
        )

    def _counted(self, behavior):
        def counted(request, context):
            with self._idle:
                self._calls += 1
            if not context.add_callback(self._done):  # runs when the call ends, however it ends
                self._done()
            return behavior(request, context)

        return counted

    def _done(self) -> None:
        with self._idle:
            self._calls -= 1
            self._idle.notify_all()

    def refuse(self) -> None:
        """Refuse the calls that arrive from now on."""
        with self._idle:
            self._closed = True

    def close(self, grace: float) -> None:
        """Refuse the calls that arrive from now on; wait up to ``grace`` seconds for the
        admitted calls in progress to end."""
        self.refuse()
        with self._idle:
            self._idle.wait_for(lambda: self._calls == 0, grace)


def _refused(request, context):
    context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")


class StoreWatch:
    """Pings the engine's session store every ``STORE_CHECK_S`` seconds and sets health to
    NOT_SERVING while it does not answer, SERVING when it answers again."""

    def __init__(self, engine: Engine, health_servicer: health.HealthServicer):
        self._engine, self._health = engine, health_servicer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spikeshot-store-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        serving = True
        while True:
            try:
                self._engine.sessions.ping()
                answers = True
            except Unavailable as e:
                answers, error = False, e
            if answers != serving:
                serving = answers
                if serving:
                    log.info("the session store answers again: SERVING")
                else:
                    log.warning("%s: NOT_SERVING", error)
                status = health_pb2.HealthCheckResponse
                for service in ("", SERVICE_NAME):
                    self._health.set(service, status.SERVING if serving else status.NOT_SERVING)
            if self._stop.wait(STORE_CHECK_S):
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _reflection_v1_file() -> None:
    """Put ``grpc/reflection/v1/reflection.proto`` into the default descriptor pool (where
    reflection finds the files it describes) unless it is there. grpcio-reflection ships only
    v1alpha; v1 is the same file under another package (same messages, fields and numbers), so
    it is built from v1alpha's descriptor."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(REFLECTION_V1_FILE)
        return
    except KeyError:
        pass
    old = reflection_v1alpha_pb2.DESCRIPTOR.package
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_v1alpha_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name, proto.package = REFLECTION_V1_FILE, REFLECTION_V1
    proto.options.Clear()
    proto.options.java_package = "io.grpc.reflection.v1"
    proto.options.java_outer_classname = "ServerReflectionProto"
    proto.options.java_multiple_files = True
    proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"

    def renamed(type_name: str) -> str:
        return type_name.replace(f".{old}.", f".{REFLECTION_V1}.", 1)

    for message in proto.message_type:
        for f in message.field:
            if f.type_name:
                f.type_name = renamed(f.type_name)
    for service in proto.service:
        for method in service.method:
            method.input_type = renamed(method.input_type)
            method.output_type = renamed(method.output_type)
    pool.AddSerializedFile(proto.SerializeToString())


def enable_reflection(service_names: tuple[str, ...], server: grpc.Server) -> None:
    """Serve reflection of ``service_names`` (and of itself) as ``grpc.reflection.v1`` and
    ``grpc.reflection.v1alpha``. One v1alpha servicer answers both: the two services' messages
    are the same bytes on the wire."""
    _reflection_v1_file()
    names = (*service_names, REFLECTION_V1_SERVICE, reflection.SERVICE_NAME)
    servicer = reflection.ReflectionServicer(names)
    messages = reflection_v1alpha_pb2
    for name in (REFLECTION_V1_SERVICE, reflection.SERVICE_NAME):
        handler = grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=messages.ServerReflectionRequest.FromString,
            response_serializer=messages.ServerReflectionResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler}),)
        )


def _session_count(engine: Engine) -> float:
    """The sessions held, NaN while the store does not answer (so that a scrape still does)."""
    try:
        return len(engine.sessions)
    except Unavailable:
        return math.nan


@dataclass
class RunningServer:
    """A started server. ``port`` is the gRPC port it listens on; ``metrics_port`` that of
    ``/metrics`` (0 when the metrics endpoint is off)."""

    config: ServerConfig
    engine: Engine
    port: int
    metrics_port: int
    _server: grpc.Server
    _health: health.HealthServicer
    _drain: Drain
    _watch: StoreWatch
    _exporter: metrics.Exporter | None
    _owns_engine: bool
    _stopped: threading.Event = field(default_factory=threading.Event)
    _stop_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def address(self) -> str:
        """``host:port`` to connect to."""
        return _address(self.config.host, self.port)

    def stop(self, grace: float | None = None) -> None:
        """Drain: answer NOT_SERVING to health checks, refuse new RPCs, give those in flight
        ``grace`` seconds (default: the config's ``shutdown_grace_s``) before cancelling them,
        then close the engine (when ``start`` built it) and the metrics endpoint. Later calls
        wait for the first to finish."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            grace = self.config.shutdown_grace_s if grace is None else grace
            deadline = time.monotonic() + grace
            # Refuse first: whoever sees NOT_SERVING finds new calls refused already.
            self._drain.refuse()
            self._health.enter_graceful_shutdown()
            self._watch.close()
            self._drain.close(grace)
            # gRPC's own stop waits the rest of the grace for any admitted call not yet started.
            self._server.stop(max(0.0, deadline - time.monotonic())).wait()
            if self._owns_engine:
                self.engine.close()
            if self._exporter is not None:
                self._exporter.close()
            self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until ``stop`` has finished (or ``timeout`` seconds); True when it has."""
        return self._stopped.wait(timeout)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen(server: grpc.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError:
        raise OSError(
            f"cannot listen on {address}: the port is in use or the address is invalid"
        ) from None


def start(config: ServerConfig, engine: Engine | None = None) -> RunningServer:
    """Start serving ``engine`` (default: ``Engine.from_config(config)``) as ``config`` says."""
    authenticator = Authenticator.from_config(config)
    credentials = server_credentials(config)
    owns_engine = engine is None
    engine = Engine.from_config(config) if engine is None else engine
    drain = Drain()
    server = grpc.server(
        futures.ThreadPoolExecutor(config.io_threads, "spikeshot-io"),
        interceptors=[drain, authenticator],
        maximum_concurrent_rpcs=max_concurrent_calls(config),
        options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),  # a port in use is an error, not shared
        ],
    )
    add_to_server(SpikeShotServicer(engine, config), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection((SERVICE_NAME, health.SERVICE_NAME), server)
    try:
        port = _listen(server, _address(config.host, config.port), credentials)
        exporter = (
            metrics.Exporter(config.host, config.metrics_port) if config.metrics_port else None
        )
    except OSError:
        if owns_engine:
            engine.close()
        raise
    metrics.track_sessions(lambda: _session_count(engine))
    for m in engine.list_models():
        metrics.MODEL.labels(m.name).info(
            {
                "arch": m.arch,
                "ways": str(m.ways),
                "weight_bits": str(m.weight_bits),
                "parameters": str(m.parameters),
                "fingerprint": m.fingerprint,
                "default": str(m.is_default).lower(),
            }
        )
    server.start()
    for service in ("", SERVICE_NAME):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    running = RunningServer(
        config,
        engine,
        port,
        exporter.port if exporter else 0,
        server,
        health_servicer,
        drain,
        StoreWatch(engine, health_servicer),
        exporter,
        owns_engine,
    )
    log.info(
        "spikeshot serving %s on %s (%s, sessions in %s), metrics on %s",
        engine.default_model,
        running.address,
        "TLS" if credentials else "plaintext",
        engine.sessions.name,
        f"port {running.metrics_port}" if exporter else "no port",
    )
    return running


def serve(config: ServerConfig) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully within ``config.shutdown_grace_s``
    seconds (main thread only: signal handlers are installed here). The process is the
    server's own, so its malloc arenas are capped first (``config.malloc_arenas``)."""
    arenas = config.malloc_arena_count
    if allocator.cap_arenas(arenas):
        log.info("malloc arenas capped at %d", arenas)
    else:
        log.info("malloc arenas not capped (%s set, or not glibc)", allocator.ENV)
    running = start(config)

    def on_signal(signum, _frame):
        grace = config.shutdown_grace_s
        log.info("%s: draining for up to %.0f s", signal.Signals(signum).name, grace)
        threading.Thread(target=running.stop, name="spikeshot-stop").start()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        running.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
