"""A network is its config plus pure functions of a parameter dict: ``forward(params, frames)``
returns logits [B, ways]. Parameters live outside the network, so meta-training, per-session
adaptation and batched evaluation (``torch.func.vmap``) call the same forward with any weights."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from spikeshot.models import ann, snn
from spikeshot.models.config import ModelConfig

HEAD = ("out.weight", "out.bias")
# Where an inner loop starts: the meta-trained readout, or ``Network.prototype_head``.
HEADS = ("meta", "prototype")


@dataclass(frozen=True)
class Network:
    config: ModelConfig

    def prepare(self, params: dict):
        """What every forward of ``params`` computes before it runs (the SNN's weight layouts and
        exact spike convolutions; None for the ANN), for ``forward``'s ``prepared``: made once,
        it serves every forward of those weights without gradient."""
        return snn.prepare(params, self.config) if self.config.arch == "snn" else None

    def features(
        self, params: dict, frames: torch.Tensor, prepared=None, record: list | None = None
    ) -> torch.Tensor:
        """Inputs of the output layer, [B, features]; the SNN appends its hidden layers' spikes
        to ``record`` when given (``snn.features``), the ANN, which has none, nothing."""
        if self.config.arch == "snn":
            return snn.features(params, frames, self.config, prepared, record)
        return ann.features(params, frames, self.config)

    def forward(
        self, params: dict, frames: torch.Tensor, prepared=None, record: list | None = None
    ) -> torch.Tensor:
        """Logits [B, ways]; ``prepared``: the ``prepare`` of ``params``, or None; ``record``:
        as ``features``."""
        return readout(params, self.features(params, frames, prepared, record))

    __call__ = forward

    def prototype_head(self, params: dict, support: torch.Tensor, labels: torch.Tensor, ways: int):
        """``params`` with the readout set from the class means m_c of the support features
        (Proto-MAML's start), centred on the mean of the ``ways`` means: W_c = 2 (m_c - m),
        b_c = -(|m_c|^2 - mean |m|^2), whose logits rank the classes by the Euclidean distance to
        each mean (-|f - m_c|^2 up to a shift shared by the classes, so softmax and gradients are
        those of W_c = 2 m_c, b_c = -|m_c|^2, on a smaller range), and zero for the outputs beyond
        them. Differentiable in ``params`` through the features."""
        features = self.features(params, support)
        counts = torch.bincount(labels, minlength=ways)[:ways].clamp(min=1).unsqueeze(1)
        means = features.new_zeros(ways, features.shape[1]).index_add(0, labels, features) / counts
        sq = (means * means).sum(1)
        pad = self.config.ways - ways
        weight = F.pad(2 * (means - means.mean(0)), (0, 0, 0, pad))
        bias = F.pad(sq.mean() - sq, (0, pad))
        return {**params, "out.weight": weight, "out.bias": bias}

    def forward_grouped(self, sessions: list[tuple[dict, object]], frames: torch.Tensor):
        """Logits [G, B, ways] of G networks, each a ``(params, prepare(params))``, each on its own
        frames [G, B, ...], without gradient, equal to their own forwards: the SNN's hidden layers
        side by side in one pass (``snn.features_side_by_side``), the ANN's one after another."""
        with torch.no_grad():
            if self.config.arch != "snn" or len(sessions) == 1:
                pairs = zip(sessions, frames, strict=True)
                return torch.stack([self.forward(p, x, w) for (p, w), x in pairs])
            feats = snn.features_side_by_side(sessions, frames, self.config)
            return torch.stack([readout(p, f) for (p, _), f in zip(sessions, feats, strict=True)])

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every parameter."""
        cfg = self.config
        shapes = {}
        c_in = 2 if cfg.arch == "snn" else 2 * cfg.bins
        for i, c in enumerate(cfg.channels):
            shapes[f"conv{i}.weight"] = (c, c_in, cfg.kernel, cfg.kernel)
            shapes[f"conv{i}.bias"] = (c,)
            c_in = c
        shapes["out.weight"] = (cfg.ways, cfg.features)
        shapes["out.bias"] = (cfg.ways,)
        return shapes

    def init(self, seed: int = 0) -> dict[str, torch.Tensor]:
        """Seeded initial parameters: uniform fan-in scaled convolutions, zero biases, and a zero
        (or small uniform) output layer as the config says."""
        gen = torch.Generator().manual_seed(seed)
        params = {}
        for name, shape in self.shapes().items():
            if name.endswith("bias") or (name == "out.weight" and self.config.zero_head):
                params[name] = torch.zeros(shape)
            else:
                bound = 1.0 / math.sqrt(math.prod(shape[1:]))
                params[name] = (torch.rand(shape, generator=gen) * 2 - 1) * bound
        return params


def readout(params: dict, feats: torch.Tensor) -> torch.Tensor:
    """The output layer: logits from features."""
    return feats @ params["out.weight"].T + params["out.bias"]
