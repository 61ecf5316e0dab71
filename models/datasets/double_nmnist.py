"""Double NMNIST from an N-MNIST folder tree, as the paper (and the authors' code) builds it.

N-MNIST unpacks to ``ROOT/Train/<digit>/*.bin`` and ``ROOT/Test/<digit>/*.bin``, 34x34 recordings
of three saccades. The classes are the 100 two-digit strings "00".."99", split 64 / 16 / 20 with
the lists of the MultiDigitMNIST benchmark, which the authors' torchneuromorphic loader uses.
Class "ab" draws one recording of digit a and one of digit b, each cropped to 32x32 and put side
by side on a 64x32 sensor (``pairs.pair_side_by_side``). Meta-train pairs come from the N-MNIST
train recordings, meta-val and meta-test pairs from its test recordings. Files are read when a
sample is drawn.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spikeshot.events import nmnist
from spikeshot.models.datasets.base import (
    MetaDataset,
    MetaSplit,
    Recording,
    Sensor,
    check_split_name,
)
from spikeshot.models.datasets.pairs import draw_pairs, pair_side_by_side

# MultiDigitMNIST's class splits (github.com/shaohua0116/MultiDigitMNIST), as in the paper.
CLASS_SPLITS: dict[str, tuple[str, ...]] = {
    "train": tuple(
        "00 01 04 05 06 08 09 11 12 13 14 15 16 18 19 20 21 23 24 26 28 29 30 31 33 35 37 38 41 "
        "42 43 44 45 50 51 53 54 56 59 60 62 63 65 69 70 72 74 75 76 77 79 81 82 84 85 87 88 89 "
        "90 91 94 95 97 98".split()
    ),
    "val": tuple("03 07 10 22 27 34 39 40 48 52 58 61 64 71 93 99".split()),
    "test": tuple("02 17 25 32 36 46 47 49 55 57 66 67 68 73 78 80 83 86 92 96".split()),
}
CROP = 32


def digit_files(folder: Path) -> list[list[Path]]:
    """The ``.bin`` files of each digit under ``folder`` (``folder/0`` .. ``folder/9``)."""
    out = []
    for d in range(10):
        found = sorted((folder / str(d)).glob("*.bin"))
        if not found:
            raise ValueError(
                f"{folder / str(d)}: no N-MNIST .bin recordings of digit {d}; "
                "the layout is ROOT/Train/0..9/*.bin and ROOT/Test/0..9/*.bin"
            )
        out.append(found)
    return out


class DoubleNMNISTSplit(MetaSplit):
    """One split: its two-digit classes and, per digit, the files its samples draw from."""

    sensor = Sensor(2 * CROP, CROP)

    def __init__(self, classes: list[str], files: list[list[Path]]):
        self.classes = classes
        self.files = files

    def draw(self, class_index: int, count: int, rng: np.random.Generator) -> list[Recording]:
        self.check_class(class_index)
        a, b = (int(c) for c in self.classes[class_index])
        offset = (nmnist.SIZE[0] - CROP) // 2
        return [
            Recording(
                pair_side_by_side(
                    nmnist.read(left).events, nmnist.read(right).events, CROP, offset=offset
                ),
                (str(left), str(right)),
            )
            for left, right in draw_pairs(
                self.files[a], self.files[b], a == b, count, rng, self.classes[class_index]
            )
        ]


class DoubleNMNIST(MetaDataset):
    """Double NMNIST from an unpacked N-MNIST folder (see the module docstring)."""

    name = "double_nmnist"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"N-MNIST folder not found: {self.root}")
        self.files = {part: digit_files(self.root / part) for part in ("Train", "Test")}

    def split(self, name: str) -> DoubleNMNISTSplit:
        check_split_name(name)
        part = "Train" if name == "train" else "Test"
        return DoubleNMNISTSplit(list(CLASS_SPLITS[name]), self.files[part])
