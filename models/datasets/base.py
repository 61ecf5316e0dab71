"""What every meta-dataset provides: named splits of classes, each a source of event recordings.

A meta-dataset is numpy only (events in, events out); binning into frames for a model happens in
``episodes``, with the geometry of the model's card.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sensor:
    """The sensor every recording of a meta-dataset is expressed on."""

    width: int
    height: int


class Recording(NamedTuple):
    """One drawn example: its events (``EVENT_DTYPE`` on the split's sensor) and the keys of the
    source recordings it is made of (one for a character, two for a pair of digits)."""

    events: np.ndarray
    sources: tuple[Hashable, ...]


class MetaSplit(ABC):
    """One split (meta-train, meta-val or meta-test) of a meta-dataset: a list of classes, and for
    each class a way to draw distinct recordings of it (``EVENT_DTYPE`` arrays on ``sensor``).

    ``groups``, when a split has them, names the family each class belongs to (its script, its
    emoji category): tasks whose classes all share a group are the hard, look-alike tasks.
    """

    sensor: Sensor
    classes: list[str]
    groups: list[str] | None = None

    @abstractmethod
    def draw(self, class_index: int, count: int, rng: np.random.Generator) -> list[Recording]:
        """``count`` recordings of class ``classes[class_index]``, drawn with ``rng`` without
        replacement: no source recording appears in two of them. Raises ``ValueError`` when the
        class has too few."""

    def check_class(self, class_index: int) -> None:
        if not 0 <= class_index < len(self.classes):
            raise IndexError(
                f"class_index must be in 0..{len(self.classes) - 1}, got {class_index}"
            )

    def __len__(self) -> int:
        return len(self.classes)


def distinct(available: int, count: int, rng: np.random.Generator, what: str) -> np.ndarray:
    """``count`` distinct indices in ``range(available)``; ``what`` names the pool in the error
    when it holds too few."""
    if count > available:
        raise ValueError(
            f"{what} has {available} recordings, fewer than the {count} distinct ones a task "
            "needs (shots + queries per class; twice that for a pair of one digit or letter)"
        )
    return rng.choice(available, size=count, replace=False)


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
