"""Output-layer-only adaptation (ANIL, Raghu et al. 2020): the service's fast mode.

With the body frozen, the support set's features are computed once, without gradient (so a
quantized body runs on the exact int8 path), and the inner steps on the readout need no
backpropagation: for ``logits = F W^T + b`` the cross-entropy's gradient is
``(softmax(logits) - onehot)^T F / N`` for W and its column mean for b. The steps are those of
``maml.adapt(..., names=HEAD)``: same learning rates, quantization and class mask, to rounding.
Not the paper's inner loop, which adapts every layer.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from spikeshot.models.network import HEAD, Network
from spikeshot.models.quantize import Quantizer


def adapt_head(
    net: Network,
    params: dict[str, torch.Tensor],
    support: torch.Tensor,
    labels: torch.Tensor,
    steps: int = 1,
    lr: float | Mapping[str, torch.Tensor] = 1.0,
    quantizer: Quantizer | None = None,
    *,
    class_mask: torch.Tensor | None = None,
    scales: dict[str, float] | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """``steps`` SGD steps on the readout only, from ``params``; returns new params (the body's
    tensors are passed through). Arguments as in ``maml.adapt``."""
    with torch.no_grad():
        feats = net.features(params, support)
    return head_steps(params, feats, labels, steps, lr, quantizer, class_mask=class_mask,
                      scales=scales, generator=generator)


@torch.no_grad()
def head_steps(
    params: dict[str, torch.Tensor],
    feats: torch.Tensor,
    labels: torch.Tensor,
    steps: int = 1,
    lr: float | Mapping[str, torch.Tensor] = 1.0,
    quantizer: Quantizer | None = None,
    *,
    class_mask: torch.Tensor | None = None,
    scales: dict[str, float] | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """The readout's SGD steps on fixed features ``feats`` [N, F], in closed form."""
    head = {k: params[k] for k in HEAD}
    if quantizer is not None:
        scales = scales or quantizer.scales(params)
        head = quantizer.fake_all(head, scales, generator)
    onehot = F.one_hot(labels, head["out.bias"].shape[0]).to(feats.dtype)
    for _ in range(steps):
        logits = feats @ head["out.weight"].T + head["out.bias"]
        if class_mask is not None:
            logits = logits.masked_fill(~class_mask, float("-inf"))
        g = (logits.softmax(-1) - onehot) / len(labels)
        grads = {"out.weight": g.T @ feats, "out.bias": g.sum(0)}
        head = {k: head[k] - _lr(lr, k) * grads[k] for k in HEAD}
        if quantizer is not None:
            head = quantizer.fake_all(head, scales, generator)
    return {**params, **head}


def _lr(lr, name):
    return lr[name] if isinstance(lr, Mapping) else lr
