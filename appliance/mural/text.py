"""Text made safe to print, and wrapped to a box with the font's own measurements.

Nothing is ever cut by a box's edge: text is wrapped at spaces (a word wider than its box is
broken between characters), a heading may shrink first, and text that still needs more
lines than its box allows ends in "…" at a word boundary, which the caller reports.

What people typed is printed as text, never interpreted: "<b>" is printed as "<b>". Control
and format characters are dropped first, among them the bidirectional overrides and isolates
(U+202A-U+202E, U+2066-U+2069) and zero-width characters, so a caption cannot reorder or
hide the text around it; line breaks and tabs become spaces.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from appliance.mural.fonts import Fonts

ELLIPSIS = "…"
# Unicode categories dropped: controls, format characters (bidi controls, zero-width
# joiners, soft hyphens), surrogates (undecodable file names), private use, unassigned.
_DROPPED = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_TRAILING = " ,;:.-—–·"


def clean(value: object) -> str:
    """One line of printable text: NFC, no control or format characters, spaces collapsed."""
    if not isinstance(value, str):
        return ""
    value = unicodedata.normalize("NFC", value)
    out = []
    for char in value:
        if char in "\n\r\t\v\f\u2028\u2029":
            out.append(" ")
        elif unicodedata.category(char) not in _DROPPED:
            out.append(char)
    return " ".join("".join(out).split())


@dataclass(frozen=True)
class Wrapped:
    lines: tuple[str, ...]
    ellipsized: bool  # text was left out (the last line ends in "…")


def wrap(fonts: Fonts, style: str, size: int, text: str, width: int,
         max_lines: int | None = None) -> Wrapped:
    """`text` (already clean) in lines no wider than `width` px, at most `max_lines`."""
    if not text:
        return Wrapped((), False)
    if width < 1:
        raise ValueError(f"no room for text ({width} px)")

    def fits(candidate: str) -> bool:
        return fonts.length(style, size, candidate) <= width

    lines: list[str] = []
    current = ""
    limit = None if max_lines is None else max_lines + 1  # one more tells it overflows
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if fits(candidate):
            current = candidate
            continue
        if current:
            lines.append(current)
            current = ""
        if fits(word):
            current = word
        else:
            pieces = _break_word(fits, word)
            lines.extend(pieces[:-1])
            current = pieces[-1]
        if limit is not None and len(lines) >= limit:
            break
    if current and (limit is None or len(lines) < limit):
        lines.append(current)
    if max_lines is None or len(lines) <= max_lines:
        return Wrapped(tuple(lines), False)
    kept = lines[:max_lines]
    kept[-1] = _ellipsize(fits, kept[-1])
    return Wrapped(tuple(kept), True)


def _break_word(fits: Callable[[str], bool], word: str) -> list[str]:
    """A word wider than the line, in pieces that each fit (at least one character)."""
    pieces = []
    rest = word
    while rest:
        lo, hi = 1, len(rest)
        while lo < hi:  # the longest prefix that fits
            mid = (lo + hi + 1) // 2
            if fits(rest[:mid]):
                lo = mid
            else:
                hi = mid - 1
        pieces.append(rest[:lo])
        rest = rest[lo:]
    return pieces


def _ellipsize(fits: Callable[[str], bool], line: str) -> str:
    """`line` shortened, whole words first, until it fits with "…" after it."""
    line = line.rstrip(_TRAILING)
    while line and not fits(line + ELLIPSIS):
        # whole words off the end; a single word, a character at a time
        line = line.rsplit(" ", 1)[0].rstrip(_TRAILING) if " " in line else line[:-1]
    return line + ELLIPSIS


@dataclass(frozen=True)
class Fitted:
    size: int
    wrapped: Wrapped


def fit(fonts: Fonts, style: str, sizes: list[int], text: str, width: int,
        max_lines: int, *, one_line_first: bool = False) -> Fitted:
    """The largest of `sizes` (largest first) at which `text` fits `width` in `max_lines`
    without an ellipsis; else the smallest, ellipsized. `one_line_first`: a heading tries
    every size on one line before it wraps."""
    if one_line_first:
        for size in sizes:
            wrapped = wrap(fonts, style, size, text, width, 1)
            if not wrapped.ellipsized:
                return Fitted(size, wrapped)
    for size in sizes:
        wrapped = wrap(fonts, style, size, text, width, max_lines)
        if not wrapped.ellipsized:
            return Fitted(size, wrapped)
    return Fitted(sizes[-1], wrap(fonts, style, sizes[-1], text, width, max_lines))
