"""The deployment files: the Grafana dashboard queries only metrics a live server exports, and the
Prometheus configuration is one Prometheus accepts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from service_fixtures import adapted, classify_requests, free_port, serving

from spikeshot.v1 import spikeshot_pb2_grpc as pb_grpc

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def dashboard_queries() -> list[str]:
    board = json.loads((DEPLOY / "grafana" / "spikeshot.json").read_text())
    return [t["expr"] for p in board["panels"] for t in p["targets"]]


def test_the_dashboard_has_the_panels_operators_need():
    board = json.loads((DEPLOY / "grafana" / "spikeshot.json").read_text())
    titles = " / ".join(p["title"] for p in board["panels"]).lower()
    for words in (
        "requests per second",
        "p50",
        "p99",
        "stage",
        "queue",
        "errors",
        "sessions",
        "events per second",
    ):
        assert words in titles, words
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])


def test_every_metric_a_panel_queries_is_on_a_live_servers_metrics_page():
    with serving(metrics_port=free_port()) as running:
        with grpc.insecure_channel(running.address) as channel:
            stub = pb_grpc.SpikeShotStub(channel)
            stub.Classify(classify_requests(adapted(stub, "cup", "ball"), 0))
        url = f"http://127.0.0.1:{running.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
    exported = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    queried = {name for q in dashboard_queries() for name in re.findall(r"spikeshot_[a-z_]+", q)}
    assert queried and not queried - exported, sorted(queried - exported)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus) absent")
def test_prometheus_accepts_the_scrape_configuration():
    done = subprocess.run(
        ["promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
