"""The DECOLLE leaky integrate-and-fire neuron, as pure functions of tensors.

Per layer and time step (Stewart and Neftci, arXiv 2201.10777, after DECOLLE):
    Q <- beta Q + (1-beta) gain S_in        (synaptic trace)
    P <- alpha P + (1-alpha) Q              (membrane trace of the input)
    U = W P + b + R                         (W: the layer's convolution or dense map)
    S = H(U)
    R <- alpha_rp R - (1-alpha_rp) w_rp S   (soft reset, refractory)

Q and P are a linear time-invariant filter of the input spikes that does not depend on the layer's
weights or state. So a layer can filter its whole input sequence at once (``trace_filter``: one
matrix product over time), apply its convolution to all time steps in one batched call, and only
the refractory scan (``spike_scan``) runs step by step, in place, with a hand-written backward.
``lif_step`` is the plain per-step form, kept as the oracle that the fast path must match.

Tensors may be in any dense memory layout (the network keeps channels last, where convolution and
pooling are fastest on CPU): the functions work in memory order and return the input's layout.
Under ``torch.func.vmap`` they fall back to plain out-of-place operations.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch
from torch._C import _functorch as functorch

from spikeshot.models import surrogate
from spikeshot.models.surrogate import spike


class Neuron(NamedTuple):
    """A layer's neuron constants: the trace decays ``alpha`` and ``beta``, the input ``gain``,
    the refractory decay ``alpha_rp`` and weight ``w_rp``, the ``reset`` ("soft" or "hard") and
    the surrogate gradient's ``slope``."""

    alpha: float
    beta: float
    gain: float = 1.0
    alpha_rp: float = 0.65
    w_rp: float = 1.0
    reset: str = "soft"
    slope: float = 10.0


class TraceState(NamedTuple):
    """Input-side traces of a layer, shaped like its input."""

    q: torch.Tensor
    p: torch.Tensor


class LIFState(NamedTuple):
    """A layer's state: its input traces and its refractory term R, shaped like its output."""

    trace: TraceState
    r: torch.Tensor


@lru_cache(maxsize=64)
def _trace_matrices(steps: int, alpha: float, beta: float, gain: float):
    """Linear maps of the trace recursion over ``steps``, computed by running it on unit impulses:
    P_t from the inputs x_1..x_T [T, T] and from the initial (q0, p0) [T, 2]; the final (Q, P) from
    the inputs [2, T] and from (q0, p0) [2, 2]."""
    a = np.zeros((steps, steps))
    final_q = np.zeros(steps)
    for s in range(steps):
        q = p = 0.0
        for t in range(steps):
            q = beta * q + (1 - beta) * gain * (1.0 if t == s else 0.0)
            p = alpha * p + (1 - alpha) * q
            a[t, s] = p
        final_q[s] = q
    init = np.zeros((steps, 2))
    q, p = 1.0, 0.0
    for t in range(steps):
        q = beta * q
        p = alpha * p + (1 - alpha) * q
        init[t] = p, alpha ** (t + 1)
    last_x = np.stack([final_q, a[-1]])
    last_s = np.array([[beta**steps, 0.0], init[-1]])
    return a, init, last_x, last_s


def _matrices(x: torch.Tensor, n: Neuron):
    """``_trace_matrices`` for ``x``'s steps, as tensors of its dtype and device."""
    return _tensors(x.shape[0], float(n.alpha), float(n.beta), float(n.gain), x.dtype, x.device)


@lru_cache(maxsize=64)
def _tensors(steps, alpha, beta, gain, dtype, device):
    ms = _trace_matrices(steps, alpha, beta, gain)
    with torch.inference_mode(False):  # shared constants: usable with autograd wherever made
        return tuple(torch.as_tensor(m, dtype=dtype, device=device) for m in ms)


def _memory_order(x: torch.Tensor) -> tuple[list[int], list[int]]:
    """The permutation of ``x``'s dims (time first) that lists them in memory order, and its
    inverse: ``x.permute(order)`` is contiguous for any dense layout (channels last included)."""
    rest = sorted(range(1, x.dim()), key=lambda d: x.stride(d), reverse=True)
    order = [0, *rest]
    return order, [order.index(d) for d in range(x.dim())]


def vmapped(*tensors: torch.Tensor) -> bool:
    """Whether any tensor is batched by ``torch.func.vmap`` at some level, where in-place updates of
    fresh buffers, data-dependent checks and custom kernels do not apply."""
    for t in tensors:
        while functorch.is_functorch_wrapped_tensor(t):
            if functorch.is_batchedtensor(t):
                return True
            t = functorch.get_unwrapped(t)
    return False


def standard_spike() -> bool:
    """Whether ``spike`` is the standard one, whose values are exactly 0 and 1: the fused scan and
    the exact convolution of spikes rely on it (a test may swap in a smooth twin)."""
    return spike is surrogate.spike


def _flatten(x: torch.Tensor, state: TraceState):
    """``x`` [T, ...] as [T, M] in memory order, the state as [2, M] in the same order, and the
    permutation that puts a [., ...] result in memory order back in ``x``'s dims."""
    order, inverse = _memory_order(x)
    xp = x.permute(order)
    step_order = [d - 1 for d in order[1:]]
    s0 = torch.stack([s.expand(x.shape[1:]).permute(step_order).reshape(-1) for s in state])
    return xp.reshape(x.shape[0], -1), s0, xp.shape[1:], inverse


def trace_filter(x: torch.Tensor, state: TraceState, n: Neuron) -> tuple[torch.Tensor, TraceState]:
    """Filter an input sequence ``x`` [T, ...] into the membrane traces P [T, ...] (in ``x``'s
    memory layout); also return the traces after the last step.

    One matrix product over time (two graph nodes for any T): at the network's sizes its T
    multiply-adds per value cost less than the recursion's 2 T small operations."""
    flat, s0, shape, inverse = _flatten(x, state)
    a, init, last_x, last_s = _matrices(x, n)
    p = a @ flat
    p = torch.addmm(p, init, s0) if vmapped(p, s0) else p.addmm_(init, s0)
    q = last_x[0] @ flat + last_s[0] @ s0
    p = p.view(-1, *shape).permute(inverse)
    return p, TraceState(q.view(shape).permute([d - 1 for d in inverse[1:]]), p[-1])


def trace_final(x: torch.Tensor, state: TraceState, n: Neuron) -> TraceState:
    """Only the traces after the last step of ``x`` [T, ...], which ``trace_filter`` also returns,
    for the cost of two weighted sums over time."""
    _, _, last_x, last_s = _matrices(x, n)
    flat, s0, shape, inverse = _flatten(x, state)
    q, p = torch.addmm(last_s @ s0, last_x, flat).view(2, *shape).permute(inverse).unbind(0)
    return TraceState(q, p)


def spike_scan(v: torch.Tensor, r0: torch.Tensor, n: Neuron) -> tuple[torch.Tensor, torch.Tensor]:
    """Spikes [T, ...] from the membrane drive ``v`` [T, ...] (W P + b) and the refractory state;
    returns the spikes and the refractory state after the last step.

    With the standard spike (``surrogate.spike``) the steps run in place without a graph (four small
    operations a step); when a gradient is needed they are one autograd function whose backward is
    a loop of three to five operations a step, written with differentiable operations so that
    second-order MAML differentiates through it. Any other spike function (a test's smooth twin)
    and vmapped calls take the plain loop of the oracle's expressions.
    """
    alpha_rp, w_rp, reset, slope = n.alpha_rp, n.w_rp, n.reset, n.slope
    order, inverse = _memory_order(v)
    vp = v.permute(order).contiguous()
    r = r0.expand(v.shape[1:]).permute([d - 1 for d in order[1:]])
    if standard_spike() and not vmapped(v, r0):
        grad = torch.is_grad_enabled() and (v.requires_grad or r0.requires_grad)
        if grad:
            s, r, *_ = _Scan.apply(vp, r, alpha_rp, w_rp, reset, slope)
        else:
            s, r = _scan_values(vp, r, alpha_rp, w_rp, reset, keep=False)
    else:
        s, r = _scan_graph(vp, r, alpha_rp, w_rp, reset, slope)
    return s.permute(inverse), r.permute([d - 1 for d in inverse[1:]])


@torch.no_grad()
def _scan_values(v, r0, alpha_rp, w_rp, reset, keep):
    """The scan's values, in place: spikes and final state, and with ``keep`` the membranes U and
    (hard reset) the states R before each step, for the backward. The numba loop where it is
    installed (``scan_kernel``), else ``_torch_scan``."""
    if not _stored_floats(v, r0):
        return _torch_scan(v, r0, alpha_rp, w_rp, reset, keep)
    hard = reset == "hard"
    s = torch.empty_like(v)
    u = torch.empty_like(v) if keep else v.new_empty((1, *v.shape[1:]))
    rs = torch.empty_like(v) if hard and keep else v.new_empty((0, *v.shape[1:]))
    r = r0.clone(memory_format=torch.contiguous_format)
    const = v.numpy().dtype.type  # the reference's arithmetic: constants in the tensors' dtype
    width = v[0].numel()
    v2, s2, u2, rs2 = (x.view(len(x), width).numpy() for x in (v, s, u, rs))
    _scan_kernel().scan(
        v2, r.view(width).numpy(), const(alpha_rp), const((1 - alpha_rp) * w_rp), hard, s2, u2, rs2
    )
    if not keep:
        return s, r
    return (s, r, u, rs) if hard else (s, r, u)


@lru_cache(maxsize=1)
def _scan_kernel():
    """The numba scan (``scan_kernel``), imported on first use; None without numba."""
    try:
        return importlib.import_module("spikeshot.models.scan_kernel")
    except ImportError:
        return None


def _torch_scan(v, r0, alpha_rp, w_rp, reset, keep):
    """``_scan_values`` in torch operations, four a step: the kernel's reference."""
    hard = reset == "hard"
    s = torch.empty_like(v)
    u = torch.empty_like(v) if keep else torch.empty_like(v[0]).expand_as(v)
    rs = torch.empty_like(v) if hard and keep else None
    r = r0.clone(memory_format=torch.contiguous_format)
    for t, (vt, ut, st) in enumerate(zip(v.unbind(0), u.unbind(0), s.unbind(0), strict=True)):
        torch.add(vt, r, out=ut)
        torch.gt(ut, 0, out=st)
        if hard:  # the oracle's alpha_rp*r*(1-s) - s*(u-r), for s in {0, 1}
            if rs is not None:
                rs[t] = r
            r = torch.where(st > 0, r - ut, r * alpha_rp)
        else:
            r.mul_(alpha_rp).sub_(st, alpha=(1 - alpha_rp) * w_rp)
    if not keep:
        return s, r
    return (s, r, u, rs) if hard else (s, r, u)


def _scan_graph(v, r, alpha_rp, w_rp, reset, slope):
    out = []
    for vt in v.unbind(0):  # unbind, not v[t]: one backward node, not T full-size zero tensors
        u = vt + r
        s = spike(u, slope)
        r = _refractory(r, u, s, alpha_rp, w_rp, reset)
        out.append(s)
    return torch.stack(out), r


class _Scan(torch.autograd.Function):
    """The refractory scan with the standard spike. Outputs: spikes, final state, the membranes U
    and (hard reset) the states R before each step; U and R are outputs so that a second
    derivative can reach them through this function's own backward."""

    @staticmethod
    def forward(v, r0, alpha_rp, w_rp, reset, slope):
        return _scan_values(v, r0, alpha_rp, w_rp, reset, keep=True)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, _, ctx.alpha_rp, ctx.w_rp, ctx.reset, ctx.slope = inputs
        ctx.save_for_backward(*output[:1], *output[2:])
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, g_s, g_r, g_u, g_rs=None):
        s, u, *rs = ctx.saved_tensors
        if not torch.is_grad_enabled() and _stored_floats(s, u, *rs, g_s, g_r, g_u, g_rs):
            return (*_kernel_backward(ctx, s, u, rs, g_s, g_r, g_u, g_rs), None, None, None, None)
        a = ctx.alpha_rp
        if ctx.reset == "hard":  # R' = a R (1 - S) - S (U - R): its partials in R, U and S
            (r,) = rs
            d_r, d_u, d_s = a * (1 - s) + s, -s, -(a * r) - (u - r)
        else:  # R' = a R - c S
            d_r, d_u, d_s = a, None, -(1 - a) * ctx.w_rp
        # per-step views by unbind: its backward (for a second derivative) is one stack
        sg, d_r, d_u, d_s, g_u, g_rs = (
            _steps(x, s.shape[0])
            for x in ((1 + ctx.slope * u.abs()).square().reciprocal(), d_r, d_u, d_s, g_u, g_rs)
        )
        g_s = _steps(torch.zeros_like(s) if g_s is None else g_s, s.shape[0])
        g_v = []
        for t in reversed(range(s.shape[0])):
            gs = g_s[t] if g_r is None else _axpy(g_s[t], g_r, d_s[t])
            gu = gs * sg[t]
            if g_r is not None and d_u[t] is not None:
                gu = torch.addcmul(gu, g_r, d_u[t])
            if g_u[t] is not None:
                gu = gu + g_u[t]
            g_v.append(gu)
            g_r = gu if g_r is None else _axpy(gu, g_r, d_r[t])
            if g_rs[t] is not None:
                g_r = g_r + g_rs[t]
        return torch.stack(g_v[::-1]), g_r, None, None, None, None


def _stored_floats(*tensors) -> bool:
    """Whether the numba kernels can take these tensors (None for absent ones): numba installed,
    and each a CPU float32/64 tensor with storage (not inside a ``torch.func`` transform)."""
    present = [t for t in tensors if t is not None]
    return _scan_kernel() is not None and all(
        t.device.type == "cpu"
        and t.dtype in (torch.float32, torch.float64)
        and not functorch.is_functorch_wrapped_tensor(t)
        for t in present
    )


def _kernel_backward(ctx, s, u, rs, g_s, g_r, g_u, g_rs):
    """``_Scan.backward``'s gradients of V and R0 in one numba loop (``scan_kernel``), when no
    graph of them is needed; its torch loop is the reference (tested equal)."""
    steps, width = s.shape[0], s[0].numel()

    def rows(x):  # [T, M] as numpy; an absent gradient as [0, M]
        if x is None:
            return s.new_empty((0, width)).numpy()
        return x.detach().contiguous().view(steps, width).numpy()

    g_v = torch.empty_like(s, memory_format=torch.contiguous_format)
    g_r0 = (
        s.new_zeros(s.shape[1:])
        if g_r is None
        else g_r.clone(memory_format=torch.contiguous_format)
    )
    const = g_v.numpy().dtype.type  # the reference's arithmetic: constants in the tensors' dtype
    _scan_kernel().scan_backward(
        rows(s),
        rows(u),
        rows(rs[0] if rs else None),
        rows(torch.zeros_like(s) if g_s is None else g_s),
        g_r0.view(width).numpy(),
        rows(g_u),
        rows(g_rs),
        const(ctx.alpha_rp),
        const((1 - ctx.alpha_rp) * ctx.w_rp),
        const(ctx.slope),
        ctx.reset == "hard",
        g_v.view(steps, width).numpy(),
    )
    return g_v, g_r0


def _steps(x, steps):
    """A per-step tensor's steps, or a constant (or None) repeated."""
    return x.unbind(0) if isinstance(x, torch.Tensor) else [x] * steps


def _axpy(x, y, a):
    """x + a y, for ``a`` a number or a tensor."""
    return torch.addcmul(x, y, a) if isinstance(a, torch.Tensor) else torch.add(x, y, alpha=a)


def _refractory(r, u, s, alpha_rp, w_rp, reset):
    if reset == "soft":
        return alpha_rp * r - (1 - alpha_rp) * w_rp * s
    # hard: a spike removes the whole membrane, so the same drive next step starts from zero
    return alpha_rp * r * (1 - s) - s * (u - r)


def lif_step(
    x, state: LIFState, drive, n: Neuron, fires: bool = True
) -> tuple[torch.Tensor, LIFState]:
    """One time step of one layer, written plainly: the test oracle for the batched path.

    ``drive`` maps P to W P + b (including pooling). Returns the spikes and the new state; a
    layer that never ``fires`` (a leaky integrator) returns its membrane instead of spikes.
    """
    q = n.beta * state.trace.q + (1 - n.beta) * n.gain * x
    p = n.alpha * state.trace.p + (1 - n.alpha) * q
    u = drive(p) + state.r
    if not fires:
        return u, LIFState(TraceState(q, p), state.r)
    s = spike(u, n.slope)
    return s, LIFState(TraceState(q, p), _refractory(state.r, u, s, n.alpha_rp, n.w_rp, n.reset))
