"""Objects: emoji from Debian's Noto Color Emoji font (``fonts-noto-color-emoji``) as grey-level
shapes with texture, a second family of classes beside the characters, closer to what a robot
sees than strokes.

Each class is one emoji; its group is its category (``CATEGORIES``: animals, food, vehicles, ...),
so splits by category keep test categories unseen. The font is a colour bitmap font, drawn with
Pillow at its one bitmap size and reduced to the image size; the "ink" of an emoji is its opacity
times its darkness, so its silhouette always shows and its inner texture shows as grey levels.
"""

from __future__ import annotations

import unicodedata
from functools import cache

import numpy as np

from spikeshot.models.datasets.fonts import noto_dir

PACKAGE = "fonts-noto-color-emoji"
FONT_FILE = "NotoColorEmoji.ttf"
_BITMAP_PX = 109  # the one size the font's bitmaps are drawn at

# Emoji categories as (first, last) code point ranges: a hand-made grouping of Unicode's emoji
# blocks by what they show.
CATEGORIES: dict[str, tuple[tuple[int, int], ...]] = {
    "Emoji sky and weather": ((0x1F300, 0x1F32C),),
    "Emoji plants": ((0x1F330, 0x1F344), (0x1FAB4, 0x1FAB7)),
    "Emoji food": ((0x1F345, 0x1F37F), (0x1F950, 0x1F96F), (0x1F9C0, 0x1F9CB)),
    "Emoji celebration and games": ((0x1F380, 0x1F393), (0x1F3A0, 0x1F3AF)),
    "Emoji music": ((0x1F3B5, 0x1F3BC), (0x1FA87, 0x1FA88), (0x1FA95, 0x1FA97)),
    "Emoji sports": ((0x1F3BD, 0x1F3CA), (0x1F93C, 0x1F94F)),
    "Emoji buildings": ((0x1F3E0, 0x1F3F0),),
    "Emoji animals": ((0x1F400, 0x1F43F), (0x1F980, 0x1F9AE)),
    "Emoji body and hands": ((0x1F440, 0x1F450), (0x1F90C, 0x1F91F), (0x1F932, 0x1F934)),
    "Emoji clothing": ((0x1F451, 0x1F462), (0x1F97B, 0x1F97F), (0x1FA71, 0x1FA7C)),
    "Emoji faces": ((0x1F600, 0x1F637),),
    "Emoji office": ((0x1F4BA, 0x1F4DC),),
    "Emoji tools": ((0x1F527, 0x1F52B), (0x1F9F0, 0x1F9FF), (0x1FA9A, 0x1FAA0)),
    "Emoji vehicles": ((0x1F680, 0x1F6A4), (0x1F6B2, 0x1F6B2), (0x1F6F4, 0x1F6FC)),
    "Emoji household": ((0x1F6AA, 0x1F6B1), (0x1F6CB, 0x1F6CF), (0x1FA91, 0x1FA94)),
}


@cache
def _font():
    from PIL import ImageFont

    path = noto_dir() / FONT_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: install Debian's {PACKAGE} (apt-get install {PACKAGE}) or set "
            "SPIKESHOT_NOTO_DIR to a folder that holds it"
        )
    return ImageFont.truetype(str(path), _BITMAP_PX)


@cache
def _cmap() -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    _font()  # the clear error when the font is missing
    return frozenset(FT2Font(str(noto_dir() / FONT_FILE)).get_charmap())


def candidates(category: str) -> list[int]:
    """The code points of ``category`` that the font draws as emoji (symbols with a bitmap)."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown emoji category {category!r}; known: {sorted(CATEGORIES)}")
    return [
        cp
        for first, last in CATEGORIES[category]
        for cp in range(first, last + 1)
        if cp in _cmap() and unicodedata.category(chr(cp)) == "So"
    ]


@cache
def _bitmap(codepoint: int) -> np.ndarray:
    """The emoji's ink at the font's bitmap size: [s, s] in [0, 1], cropped square and centred."""
    from PIL import Image, ImageDraw

    canvas = Image.new("RGBA", (2 * _BITMAP_PX, 2 * _BITMAP_PX), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((0, 0), chr(codepoint), font=_font(), embedded_color=True)
    rgba = np.asarray(canvas, dtype=np.float64) / 255.0
    lum = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])
    ink = rgba[..., 3] * (0.35 + 0.65 * (1.0 - lum))
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        raise ValueError(f"the emoji font draws nothing for U+{codepoint:04X}")
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    side = max(ink.shape)
    out = np.zeros((side, side))
    r0, c0 = (side - ink.shape[0]) // 2, (side - ink.shape[1]) // 2
    out[r0 : r0 + ink.shape[0], c0 : c0 + ink.shape[1]] = ink
    return out


def render(codepoint: int, size: int, extent_px: float) -> np.ndarray:
    """The emoji's ink as a [size, size] image in [0, 1], its longer side ``extent_px`` pixels,
    centred (area-averaged from the bitmap)."""
    from PIL import Image

    side = max(1, min(size, int(round(extent_px))))
    small = Image.fromarray(_bitmap(codepoint).astype(np.float32), mode="F").resize(
        (side, side), Image.BOX
    )
    out = np.zeros((size, size))
    o = (size - side) // 2
    out[o : o + side, o : o + side] = np.clip(np.asarray(small, dtype=np.float64), 0.0, 1.0)
    return out
