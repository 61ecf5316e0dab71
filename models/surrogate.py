"""The spike nonlinearity: Heaviside forward, fast-sigmoid derivative backward.

Written as a straight-through expression of differentiable operations,
``H(u) + s(u) - s(u).detach()`` with ``s(u) = u / (1 + k|u|)``, whose derivative is the paper's
``1 / (k|u| + 1)^2``. Its value is exactly ``H(u)``; its first derivative is the surrogate and its
second derivative exists too, so second-order MAML and ``torch.func`` transforms (vmap, grad) work
through it without a custom autograd.Function.
"""

from __future__ import annotations

import torch


def fast_sigmoid(u: torch.Tensor, slope: float = 10.0) -> torch.Tensor:
    """``u / (1 + slope*|u|)``: the surrogate's integral, whose derivative the spike passes back."""
    return u / (1.0 + slope * u.abs())


def spike(u: torch.Tensor, slope: float = 10.0) -> torch.Tensor:
    """1.0 where ``u > 0`` else 0.0, with gradient ``1 / (slope*|u| + 1)**2``."""
    s = fast_sigmoid(u, slope)
    return (u > 0).to(u.dtype) + (s - s.detach())
