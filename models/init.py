"""LSUV-style initialisation in the spirit of Stewart and Neftci (arXiv 2201.10777): layer by layer
from the input, scale each hidden layer's weights to a set membrane spread on a sample batch, then
set its bias (the threshold) so that it fires at a target rate (a last layer that never fires keeps
a zero bias). Deterministic for a given batch."""

from __future__ import annotations

import torch

from spikeshot.models.lif import TraceState, spike_scan, trace_filter
from spikeshot.models.network import Network
from spikeshot.models.snn import drive, fires, hidden_spikes, neuron, prepare_input


def firing_rates(net: Network, params: dict, frames: torch.Tensor) -> list[float]:
    """Mean spike probability per hidden layer and time step on ``frames`` (none for the ANN)."""
    if net.config.arch != "snn":
        return []
    return [float(s.mean()) for s in hidden_spikes(params, frames, net.config)]


def _layer_drive(net: Network, params: dict, frames: torch.Tensor, i: int) -> torch.Tensor:
    """Hidden layer ``i``'s pooled drive W P + b [T, B, C, H, W] on ``frames``."""
    cfg = net.config
    x = prepare_input(frames, cfg)
    s = x if i == 0 else hidden_spikes(params, frames, cfg)[i - 1]
    zero = x.new_zeros(())
    p, _ = trace_filter(s, TraceState(zero, zero), neuron(cfg, i))
    return drive(params, i, p.flatten(0, 1), cfg).unflatten(0, s.shape[:2])


@torch.no_grad()
def lsuv_init(
    net: Network,
    params: dict,
    frames: torch.Tensor,
    target_rate: float = 0.1,
    membrane_std: float = 0.3,
    iters: int = 14,
) -> dict[str, torch.Tensor]:
    """Return params whose hidden layers have drive spread ``membrane_std`` (where the surrogate
    gradient lives) and fire at about ``target_rate`` on ``frames``. The ANN is returned as is.

    Per layer, the drive is computed once: with the bias at zero it scales with the weights, and
    a bias (one value for every channel) adds to it, after the pooling as before it, so the
    bisection on the bias only rescans the spikes."""
    params = {k: v.clone() for k, v in params.items()}
    if net.config.arch != "snn":
        return params
    for i in range(len(net.config.channels)):
        w, b = f"conv{i}.weight", f"conv{i}.bias"
        params[b].zero_()
        v = _layer_drive(net, params, frames, i)
        std = float(v.std())
        if std > 0:
            params[w] *= membrane_std / std
            v = v * (membrane_std / std)
        if not fires(net.config, i):
            continue  # a leaky integrator has no threshold: its bias stays at zero
        n, r0 = neuron(net.config, i), v.new_zeros(())
        lo, hi = -3 * membrane_std, 3 * membrane_std
        for _ in range(iters):
            mid = (lo + hi) / 2
            if float(spike_scan(v + mid, r0, n)[0].mean()) > target_rate:
                hi = mid
            else:
                lo = mid
        params[b].fill_((lo + hi) / 2)
    return params
