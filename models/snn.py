"""The paper's spiking network as pure functions of a parameter dict.

Three spiking convolution layers (DECOLLE LIF, see ``lif``; the last may be a leaky integrator that
never fires, ``ModelConfig.last_layer``) with pooling on the membrane, then a dense readout with
one unit per way whose membrane at the last step is the logit vector. The readout integrates its
input with the same traces but neither fires nor resets: a reset on the readout would subtract from
the winning class's own logit.

Frames are [B, T, 2, H, W] event counts. The first ``burn_in`` steps run without gradient to warm
the state up; gradients flow through the rest (truncated BPTT, as in the paper).

Two implementations of one computation: ``features`` filters each layer's whole input sequence at
once and convolves all time steps in one batched call; ``features_stepwise`` is the plain
one-convolution-per-step loop, kept as the oracle the fast path must match.

The batched path keeps activations channels last ([T, B, C, H, W] viewed over memory laid out
[T, B, H, W, C]), where oneDNN's convolution and max pooling are fastest on CPU. Where a hidden
layer's weights sit on a fixed-point grid (quantized sessions and quantization-aware training), it
convolves first, exactly, on the binary spikes (in int8, see ``spike_conv``) and filters the
result: the convolution and the traces are both linear and time-invariant, so they commute.
Average pooling on the membrane is folded into the convolution: pooling k x k after a K x K
convolution is one convolution of stride k with the (K + k - 1)-wide kernel ``fold_pool`` makes,
which computes only the pooled outputs (about a third of the work at k = 2, K = 5).
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import cache, partial

import torch
import torch.nn.functional as F

from spikeshot.models import spike_conv
from spikeshot.models.config import ModelConfig
from spikeshot.models.lif import (
    LIFState,
    Neuron,
    TraceState,
    lif_step,
    spike_scan,
    standard_spike,
    trace_filter,
    trace_final,
    vmapped,
)


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


def neuron(cfg: ModelConfig, layer: int | None) -> Neuron:
    """The neuron constants of hidden layer ``layer`` (None: the readout's input traces, with
    its own alpha and beta where the config sets them); only the first layer scales its input
    by ``input_gain``."""
    readout = layer is None
    return Neuron(
        cfg.readout_alpha if readout and cfg.readout_alpha is not None else cfg.alpha,
        cfg.readout_beta if readout and cfg.readout_beta is not None else cfg.beta,
        cfg.input_gain if layer == 0 else 1.0,
        cfg.alpha_rp,
        cfg.w_rp,
        cfg.reset,
        cfg.surrogate_slope,
    )


def fires(cfg: ModelConfig, layer: int) -> bool:
    """Whether hidden layer ``layer`` spikes: all do but a last layer that is a leaky integrator
    (``last_layer = "li"``), whose membrane goes on to the readout's traces."""
    return cfg.last_layer == "lif" or layer < len(cfg.channels) - 1


def drive(params: dict, i: int, p: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """W P + b of hidden layer ``i`` for traces ``p`` [N, C, H, W], pooled on the membrane: the
    plain convolution, then the pooling."""
    v = F.conv2d(p, params[f"conv{i}.weight"], params[f"conv{i}.bias"], padding=cfg.kernel // 2)
    return _pool(v, cfg)


def _drive(p, weight, bias, cfg, groups=1):
    """``drive`` with the ``prepare``d ``weight`` (average pooling folded in)."""
    pad = cfg.kernel // 2
    if cfg.pool_kind == "avg":
        return F.conv2d(_channels_last(p), weight, bias, cfg.pool, pad, groups=groups)
    return _pool(F.conv2d(_channels_last(p), weight, bias, padding=pad, groups=groups), cfg)


def fold_pool(weight: torch.Tensor, pool: int) -> torch.Tensor:
    """The kernel [O, I, K + pool - 1, K + pool - 1] whose convolution with stride ``pool`` is
    the ``pool`` x ``pool`` average of ``weight``'s same-padded convolution (odd K): the mean of
    ``weight`` shifted by every offset of the pooling window. One matrix product per output
    channel, whose result is laid out channels last. Differentiable, vmap-safe."""
    o, i, k, _ = weight.shape
    folded = torch.matmul(_fold_matrix(k, pool, weight.dtype), weight.reshape(o, i, k * k).mT)
    return folded.view(o, k + pool - 1, k + pool - 1, i).permute(0, 3, 1, 2)


@cache
def _fold_matrix(k: int, pool: int, dtype: torch.dtype) -> torch.Tensor:
    """[(k + pool - 1)^2, k^2]: each folded tap, the mean of the taps the window shifts onto it."""
    eye = torch.eye(k * k, dtype=dtype).view(k * k, k, k)
    last = pool - 1
    shifted = (F.pad(eye, (b, last - b, a, last - a)) for a in range(pool) for b in range(pool))
    return (sum(shifted) / pool**2).flatten(1).T.contiguous()


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` [N, C, H, W] laid out channels last (a view when it already is), as oneDNN wants
    inputs and weights alike; vmap-safe, unlike ``contiguous(memory_format=...)``."""
    return x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)


def _pool(v: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    pool = F.max_pool2d if cfg.pool_kind == "max" else F.avg_pool2d
    return pool(v, cfg.pool)


def _zero(x: torch.Tensor) -> torch.Tensor:
    return x.new_zeros(())


def prepare(params: dict, cfg: ModelConfig) -> list:
    """Per hidden layer, its weights laid out channels last (average pooling folded in, see
    ``fold_pool``) and their exact convolution of spikes (``spike_conv.exact_kernel``; None with
    average pooling, in the first layer, for weights off a fixed-point grid and for spikes that
    are not 0/1). Made once per forward, for the burn-in and the gradient steps alike, or once for
    many forwards with the same weights (``features``' ``prepared``)."""
    out = []
    for i in range(len(cfg.channels)):
        w = params[f"conv{i}.weight"]
        if cfg.pool_kind == "avg":
            out.append((_channels_last(fold_pool(w, cfg.pool)), None))
            continue
        w = _channels_last(w)
        exact = i and standard_spike()
        out.append((w, spike_conv.exact_kernel(w, cfg.kernel // 2) if exact else None))
    return out


def _layer(params, i, s, trace, cfg, weight, kernel, groups=1):
    """The pooled drive [T, B, C, H', W'] of hidden layer ``i`` for its input ``s`` [T, B, ...]
    from ``trace``, and the traces after the last step.

    With a ``kernel`` (weights on a fixed-point grid) the layer convolves its binary input first,
    exactly (``spike_conv``), and filters the result: the filter then runs on the convolution's
    channels, and the state enters as the convolution of the initial traces. Otherwise (and always
    in the first layer, whose two input channels make filtering first the cheaper order) it filters
    its input first."""
    n = neuron(cfg, i)
    steps, pad, bias = s.shape[:2], cfg.kernel // 2, params[f"conv{i}.bias"]
    if kernel is None or vmapped(s):
        p, trace = trace_filter(s, trace, n)
        return _drive(p.flatten(0, 1), weight, bias, cfg, groups).unflatten(0, steps), trace
    z = spike_conv.conv(_channels_last(s.flatten(0, 1)), weight, kernel, pad)
    # the convolved initial traces; a 0-dim state is the zero state of a fresh run
    z0 = TraceState(
        *(
            F.conv2d(_channels_last(t.expand(s.shape[1:])), weight, padding=pad, groups=groups)
            if t.dim()
            else t
            for t in trace
        )
    )
    pz, _ = trace_filter(z.unflatten(0, steps), z0, n)
    v = _pool(pz.flatten(0, 1), cfg) + bias.view(-1, 1, 1)
    return v.unflatten(0, steps), trace_final(s, trace, n)


def _run(params, x, state, cfg, weights, record=None, groups=1):
    """All layers over the steps of ``x`` [T, B, ...] from ``state``, with the ``prepare`` of
    ``params`` (``groups`` networks side by side as channel groups, see ``stack``); returns the
    readout's traces at the last step [B, F] and the state after it. Appends each spiking hidden
    layer's spikes [T, B, C, H, W] to ``record`` when given."""
    s = x
    new_state = []
    for i in range(len(cfg.channels)):
        trace, r = state[i] if state else LIFState(TraceState(_zero(x), _zero(x)), _zero(x))
        s, trace = _layer(params, i, s, trace, cfg, *weights[i], groups)
        if fires(cfg, i):
            s, r = spike_scan(s, r, neuron(cfg, i))
            if record is not None:
                record.append(s)
        new_state.append(LIFState(trace, r))
    out_trace = state[-1] if state else TraceState(_zero(x), _zero(x))
    out_trace = trace_final(s, out_trace, neuron(cfg, None))
    new_state.append(out_trace)
    return out_trace.p.flatten(1), new_state


def features(
    params: dict,
    frames: torch.Tensor,
    cfg: ModelConfig,
    prepared: list | None = None,
    record: list | None = None,
) -> torch.Tensor:
    """The readout's input traces at the last step, [B, features]; ``prepared``: the ``prepare``
    of ``params`` (made here when None). Appends each hidden layer's spikes after the burn-in
    [T, B, C, H, W] to ``record`` when given, in the graph when there is one."""
    x = prepare_input(frames, cfg)
    weights = prepare(params, cfg) if prepared is None else prepared
    state = None
    if cfg.burn_in:
        with torch.no_grad():
            _, state = _run(params, x[: cfg.burn_in], None, cfg, weights)
    f, _ = _run(params, x[cfg.burn_in :], state, cfg, weights, record)
    return f


def stack(sessions: list[tuple[dict, list]], cfg: ModelConfig) -> tuple[dict, list]:
    """Several networks' ``(params, prepare(params))`` as one, for ``features_grouped``: each hidden
    layer's biases and prepared weights stacked along output channels (its convolution grouped).
    A layer whose weights all sit on a grid convolves spikes with the float grouped convolution,
    exact on spikes as the int8 one is (see ``spike_conv``), so every network's values are those
    of its own forward."""
    groups, pad = len(sessions), cfg.kernel // 2
    params, prepared = {}, []
    for i in range(len(cfg.channels)):
        params[f"conv{i}.bias"] = torch.cat([p[f"conv{i}.bias"] for p, _ in sessions])
        weight = torch.cat([w[i][0] for _, w in sessions])
        exact = all(w[i][1] is not None for _, w in sessions)
        kernel = partial(F.conv2d, weight=weight, padding=pad, groups=groups) if exact else None
        prepared.append((weight, kernel))
    return params, prepared


def features_grouped(params: dict, frames: torch.Tensor, cfg: ModelConfig, prepared: list):
    """``features`` of G networks (``stack``'s ``params`` and ``prepared``) at once, each on its
    own frames, without gradient: [G, B, T, 2, H, W] -> [G, B, features]."""
    groups, batch = frames.shape[:2]
    x = prepare_input(frames.flatten(0, 1), cfg)  # [T, G B, 2, H, W]
    x = x.unflatten(1, (groups, batch)).transpose(1, 2).flatten(2, 3)  # [T, B, G 2, H, W]
    state = None
    with torch.no_grad():
        if cfg.burn_in:
            _, state = _run(params, x[: cfg.burn_in], None, cfg, prepared, None, groups)
        f, _ = _run(params, x[cfg.burn_in :], state, cfg, prepared, None, groups)
    return f.unflatten(1, (groups, -1)).transpose(0, 1)


def features_side_by_side(
    sessions: list[tuple[dict, list]], frames: torch.Tensor, cfg: ModelConfig
):
    """Readout inputs [G, B, features] of G networks' ``(params, prepare(params))`` on their
    frames [G, B, T, 2, H, W], without gradient, each network's those of its own ``features``.
    Networks whose hidden layers are the same tensors (sessions that took no inner step share
    their model's) run as one batch of all their frames; the others side by side, one
    ``features_grouped`` pass for those whose layers convolve spikes alike (exactly on a grid, or
    in float)."""
    out = frames.new_empty(len(sessions), frames.shape[1], cfg.features)
    shared: dict[tuple[int, ...], list[int]] = {}
    for g, (params, _) in enumerate(sessions):
        shared.setdefault(tuple(id(params[k]) for k in _hidden(cfg)), []).append(g)
    kinds: dict[tuple[bool, ...], list[int]] = {}
    for members in shared.values():
        params, prepared = sessions[members[0]]
        if len(members) == 1:
            kinds.setdefault(tuple(kernel is None for _, kernel in prepared), []).append(members[0])
            continue
        with torch.no_grad():
            f = features(params, frames[members].flatten(0, 1), cfg, prepared)
        out[members] = f.unflatten(0, (len(members), -1))
    for members in kinds.values():
        params, prepared = stack([sessions[g] for g in members], cfg)
        out[members] = features_grouped(params, frames[members], cfg, prepared)
    return out


def _hidden(cfg: ModelConfig) -> list[str]:
    """The names of the hidden layers' parameters."""
    return [f"conv{i}.{k}" for i in range(len(cfg.channels)) for k in ("weight", "bias")]


def features_stepwise(params: dict, frames: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """The same as ``features``, one convolution per layer and time step."""
    x = prepare_input(frames, cfg)
    layers = [LIFState(TraceState(_zero(x), _zero(x)), _zero(x)) for _ in cfg.channels]
    out = TraceState(_zero(x), _zero(x))
    readout = neuron(cfg, None)
    for t in range(x.shape[0]):
        with torch.no_grad() if t < cfg.burn_in else nullcontext():
            s = x[t]
            for i in range(len(cfg.channels)):
                layer_drive = partial(drive, params, i, cfg=cfg)
                s, layers[i] = lif_step(s, layers[i], layer_drive, neuron(cfg, i), fires(cfg, i))
            q = readout.beta * out.q + (1 - readout.beta) * s.flatten(1)
            out = TraceState(q, readout.alpha * out.p + (1 - readout.alpha) * q)
    return out.p


def hidden_spikes(params: dict, frames: torch.Tensor, cfg: ModelConfig) -> list[torch.Tensor]:
    """Spike trains [T, B, C, H, W] of every spiking hidden layer over all steps (no gradient):
    for firing-rate watches and initialisation."""
    record: list[torch.Tensor] = []
    with torch.no_grad():
        _run(params, prepare_input(frames, cfg), None, cfg, prepare(params, cfg), record)
    return record
