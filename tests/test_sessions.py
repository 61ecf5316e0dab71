"""The session store: settings, weights as integers plus scale, ownership, expiry, caps, commit,
the session bytes format and snapshots."""

import json
import logging
import threading

import numpy as np
import pytest
import torch

from spikeshot.models.quantize import Quantizer
from spikeshot.service.errors import InvalidArgument, NotFound, ResourceExhausted
from spikeshot.service.memory_store import SUFFIX, MemoryStore
from spikeshot.service.sessions import (
    FORMAT,
    Settings,
    Shot,
    State,
    Weights,
    classes_of,
    dump,
    load,
)

SETTINGS = Settings(model="tiny", ways=3, inner_steps=1, step_size=1.0, weight_bits=8)


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def adapted_state(bits=8, version=1) -> State:
    q = Quantizer(bits) if bits else None
    raw = {"out.weight": torch.randn(3, 5) * 0.3, "out.bias": torch.randn(3) * 0.3}
    scales = q.scales(raw) if q else None
    params = q.fake_all(raw, scales) if q else raw
    shape = (2, 2, 4, 4)
    support = (
        Shot("a", np.ones(shape, np.float32)),
        Shot("b", np.zeros(shape, np.float32)),
        Shot("a", np.full(shape, 2, np.float32)),
    )
    return State(support, classes_of(support), Weights.store(params, bits, scales), version)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"ways": 1}, "ways"),
        ({"inner_steps": 0}, "inner_steps"),
        ({"step_size": -1.0}, "step_size"),
        ({"step_size": float("nan")}, "step_size"),
        ({"weight_bits": 1}, "weight_bits"),
        ({"weight_bits": 17}, "weight_bits"),
        ({"rounding": "up"}, "rounding"),
        ({"grid": "layer"}, "grid"),
        ({"seed": -1}, "seed"),
        ({"head": "nearest"}, "head"),
        ({"head": "meta", "inner_steps": 0}, "inner_steps"),
    ],
)
def test_settings_name_the_bad_field(change, field):
    with pytest.raises(InvalidArgument) as err:
        Settings(**{**SETTINGS.to_dict(), **change})
    assert err.value.field == field and field in str(err.value)


@pytest.mark.parametrize("bits, dtype", [(8, torch.int8), (4, torch.int8), (12, torch.int16)])
def test_quantized_weights_are_integers_plus_scale_and_restore_exactly(bits, dtype):
    q = Quantizer(bits, mode="per_tensor")
    raw = {"w": torch.randn(40, 30), "b": torch.randn(40)}
    scales = q.scales(raw)
    on_grid = q.fake_all(raw, scales)
    w = Weights.store(on_grid, bits, scales)
    assert all(t.dtype == dtype for t in w.tensors.values())
    assert w.nbytes == (40 * 30 + 40) * dtype.itemsize
    back = w.values()
    assert all(torch.equal(back[k], on_grid[k]) for k in raw)


@pytest.mark.parametrize("bits", [8, 0])
def test_hidden_weights_are_kept_as_the_tensors_shared_gives(bits):
    """With ``shared``, only the readout is copied: the hidden layers' tensors are those it
    gives (the engine's: one for all sessions with equal levels), their values unchanged."""
    raw = {"conv0.weight": torch.randn(4, 2, 3, 3), "out.weight": torch.randn(5, 4)}
    scales = {k: 1 / 128 for k in raw} if bits else None
    on_grid = Quantizer(8).fake_all(raw, scales) if bits else raw
    held, asked = {}, []

    def shared(name, tensor):
        asked.append(name)
        return held.setdefault(name, tensor.clone())

    a = Weights.store(on_grid, bits, scales, shared)
    b = Weights.store(on_grid, bits, scales, shared)
    assert asked == ["conv0.weight", "conv0.weight"]
    assert a.tensors["conv0.weight"] is b.tensors["conv0.weight"] is held["conv0.weight"]
    assert a.tensors["out.weight"] is not b.tensors["out.weight"]
    assert all(torch.equal(a.values()[k], on_grid[k].float()) for k in raw)


def test_float_weights_are_kept_as_float32():
    w = Weights.store({"w": torch.ones(2, dtype=torch.float64)})
    assert w.scales is None and w.tensors["w"].dtype == torch.float32 and w.nbytes == 8


@pytest.mark.parametrize("bits", [8, 0])
def test_dump_and_load_round_trip(bits):
    store = MemoryStore(60, 10, 10)
    state = adapted_state(bits)
    settings = Settings(**{**SETTINGS.to_dict(), "weight_bits": bits})
    session = store.create("robot", settings, "f" * 64, state)
    data = dump(session)
    info, settings, back = load(data)
    assert settings == session.settings and info["fingerprint"] == "f" * 64
    assert "owner" not in info and "id" not in info  # an export does not carry them
    assert back.classes == ("a", "b") and back.version == 1
    assert [s.label for s in back.support] == ["a", "b", "a"]
    for s, t in zip(back.support, state.support, strict=True):
        np.testing.assert_array_equal(s.frames, t.frames)
    for k, v in state.weights.tensors.items():
        assert torch.equal(back.weights.tensors[k], v)
    assert back.weights.scales == state.weights.scales
    private, _, _ = load(dump(session, private=True))
    assert private["owner"] == "robot" and private["id"] == session.id


def _tamper(data: bytes, **changes) -> bytes:
    """Rewrite the session JSON in the safetensors header (kept the same length by padding)."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    info = json.loads(header["__metadata__"]["session"])
    info.update(changes)
    header["__metadata__"]["session"] = json.dumps(info)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + data[8 + size :]


def test_the_prototype_head_may_take_no_step_and_files_without_a_head_are_meta():
    means_alone = {**SETTINGS.to_dict(), "head": "prototype", "inner_steps": 0}
    assert Settings(**means_alone).inner_steps == 0
    with pytest.raises(InvalidArgument, match="inner_steps must be an integer >= 1 with the meta"):
        Settings(**{**SETTINGS.to_dict(), "inner_steps": 0})
    store = MemoryStore(60, 10, 10)
    data = dump(store.create("", SETTINGS, "f", adapted_state()))
    old = {k: v for k, v in SETTINGS.to_dict().items() if k != "head"}  # written before heads
    assert load(_tamper(data, settings=old))[1].head == "meta"
    with pytest.raises(ValueError, match="settings: head must be one of"):
        load(_tamper(data, settings={**SETTINGS.to_dict(), "head": "nearest"}))


def test_load_rejects_what_is_not_a_consistent_session():
    store = MemoryStore(60, 10, 10)
    data = dump(store.create("", SETTINGS, "f", adapted_state()))
    with pytest.raises(ValueError, match="not a safetensors file"):
        load(b"\x05\x00\x00\x00\x00\x00\x00\x00{bad}")
    with pytest.raises(ValueError, match="format must be 'spikeshot-session/1'"):
        load((8).to_bytes(8, "little") + b'{"a": 1}')
    with pytest.raises(ValueError, match="3 support frames but 2 labels"):
        load(_tamper(data, support_labels=["a", "b"]))
    with pytest.raises(ValueError, match="classes .* do not match"):
        load(_tamper(data, classes=["b", "a"]))
    with pytest.raises(ValueError, match="is not 4-bit integers"):
        load(_tamper(data, settings={**SETTINGS.to_dict(), "weight_bits": 4}))
    with pytest.raises(ValueError, match="version 0 does not match 2 weight tensors"):
        load(_tamper(data, version=0))
    with pytest.raises(ValueError, match="invalid session data.*ways"):
        load(_tamper(data, settings={**SETTINGS.to_dict(), "ways": 0}))
    size = int.from_bytes(data[:8], "little")
    assert json.loads(data[8 : 8 + size])["__metadata__"]["format"] == FORMAT


def test_owners_see_only_their_sessions():
    store = MemoryStore(60, 10, 10)
    a = store.create("alice", SETTINGS, "f")
    b = store.create("bob", SETTINGS, "f")
    assert store.get("alice", a.id) is a
    with pytest.raises(NotFound, match=b.id):
        store.get("alice", b.id)
    with pytest.raises(NotFound):
        store.delete("alice", b.id)
    assert [s.id for s in store.list("bob")] == [b.id]
    store.delete("bob", b.id)
    with pytest.raises(NotFound):
        store.get("bob", b.id)


def test_idle_sessions_expire_but_use_and_a_running_adapt_keep_them():
    clock = Clock()
    store = MemoryStore(100, 10, 10, clock=clock)
    idle, used, busy = (store.create("", SETTINGS, "f") for _ in range(3))
    clock.now += 60
    store.get("", used.id)
    assert store.expires_at(used) == clock.now + 100
    clock.now += 50  # idle and busy are 110 s idle, used 50 s
    with busy.adapting:
        assert {s.id for s in store.list("")} == {used.id, busy.id}
        with pytest.raises(NotFound):
            store.get("", idle.id)
    assert len(store) == 2
    clock.now += 1
    assert [s.id for s in store.list("")] == [used.id]


def test_caps_in_total_and_per_owner():
    store = MemoryStore(100, 3, 2, clock=Clock())
    store.create("a", SETTINGS, "f")
    store.create("a", SETTINGS, "f")
    with pytest.raises(ResourceExhausted, match="maximum of 2 sessions"):
        store.create("a", SETTINGS, "f")
    store.create("b", SETTINGS, "f")
    with pytest.raises(ResourceExhausted, match="server holds its maximum of 3"):
        store.create("c", SETTINGS, "f")


def test_commit_swaps_the_state_and_fails_for_a_deleted_session():
    clock = Clock()
    store = MemoryStore(100, 10, 10, clock=clock)
    s = store.create("", SETTINGS, "f")
    old = s.state
    new = adapted_state()
    clock.now += 5
    store.commit(s, new)
    assert s.state is new and old.weights is None and s.last_used == clock.now
    store.delete("", s.id)
    with pytest.raises(NotFound, match="deleted during the Adapt"):
        store.commit(s, adapted_state(version=2))
    assert s.state is new


def test_snapshots_are_written_atomically_and_restored(tmp_path):
    clock = Clock()
    store = MemoryStore(100, 10, 10, tmp_path, clock)
    kept = store.create("robot", SETTINGS, "f")
    store.commit(kept, adapted_state())
    gone = store.create("robot", SETTINGS, "f")
    store.delete("robot", gone.id)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{kept.id}.safetensors"]
    (tmp_path / f".{kept.id}{SUFFIX}.tmp-123").write_bytes(b"half")  # a write cut short
    clock.now += 1000
    seen = []
    again = MemoryStore(100, 10, 10, tmp_path, clock)
    assert again.restore(lambda *args: seen.append(args) or args[2]) == [kept.id]
    s = again.get("robot", kept.id)
    assert s.state.classes == ("a", "b") and s.state.version == 1 and s.created == kept.created
    assert s.last_used == clock.now  # idle time starts again at the restart
    assert seen[0][:2] == (SETTINGS, "f")
    assert not (tmp_path / f".{kept.id}{SUFFIX}.tmp-123").exists()


def test_unreadable_or_refused_snapshots_are_skipped(tmp_path, caplog):
    store = MemoryStore(100, 10, 10, tmp_path)
    good = store.create("", SETTINGS, "good")
    store.create("", SETTINGS, "other weights")
    (tmp_path / "junk.safetensors").write_bytes(b"not a session")

    def admit(settings, fingerprint, state):
        if fingerprint != "good":
            raise ValueError("refused: other weights")
        return state

    with caplog.at_level(logging.WARNING):
        restored = MemoryStore(100, 10, 10, tmp_path).restore(admit)
    assert restored == [good.id]
    assert "junk.safetensors not restored" in caplog.text and "refused" in caplog.text
    assert (tmp_path / "junk.safetensors.rejected").exists()  # moved aside for a person to look at


def test_a_commit_racing_a_delete_leaves_no_snapshot(tmp_path):
    store = MemoryStore(100, 10, 10, tmp_path)
    s = store.create("", SETTINGS, "f")
    barrier = threading.Barrier(2)
    real = store._write

    def slow_write(session):
        barrier.wait()
        barrier.wait()
        real(session)

    store._write = slow_write
    t = threading.Thread(target=lambda: store.commit(s, adapted_state()))
    t.start()
    barrier.wait()  # the commit has swapped the state and is about to write
    store._write = real
    store.delete("", s.id)
    barrier.wait()
    t.join()
    assert list(tmp_path.iterdir()) == []
