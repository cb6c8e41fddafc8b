"""What a file on a card is, judged by its name alone.

The walk must decide before it opens anything whether a file is media worth copying, clutter
a camera or an operating system left behind, or something unknown to report. Content sniffing
comes later (metadata), on files already known to be media.
"""

from __future__ import annotations

import fnmatch
from typing import Literal

Kind = Literal["photo", "raw", "video", "audio", "other"]

PHOTO_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".heic", ".heif", ".hif", ".mpo", ".png", ".tif", ".tiff"}
)
RAW_EXTENSIONS = frozenset(
    {".cr2", ".cr3", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".raf", ".orf", ".rw2"}
)
# .webm (phones' screen recordings, browsers), .3gp (older phones), .mpg/.mpeg (DVD-era
# cameras): demuxed by ffmpeg's matroska, mov and mpeg readers that metadata.av allows.
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mts", ".m2ts", ".avi", ".mkv",
                              ".webm", ".3gp", ".mpg", ".mpeg"})
AUDIO_EXTENSIONS = frozenset({".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".oga", ".opus"})
# Sidecars that carry the photographer's own work (ratings, captions); archived as "other".
SIDECAR_EXTENSIONS = frozenset({".xmp"})

# Names that operating systems and cameras leave on cards. Matched case-insensitively
# against a single path component; a matching directory is not entered.
CLUTTER_PATTERNS = (
    "._*",
    ".ds_store",
    ".trashes",
    ".trash-*",
    ".spotlight-v100",
    ".fseventsd",
    ".temporaryitems",
    "system volume information",
    "$recycle.bin",
    "thumbs.db",
    "desktop.ini",
    "*.ctg",
)


def kind_of(name: str) -> Kind | None:
    """The kind of a file by its extension, or None when Acopio does not know it."""
    dot = name.rfind(".")
    if dot <= 0:
        return None
    ext = name[dot:].lower()
    if ext in PHOTO_EXTENSIONS:
        return "photo"
    if ext in RAW_EXTENSIONS:
        return "raw"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    if ext in SIDECAR_EXTENSIONS:
        return "other"
    return None


# Only at the root of a card: a camera's DPOF print order (DCF's MISC/AUTPRINT.MRK). A folder
# named "Misc" deeper down, or in a folder dropped into the inbox, is the user's.
ROOT_CLUTTER_PATTERNS = ("misc",)


def is_clutter(name: str, extra_patterns: tuple[str, ...] = (), *, at_root: bool = False
               ) -> bool:
    """True for names that are system or camera housekeeping, never the user's media;
    `at_root`: the name is directly in the card's (or the inbox's) root."""
    lowered = name.lower()
    patterns = CLUTTER_PATTERNS + extra_patterns + (ROOT_CLUTTER_PATTERNS if at_root else ())
    return any(fnmatch.fnmatchcase(lowered, p.lower()) for p in patterns)
