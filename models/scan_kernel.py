"""The refractory scan's values (``lif.spike_scan`` without a graph, and the forward of its fused
autograd function) as one numba loop a layer, instead of four small torch operations a step; and
that function's first-order backward (the inner loop's, when no graph of the gradient is needed)
as one loop too, instead of the surrogate's five passes and three to five operations a step.

``lif._torch_scan`` and ``lif._Scan.backward``'s torch loop are the references and the paths taken
where numba is not installed; the tests check the values equal bit for bit and the gradients to
rounding. The arithmetic is the reference's, in the tensors' own precision
(the constants arrive in that dtype). ``cache=True`` keeps the machine code in ``__pycache__``.
"""

from __future__ import annotations

from numba import njit


@njit(nogil=True, cache=True)
def scan(v, r, alpha_rp, c, hard, s, u, rs):
    """Over the steps of ``v`` [T, M]: U = V + R, S = (U > 0), then R <- alpha_rp R - c S (soft)
    or R <- R - U where S else alpha_rp R (hard), with ``r`` [M] updated in place. Writes S to
    ``s`` [T, M], U to ``u`` ([T, M], or [1, M] when not kept) and, when ``rs`` is [T, M], the R
    before each step."""
    steps, width = v.shape
    keep_u, keep_r = u.shape[0] == steps, rs.shape[0] == steps
    one, zero = s.dtype.type(1), s.dtype.type(0)
    for t in range(steps):
        tu = t if keep_u else 0
        for m in range(width):
            um = v[t, m] + r[m]
            u[tu, m] = um
            if keep_r:
                rs[t, m] = r[m]
            spiked = um > 0
            s[t, m] = one if spiked else zero
            if hard:
                r[m] = r[m] - um if spiked else r[m] * alpha_rp
            elif spiked:
                r[m] = r[m] * alpha_rp - c
            else:
                r[m] = r[m] * alpha_rp


@njit(nogil=True, cache=True)
def scan_backward(s, u, rs, g_s, g_r, g_u, g_rs, alpha_rp, c, slope, hard, g_v):
    """The gradient of ``scan`` (the backward of ``lif._Scan`` when no graph of it is needed):
    from the saved spikes ``s``, membranes ``u`` and (hard reset) states ``rs`` [T, M], the
    gradients of the spikes ``g_s`` [T, M], of the final state ``g_r`` [M] (updated in place to
    the initial state's), and of the saved outputs ``g_u`` and ``g_rs`` ([T, M], or [0, M] when
    absent), writes the drive's gradient to ``g_v`` [T, M]. The surrogate is the fast sigmoid's
    ``1 / (slope |u| + 1)^2``."""
    steps, width = s.shape
    has_u, has_rs = g_u.shape[0] == steps, g_rs.shape[0] == steps
    one = s.dtype.type(1)
    for t in range(steps - 1, -1, -1):
        for m in range(width):
            sm, um, gr = s[t, m], u[t, m], g_r[m]
            if hard:
                rm = rs[t, m]
                gs = g_s[t, m] + gr * (-(alpha_rp * rm) - (um - rm))
            else:
                gs = g_s[t, m] + gr * -c
            d = one + slope * abs(um)
            gu = gs * (one / (d * d))
            if hard:
                gu = gu + gr * -sm
            if has_u:
                gu = gu + g_u[t, m]
            g_v[t, m] = gu
            if hard:
                gr = gu + gr * (alpha_rp * (one - sm) + sm)
            else:
                gr = gu + gr * alpha_rp
            if has_rs:
                gr = gr + g_rs[t, m]
            g_r[m] = gr
