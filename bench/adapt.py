"""Adaptation speed of the SNN: one inner step, one query classification, one meta-training task.

    python bench/adapt.py [--quick] [--json PATH]

Three configurations: the paper's (Double NMNIST geometry 16x32, 100 bins of 1 ms, 70 burn-in
steps), the shipped one (models/zoo/double_digits.toml: 10 bins of 30 ms, no burn-in, max
pooling) and the same with average pooling (double_digits_avg.toml, which the convolution absorbs),
each 5-way 1-shot and 5-shot on a Double Digits test task (its cache is built on first use).
Weights: the meta-trainer's starting point (seeded init, LSUV to 10% firing) with a random
readout, since a zero readout would pass no gradient to the body. Everything runs with
``torch.set_num_threads(1)`` (not pinned: on a shared machine a pinned core may be a busy one);
contenders are interleaved and each figure is a median.

- ``adapt``: ``maml.adapt``, one SGD step (lr 1) on all parameters, float32 weights, and with the
  paper's 8-bit fixed-point inner loop (``Quantizer(8)``: weights on a 1/128 grid, re-quantized
  after the step, as a session of the service adapts). ``head``: the output layer only
  (``fast_head.adapt_head``, ANIL), 8-bit.
- ``classify``: one query example through the adapted network, without gradient, its weights
  prepared in the call (channels-last copies; for 8-bit weights the grid check and oneDNN's int8
  prepack), as a session's first Classify; ``classify_prepared``: with the weights prepared
  beforehand, as the server keeps them for a session's later calls (``prepared_sessions``).
- ``meta_task``: one second-order meta-training task, float32: adapt with ``create_graph=True``,
  the loss on 10 queries per class, and the backward through the inner step.
- ``snntorch``: the same architecture written with snnTorch's layers (``nn.Conv2d``,
  ``nn.MaxPool2d``, ``snntorch.Synaptic`` with its defaults and fast-sigmoid surrogate, in a
  per-step loop; its two-trace neuron filters the pooled current rather than the input, and resets
  by subtraction: the same dense work, not the same spikes), the same weights, data and burn-in,
  one SGD step with ``torch.autograd.grad`` (snnTorch's surrogates do not run under ``torch.func``).
- ``norse``: the same again in Norse's layers (``norse.torch.LIFCell``, current-based with
  SuperSpike surrogate, time constants from the recipe's decays at its 1 ms step, and an
  ``LICell`` readout), stepped the same way: again the same dense work, not the same spikes.
- The floor: the dense floating-point operations of the recipe's step (every convolution forward
  over all bins; over the gradient bins, the backward's weight gradients of every convolution and
  input gradients of every one but the first, whose input is data; the readout's forward and
  backward; the traces' and neurons' few operations per value are not counted), divided by this
  machine's float32 matrix-multiply rate (best of square products of 1024 and 2048, measured in
  the same run). ``adapt_time_over_flop_floor`` below 1 means less work than that dense
  computation, not only an efficient one.

- ``--recording FILE``: the densities that decide between dense and event-driven convolution,
  on a real recording (any format the readers take) through the zoo's default model: the share
  of its first window's pixel-bins with events, and each hidden layer's firing rate.

Timings are wall clock, the latency a caller sees; ``cpu_ms`` repeats them in this thread's CPU
time, which other processes on a shared machine do not inflate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import tomllib
from pathlib import Path

import norse
import snntorch
import torch
import torch.nn.functional as F
from norse.torch import LICell, LIFCell, LIFParameters, LIParameters
from torch import nn

from spikeshot.events.atomic import write_atomic
from spikeshot.events.binning import FrameGeometry, bin_events
from spikeshot.events.formats import read
from spikeshot.events.mapping import map_to_sensor
from spikeshot.models import ModelConfig, Network, Quantizer, adapt, checkpoint
from spikeshot.models.datasets import open_dataset
from spikeshot.models.datasets.episodes import TaskSampler
from spikeshot.models.fast_head import adapt_head
from spikeshot.models.init import firing_rates, lsuv_init
from spikeshot.models.maml import masked_loss
from spikeshot.models.metatrain import RunConfig, task_tensors

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {
    "adapt_speedup_vs_snntorch": (">", 3.0),
    "adapt_speedup_vs_norse": (">", 3.0),
    "adapt_time_over_flop_floor": ("<=", 1.0),
    "adapt_ms_shipped_5w1s": ("<", 25.0),
    "classify_ms_shipped": ("<", 4.0),
    "adapt_ms_shipped_avg_5w1s": ("<", 25.0),
    "classify_ms_shipped_avg": ("<", 4.0),
}


def configs() -> dict[str, tuple[ModelConfig, FrameGeometry]]:
    paper = ModelConfig(zero_head=False)
    paper_geometry = FrameGeometry(
        sensor_width=64, sensor_height=32, downsample=2, bins=100, window_us=100_000
    )
    out = {"paper": (paper, paper_geometry)}
    for name, recipe in (("shipped", "double_digits"), ("shipped_avg", "double_digits_avg")):
        card = RunConfig.from_dict(tomllib.loads((ROOT / f"models/zoo/{recipe}.toml").read_text()))
        model = ModelConfig.from_dict({**card.model.to_dict(), "zero_head": False})
        out[name] = model, card.geometry
    return out


def timed(fn) -> tuple[float, float]:
    """Wall and CPU seconds of one call."""
    wall, cpu = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - wall, time.thread_time() - cpu


def interleaved(cases: dict, repeats: int) -> dict[str, dict[str, float]]:
    """Median wall and CPU milliseconds of each case, the cases run in turn ``repeats`` times
    after one warm-up round."""
    for fn in cases.values():
        fn()
    times = {k: [] for k in cases}
    for _ in range(repeats):
        for k, fn in cases.items():
            times[k].append(timed(fn))
    return {
        k: {
            "ms": 1e3 * statistics.median(w for w, _ in v),
            "cpu_ms": 1e3 * statistics.median(c for _, c in v),
        }
        for k, v in times.items()
    }


def matmul_gflops(repeats: int = 7) -> dict[str, float]:
    """Best float32 square matrix-product rate, in wall and CPU time."""
    best = {"ms": 0.0, "cpu_ms": 0.0}
    for n in (1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        rates = interleaved({"mm": lambda a=a, b=b: a @ b}, repeats)["mm"]
        for k in best:
            best[k] = max(best[k], 2 * n**3 / (rates[k] * 1e-3) / 1e9)
    return {"gflops": best["ms"], "cpu_gflops": best["cpu_ms"]}


def dense_flops(cfg: ModelConfig, n: int) -> float:
    """Dense floating-point operations of one inner step on ``n`` examples (see the module doc)."""
    h, w = cfg.input_hw
    c_in, convs = 2, []
    for c in cfg.channels:
        convs.append(h * w * c * c_in * cfg.kernel**2)
        h, w, c_in = h // cfg.pool, w // cfg.pool, c
    grad_bins = cfg.bins - cfg.burn_in
    forward = 2 * n * (cfg.bins * sum(convs) + cfg.features * cfg.ways)
    backward = 2 * n * (grad_bins * (sum(convs) + sum(convs[1:])) + 2 * cfg.features * cfg.ways)
    return float(forward + backward)


class PeerNet(nn.Module):
    """The architecture's weights in torch layers (convolutions, pooling, readout), for a peer
    library's neurons to step through time one bin at a time (``forward``)."""

    def __init__(self, cfg: ModelConfig, params: dict):
        super().__init__()
        self.cfg = cfg
        self.convs = nn.ModuleList()
        c_in = 2
        for i, c in enumerate(cfg.channels):
            conv = nn.Conv2d(c_in, c, cfg.kernel, padding=cfg.kernel // 2)
            conv.weight.data.copy_(params[f"conv{i}.weight"])
            conv.bias.data.copy_(params[f"conv{i}.bias"])
            self.convs.append(conv)
            c_in = c
        self.out = nn.Linear(cfg.features, cfg.ways)
        self.out.weight.data.copy_(params["out.weight"])
        self.out.bias.data.copy_(params["out.bias"])
        self.pool = nn.MaxPool2d(cfg.pool)

    def adapt(self, support: torch.Tensor, labels: torch.Tensor, lr: float = 1.0) -> list:
        params = list(self.parameters())
        grads = torch.autograd.grad(F.cross_entropy(self(support), labels), params)
        return [p.detach() - lr * g for p, g in zip(params, grads, strict=True)]


class SnnTorchNet(PeerNet):
    """The architecture in snnTorch's layers."""

    def __init__(self, cfg: ModelConfig, params: dict):
        super().__init__(cfg, params)
        grad = snntorch.surrogate.fast_sigmoid(slope=cfg.surrogate_slope)
        self.neurons = nn.ModuleList(
            snntorch.Synaptic(alpha=cfg.beta, beta=cfg.alpha, spike_grad=grad) for _ in cfg.channels
        )
        self.readout = snntorch.Synaptic(alpha=cfg.beta, beta=cfg.alpha, reset_mechanism="none")

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.clamp(max=self.cfg.input_clip) if self.cfg.input_clip else frames
        states = [n.reset_mem() for n in (*self.neurons, self.readout)]
        for t in range(self.cfg.bins):
            with torch.set_grad_enabled(t >= self.cfg.burn_in and torch.is_grad_enabled()):
                s = x[:, t] * self.cfg.input_gain
                for i, (conv, neuron) in enumerate(zip(self.convs, self.neurons, strict=True)):
                    s, *states[i] = neuron(self.pool(conv(s)), *states[i])
                _, *states[-1] = self.readout(self.out(s.flatten(1)), *states[-1])
        return states[-1][1]


class NorseNet(PeerNet):
    """The architecture in Norse's layers: current-based LIF cells (decays ``alpha``, ``beta``
    per 1 ms step) and a leaky-integrator readout."""

    def __init__(self, cfg: ModelConfig, params: dict):
        super().__init__(cfg, params)
        dt = 1e-3  # Norse's step; its cells decay by (1 - dt * tau_inv) a step
        taus = {"tau_mem_inv": torch.tensor((1 - cfg.alpha) / dt)}
        taus["tau_syn_inv"] = torch.tensor((1 - cfg.beta) / dt)
        lif = LIFParameters(**taus, alpha=torch.tensor(float(cfg.surrogate_slope)))
        self.cells = nn.ModuleList(LIFCell(lif) for _ in cfg.channels)
        self.readout = LICell(LIParameters(**taus))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.clamp(max=self.cfg.input_clip) if self.cfg.input_clip else frames
        states, readout, v = [None] * len(self.cells), None, None
        for t in range(self.cfg.bins):
            with torch.set_grad_enabled(t >= self.cfg.burn_in and torch.is_grad_enabled()):
                s = x[:, t] * self.cfg.input_gain
                for i, (conv, cell) in enumerate(zip(self.convs, self.cells, strict=True)):
                    s, states[i] = cell(self.pool(conv(s)), states[i])
                v, readout = self.readout(self.out(s.flatten(1)), readout)
        return v


def initial_params(net: Network, sample: torch.Tensor) -> dict[str, torch.Tensor]:
    return lsuv_init(net, net.init(0), sample)


def bench_task(net: Network, task, repeats: int, meta_repeats: int) -> dict:
    """Every timing of one task: adaptations, classifications, a meta-training task."""
    support, labels, query, query_labels = task_tensors(task)
    params = initial_params(net, query)
    snt, nrs = SnnTorchNet(net.config, params), NorseNet(net.config, params)
    q8 = Quantizer(8)
    fast = adapt(net.forward, params, support, labels)
    fast8 = adapt(net.forward, params, support, labels, quantizer=q8)

    def classify(p, prepared=None):
        with torch.no_grad():
            net.forward(p, query[:1], prepared)

    prepared, prepared8 = net.prepare(fast), net.prepare(fast8)

    times = interleaved(
        {
            "adapt": lambda: adapt(net.forward, params, support, labels),
            "adapt_8bit": lambda: adapt(net.forward, params, support, labels, quantizer=q8),
            "head_8bit": lambda: adapt_head(net, params, support, labels, quantizer=q8),
            "snntorch": lambda: snt.adapt(support, labels),
            "norse": lambda: nrs.adapt(support, labels),
            "classify": lambda: classify(fast),
            "classify_8bit": lambda: classify(fast8),
            "classify_prepared": lambda: classify(fast, prepared),
            "classify_prepared_8bit": lambda: classify(fast8, prepared8),
        },
        repeats,
    )
    meta_params = {k: v.clone().requires_grad_() for k, v in params.items()}

    def meta_task():
        inner = adapt(net.forward, meta_params, support, labels, create_graph=True)
        masked_loss(net.forward(inner, query), query_labels).backward()

    times["meta_task"] = interleaved({"m": meta_task}, meta_repeats)["m"]
    return {
        **{k: round(v["ms"], 2) for k, v in times.items()},
        "cpu_ms": {k: round(v["cpu_ms"], 2) for k, v in times.items()},
        "dense_gflop": dense_flops(net.config, len(labels)) / 1e9,
        "support_input_density": float((support > 0).float().mean()),
        "hidden_firing_rates": [round(r, 4) for r in firing_rates(net, params, support)],
    }


def bench_config(
    name: str,
    cfg: ModelConfig,
    geometry: FrameGeometry,
    dataset,
    repeats: int,
    meta_repeats: int,
    shot_counts: tuple[int, ...],
) -> dict:
    out = {}
    for shots in shot_counts:
        task = TaskSampler(dataset.split("test"), cfg.ways, shots, 10, geometry, seed=0)[0]
        key = f"{name}_5w{shots}s"
        out[key] = bench_task(Network(cfg), task, repeats, meta_repeats)
        print(key, {k: v for k, v in out[key].items() if isinstance(v, float)}, flush=True)
    return out


def real_densities(path: Path) -> dict:
    """Input density and hidden firing rates of the zoo's default model on ``path``'s first window,
    its sensor mapped onto the model's as the server maps it (``events.mapping``)."""
    ckpt = checkpoint.load(checkpoint.ZOO / checkpoint.ZOO_DEFAULT)
    g, cfg = ckpt.geometry, ckpt.network.config
    rec = read(path)
    mapped = map_to_sensor(rec.events, rec.width, rec.height, g.sensor_width, g.sensor_height)
    frames = torch.from_numpy(bin_events(mapped.events, g)).unsqueeze(0)
    rates = firing_rates(ckpt.network, ckpt.params, frames)
    return {
        "recording": path.name,
        "model": ckpt.name,
        "input_density": float((frames.clamp(max=cfg.input_clip) > 0).float().mean()),
        "hidden_firing_rates": [round(r, 4) for r in rates],
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="few repeats, 1-shot only, for a smoke run"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=ROOT / "bench" / "results" / "adapt.json",
        help="where to write the results",
    )
    parser.add_argument(
        "--recording", type=Path, help="a real recording: input and hidden densities on it"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeats, meta_repeats = (2, 1) if args.quick else (21, 5)
    shot_counts = (1,) if args.quick else (1, 5)
    dataset = open_dataset("double_digits", progress=False)
    rate = matmul_gflops()
    densities = real_densities(args.recording) if args.recording else None
    if densities:
        print("real_densities", densities, flush=True)
    results = {}
    for name, (cfg, geometry) in configs().items():
        results.update(
            bench_config(name, cfg, geometry, dataset, repeats, meta_repeats, shot_counts)
        )
    rate_after = matmul_gflops()
    rate = {k: max(rate[k], rate_after[k]) for k in rate}
    for r in results.values():
        r["floor_ms"] = r["dense_gflop"] / rate["gflops"] * 1e3
        r["adapt_time_over_flop_floor"] = r["adapt"] / r["floor_ms"]
        r["adapt_8bit_time_over_flop_floor"] = r["adapt_8bit"] / r["floor_ms"]
        r["cpu_ms"]["adapt_time_over_flop_floor"] = (
            r["cpu_ms"]["adapt"] * rate["cpu_gflops"] / (r["dense_gflop"] * 1e3)
        )
        r["cpu_ms"]["adapt_8bit_time_over_flop_floor"] = (
            r["cpu_ms"]["adapt_8bit"] * rate["cpu_gflops"] / (r["dense_gflop"] * 1e3)
        )
        r["adapt_speedup_vs_snntorch"] = r["snntorch"] / r["adapt"]
        r["adapt_speedup_vs_norse"] = r["norse"] / r["adapt"]
    paper, shipped, avg = (results[f"{k}_5w1s"] for k in ("paper", "shipped", "shipped_avg"))
    headline = {
        "adapt_speedup_vs_snntorch": paper["adapt_speedup_vs_snntorch"],
        "adapt_speedup_vs_norse": paper["adapt_speedup_vs_norse"],
        "adapt_time_over_flop_floor": paper["adapt_time_over_flop_floor"],
        "adapt_8bit_time_over_flop_floor": paper["adapt_8bit_time_over_flop_floor"],
        "adapt_cpu_time_over_flop_floor": paper["cpu_ms"]["adapt_time_over_flop_floor"],
        "adapt_8bit_cpu_time_over_flop_floor": paper["cpu_ms"]["adapt_8bit_time_over_flop_floor"],
        "adapt_ms_paper_5w1s": paper["adapt"],
        "adapt_ms_paper_5w1s_8bit": paper["adapt_8bit"],
        "adapt_ms_shipped_5w1s": shipped["adapt"],
        "adapt_ms_shipped_5w1s_8bit": shipped["adapt_8bit"],
        "adapt_cpu_ms_shipped_5w1s": shipped["cpu_ms"]["adapt"],
        "head_8bit_ms_shipped_5w1s": shipped["head_8bit"],
        "classify_ms_shipped": shipped["classify"],
        "classify_ms_shipped_8bit": shipped["classify_8bit"],
        "classify_prepared_ms_shipped": shipped["classify_prepared"],
        "classify_prepared_ms_shipped_8bit": shipped["classify_prepared_8bit"],
        "adapt_ms_shipped_avg_5w1s": avg["adapt"],
        "adapt_ms_shipped_avg_5w1s_8bit": avg["adapt_8bit"],
        "classify_ms_shipped_avg": avg["classify"],
        "classify_ms_shipped_avg_8bit": avg["classify_8bit"],
        "classify_prepared_ms_shipped_avg": avg["classify_prepared"],
        "classify_prepared_ms_shipped_avg_8bit": avg["classify_prepared_8bit"],
    }
    report = {
        **headline,
        "targets": {k: f"{op} {v:g}" for k, (op, v) in TARGETS.items()},
        "meets_targets": {
            k: headline[k] > v if op == ">" else headline[k] <= v if op == "<=" else headline[k] < v
            for k, (op, v) in TARGETS.items()
        },
        "matmul_gflops": rate["gflops"],
        "matmul_cpu_gflops": rate["cpu_gflops"],
        "quick": args.quick,
        "repeats": repeats,
        "meta_task_repeats": meta_repeats,
        "load_average_1min": os.getloadavg()[0],
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "snntorch": snntorch.__version__,
        "norse": norse.__version__,
        "real_densities": densities,
        "results": results,
    }
    for k, v in headline.items():
        target = " ".join(map(str, TARGETS[k])) if k in TARGETS else ""
        print(f"{k:34s} {v:10.2f}  {target}")
    write_atomic(args.json, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
