"""The refractory scan's values (``lif.spike_scan`` without a graph, and the forward of its fused
autograd function) as one numba loop a layer, instead of four small torch operations a step.

``lif._torch_scan`` is the reference and the path taken where numba is not installed; the tests
check the two equal bit for bit. The arithmetic is the reference's, in the tensors' own precision
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
