"""What ``probe`` returns: ``MediaInfo`` and the ``TimeCandidate`` values inside it.

Kept in a module of its own so that every reader (photo, raw, av) and the capture-time policy
can fill or read it without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

MAX_PROBLEMS = 16  # problems one probe records at most
MORE = " (and more problems, not listed)"


@dataclass(frozen=True)
class TimeCandidate:
    """One embedded capture time, as found in the file."""

    value: datetime  # aware when the file states the offset (or UTC), else naive wall-clock time
    source: str  # "exif", "exif_digitized", "exif_datetime", "media_creation_time", "raw_exif"


@dataclass
class MediaInfo:
    """What ``probe`` learned about one item. Every field is best effort.

    ``orientation`` is the EXIF value (1..8) of a photo. For HEIF, libheif already applies the
    rotation when it decodes, and pillow-heif hides the EXIF tag (sets it to 1) to avoid a double
    rotation; ``orientation`` still reports the original tag and ``width``/``height`` are the
    stored (unrotated) size, like for JPEG. ``rotation`` is for video: degrees clockwise (0, 90,
    180, 270) a player turns the picture for display.
    """

    time_candidates: list[TimeCandidate] = field(default_factory=list)
    camera: dict | None = None
    gps: dict | None = None
    orientation: int | None = None
    rotation: int | None = None
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    problems: list[dict] = field(default_factory=list)

    def add_problem(self, code: str, detail: str) -> None:
        """Record a problem once (decoders tend to repeat themselves), and at most
        MAX_PROBLEMS in all: a photo whose EXIF has a hundred bad tags gave a hundred
        warnings, and a record the hub refused (it takes at most 64 problems)."""
        entry = {"code": code, "detail": detail}
        if entry in self.problems:
            return
        if len(self.problems) >= MAX_PROBLEMS:
            last = self.problems[-1]
            if not last["detail"].endswith(MORE):
                last["detail"] += MORE
            return
        self.problems.append(entry)
