"""The contract: the committed generated code matches the .proto, every element is documented, the
RPCs have their streaming shapes, and messages round-trip with the wire codec's columns."""

import re
import shutil
from pathlib import Path

import numpy as np

from spikeshot.events.array import make_events
from spikeshot.events.codec import decode, encode
from spikeshot.v1 import regenerate, spikeshot_pb2, spikeshot_pb2_grpc

PROTO = Path(regenerate.__file__).with_name("spikeshot.proto")


def test_generated_code_matches_the_proto(tmp_path):
    generated = regenerate.generate(tmp_path)
    stale = regenerate.drifted(generated, regenerate.HERE)
    assert stale == [], f"regenerate with: python -m spikeshot.v1.regenerate ({stale} differ)"
    assert regenerate.main(["--check"]) == 0


def test_check_names_the_drifted_file(tmp_path, capsys, monkeypatch):
    copy = tmp_path / "v1"
    copy.mkdir()
    for name in regenerate.GENERATED:
        shutil.copy(regenerate.HERE / name, copy / name)
    with open(copy / "spikeshot_pb2.pyi", "a") as f:
        f.write("# edited by hand\n")
    (copy / "spikeshot_pb2_grpc.py").unlink()
    generated = regenerate.generate(tmp_path / "out")
    assert regenerate.drifted(generated, copy) == ["spikeshot_pb2.pyi", "spikeshot_pb2_grpc.py"]
    monkeypatch.setattr(regenerate, "HERE", copy)
    assert regenerate.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "spikeshot_pb2.pyi: differs" in err and "spikeshot_pb2_grpc.py: differs" in err
    assert regenerate.main([]) == 0 and regenerate.drifted(generated, copy) == []


def test_every_element_of_the_proto_is_documented():
    lines = PROTO.read_text().splitlines()
    element = re.compile(
        r"^\s*(rpc |message |enum |oneof |service |"
        r"(optional |repeated )?[\w.]+ \w+ = \d+;|[A-Z0-9_]+ = \d+;)"
    )
    undocumented = [
        f"line {i + 1}: {line.strip()}"
        for i, line in enumerate(lines)
        if element.match(line) and not lines[i - 1].strip().startswith("//")
    ]
    assert undocumented == []
    assert sum(bool(element.match(line)) for line in lines) > 100


def test_the_rpcs_and_their_streaming_shapes():
    service = spikeshot_pb2.DESCRIPTOR.services_by_name["SpikeShot"]
    shapes = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert shapes == {
        "CreateSession": (False, False),
        "GetSession": (False, False),
        "ListSessions": (False, False),
        "DeleteSession": (False, False),
        "Adapt": (True, False),
        "Classify": (True, False),
        "ClassifyStream": (True, True),
        "ExportSession": (False, False),
        "ImportSession": (False, False),
        "ListModels": (False, False),
    }
    assert hasattr(spikeshot_pb2_grpc, "SpikeShotServicer")
    assert hasattr(spikeshot_pb2_grpc, "add_SpikeShotServicer_to_server")


def test_events_travel_as_the_codecs_columns():
    events = make_events([-5, 0, 2**40], [0, 640, 65535], [1, 2, 3], [1, 0, 1])
    cols = encode(events)
    msg = spikeshot_pb2.AdaptRequest(
        example=spikeshot_pb2.ExampleChunk(
            label="cup",
            end_of_example=True,
            events=spikeshot_pb2.Events(
                t=cols.t, x=cols.x, y=cols.y, p=cols.p, sensor_width=65535, sensor_height=480
            ),
        )
    )
    back = spikeshot_pb2.AdaptRequest.FromString(msg.SerializeToString())
    assert back.WhichOneof("kind") == "example" and back.example.WhichOneof("data") == "events"
    ev = back.example.events
    np.testing.assert_array_equal(decode(ev.t, ev.x, ev.y, ev.p), events)
    assert (ev.sensor_width, ev.sensor_height, back.example.label) == (65535, 480, "cup")
    header = spikeshot_pb2.AdaptRequest(header=spikeshot_pb2.AdaptHeader(session_id="s"))
    back = spikeshot_pb2.AdaptRequest.FromString(header.SerializeToString())
    assert back.WhichOneof("kind") == "header" and back.header.session_id == "s"


def test_frames_settings_and_responses_round_trip():
    frames = np.arange(4 * 2 * 3 * 5, dtype="<u2").reshape(4, 2, 3, 5)
    msg = spikeshot_pb2.ClassifyRequest(
        frames=spikeshot_pb2.Frames(
            bins=4, height=3, width=5, type=spikeshot_pb2.FRAME_TYPE_UINT16, data=frames.tobytes()
        )
    )
    back = spikeshot_pb2.ClassifyRequest.FromString(msg.SerializeToString()).frames
    assert np.array_equal(np.frombuffer(back.data, "<u2").reshape(4, 2, 3, 5), frames)
    unset = spikeshot_pb2.SessionSettings(model="tiny")
    zero = spikeshot_pb2.SessionSettings(weight_bits=0)
    assert not unset.HasField("weight_bits")  # unset: the model card's bits
    zero = spikeshot_pb2.SessionSettings.FromString(zero.SerializeToString())
    assert zero.HasField("weight_bits") and zero.weight_bits == 0  # explicitly float32
    window = spikeshot_pb2.ClassifyStreamResponse(
        window_start_us=-4000,
        window_end_us=0,
        label="b",
        complete=False,
        probabilities=[
            spikeshot_pb2.LabelProbability(label="a", probability=0.25),
            spikeshot_pb2.LabelProbability(label="b", probability=0.75),
        ],
        timings=spikeshot_pb2.Timings(decode_ms=0.5, total_ms=2.0),
    )
    back = spikeshot_pb2.ClassifyStreamResponse.FromString(window.SerializeToString())
    assert back == window and back.window_start_us == -4000
    assert [p.label for p in back.probabilities] == ["a", "b"]
