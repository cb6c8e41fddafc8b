"""Per-item metadata for ingest: capture time, camera, GPS, orientation, size, duration, damage.

The public API is what this module exports: ``probe`` (read one open file), ``MediaInfo`` and
``TimeCandidate`` (what it found), ``resolve_capture_time`` (the capture-time policy) and
``ffprobe_args`` (the audited ffprobe command line). Callers use ``from ingest import
metadata`` and ``metadata.probe(...)``; the modules below are internal.

Why it looks like this (design decisions 4 and 5):

* It works on a file descriptor the pipeline already opened (O_RDONLY|O_NOFOLLOW, checked to be
  a regular file) and never opens anything by name: a card's names are hostile input.
* Bad media never raises. The original is archived byte for byte whatever its state, so a
  parser's complaint becomes an entry in ``MediaInfo.problems`` and the other fields are best
  effort. A real I/O error (a card pulled mid-read: EIO) is different, it is the caller's to
  handle, so it propagates as OSError.
* Damage detection is structural and cheap, so that an import stays close to copy speed on a
  Raspberry Pi-class box: nothing is decoded at import time (the thumbnail jobs decode later).
* Child programs run with an argument list, a timeout and their own process group; ffprobe is
  confined to local files and a fixed list of demuxers.
* Capture time: embedded times first, then the file time, then the import time; dates that
  cannot be true are flagged rather than trusted.

Where things are:

* ``info``: MediaInfo and TimeCandidate.
* ``photo``: photos with Pillow and pillow-heif (EXIF, GPS, orientation, size).
* ``damage``: which structural check runs for which photo format; PNG, TIFF, WEBP checks.
* ``jpeg``, ``heif``: the JPEG/MPO and HEIF structural checks.
* ``raw``: RAW files with exiftool.  ``av``: video and audio with ffprobe.
* ``times``: date parsing and ``resolve_capture_time``.  ``gps``, ``values``: tag values.
* ``children``: running child programs.  ``reading``: reading the fd, error triage.
"""

from __future__ import annotations

import os
import stat
from typing import get_args

from ingest.kinds import Kind
from ingest.metadata.av import ffprobe_args, probe_av
from ingest.metadata.info import MediaInfo, TimeCandidate
from ingest.metadata.photo import probe_photo
from ingest.metadata.raw import probe_raw
from ingest.metadata.times import resolve_capture_time

__all__ = ["MediaInfo", "TimeCandidate", "ffprobe_args", "probe", "resolve_capture_time"]

_KINDS: frozenset[str] = frozenset(get_args(Kind))


def probe(fd: int, kind: str, *, timeout: float = 30.0) -> MediaInfo:
    """Read the metadata of the open regular file ``fd`` judged to be of ``kind``.

    ``fd`` is not closed and stays usable; its file offset may move. Bad media yields problems,
    never exceptions. Raises OSError for I/O errors on ``fd``, ValueError for a ``kind`` that is
    not a ``Kind`` or an ``fd`` that is not a regular file, RuntimeError when the program a kind
    needs (ffprobe, exiftool) is not installed.
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(_KINDS)}")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"fd {fd} is not a regular file")
    info = MediaInfo()
    if kind == "other":
        return info
    if st.st_size == 0:
        info.add_problem("damaged", "file is empty")
        return info
    if kind == "photo":
        probe_photo(fd, st.st_size, info, timeout)
    elif kind == "raw":
        probe_raw(fd, info, timeout)
    else:
        probe_av(fd, info, timeout)
    return info
