"""The paper's spiking network as pure functions of a parameter dict.

Three spiking convolution layers (DECOLLE LIF, see ``lif``) with pooling on the membrane, then a
dense readout with one unit per way whose membrane at the last step is the logit vector. The readout
integrates its input with the same traces but neither fires nor resets: a reset on the readout
would subtract from the winning class's own logit.

Frames are [B, T, 2, H, W] event counts. The first ``burn_in`` steps run without gradient to warm the
state up; gradients flow through the rest (truncated BPTT, as in the paper).

Two implementations of one computation: ``features`` filters each layer's whole input sequence at
once and convolves all time steps in one batched call; ``features_stepwise`` is the plain
one-convolution-per-step loop, kept as the oracle the fast path must match.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F

from spikeshot.models.config import ModelConfig
from spikeshot.models.lif import TraceState, lif_step, spike_scan, trace_filter


def prepare_input(frames: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Clip counts as the config says and put time first: [B, T, 2, H, W] -> [T, B, 2, H, W]."""
    if frames.dim() != 5 or frames.shape[1:] != (cfg.bins, 2, *cfg.input_hw):
        raise ValueError(
            f"frames must be [batch, {cfg.bins}, 2, {cfg.input_hw[0]}, {cfg.input_hw[1]}], "
            f"got {list(frames.shape)}"
        )
    if cfg.input_clip is not None:
        frames = frames.clamp(max=cfg.input_clip)
    return frames.transpose(0, 1)


def drive(params: dict, i: int, p: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """W P + b of hidden layer ``i`` for traces ``p`` [N, C, H, W], pooled on the membrane."""
    v = F.conv2d(p, params[f"conv{i}.weight"], params[f"conv{i}.bias"], padding=cfg.kernel // 2)
    pool = F.max_pool2d if cfg.pool_kind == "max" else F.avg_pool2d
    return pool(v, cfg.pool)


def _zero(x: torch.Tensor) -> torch.Tensor:
    return x.new_zeros(())


def _run(params, x, state, cfg, record=None):
    """All layers over the steps of ``x`` [T, B, ...] from ``state``; returns the readout's
    traces at the last step [B, F] and the state after it. Appends each hidden layer's spikes
    [T, B, C, H, W] to ``record`` when given."""
    s = x
    new_state = []
    for i in range(len(cfg.channels)):
        trace, r = state[i] if state else (TraceState(_zero(x), _zero(x)), _zero(x))
        gain = cfg.input_gain if i == 0 else 1.0
        p, trace = trace_filter(s, trace, cfg.alpha, cfg.beta, gain)
        v = drive(params, i, p.flatten(0, 1), cfg)
        v = v.reshape(*p.shape[:2], *v.shape[1:])
        s, r = spike_scan(v, r, cfg.alpha_rp, cfg.w_rp, cfg.reset, cfg.surrogate_slope)
        new_state.append((trace, r))
        if record is not None:
            record.append(s)
    out_trace = state[-1] if state else TraceState(_zero(x), _zero(x))
    p, out_trace = trace_filter(s.flatten(2), out_trace, cfg.alpha, cfg.beta, 1.0)
    new_state.append(out_trace)
    return p[-1], new_state


def features(params: dict, frames: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """The readout's input traces at the last step, [B, features]."""
    x = prepare_input(frames, cfg)
    state = None
    if cfg.burn_in:
        with torch.no_grad():
            _, state = _run(params, x[: cfg.burn_in], None, cfg)
    f, _ = _run(params, x[cfg.burn_in :], state, cfg)
    return f


def features_stepwise(params: dict, frames: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """The same as ``features``, one convolution per layer and time step."""
    x = prepare_input(frames, cfg)
    layers = [(TraceState(_zero(x), _zero(x)), _zero(x)) for _ in cfg.channels]
    out = TraceState(_zero(x), _zero(x))
    for t in range(x.shape[0]):
        with torch.no_grad() if t < cfg.burn_in else nullcontext():
            s = x[t]
            for i in range(len(cfg.channels)):
                trace, r = layers[i]
                gain = cfg.input_gain if i == 0 else 1.0
                s, trace, r = lif_step(
                    s, trace, r, lambda p, i=i: drive(params, i, p, cfg), cfg.alpha, cfg.beta,
                    gain, cfg.alpha_rp, cfg.w_rp, cfg.reset, cfg.surrogate_slope,
                )
                layers[i] = (trace, r)
            q = cfg.beta * out.q + (1 - cfg.beta) * s.flatten(1)
            out = TraceState(q, cfg.alpha * out.p + (1 - cfg.alpha) * q)
    return out.p


def hidden_spikes(params: dict, frames: torch.Tensor, cfg: ModelConfig) -> list[torch.Tensor]:
    """Spike trains [T, B, C, H, W] of every hidden layer over all steps (no gradient): for
    firing-rate watches and initialisation."""
    record: list[torch.Tensor] = []
    with torch.no_grad():
        _run(params, prepare_input(frames, cfg), None, cfg, record)
    return record
