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
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import NamedTuple

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.ft2font import FT2Font, LoadFlags
from matplotlib.path import Path as MplPath
from matplotlib.transforms import IdentityTransform
from tqdm.auto import tqdm

from spikeshot.events import dvs_sim
from spikeshot.events.array import make_events
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

# Unicode ranges of each script, as (first, last) code points.
CACHE_FORMAT = 2

SCRIPTS: dict[str, tuple[tuple[int, int], ...]] = {
    "Latin": ((0x0041, 0x005A), (0x0061, 0x007A), (0x00C0, 0x02AF)),
    "Greek": ((0x0370, 0x03FF),),
    "Cyrillic": ((0x0400, 0x052F),),
    "Armenian": ((0x0530, 0x058F),),
    "Hebrew": ((0x0590, 0x05FF),),
    "Arabic": ((0x0600, 0x06FF), (0x0750, 0x077F)),
    "NKo": ((0x07C0, 0x07FF),),
    "Lao": ((0x0E80, 0x0EFF),),
    "Georgian": ((0x10A0, 0x10FF), (0x2D00, 0x2D2F)),
    "Canadian Syllabics": ((0x1400, 0x167F),),
    "Ogham": ((0x1680, 0x169F),),
    "Tifinagh": ((0x2D30, 0x2D7F),),
    "Lisu": ((0xA4D0, 0xA4FF),),
    "Old Italic": ((0x10300, 0x1032F),),
}

# Font styles: name -> DejaVu file in matplotlib's data. "sans" has every script and is the
# reference for which characters exist.
STYLES: dict[str, str] = {
    "sans": "DejaVuSans.ttf",
    "sans-bold": "DejaVuSans-Bold.ttf",
    "sans-oblique": "DejaVuSans-Oblique.ttf",
    "sans-bold-oblique": "DejaVuSans-BoldOblique.ttf",
    "serif": "DejaVuSerif.ttf",
    "serif-bold": "DejaVuSerif-Bold.ttf",
    "serif-italic": "DejaVuSerif-Italic.ttf",
    "serif-bold-italic": "DejaVuSerif-BoldItalic.ttf",
    "mono": "DejaVuSansMono.ttf",
    "mono-bold": "DejaVuSansMono-Bold.ttf",
    "mono-oblique": "DejaVuSansMono-Oblique.ttf",
    "mono-bold-oblique": "DejaVuSansMono-BoldOblique.ttf",
}

_FONT_PX = 100.0  # outlines are read at 100 px per em
_LETTERS = frozenset({"Lu", "Ll", "Lo"})
# How recordings are stored: time from the recording's start fits 32 bits, coordinates 8.
_STORE_DTYPE = np.dtype([("t", "<u4"), ("x", "u1"), ("y", "u1"), ("p", "u1")])


@dataclass(frozen=True)
class GlyphsConfig:
    """Everything that determines the generated data (and so the cache key).

    Sizes are in pixels of the ``image_size`` image; jitter parameters are the half-widths of
    uniform draws (``scale_jitter`` 0.1 draws a scale in [0.9, 1.1]). ``sensor``, ``saccade_ms``
    and ``fps`` go to ``record_saccades`` (250 fps, as Double Digits records).
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

    def __post_init__(self):
        named = self.train_scripts + self.val_scripts + self.test_scripts
        unknown = sorted(set(named) - set(SCRIPTS))
        if unknown:
            raise ValueError(f"unknown scripts {unknown}; known: {sorted(SCRIPTS)}")
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
    """A class of Glyphs: one code point of one script, and the styles whose font has it."""

    script: str
    codepoint: int
    styles: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.script}/U+{self.codepoint:04X}"


@cache
def _font(style: str) -> FT2Font:
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; known: {list(STYLES)}")
    font = FT2Font(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / STYLES[style]))
    font.set_size(_FONT_PX, 72)
    return font


def has_glyph(codepoint: int, style: str = "sans") -> bool:
    """Whether the font of ``style`` maps ``codepoint`` to a real glyph (not ``.notdef``)."""
    return _font(style).get_char_index(codepoint) != 0


def outline(codepoint: int, style: str = "sans") -> tuple[np.ndarray, np.ndarray]:
    """The glyph's outline as path (vertices [n, 2] in px at 100 px per em, y up; codes [n]).

    Raises ``ValueError`` when the font of ``style`` lacks the character.
    """
    if not has_glyph(codepoint, style):
        raise ValueError(f"font {STYLES[style]} has no glyph for U+{codepoint:04X}")
    font = _font(style)
    font.load_glyph(font.get_char_index(codepoint), flags=LoadFlags.NO_HINTING)
    verts, codes = font.get_path()
    return np.asarray(verts, dtype=np.float64), np.asarray(codes)


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
    scale = config.em_px / _FONT_PX
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


def _candidates(script: str) -> list[int]:
    """Code points of ``script`` that DejaVu Sans has: letters without a decomposition."""
    return [
        cp
        for first, last in SCRIPTS[script]
        for cp in range(first, last + 1)
        if unicodedata.category(chr(cp)) in _LETTERS
        and not unicodedata.decomposition(chr(cp))
        and has_glyph(cp)
    ]


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
    pool = [(script, cp) for script in scripts for cp in _candidates(script)]
    images = np.stack([render(cp, config=config) for _, cp in pool])
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
        for cp in mine:
            styles = tuple(s for s in STYLES if has_glyph(cp, s))
            chosen.append(Character(script, cp, styles))
    return chosen


def _record_character(args: tuple[Character, GlyphsConfig]) -> tuple[np.ndarray, np.ndarray]:
    """All instances of one character: (events in ``_STORE_DTYPE``, event count per instance)."""
    char, config = args
    rng = np.random.default_rng([config.seed, char.codepoint])
    recordings = []
    for _ in range(config.instances):
        style = char.styles[rng.integers(len(char.styles))]
        image = render(char.codepoint, style, random_transform(rng, config), config)
        ev = dvs_sim.record_saccades(
            image,
            sensor=config.sensor,
            saccade_ms=config.saccade_ms,
            fps=config.fps,
            seed=int(rng.integers(2**63)),
        )
        rec = np.empty(len(ev), dtype=_STORE_DTYPE)
        for field in _STORE_DTYPE.names:
            rec[field] = ev[field]
        recordings.append(rec)
    return np.concatenate(recordings), np.array([len(r) for r in recordings], dtype=np.int64)


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
        jobs = [(c, config) for c in chars]
        bar = tqdm(total=len(chars), desc="Glyphs", unit="char", disable=not progress)
        counts = []
        # Spawned, not forked: forked workers would share the parent's font file offsets.
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, spawn) if workers > 1 else nullcontext() as pool:
            results = (
                pool.map(_record_character, jobs, chunksize=4)
                if pool
                else map(_record_character, jobs)
            )
            files = {name: open(tmp / f"{name}.events.bin", "wb") for name in SPLITS}
            try:
                for char, (events, n) in zip(chars, results, strict=True):
                    files[split_of[char.script]].write(events.tobytes())
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
        for name in SPLITS:
            idx = [i for i, c in enumerate(chars) if split_of[c.script] == name]
            n = np.concatenate([counts[i] for i in idx])
            np.save(tmp / f"{name}.offsets.npy", np.concatenate([[0], np.cumsum(n)]))
            meta["splits"][name] = {
                "scripts": list(config.scripts_of(name)),
                "classes": [chars[i].name for i in idx],
                "styles": [list(chars[i].styles) for i in idx],
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
        check_split_name(name)
        if name not in self._splits:
            self._splits[name] = GlyphsSplit(self.directory, name, self.meta)
        return self._splits[name]
