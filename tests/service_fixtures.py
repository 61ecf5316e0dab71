"""Helpers of the server tests: a tiny checkpoint that adapts in milliseconds, synthetic event
streams whose class is the sensor quadrant they fall in, the request messages that carry them, a
server of the tiny model on loopback, and test TLS certificates made with openssl at test time (no
private key is committed)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from safetensors.torch import load as load_tensors

from spikeshot.events.array import make_events
from spikeshot.events.binning import FrameGeometry, bin_batch
from spikeshot.events.codec import encode
from spikeshot.models import ModelConfig, Network, Quantizer
from spikeshot.models.checkpoint import Checkpoint
from spikeshot.models.init import lsuv_init
from spikeshot.service.config import ServerConfig
from spikeshot.service.engine import Engine
from spikeshot.service.server import start
from spikeshot.v1 import spikeshot_pb2 as pb
from spikeshot.v1 import spikeshot_pb2_grpc as pb_grpc

# The configuration users run: an SNN whose sessions adapt on the 8-bit grid (a few tests use its
# ANN twin).
CFG = ModelConfig(
    ways=4,
    input_hw=(8, 8),
    bins=4,
    burn_in=1,
    channels=(8, 8),
    kernel=3,
    alpha=0.8,
    beta=0.6,
    input_gain=1.0,
    input_clip=4.0,
)
GEOM = FrameGeometry(sensor_width=16, sensor_height=16, downsample=2, bins=4, window_us=4000)
SIZE = 16


def tiny(seed: int = 0, name: str = "tiny", arch: str = "snn") -> Checkpoint:
    """A 4-way SNN (or, with ``arch="ann"``, its ANN twin) on 16x16 sensors, 2 inner steps on an
    8-bit grid. The SNN's layers are initialised (LSUV) to fire on the quadrant streams; its sparse
    spike features need a step of 5 where the ANN's take 1 (measured on 2- to 4-way quadrant
    tasks: at 1 the support loss barely moves, at 10 two-way tasks saturate the 8-bit grid)."""
    cfg = replace(CFG, arch=arch)
    net = Network(cfg)
    frames = torch.from_numpy(
        bin_batch([events(c, seed=s) for c in range(4) for s in range(3)], GEOM, dtype=np.float32)
    )
    return Checkpoint(
        cfg,
        GEOM,
        lsuv_init(net, net.init(seed), frames),
        inner_steps=2,
        inner_step_size=5.0 if arch == "snn" else 1.0,
        quantizer=Quantizer(8),
        name=name,
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def events(cls: int, seed: int = 0, n: int = 300, t0: int = 0, duration_us: int = 4000):
    """``n`` events in quadrant ``cls`` (0 top left, 1 top right, 2 bottom left, 3 bottom right)."""
    rng = np.random.default_rng(seed)
    half = SIZE // 2
    x = rng.integers(0, half, n) + half * (cls % 2)
    y = rng.integers(0, half, n) + half * (cls // 2)
    t = t0 + np.sort(rng.integers(0, duration_us, n))
    return make_events(t, x, y, rng.integers(0, 2, n))


def wire(ev: np.ndarray, width: int = SIZE, height: int = SIZE) -> pb.Events:
    t, x, y, p = encode(ev)
    return pb.Events(t=t, x=x, y=y, p=p, sensor_width=width, sensor_height=height)


def adapt_requests(session_id: str, examples, parts: int = 1):
    """An Adapt stream: the header, then each ``(label, quadrant, seed)`` example in ``parts``
    chunks."""
    yield pb.AdaptRequest(header=pb.AdaptHeader(session_id=session_id))
    for label, cls, seed in examples:
        pieces = np.array_split(events(cls, seed), parts)
        for i, piece in enumerate(pieces):
            yield pb.AdaptRequest(
                example=pb.ExampleChunk(
                    label=label if i == 0 else "", events=wire(piece), end_of_example=i == parts - 1
                )
            )


def support(*labels: str, shots: int = 2, seed: int = 0) -> list[tuple[str, int, int]]:
    """``shots`` examples of each label, label i in quadrant i."""
    return [(label, i, seed + 10 * i + k) for k in range(shots) for i, label in enumerate(labels)]


def classify_requests(session_id: str, cls: int, seed: int = 99, candidates=()):
    yield pb.ClassifyRequest(header=pb.ClassifyHeader(session_id=session_id, candidates=candidates))
    yield pb.ClassifyRequest(events=wire(events(cls, seed)))


@contextlib.contextmanager
def serving(clock=time.time, **settings):
    """A server of the tiny model on a loopback port of its choosing (no metrics endpoint unless
    asked); its sessions age on ``clock``."""
    config = ServerConfig(
        **{
            "port": 0,
            "metrics_port": 0,
            "workers": 2,
            "queue_limit": 64,
            "io_threads": 40,
            **settings,
        }
    )
    engine = Engine([tiny()], config, clock=clock)
    engine.warm_up()
    running = start(config, engine)
    try:
        yield running
    finally:
        running.stop(grace=1)
        engine.close()


@contextlib.contextmanager
def client(running):
    with grpc.insecure_channel(running.address) as channel:
        yield pb_grpc.SpikeShotStub(channel)


def new_session(stub, **settings) -> str:
    return stub.CreateSession(
        pb.CreateSessionRequest(settings=pb.SessionSettings(**settings))
    ).session_id


def adapted(stub, *labels) -> str:
    sid = new_session(stub)
    stub.Adapt(adapt_requests(sid, support(*labels)))
    return sid


def status_of(call, *args, **kw) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        call(*args, **kw)
    return e.value.code(), e.value.details()


def code_of(call, *args, **kw) -> grpc.StatusCode:
    """The status code of a call, OK included."""
    try:
        call(*args, **kw)
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def make_certificates(folder: Path, clients: tuple[str, ...]) -> dict[str, Path]:
    """A test CA, a server certificate for 127.0.0.1 and localhost, and one client certificate
    per name in ``clients`` (its common name), all signed by the CA: paths by name (``ca``,
    ``server``, ``server.key``, ``NAME``, ``NAME.key``)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run(
        "req",
        "-x509",
        *key,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=spikeshot test CA",
    )
    (folder / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    out = {"ca": folder / "ca.pem"}
    for name in ("server", *clients):
        run(
            "req",
            *key,
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={'localhost' if name == 'server' else name}",
        )
        ext = ("-extfile", "server.ext") if name == "server" else ()
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "1",
            *ext,
        )
        out[name], out[f"{name}.key"] = folder / f"{name}.pem", folder / f"{name}.key"
    return out


def header_of(data: bytes) -> dict:
    return json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])


def session_ids(stub) -> list[str]:
    return [s.session_id for s in stub.ListSessions(pb.ListSessionsRequest()).sessions]


def observed(stub, sid: str):
    """Everything a client can see of a session: its description, its export (the session JSON
    and every tensor's bytes: settings, support set, weights) and its answer to a fixed query;
    and the caller's session ids."""
    got = stub.GetSession(pb.GetSessionRequest(session_id=sid))
    answer = stub.Classify(classify_requests(sid, 1))
    data = stub.ExportSession(pb.ExportSessionRequest(session_id=sid)).data
    tensors = {k: (v.dtype, v.shape, v.numpy().tobytes()) for k, v in load_tensors(data).items()}
    probabilities = [(p.label, p.probability) for p in answer.probabilities]
    return (
        got.settings,
        list(got.classes),
        got.examples,
        got.weights_version,
        header_of(data)["__metadata__"],  # a dict: the order of its keys varies
        tensors,
        probabilities,
        session_ids(stub),
    )
