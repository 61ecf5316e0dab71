"""Double Digits: a synthetic twin of Double NMNIST built from scikit-learn's bundled digits.

Each of the 1,797 8x8 digits is upsampled to ``digit_size`` pixels, recorded with N-MNIST's saccade
protocol on a 34x34 simulated DVS (``spikeshot.events.dvs_sim``) and cached on disk in one .npz.
Samples are then paired as in Double NMNIST: 100 classes "00".."99" split 64/16/20 by a seeded
permutation; class "ab" draws a recording of digit a and one of digit b, each cropped to 32x32,
side by side on a 64x32 sensor. Meta-train pairs come from one half of the images (per digit,
seeded), meta-val and meta-test pairs from the other half.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from spikeshot.events.atomic import write_atomic
from spikeshot.events.dvs_sim import record_saccades
from spikeshot.models.datasets.base import (
    MetaDataset,
    MetaSplit,
    Recording,
    Sensor,
    check_split_name,
    default_cache_dir,
)
from spikeshot.models.datasets.pairs import draw_pairs, pair_side_by_side

CACHE_FORMAT = 1
SPLIT_SIZES = {"train": 64, "val": 16, "test": 20}


@dataclass(frozen=True)
class RecordingConfig:
    """How each digit is recorded; every field (and the seed) keys the cache."""

    digit_size: int = 28
    sensor: int = 34
    saccade_ms: float = 100.0
    amplitude_px: float = 4.0
    fps: float = 250.0
    threshold: float = 0.2
    threshold_sigma: float = 0.03
    refractory_us: int = 1000
    noise_rate_hz: float = 0.1
    log_eps: float = 0.3


def upsample(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a square ``image`` to ``size`` x ``size`` (pixel centres aligned, edges
    clamped)."""
    n = image.shape[0]
    u = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
    m = np.maximum(0.0, 1.0 - np.abs(u[:, None] - np.arange(n)[None, :]))
    return m @ image @ m.T


def image_seed(seed: int, index: int) -> int:
    """The simulator seed of image ``index``: independent of which other images are recorded."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def select_images(labels: np.ndarray, images_per_digit: int | None) -> np.ndarray:
    """Indices of the images used: all, or the first ``images_per_digit`` of each digit."""
    if images_per_digit is None:
        return np.arange(len(labels))
    if images_per_digit < 2:
        raise ValueError(f"images_per_digit must be >= 2 (one per half), got {images_per_digit}")
    return np.sort(
        np.concatenate([np.flatnonzero(labels == d)[:images_per_digit] for d in range(10)])
    )


@dataclass(frozen=True)
class Recordings:
    """All recordings in one flat event array: recording ``i`` is
    ``events[offsets[i]:offsets[i + 1]]``, of digit ``labels[i]``, from sklearn image
    ``image_index[i]``."""

    events: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    image_index: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.events[self.offsets[i] : self.offsets[i + 1]]


def record_digits(
    config: RecordingConfig, seed: int, images_per_digit: int | None, progress: bool
) -> Recordings:
    """Record the selected sklearn digits with the saccade protocol (a few ms each)."""
    from sklearn.datasets import load_digits
    from tqdm.auto import tqdm

    digits = load_digits()
    index = select_images(digits.target, images_per_digit)
    opts = asdict(config)
    size, side = opts.pop("digit_size"), opts.pop("sensor")
    chunks = [
        record_saccades(
            upsample(digits.images[i] / 16.0, size),
            sensor=(side, side),
            seed=image_seed(seed, i),
            **opts,
        )
        for i in tqdm(index, desc="Double Digits: recording", unit="digit", disable=not progress)
    ]
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in chunks])]).astype(np.int64)
    return Recordings(np.concatenate(chunks), offsets, digits.target[index].astype(np.int64), index)


def cache_path(
    cache_dir: Path, config: RecordingConfig, seed: int, images_per_digit: int | None
) -> Path:
    """The cache file for these parameters: a changed parameter names a new file."""
    key = json.dumps(
        {
            "format": CACHE_FORMAT,
            "seed": seed,
            "images_per_digit": images_per_digit,
            **asdict(config),
        },
        sort_keys=True,
    )
    return Path(cache_dir) / f"double_digits-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def load_or_record(
    cache_dir: Path,
    config: RecordingConfig,
    seed: int,
    images_per_digit: int | None,
    progress: bool,
) -> tuple[Recordings, Path]:
    """The recordings from the cache, recorded and written there (atomically) when missing."""
    path = cache_path(cache_dir, config, seed, images_per_digit)
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            rec = Recordings(z["events"], z["offsets"], z["labels"], z["image_index"])
        return rec, path
    rec = record_digits(config, seed, images_per_digit, progress)
    data = io.BytesIO()
    np.savez(
        data,
        events=rec.events,
        offsets=rec.offsets,
        labels=rec.labels,
        image_index=rec.image_index,
        params=np.array(
            json.dumps(
                {
                    "seed": seed,
                    "images_per_digit": images_per_digit,
                    **asdict(config),
                    "class_splits": class_splits(seed),
                }
            )
        ),
    )
    write_atomic(path, data.getvalue())
    return rec, path


def class_splits(seed: int) -> dict[str, list[str]]:
    """Classes "00".."99" split 64/16/20 by a seeded permutation (each split listed sorted)."""
    perm = np.random.default_rng([seed, 1]).permutation(100)
    out, start = {}, 0
    for name, size in SPLIT_SIZES.items():
        out[name] = sorted(f"{c // 10}{c % 10}" for c in perm[start : start + size])
        start += size
    return out


def image_halves(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Recording rows split per digit into a meta-train half ("train") and a half for meta-val and
    meta-test ("heldout"), seeded; an odd count gives the extra image to "train"."""
    rng = np.random.default_rng([seed, 2])
    train, heldout = [], []
    for d in range(10):
        rows = rng.permutation(np.flatnonzero(labels == d))
        cut = (len(rows) + 1) // 2
        train.append(rows[:cut])
        heldout.append(rows[cut:])
    return {"train": np.sort(np.concatenate(train)), "heldout": np.sort(np.concatenate(heldout))}


class DoubleDigitsSplit(MetaSplit):
    """One split: its classes, and per digit the recording rows its pairs draw from."""

    def __init__(
        self, recordings: Recordings, classes: list[str], rows: np.ndarray, crop: int, side: int
    ):
        """``rows`` index ``recordings``; each digit, recorded on a ``side`` x ``side`` sensor,
        is centre-cropped to ``crop`` x ``crop``."""
        self.recordings, self.classes, self.rows = recordings, classes, rows
        self.crop, self.offset = crop, (side - crop) // 2
        self.sensor = Sensor(2 * crop, crop)
        labels = recordings.labels[rows]
        self.pools = [rows[labels == d] for d in range(10)]
        for d, pool in enumerate(self.pools):
            if len(pool) == 0:
                raise ValueError(f"no recording of digit {d} in this split's half of the images")

    def draw(self, class_index: int, count: int, rng: np.random.Generator) -> list[Recording]:
        self.check_class(class_index)
        a, b = (int(c) for c in self.classes[class_index])
        return [
            Recording(
                pair_side_by_side(
                    self.recordings[int(left)],
                    self.recordings[int(right)],
                    self.crop,
                    offset=self.offset,
                ),
                (int(left), int(right)),
            )
            for left, right in draw_pairs(
                self.pools[a], self.pools[b], a == b, count, rng, self.classes[class_index]
            )
        ]


class DoubleDigits(MetaDataset):
    """The Double Digits meta-dataset (see the module docstring).

    ``images_per_digit`` uses only the first that many images of each digit (for quick tests);
    ``cache_dir`` defaults to ``default_cache_dir()``. Recording all 1,797 digits happens once per
    parameter set, with a progress bar when ``progress``.
    """

    name = "double_digits"

    def __init__(
        self,
        cache_dir: str | os.PathLike | None = None,
        *,
        seed: int = 0,
        config: RecordingConfig = RecordingConfig(),
        images_per_digit: int | None = None,
        crop: int = 32,
        progress: bool = True,
    ):
        if not 0 < crop <= config.sensor:
            raise ValueError(f"crop must be in 1..{config.sensor} (the sensor side), got {crop}")
        self.seed, self.config, self.crop = seed, config, crop
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.recordings, self.cache_file = load_or_record(
            cache, config, seed, images_per_digit, progress
        )
        self.class_splits = class_splits(seed)
        self.image_halves = image_halves(self.recordings.labels, seed)

    def split(self, name: str) -> DoubleDigitsSplit:
        check_split_name(name)
        half = "train" if name == "train" else "heldout"
        rows = self.image_halves[half]
        return DoubleDigitsSplit(
            self.recordings, self.class_splits[name], rows, self.crop, self.config.sensor
        )
