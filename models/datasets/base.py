"""What every meta-dataset provides: named splits of classes, each a source of event recordings.

A meta-dataset is numpy only (events in, events out); binning into frames for a model happens in
``episodes``, with the geometry of the model's card.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sensor:
    """The sensor every recording of a meta-dataset is expressed on."""

    width: int
    height: int


class MetaSplit(ABC):
    """One split (meta-train, meta-val or meta-test) of a meta-dataset: a list of classes, and for
    each class a way to draw one recording (an ``EVENT_DTYPE`` array on ``sensor``)."""

    sensor: Sensor
    classes: list[str]

    @abstractmethod
    def sample(self, class_index: int, rng: np.random.Generator) -> np.ndarray:
        """One recording of class ``classes[class_index]``, drawn with ``rng``."""

    def __len__(self) -> int:
        return len(self.classes)


class MetaDataset(ABC):
    """A named set of splits; ``split(name)`` returns the ``MetaSplit`` for train, val or test."""

    name: str

    @abstractmethod
    def split(self, name: str) -> MetaSplit:
        """The split called ``name`` (one of ``SPLITS``)."""


def check_split_name(name: str) -> None:
    if name not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {name!r}")


def default_cache_dir() -> Path:
    """Where generated meta-datasets are cached: ``$SPIKESHOT_CACHE`` when set, else
    ``~/.cache/spikeshot``."""
    env = os.environ.get("SPIKESHOT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "spikeshot"
