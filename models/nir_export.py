"""Export a spiking network to NIR (the Neuromorphic Intermediate Representation), exactly, and
read an exported graph's weights back (``from_nir``: a start for meta-training).

The network (``snn``) per hidden layer and time step, and the NIR node of each term (names as in
the graph; dt is one time bin, in seconds):

    Q <- beta Q + (1-beta) gain S_in        layer{i}_q      LI(tau = dt/(1-beta), r = gain)
    P <- alpha P + (1-alpha) Q              layer{i}_p      LI(tau = dt/(1-alpha), r = 1)
    V = pool(W P + b)                       layer{i}_conv   Conv2d(W, b, same padding)
                                            layer{i}_pool   AvgPool2d(pool, stride pool)
    S = H(V + R)                            layer{i}_spike  Threshold(0); NIR sums its inputs
    R <- alpha_rp R - (1-alpha_rp) w_rp S   layer{i}_reset  LI(tau = dt/(1-alpha_rp), r = -w_rp),
                                                            on the edges spike -> reset -> spike

(``gain`` is ``input_gain`` in the first layer, 1 after it; every ``v_leak`` is 0. A last layer
that is a leaky integrator, ``last_layer = "li"``, ends at ``layer{i}_pool``: no spike, no reset.)
NIR's LI, ``tau dv/dt = (v_leak - v) + r I``, stepped by forward Euler with dt is
``v <- (1 - dt/tau) v + (dt/tau) (v_leak + r I)``: with the values above exactly
``v <- a v + (1-a) r I``. The spike reads R from before this step's update: a recurrent edge
carries the previous step's value. The readout flattens the last layer's spikes or membrane
(``readout_flatten``), filters them with two traces (``readout_q``, ``readout_p``; the config's
``readout_beta`` and ``readout_alpha``, by default the hidden layers' constants) and maps them with
``readout`` (Affine); it neither fires nor resets, and the logits are its output at the last time
bin.

Outside NIR's primitives, and so recorded in the graph's metadata (``spikeshot``, a JSON document)
as preprocessing: binning events into count frames (window, bins, sensor crop and downsampling, the
model card's geometry) and clipping counts to ``input_clip``. The graph's input is the clipped
count frame [2, H, W] of one bin (channel 0 OFF, 1 ON), fed one bin per step.

Only average pooling and the soft reset are expressible: NIR has no max pooling, and a hard reset
multiplies the state by the spike, which no NIR node does. Neuron parameters are per-neuron arrays
(NIR's type inference needs their shapes, NIR issue #176), in float64; weights are the network's
float32 values.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import nir
import numpy as np
import torch

from spikeshot.events.binning import FrameGeometry
from spikeshot.models.checkpoint import Checkpoint, fingerprint
from spikeshot.models.config import ModelConfig
from spikeshot.models.network import Network
from spikeshot.models.snn import fires, neuron

FORMAT = "spikeshot-nir/1"
UNEXPRESSIBLE = {  # model setting -> why its other values have no NIR form, and the fix
    "pool_kind": 'max pooling has no NIR primitive: meta-train with model.pool_kind = "avg"',
    "reset": "a hard reset (the spike multiplies the state) has no NIR primitive: meta-train "
    'with model.reset = "soft"',
}


class NIRExportError(ValueError):
    """A network that NIR cannot express; the message says why and which setting would do."""


class NIRImportError(ValueError):
    """A graph that is not this project's export of a network of the given settings."""


@dataclass(frozen=True)
class Adaptation:
    """An adapted session's share of an export: its weights as float32 values (quantized ones
    dequantized exactly), its class labels in output order, and, when quantized, its grid (bits,
    grid, rounding and each quantized tensor's step)."""

    weights: dict[str, torch.Tensor]
    classes: tuple[str, ...]
    quantization: dict | None = None


def check_exportable(config: ModelConfig, name: str = "") -> None:
    """Raise ``NIRExportError`` naming every part of ``config`` that NIR cannot express."""
    if config.arch != "snn":
        problems = ['the ANN baseline is not a spiking network: export a model.arch = "snn"']
    else:
        problems = [
            why
            for unexpressible, why in (
                (config.pool_kind != "avg", UNEXPRESSIBLE["pool_kind"]),
                (config.reset != "soft", UNEXPRESSIBLE["reset"]),
            )
            if unexpressible
        ]
    if problems:
        label = f"model {name!r}" if name else "the model"
        raise NIRExportError(f"{label} cannot be exported to NIR: " + "; ".join(problems))


def to_nir(ckpt: Checkpoint, adaptation: Adaptation | None = None) -> nir.NIRGraph:
    """The NIR graph of ``ckpt``'s network: its meta-trained initialisation, or with an
    ``adaptation`` a session's weights, the readout cut to the session's classes."""
    cfg = ckpt.config
    check_exportable(cfg, ckpt.name)
    params = dict(ckpt.params) if adaptation is None else {**ckpt.params, **adaptation.weights}
    dt = ckpt.geometry.bin_us * 1e-6
    shape = (2, *cfg.input_hw)
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type={"input": np.array(shape)})}
    edges: list[tuple[str, str]] = []
    last = "input"
    for i in range(len(cfg.channels)):
        layer, reset, shape = _hidden_layer(i, shape, params, cfg, dt)
        last = _chain(nodes, edges, last, {f"layer{i}_{k}": v for k, v in layer.items()})
        if reset is not None:
            nodes[f"layer{i}_reset"] = reset
            edges += [(last, f"layer{i}_reset"), (f"layer{i}_reset", last)]
    ways = cfg.ways if adaptation is None else len(adaptation.classes)
    _chain(nodes, edges, last, _readout(shape, params, cfg, dt, ways))
    return nir.NIRGraph(nodes, edges, metadata=_metadata(ckpt, adaptation, dt))


def from_nir(graph: nir.NIRGraph, config: ModelConfig, geometry: FrameGeometry) -> dict:
    """The weights of a graph this module exported from a network of ``config`` at
    ``geometry``'s bin length (a meta-trained initialisation, or one from another tool in the same
    form), to start meta-training from. Every node and edge but the weights must be the ones
    ``to_nir`` writes for that network (neuron constants, pooling, padding, shapes, the readout
    of all ``ways`` outputs); else ``NIRImportError`` names the first that is not."""
    nodes = graph.nodes

    def node(name: str, kind: type) -> nir.NIRNode:
        if not isinstance(nodes.get(name), kind):
            raise NIRImportError(f"the graph has no {kind.__name__} node {name!r}")
        return nodes[name]

    params = {}
    for i in range(len(config.channels)):
        conv = node(f"layer{i}_conv", nir.Conv2d)
        params[f"conv{i}.weight"], params[f"conv{i}.bias"] = conv.weight, conv.bias
    readout = node("readout", nir.Affine)
    params["out.weight"], params["out.bias"] = readout.weight, readout.bias
    shapes = Network(config).shapes()
    for name, value in params.items():
        value = np.asarray(value)
        if value.shape != shapes[name]:
            raise NIRImportError(
                f"{name} has shape {list(value.shape)}, the network takes {list(shapes[name])}"
            )
        params[name] = torch.from_numpy(value.astype(np.float32))
    expected = to_nir(Checkpoint(config, geometry, params))
    if set(expected.nodes) != set(nodes) or set(expected.edges) != set(map(tuple, graph.edges)):
        raise NIRImportError("the graph's nodes and edges are not those of this network")
    for name, want in expected.nodes.items():
        got = nodes[name]
        for field, value in vars(want).items():
            other = getattr(got, field, None)
            if type(got) is not type(want) or not _equal(value, other):
                raise NIRImportError(
                    f"node {name!r}: {field} differs from this network's (model or geometry "
                    "settings other than the graph's)"
                )
    return params


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray | list | tuple):
        return np.shape(a) == np.shape(b) and np.allclose(a, b, rtol=1e-12, atol=0)
    return a == b


def to_bytes(graph: nir.NIRGraph) -> bytes:
    """``graph`` as the bytes of a NIR file (``nir.write`` into memory; ``nir.read`` reads them
    from a file or a ``BytesIO``)."""
    buffer = io.BytesIO()
    nir.write(buffer, graph)
    return buffer.getvalue()


def _chain(nodes: dict, edges: list, src: str, new: dict) -> str:
    """Add the ``new`` nodes in a chain after ``src``; return the chain's last node."""
    nodes.update(new)
    for name in new:
        edges.append((src, name))
        src = name
    return src


def _li(shape: tuple[int, ...], a: float, r: float, dt: float) -> nir.LI:
    """The LI whose forward-Euler step of ``dt`` is ``v <- a v + (1 - a) r I``."""
    ones = np.ones(shape)
    return nir.LI(tau=ones * (dt / (1.0 - a)), r=ones * r, v_leak=np.zeros(shape))


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).contiguous().numpy().copy()


def _hidden_layer(i: int, shape, params: dict, cfg: ModelConfig, dt: float):
    """Hidden layer ``i`` for inputs of ``shape`` (C, H, W): its chain of nodes from input to
    spike, its refractory node, and its output shape; a layer that never fires (``snn.fires``)
    ends at its pooled membrane and has no refractory node (None)."""
    weight = params[f"conv{i}.weight"]
    _, h, w = shape
    out = (weight.shape[0], h // cfg.pool, w // cfg.pool)
    pool = np.array([cfg.pool, cfg.pool])
    layer = {
        "q": _li(shape, cfg.beta, cfg.input_gain if i == 0 else 1.0, dt),
        "p": _li(shape, cfg.alpha, 1.0, dt),
        "conv": nir.Conv2d(
            input_shape=(h, w),
            weight=_array(weight),
            stride=1,
            padding=cfg.kernel // 2,
            dilation=1,
            groups=1,
            bias=_array(params[f"conv{i}.bias"]),
        ),
        "pool": nir.AvgPool2d(kernel_size=pool, stride=pool, padding=np.array([0, 0])),
    }
    if not fires(cfg, i):
        return layer, None, out
    layer["spike"] = nir.Threshold(threshold=np.zeros(out))
    return layer, _li(out, cfg.alpha_rp, -cfg.w_rp, dt), out


def _readout(shape, params: dict, cfg: ModelConfig, dt: float, ways: int) -> dict:
    """Flatten, the two traces and the output layer's first ``ways`` units."""
    features = (int(np.prod(shape)),)
    traces = neuron(cfg, None)
    return {
        "readout_flatten": nir.Flatten(
            input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1
        ),
        "readout_q": _li(features, traces.beta, 1.0, dt),
        "readout_p": _li(features, traces.alpha, 1.0, dt),
        "readout": nir.Affine(
            weight=_array(params["out.weight"][:ways]), bias=_array(params["out.bias"][:ways])
        ),
        "output": nir.Output(output_type={"output": np.array([ways])}),
    }


def _metadata(ckpt: Checkpoint, adaptation: Adaptation | None, dt: float) -> dict:
    """The graph's metadata: its format, dt, and a JSON document of what lies outside the graph."""
    cfg, g = ckpt.config, ckpt.geometry
    doc = {
        "model": ckpt.name,
        "fingerprint": fingerprint(ckpt),
        "source": "model" if adaptation is None else "session",
        "classes": None if adaptation is None else list(adaptation.classes),
        "quantization": None if adaptation is None else adaptation.quantization,
        "time": {
            "dt_s": dt,
            "steps": cfg.bins,
            "integration": "forward Euler with dt; a recurrent edge carries the previous step's "
            "value; every state starts at 0",
            "logits": "the output at the last step",
        },
        "preprocessing": {
            "geometry": g.to_dict(),
            "bin_us": g.bin_us,
            "input_clip": cfg.input_clip,
            "input": "per step, the events of one bin counted per pixel [2, H, W] (channel 0 "
            "OFF, 1 ON) after the sensor crop and summing downsample blocks, each count clipped "
            "to input_clip (null: not clipped)",
        },
        "network": cfg.to_dict(),
    }
    return {"format": FORMAT, "dt": dt, "spikeshot": json.dumps(doc, sort_keys=True)}
