"""Bearer tokens, TLS and mutual TLS on a real server, and sessions owned by their caller: another
caller can neither see nor touch them."""

from __future__ import annotations

import contextlib
import shutil

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from service_fixtures import (
    adapt_requests,
    classify_requests,
    make_certificates,
    new_session,
    serving,
    status_of,
    support,
)

from spikeshot.service.auth import ANONYMOUS, load_tokens
from spikeshot.v1 import spikeshot_pb2 as pb
from spikeshot.v1 import spikeshot_pb2_grpc as pb_grpc

ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789ab"
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is absent")


@pytest.fixture
def tokens_file(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"# token caller\n{ALICE} alice\n\n{BOB}   bob  # the second robot\n")
    return path


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is absent")
    return make_certificates(tmp_path_factory.mktemp("certs"), ("robot-1", "robot-2"))


def as_caller(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


@contextlib.contextmanager
def secure_stub(running, certs, client: str | None = None):
    key, chain = (
        (None, None)
        if client is None
        else (certs[f"{client}.key"].read_bytes(), certs[client].read_bytes())
    )
    credentials = grpc.ssl_channel_credentials(certs["ca"].read_bytes(), key, chain)
    with grpc.secure_channel(f"localhost:{running.port}", credentials) as channel:
        yield pb_grpc.SpikeShotStub(channel)


def test_tokens_file_is_parsed_and_its_errors_name_the_line(tmp_path, tokens_file):
    assert sorted(load_tokens(tokens_file).values()) == ["alice", "bob"]
    for text, message in (
        ("short bob\n", r"tokens:1: the token of 'bob' has 5 characters"),
        (f"{ALICE}\n", r"tokens:1: expected 'TOKEN CALLER', got 1 fields"),
        (f"{ALICE} alice\n{ALICE} eve\n", r"tokens:2: the token of 'eve' is already given to"),
        ("# nobody\n", r"no tokens"),
    ):
        (tmp_path / "tokens").write_text(text)
        with pytest.raises(ValueError, match=message):
            load_tokens(tmp_path / "tokens")


def test_tokens_authenticate_and_sessions_are_owned(tokens_file):
    with (
        serving(tokens_file=str(tokens_file)) as running,
        grpc.insecure_channel(running.address) as channel,
    ):
        stub = pb_grpc.SpikeShotStub(channel)
        code, details = status_of(stub.ListModels, pb.ListModelsRequest())
        assert code == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in details
        code, details = status_of(
            stub.ListModels, pb.ListModelsRequest(), metadata=as_caller("x" * 20)
        )
        assert code == grpc.StatusCode.UNAUTHENTICATED and "not one this server" in details
        code, _ = status_of(stub.Adapt, adapt_requests("any", support("a", "b")))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        health = health_pb2_grpc.HealthStub(channel)  # probes need no token
        assert (
            health.Check(health_pb2.HealthCheckRequest()).status
            == health_pb2.HealthCheckResponse.SERVING
        )

        alice, bob = as_caller(ALICE), as_caller(BOB)
        sid = stub.CreateSession(pb.CreateSessionRequest(), metadata=alice).session_id
        stub.Adapt(adapt_requests(sid, support("cup", "ball")), metadata=alice)
        assert running.engine.sessions.get("alice", sid).owner == "alice"
        assert stub.Classify(classify_requests(sid, 0), metadata=alice).label == "cup"

        assert list(stub.ListSessions(pb.ListSessionsRequest(), metadata=bob).sessions) == []
        stream = iter([pb.ClassifyStreamRequest(config=pb.StreamConfig(session_id=sid))])
        for call, request in (
            (stub.GetSession, pb.GetSessionRequest(session_id=sid)),
            (stub.ExportSession, pb.ExportSessionRequest(session_id=sid)),
            (stub.DeleteSession, pb.DeleteSessionRequest(session_id=sid)),
            (stub.Adapt, adapt_requests(sid, support("x", "y"))),
            (stub.Classify, classify_requests(sid, 0)),
            (lambda r, **kw: list(stub.ClassifyStream(r, **kw)), stream),
        ):
            code, details = status_of(call, request, metadata=bob)
            assert code == grpc.StatusCode.NOT_FOUND and sid in details
        got = stub.GetSession(pb.GetSessionRequest(session_id=sid), metadata=alice)
        assert (list(got.classes), got.weights_version) == (["cup", "ball"], 1)
        assert [
            s.session_id
            for s in stub.ListSessions(pb.ListSessionsRequest(), metadata=alice).sessions
        ] == [sid]


@needs_openssl
def test_tls_server_certificate(certs):
    with serving(tls_cert=str(certs["server"]), tls_key=str(certs["server.key"])) as running:
        with secure_stub(running, certs) as stub:
            sid = new_session(stub)
            assert running.engine.sessions.get(ANONYMOUS, sid).owner == ANONYMOUS
        with grpc.insecure_channel(running.address) as channel:
            code, _ = status_of(
                pb_grpc.SpikeShotStub(channel).ListModels, pb.ListModelsRequest(), timeout=5
            )
            assert code == grpc.StatusCode.UNAVAILABLE


@needs_openssl
def test_mutual_tls_owner_is_the_client_certificate(certs, tokens_file):
    settings = {
        "tls_cert": str(certs["server"]),
        "tls_key": str(certs["server.key"]),
        "tls_client_ca": str(certs["ca"]),
    }
    with serving(**settings) as running:
        with secure_stub(running, certs) as stub:  # no client certificate: refused
            code, _ = status_of(stub.ListModels, pb.ListModelsRequest(), timeout=5)
            assert code == grpc.StatusCode.UNAVAILABLE
        with (
            secure_stub(running, certs, "robot-1") as one,
            secure_stub(running, certs, "robot-2") as two,
        ):
            sid = new_session(one)
            assert running.engine.sessions.get("robot-1", sid).owner == "robot-1"
            assert [s.session_id for s in one.ListSessions(pb.ListSessionsRequest()).sessions] == [
                sid
            ]
            code, _ = status_of(two.GetSession, pb.GetSessionRequest(session_id=sid))
            assert code == grpc.StatusCode.NOT_FOUND
    with (
        serving(**settings, tokens_file=str(tokens_file)) as running,
        secure_stub(running, certs, "robot-1") as stub,
    ):
        code, _ = status_of(stub.ListModels, pb.ListModelsRequest())
        assert code == grpc.StatusCode.UNAUTHENTICATED  # with a tokens file, a token is needed
        sid = stub.CreateSession(pb.CreateSessionRequest(), metadata=as_caller(BOB)).session_id
        assert running.engine.sessions.get("bob", sid).owner == "bob"
