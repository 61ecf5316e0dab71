"""The SDK end to end against a real server on loopback: sessions as objects, support from files,
arrays, chunk iterables and frames, classification, streams (from arrays and from a fake live
camera), export and import, errors carrying the gRPC code and the server's message, a failing
source cancelling its call, retries on UNAVAILABLE only, deadlines, tokens, TLS and mutual TLS,
the asyncio client, and the real recordings of shared/realdata."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
from client_fixtures import fake_camera, sequence
from service_fixtures import GEOM, events, free_port, make_certificates, serving

from spikeshot.clients import sources
from spikeshot.clients.aio import AsyncClient
from spikeshot.clients.client import Client
from spikeshot.clients.errors import ServerError, ServerUnavailable
from spikeshot.events.binning import bin_events
from spikeshot.events.formats import read, write
from spikeshot.v1 import spikeshot_pb2 as pb
from spikeshot.v1 import spikeshot_pb2_grpc as rpc

SENSOR = (16, 16)
ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789ab"


@pytest.fixture
def server():
    with serving() as running:
        yield running


@pytest.fixture
def client(server):
    with Client(server.address, timeout=30) as c:
        yield c


def adapted(client, labels=("a", "b"), shots=2):
    session = client.create_session()
    for k in range(shots):
        for cls, label in enumerate(labels):
            session.add_support(label, events(cls, 10 * cls + k), sensor=SENSOR)
    session.adapt()
    return session


def test_a_session_that_starts_from_the_class_means(client):
    (model,) = client.models()
    assert model.card["inner_loop"]["head"] == "meta"
    session = client.create_session(head="prototype", weight_bits=0)
    assert (session.info.settings.head, session.info.settings.inner_steps) == ("prototype", 0)
    for seed, (label, quadrant) in enumerate((("a", 0), ("b", 1), ("a", 0), ("b", 1))):
        session.add_support(label, events(quadrant, 10 + seed), sensor=SENSOR)
    result = session.adapt()
    assert result.steps == 0 and result.support_accuracy == 1.0
    assert [session.classify(events(q, 90 + q), sensor=SENSOR).label for q in (0, 1)] == ["a", "b"]
    assert session.refresh().settings.head == "prototype"
    with pytest.raises(ValueError, match="head must be one of"):
        client.create_session(head="nearest")


def test_sessions_adapt_classify_stream_export_and_import(client, tmp_path):
    (model,) = client.models()
    assert (model.name, model.ways, model.window_us, model.is_default) == ("tiny", 4, 4000, True)
    assert model.card["geometry"]["sensor_width"] == 16
    session = client.create_session(ways=3, weight_bits=6, rounding="stochastic", seed=7)
    s = session.info.settings
    assert (s.model, s.ways, s.weight_bits, s.rounding, s.grid, s.seed) == (
        "tiny",
        3,
        6,
        "stochastic",
        "global",
        7,
    )
    write(tmp_path / "a0.npz", events(0, 1), *SENSOR)
    session.add_support("a", tmp_path / "a0.npz")
    session.add_support("b", events(1, 2), sensor=SENSOR)
    session.add_support("c", iter(np.array_split(events(2, 3), 4)), sensor=SENSOR)
    session.add_support("a", bin_events(events(0, 4), GEOM))  # frames
    session.add_support("b", events(1, 5), sensor=SENSOR)
    session.add_support("c", events(2, 6), sensor=SENSOR)
    assert session.pending == 6
    sent = []
    result = session.adapt(on_sent=sent.append)
    assert session.pending == 0
    assert result.classes == ("a", "b", "c") and (result.examples, result.new_examples) == (6, 6)
    assert result.support_accuracy == 1.0 and result.loss_after < result.loss_before
    assert result.weights_version == 1 and result.timings.adapt_ms > 0
    assert sum(sent) == 5 * 300  # events of the five event examples; frames count none
    assert session.refresh().classes == ("a", "b", "c")

    write(tmp_path / "q.npz", events(0, 99), *SENSOR)
    assert session.classify(tmp_path / "q.npz").label == "a"
    p = session.classify(events(1, 98), sensor=SENSOR)
    assert p.label == "b" and list(p.probabilities) == ["a", "b", "c"] and p.events == 300
    assert sum(p.probabilities.values()) == pytest.approx(1.0)
    assert session.classify(bin_events(events(2, 97), GEOM)).label == "c"
    p = session.classify(events(0, 96), sensor=SENSOR, candidates=["b", "c"])
    assert list(p.probabilities) == ["b", "c"]

    windows = list(session.classify_stream(sequence([0, 1, 2, 0]), sensor=SENSOR))
    assert [w.label for w in windows] == ["a", "b", "c", "a"]
    assert [w.start_us for w in windows] == [0, 4000, 8000, 12000]
    assert [w.complete for w in windows] == [True, True, True, False]

    data = session.export()
    copy = client.import_session(data)
    assert copy.id != session.id and copy.info.classes == ("a", "b", "c")
    assert copy.classify(events(2, 95), sensor=SENSOR).label == "c"
    assert {s.id for s in client.sessions()} == {session.id, copy.id}
    copy.delete()
    assert [s.id for s in client.sessions()] == [session.id]
    with pytest.raises(ServerError) as e:
        client.session(copy.id)
    assert e.value.code == grpc.StatusCode.NOT_FOUND and copy.id in e.value.details


def test_server_errors_carry_the_code_and_the_servers_message(client):
    session = client.create_session()
    with pytest.raises(ServerError) as e:
        session.classify(events(0), sensor=SENSOR)
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "Adapt" in e.value.details and str(e.value).startswith("Classify: FAILED_PRECONDITION")
    session.add_support("a", events(3), sensor=(8, 8))  # x and y from 8 on an 8x8 sensor
    with pytest.raises(ServerError) as e:
        session.adapt()
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "events.x" in e.value.details
    with pytest.raises(ServerError) as e:
        client.create_session(ways=9)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "ways=9" in e.value.details
    with pytest.raises(ValueError, match="no support examples queued"):
        session.adapt()
    with pytest.raises(FileNotFoundError, match="missing.aedat4"):
        session.add_support("a", "missing.aedat4")


def test_a_source_that_fails_mid_example_cancels_the_adapt_and_raises_its_error(client):
    session = adapted(client)

    def unplugged():
        yield events(0, 50)
        raise RuntimeError("camera unplugged")

    session.add_support("a", events(0, 51), sensor=SENSOR)
    session.add_support("b", unplugged(), sensor=SENSOR)
    with pytest.raises(RuntimeError, match="camera unplugged"):
        session.adapt()
    info = session.refresh()
    assert (info.examples, info.weights_version) == (4, 1)  # the session is as it was
    with pytest.raises(RuntimeError, match="camera unplugged"):
        session.classify(unplugged(), sensor=SENSOR)
    with pytest.raises(ValueError, match="holds no events"):
        session.classify(events(0)[:0], sensor=SENSOR)


def test_packed_and_column_events_give_the_same_sessions_and_predictions(server):
    """The SDK packs events for a server that takes them; the packed and the column encoding
    adapt and classify queries and streams alike, to the last bit."""
    outcomes = []
    for packed in (True, False):
        with Client(server.address, timeout=30, packed_events=packed) as client:
            session = adapted(client, ("a", "b", "c"))
            queries = [session.classify(events(k % 3, 90 + k), sensor=SENSOR) for k in range(3)]
            stream = session.classify_stream(sequence([0, 1, 2, 0]), sensor=SENSOR)
            outcomes.append(
                (
                    [q.probabilities for q in queries],
                    [(w.start_us, w.probabilities) for w in stream],
                )
            )
            assert client._stub.packed is packed
    assert outcomes[0] == outcomes[1]


class Recorder(rpc.SpikeShotServicer):
    """A server announcing ``encodings``, answering every Classify empty and keeping its
    messages."""

    def __init__(self, encodings: list[int]):
        self.encodings, self.received = encodings, []

    def ListModels(self, request, context):
        return pb.ListModelsResponse(event_encodings=self.encodings)

    def CreateSession(self, request, context):
        return pb.Session(session_id="s")

    def Classify(self, requests, context):
        self.received += list(requests)
        return pb.ClassifyResponse()


@pytest.mark.parametrize(
    "encodings, packed",
    [([], False), ([pb.EVENT_ENCODING_COLUMNS], False), ([pb.EVENT_ENCODING_PACKED], True)],
)
def test_events_go_packed_only_to_a_server_that_announces_it(encodings, packed):
    recorder = Recorder(encodings)
    server = grpc.server(futures.ThreadPoolExecutor(2))
    rpc.add_SpikeShotServicer_to_server(recorder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with Client(f"127.0.0.1:{port}") as client:
            session = client.create_session()
            for _ in range(2):  # the server is asked once
                session.classify(events(0, 1), sensor=SENSOR)
    finally:
        server.stop(0)
    sent = [m.events for m in recorder.received if m.WhichOneof("kind") == "events"]
    assert len(sent) == 2 and all(bool(e.dt) == packed and bool(e.t) != packed for e in sent)
    assert {len(e.dt if packed else e.t) for e in sent} == {(4 if packed else 8) * 300}


class Flaky(rpc.SpikeShotServicer):
    """Answers UNAVAILABLE to the first ``failures`` calls of ListModels, INVALID_ARGUMENT to
    every GetSession, and counts the attempts."""

    def __init__(self, failures: int):
        self.failures, self.attempts = failures, {"ListModels": 0, "GetSession": 0}

    def ListModels(self, request, context):
        self.attempts["ListModels"] += 1
        if self.attempts["ListModels"] <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        return pb.ListModelsResponse(models=[pb.Model(name="m", card_json="{}")])

    def GetSession(self, request, context):
        self.attempts["GetSession"] += 1
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "session_id: not an id")


@pytest.fixture
def flaky():
    servicer = Flaky(failures=2)
    server = grpc.server(futures.ThreadPoolExecutor(2))
    rpc.add_SpikeShotServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(0)


def test_unavailable_is_retried_with_backoff_and_nothing_else_is(flaky):
    servicer, target = flaky
    with Client(target, retries=3, backoff_s=0.01) as client:
        assert [m.name for m in client.models()] == ["m"]
        assert servicer.attempts["ListModels"] == 3
        with pytest.raises(ServerError) as e:
            client.session("x")
        assert (
            e.value.code == grpc.StatusCode.INVALID_ARGUMENT
            and servicer.attempts["GetSession"] == 1
        )
    servicer.attempts["ListModels"] = 0
    with Client(target, retries=0) as client, pytest.raises(ServerUnavailable, match="warming up"):
        client.models()
    assert servicer.attempts["ListModels"] == 1


def test_an_unreachable_server_is_server_unavailable():
    start = time.monotonic()
    with (
        Client(f"127.0.0.1:{free_port()}", retries=1, backoff_s=0.01) as client,
        pytest.raises(ServerUnavailable) as e,
    ):
        client.models()
    assert e.value.code == grpc.StatusCode.UNAVAILABLE and time.monotonic() - start < 10


def test_the_deadline_ends_a_call_that_takes_too_long(client, tmp_path):
    session = adapted(client)
    slow = sources.replay(sources.from_array(sequence([0] * 250), SENSOR), chunk_us=4000)
    sent = []

    def counted():
        for chunk in slow:
            sent.append(len(chunk))
            yield chunk

    with pytest.raises(ServerError) as e:
        session.classify(sources.Source(*SENSOR, counted()), timeout=0.3)
    assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(sent) < 250  # the 1 s replay (250 chunks of 4 ms) was cut short


def test_bearer_tokens_authenticate_and_sessions_stay_their_callers(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{ALICE} alice\n{BOB} bob\n")
    with serving(tokens_file=str(tokens)) as running:
        with Client(running.address) as anonymous, pytest.raises(ServerError) as e:
            anonymous.models()
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in e.value.details
        with (
            Client(running.address, token=ALICE) as alice,
            Client(running.address, token=BOB) as bob,
        ):
            session = adapted(alice)
            assert [s.id for s in alice.sessions()] == [session.id] and bob.sessions() == []
            with pytest.raises(ServerError) as e:
                bob.session(session.id)
            assert e.value.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is absent")
def test_tls_and_mutual_tls(tmp_path):
    certs = make_certificates(tmp_path, ("robot-1",))
    tls = {"tls_cert": str(certs["server"]), "tls_key": str(certs["server.key"])}
    with serving(**tls) as running:
        target = f"localhost:{running.port}"
        with Client(target, ca=certs["ca"]) as client:
            assert client.models()[0].name == "tiny"
        with Client(target, retries=0) as plaintext, pytest.raises(ServerUnavailable):
            plaintext.models()
    with serving(**tls, tls_client_ca=str(certs["ca"])) as running:
        target = f"localhost:{running.port}"
        with Client(
            target, ca=certs["ca"], cert=certs["robot-1"], key=certs["robot-1.key"]
        ) as robot:
            assert robot.create_session().info.settings.model == "tiny"
        with (
            Client(target, ca=certs["ca"], retries=0) as stranger,
            pytest.raises(ServerUnavailable),
        ):
            stranger.models()


def test_a_stream_from_a_fake_live_camera(client, tmp_path):
    session = adapted(client)
    port = free_port()
    with fake_camera(tmp_path, sequence([0, 1, 1, 0, 0, 1]), port=port):
        camera = sources.dv_network("127.0.0.1", port)
        labels = [w.label for w in session.classify_stream(camera)]
    assert labels == ["a", "b", "b", "a", "a", "b"]


def test_the_asyncio_client(server, tmp_path):
    write(tmp_path / "b.npz", events(1, 3), *SENSOR)

    async def chunks(classes):
        for i, cls in enumerate(classes):
            yield sequence([cls])[1:] if i == 0 else events(cls, i, t0=4000 * i)
            await asyncio.sleep(0)

    async def scenario():
        async with AsyncClient(server.address, timeout=30) as client:
            assert [m.name for m in await client.models()] == ["tiny"]
            session = await client.create_session(ways=2)
            session.add_support("a", events(0, 1), sensor=SENSOR)
            session.add_support("b", tmp_path / "b.npz")
            session.add_support("a", events(0, 2), sensor=SENSOR)
            session.add_support("b", events(1, 4), sensor=SENSOR)
            result = await session.adapt()
            assert result.classes == ("a", "b") and result.support_accuracy == 1.0
            p = await session.classify(events(1, 9), sensor=SENSOR)
            assert p.label == "b"
            assert (await session.classify(chunks([0]), sensor=SENSOR)).label == "a"
            windows = [
                w.label async for w in session.classify_stream(sequence([0, 1, 1]), sensor=SENSOR)
            ]
            assert windows == ["a", "b", "b"]
            live = [w.label async for w in session.classify_stream(chunks([1, 0]), sensor=SENSOR)]
            assert live == ["b", "a"]
            copy = await client.import_session(await session.export())
            assert {s.id for s in await client.sessions()} == {session.id, copy.id}
            await copy.delete()
            with pytest.raises(ServerError) as e:
                await client.session(copy.id)
            assert e.value.code == grpc.StatusCode.NOT_FOUND

            async def unplugged():
                yield events(0)
                raise RuntimeError("camera unplugged")

            with pytest.raises(RuntimeError, match="camera unplugged"):
                await session.classify(unplugged(), sensor=SENSOR)
            with pytest.raises(FileNotFoundError):
                await session.classify(tmp_path / "missing.npy")

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_real_recordings_stream_through_the_client(realdata, client):
    session = adapted(client)
    names = sorted(json.loads((realdata / "REFERENCE.json").read_text()))
    assert len(names) == 5
    for name in names:
        # The file streamed by the client and its events sent as an array get one answer.
        prediction = session.classify(realdata / name)
        rec = read(realdata / name)
        same = session.classify(rec.events, sensor=(rec.width, rec.height))
        assert prediction.probabilities == pytest.approx(same.probabilities), name
        assert prediction.label == max(same.probabilities, key=same.probabilities.get), name
        assert prediction.events == same.events > 0, name
        windows = list(session.classify_stream(realdata / name))
        assert windows and [w.start_us for w in windows] == sorted(w.start_us for w in windows)


def test_the_robot_loop_example_learns_from_a_camera_and_classifies_its_stream(
    server, tmp_path, capsys
):
    path = Path(__file__).resolve().parents[1] / "clients" / "examples" / "robot_loop.py"
    spec = importlib.util.spec_from_file_location("robot_loop", path)
    robot_loop = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(robot_loop)
    port = free_port()
    with fake_camera(tmp_path, sequence([0, 0, 1, 1]), port=port, loop=True):
        code = robot_loop.main(
            [
                "--target",
                server.address,
                "--source",
                f"dv://127.0.0.1:{port}",
                "--seconds",
                "0.012",
                "--no-prompt",
                "--predictions",
                "6",
                "cup",
                "ball",
            ]
        )
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and out[0].startswith("learned cup, ball from ")
    assert len(out) == 7 and all(line.split()[2] in ("cup", "ball") for line in out[1:])
