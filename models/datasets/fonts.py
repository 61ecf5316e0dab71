"""The fonts characters are drawn from: matplotlib's DejaVu (always there) and Debian's Noto fonts
(``fonts-noto-core``, optional), each glyph read as an outline.

A style is a font's name: the short DejaVu names of ``DEJAVU`` ("sans", "serif-bold", ...) or a Noto
file's stem ("NotoSansArmenian-Bold"). Noto fonts are looked up in ``$SPIKESHOT_NOTO_DIR``, else in
Debian's folder for them.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.ft2font import FT2Font, LoadFlags

from spikeshot.models.datasets.scripts import noto_families

DEJAVU: dict[str, str] = {
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
# The Noto weights and slants used, where a family has them.
NOTO_STYLES = ("Regular", "Bold", "Italic", "BoldItalic", "Light", "Black")
NOTO_PACKAGE = "fonts-noto-core"
FONT_PX = 100.0  # outlines are read at 100 px per em


def noto_dir() -> Path:
    return Path(os.environ.get("SPIKESHOT_NOTO_DIR", "/usr/share/fonts/truetype/noto"))


def noto_styles(script: str) -> list[str]:
    """The installed Noto fonts of ``script``, as styles; raises ``FileNotFoundError`` naming the
    package to install when there are no Noto fonts at all."""
    folder = noto_dir()
    if not any(folder.glob("NotoSans-*.ttf")):
        raise FileNotFoundError(
            f"no Noto fonts in {folder}: install Debian's {NOTO_PACKAGE} "
            f"(apt-get install {NOTO_PACKAGE}) or set SPIKESHOT_NOTO_DIR to a folder of them"
        )
    return [
        f"{family}-{style}"
        for family in noto_families(script)
        for style in NOTO_STYLES
        if (folder / f"{family}-{style}.ttf").is_file()
    ]


def font_path(style: str) -> Path:
    if style in DEJAVU:
        return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / DEJAVU[style]
    if style.startswith("Noto"):
        return noto_dir() / f"{style}.ttf"
    raise ValueError(f"unknown style {style!r}; known: {list(DEJAVU)} and Noto file stems")


@cache
def _font(style: str) -> FT2Font:
    font = FT2Font(str(font_path(style)))
    font.set_size(FONT_PX, 72)
    return font


def has_glyph(codepoint: int, style: str = "sans") -> bool:
    """Whether the font of ``style`` maps ``codepoint`` to a real glyph (not ``.notdef``)."""
    return _font(style).get_char_index(codepoint) != 0


def outline(codepoint: int, style: str = "sans") -> tuple[np.ndarray, np.ndarray]:
    """The glyph's outline as path (vertices [n, 2] in px at 100 px per em, y up; codes [n]).

    Raises ``ValueError`` when the font of ``style`` lacks the character.
    """
    if not has_glyph(codepoint, style):
        raise ValueError(f"font {font_path(style).name} has no glyph for U+{codepoint:04X}")
    font = _font(style)
    font.load_glyph(font.get_char_index(codepoint), flags=LoadFlags.NO_HINTING)
    verts, codes = font.get_path()
    return np.asarray(verts, dtype=np.float64), np.asarray(codes)
