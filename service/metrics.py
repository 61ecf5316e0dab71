"""The service's Prometheus metrics, declared once here, and their HTTP exporter.

Every metric lives on ``REGISTRY`` (not the process-wide default, so that an app embedding the
server keeps its own metrics apart) and is served by ``serve`` on its own port. Names carry the
``spikeshot_`` prefix, durations are in seconds, and labels are bounded: ``method`` (an RPC name),
``code`` (a gRPC status code name), ``stage`` (``STAGES``) and ``reason`` (the rejected field, such
as ``events.t``, or a status code name in lower case). Never a session id.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from spikeshot.v1 import spikeshot_pb2 as pb

REGISTRY = CollectorRegistry(auto_describe=True)
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGES = ("decode", "bin", "inner_loop", "forward")

REQUEST_SECONDS = Histogram(
    "spikeshot_request_duration_seconds",
    "Time from the start of an RPC to its end, by method and status code.",
    ["method", "code"],
    buckets=BUCKETS,
    registry=REGISTRY,
)
STAGE_SECONDS = Histogram(
    "spikeshot_stage_duration_seconds",
    "Time of one stage of a request: decode (decode and validate events or frames), bin (map and "
    "bin events; an example's or query's events are validated, mapped and binned in one pass "
    "where numba is installed, timed as bin), inner_loop (an Adapt's gradient steps with its "
    "loss evaluations), forward (one forward pass).",
    ["stage"],
    buckets=BUCKETS,
    registry=REGISTRY,
)
QUEUE_SECONDS = Histogram(
    "spikeshot_queue_wait_seconds",
    "Time model work waited for an executor worker, by method.",
    ["method"],
    buckets=BUCKETS,
    registry=REGISTRY,
)
EVENTS_RECEIVED = Counter(
    "spikeshot_events_received_total",
    "Events received on the wire, by method.",
    ["method"],
    registry=REGISTRY,
)
EVENTS_REJECTED = Counter(
    "spikeshot_events_rejected_total",
    "Events of requests that failed, by reason: the rejected field (events.t, events.x, ...) or "
    "the status code in lower case.",
    ["reason"],
    registry=REGISTRY,
)
ACTIVE_SESSIONS = Gauge(
    "spikeshot_active_sessions",
    "Sessions the server holds (an expired one until the next sweep: a create or a list).",
    registry=REGISTRY,
)
ADAPTATIONS = Counter("spikeshot_adaptations_total", "Successful Adapts.", registry=REGISTRY)
CLASSIFICATIONS = Counter(
    "spikeshot_classifications_total",
    "Predictions answered: one per Classify, one per ClassifyStream window.",
    ["method"],
    registry=REGISTRY,
)
MODEL = Info(
    "spikeshot_model",
    "The models the server holds, from their model cards.",
    ["model"],
    registry=REGISTRY,
)


# The label sets every server reports, created up front as client_python advises: their series
# exist (at zero) from the first scrape, so dashboards and alerts see 0 rather than no data.
for _method in pb.DESCRIPTOR.services_by_name["SpikeShot"].methods_by_name:
    REQUEST_SECONDS.labels(_method, "OK")
for _stage in STAGES:
    STAGE_SECONDS.labels(_stage)
for _method in ("Adapt", "Classify", "ClassifyStream"):
    EVENTS_RECEIVED.labels(_method)
    QUEUE_SECONDS.labels(_method)
for _method in ("Classify", "ClassifyStream"):
    CLASSIFICATIONS.labels(_method)
for _field in "txyp":
    EVENTS_REJECTED.labels(f"events.{_field}")


def observe_stages(**milliseconds: float) -> None:
    """Record stage durations given in milliseconds as ``stage=ms`` (0: the stage did not run)."""
    for stage, ms in milliseconds.items():
        if ms > 0:
            STAGE_SECONDS.labels(stage).observe(ms / 1000.0)


def track_sessions(count: Callable[[], int]) -> None:
    """Make ``spikeshot_active_sessions`` read ``count()`` at each scrape (the latest server's)."""
    ACTIVE_SESSIONS.set_function(count)


class Exporter:
    """The metrics HTTP endpoint (``/metrics``) on ``host:port`` (0: a free port)."""

    def __init__(self, host: str, port: int):
        self._server: WSGIServer
        self._thread: threading.Thread
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=REGISTRY)
        except OSError as e:
            raise OSError(f"cannot serve metrics on {host} port {port}: {e.strerror}") from None
        self.port = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
