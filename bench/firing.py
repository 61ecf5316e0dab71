"""Hidden firing of zoo SNNs on validation queries: each layer's rate, its silent units and channels
(never firing on any of the queries), and the share of zero features the readout sees.

    python bench/firing.py [MODEL ...] [--tasks N] [--json PATH]

Models: zoo names or checkpoints (default: the broad protonet SNNs of the zoo). Queries: those of
``--tasks`` 5-way 1-shot tasks within one group of each model's training meta-dataset's
validation split (seed 0, five queries a class), the same for every model of one geometry. Not a
speed benchmark: it measures how much of a network's width its features use.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from spikeshot.events.atomic import write_atomic
from spikeshot.models import checkpoint, snn
from spikeshot.models.datasets import open_dataset
from spikeshot.models.datasets.episodes import TaskSampler

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("glyphs_broad_protonet", "glyphs_broad_protonet_mid", "glyphs_broad_protonet_wide")


def firing(ckpt: checkpoint.Checkpoint, frames: torch.Tensor) -> dict:
    """Per hidden layer, over the steps after the burn-in: mean rate, silent units and channels;
    the zero share of the features. One forward pass gives both."""
    spikes: list[torch.Tensor] = []
    with torch.no_grad():
        features = snn.features(ckpt.params, frames, ckpt.config, record=spikes)
    layers = []
    for s in spikes:
        unit = s.float().mean(dim=(0, 1))  # [C, H, W]
        layers.append(
            {
                "rate": round(float(unit.mean()), 4),
                "silent_units": round(float((unit == 0).float().mean()), 4),
                "silent_channels": round(float((unit.amax(dim=(1, 2)) == 0).float().mean()), 4),
            }
        )
    return {"layers": layers, "zero_features": round(float((features == 0).float().mean()), 4)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(MODELS))
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--json", default=str(ROOT / "bench/results/firing.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = {"tasks": args.tasks, "models": {}}
    for name in args.models:
        ckpt = checkpoint.load(checkpoint.resolve(name))
        if ckpt.config.arch != "snn":
            raise SystemExit(f"{name}: an {ckpt.config.arch.upper()} has no spikes")
        split = open_dataset(ckpt.training["dataset"]).split("val")
        sampler = TaskSampler(split, 5, 1, 5, ckpt.geometry, 0, within_group=True)
        frames = torch.cat([torch.from_numpy(sampler[i].query) for i in range(args.tasks)])
        out = report["models"][name] = {"queries": len(frames), **firing(ckpt, frames)}
        layers = ", ".join(
            f"layer {i}: rate {r['rate']:.3f}, silent units {r['silent_units']:.0%}, "
            f"channels {r['silent_channels']:.0%}"
            for i, r in enumerate(out["layers"])
        )
        print(f"{name}: {layers}; zero features {out['zero_features']:.0%}", flush=True)
    write_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
