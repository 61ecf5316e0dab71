"""MAML as a few pure functions over a parameter dict (after functorch's maml_omniglot example).

``adapt`` is the inner loop that meta-training (second order), evaluation and the service share.
Gradients come from ``torch.func.grad``, so ``adapt`` composes with ``torch.func.vmap`` over a
batch of tasks and with an outer ``backward()`` through it (second-order MAML). With
``create_graph=False`` the inner gradients are detached: first-order MAML, and no graph kept in
evaluation or serving (where plain autograd on detached leaves computes them, outside vmap).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from spikeshot.models.lif import vmapped
from spikeshot.models.quantize import Quantizer

Forward = Callable[[dict, torch.Tensor], torch.Tensor]


def masked_loss(logits: torch.Tensor, labels: torch.Tensor, class_mask=None) -> torch.Tensor:
    """Cross-entropy over the classes in ``class_mask`` (bool [ways]; None: all classes)."""
    if class_mask is not None:
        logits = logits.masked_fill(~class_mask, float("-inf"))
    return F.cross_entropy(logits, labels)


def adapt(
    forward: Forward,
    params: dict[str, torch.Tensor],
    support: torch.Tensor,
    labels: torch.Tensor,
    steps: int = 1,
    lr: float | Mapping[str, torch.Tensor] = 1.0,
    quantizer: Quantizer | None = None,
    create_graph: bool = False,
    *,
    names: tuple[str, ...] | None = None,
    class_mask: torch.Tensor | None = None,
    scales: dict[str, float] | None = None,
    generator: torch.Generator | None = None,
    between_steps: Callable[[int], None] | None = None,
    losses: list[torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """``steps`` SGD steps on the support loss from ``params``; returns new params.

    ``lr`` is one step size or one per parameter (learned, Meta-SGD style). ``names`` restricts the
    adapted parameters (e.g. the output layer only); the others pass through unchanged. With a
    ``quantizer`` the start is put on its grid and every step re-quantizes,
    theta' = Q(theta - lr * g), on the grid of ``scales`` (default: the quantizer's grid for the
    starting weights).
    ``between_steps(i)`` runs before step i, e.g. to stop on a deadline by raising. ``losses``,
    when given, receives the support loss (detached) at the start of each step.
    """
    names = tuple(params) if names is None else names
    fixed = {k: v for k, v in params.items() if k not in names}
    fast = {k: params[k] for k in names}
    if quantizer is not None:
        scales = scales or quantizer.scales(params)
        fast = quantizer.fake_all(fast, scales, generator)

    def loss_fn(p):
        return masked_loss(forward({**fixed, **p}, support), labels, class_mask)

    # Without a meta-gradient, plain autograd on detached leaves is cheaper than torch.func.grad;
    # under vmap only torch.func works.
    plain = not create_graph and not vmapped(support, *fast.values())
    for i in range(steps):
        if between_steps is not None:
            between_steps(i)
        if plain:
            grads, loss = _leaf_grad(loss_fn, fast)
        else:
            grads, loss = torch.func.grad_and_value(loss_fn)(fast)
        if losses is not None:
            losses.append(loss.detach())
        if not create_graph:
            grads = {k: g.detach() for k, g in grads.items()}
        fast = {k: fast[k] - _lr(lr, k) * grads[k] for k in names}
        if quantizer is not None:
            fast = quantizer.fake_all(fast, scales, generator)
    return {**fixed, **fast}


def _leaf_grad(loss_fn, params: dict) -> tuple[dict, torch.Tensor]:
    leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
    with torch.enable_grad():
        loss = loss_fn(leaves)
        grads = torch.autograd.grad(loss, list(leaves.values()))
    return dict(zip(leaves, grads, strict=True)), loss


def _lr(lr, name):
    return lr[name] if isinstance(lr, Mapping) else lr


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean())
