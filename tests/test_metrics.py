"""The metrics endpoint after real traffic: its exposition parsed with prometheus_client's parser,
and scraped by a real Prometheus server (Debian's ``prometheus`` package; skipped when the
``prometheus`` binary is not on PATH)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from service_fixtures import (
    adapted,
    classify_requests,
    client,
    events,
    free_port,
    new_session,
    serving,
    status_of,
    wire,
)

from spikeshot.service import metrics
from spikeshot.v1 import spikeshot_pb2 as pb

BOUNDS = [
    "0.0005",
    "0.001",
    "0.0025",
    "0.005",
    "0.01",
    "0.025",
    "0.05",
    "0.1",
    "0.25",
    "0.5",
    "1.0",
    "2.5",
    "5.0",
    "10.0",
    "+Inf",
]


def traffic(stub) -> list[str]:
    """Adapts, classifications, a live stream, a rejected chunk and a NOT_FOUND: the session ids
    made."""
    sid = adapted(stub, "cup", "ball")
    for cls in (0, 1):
        stub.Classify(classify_requests(sid, cls))
    list(
        stub.ClassifyStream(
            iter(
                [
                    pb.ClassifyStreamRequest(config=pb.StreamConfig(session_id=sid)),
                    pb.ClassifyStreamRequest(events=wire(events(0, 3, n=200))),
                    pb.ClassifyStreamRequest(events=wire(events(1, 4, n=200, t0=4000))),
                ]
            )
        )
    )
    bad = events(0, 5, n=50)
    bad["t"][10] = bad["t"][9] - 1  # decreasing at index 10
    other = new_session(stub)
    status_of(
        stub.Adapt,
        iter(
            [
                pb.AdaptRequest(header=pb.AdaptHeader(session_id=other)),
                pb.AdaptRequest(
                    example=pb.ExampleChunk(label="a", events=wire(bad), end_of_example=True)
                ),
            ]
        ),
    )
    status_of(stub.GetSession, pb.GetSessionRequest(session_id="nope"))
    return [sid, other]


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(families: dict, family: str, sample: str, **labels) -> float:
    """The one sample of that name and labels (0 when the family has none yet)."""
    found = [
        s.value
        for s in getattr(families.get(family), "samples", [])
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) <= 1, (sample, labels, found)
    return found[0] if found else 0.0


def test_exposition_after_traffic_parses_with_the_expected_series():
    port = free_port()
    with serving(metrics_port=port) as running, client(running) as stub:
        before = scrape(running.metrics_port)
        ids = traffic(stub)
        after = scrape(running.metrics_port)
    assert running.metrics_port == port

    def change(family, sample, **labels):
        return value(after, family, sample, **labels) - value(before, family, sample, **labels)

    def grew(family, sample, by=1.0, **labels):
        """A counter (or a histogram's count of requests) grew by exactly the calls made."""
        assert change(family, sample, **labels) == by, (sample, labels)

    request = "spikeshot_request_duration_seconds"
    grew(request, request + "_count", method="Adapt", code="OK")
    grew(request, request + "_count", 2, method="Classify", code="OK")
    grew(request, request + "_count", method="GetSession", code="NOT_FOUND")
    buckets = [
        s.labels["le"]
        for s in after[request].samples
        if s.name == request + "_bucket"
        and s.labels["method"] == "Adapt"
        and s.labels["code"] == "OK"
    ]
    assert buckets == BOUNDS
    stage = "spikeshot_stage_duration_seconds"
    for name in metrics.STAGES:  # a stage is observed whenever it ran, once or more per request
        assert change(stage, stage + "_count", stage=name) >= 1, name
    grew("spikeshot_queue_wait_seconds", "spikeshot_queue_wait_seconds_count", method="Adapt")
    grew("spikeshot_events_received", "spikeshot_events_received_total", 1200 + 50, method="Adapt")
    grew("spikeshot_events_received", "spikeshot_events_received_total", 600, method="Classify")
    grew(
        "spikeshot_events_received", "spikeshot_events_received_total", 400, method="ClassifyStream"
    )
    grew("spikeshot_events_rejected", "spikeshot_events_rejected_total", 50, reason="events.t")
    grew("spikeshot_adaptations", "spikeshot_adaptations_total")
    grew("spikeshot_classifications", "spikeshot_classifications_total", 2, method="Classify")
    grew("spikeshot_classifications", "spikeshot_classifications_total", 2, method="ClassifyStream")
    grew(request, request + "_count", method="Adapt", code="INVALID_ARGUMENT")
    assert value(after, "spikeshot_active_sessions", "spikeshot_active_sessions") == 2
    info = value(
        after,
        "spikeshot_model_info",
        "spikeshot_model_info",
        model="tiny",
        arch="snn",
        ways="4",
        weight_bits="8",
        default="true",
    )
    assert info == 1.0
    for family in after.values():
        assert family.name.startswith("spikeshot_")
        for s in family.samples:
            assert not set(s.labels.values()) & set(ids), s  # never a session id


def test_a_real_prometheus_server_scrapes_the_series(tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the prometheus binary is not on PATH (Debian package: prometheus)")
    target, web = free_port(), free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 200ms\n  scrape_timeout: 200ms\n"
        "scrape_configs:\n  - job_name: spikeshot\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target}']\n"
    )
    base = f"http://127.0.0.1:{web}"

    def query(expr: str) -> list:
        url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)["data"]["result"]

    def eventually(expr: str, timeout: float = 30.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if result := query(expr):
                    return result
            except OSError:
                pass  # not up yet
            time.sleep(0.2)
        pytest.fail(f"Prometheus never answered {expr!r}")

    prometheus = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{web}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with serving(metrics_port=target) as running, client(running) as stub:
            eventually('up{job="spikeshot"} == 1')
            traffic(stub)
            eventually("spikeshot_adaptations_total >= 1")
            rows = eventually(
                'spikeshot_request_duration_seconds_count{method="Classify",code="OK"} >= 2'
            )
            assert rows[0]["metric"]["job"] == "spikeshot"
            eventually('spikeshot_stage_duration_seconds_bucket{stage="inner_loop",le="10.0"}')
            eventually('spikeshot_events_rejected_total{reason="events.t"} >= 50')
            eventually('spikeshot_model_info{model="tiny"}')
    finally:
        prometheus.terminate()
        prometheus.wait(10)


def test_unauthenticated_calls_are_counted_as_errors(tmp_path):
    (tmp_path / "tokens").write_text("a-long-enough-token-1234 alice\n")
    with serving(tokens_file=str(tmp_path / "tokens")) as running, client(running) as stub:
        labels = {"method": "ListModels", "code": "UNAUTHENTICATED"}
        name = "spikeshot_request_duration_seconds_count"
        start = metrics.REGISTRY.get_sample_value(name, labels) or 0.0
        code, _ = status_of(stub.ListModels, pb.ListModelsRequest())
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert metrics.REGISTRY.get_sample_value(name, labels) == start + 1
