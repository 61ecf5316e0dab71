"""What a client in another language reads off the contract holds on a real server: reflection v1
and v1alpha, the typed model card and the announced limits, the documented rules (tokens, limits'
defaults), and error messages worded in the wire's terms."""

from __future__ import annotations

import json
import re
from dataclasses import fields

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2 as rpb
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from service_fixtures import (
    GEOM,
    adapt_requests,
    classify_requests,
    client,
    events,
    new_session,
    serving,
    status_of,
    support,
    wire,
)

from spikeshot.clients import Client
from spikeshot.clients.results import ServerLimits
from spikeshot.service import auth, inputs, windows
from spikeshot.service.config import ServerConfig
from spikeshot.service.errors import MAX_TEXT_CHARS
from spikeshot.v1 import regenerate
from spikeshot.v1 import spikeshot_pb2 as pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PROTO = regenerate.HERE / "spikeshot.proto"
TOKEN = "contract-token-0123456789"


@pytest.fixture(scope="module")
def server():
    with serving(max_events=5000, max_support_examples=7, io_threads=5) as running:
        yield running


def reflect(channel, version: str, *requests: rpb.ServerReflectionRequest, metadata=()):
    """The answers of ``grpc.reflection.<version>`` to ``requests`` (the v1 and v1alpha messages are
    the same bytes on the wire, so v1alpha's classes serve for both)."""
    call = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=rpb.ServerReflectionRequest.SerializeToString,
        response_deserializer=rpb.ServerReflectionResponse.FromString,
    )
    return list(call(iter(requests), timeout=10, metadata=metadata))


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_v1_and_v1alpha_list_and_describe_the_services(server, version):
    with grpc.insecure_channel(server.address) as channel:
        listed, described, missing = reflect(
            channel,
            version,
            rpb.ServerReflectionRequest(list_services=""),
            rpb.ServerReflectionRequest(file_containing_symbol="spikeshot.v1.SpikeShot"),
            rpb.ServerReflectionRequest(file_containing_symbol="spikeshot.v1.NoSuchThing"),
        )
        names = {s.name for s in listed.list_services_response.service}
        assert {
            "spikeshot.v1.SpikeShot",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        } <= names
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(f)
            for f in described.file_descriptor_response.file_descriptor_proto
        ]
        (spikeshot,) = [f for f in files if f.package == "spikeshot.v1"]
        assert {"ModelCard", "ServerLimits"} <= {m.name for m in spikeshot.message_type}
        assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
        (itself,) = reflect(
            channel,
            version,
            rpb.ServerReflectionRequest(
                file_containing_symbol="grpc.reflection.v1.ServerReflection"
            ),
        )
        (v1,) = [
            descriptor_pb2.FileDescriptorProto.FromString(f)
            for f in itself.file_descriptor_response.file_descriptor_proto
        ]
        assert (
            v1.name == "grpc/reflection/v1/reflection.proto" and v1.package == "grpc.reflection.v1"
        )
        method = v1.service[0].method[0]
        assert method.input_type == ".grpc.reflection.v1.ServerReflectionRequest"
        assert method.client_streaming and method.server_streaming


def test_reflection_v1_needs_the_token_like_the_service(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN} robot\n")
    with serving(tokens_file=str(tokens)) as running, grpc.insecure_channel(running.address) as ch:
        ask = rpb.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as e:
            reflect(ch, "v1", ask)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        (answer,) = reflect(ch, "v1", ask, metadata=(("authorization", f"Bearer {TOKEN}"),))
        assert "spikeshot.v1.SpikeShot" in {s.name for s in answer.list_services_response.service}


def test_list_models_answers_the_typed_card_beside_the_json_one(server):
    with client(server) as stub:
        (model,) = stub.ListModels(pb.ListModelsRequest()).models
    card = json.loads(model.card_json)
    typed = model.card
    assert (typed.format, typed.name, typed.fingerprint) == (
        card["format"],
        model.name,
        model.fingerprint,
    )
    assert typed.parameters == model.parameters == card["parameters"]
    net = card["model"]
    for name in ("arch", "ways", "bins", "burn_in", "kernel", "pool", "pool_kind", "reset"):
        assert getattr(typed.network, name) == net[name], name
    for name in ("alpha", "beta", "alpha_rp", "w_rp", "input_gain", "surrogate_slope"):
        assert getattr(typed.network, name) == net[name], name  # doubles: exactly the card's
    assert list(typed.network.channels) == net["channels"]
    assert [typed.network.input_height, typed.network.input_width] == net["input_hw"]
    assert typed.network.HasField("input_clip") and typed.network.input_clip == net["input_clip"]
    g = typed.geometry
    assert (g.sensor_width, g.sensor_height, g.downsample, g.bins, g.window_us) == (
        GEOM.sensor_width,
        GEOM.sensor_height,
        GEOM.downsample,
        GEOM.bins,
        GEOM.window_us,
    )
    assert (g.crop.x0, g.crop.y0, g.crop.width, g.crop.height) == GEOM.crop_box  # no crop: all
    assert (g.height, g.width, g.bin_us) == (model.height, model.width, GEOM.bin_us)
    assert (typed.inner_loop.steps, typed.inner_loop.step_size) == (2, 5.0)
    assert list(typed.inner_loop.learned_step_sizes) == []
    q = typed.quantization
    assert (q.bits, q.grid, q.rounding) == (8, pb.WEIGHT_GRID_GLOBAL, pb.ROUNDING_NEAREST)
    assert not q.HasField("frac_bits")


def test_list_models_announces_the_limits_in_force(server):
    with client(server) as stub:
        limits = stub.ListModels(pb.ListModelsRequest()).limits
    c = server.config
    assert (limits.max_events, limits.max_support_examples) == (5000, 7)
    assert limits.max_message_bytes == c.max_message_bytes
    assert limits.max_inner_steps == c.max_inner_steps
    assert (limits.max_sessions, limits.max_sessions_per_owner) == (
        c.max_sessions,
        c.max_sessions_per_owner,
    )
    assert limits.session_ttl_s == c.session_ttl_s
    assert limits.max_text_chars == MAX_TEXT_CHARS
    assert limits.max_window_us == windows.MAX_WINDOW_US
    assert limits.max_timestamp_us == inputs.MAX_TIMESTAMP_US
    assert limits.max_sensor_size == inputs.MAX_SENSOR
    assert limits.max_queued_jobs == c.queue_limit
    assert limits.max_concurrent_calls == 10  # two per io thread
    with Client(server.address, timeout=10) as python_client:
        assert python_client.limits() == ServerLimits.from_proto(limits)
        assert python_client.limits().max_events == 5000


def _comments() -> str:
    """The .proto's comments as one line of text."""
    lines = [line.strip() for line in PROTO.read_text().splitlines()]
    return " ".join(line[2:].strip() for line in lines if line.startswith("//"))


def test_the_proto_states_the_rules_the_server_applies():
    text = _comments()
    assert "authorization: Bearer TOKEN" in text
    assert f"A token is at least {auth.MIN_TOKEN_CHARS} characters" in text
    assert f"at most {MAX_TEXT_CHARS} characters" in text
    defaults = {f.name: f.default for f in fields(ServerConfig)}
    stated = {
        "max_message_bytes": "16 MiB",
        "max_events": f"{defaults['max_events']:,}",
        "max_support_examples": defaults["max_support_examples"],
        "max_inner_steps": defaults["max_inner_steps"],
        "max_sessions_per_owner": defaults["max_sessions_per_owner"],
        "max_sessions": defaults["max_sessions"],
        "session_ttl_s": f"{defaults['session_ttl_s']:.0f}",
        "max_queued_jobs": defaults["queue_limit"],
        "max_concurrent_calls": 2 * defaults["io_threads"],
    }
    assert defaults["max_message_bytes"] == 16 * 1024 * 1024
    for name, value in stated.items():
        assert re.search(rf"`{name}`[^`\[]*\[{re.escape(str(value))}\]", text), name
    assert not re.search(r"python|numpy|spikeshot\.\w|\.py\b", text, re.IGNORECASE)


def test_error_messages_speak_the_wires_language(server):
    with client(server) as stub:
        sid = new_session(stub)
        code, details = status_of(
            stub.CreateSession, pb.CreateSessionRequest(settings=pb.SessionSettings(ways=9))
        )
        assert code == INVALID and details == "ways=9 exceeds model 'tiny', which has 4 outputs"
        frames = pb.Frames(bins=4, height=8, width=8, data=b"")
        chunk = pb.AdaptRequest(
            example=pb.ExampleChunk(label="cup", frames=frames, end_of_example=True)
        )
        header = pb.AdaptRequest(header=pb.AdaptHeader(session_id=sid))
        code, details = status_of(stub.Adapt, iter([header, chunk]))
        assert code == INVALID and details == (
            "frames.type must be FRAME_TYPE_FLOAT32 or FRAME_TYPE_UINT16, "
            "got FRAME_TYPE_UNSPECIFIED"
        )
        code, details = status_of(stub.Adapt, iter([chunk]))
        assert code == INVALID and details == (
            "the first message must set header (the AdaptHeader), got a message that sets example"
        )
        too_many = events(0, n=6000)  # the server takes 5000 per example
        code, details = status_of(
            stub.Adapt,
            iter(
                [
                    header,
                    pb.AdaptRequest(example=pb.ExampleChunk(label="cup", events=wire(too_many))),
                ]
            ),
        )
        assert code == INVALID and details.startswith("example 0 ('cup'), chunk 0: events: ")
        assert "events.events" not in details
        backwards = events(0)[::-1].copy()
        code, details = status_of(
            stub.Adapt,
            iter(
                [
                    header,
                    pb.AdaptRequest(example=pb.ExampleChunk(label="cup", events=wire(backwards))),
                ]
            ),
        )
        assert code == INVALID and details == (
            "example 0 ('cup'), chunk 0: events.t: timestamps must not decrease (first bad index 1)"
        )
        stub.Adapt(adapt_requests(sid, support("cup", "ball")))
        code, details = status_of(
            stub.Classify,
            iter(
                [
                    pb.ClassifyRequest(header=pb.ClassifyHeader(session_id=sid)),
                    pb.ClassifyRequest(header=pb.ClassifyHeader(session_id=sid)),
                ]
            ),
        )
        assert code == INVALID and details == (
            "message 1: every message after the ClassifyHeader must set events or frames"
        )
        assert stub.Classify(classify_requests(sid, 0)).label == "cup"
        for data in (b"\x05\x00\x00\x00\x00\x00\x00\x00{x}", b"", b"junk"):
            code, details = status_of(stub.ImportSession, pb.ImportSessionRequest(data=data))
            assert code == INVALID and details == (
                "data: not a safetensors file, which a spikeshot-session/1 file is: it must start "
                "with an 8-byte little-endian length and a JSON header of that length"
            )
        exported = stub.ExportSession(pb.ExportSessionRequest(session_id=sid)).data
        code, details = status_of(stub.ImportSession, pb.ImportSessionRequest(data=exported[:-10]))
        assert code == INVALID and details == (
            "data: not a safetensors file, which a spikeshot-session/1 file is: its tensor data is "
            "truncated or does not match its header"
        )


def test_a_response_over_max_message_bytes_is_resource_exhausted():
    with serving(max_message_bytes=1024) as running, client(running) as stub:
        code, details = status_of(stub.ListModels, pb.ListModelsRequest())  # its card is larger
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details


def test_an_import_names_unknown_or_missing_settings_not_a_python_signature(server):
    with client(server) as stub:
        sid = new_session(stub)
        data = stub.ExportSession(pb.ExportSessionRequest(session_id=sid)).data
        size = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + size])["__metadata__"]
        for change, expected in (
            (lambda s: s.update(colour="red"), "settings: unknown fields ['colour']"),
            (lambda s: s.pop("ways"), "settings: no 'ways'"),
        ):
            info = json.loads(meta["session"])
            change(info["settings"])
            tampered = save_tensors(
                load_tensors(data), metadata={**meta, "session": json.dumps(info)}
            )
            code, details = status_of(stub.ImportSession, pb.ImportSessionRequest(data=tampered))
            assert code == INVALID and details == f"data: invalid session data: {expected}"
