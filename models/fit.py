"""The inner loop a session's settings call for, run once over a support set: what an Adapt
computes, without the service around it.

The settings (``FitSettings``: head, steps, step size, weight bits, grid, rounding) choose
where the inner loop starts (the meta-trained initialisation, or with the prototype head its
readout set from the support set's class means, ``prototype_start``), the parameters that adapt
(``inner_names``: those with learned step sizes when the step size is None, else all; and the
readout under the prototype head, which its start sets), the ``Quantizer`` of their grid
(``quantizer``: the model card's frac_bits when the session keeps the card's global grid) and
each one's grid step (``scales``, fixed from the initialisation so that every step lands on the
same grid; a readout of class means has a per-tensor grid of its own, ``readout_scales``).
``fit`` runs ``maml.InnerLoop`` from its start, one step at a time, and measures the support loss
before and after and the support accuracy. Labels map to output units in the order of
``classes``; the other outputs are masked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from spikeshot.models.checkpoint import Checkpoint
from spikeshot.models.maml import InnerLoop, accuracy, masked_loss
from spikeshot.models.network import HEAD, Network
from spikeshot.models.quantize import Quantizer


class FitSettings(Protocol):
    """What a fit reads of a session's settings (``head``: ``network.HEADS``; ``step_size``
    None: the model's learned step sizes; ``weight_bits`` 0: float32 weights)."""

    head: str
    inner_steps: int
    step_size: float | None
    weight_bits: int
    grid: str
    rounding: str


@dataclass(frozen=True)
class Fit:
    """A fit's outcome: the adapted parameters (those of ``inner_names``, on the grid of
    ``scales`` when quantized), the support loss before the first step and after the last, and
    the support accuracy after it."""

    params: dict[str, torch.Tensor]
    scales: dict[str, float] | None
    loss_before: float
    loss_after: float
    accuracy: float


def inner_names(checkpoint: Checkpoint, settings: FitSettings) -> tuple[str, ...]:
    """The parameters the inner loop adapts: those with learned step sizes, or all; and under the
    prototype head the readout, which its start sets."""
    names = tuple(checkpoint.inner_lr if settings.step_size is None else checkpoint.params)
    if settings.head == "prototype":
        names += tuple(k for k in HEAD if k not in names)
    return names


def prototype_start(
    network: Network,
    params: dict[str, torch.Tensor],
    frames: torch.Tensor,
    labels: torch.Tensor,
    ways: int,
    quantizer: Quantizer | None = None,
    grid: dict[str, float] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, float] | None]:
    """The prototype head's start and grid: ``params`` (those of ``grid`` put on it when
    quantized) with the readout set from the class means of the support ``frames``' features
    under those weights, the ones it classifies with (``Network.prototype_head``; ``ways``
    classes, ``labels`` 0..ways-1); and ``grid`` with the readout's own (``readout_scales``)."""
    if quantizer is not None:
        on_grid = {k: params[k] for k in grid if k not in HEAD}
        params = {**params, **quantizer.fake_all(on_grid, grid, generator)}
    with torch.no_grad():
        params = network.prototype_head(params, frames, labels, ways)
    if quantizer is None:
        return params, None
    return params, {**grid, **readout_scales(quantizer.bits, params)}


def readout_scales(bits: int, params: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """The grid of a readout set from class means: a symmetric per-tensor grid of ``bits`` from
    the means' own range, whatever the session's grid (on the global grid the differences of
    squared feature norms in the biases would clamp)."""
    return Quantizer(bits, "per_tensor").scales({k: params[k] for k in HEAD})


def quantizer(checkpoint: Checkpoint, settings: FitSettings) -> Quantizer | None:
    """The quantizer of the settings' grid; None for float32 weights."""
    if not settings.weight_bits:
        return None
    card = checkpoint.quantizer
    same_grid = card is not None and (card.bits, card.mode) == (settings.weight_bits, "global")
    frac_bits = card.frac_bits if same_grid and settings.grid == "global" else None
    return Quantizer(settings.weight_bits, settings.grid, settings.rounding, frac_bits)


def scales(
    checkpoint: Checkpoint,
    settings: FitSettings,
    params: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, float] | None:
    """The grid step of each adapted parameter, fixed from the initialisation ``params``
    (default the checkpoint's), but for a readout the prototype head sets, whose grid is its own
    (``prototype_start``); None for float32 weights."""
    q = quantizer(checkpoint, settings)
    if q is None:
        return None
    params = checkpoint.params if params is None else params
    own = HEAD if settings.head == "prototype" else ()
    return q.scales({k: params[k] for k in inner_names(checkpoint, settings) if k not in own})


def fit(
    checkpoint: Checkpoint,
    support: Sequence[tuple[str, np.ndarray]],
    classes: Sequence[str],
    settings: FitSettings,
    *,
    seed: int = 0,
    params: dict[str, torch.Tensor] | None = None,
    before_step: Callable[[], None] | None = None,
) -> Fit:
    """Adapt ``checkpoint`` to ``support`` ((label, frames [bins, 2, height, width]) pairs, each
    label one of ``classes``) with ``settings.inner_steps`` steps of the settings' inner loop.
    ``seed`` seeds stochastic rounding; ``params`` is the initialisation (default the
    checkpoint's, as float32; the prototype head's ``prototype_start`` starts from it);
    ``before_step()`` runs before each step and may raise to stop."""
    if params is None:
        params = {k: v.detach().float().contiguous() for k, v in checkpoint.params.items()}
    index = {label: i for i, label in enumerate(classes)}
    frames = torch.from_numpy(np.stack([frames for _, frames in support]))
    labels = torch.tensor([index[label] for label, _ in support])
    mask = torch.arange(checkpoint.config.ways) < len(classes)
    names = inner_names(checkpoint, settings)
    lr = checkpoint.inner_lr if settings.step_size is None else settings.step_size
    q, grid = quantizer(checkpoint, settings), scales(checkpoint, settings, params)
    generator = torch.Generator().manual_seed(seed)
    if settings.head == "prototype":
        params, grid = prototype_start(
            checkpoint.network, params, frames, labels, len(classes), q, grid, generator
        )
    forward = checkpoint.network.forward
    with torch.no_grad():
        loop = InnerLoop(
            forward,
            params,
            frames,
            labels,
            lr,
            q,
            names=names,
            class_mask=mask,
            scales=grid,
            generator=generator,
        )
        losses = []  # the support loss before each step: [0] is "before"
        for _ in range(settings.inner_steps):
            if before_step is not None:
                before_step()
            losses.append(float(loop.step()))
        fast = loop.params
        logits = forward(fast, frames)
        after = float(masked_loss(logits, labels, mask))
        acc = accuracy(logits.masked_fill(~mask, -math.inf), labels)
    before = losses[0] if losses else after
    return Fit({k: fast[k] for k in names}, grid, before, after, acc)
