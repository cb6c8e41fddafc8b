"""Turning tag values from hostile files into clean Python values, or None.

Why: EXIF, exiftool and ffprobe output come from the file, so any field may be missing, of the
wrong type, NUL-padded, NaN or absurd. These helpers are shared by the photo, RAW and video
readers so that all three treat garbage the same way: skip it, and say so where it matters.
"""

from __future__ import annotations

import math

from ingest.metadata.info import MediaInfo

# A tag's text kept at most (a camera's make and model are a few dozen characters).
MAX_TEXT = 256


def clean_text(raw: object) -> str | None:
    """EXIF/tag text without NULs and surrounding whitespace; None when empty or not text."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str):
        return None
    text = raw.replace("\x00", "").strip()[:MAX_TEXT]  # garbled EXIF can be kilobytes long
    return text or None


def camera(make: object, model: object) -> dict | None:
    """{"make", "model"} from the two tags; None when both are missing."""
    make_text, model_text = clean_text(make), clean_text(model)
    if make_text is None and model_text is None:
        return None
    return {"make": make_text, "model": model_text}


def orientation(raw: object, info: MediaInfo) -> int | None:
    """An EXIF orientation 1..8; anything else is recorded as unreadable metadata."""
    if raw is None:
        return None
    if isinstance(raw, int) and 1 <= raw <= 8:
        return raw
    info.add_problem("unreadable_metadata", f"orientation: invalid value {raw!r}")
    return None


def rational(raw: object) -> float | None:
    """An EXIF rational as a finite float, or None."""
    try:
        return finite(float(raw))  # IFDRational, int, float; 0/0 gives nan
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def finite(raw: object) -> float | None:
    """A number or numeric text as a finite float; None for bools, NaN, infinities, garbage."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def positive_int(raw: object) -> int | None:
    value = finite(raw)
    return int(value) if value is not None and value >= 1 and value == int(value) else None


def positive_float(raw: object) -> float | None:
    value = finite(raw)
    return value if value is not None and value > 0 else None


def int_tuple(raw: object) -> tuple[int, ...]:
    """An int or a sequence of ints (TIFF strip offsets, say); other members are dropped."""
    if isinstance(raw, int):
        return (raw,)
    if isinstance(raw, tuple | list):
        return tuple(v for v in raw if isinstance(v, int))
    return ()
