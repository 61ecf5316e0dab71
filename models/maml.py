"""MAML as a few pure functions over a parameter dict (after functorch's maml_omniglot example).

``InnerLoop`` (``adapt`` takes a number of its steps) is the inner loop that meta-training (second
order), evaluation and the service share; the service drives it step by step, to stop on time.
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


class InnerLoop:
    """The inner loop, driven by its caller one SGD step at a time: ``params`` is where it stands
    (the start put on the ``quantizer``'s grid, then each step's result) and ``step()`` takes one
    step, theta' = Q(theta - lr * g), returning the support loss before it (detached).

    ``lr`` is one step size or one per parameter (learned, Meta-SGD style). ``names`` restricts the
    adapted parameters (e.g. the output layer only); the others pass through unchanged. With a
    ``quantizer`` every step re-quantizes on the grid of ``scales`` (default: the quantizer's grid
    for the starting weights). ``create_graph`` keeps the graph through the steps (second order).
    """

    def __init__(
        self,
        forward: Forward,
        params: dict[str, torch.Tensor],
        support: torch.Tensor,
        labels: torch.Tensor,
        lr: float | Mapping[str, torch.Tensor] = 1.0,
        quantizer: Quantizer | None = None,
        create_graph: bool = False,
        *,
        names: tuple[str, ...] | None = None,
        class_mask: torch.Tensor | None = None,
        scales: dict[str, float] | None = None,
        generator: torch.Generator | None = None,
    ):
        self.names = tuple(params) if names is None else names
        self.fixed = {k: v for k, v in params.items() if k not in self.names}
        self.fast = {k: params[k] for k in self.names}
        self.lr, self.quantizer, self.create_graph = lr, quantizer, create_graph
        self.generator = generator
        if quantizer is not None:
            self.scales = scales or quantizer.scales(params)
            self.fast = quantizer.fake_all(self.fast, self.scales, generator)
        self.loss = lambda p: masked_loss(forward({**self.fixed, **p}, support), labels, class_mask)
        # Without a meta-gradient, plain autograd on detached leaves is cheaper than
        # torch.func.grad; under vmap only torch.func works.
        self.plain = not create_graph and not vmapped(support, *self.fast.values())

    @property
    def params(self) -> dict[str, torch.Tensor]:
        return {**self.fixed, **self.fast}

    def step(self) -> torch.Tensor:
        if self.plain:
            grads, loss = _leaf_grad(self.loss, self.fast)
        else:
            grads, loss = torch.func.grad_and_value(self.loss)(self.fast)
        if not self.create_graph:
            grads = {k: g.detach() for k, g in grads.items()}
        fast = {k: self.fast[k] - _lr(self.lr, k) * grads[k] for k in self.names}
        if self.quantizer is not None:
            fast = self.quantizer.fake_all(fast, self.scales, self.generator)
        self.fast = fast
        return loss.detach()


def adapt(
    forward: Forward,
    params: dict[str, torch.Tensor],
    support: torch.Tensor,
    labels: torch.Tensor,
    steps: int = 1,
    lr: float | Mapping[str, torch.Tensor] = 1.0,
    quantizer: Quantizer | None = None,
    create_graph: bool = False,
    **options,
) -> dict[str, torch.Tensor]:
    """``steps`` SGD steps on the support loss from ``params``; returns the new params
    (``InnerLoop`` describes the arguments and ``options``)."""
    loop = InnerLoop(forward, params, support, labels, lr, quantizer, create_graph, **options)
    for _ in range(steps):
        loop.step()
    return loop.params


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
