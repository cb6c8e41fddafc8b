"""The fonts of everything Acopio prints: DejaVu Sans from Debian's fonts-dejavu-core.

DejaVu Sans has every glyph Spanish needs (á é í ó ú ü ñ ¿ ¡ « » — …) and far more (Greek,
Cyrillic, Hebrew, Arabic), and Debian installs it on every box that has fonts at all. Text is
laid out by Pillow's basic engine (no raqm), so a measurement made on one machine is the one
made on the box: the layout, which measures, and the renderer, which draws, use the same
`Fonts` object and so the same faces and sizes.
"""

from __future__ import annotations

import hashlib
import math
import os
from functools import cache
from pathlib import Path

from PIL import ImageFont

DEBIAN_PACKAGE = "fonts-dejavu-core"
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))
FILES = {"regular": "DejaVuSans.ttf", "bold": "DejaVuSans-Bold.ttf"}
STYLES = tuple(FILES)
# Line height as a multiple of the font size (at least the font's ascent plus descent).
LEADING = 1.22


class FontError(RuntimeError):
    """The fonts are not installed; the message names the Debian package."""


@cache
def font_path(style: str) -> Path:
    name = FILES[style]
    for folder in FONT_DIRS:
        path = folder / name
        if path.is_file():
            return path
    raise FontError(f"font {name} not found in {', '.join(map(str, FONT_DIRS))}: install "
                    f"the Debian package {DEBIAN_PACKAGE} (./scripts/setup does)")


def identity() -> str:
    """What a cached rendering depends on about the fonts: their files' size and time."""
    parts = []
    for style in STYLES:
        st = os.stat(font_path(style))
        parts.append(f"{style}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


class Fonts:
    """Faces by (style, size in px) and cached measurements. One per rendering: FreeType
    faces are not meant to be shared between threads."""

    def __init__(self) -> None:
        self._faces: dict[tuple[str, int], ImageFont.FreeTypeFont] = {}
        self._lengths: dict[tuple[str, int, str], float] = {}
        self._drawable: dict[tuple[str, str], bool] = {}

    def face(self, style: str, size: int) -> ImageFont.FreeTypeFont:
        key = (style, size)
        face = self._faces.get(key)
        if face is None:
            face = ImageFont.truetype(os.fspath(font_path(style)), size,
                                      layout_engine=ImageFont.Layout.BASIC)
            self._faces[key] = face
        return face

    def length(self, style: str, size: int, text: str) -> float:
        """The advance width of `text` in px."""
        key = (style, size, text)
        found = self._lengths.get(key)
        if found is None:
            found = self.face(style, size).getlength(text)
            if len(self._lengths) > 200_000:
                self._lengths.clear()
            self._lengths[key] = found
        return found

    def drawable(self, style: str, text: str) -> tuple[str, str]:
        """(`text` without the characters the face has no glyph for, those characters).
        An emoji in a caption printed as an empty box ("tofu"); now it is left out, and
        said. A missing glyph is drawn as the face's .notdef box, so a character whose
        drawing is exactly that box is one the face lacks (spaces draw nothing at all)."""
        kept, dropped = [], []
        for char in text:
            key = (style, char)
            ok = self._drawable.get(key)
            if ok is None:
                face = self.face(style, 48)
                ok = char.isspace() or _drawing(face, char) != _drawing(face, _NOT_A_GLYPH)
                self._drawable[key] = ok
            (kept if ok else dropped).append(char)
        return "".join(kept), "".join(dict.fromkeys(dropped))

    def line_height(self, style: str, size: int) -> int:
        ascent, descent = self.face(style, size).getmetrics()
        return max(ascent + descent, math.ceil(size * LEADING))

    def inset(self, size: int) -> int:
        """Room kept on each side of a line so that no glyph's overhang (the hook of a j,
        an italic-like f) leaves its box."""
        return max(1, math.ceil(size * 0.06))

    def top(self, style: str, size: int) -> int:
        """Where the ascender line sits below the top of a line box."""
        ascent, descent = self.face(style, size).getmetrics()
        return max(0, (self.line_height(style, size) - ascent - descent) // 2)


# A code point no font maps (the last one Unicode has, a noncharacter): drawn as .notdef.
_NOT_A_GLYPH = "\U0010ffff"


def _drawing(face: ImageFont.FreeTypeFont, char: str) -> tuple[tuple[int, int], bytes]:
    mask = face.getmask(char)
    return mask.size, bytes(mask)
