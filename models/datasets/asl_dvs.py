"""Double ASL-DVS: two ASL-DVS hand-shape recordings side by side, the paper's second meta-dataset.

ASL-DVS (Bi et al., ICCV 2019) holds 24 letters of American Sign Language (a..y without j, which
needs motion), 4,200 recordings each, from a 240x180 DAVIS240. Its archive unpacks to one folder
per letter, ``ROOT/<letter>/*.mat``; each file is a MATLAB v5 .mat with column vectors ``ts``
(microseconds), ``x``, ``y`` (row 0 at the bottom) and ``pol``. That is what ``read_mat`` reads
(with scipy); MATLAB v7.3 files (HDF5) are refused with a clear error, since ASL-DVS ships none.

As the authors did (torchneuromorphic's ``double_dvssign``), the classes are all 576 ordered
pairs of letters ("ab" = letter a on the left, b on the right, "aa" included), shuffled and split
369 / 92 / 115. Each letter's recordings are split once, seeded, into a meta-train part and a
held-out part: meta-train pairs draw from the first, meta-val and meta-test pairs from the second
(as Double NMNIST draws from N-MNIST's train and test sets). A sample is two recordings, each
with time measured from its first event, the right one shifted by 240 columns: a 480x180 sensor.
The paper then downsamples by 6 to 80x30, which the model card's frame geometry does.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io

from spikeshot.events.array import EventError, Limits, make_events, validate
from spikeshot.models.datasets.base import (
    MetaDataset,
    MetaSplit,
    Recording,
    Sensor,
    check_split_name,
)
from spikeshot.models.datasets.pairs import draw_pairs, pair_side_by_side

LETTERS = tuple("abcdefghiklmnopqrstuvwxy")
WIDTH, HEIGHT = 240, 180
SPLIT_SIZES = {"train": 369, "val": 92, "test": 115}
_KEYS = ("ts", "x", "y", "pol")


def read_mat(path: str | os.PathLike) -> np.ndarray:
    """One ASL-DVS recording as an ``EVENT_DTYPE`` array on 240x180: y flipped so row 0 is the
    top, time from the first event, sorted by time."""
    try:
        mat = scipy.io.loadmat(path, variable_names=_KEYS)
    except NotImplementedError as err:  # scipy's answer to a v7.3 (HDF5) file
        raise ValueError(
            f"{path}: MATLAB v7.3 (HDF5) .mat files are not supported; ASL-DVS "
            "ships v5 files (resave with save(..., '-v7'))"
        ) from err
    except (ValueError, OSError) as err:
        raise ValueError(f"{path}: not a readable .mat file ({err})") from err
    missing = [k for k in _KEYS if k not in mat]
    if missing:
        raise ValueError(f"{path}: missing variables {missing}; ASL-DVS files hold {list(_KEYS)}")
    ts, x, y, pol = (np.asarray(mat[k]).ravel() for k in _KEYS)
    try:
        for name, col in (("x", x), ("y", y)):
            bad = (col < 0) | (col >= (WIDTH if name == "x" else HEIGHT))
            if bad.any():
                raise EventError(
                    name, f"must be in [0, {WIDTH if name == 'x' else HEIGHT})", int(np.argmax(bad))
                )
        t = ts.astype(np.int64)
        t0 = t.min() if len(t) else 0
        events = make_events(t - t0, x, HEIGHT - 1 - y.astype(np.int64), pol)
        return validate(events, Limits(WIDTH, HEIGHT, allow_empty=True), sort=True)
    except EventError as err:
        raise ValueError(f"{path}: {err}") from err


def pair_splits(seed: int) -> dict[str, list[str]]:
    """The 576 ordered letter pairs split 369/92/115 by a seeded permutation (each list sorted)."""
    pairs = [a + b for a in LETTERS for b in LETTERS]
    perm = np.random.default_rng([seed, 1]).permutation(len(pairs))
    out, start = {}, 0
    for name, size in SPLIT_SIZES.items():
        out[name] = sorted(pairs[i] for i in perm[start : start + size])
        start += size
    return out


def recording_halves(
    files: dict[str, list[Path]], heldout_fraction: float, seed: int
) -> dict[str, dict[str, list[Path]]]:
    """Each letter's files split, seeded, into "train" and "heldout" (at least one in each)."""
    rng = np.random.default_rng([seed, 2])
    out: dict[str, dict[str, list[Path]]] = {"train": {}, "heldout": {}}
    for letter, paths in files.items():
        order = rng.permutation(len(paths))
        n_held = min(max(1, round(heldout_fraction * len(paths))), len(paths) - 1)
        out["heldout"][letter] = sorted(paths[i] for i in order[:n_held])
        out["train"][letter] = sorted(paths[i] for i in order[n_held:])
    return out


class DoubleASLDVSSplit(MetaSplit):
    """One split: its letter pairs and, per letter, the files its samples draw from."""

    sensor = Sensor(2 * WIDTH, HEIGHT)

    def __init__(self, classes: list[str], files: dict[str, list[Path]]):
        self.classes = classes
        self.files = files

    def draw(self, class_index: int, count: int, rng: np.random.Generator) -> list[Recording]:
        self.check_class(class_index)
        a, b = self.classes[class_index]
        # A crop of 240 from offset 0 keeps every event (y < 180 < 240) and shifts the right
        # letter by 240 columns.
        return [
            Recording(
                pair_side_by_side(read_mat(left), read_mat(right), WIDTH, offset=0),
                (str(left), str(right)),
            )
            for left, right in draw_pairs(
                self.files[a], self.files[b], a == b, count, rng, self.classes[class_index]
            )
        ]


class DoubleASLDVS(MetaDataset):
    """Double ASL-DVS from an unpacked ASL-DVS folder (see the module docstring).

    ``heldout_fraction`` of each letter's recordings (seeded by ``seed``, as is the pair split)
    are kept for meta-val and meta-test.
    """

    name = "double_asl_dvs"

    def __init__(self, root: str | os.PathLike, *, seed: int = 0, heldout_fraction: float = 0.2):
        if not 0 < heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"ASL-DVS folder not found: {self.root}")
        files = {}
        for letter in LETTERS:
            folder = self.root / letter
            found = sorted(folder.glob("*.mat")) if folder.is_dir() else []
            if len(found) < 2:
                raise ValueError(
                    f"{folder}: expected the .mat recordings of letter {letter!r} "
                    f"(at least 2), found {len(found)}; layout is ROOT/<letter>/*.mat "
                    f"for the letters {''.join(LETTERS)}"
                )
            files[letter] = found
        self.pair_splits = pair_splits(seed)
        self.halves = recording_halves(files, heldout_fraction, seed)

    def split(self, name: str) -> DoubleASLDVSSplit:
        check_split_name(name)
        half = "train" if name == "train" else "heldout"
        return DoubleASLDVSSplit(self.pair_splits[name], self.halves[half])
