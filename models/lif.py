"""The DECOLLE leaky integrate-and-fire neuron, as pure functions of tensors.

Per layer and time step (PAPER.md):
    Q <- beta Q + (1-beta) gain S_in        (synaptic trace)
    P <- alpha P + (1-alpha) Q              (membrane trace of the input)
    U = W P + b + R                         (W: the layer's convolution or dense map)
    S = H(U)
    R <- alpha_rp R - (1-alpha_rp) w_rp S   (soft reset, refractory)

Q and P are a linear time-invariant filter of the input spikes that does not depend on the layer's
weights or state. So a layer can filter its whole input sequence at once (``trace_filter``, one
matrix product over time), apply its convolution to all time steps in one batched call, and only the
refractory scan (``spike_scan``) runs step by step. ``lif_step`` is the plain per-step form, kept as
the oracle that the fast path must match.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch

from spikeshot.models.surrogate import spike


class TraceState(NamedTuple):
    """Input-side traces of a layer, shaped like its input."""

    q: torch.Tensor
    p: torch.Tensor


@lru_cache(maxsize=64)
def _trace_matrices(steps: int, alpha: float, beta: float, gain: float):
    """Linear maps of the trace recursion over ``steps``: P_t and the final Q, P from the inputs
    x_1..x_T and from the initial (q0, p0). Computed by running the recursion on unit impulses."""
    a = np.zeros((steps, steps))  # P_t from x_s
    aq = np.zeros(steps)  # final Q from x_s
    for s in range(steps):
        q = p = 0.0
        for t in range(steps):
            q = beta * q + (1 - beta) * gain * (1.0 if t == s else 0.0)
            p = alpha * p + (1 - alpha) * q
            a[t, s] = p
        aq[s] = q
    from_q0 = np.zeros(steps)
    from_p0 = np.zeros(steps)
    q, p = 1.0, 0.0
    for t in range(steps):
        q = beta * q
        p = alpha * p + (1 - alpha) * q
        from_q0[t] = p
    for t in range(steps):
        from_p0[t] = alpha ** (t + 1)
    return a, aq, from_q0, from_p0, beta**steps


def trace_filter(
    x: torch.Tensor, state: TraceState, alpha: float, beta: float, gain: float
) -> tuple[torch.Tensor, TraceState]:
    """Filter an input sequence ``x`` [T, ...] into the membrane traces P [T, ...] in one matrix
    product; also return the traces after the last step."""
    steps = x.shape[0]
    a, aq, fq, fp, bq = _trace_matrices(steps, float(alpha), float(beta), float(gain))
    a, aq, fq, fp = (torch.as_tensor(m, dtype=x.dtype, device=x.device) for m in (a, aq, fq, fp))
    flat = x.reshape(steps, -1)
    p = a @ flat + fq[:, None] * state.q.reshape(1, -1) + fp[:, None] * state.p.reshape(1, -1)
    q_last = aq @ flat + bq * state.q.reshape(-1)
    shape = x.shape[1:]
    return p.reshape(x.shape), TraceState(q_last.reshape(shape), p[-1].reshape(shape))


def spike_scan(
    v: torch.Tensor, r0: torch.Tensor, alpha_rp: float, w_rp: float, reset: str, slope: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spikes [T, ...] from the membrane drive ``v`` [T, ...] (W P + b) and the refractory state;
    returns the spikes and the refractory state after the last step."""
    r = r0
    out = []
    for t in range(v.shape[0]):
        u = v[t] + r
        s = spike(u, slope)
        r = _refractory(r, u, s, alpha_rp, w_rp, reset)
        out.append(s)
    return torch.stack(out), r


def _refractory(r, u, s, alpha_rp, w_rp, reset):
    if reset == "soft":
        return alpha_rp * r - (1 - alpha_rp) * w_rp * s
    # hard: a spike removes the whole membrane, so the same drive next step starts from zero
    return alpha_rp * r * (1 - s) - s * (u - r)


def lif_step(x, trace: TraceState, r, weight_fn, alpha, beta, gain, alpha_rp, w_rp, reset, slope):
    """One time step of one layer, written plainly: the test oracle for the batched path.

    ``weight_fn`` maps P to the drive W P + b (including pooling). Returns spikes and new states.
    """
    q = beta * trace.q + (1 - beta) * gain * x
    p = alpha * trace.p + (1 - alpha) * q
    u = weight_fn(p) + r
    s = spike(u, slope)
    return s, TraceState(q, p), _refractory(r, u, s, alpha_rp, w_rp, reset)
