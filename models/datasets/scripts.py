"""The writing systems the character meta-datasets may use, with their Unicode ranges.

Only these scripts are ever rendered, whatever the font: every other script is kept for evaluation
by others, so no split of ours (train, validation or test) may contain it. ``SCRIPTS`` maps a
script's name to its ranges as (first, last) code points; ``NOTO_FAMILIES`` names the Noto font
families (Debian's ``fonts-noto-core``) that draw a script, where the default rule (``NotoSans`` and
``NotoSerif`` followed by the name without spaces) does not find them all.
"""

from __future__ import annotations

SCRIPTS: dict[str, tuple[tuple[int, int], ...]] = {
    "Latin": ((0x0041, 0x005A), (0x0061, 0x007A), (0x00C0, 0x02AF)),
    "Greek": ((0x0370, 0x03FF),),
    "Cyrillic": ((0x0400, 0x052F),),
    "Armenian": ((0x0530, 0x058F),),
    "Hebrew": ((0x0590, 0x05FF),),
    "Arabic": ((0x0600, 0x06FF), (0x0750, 0x077F)),
    "Syriac": ((0x0700, 0x074F),),
    "Thaana": ((0x0780, 0x07BF),),
    "NKo": ((0x07C0, 0x07FF),),
    "Samaritan": ((0x0800, 0x083F),),
    "Gurmukhi": ((0x0A00, 0x0A7F),),
    "Oriya": ((0x0B00, 0x0B7F),),
    "Telugu": ((0x0C00, 0x0C7F),),
    "Malayalam": ((0x0D00, 0x0D7F),),
    "Sinhala": ((0x0D80, 0x0DFF),),
    "Lao": ((0x0E80, 0x0EFF),),
    "Tibetan": ((0x0F00, 0x0FFF),),
    "Myanmar": ((0x1000, 0x109F),),
    "Georgian": ((0x10A0, 0x10FF), (0x2D00, 0x2D2F)),
    "Cherokee": ((0x13A0, 0x13FF), (0xAB70, 0xABBF)),
    "Canadian Syllabics": ((0x1400, 0x167F),),
    "Ogham": ((0x1680, 0x169F),),
    "Tagalog": ((0x1700, 0x171F),),
    "Mongolian": ((0x1800, 0x18AF),),
    "Limbu": ((0x1900, 0x194F),),
    "Tai Le": ((0x1950, 0x197F),),
    "New Tai Lue": ((0x1980, 0x19DF),),
    "Buginese": ((0x1A00, 0x1A1F),),
    "Balinese": ((0x1B00, 0x1B7F),),
    "Sundanese": ((0x1B80, 0x1BBF),),
    "Lepcha": ((0x1C00, 0x1C4F),),
    "Ol Chiki": ((0x1C50, 0x1C7F),),
    "Glagolitic": ((0x2C00, 0x2C5F),),
    "Coptic": ((0x2C80, 0x2CFF),),
    "Tifinagh": ((0x2D30, 0x2D7F),),
    "Yi": ((0xA000, 0xA48F),),
    "Lisu": ((0xA4D0, 0xA4FF),),
    "Saurashtra": ((0xA880, 0xA8DF),),
    "Rejang": ((0xA930, 0xA95F),),
    "Javanese": ((0xA980, 0xA9DF),),
    "Cham": ((0xAA00, 0xAA5F),),
    "Meetei Mayek": ((0xABC0, 0xABFF),),
    "Linear B": ((0x10000, 0x100FF),),
    "Lycian": ((0x10280, 0x1029F),),
    "Carian": ((0x102A0, 0x102DF),),
    "Old Italic": ((0x10300, 0x1032F),),
    "Gothic": ((0x10330, 0x1034F),),
    "Ugaritic": ((0x10380, 0x1039F),),
    "Old Persian": ((0x103A0, 0x103DF),),
    "Deseret": ((0x10400, 0x1044F),),
    "Shavian": ((0x10450, 0x1047F),),
    "Osmanya": ((0x10480, 0x104AF),),
    "Osage": ((0x104B0, 0x104FF),),
    "Elbasan": ((0x10500, 0x1052F),),
    "Cypriot": ((0x10800, 0x1083F),),
    "Phoenician": ((0x10900, 0x1091F),),
    "Lydian": ((0x10920, 0x1093F),),
    "Kharoshthi": ((0x10A00, 0x10A5F),),
    "Old Turkic": ((0x10C00, 0x10C4F),),
    "Old Hungarian": ((0x10C80, 0x10CFF),),
    "Brahmi": ((0x11000, 0x1107F),),
    "Chakma": ((0x11100, 0x1114F),),
    "Mro": ((0x16A40, 0x16A6F),),
    "Pahawh Hmong": ((0x16B00, 0x16B8F),),
    "Medefaidrin": ((0x16E40, 0x16E9F),),
    "Miao": ((0x16F00, 0x16F9F),),
    "Wancho": ((0x1E2C0, 0x1E2FF),),
    "Adlam": ((0x1E900, 0x1E95F),),
}

NOTO_FAMILIES: dict[str, tuple[str, ...]] = {
    "Latin": ("NotoSans", "NotoSerif"),
    "Greek": ("NotoSans", "NotoSerif"),
    "Cyrillic": ("NotoSans", "NotoSerif"),
    "Arabic": ("NotoSansArabic", "NotoNaskhArabic", "NotoKufiArabic"),
    "Hebrew": ("NotoSansHebrew", "NotoSerifHebrew", "NotoRashiHebrew"),
    "Lao": ("NotoSansLao", "NotoSerifLao", "NotoLoopedLao"),
    "Canadian Syllabics": ("NotoSansCanadianAboriginal",),
    "Tifinagh": (
        "NotoSansTifinagh",
        "NotoSansTifinaghAPT",
        "NotoSansTifinaghAdrar",
        "NotoSansTifinaghAhaggar",
        "NotoSansTifinaghAir",
        "NotoSansTifinaghHawad",
        "NotoSansTifinaghSIL",
    ),
}


def noto_families(script: str) -> tuple[str, ...]:
    """The Noto families that may draw ``script`` (those installed are found by ``fonts``)."""
    if script not in SCRIPTS:
        raise ValueError(f"unknown script {script!r}")
    name = script.replace(" ", "")
    return NOTO_FAMILIES.get(script, (f"NotoSans{name}", f"NotoSerif{name}"))
