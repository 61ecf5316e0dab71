"""Glyphs: an N-Omniglot-like meta-dataset of the characters of the scripts in matplotlib's
DejaVu fonts.

Each class is one character (Latin, Greek, Canadian syllabics, Arabic, Cyrillic, Georgian,
Armenian, Tifinagh, Lao, ...), taken from the Unicode ranges in ``SCRIPTS``. A character is kept
when the regular DejaVu Sans really has it (no ``.notdef`` box), it is a letter without a
canonical decomposition (precomposed letters are a base letter plus a mark), its ink is not
negligible, and it is not a look-alike of a character of an earlier split (Pearson correlation of
the two renderings at half resolution, the resolution the network sees, below
``max_similarity``). Scripts are visited meta-train first, then meta-val, then meta-test, so a
look-alike of a meta-training character is dropped from val/test, never the other way round.
Look-alikes within one split are kept (only renderings no one could tell apart are dropped):
tasks of one script's characters are the hard tasks a robot meets.

Each instance is the character in one of the font styles that has it (sans, serif, mono; bold,
oblique), under a random affine jitter (rotation, scale, shear, shift), rasterised from the
glyph's outline to a 28x28 image and recorded with N-MNIST's saccade protocol on a 34x34 sensor
(``spikeshot.events.dvs_sim.record_saccades``). Splits are by script: meta-test alphabets are
never seen in meta-training. A fixed number of instances per character is generated once,
deterministically from ``seed``, into a cache directory keyed by the parameters and the
generator's ``CACHE_FORMAT``; training only reads it (memory-mapped).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.path import Path as MplPath
from matplotlib.transforms import IdentityTransform
from tqdm.auto import tqdm

from spikeshot.events import dvs_sim
from spikeshot.events.array import make_events
from spikeshot.models.datasets import conditions, emoji
from spikeshot.models.datasets.base import (
    SPLITS,
    MetaDataset,
    MetaSplit,
    Recording,
    Sensor,
    check_split_name,
    default_cache_dir,
    distinct,
)
from spikeshot.models.datasets.conditions import ConditionRanges
from spikeshot.models.datasets.fonts import DEJAVU, FONT_PX, has_glyph, noto_styles, outline
from spikeshot.models.datasets.scripts import SCRIPTS

CACHE_FORMAT = 3

_LETTERS = frozenset({"Lu", "Ll", "Lo"})
# How recordings are stored: time from the recording's start fits 32 bits, coordinates 8.
_STORE_DTYPE = np.dtype([("t", "<u4"), ("x", "u1"), ("y", "u1"), ("p", "u1")])


@dataclass(frozen=True)
class GlyphsConfig:
    """Everything that determines the generated data (and so the cache key).

    Sizes are in pixels of the ``image_size`` image; jitter parameters are the half-widths of
    uniform draws (``scale_jitter`` 0.1 draws a scale in [0.9, 1.1]). ``sensor``, ``saccade_ms``
    and ``fps`` go to ``record_saccades`` (250 fps, as Double Digits records).

    A split's scripts may also be emoji categories (``emoji.CATEGORIES``: the objects family).
    ``noto`` draws characters from Debian's Noto fonts as well as DejaVu. ``conditions``, when
    set, randomises every recording (``conditions.ConditionRanges``: stimulus size, thickness,
    position and contrast, the sensor's settings, the motion) instead of the fixed recording above;
    ``shifted`` adds a split "val_shift": the validation classes recorded under other ranges
    (a cross-simulator validation split).
    """

    train_scripts: tuple[str, ...] = (
        "Latin",
        "Greek",
        "Canadian Syllabics",
        "Arabic",
        "Ogham",
        "Lisu",
    )
    val_scripts: tuple[str, ...] = ("Cyrillic", "Hebrew", "NKo")
    test_scripts: tuple[str, ...] = ("Georgian", "Armenian", "Tifinagh", "Lao", "Old Italic")
    max_per_script: int | None = None
    instances: int = 20
    image_size: int = 28
    em_px: float = 24.0
    max_extent_px: float = 22.0
    min_ink_px: float = 8.0
    max_similarity: float = 0.9
    max_similarity_within: float = 0.98
    rotation_deg: float = 10.0
    scale_jitter: float = 0.1
    shear: float = 0.15
    shift_px: float = 1.5
    sensor: tuple[int, int] = (34, 34)
    saccade_ms: float = 100.0
    fps: float = 250.0
    seed: int = 0
    noto: bool = False
    conditions: ConditionRanges | None = None
    shifted: ConditionRanges | None = None

    def __post_init__(self):
        named = self.train_scripts + self.val_scripts + self.test_scripts
        unknown = sorted(set(named) - set(SCRIPTS) - set(emoji.CATEGORIES))
        if unknown:
            raise ValueError(
                f"unknown scripts {unknown}; known: {sorted(SCRIPTS)} and the emoji categories "
                f"{sorted(emoji.CATEGORIES)}"
            )
        if self.shifted is not None and self.conditions is None:
            raise ValueError("shifted conditions need conditions to shift from")
        if len(set(named)) != len(named):
            raise ValueError("a script may belong to only one split")
        if not (self.train_scripts and self.val_scripts and self.test_scripts):
            raise ValueError("every split needs at least one script")
        if self.instances < 1 or (self.max_per_script is not None and self.max_per_script < 1):
            raise ValueError("instances and max_per_script must be >= 1")
        if self.image_size < 8 or self.image_size % 2:
            raise ValueError(f"image_size must be even and >= 8, got {self.image_size}")
        w, h = self.sensor
        if not (self.image_size <= w <= 255 and self.image_size <= h <= 255):
            raise ValueError(f"sensor {self.sensor} must hold the image and fit 8-bit coordinates")
        for name in ("max_similarity", "max_similarity_within"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.saccade_ms * 3e3 >= 2**32:
            raise ValueError(f"saccade_ms {self.saccade_ms} is too long for 32-bit timestamps")

    def scripts_of(self, split: str) -> tuple[str, ...]:
        check_split_name(split)
        return {"train": self.train_scripts, "val": self.val_scripts, "test": self.test_scripts}[
            split
        ]


class Character(NamedTuple):
    """A class of Glyphs: one code point of one script (or emoji category), and the styles whose
    font has it."""

    script: str
    codepoint: int
    styles: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.script}/U+{self.codepoint:04X}"

    @property
    def is_emoji(self) -> bool:
        return self.script in emoji.CATEGORIES


def random_transform(rng: np.random.Generator, config: GlyphsConfig) -> np.ndarray:
    """A [2, 3] affine jitter (rotation, isotropic scale, horizontal shear, shift) about the
    glyph's centre, drawn uniformly within the config's ranges."""
    angle = np.deg2rad(rng.uniform(-config.rotation_deg, config.rotation_deg))
    scale = rng.uniform(1 - config.scale_jitter, 1 + config.scale_jitter)
    shear = rng.uniform(-config.shear, config.shear)
    shift = rng.uniform(-config.shift_px, config.shift_px, 2)
    c, s = np.cos(angle), np.sin(angle)
    linear = np.array([[c, -s], [s, c]]) @ np.array([[1.0, shear], [0.0, 1.0]]) * scale
    return np.column_stack([linear, shift])


def render(
    codepoint: int,
    style: str = "sans",
    transform: np.ndarray | None = None,
    config: GlyphsConfig = GlyphsConfig(),
) -> np.ndarray:
    """The character as a [image_size, image_size] float image in [0, 1] (1 = ink, row 0 on top):
    the outline at ``em_px`` per em, shrunk to ``max_extent_px`` if larger, centred, then moved by
    ``transform`` ([2, 3] affine in pixels about the centre; None for none) and anti-aliased."""
    verts, codes = outline(codepoint, style)
    size = config.image_size
    if len(verts) == 0:
        return np.zeros((size, size))
    lo, hi = verts.min(axis=0), verts.max(axis=0)
    scale = config.em_px / FONT_PX
    extent = float((hi - lo).max()) * scale
    if extent > config.max_extent_px:
        scale *= config.max_extent_px / extent
    verts = (verts - (lo + hi) / 2) * scale
    if transform is not None:
        transform = np.asarray(transform, dtype=np.float64)
        if transform.shape != (2, 3):
            raise ValueError(f"transform must be a [2, 3] affine, got shape {transform.shape}")
        verts = verts @ transform[:, :2].T + transform[:, 2]
    renderer = RendererAgg(size, size, 72)
    gc = renderer.new_gc()
    gc.set_linewidth(0)
    # Agg's display space has y up, like the font's, so the image comes out upright.
    path = MplPath(verts + size / 2, codes)
    renderer.draw_path(gc, path, IdentityTransform(), (1.0, 1.0, 1.0, 1.0))
    return np.asarray(renderer.buffer_rgba())[..., 3] / 255.0


def _half_resolution_features(images: np.ndarray) -> np.ndarray:
    """Images [n, s, s] -> zero-mean, unit-norm vectors of their 2x2-mean-pooled versions."""
    n, s, _ = images.shape
    x = images.reshape(n, s // 2, 2, s // 2, 2).mean(axis=(2, 4)).reshape(n, -1)
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _candidates(script: str, noto: bool) -> list[tuple[int, tuple[str, ...]]]:
    """Code points of ``script`` with the styles that draw them: letters without a decomposition
    that DejaVu Sans (or, with ``noto``, a Noto font of the script) has; for an emoji category, the
    emoji of its ranges."""
    if script in emoji.CATEGORIES:
        return [(cp, (emoji.FONT_FILE,)) for cp in emoji.candidates(script)]
    fonts = list(DEJAVU) + (noto_styles(script) if noto else [])
    out = []
    for first, last in SCRIPTS[script]:
        for cp in range(first, last + 1):
            ch = chr(cp)
            if unicodedata.category(ch) not in _LETTERS or unicodedata.decomposition(ch):
                continue
            if not (has_glyph(cp) or noto):
                continue
            styles = tuple(s for s in fonts if has_glyph(cp, s))
            if styles:
                out.append((cp, styles))
    return out


def _reference_image(cp: int, styles: tuple[str, ...], config: GlyphsConfig) -> np.ndarray:
    """The class's plain rendering, which the selection compares."""
    if styles == (emoji.FONT_FILE,):
        return emoji.render(cp, config.image_size, config.max_extent_px)
    return render(cp, styles[0], config=config)


def select_characters(config: GlyphsConfig = GlyphsConfig()) -> list[Character]:
    """The classes, in split order (train, val, test scripts, each in code point order).

    Drops blank glyphs (ink below ``min_ink_px``); a character that looks like one of an earlier
    split (similarity ``max_similarity``: a test class must not be a training class in
    disguise); and one that renders the same as a character kept before it in its own split
    (``max_similarity_within``: two classes no one could tell apart). Look-alikes within a split
    stay: they make the hard tasks. Then, if ``max_per_script`` is set, keeps that many per
    script, evenly spaced.
    """
    scripts = config.train_scripts + config.val_scripts + config.test_scripts
    split_of = {s: name for name in SPLITS for s in config.scripts_of(name)}
    found = {script: dict(_candidates(script, config.noto)) for script in scripts}
    pool = [(script, cp) for script in scripts for cp in found[script]]
    images = np.stack([_reference_image(cp, found[s][cp], config) for s, cp in pool])
    inked = images.sum(axis=(1, 2)) >= config.min_ink_px
    pool = [c for c, ok in zip(pool, inked, strict=True) if ok]
    feats = _half_resolution_features(images[inked])
    similarity = feats @ feats.T
    kept: list[int] = []
    for i in range(len(pool)):
        same = np.array([split_of[pool[k][0]] == split_of[pool[i][0]] for k in kept], dtype=bool)
        sim = similarity[i, kept]
        if (
            not (sim[same] >= config.max_similarity_within).any()
            and not (sim[~same] >= config.max_similarity).any()
        ):
            kept.append(i)
    chosen = []
    for script in scripts:
        mine = [pool[i][1] for i in kept if pool[i][0] == script]
        if config.max_per_script is not None and len(mine) > config.max_per_script:
            picks = np.linspace(0, len(mine) - 1, config.max_per_script).round().astype(int)
            mine = [mine[i] for i in picks]
        chosen.extend(Character(script, cp, found[script][cp]) for cp in mine)
    return chosen


def _record_character(
    args: tuple[Character, GlyphsConfig, ConditionRanges | None],
) -> tuple[np.ndarray, np.ndarray]:
    """All instances of one character: (events in ``_STORE_DTYPE``, event count per instance),
    under fixed recording settings or, with ``ranges``, conditions drawn per instance."""
    char, config, ranges = args
    salt = [] if ranges is None or ranges == config.conditions else [1]
    rng = np.random.default_rng([config.seed, char.codepoint, *salt])
    recordings = []
    for _ in range(config.instances):
        style = char.styles[rng.integers(len(char.styles))]
        if ranges is None:
            image = render(char.codepoint, style, random_transform(rng, config), config)
            ev = dvs_sim.record_saccades(
                image,
                sensor=config.sensor,
                saccade_ms=config.saccade_ms,
                fps=config.fps,
                seed=int(rng.integers(2**63)),
            )
        else:
            ev = _record_randomised(char, style, config, conditions.draw(rng, ranges), rng)
        rec = np.empty(len(ev), dtype=_STORE_DTYPE)
        for field in _STORE_DTYPE.names:
            rec[field] = ev[field]
        recordings.append(rec)
    return np.concatenate(recordings), np.array([len(r) for r in recordings], dtype=np.int64)


def _record_randomised(
    char: Character, style: str, config: GlyphsConfig, c: conditions.Conditions, rng
) -> np.ndarray:
    """One recording under conditions ``c``: a character seen in saccades, an emoji moving
    smoothly (translation, rotation, zoom), on a ground that fills the sensor."""
    size = config.image_size
    extent = min(config.max_extent_px * c.scale, size - 2)
    if char.is_emoji:
        ink = emoji.render(char.codepoint, size, extent)
    else:
        scaled = replace(config, em_px=config.em_px * c.scale, max_extent_px=extent)
        transform = random_transform(rng, config)
        ink = render(char.codepoint, style, transform, scaled)
    margin = max(config.sensor) // 2 + 8  # the ground reaches past the sensor in any motion
    image = conditions.shade(np.pad(ink, margin), c)
    seed = int(rng.integers(2**63))
    duration = 3 * c.motion["saccade_ms"]
    if char.is_emoji:
        ts, offsets, angles, zooms = dvs_sim.smooth_motion(
            rng, duration_ms=duration, fps=config.fps, amplitude_px=c.motion["amplitude_px"]
        )
        offsets = offsets + np.asarray(c.shift)
        return dvs_sim.record_motion(
            image, ts, offsets, angles, zooms, sensor=config.sensor, seed=seed, **c.sensor
        )
    image = np.roll(image, (round(c.shift[1]), round(c.shift[0])), axis=(0, 1))
    return dvs_sim.record_saccades(
        image, sensor=config.sensor, fps=config.fps, seed=seed, **c.motion, **c.sensor
    )


def cache_key(config: GlyphsConfig) -> str:
    """A short hash of the configuration, the generator's format version and matplotlib's version
    (its fonts and rasteriser): any change to them names a new cache directory. Bump
    ``CACHE_FORMAT`` whenever a change to this module or the DVS simulator changes the data."""
    blob = json.dumps(
        {
            "config": asdict(config),
            "format": CACHE_FORMAT,
            "matplotlib": matplotlib.__version__,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build(
    config: GlyphsConfig = GlyphsConfig(),
    cache_dir: str | os.PathLike | None = None,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Generate the dataset of ``config`` into ``cache_dir`` (default ``default_cache_dir()``)
    unless it is already there; return its directory. ``workers`` processes record in parallel
    (default: all cores); the result does not depend on it. Workers are spawned, so a script
    that builds with ``workers > 1`` needs the usual ``if __name__ == "__main__":`` guard."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = root / f"glyphs-{cache_key(config)}"
    if (final / "meta.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    start = time.perf_counter()
    try:
        chars = select_characters(config)
        split_of = {s: name for name in SPLITS for s in config.scripts_of(name)}
        for name in SPLITS:
            if not any(split_of[c.script] == name for c in chars):
                raise ValueError(
                    f"no characters left for split {name!r} (scripts {config.scripts_of(name)})"
                )
        workers = (os.cpu_count() or 1) if workers is None else workers
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        # (split, character) of every recorded class: each split's characters under the config's
        # recording, then the validation characters again under the shifted conditions.
        classes = [(split_of[c.script], c) for c in chars]
        if config.shifted is not None:
            classes += [("val_shift", c) for c in chars if split_of[c.script] == "val"]
        names = list(dict.fromkeys([*SPLITS, *(s for s, _ in classes)]))
        jobs = [
            (c, config, config.shifted if s == "val_shift" else config.conditions)
            for s, c in classes
        ]
        bar = tqdm(total=len(jobs), desc="Glyphs", unit="class", disable=not progress)
        counts = []
        # Spawned, not forked: forked workers would share the parent's font file offsets.
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, spawn) if workers > 1 else nullcontext() as pool:
            results = (
                pool.map(_record_character, jobs, chunksize=4)
                if pool
                else map(_record_character, jobs)
            )
            files = {name: open(tmp / f"{name}.events.bin", "wb") for name in names}
            try:
                for (split, _), (events, n) in zip(classes, results, strict=True):
                    files[split].write(events.tobytes())
                    counts.append(n)
                    bar.update()
            finally:
                for f in files.values():
                    f.close()
                bar.close()
        meta = {
            "name": "glyphs",
            "config": asdict(config),
            "format": CACHE_FORMAT,
            "matplotlib": matplotlib.__version__,
            "store_dtype": _STORE_DTYPE.descr,
            "build_seconds": round(time.perf_counter() - start, 1),
            "splits": {},
        }
        for name in names:
            idx = [i for i, (s, _) in enumerate(classes) if s == name]
            n = np.concatenate([counts[i] for i in idx])
            np.save(tmp / f"{name}.offsets.npy", np.concatenate([[0], np.cumsum(n)]))
            meta["splits"][name] = {
                "scripts": list(config.scripts_of("val" if name == "val_shift" else name)),
                "classes": [classes[i][1].name for i in idx],
                "styles": [list(classes[i][1].styles) for i in idx],
                "events": int(n.sum()),
            }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))
        try:
            tmp.rename(final)
        except OSError:  # another process finished the same build first
            if not (final / "meta.json").is_file():
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


class GlyphsSplit(MetaSplit):
    """One split of a built Glyphs cache; recordings are memory-mapped, read on demand."""

    def __init__(self, directory: Path, name: str, meta: dict):
        info = meta["splits"][name]
        config = meta["config"]
        self.sensor = Sensor(*config["sensor"])
        self.classes = list(info["classes"])
        self.groups = [name.partition("/")[0] for name in self.classes]
        self.scripts = tuple(info["scripts"])
        self.instances = int(config["instances"])
        self._offsets = np.load(directory / f"{name}.offsets.npy")
        expected = len(self.classes) * self.instances + 1
        if self._offsets.shape != (expected,):
            raise ValueError(
                f"{directory}: {name}.offsets.npy has {self._offsets.shape} entries, "
                f"expected {expected}; delete the directory to rebuild"
            )
        path = directory / f"{name}.events.bin"
        size = path.stat().st_size
        if size != self._offsets[-1] * _STORE_DTYPE.itemsize:
            raise ValueError(
                f"{path} holds {size} bytes, expected "
                f"{self._offsets[-1] * _STORE_DTYPE.itemsize}; delete it to rebuild"
            )
        self._events = np.memmap(path, dtype=_STORE_DTYPE, mode="r")

    def recording(self, class_index: int, instance: int) -> np.ndarray:
        """Instance ``instance`` of class ``classes[class_index]`` as an ``EVENT_DTYPE`` array."""
        if not 0 <= class_index < len(self.classes):
            raise IndexError(f"class_index {class_index} out of range [0, {len(self.classes)})")
        if not 0 <= instance < self.instances:
            raise IndexError(f"instance {instance} out of range [0, {self.instances})")
        k = class_index * self.instances + instance
        rec = self._events[self._offsets[k] : self._offsets[k + 1]]
        return make_events(rec["t"], rec["x"], rec["y"], rec["p"])

    def draw(self, class_index: int, count: int, rng: np.random.Generator) -> list[Recording]:
        self.check_class(class_index)
        picks = distinct(self.instances, count, rng, f"class {self.classes[class_index]!r}")
        return [
            Recording(self.recording(class_index, int(i)), ((class_index, int(i)),)) for i in picks
        ]


class Glyphs(MetaDataset):
    """The Glyphs meta-dataset: builds its cache on first use (see ``build``), then reads it."""

    name = "glyphs"

    def __init__(
        self,
        config: GlyphsConfig = GlyphsConfig(),
        cache_dir: str | os.PathLike | None = None,
        *,
        workers: int | None = None,
        progress: bool = True,
    ):
        self.config = config
        self.directory = build(config, cache_dir, workers=workers, progress=progress)
        self.meta = json.loads((self.directory / "meta.json").read_text())
        self._splits: dict[str, GlyphsSplit] = {}

    def split(self, name: str) -> GlyphsSplit:
        """A split of ``SPLITS``, or "val_shift" where the config has shifted conditions."""
        if name not in self.meta["splits"]:
            if name == "val_shift":
                raise ValueError("this dataset has no split 'val_shift' (no shifted conditions)")
            check_split_name(name)
        if name not in self._splits:
            self._splits[name] = GlyphsSplit(self.directory, name, self.meta)
        return self._splits[name]


# The broad meta-dataset ("glyphs_broad"): characters of 68 scripts from DejaVu and Noto, and emoji
# objects, every recording under randomised conditions. Validation and test scripts and
# categories are unseen in training; each holds simple and complex scripts.
BROAD_VAL = (
    "Cyrillic",
    "Hebrew",
    "NKo",
    "Sinhala",
    "Deseret",
    "Ol Chiki",
    "Javanese",
    "Lycian",
    "Meetei Mayek",
    "Emoji vehicles",
    "Emoji clothing",
    "Emoji sports",
)
BROAD_TEST = (
    "Georgian",
    "Armenian",
    "Tifinagh",
    "Lao",
    "Old Italic",
    "Cherokee",
    "Balinese",
    "Gurmukhi",
    "Osage",
    "Carian",
    "Emoji body and hands",
    "Emoji tools",
    "Emoji music",
)
BROAD = GlyphsConfig(
    train_scripts=tuple(
        s for s in (*SCRIPTS, *emoji.CATEGORIES) if s not in BROAD_VAL + BROAD_TEST
    ),
    val_scripts=BROAD_VAL,
    test_scripts=BROAD_TEST,
    max_per_script=80,
    instances=16,
    noto=True,
    conditions=conditions.TRAINING,
    shifted=conditions.SHIFTED,
)
