"""``spikeshot models`` and ``spikeshot serve``: the listing, settings from a TOML file, the
environment and flags, and a graceful stop on SIGTERM that lets an in-flight Adapt finish."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from service_fixtures import adapt_requests, free_port, status_of, support, tiny

from spikeshot.models import checkpoint
from spikeshot.models.checkpoint import save
from spikeshot.service.cli import main
from spikeshot.v1 import spikeshot_pb2 as pb
from spikeshot.v1 import spikeshot_pb2_grpc as pb_grpc


@pytest.fixture
def zoo(tmp_path):
    save(tiny(0, "alpha", arch="ann"), tmp_path / "zoo" / "alpha")  # one ANN among SNNs
    save(tiny(1, "beta"), tmp_path / "zoo" / "beta")
    return tmp_path / "zoo"


def test_models_lists_the_checkpoints(zoo, capsys):
    assert main(["models", "--models", str(zoo), "--default-model", "beta"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["name", "arch", "ways", "input"]
    assert [line.split()[:2] for line in lines[1:3]] == [["beta", "*"], ["alpha", "ann"]]
    assert "4x2x8x8" in lines[1] and "16x16" in lines[1] and "4 ms" in lines[1]
    assert main(["models", "--models", str(zoo / "alpha"), "--json"]) == 0
    models = json.loads(capsys.readouterr().out)
    assert [(m["name"], m["is_default"], m["weight_bits"]) for m in models] == [("alpha", True, 8)]
    assert models[0]["card"]["name"] == "alpha" and len(models[0]["fingerprint"]) == 64


def test_models_say_where_sessions_start(tmp_path, capsys):
    """The ``head`` column: a Proto-MAML model's sessions start from the class means."""
    proto = dataclasses.replace(tiny(1, "proto"), training={"recipe": {"head": "prototype"}})
    save(tiny(0, "meta"), tmp_path / "zoo" / "meta")
    save(proto, tmp_path / "zoo" / "proto")
    assert main(["models", "--models", str(tmp_path / "zoo")]) == 0
    header, *rows = capsys.readouterr().out.splitlines()[:3]
    at = header.index(" head ") + 1
    assert header[at:].split()[:2] == ["head", "steps"]
    assert {row.split()[0]: row[at:].split()[0] for row in rows} == {
        "meta": "meta",
        "proto": "prototype",
    }


def test_zoo_names_resolve_and_the_zoo_is_the_default(zoo, monkeypatch, capsys):
    monkeypatch.setattr(checkpoint, "ZOO", zoo)
    assert main(["models"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:3]] == [
        "alpha",
        "beta",
    ]
    assert main(["models", "--models", "beta", "--json"]) == 0
    assert [m["name"] for m in json.loads(capsys.readouterr().out)] == ["beta"]
    assert main(["models", "--models", "gamma"]) == 3
    assert "the zoo has alpha, beta" in capsys.readouterr().err


def test_models_errors_name_the_problem(tmp_path, capsys):
    assert main(["models", "--models", str(tmp_path / "missing")]) == 3
    assert "no checkpoint '" in capsys.readouterr().err
    assert main(["models", "--models", str(tmp_path)]) == 3
    assert f"no checkpoints in {tmp_path}" in capsys.readouterr().err


def test_serve_takes_settings_from_toml_environment_and_flags_and_drains_on_sigterm(zoo, tmp_path):
    port, metrics_port = free_port(), free_port()
    (tmp_path / "server.toml").write_text(
        f"[server]\nmetrics_port = {metrics_port}\nport = 1\nworkers = 1\n"
    )
    env = {**os.environ, "SPIKESHOT_MAX_SESSIONS_PER_OWNER": "1", "SPIKESHOT_PORT": "2"}
    env["SPIKESHOT_MALLOC_ARENAS"] = "3"
    env.pop("MALLOC_ARENA_MAX", None)
    command = [
        sys.executable,
        "-c",
        "from spikeshot.service.cli import main; exit(main())",
        "serve",
        "--config",
        str(tmp_path / "server.toml"),
        "--model",
        str(zoo / "alpha"),
        "--port",
        str(port),
        "--shutdown-grace-s",
        "20",
    ]
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=120)
            health = health_pb2_grpc.HealthStub(channel)
            assert (
                health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
                == health_pb2.HealthCheckResponse.SERVING
            )
            stub = pb_grpc.SpikeShotStub(channel)
            assert [m.name for m in stub.ListModels(pb.ListModelsRequest()).models] == ["alpha"]
            sid = stub.CreateSession(pb.CreateSessionRequest()).session_id
            code, details = status_of(stub.CreateSession, pb.CreateSessionRequest())
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "maximum of 1" in details
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as r:
                assert b"spikeshot_model_info{" in r.read()

            requests = list(adapt_requests(sid, support("cup", "ball")))
            sent, release = threading.Event(), threading.Event()

            def slow():
                yield from requests[:-1]
                sent.set()
                release.wait(30)
                yield requests[-1]

            adapt = stub.Adapt.future(slow(), timeout=60)
            assert sent.wait(30)
            time.sleep(0.2)  # the server has the first examples
            server.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert server.poll() is None  # still draining
            release.set()
            assert adapt.result(timeout=30).weights_version == 1
        assert server.wait(30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    log = server.stderr.read()
    assert "SIGTERM: draining for up to 20 s" in log and f"127.0.0.1:{port}" in log
    assert "malloc arenas capped at 3" in log
