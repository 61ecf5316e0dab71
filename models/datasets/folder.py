"""A meta-dataset from your own recordings: one folder per class, recordings in any format
``spikeshot.events.formats`` reads (AEDAT4, N-MNIST .bin, EVT2/EVT3 .raw, DAT, .npy/.npz).

Layout: ``ROOT/<class>/<recording files>``; files with other extensions (notes, images) and
hidden entries are ignored. Splits:

- if ROOT holds ``train/``, ``val/`` and ``test/``, each is a ``<class>/<files>`` tree of its own
  split (a class name may appear in only one of them: meta-test classes stay unseen);
- otherwise the classes are split by a seeded permutation in the proportions ``fractions``
  (default the paper's 64/16/20), with at least one class in each split.

Geometry rule: the dataset's sensor is ``sensor`` when given, else the largest width by the
largest height among all recordings (each file is read once, in chunks, at construction, to learn
its size by ``formats.info``'s rule).
Every recording is centred on that sensor: one from a smaller camera is padded equally on each
side (offset ``(W - w) // 2``, ``(H - h) // 2``), one from a larger camera is centre-cropped. So
recordings of one scene from different cameras line up at their centres. Samples are read when
drawn and returned sorted by time, with the file's own timestamps.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spikeshot.events import formats
from spikeshot.events.array import Limits, validate
from spikeshot.models.datasets.base import (
    SPLITS,
    MetaDataset,
    MetaSplit,
    Recording,
    Sensor,
    check_split_name,
    distinct,
)

RECORDING_SUFFIXES = (".aedat4", ".bin", ".raw", ".dat", ".npy", ".npz")


def class_folders(root: Path) -> dict[str, list[Path]]:
    """``{class name: sorted recording files}`` for every non-hidden sub-folder of ``root``."""
    out = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            f
            for f in folder.iterdir()
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in RECORDING_SUFFIXES
        )
        if not files:
            raise ValueError(
                f"{folder}: class folder without recordings "
                f"(files ending in {', '.join(RECORDING_SUFFIXES)})"
            )
        out[folder.name] = files
    return out


def split_classes(
    names: list[str], fractions: tuple[float, float, float], seed: int
) -> dict[str, list[str]]:
    """``names`` split train/val/test by a seeded permutation in the proportions ``fractions``:
    val and test get ``round(fraction * n)`` classes (at least one each), train the rest."""
    if len(fractions) != 3 or min(fractions) <= 0:
        raise ValueError(f"fractions must be three positive numbers, got {fractions}")
    n = len(names)
    total = sum(fractions)
    n_val, n_test = (max(1, round(f / total * n)) for f in fractions[1:])
    if n - n_val - n_test < 1:
        raise ValueError(f"{n} classes cannot make three splits; need at least 3")
    perm = np.random.default_rng([seed, 1]).permutation(n)
    order = [names[i] for i in perm]
    return {
        "train": sorted(order[: n - n_val - n_test]),
        "val": sorted(order[n - n_val - n_test : n - n_test]),
        "test": sorted(order[n - n_test :]),
    }


def place(events: np.ndarray, size: tuple[int, int], sensor: Sensor) -> np.ndarray:
    """Events of a ``size`` = (w, h) recording centred on ``sensor``: shifted by half the size
    difference, those falling outside dropped."""
    dx, dy = (sensor.width - size[0]) // 2, (sensor.height - size[1]) // 2
    x = events["x"].astype(np.int64) + dx
    y = events["y"].astype(np.int64) + dy
    inside = (x >= 0) & (x < sensor.width) & (y >= 0) & (y < sensor.height)
    out = events[inside]
    out["x"] = x[inside]
    out["y"] = y[inside]
    return out


class FolderSplit(MetaSplit):
    """One split: its class names and, per class, its recording files."""

    def __init__(self, classes: list[str], files: dict[str, list[Path]], sensor: Sensor):
        self.classes = classes
        self.files = [files[c] for c in classes]
        self.sensor = sensor

    def draw(self, class_index: int, count: int, rng: np.random.Generator) -> list[Recording]:
        self.check_class(class_index)
        files = self.files[class_index]
        picks = distinct(len(files), count, rng, f"class {self.classes[class_index]!r}")
        return [Recording(self._read(files[i]), (str(files[i]),)) for i in picks]

    def _read(self, path: Path) -> np.ndarray:
        rec = formats.read(path)
        events = place(rec.events, (rec.width, rec.height), self.sensor)
        return validate(events, Limits(allow_empty=True), sort=True)


class FolderDataset(MetaDataset):
    """Your classes as a meta-dataset (see the module docstring for layout, splits and geometry).

    ``sensor`` = (width, height) fixes the geometry and skips reading every file at construction.
    """

    name = "folder"

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        fractions: tuple[float, float, float] = (0.64, 0.16, 0.20),
        seed: int = 0,
        sensor: tuple[int, int] | None = None,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {self.root}")
        explicit = [s for s in SPLITS if (self.root / s).is_dir()]
        if explicit:
            if len(explicit) != len(SPLITS):
                raise ValueError(
                    f"{self.root}: has {explicit} but not all of {list(SPLITS)}; "
                    "give all three split folders or none"
                )
            per_split = {s: class_folders(self.root / s) for s in SPLITS}
            self.files = {}
            for s in SPLITS:
                repeated = sorted(set(per_split[s]) & set(self.files))
                if repeated:
                    raise ValueError(
                        f"{self.root / s}: classes {repeated} also appear in "
                        "another split; each class belongs to one split"
                    )
                self.files.update(per_split[s])
            self.class_splits = {s: sorted(per_split[s]) for s in SPLITS}
        else:
            self.files = class_folders(self.root)
            self.class_splits = split_classes(sorted(self.files), fractions, seed)
        for s in SPLITS:
            if not self.class_splits[s]:
                raise ValueError(f"{self.root}: no classes for split {s!r}")
        if sensor is None:
            sizes = [formats.info(f) for paths in self.files.values() for f in paths]
            sensor = (max(i["width"] for i in sizes), max(i["height"] for i in sizes))
        width, height = (int(v) for v in sensor)
        if width < 1 or height < 1:
            raise ValueError(f"sensor must be (width, height) >= 1, got {sensor}")
        self.sensor = Sensor(width, height)

    def split(self, name: str) -> FolderSplit:
        check_split_name(name)
        return FolderSplit(self.class_splits[name], self.files, self.sensor)
