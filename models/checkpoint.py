"""Checkpoints: weights in safetensors beside a JSON model card. Loading never unpickles.

``NAME.safetensors`` holds the meta-trained parameters (and, under ``inner_lr.<param>``, learned
inner-loop step sizes when there are any). ``NAME.json`` is the model card:

- ``model``: the ``ModelConfig`` (architecture and neuron constants)
- ``geometry``: the ``FrameGeometry`` of the input (sensor crop, downsample, window, bins)
- ``inner_loop``: steps and step size used at meta-training, the defaults for adaptation
- ``quantization``: the grid sessions' inner loops run on by default (null: float32); whether
  meta-training itself was quantization-aware is the recipe's ``bits`` under ``training``
- ``training``: data set, recipe and provenance; ``metrics``: measured accuracy
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as tensor_bytes

from spikeshot.events.atomic import write_atomic
from spikeshot.events.binning import FrameGeometry
from spikeshot.models.config import ModelConfig
from spikeshot.models.network import Network
from spikeshot.models.quantize import Quantizer

CARD_FORMAT = "spikeshot-model/1"
LR_PREFIX = "inner_lr."
ZOO = Path(__file__).resolve().parent / "zoo"  # the shipped initialisations
# The zoo's default model: the initialisation a robot team starts from.
ZOO_DEFAULT = "glyphs_broad_protonet_mid"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and what is wrong."""


@dataclass
class Checkpoint:
    config: ModelConfig
    geometry: FrameGeometry
    params: dict[str, torch.Tensor]
    inner_lr: dict[str, torch.Tensor] = field(default_factory=dict)
    inner_steps: int = 1
    inner_step_size: float = 1.0
    quantizer: Quantizer | None = None
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    name: str = ""

    @property
    def network(self) -> Network:
        return Network(self.config)

    @property
    def head(self) -> str:
        """Where its inner loop starts (``network.HEADS``), as it was meta-trained."""
        return self.training.get("recipe", {}).get("head", "meta")

    @property
    def step_sizes(self) -> dict[str, torch.Tensor] | float:
        """Its inner loop's step sizes, as ``maml.adapt`` takes them: the learned ones per
        tensor where it has them, else the card's one step size."""
        return self.inner_lr or self.inner_step_size

    def card(self) -> dict:
        return {
            "format": CARD_FORMAT,
            "name": self.name,
            "model": self.config.to_dict(),
            "geometry": self.geometry.to_dict(),
            "inner_loop": {
                "steps": self.inner_steps,
                "step_size": self.inner_step_size,
                "learned_step_sizes": sorted(self.inner_lr),
                "head": self.head,
            },
            "quantization": None if self.quantizer is None else self.quantizer.to_dict(),
            "training": self.training,
            "metrics": self.metrics,
            "parameters": sum(v.numel() for v in self.params.values()),
        }


def paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, card) for a checkpoint named by either file or by the common stem."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save(ckpt: Checkpoint, path: str | Path) -> tuple[Path, Path]:
    """Write both files, each atomically (``write_atomic``)."""
    wpath, cpath = paths(path)
    tensors = {k: v.detach().contiguous().float() for k, v in ckpt.params.items()}
    tensors.update(
        {LR_PREFIX + k: v.detach().contiguous().float() for k, v in ckpt.inner_lr.items()}
    )
    write_atomic(wpath, tensor_bytes(tensors, metadata={"format": CARD_FORMAT}))
    write_atomic(cpath, json.dumps(ckpt.card(), indent=2) + "\n")
    return wpath, cpath


def load(path: str | Path) -> Checkpoint:
    """Read a checkpoint and check that its tensors match its card. A card without a name gives
    the checkpoint its file's stem."""
    wpath, cpath = paths(path)
    for p in (wpath, cpath):
        if not p.is_file():
            raise CheckpointError(f"{p}: no such checkpoint file")
    try:
        card = json.loads(cpath.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cpath}: not valid JSON ({e})") from e
    if card.get("format") != CARD_FORMAT:
        raise CheckpointError(
            f"{cpath}: format must be {CARD_FORMAT!r}, got {card.get('format')!r}"
        )
    try:
        config = ModelConfig.from_dict(card["model"])
        geometry = FrameGeometry.from_dict(card["geometry"])
        quant = card.get("quantization")
        quantizer = None if quant is None else Quantizer(**quant)
        inner = card.get("inner_loop", {})
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{cpath}: invalid model card: {e}") from e
    if (geometry.bins, geometry.height, geometry.width) != (config.bins, *config.input_hw):
        raise CheckpointError(
            f"{cpath}: geometry gives {geometry.bins} bins of {geometry.height}x{geometry.width} "
            f"but the model expects {config.bins} bins of {config.input_hw[0]}x{config.input_hw[1]}"
        )
    try:
        tensors = load_file(str(wpath))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{wpath}: cannot read safetensors: {e}") from e
    params = {k: v for k, v in tensors.items() if not k.startswith(LR_PREFIX)}
    inner_lr = {k[len(LR_PREFIX) :]: v for k, v in tensors.items() if k.startswith(LR_PREFIX)}
    expected = Network(config).shapes()
    if set(params) != set(expected):
        missing, extra = sorted(set(expected) - set(params)), sorted(set(params) - set(expected))
        raise CheckpointError(
            f"{wpath}: tensors do not match the card: missing {missing}, extra {extra}"
        )
    for k, shape in expected.items():
        if tuple(params[k].shape) != shape:
            raise CheckpointError(
                f"{wpath}: tensor {k} has shape {list(params[k].shape)}, "
                f"the card implies {list(shape)}"
            )
    for k in inner_lr:
        if k not in expected:
            raise CheckpointError(f"{wpath}: learned step size for unknown parameter {k}")
    return Checkpoint(
        config=config,
        geometry=geometry,
        params=params,
        inner_lr=inner_lr,
        inner_steps=int(inner.get("steps", 1)),
        inner_step_size=float(inner.get("step_size", 1.0)),
        quantizer=quantizer,
        training=card.get("training", {}),
        metrics=card.get("metrics", {}),
        name=card.get("name") or cpath.stem,
    )


def find(specs: Sequence[str | Path] = ()) -> list[Checkpoint]:
    """Load checkpoints named by ``specs`` (files or folders of them; none: the shipped zoo)."""
    found: list[Path] = []
    for path in [Path(p) for p in specs] or [ZOO]:
        if path.is_dir():
            found += sorted(
                p for p in path.glob("*.json") if p.with_suffix(".safetensors").is_file()
            )
        else:
            found.append(path)
    if not found:
        raise ValueError(f"no checkpoints in {', '.join(map(str, specs or [ZOO]))}")
    return [load(path) for path in found]


def resolve(spec: str) -> str:
    """A checkpoint path or folder as given, or else the zoo's checkpoint of that name."""
    if Path(spec).is_dir() or any(p.is_file() for p in paths(spec)):
        return spec
    if paths(ZOO / spec)[1].is_file():
        return str(ZOO / spec)
    names = sorted(p.stem for p in ZOO.glob("*.json"))
    raise ValueError(
        f"no checkpoint {spec!r}: neither a file or folder nor a zoo model (the zoo "
        f"has {', '.join(names) or 'none'})"
    )


def add_to_zoo(
    source: str | Path, name: str, zoo: str | Path = ZOO, replace: bool = False
) -> tuple[Path, Path]:
    """Copy a checkpoint (of a run directory: its best) into ``zoo`` as ``NAME.safetensors`` and
    ``NAME.json``, its card named ``name``; a model of that name stays unless ``replace``."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise ValueError(f"a zoo name is letters, digits, '_' and '-', got {name!r}")
    source = Path(source)
    ckpt = load(source / "best" if source.is_dir() else source)
    target = Path(zoo) / name
    there = [p.name for p in paths(target) if p.exists()]
    if there and not replace:
        raise ValueError(f"{' and '.join(there)} already in {zoo} (--replace overwrites them)")
    ckpt.name = name
    return save(ckpt, target)


def fingerprint(ckpt: Checkpoint) -> str:
    """SHA-256 of a checkpoint's meta-trained weights and learned step sizes."""
    h = hashlib.sha256()
    for prefix, tensors in (("", ckpt.params), (LR_PREFIX, ckpt.inner_lr)):
        for name in sorted(tensors):
            t = tensors[name].detach().float().contiguous()
            h.update(f"{prefix}{name}:{list(t.shape)};".encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()
