"""The NIR export (``spikeshot export-nir``), checked by simulators that are not ours.

A tiny average-pooling SNN is meta-initialised (LSUV) and adapted by the engine in an 8-bit session
on a synthetic four-class task; its ``ExportSession`` bytes go through the command to a ``.nir``
file. That file, read back with ``nir.read``, must be the graph the exporter built, and run in Norse
(``norse.torch.from_nir``, dt = one bin) and in a small numpy interpreter of NIR's node equations
written here, it must give our own forward pass's labels and hidden spike counts.

Through gRPC, a server of an average-pooling variant of the server tests' tiny SNN answers
``ExportSession`` with ``EXPORT_FORMAT_NIR`` by the bytes of the graph the exporter builds from the
same session, the bytes the command, the SDK and ``spikeshot-client export --format nir`` write.

Tolerance: at least 99% of labels and of (query, unit) spike counts agree, and in every query the
first spikes to differ sit on the threshold (float64 |U| < 1e-9). Weights on the 2^-7 grid and
integer event counts put membranes on a lattice that contains the threshold, so some are exactly 0,
and each implementation's float rounding (float32 in Norse and ours, which also convolves spikes
before filtering them in the quantized layers; float64 here) settles H(0) its own way; a unit that
flipped changes its successors' inputs after it. Measured: every label, and 99.3% to 99.997% of the
units per layer (README).

Norse 1.1.0's importer has no mapping for three of the primitives the graph uses, and maps a fourth
against NIR's convention; ``norse_from_nir`` supplies those four, each with NIR's own equation and
Norse's own neuron code where Norse has one, and leaves Conv2d, Affine, the graph executor (its sums
of inputs, its recurrent edges carrying the previous step's output) and the stepping to Norse:

- nir.LI: none (Norse maps LI only inside CubaLIF); as there, ``r`` scales the input of Norse's
  forward-Euler integrator ``LIBoxCell``. Unmapped nodes fail in nirtorch with a bare KeyError
  naming the first such node.
- nir.Threshold: none; Norse's own ``heaviside`` (strict ``>``, as NIR defines it).
- nir.AvgPool2d: none (nirtorch's newer ``nir_to_torch`` has it, Norse calls the older ``load``).
- nir.Flatten: Norse passes ``start_dim`` to ``torch.nn.Flatten`` as it is, but NIR's shapes have
  no batch dimension, so the graph's ``start_dim=0`` flattened the batch into the features.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import itertools
import json
from collections import defaultdict
from types import SimpleNamespace

import grpc
import nir
import norse.torch
import norse.torch.utils.import_nir as norse_import
import numpy as np
import pytest
import service_fixtures
import torch
from norse.torch.functional.heaviside import heaviside
from norse.torch.module.leaky_integrator_box import LIBoxCell, LIBoxParameters
from safetensors import safe_open
from safetensors.torch import save

from spikeshot.clients import cli as client_cli
from spikeshot.clients.aio import AsyncClient
from spikeshot.clients.client import Client
from spikeshot.events.binning import FrameGeometry
from spikeshot.models import ModelConfig, Network, Quantizer, checkpoint
from spikeshot.models.checkpoint import Checkpoint
from spikeshot.models.init import firing_rates, lsuv_init
from spikeshot.models.nir_export import Adaptation, NIRExportError, check_exportable, to_nir
from spikeshot.models.snn import hidden_spikes
from spikeshot.service import cli, sessions
from spikeshot.service.config import ServerConfig
from spikeshot.service.engine import Engine
from spikeshot.service.errors import InvalidArgument
from spikeshot.service.inputs import Chunk, FrameInput
from spikeshot.service.server import start
from spikeshot.v1 import spikeshot_pb2 as pb

BINS, SIZE = 8, 16
CFG = ModelConfig(
    ways=4,
    input_hw=(SIZE, SIZE),
    bins=BINS,
    burn_in=2,
    channels=(6, 8, 8),
    kernel=3,
    pool_kind="avg",
    alpha=0.8,
    beta=0.6,
    alpha_rp=0.65,
    w_rp=0.5,
    input_gain=2.0,
    input_clip=3.0,
    readout_alpha=0.9,
    readout_beta=0.7,
)
GEOM = FrameGeometry(
    sensor_width=34, sensor_height=34, crop=(1, 1, 32, 32), downsample=2, bins=BINS, window_us=8000
)
QUERIES = 240


def frames(classes, seed: int) -> torch.Tensor:
    """Count frames [N, bins, 2, 16, 16] of a blob of events near the centre of quadrant ``c``
    (ON events early in the window, OFF late), with background noise; the blob's counts often
    exceed the input clip."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    out = np.empty((len(classes), BINS, 2, SIZE, SIZE), np.float32)
    for n, c in enumerate(classes):
        cy, cx = rng.normal([4 + 8 * (c // 2), 4 + 8 * (c % 2)], 1.0)
        blob = 4.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6.0)
        for t in range(BINS):
            on = t < BINS // 2
            out[n, t, 1] = rng.poisson(blob * (1.0 if on else 0.2) + 0.05)
            out[n, t, 0] = rng.poisson(blob * (0.2 if on else 1.0) + 0.05)
    return torch.from_numpy(out)


def tiny(cfg: ModelConfig = CFG, name: str = "tiny_avg") -> Checkpoint:
    net = Network(cfg)
    params = lsuv_init(net, net.init(0), frames(np.arange(16) % 4, seed=1))
    return Checkpoint(
        cfg, GEOM, params, inner_steps=2, inner_step_size=5.0, quantizer=Quantizer(8), name=name
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny model's checkpoint, an 8-bit session the engine adapted on it (3 shots of 4
    classes) as ``ExportSession`` bytes in a file, and that file exported by the command."""
    root = tmp_path_factory.mktemp("nir")
    ckpt = tiny()
    checkpoint.save(ckpt, root / "tiny_avg")
    engine = Engine([ckpt], ServerConfig(workers=1))
    try:
        sid = engine.create_session().session_id
        shots = np.arange(12) % 4
        support = [
            Chunk(f"quadrant{c}", FrameInput(f.numpy()))
            for c, f in zip(shots, frames(shots, seed=2), strict=True)
        ]
        engine.adapt(sid, support)
        (root / "session.safetensors").write_bytes(engine.export_session(sid))
    finally:
        engine.close()
    out = root / "session.nir"
    args = ["export-nir", str(root / "session.safetensors"), "--model", str(root / "tiny_avg")]
    assert cli.main([*args, "-o", str(out)]) == 0
    return root, ckpt, out


def session_params(root, ckpt):
    """The session's classes and the weights our forward pass classifies with (the engine's)."""
    _, _, state = sessions.load((root / "session.safetensors").read_bytes())
    return state, {**ckpt.params, **state.weights.values()}


def queries() -> tuple[torch.Tensor, np.ndarray]:
    classes = np.arange(QUERIES) % 4
    return frames(classes, seed=3), classes


def test_max_pooling_and_other_settings_are_refused(tmp_path, capsys):
    """Max pooling (the other shipped models), the hard reset and the ANN each name the reason and
    the setting that makes a model exportable; the command exits 3 with that message."""
    assert cli.main(["export-nir", "double_digits", "-o", str(tmp_path / "x.nir")]) == 3
    err = capsys.readouterr().err
    assert 'max pooling has no NIR primitive: meta-train with model.pool_kind = "avg"' in err
    assert not (tmp_path / "x.nir").exists()
    hard = dataclasses.replace(CFG, reset="hard")
    with pytest.raises(NIRExportError, match='hard reset .* model.reset = "soft"'):
        check_exportable(hard)
    both = dataclasses.replace(hard, pool_kind="max")
    with pytest.raises(NIRExportError, match=r"'m' .*max pooling.*; a hard reset"):
        to_nir(Checkpoint(both, GEOM, Network(both).init(0), name="m"))
    with pytest.raises(NIRExportError, match='not a spiking network: .*model.arch = "snn"'):
        check_exportable(dataclasses.replace(CFG, arch="ann"))


def test_li_forward_euler_is_the_trace_recursion():
    """The exported LI, ``tau dv/dt = (v_leak - v) + r I`` stepped by forward Euler with dt, is
    ``v <- a v + (1 - a) r I`` for the traces' a, to float64 rounding."""
    rng = np.random.default_rng(0)
    dt = GEOM.bin_us * 1e-6
    graph = to_nir(tiny())
    for name, a, r in [
        ("layer0_q", CFG.beta, CFG.input_gain),
        ("layer0_p", CFG.alpha, 1.0),
        ("layer1_q", CFG.beta, 1.0),
        ("layer2_reset", CFG.alpha_rp, -CFG.w_rp),
        ("readout_q", CFG.readout_beta, 1.0),
        ("readout_p", CFG.readout_alpha, 1.0),
    ]:
        node = graph.nodes[name]
        assert np.all(node.tau == dt / (1 - a)) and np.all(node.r == r)
        assert np.all(node.v_leak == 0)
        v_nir = v_ours = np.zeros(node.tau.shape)
        for _ in range(50):
            x = rng.random(node.tau.shape)
            v_nir = v_nir + dt / node.tau * ((node.v_leak - v_nir) + node.r * x)
            v_ours = a * v_ours + (1 - a) * r * x
            np.testing.assert_allclose(v_nir, v_ours, rtol=1e-12, atol=1e-15)


def assert_same_graph(read: nir.NIRGraph, built: nir.NIRGraph) -> None:
    """The same nodes of the same types with equal parameters (and dtypes), the same edges and
    metadata."""
    assert read.nodes.keys() == built.nodes.keys() and read.edges == built.edges
    assert read.metadata == built.metadata
    for name, node in built.nodes.items():
        other = read.nodes[name]
        assert type(other) is type(node), name
        for field in dataclasses.fields(node):
            mine, theirs = getattr(node, field.name), getattr(other, field.name)
            if isinstance(mine, dict):
                assert mine.keys() == theirs.keys(), (name, field.name)
                for k in mine:
                    assert np.array_equal(mine[k], theirs[k]), (name, field.name, k)
            else:
                mine, theirs = np.asarray(mine), np.asarray(theirs)
                assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs), (name, field)


def test_the_file_reads_back_as_the_same_graph(exported):
    """``nir.read`` gives the graph the exporter builds: the same nodes of the same types with
    equal parameters (and dtypes), the same edges and metadata; the metadata names the
    preprocessing and the session's classes and grid."""
    root, ckpt, out = exported
    _, _, state = sessions.load((root / "session.safetensors").read_bytes())
    quant = {"bits": 8, "grid": "global", "rounding": "nearest", "scales": state.weights.scales}
    built = to_nir(ckpt, Adaptation(state.weights.values(), state.classes, quant))
    read = nir.read(out)
    assert_same_graph(read, built)
    doc = json.loads(read.metadata["spikeshot"])
    assert read.metadata["format"] == "spikeshot-nir/1" and read.metadata["dt"] == 1e-3
    assert doc["source"] == "session" and doc["classes"] == [f"quadrant{c}" for c in range(4)]
    assert doc["quantization"] == quant and doc["preprocessing"]["input_clip"] == 3.0
    assert doc["preprocessing"]["geometry"] == GEOM.to_dict() and doc["time"]["steps"] == BINS
    assert doc["fingerprint"] == checkpoint.fingerprint(ckpt) and doc["network"] == CFG.to_dict()


def test_quantized_weights_are_exported_exactly(exported):
    """Every adapted tensor is its 8-bit integer levels times its step, exactly, in the file."""
    root, _, out = exported
    _, _, state = sessions.load((root / "session.safetensors").read_bytes())
    graph = nir.read(out)
    where = {"out.weight": ("readout", "weight"), "out.bias": ("readout", "bias")}
    for i in range(len(CFG.channels)):
        where |= {f"conv{i}.{k}": (f"layer{i}_conv", k) for k in ("weight", "bias")}
    assert set(state.weights.tensors) == set(where)
    for name, levels in state.weights.tensors.items():
        node, field = where[name]
        value = getattr(graph.nodes[node], field)
        expected = levels.numpy().astype(np.float32) * np.float32(state.weights.scales[name])
        assert np.array_equal(value, expected), name
        back = value / state.weights.scales[name]
        assert np.array_equal(back, np.round(back)) and -128 <= back.min() <= back.max() <= 127


def test_a_session_of_class_means_exports_its_readout_on_its_own_grid():
    """An 8-bit session started from the class means (no step) exports its readout exactly, on
    the per-tensor grid of its means, and the graph classifies as our forward pass does."""
    ckpt = tiny()
    engine = Engine([ckpt], ServerConfig(workers=1))
    try:
        sid = engine.create_session(head="prototype").session_id
        shots = np.arange(8) % 4
        support = [
            Chunk(f"quadrant{c}", FrameInput(f.numpy()))
            for c, f in zip(shots, frames(shots, seed=5), strict=True)
        ]
        engine.adapt(sid, support)
        graph = nir.read(io.BytesIO(engine.export_session(sid, format="nir")))
        state = engine.sessions.get("", sid).state
    finally:
        engine.close()
    scales = json.loads(graph.metadata["spikeshot"])["quantization"]["scales"]
    assert scales == state.weights.scales and scales["conv0.weight"] == 2**-7
    for name, field in (("out.weight", "weight"), ("out.bias", "bias")):
        levels = state.weights.tensors[name].numpy().astype(np.float32)
        assert np.abs(levels).max() == 127 and scales[name] != 2**-7  # its own grid
        expected = levels[: len(state.classes)] * np.float32(scales[name])
        assert np.array_equal(getattr(graph.nodes["readout"], field), expected)
    x, truth = queries()
    clip = json.loads(graph.metadata["spikeshot"])["preprocessing"]["input_clip"]
    logits, _, _ = run_numpy(graph, x.clamp(max=clip).double().numpy())
    with torch.no_grad():
        ours = Network(CFG).forward({**ckpt.params, **state.weights.values()}, x)[:, :4].numpy()
    assert (ours.argmax(1) == truth).mean() >= 0.9
    assert (logits.argmax(1) == ours.argmax(1)).mean() >= 0.99


def norse_from_nir(graph: nir.NIRGraph) -> torch.nn.Module:
    """``norse.torch.from_nir(graph, dt = one bin)`` with the four mappings of the module notes."""
    original = norse_import._import_norse_module

    def node_map(node, **kw):
        if isinstance(node, nir.LI):
            return NorseLI(node, kw["dt"])
        if isinstance(node, nir.Threshold):
            return NorseThreshold(node)
        if isinstance(node, nir.AvgPool2d):
            assert not np.any(node.padding)
            return torch.nn.AvgPool2d(tuple(node.kernel_size), tuple(node.stride))
        if isinstance(node, nir.Flatten):  # NIR's dims exclude the batch dimension
            return torch.nn.Flatten(int(node.start_dim) + 1, int(node.end_dim))
        return original(node, **kw)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(norse_import, "_import_norse_module", node_map)
        return norse.torch.from_nir(graph, dt=float(graph.metadata["dt"]))


def _tensor(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float32)


class NorseLI(torch.nn.Module):
    """nir.LI in Norse: ``r`` times the input into Norse's forward-Euler ``LIBoxCell``."""

    def __init__(self, node: nir.LI, dt: float):
        super().__init__()
        self.r = _tensor(node.r)
        params = LIBoxParameters(tau_mem_inv=1 / _tensor(node.tau), v_leak=_tensor(node.v_leak))
        self.cell = LIBoxCell(params, dt=dt)

    def forward(self, x, state=None):
        return self.cell(self.r * x, state)


class NorseThreshold(torch.nn.Module):
    def __init__(self, node: nir.Threshold):
        super().__init__()
        self.threshold = _tensor(node.threshold)

    def forward(self, x):
        return heaviside(x - self.threshold)


def run_norse(graph: nir.NIRGraph, x: torch.Tensor):
    """The graph's output at the last step and each layer's spikes [bins, N, C, H, W], for
    inputs ``x`` [N, bins, 2, H, W] fed one bin per step."""
    module, names = norse_from_nir(graph), spike_nodes(graph)
    state, spikes = None, defaultdict(list)
    with torch.no_grad():
        for t in range(x.shape[1]):
            out, state = module(x[:, t], state)
            for name in names:
                spikes[name].append(state.cache[name].numpy())
    return out.numpy(), [np.stack(spikes[name]) for name in names]


def spike_nodes(graph: nir.NIRGraph) -> list[str]:
    """The hidden layers' spike nodes, first layer first."""
    return [f"layer{i}_spike" for i in range(sum(n.endswith("_spike") for n in graph.nodes))]


def run_numpy(graph: nir.NIRGraph, x: np.ndarray):
    """The same from NIR's node equations in float64, and each layer's membranes (the spike
    nodes' summed inputs): nodes in an order where every edge runs forward but those that close
    a cycle, which carry the previous step's value; LI stepped by forward Euler from 0."""
    dt = float(graph.metadata["dt"])
    sources, children = defaultdict(list), defaultdict(list)
    for src, dst in graph.edges:
        sources[dst].append(src)
        children[src].append(dst)
    order, seen = [], set()

    def visit(name):  # reversed DFS post-order: a topological order once back edges are cut
        seen.add(name)
        for child in children[name]:
            if child not in seen:
                visit(child)
        order.append(name)

    visit("input")
    order.reverse()
    state, prev, spikes, membranes = {}, {}, defaultdict(list), defaultdict(list)
    for t in range(x.shape[1]):
        cur = {"input": x[:, t]}
        for name in order[1:]:
            drive = sum(cur[s] if s in cur else prev.get(s, 0.0) for s in sources[name])
            cur[name] = _node(graph.nodes[name], name, drive, state, dt)
            if name.endswith("_spike"):
                membranes[name].append(drive)
                spikes[name].append(cur[name])
        prev = cur
    names = spike_nodes(graph)
    return (
        cur["output"],
        [np.stack(spikes[n]) for n in names],
        [np.stack(membranes[n]) for n in names],
    )


def _node(node, name, x, state, dt):
    """One step of one NIR node on a batch ``x``."""
    if isinstance(node, nir.LI):
        v = state.get(name, np.zeros_like(node.v_leak))
        state[name] = v = v + dt / node.tau * ((node.v_leak - v) + node.r * x)
        return v
    if isinstance(node, nir.Conv2d):
        (ph, pw), (kh, kw) = node.padding, node.weight.shape[2:]
        assert tuple(node.stride) == tuple(node.dilation) == (1, 1) and node.groups == 1
        padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))
        out = np.einsum("bchwij,ocij->bohw", windows, node.weight.astype(np.float64))
        return out + node.bias[:, None, None]
    if isinstance(node, nir.AvgPool2d):
        (k, _), (b, c, h, w) = node.kernel_size, x.shape
        assert tuple(node.kernel_size) == tuple(node.stride) == (k, k) and not np.any(node.padding)
        return x.reshape(b, c, h // k, k, w // k, k).mean(axis=(3, 5))
    if isinstance(node, nir.Threshold):
        return (x > node.threshold).astype(np.float64)
    if isinstance(node, nir.Flatten):
        assert node.start_dim == 0 and node.end_dim == -1
        return x.reshape(len(x), -1)
    if isinstance(node, nir.Affine):
        return x @ node.weight.T.astype(np.float64) + node.bias
    assert isinstance(node, nir.Output), type(node)
    return x


def first_differences_are_ties(ours, theirs, membranes) -> bool:
    """Whether, in each query, the first spikes to differ (earliest step, then lowest layer) all
    sit on the threshold in float64 (|U| < 1e-9): every later difference has an input that
    differs."""
    steps, queries = ours[0].shape[:2]
    for b in range(queries):
        for t, i in itertools.product(range(steps), range(len(ours))):
            differ = ours[i][t, b] != theirs[i][t, b]
            if differ.any():
                if np.abs(membranes[i][t, b][differ]).max() >= 1e-9:
                    return False
                break
    return True


@pytest.mark.parametrize("simulator", ["norse", "numpy"])
def test_simulators_agree_with_our_forward_pass(exported, simulator):
    """On 240 queries, the label and the hidden spike counts of the exported session in the
    simulator agree with ours (tolerance: module notes), and every difference starts at a
    membrane on the threshold. The network fires at useful rates, the session learned the task,
    and the logits agree to float32 precision but where spikes differ."""
    root, ckpt, out = exported
    state, params = session_params(root, ckpt)
    x, truth = queries()
    graph = nir.read(out)
    clip = json.loads(graph.metadata["spikeshot"])["preprocessing"]["input_clip"]
    clipped = x.clamp(max=clip)  # the graph's preprocessing
    logits, spikes, membranes = run_numpy(graph, clipped.double().numpy())
    if simulator == "norse":
        logits, spikes = run_norse(graph, clipped)
    with torch.no_grad():
        ours = Network(CFG).forward(params, x)[:, : len(state.classes)].numpy()
        our_spikes = [s.numpy() for s in hidden_spikes(params, x, CFG)]
    rates = firing_rates(Network(CFG), params, x)
    assert all(0.02 < r < 0.6 for r in rates), rates
    assert (ours.argmax(1) == truth).mean() >= 0.9
    labels = (logits.argmax(1) == ours.argmax(1)).mean()
    units = [
        (mine.sum(0) == theirs.sum(0)).mean()
        for mine, theirs in zip(our_spikes, spikes, strict=True)
    ]
    assert labels >= 0.99 and min(units) >= 0.99, (labels, units)
    assert first_differences_are_ties(our_spikes, spikes, membranes)
    assert np.median(np.abs(logits - ours)) < 1e-5


@pytest.mark.parametrize(
    "name",
    [
        "double_digits_avg",
        "glyphs_broad",
        "glyphs_broad_proto",
        "glyphs_broad_protonet",
        "glyphs_broad_protonet_mid",
        "glyphs_broad_protonet_wide",
    ],
)
def test_the_shipped_average_pooling_models_run_the_same_in_norse(tmp_path, name):
    """The zoo's exportable models export from their zoo names; in Norse their labels and hidden
    spike counts on random count frames are ours (tolerance: module notes; their weights are
    float32, so ties are rare)."""
    assert cli.main(["export-nir", name, "-o", str(tmp_path / "m.nir")]) == 0
    ckpt = checkpoint.load(checkpoint.ZOO / name)
    graph = nir.read(tmp_path / "m.nir")
    shape = (48, ckpt.config.bins, 2, *ckpt.config.input_hw)
    x = torch.from_numpy(np.random.default_rng(0).poisson(0.3, shape).astype(np.float32))
    logits, spikes = run_norse(graph, x.clamp(max=ckpt.config.input_clip))
    with torch.no_grad():
        ours = Network(ckpt.config).forward(ckpt.params, x).numpy()
        our_spikes = [s.numpy() for s in hidden_spikes(ckpt.params, x, ckpt.config)]
    assert len(spikes) == len(ckpt.config.channels) == 3
    assert (logits.argmax(1) == ours.argmax(1)).mean() >= 0.99
    for mine, theirs in zip(our_spikes, spikes, strict=True):
        assert mine.sum() > 0 and (mine.sum(0) == theirs.sum(0)).mean() >= 0.99


@pytest.mark.parametrize("simulator", ["norse", "numpy"])
def test_a_leaky_integrator_last_layer_exports_as_its_membrane(simulator):
    """With ``last_layer = "li"`` the graph's last layer ends at its pooled membrane (no spike or
    reset node) and the readout's traces filter that: the simulators give our logits."""
    cfg = dataclasses.replace(CFG, last_layer="li", zero_head=False)
    ckpt = tiny(cfg, "tiny_li")
    graph = to_nir(ckpt)
    last = len(cfg.channels) - 1
    assert f"layer{last}_spike" not in graph.nodes and f"layer{last}_reset" not in graph.nodes
    assert (f"layer{last}_pool", "readout_flatten") in graph.edges
    x, _ = queries()
    clipped = x.clamp(max=cfg.input_clip)
    if simulator == "norse":
        logits, spikes = run_norse(graph, clipped)
    else:
        logits, spikes, _ = run_numpy(graph, clipped.double().numpy())
    with torch.no_grad():
        ours = Network(cfg).forward(ckpt.params, x).numpy()
        our_spikes = [s.numpy() for s in hidden_spikes(ckpt.params, x, cfg)]
    assert len(spikes) == len(our_spikes) == last
    for mine, theirs in zip(our_spikes, spikes, strict=True):
        assert mine.sum() > 0 and (mine.sum(0) == theirs.sum(0)).mean() >= 0.99
    assert (logits.argmax(1) == ours.argmax(1)).mean() >= 0.99
    assert np.median(np.abs(logits - ours)) < 1e-5
    assert len(set(ours.argmax(1))) == cfg.ways, "every output must win somewhere"


def test_the_meta_trained_initialisation_exports_too(exported, tmp_path):
    """A checkpoint exports its full readout (``ways`` outputs), float weights as they are."""
    root, ckpt, _ = exported
    assert cli.main(["export-nir", str(root / "tiny_avg.json"), "-o", str(tmp_path / "m.nir")]) == 0
    graph = nir.read(tmp_path / "m.nir")
    doc = json.loads(graph.metadata["spikeshot"])
    assert doc["source"] == "model" and doc["classes"] is None and doc["quantization"] is None
    assert graph.nodes["readout"].weight.shape == (CFG.ways, CFG.features)
    assert np.array_equal(graph.nodes["layer1_conv"].weight, ckpt.params["conv1.weight"].numpy())


def test_session_files_that_do_not_export(exported, tmp_path, capsys):
    """A session on other weights than --model's, one not adapted yet, one whose tensor does
    not fit the model, and a file that is neither kind are refused with what is wrong."""
    root, _, _ = exported
    out = str(tmp_path / "x.nir")
    other = tiny(dataclasses.replace(CFG, w_rp=1.0), name="tiny_avg")
    checkpoint.save(other, tmp_path / "other")
    session = str(root / "session.safetensors")
    assert cli.main(["export-nir", session, "--model", str(tmp_path / "other"), "-o", out]) == 3
    assert "adapted on other weights than model 'tiny_avg'" in capsys.readouterr().err
    engine = Engine([tiny()], ServerConfig(workers=1))
    try:
        (tmp_path / "new.safetensors").write_bytes(
            engine.export_session(engine.create_session().session_id)
        )
    finally:
        engine.close()
    args = ["export-nir", str(tmp_path / "new.safetensors"), "--model", str(root / "tiny_avg")]
    assert cli.main([*args, "-o", out]) == 3
    assert "the session is not adapted yet" in capsys.readouterr().err
    with safe_open(session, "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    tensors["weight.out.bias"] = torch.zeros(7, dtype=torch.int8)
    (tmp_path / "bad.safetensors").write_bytes(save(tensors, metadata=meta))
    args = ["export-nir", str(tmp_path / "bad.safetensors"), "--model", str(root / "tiny_avg")]
    assert cli.main([*args, "-o", out]) == 3
    assert "weight 'out.bias' of shape [7] does not fit model 'tiny_avg' ([4])" in (
        capsys.readouterr().err
    )
    (tmp_path / "junk.bin").write_bytes(b"\x08" + bytes(15))
    assert cli.main(["export-nir", str(tmp_path / "junk.bin"), "-o", out]) == 3
    assert "neither a model checkpoint nor a session file" in capsys.readouterr().err


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server of an average-pooling variant of the server tests' tiny SNN (whose own model
    pools by maximum), an 8-bit session adapted on it through gRPC (four quadrant classes), and
    the model's checkpoint saved where ``export-nir --model`` finds it."""
    ckpt = dataclasses.replace(
        service_fixtures.tiny(), config=dataclasses.replace(service_fixtures.CFG, pool_kind="avg")
    )
    root = tmp_path_factory.mktemp("served")
    checkpoint.save(ckpt, root / "tiny")
    config = ServerConfig(port=0, metrics_port=0, workers=1)
    engine = Engine([ckpt], config)
    running = start(config, engine)
    try:
        with service_fixtures.client(running) as stub:
            sid = service_fixtures.new_session(stub, weight_bits=8)
            labels = [f"quadrant{c}" for c in range(4)]
            stub.Adapt(service_fixtures.adapt_requests(sid, service_fixtures.support(*labels)))
            yield SimpleNamespace(
                running=running, engine=engine, stub=stub, sid=sid, ckpt=ckpt, root=root
            )
    finally:
        running.stop(grace=1)
        engine.close()


def export(stub, sid: str, fmt: int) -> bytes:
    return stub.ExportSession(pb.ExportSessionRequest(session_id=sid, format=fmt)).data


def test_export_session_as_nir_through_grpc(served, tmp_path):
    """``ExportSession`` with ``EXPORT_FORMAT_NIR`` answers a NIR file: ``nir.read`` gives the
    graph ``nir_export`` builds in-process from the same session (its default-format bytes, which
    are still the session file), and ``spikeshot export-nir`` of that file writes the same bytes."""
    stub, sid, ckpt = served.stub, served.sid, served.ckpt
    data = export(stub, sid, pb.EXPORT_FORMAT_NIR)
    session = stub.ExportSession(pb.ExportSessionRequest(session_id=sid)).data  # no format set
    _, settings, state = sessions.load(session)
    assert sessions.load(export(stub, sid, pb.EXPORT_FORMAT_SESSION))[1] == settings
    assert settings.weight_bits == 8 and state.classes == tuple(f"quadrant{c}" for c in range(4))
    quant = {"bits": 8, "grid": "global", "rounding": "nearest", "scales": state.weights.scales}
    built = to_nir(ckpt, Adaptation(state.weights.values(), state.classes, quant))
    assert_same_graph(nir.read(io.BytesIO(data)), built)
    file, out = tmp_path / "session.safetensors", tmp_path / "session.nir"
    file.write_bytes(session)
    model = str(served.root / "tiny")
    assert cli.main(["export-nir", str(file), "--model", model, "-o", str(out)]) == 0
    assert out.read_bytes() == data


def test_the_sdk_and_the_client_command_export_nir(served, tmp_path, capsys):
    """``Session.export(format="nir")`` (blocking and asyncio) and ``spikeshot-client export
    --format nir`` get the server's NIR bytes; the command's file reads back with ``nir.read``.
    A format the SDK does not know is refused before any call."""
    running, sid = served.running, served.sid
    data = export(served.stub, sid, pb.EXPORT_FORMAT_NIR)
    with Client(running.address, timeout=30) as client:
        session = client.session(sid)
        assert session.export(format="nir") == data
        with pytest.raises(ValueError, match="format must be one of"):
            session.export(format="onnx")

    async def exported_async() -> bytes:
        async with AsyncClient(running.address, timeout=30) as client:
            return await (await client.session(sid)).export(format="nir")

    assert asyncio.run(exported_async()) == data
    out = tmp_path / "s.nir"
    target = ["--target", running.address, "--session", sid, "-o", str(out)]
    assert client_cli.main(["export", *target, "--format", "nir"]) == 0
    assert f"exported session {sid} as a NIR graph to {out}" in capsys.readouterr().out
    assert out.read_bytes() == data
    assert nir.read(out).nodes["output"].output_type["output"].tolist() == [4]


def test_export_nir_refusals_through_grpc(served):
    """A session not adapted yet is FAILED_PRECONDITION (the session format still exports it);
    the in-process engine refuses a format it does not know."""
    stub = served.stub
    fresh = service_fixtures.new_session(stub)
    code, details = service_fixtures.status_of(
        stub.ExportSession, pb.ExportSessionRequest(session_id=fresh, format=pb.EXPORT_FORMAT_NIR)
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "not adapted yet" in details
    assert sessions.load(export(stub, fresh, pb.EXPORT_FORMAT_SESSION))[2].weights is None
    with pytest.raises(InvalidArgument, match=r"format: unknown format 'onnx'; expected one of"):
        served.engine.export_session(served.sid, format="onnx")
