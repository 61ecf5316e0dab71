"""The non-spiking baseline: the same convolutional architecture on the same event-count frames,
with ReLU units and time bins stacked as input channels, so SNN and ANN see identical tasks."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from spikeshot.models.config import ModelConfig
from spikeshot.models.snn import prepare_input


def features(params: dict, frames: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Flattened output of the last pooling, [B, features]."""
    x = prepare_input(frames, cfg).transpose(0, 1).flatten(1, 2)  # [B, T*2, H, W]
    pool = F.max_pool2d if cfg.pool_kind == "max" else F.avg_pool2d
    for i in range(len(cfg.channels)):
        w, b = params[f"conv{i}.weight"], params[f"conv{i}.bias"]
        x = pool(F.relu(F.conv2d(x, w, b, padding=cfg.kernel // 2)), cfg.pool)
    return x.flatten(1)
