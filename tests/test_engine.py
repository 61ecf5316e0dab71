"""The in-process engine: adapt and classify on synthetic events, every error, all-or-nothing
Adapts, one weight set per Classify, expiry, caps, overload, export/import, snapshots across a
restart, sensors of any size, live streams; and the server configuration it reads."""

import argparse
import itertools
import logging
import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest
import service_fixtures
import torch
from service_fixtures import CFG, GEOM

from spikeshot.clients import results
from spikeshot.events.array import make_events
from spikeshot.events.binning import bin_events
from spikeshot.events.codec import encode
from spikeshot.models import checkpoint, snn
from spikeshot.models.checkpoint import Checkpoint, save
from spikeshot.models.network import HEAD, Network
from spikeshot.service.config import ServerConfig, add_flags, flag_overrides
from spikeshot.service.engine import Engine
from spikeshot.service.errors import (
    ERRORS,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from spikeshot.service.executor import Control, Executor
from spikeshot.service.inputs import Chunk, EventInput, FrameInput


def tiny(seed=0, **kw) -> Checkpoint:
    """The service tests' tiny SNN with 8-bit sessions, with ``kw`` changed."""
    return replace(service_fixtures.tiny(seed), **kw)


class Clock:
    def __init__(self):
        self.now = 1.7e9

    def __call__(self):
        return self.now


@pytest.fixture
def engine():
    e = Engine([tiny()], ServerConfig(workers=2, queue_limit=4))
    yield e
    e.close()


def events(cls, seed=0, n=300, width=16, height=16, t0=0):
    """Events in quadrant ``cls`` (0 top left, 1 top right, 2 bottom left, 3 bottom right)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, width // 2, n) + width // 2 * (cls % 2)
    y = rng.integers(0, height // 2, n) + height // 2 * (cls // 2)
    return make_events(t0 + np.sort(rng.integers(0, 4000, n)), x, y, rng.integers(0, 2, n))


def shot(label, cls, seed=0, parts=1, width=16, height=16):
    """One example as ``parts`` wire chunks."""
    ev = events(cls, seed, width=width, height=height)
    pieces = np.array_split(ev, parts)
    return [
        Chunk(label if i == 0 else "", EventInput(encode(p), width, height), i == parts - 1)
        for i, p in enumerate(pieces)
    ]


def support(*labels, shots=2, seed=0):
    """``shots`` examples of each label, label i in quadrant i."""
    return list(
        itertools.chain.from_iterable(
            shot(label, i, seed + 10 * i + k)
            for k in range(shots)
            for i, label in enumerate(labels)
        )
    )


def query(cls, seed=99, **kw):
    return EventInput(encode(events(cls, seed, **kw)), kw.get("width", 16), kw.get("height", 16))


def adapted(engine, *labels, **kw):
    sid = engine.create_session(**kw).session_id
    engine.adapt(sid, support(*labels))
    return sid


def test_adapt_then_classify(engine):
    info = engine.create_session()
    assert info.settings == results.Settings("tiny", 4, 2, 5.0, 8, "nearest", "global", 0, "meta")
    assert info.weights_version == 0 and info.classes == () and info.expires_at > info.created_at
    chunks = shot("cup", 0, 1, parts=3) + shot("ball", 1, 2) + shot("cup", 0, 3)
    chunks += shot("ball", 1, 4)
    r = engine.adapt(info.session_id, chunks)
    assert r.classes == ("cup", "ball") and (r.examples, r.new_examples) == (4, 4)
    assert r.weights_version == 1 and r.steps == 2
    assert r.loss_after < r.loss_before - 0.2 and r.support_accuracy == 1.0
    t = r.timings
    assert min(t.decode_ms, t.bin_ms, t.queue_ms, t.adapt_ms) > 0 and t.forward_ms == 0
    assert t.total_ms >= t.adapt_ms + t.decode_ms + t.bin_ms
    for cls, label in ((0, "cup"), (1, "ball")):
        p = engine.classify(info.session_id, query(cls))
        assert p.label == label and list(p.probabilities) == ["cup", "ball"]
        assert sum(p.probabilities.values()) == pytest.approx(1.0)
        assert p.probabilities[label] > 0.5 and p.weights_version == 1 and p.events == 300
        assert p.timings.forward_ms > 0 and p.timings.adapt_ms == 0
    p = engine.classify(info.session_id, [query(0)], candidates=["ball"])
    assert p.probabilities == {"ball": 1.0}
    got = engine.get_session(info.session_id)
    assert (got.classes, got.examples, got.weights_version) == (("cup", "ball"), 4, 1)


def test_quantized_weights_are_stored_as_integers_plus_scale(engine):
    sid = adapted(engine, "a", "b")
    weights = engine.sessions.get("", sid).state.weights
    assert all(v.dtype == torch.int8 for v in weights.tensors.values())
    assert set(weights.scales.values()) == {1 / 128}
    assert weights.nbytes == sum(v.numel() for v in tiny().params.values())
    other = engine.sessions.get("", adapted(engine, "c", "d")).state.weights
    for k, v in weights.tensors.items():  # equal levels are held once, others apart
        assert (other.tensors[k] is v) == (k not in HEAD and torch.equal(other.tensors[k], v))
    flt = adapted(engine, "a", "b", weight_bits=0)
    assert all(
        v.dtype == torch.float32
        for v in engine.sessions.get("", flt).state.weights.tensors.values()
    )
    per = adapted(engine, "a", "b", grid="per_tensor", weight_bits=4)
    scales = engine.sessions.get("", per).state.weights.scales
    init = tiny().params
    assert scales["conv0.weight"] == pytest.approx(float(init["conv0.weight"].abs().max()) / 7)


@pytest.mark.parametrize("head", ["meta", "prototype"])
def test_stochastic_rounding_is_reproducible_from_the_seed(engine, head):
    def weights(seed):
        sid = adapted(engine, "a", "b", rounding="stochastic", seed=seed, weight_bits=4, head=head)
        return engine.sessions.get("", sid).state.weights.tensors

    a, b, c = weights(1), weights(1), weights(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_later_adapts_add_to_the_support_set_or_replace_it(engine):
    sid = adapted(engine, "a", "b")
    r = engine.adapt(sid, shot("c", 2, 50) + shot("c", 2, 51))
    assert r.classes == ("a", "b", "c") and (r.examples, r.new_examples) == (6, 2)
    assert engine.classify(sid, query(2)).label == "c"
    r = engine.adapt(sid, support("x", "y", shots=1), replace_support=True)
    assert r.classes == ("x", "y") and r.examples == 2 and r.weights_version == 3


def test_fewer_classes_than_ways_work_and_more_are_an_error(engine):
    sid = adapted(engine, "a", "b", "c")
    assert engine.classify(sid, query(1)).label == "b"
    two = engine.create_session(ways=2).session_id
    engine.adapt(two, support("a", "b"))
    before = engine.sessions.get("", two).state
    with pytest.raises(
        InvalidArgument,
        match=r"3 classes \['a', 'b', 'c'\] exceed the session's "
        "2 ways",
    ) as err:
        engine.adapt(two, shot("c", 2))
    assert err.value.field == "label"
    assert engine.sessions.get("", two).state is before


def test_session_errors(engine):
    with pytest.raises(NotFound, match="no model 'big'"):
        engine.create_session(model="big")
    with pytest.raises(InvalidArgument, match="ways=5 exceeds model 'tiny'") as err:
        engine.create_session(ways=5)
    assert err.value.field == "ways"
    with pytest.raises(InvalidArgument, match="inner_steps=101 exceeds") as err:
        engine.create_session(inner_steps=101)
    with pytest.raises(InvalidArgument) as err:
        engine.create_session(weight_bits=1)
    assert err.value.field == "weight_bits"
    sid = engine.create_session(owner="alice").session_id
    for call in (
        lambda: engine.get_session(sid),
        lambda: engine.get_session("nope", owner="alice"),
        lambda: engine.adapt(sid, support("a")),
        lambda: engine.delete_session(sid),
        lambda: engine.classify(sid, query(0)),
        lambda: engine.export_session(sid),
    ):
        with pytest.raises(NotFound):
            call()
    with pytest.raises(FailedPrecondition, match="not adapted yet: call Adapt first"):
        engine.classify(sid, query(0), owner="alice")
    with pytest.raises(FailedPrecondition):
        engine.classify_stream(sid, [], owner="alice")
    engine.delete_session(sid, owner="alice")
    assert engine.list_sessions(owner="alice") == []


def test_request_errors(engine):
    sid = adapted(engine, "a", "b")
    bad = make_events([0, 1, 2], [1, 2, 30], [0, 0, 0], [1, 1, 1])
    with pytest.raises(
        InvalidArgument,
        match=r"example 0 \('a'\), chunk 0: events.x: must be < "
        r"sensor width 16 \(first bad index 2\)",
    ) as err:
        engine.adapt(sid, [Chunk("a", EventInput(encode(bad), 16, 16))])
    assert (err.value.field, err.value.index) == ("events.x", 2)
    with pytest.raises(InvalidArgument, match="query, chunk 0: events.x") as err:
        engine.classify(sid, EventInput(bad, 16, 16))
    assert err.value.index == 2
    with pytest.raises(InvalidArgument, match=r"example 1 \('b'\): no events"):
        engine.adapt(sid, shot("a", 0) + [Chunk("b", EventInput(bad[:0], 16, 16))])
    with pytest.raises(InvalidArgument, match="Adapt received no examples"):
        engine.adapt(sid, [])
    with pytest.raises(InvalidArgument, match="label 'z' was never seen in Adapt") as err:
        engine.classify(sid, query(0), candidates=["a", "z"])
    assert err.value.field == "candidates"
    with pytest.raises(InvalidArgument, match="label 'z' was never seen"):
        engine.classify_stream(sid, [], candidates=["z"])
    with pytest.raises(InvalidArgument, match="frames have shape"):
        engine.classify(sid, FrameInput(np.zeros((4, 2, 8, 9))))


def test_a_failed_adapt_leaves_the_session_exactly_as_it_was(engine):
    sid = adapted(engine, "a", "b")
    session = engine.sessions.get("", sid)
    before = session.state

    def broken_stream():
        yield from shot("c", 2, 7)
        yield from shot("a", 0, 8, parts=3)[:2]
        raise ConnectionResetError("the client's stream broke")

    with pytest.raises(ConnectionResetError):
        engine.adapt(sid, broken_stream())
    with pytest.raises(InvalidArgument):
        engine.adapt(sid, shot("c", 2) + [Chunk("d", EventInput(events(0)[::-1], 16, 16))])

    worker_calls = []

    def cancel_in_the_inner_loop():
        if threading.current_thread().name.startswith("spikeshot-model"):
            worker_calls.append(1)
            return len(worker_calls) >= 3  # job start, before step 0, before step 1: cancel
        return False

    with pytest.raises(Cancelled):
        engine.adapt(sid, shot("c", 2), control=Control(is_cancelled=cancel_in_the_inner_loop))
    assert len(worker_calls) == 3
    long = engine.create_session(inner_steps=100)
    long_before = engine.sessions.get("", long.session_id).state
    ticks = itertools.count()  # a clock that moves 1 s at each look: the deadline passes mid-loop
    with pytest.raises(DeadlineExceeded):
        engine.adapt(long.session_id, shot("b", 1), control=Control.within(5, clock=ticks.__next__))
    assert 5 < next(ticks) < 100  # it stopped inside the 100 steps
    with pytest.raises(DeadlineExceeded):
        engine.adapt(sid, shot("c", 2), control=Control.within(-1))
    assert session.state is before and engine.sessions.get("", sid) is session
    assert engine.sessions.get("", long.session_id).state is long_before
    assert engine.get_session(sid).examples == 4


def test_a_classify_during_an_adapt_uses_one_set_of_weights(engine):
    sid = adapted(engine, "a", "b")
    first = engine.classify(sid, query(0))
    inside, release, calls = threading.Event(), threading.Event(), []

    def pause_after_one_inner_step():
        if threading.current_thread().name.startswith("spikeshot-model"):
            calls.append(1)
            if len(calls) == 3:
                inside.set()
                release.wait(30)
        return False

    result = {}
    worker = threading.Thread(
        target=lambda: result.update(
            r=engine.adapt(
                sid, shot("c", 2, 5), control=Control(is_cancelled=pause_after_one_inner_step)
            )
        )
    )
    worker.start()
    assert inside.wait(30)
    during = engine.classify(sid, query(0))
    release.set()
    worker.join(30)
    after = engine.classify(sid, query(0))
    assert during.weights_version == 1 and during.probabilities == first.probabilities
    assert result["r"].weights_version == 2 and after.weights_version == 2
    assert list(after.probabilities) == ["a", "b", "c"]


def test_classifies_racing_adapts_each_match_the_weights_of_their_version(engine):
    sid = adapted(engine, "a", "b")
    states = {1: engine.sessions.get("", sid).state}
    commit = engine.sessions.commit

    def recording_commit(session, state):
        states[state.version] = state
        commit(session, state)

    engine.sessions.commit = recording_commit
    done = threading.Event()

    def adapts():
        for i in range(3):
            engine.adapt(sid, shot("a", 0, 100 + i))
        done.set()

    worker = threading.Thread(target=adapts)
    worker.start()
    seen = []
    q = query(1)
    while not done.is_set() or len(seen) < 5:
        seen.append(engine.classify(sid, q))
    worker.join()
    seen.append(engine.classify(sid, q))
    assert {p.weights_version for p in seen} <= {1, 2, 3, 4} and seen[-1].weights_version == 4
    model = engine._models["tiny"]
    frames = bin_events(events(1, 99), GEOM)[None]
    for p in seen:
        probs, _ = engine._forward(model, sid, states[p.weights_version], frames, [0, 1])
        assert list(p.probabilities.values()) == pytest.approx(probs[0].tolist(), abs=1e-6)


def test_a_session_is_prepared_for_forward_passes_once_per_adapt(engine, monkeypatch):
    """Classify reuses a session's prepared weights (``Network.prepare``) until the next Adapt,
    with the same answers as a forward pass that prepares them itself."""
    model = engine._models["tiny"]
    prepares = []
    real = model.network.prepare
    monkeypatch.setattr(
        type(model.network), "prepare", lambda net, p: prepares.append(1) or real(p)
    )
    sid = adapted(engine, "a", "b")
    answers = [engine.classify(sid, query(k % 2, seed=k)).probabilities for k in range(4)]
    assert len(prepares) == 1 and len(engine.prepared) == 1
    state = engine.sessions.get("", sid).state
    params = {**model.params, **state.weights.values()}
    for k, answer in enumerate(answers):
        frames = torch.from_numpy(bin_events(events(k % 2, k), GEOM)[None])
        with torch.no_grad():
            unprepared = torch.softmax(model.network.forward(params, frames)[:, :2], -1)[0]
        assert list(answer.values()) == unprepared.tolist()
    engine.adapt(sid, shot("b", 1, 50))
    engine.classify(sid, query(0))
    assert len(prepares) == 2 and len(engine.prepared) == 1  # the new version replaced the old
    engine.delete_session(sid)
    assert len(engine.prepared) == 0
    unkept = Engine([tiny()], ServerConfig(workers=1, prepared_sessions=0))
    try:
        sid = adapted(unkept, "a", "b")
        again = [unkept.classify(sid, query(k % 2, seed=k)).probabilities for k in range(4)]
        assert again == answers and len(unkept.prepared) == 0
    finally:
        unkept.close()


def _classify_together(engine: Engine, calls: int) -> dict:
    """Answers of ``calls`` Classify calls over four sessions (8-bit and float) that all wait
    while the engine's one worker is busy."""
    sids = [adapted(engine, "a", "b", "c", weight_bits=bits) for bits in (8, 0, 8, 0)]
    started, release = threading.Event(), threading.Event()
    busy = threading.Thread(
        target=engine.executor.run, args=(lambda: started.set() or release.wait(10),)
    )
    busy.start()
    assert started.wait(10)  # the worker is taken before any Classify call queues
    got = {}

    def classify(k):
        got[k] = engine.classify(sids[k % 4], query(k % 3, seed=k)).probabilities

    callers = [threading.Thread(target=classify, args=(k,)) for k in range(calls)]
    for t in callers:
        t.start()
    while engine.executor.in_flight < calls + 1:
        threading.Event().wait(0.005)
    release.set()
    for t in [busy, *callers]:
        t.join(10)
    return got


def test_classify_calls_waiting_together_run_as_one_pass_with_the_answers_of_one_by_one(
    monkeypatch,
):
    """Classify calls of several sessions (float and 8-bit) that wait for the one busy worker
    together run in one forward pass (``Network.forward_grouped``), and answer exactly as calls
    run one at a time (``classify_batch=1``)."""
    answers, passes = {}, []
    real = Network.forward_grouped
    monkeypatch.setattr(
        Network,
        "forward_grouped",
        lambda net, sessions, frames: passes.append(len(sessions)) or real(net, sessions, frames),
    )
    for batch, expected in ((16, [6]), (4, [4, 2]), (1, [1] * 6)):
        passes.clear()
        engine = Engine([tiny()], ServerConfig(workers=1, classify_batch=batch))
        try:
            answers[batch] = _classify_together(engine, 6)
        finally:
            engine.close()
        assert passes == expected
    assert answers[16] == answers[4] == answers[1] and len(answers[1]) == 6


def test_sessions_without_a_step_share_their_hidden_layers_and_run_as_one_batch(monkeypatch):
    """Sessions of a prototypical network (readout from the class means, no inner step) hold the
    same hidden weights (the 8-bit ones the model's on the grid, the float ones the model's),
    stored and prepared once for all of them, and readouts of their own: their Classify calls
    that wait together run those layers once per set of weights, on all the calls' frames, and
    answer exactly as one by one."""
    batches, answers, passes = [], {}, {}
    real = snn.features
    monkeypatch.setattr(
        snn, "features", lambda p, frames, *a: batches.append(len(frames)) or real(p, frames, *a)
    )
    for batch in (16, 1):
        batches.clear()
        protonet = tiny(inner_steps=0, training={"recipe": {"head": "prototype"}})
        engine = Engine([protonet], ServerConfig(workers=1, classify_batch=batch))
        try:
            answers[batch] = _classify_together(engine, 6)
            passes[batch] = batches[-6:]  # the Classify calls' passes, after the Adapts'
            m = engine._models["tiny"]
            held = [engine._ready(m, s.id, s.state) for s in engine.sessions.list("")]
            stored = [s.state.weights.tensors for s in engine.sessions.list("")]
        finally:
            engine.close()
        assert len({id(t["conv0.weight"]) for t in stored}) == 2  # stored once per grid
        assert len({id(t["out.weight"]) for t in stored}) == 4  # each session's own readout
        assert len({id(p["conv0.weight"]) for p, _ in held}) == 2  # 8-bit and float
        assert len({id(prepared) for _, prepared in held}) == 2  # and their prepared layers
    assert answers[16] == answers[1] and len(answers[1]) == 6
    assert passes[1] == [1] * 6  # one at a time: one call's frames a pass
    assert passes[16][-2:] == [3, 3]  # together: three calls' frames a pass, twice


def test_idle_sessions_expire():
    clock = Clock()
    engine = Engine([tiny()], ServerConfig(workers=1, session_ttl_s=60), clock=clock)
    old = engine.create_session().session_id
    clock.now += 30
    kept = adapted(engine, "a", "b")
    clock.now += 40
    engine.classify(kept, query(0))
    with pytest.raises(NotFound):
        engine.get_session(old)
    clock.now += 59
    assert [s.session_id for s in engine.list_sessions()] == [kept]
    clock.now += 1
    assert engine.list_sessions() == []


def test_caps_on_sessions_examples_and_events():
    config = ServerConfig(
        workers=1, max_sessions=3, max_sessions_per_owner=2, max_support_examples=5, max_events=400
    )
    engine = Engine([tiny()], config)
    sid = engine.create_session(owner="a").session_id
    engine.create_session(owner="a")
    with pytest.raises(ResourceExhausted, match="maximum of 2 sessions"):
        engine.create_session(owner="a")
    engine.create_session(owner="b")
    with pytest.raises(ResourceExhausted, match="maximum of 3 sessions"):
        engine.create_session(owner="c")
    engine.adapt(sid, support("x", "y"), owner="a")
    before = engine.sessions.get("a", sid).state
    with pytest.raises(ResourceExhausted, match="more than 5 support examples"):
        engine.adapt(sid, support("x", "y"), owner="a")
    assert engine.sessions.get("a", sid).state is before
    engine.adapt(sid, support("x", "y"), owner="a", replace_support=True)
    many = events(0, n=500)
    with pytest.raises(InvalidArgument, match="exceed the limit of 400") as err:
        engine.classify(sid, EventInput(many, 16, 16), owner="a")
    assert (err.value.field, err.value.index) == ("events", 400)
    halves = [EventInput(many[:300], 16, 16), EventInput(many[300:], 16, 16)]
    with pytest.raises(InvalidArgument, match="more than 400 events") as err:
        engine.classify(sid, halves, owner="a")
    assert err.value.index == 100


def test_overload_is_resource_exhausted_and_the_queue_is_bounded():
    engine = Engine([tiny()], ServerConfig(workers=1, queue_limit=0))
    sid = adapted(engine, "a", "b")
    inside, release = threading.Event(), threading.Event()

    def hold():
        if threading.current_thread().name.startswith("spikeshot-model"):
            inside.set()
            release.wait(30)
        return False

    worker = threading.Thread(
        target=lambda: engine.adapt(sid, shot("a", 0, 3), control=Control(is_cancelled=hold))
    )
    worker.start()
    assert inside.wait(30)
    with pytest.raises(ResourceExhausted, match="executor is full"):
        engine.classify(sid, query(0))
    release.set()
    worker.join(30)
    assert engine.classify(sid, query(0)).weights_version == 2
    engine.close()
    with pytest.raises(Unavailable):
        engine.classify(sid, query(0))


def test_a_queued_job_is_dropped_when_its_request_stops():
    executor = Executor(workers=1, queue_limit=1)
    started, release, ran = threading.Event(), threading.Event(), []
    threading.Thread(target=lambda: executor.run(lambda: started.set() or release.wait(30))).start()
    assert started.wait(30)
    stop = threading.Timer(0.1, lambda: ran.append("cancel"))
    stop.start()
    with pytest.raises(Cancelled):
        executor.run(lambda: ran.append("ran"), Control(is_cancelled=lambda: bool(ran)))
    with pytest.raises(DeadlineExceeded):
        executor.run(lambda: ran.append("ran"), Control.within(0.1))
    release.set()
    assert executor.run(lambda: 7)[0] == 7
    assert ran == ["cancel"] and executor.in_flight == 0
    executor.close()


def test_export_and_import(engine):
    sid = adapted(engine, "a", "b", weight_bits=6)
    data = engine.export_session(sid)
    copy = engine.import_session(data, owner="robot 2")
    assert copy.session_id != sid and copy.classes == ("a", "b") and copy.weights_version == 1
    mine, its = (
        engine.sessions.get(o, i).state.weights
        for o, i in [("", sid), ("robot 2", copy.session_id)]
    )
    assert all((its.tensors[k] is v) == (k not in HEAD) for k, v in mine.tensors.items())
    assert its.scales == mine.scales
    assert copy.settings == engine.get_session(sid).settings
    assert (
        engine.classify(copy.session_id, query(1), owner="robot 2").probabilities
        == engine.classify(sid, query(1)).probabilities
    )
    engine.adapt(copy.session_id, shot("c", 2), owner="robot 2")  # it keeps its support set
    assert engine.get_session(copy.session_id, owner="robot 2").examples == 5
    other = Engine([tiny(seed=1)], ServerConfig(workers=1))
    with pytest.raises(FailedPrecondition, match="other weights of model 'tiny'"):
        other.import_session(data)
    renamed = Checkpoint(CFG, GEOM, tiny().params, name="other")
    with pytest.raises(FailedPrecondition, match="model 'tiny', which this server does not hold"):
        Engine([renamed], ServerConfig(workers=1)).import_session(data)
    with pytest.raises(InvalidArgument, match="data: ") as err:
        engine.import_session(b"\x00" * 20)
    assert err.value.field == "data"


def test_sessions_survive_an_engine_restart(tmp_path, caplog):
    config = ServerConfig(workers=1, snapshot_dir=str(tmp_path / "snapshots"))
    first = Engine([tiny()], config)
    sid = first.create_session(owner="robot").session_id
    first.adapt(sid, support("a", "b"), owner="robot")
    gone = first.create_session(owner="robot").session_id
    first.delete_session(gone, owner="robot")
    answer = first.classify(sid, query(0), owner="robot")
    first.close()
    second = Engine([tiny()], config)
    info = second.get_session(sid, owner="robot")
    assert (info.classes, info.examples, info.weights_version) == (("a", "b"), 4, 1)
    assert second.classify(sid, query(0), owner="robot").probabilities == answer.probabilities
    assert [s.session_id for s in second.list_sessions(owner="robot")] == [sid]
    with caplog.at_level(logging.WARNING):
        third = Engine([tiny(seed=3)], config)
    assert third.list_sessions(owner="robot") == [] and "not restored" in caplog.text


def test_restored_sessions_without_a_step_store_their_hidden_layers_once(tmp_path):
    protonet = tiny(inner_steps=0, training={"recipe": {"head": "prototype"}})
    config = ServerConfig(workers=1, snapshot_dir=str(tmp_path / "snapshots"))
    first = Engine([protonet], config)
    sids = [adapted(first, "a", "b"), adapted(first, "c", "d")]
    first.close()
    second = Engine([protonet], config)
    try:
        a, b = (second.sessions.get("", sid).state.weights.tensors for sid in sids)
    finally:
        second.close()
    assert all((a[k] is b[k]) == (k not in HEAD) for k in a)


def test_any_sensor_size_is_mapped_to_the_model(engine):
    sid = engine.create_session().session_id
    chunks = list(
        itertools.chain.from_iterable(
            shot(label, cls, seed, width=w, height=h)
            for seed, (w, h) in enumerate([(16, 16), (64, 64), (32, 32)])
            for cls, label in enumerate("ab")
        )
    )
    assert engine.adapt(sid, chunks).support_accuracy == 1.0
    for cls in (0, 1):
        assert engine.classify(sid, query(cls, width=128, height=128)).label == "ab"[cls]
        # 640x480: the centred 480x480 region (columns 80..559) is the card's square sensor
        ev = events(cls, 5, width=480, height=480)
        ev["x"] += 80
        assert engine.classify(sid, EventInput(ev, 640, 480)).label == "ab"[cls]


def test_frames_binned_by_the_client_equal_events():
    e1 = Engine([tiny()], ServerConfig(workers=1))
    sid = e1.create_session().session_id
    via_events = e1.adapt(sid, support("a", "b"))
    frames = [
        Chunk(c.label, FrameInput(bin_events(events(i, 10 * i + k), GEOM).astype(np.uint16)))
        for k in range(2)
        for i, c in enumerate([Chunk("a"), Chunk("b")])
    ]
    sid2 = e1.create_session().session_id
    via_frames = e1.adapt(sid2, frames)
    assert via_frames.loss_after == via_events.loss_after
    assert via_frames.support_accuracy == via_events.support_accuracy


def test_classify_stream(engine):
    sid = adapted(engine, "a", "b")
    live = np.concatenate([events(0, 1, t0=0), events(1, 2, t0=4000), events(0, 3, t0=8000)])
    chunks = [EventInput(encode(c), 16, 16) for c in np.array_split(live, 7)]
    out = list(engine.classify_stream(sid, chunks))
    assert [(w.start_us, w.end_us, w.label) for w in out] == [
        (int(live["t"][0]), int(live["t"][0]) + 4000, "a"),
        (int(live["t"][0]) + 4000, int(live["t"][0]) + 8000, "b"),
        (int(live["t"][0]) + 8000, int(live["t"][0]) + 12000, "a"),
    ]
    assert [w.complete for w in out] == [True, True, False]
    assert sum(w.events for w in out) == len(live)
    assert all(w.weights_version == 1 and w.timings.forward_ms > 0 for w in out)
    overlapping = list(engine.classify_stream(sid, chunks, hop_us=1000, candidates=["b"]))
    assert len(overlapping) == 12 and {w.label for w in overlapping} == {"b"}
    with pytest.raises(InvalidArgument, match="window_us=3999"):
        engine.classify_stream(sid, chunks, window_us=3999)
    stream = engine.classify_stream(sid, iter(chunks))
    assert next(stream).label == "a"
    engine.delete_session(sid)
    with pytest.raises(NotFound):
        list(stream)


def _nearest_mean_probabilities(session, queries, bits):
    """The probabilities of a prototype session without a step, computed here: the card's
    convolutions (on the global grid of ``bits``), the centred class means of the support features
    as the readout (on its own per-tensor grid), a softmax over the session's classes."""
    params = {k: v.clone() for k, v in tiny().params.items()}
    if bits:
        step, top = 2.0 ** -(bits - 1), 2 ** (bits - 1) - 1
        for k in params:
            params[k] = (params[k] / step).round().clamp(-top - 1, top) * step
    net = Network(CFG)
    support = session.state.support
    with torch.no_grad():
        feats = net.features(params, torch.from_numpy(np.stack([s.frames for s in support])))
        labels = np.array([session.state.classes.index(s.label) for s in support])
        means = torch.stack([feats[labels == c].mean(0) for c in range(len(session.state.classes))])
        sq = (means**2).sum(1)
        weight, bias = 2 * (means - means.mean(0)), sq.mean() - sq
        if bits:
            for t in (weight, bias):
                scale = float(t.abs().max()) / top
                t.copy_((t / scale).round() * scale)
        logits = net.features(params, queries) @ weight.T + bias
    return logits.softmax(1).numpy()


@pytest.mark.parametrize("bits", [0, 8])
def test_a_prototype_session_classifies_by_the_nearest_class_mean(engine, bits):
    info = engine.create_session(head="prototype", weight_bits=bits)
    assert (info.settings.head, info.settings.inner_steps) == ("prototype", 0)
    sid = info.session_id
    r = engine.adapt(sid, support("a", "b", "c", shots=2))
    assert r.steps == 0 and r.loss_before == r.loss_after and r.support_accuracy == 1.0
    session = engine.sessions.get("", sid)
    weights = session.state.weights
    assert set(weights.tensors) == set(tiny().params)
    if bits:
        for k in ("out.weight", "out.bias"):  # the readout's own grid spans its values
            assert int(weights.tensors[k].abs().max()) == 127 and weights.scales[k] != 1 / 128
        assert weights.scales["conv0.weight"] == 1 / 128
    drawn = [(c, 70 + i) for i, c in enumerate((0, 1, 2, 0, 1, 2))]
    queries = [query(c, seed) for c, seed in drawn]
    frames = np.stack([bin_events(events(c, seed), GEOM) for c, seed in drawn])
    frames = torch.from_numpy(frames.astype(np.float32))
    expected = _nearest_mean_probabilities(session, frames, bits)
    for q, want in zip(queries, expected, strict=True):
        p = engine.classify(sid, q)
        assert list(p.probabilities.values()) == pytest.approx(list(want), abs=1e-4)
        assert p.label == "abc"[int(np.argmax(want))]
    assert [engine.classify(sid, q).label for q in queries[:3]] == ["a", "b", "c"]
    data = engine.export_session(sid)  # the readout's own scales are accepted back
    assert engine.classify(engine.import_session(data).session_id, queries[0]).probabilities == (
        engine.classify(sid, queries[0]).probabilities
    )


def test_prototype_sessions_may_step_after_the_means(engine):
    sid = engine.create_session(head="prototype", inner_steps=2).session_id
    r = engine.adapt(sid, support("a", "b"))
    assert r.steps == 2 and r.loss_after < r.loss_before
    assert engine.classify(sid, query(1)).label == "b"
    lr = {"conv0.weight": torch.tensor(1.0)}  # no learned step size for the readout
    other = Engine([tiny(inner_lr=lr)], ServerConfig(workers=1))
    with pytest.raises(InvalidArgument, match="no learned step size for .*out.weight") as err:
        other.create_session(head="prototype", inner_steps=1)
    assert err.value.field == "step_size"
    assert other.create_session(head="prototype").settings.inner_steps == 0
    with pytest.raises(InvalidArgument, match="head must be one of") as err:
        engine.create_session(head="nearest")
    assert err.value.field == "head"


def test_learned_step_sizes_adapt_only_their_parameters():
    lr = {"out.weight": torch.full((4, CFG.features), 2.0), "out.bias": torch.tensor(2.0)}
    engine = Engine([tiny(inner_lr=lr)], ServerConfig(workers=1))
    info = engine.create_session()
    assert info.settings.step_size is None
    r = engine.adapt(info.session_id, support("a", "b"))
    assert r.loss_after < r.loss_before
    assert set(engine.sessions.get("", info.session_id).state.weights.tensors) == set(lr)
    assert engine.list_models()[0].step_size is None


def test_list_models_and_loading_checkpoints(tmp_path):
    save(tiny(), tmp_path / "tiny")
    other = tiny(seed=2)
    other.name = ""
    save(other, tmp_path / "second")
    found = checkpoint.find([tmp_path])
    assert [c.name for c in found] == ["second", "tiny"]
    engine = Engine(found, ServerConfig(workers=1, default_model="tiny"))
    first, second = engine.list_models()
    assert (first.name, first.is_default, second.name, second.is_default) == (
        "tiny",
        True,
        "second",
        False,
    )
    assert (first.ways, first.bins, first.height, first.width) == (4, 4, 8, 8)
    assert first.window_us == 4000
    assert (first.sensor_width, first.weight_bits, first.inner_steps, first.step_size) == (
        16,
        8,
        2,
        5.0,
    )
    assert first.card["geometry"]["downsample"] == 2 and len(first.fingerprint) == 64
    assert first.fingerprint != second.fingerprint
    assert engine.create_session().settings.model == "tiny"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no checkpoints in"):
        checkpoint.find([tmp_path / "empty"])
    with pytest.raises(ValueError, match="default_model 'big'"):
        Engine(found, ServerConfig(default_model="big"))
    proto = tiny(name="proto")
    proto.training = {"recipe": {"head": "prototype"}}  # meta-trained as Proto-MAML
    settings = Engine([proto], ServerConfig(workers=1)).create_session().settings
    assert (settings.head, settings.inner_steps) == ("prototype", 2)  # the card's steps
    assert first.card["inner_loop"]["head"] == "meta"


def test_errors_carry_grpc_status_code_names():
    assert len({e.code for e in ERRORS}) == len(ERRORS)
    for error in ERRORS:
        assert grpc.StatusCode[error.code].name == error.code
    assert InvalidArgument("x", "events.t", 3).index == 3


def test_config_precedence_defaults_toml_environment_flags(tmp_path):
    toml = tmp_path / "server.toml"
    toml.write_text(
        '[server]\nport = 6000\nmodels = ["a", "b"]\nsession_ttl_s = 10\nmax_events = 5\n'
    )
    env = {
        "SPIKESHOT_PORT": "7000",
        "SPIKESHOT_MODELS": "c, d",
        "SPIKESHOT_SERVER": "x:1",
        "HOME": "/",
    }
    parser = argparse.ArgumentParser()
    add_flags(parser)
    flags = flag_overrides(
        parser.parse_args(["--max-events", "9", "--tls-cert", "c.pem", "--tls-key", "k.pem"])
    )
    c = ServerConfig.load(toml, env, flags)
    assert (c.host, c.port, c.models, c.session_ttl_s, c.max_events) == (
        "127.0.0.1",
        7000,
        ("c", "d"),
        10.0,
        9,
    )
    assert (c.tls_cert, c.tls_key) == ("c.pem", "k.pem")
    assert ServerConfig.load(environ={}) == ServerConfig()
    assert ServerConfig(workers=2, torch_threads=0).torch_thread_count >= 1


@pytest.mark.parametrize(
    "toml, env, message",
    [
        ("[server]\nprot = 1\n", {}, "unknown setting 'prot'"),
        ('[server]\nport = "1"\n', {}, "setting 'port': expected int, got str"),
        ("", {"SPIKESHOT_PORT": "many"}, "environment SPIKESHOT_\\*: setting 'port'"),
        ("", {"SPIKESHOT_PORT": "70000"}, "port must be in 0..65535"),
        ('[server]\ntls_cert = "c.pem"\n', {}, "tls_cert and tls_key go together"),
        ("[server]\nmax_sessions = 0\n", {}, "max_sessions must be >= 1"),
        ("", {"SPIKESHOT_CLASSIFY_BATCH": "0"}, "classify_batch must be >= 1"),
    ],
)
def test_config_errors_name_the_setting(tmp_path, toml, env, message):
    path = tmp_path / "server.toml"
    path.write_text(toml)
    with pytest.raises(ValueError, match=message):
        ServerConfig.load(path, env)


def test_warm_up_loads_the_event_kernel_for_both_wire_layouts():
    """In a fresh process, ``warm_up`` leaves the fused event kernel loaded for column and packed
    chunks, so that the first request does not pay for loading it."""
    code = (
        "from service_fixtures import tiny\n"
        "from spikeshot.events import native\n"
        "from spikeshot.service.config import ServerConfig\n"
        "from spikeshot.service.engine import Engine\n"
        "print(len(native.ingest.signatures))\n"
        "engine = Engine([tiny()], ServerConfig(workers=1))\n"
        "engine.warm_up()\n"
        "print(len(native.ingest.signatures))\n"
        "engine.close()\n"
    )
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": str(here)}
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=here, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["0", "2"]
