"""RAW files (CR2, NEF, ARW, DNG, ...) read by exiftool, the file given as its stdin.

Why exiftool: Pillow does not read RAW containers, and exiftool knows every maker's. It gets a
duplicate of the caller's descriptor as stdin, never a name, so a hostile name (one starting
with "-", say) cannot become an option; ``-fast`` keeps it from reading past the metadata.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from ingest.metadata.children import child_fd, run_child, stderr_text
from ingest.metadata.gps import plausible_gps
from ingest.metadata.info import MediaInfo, TimeCandidate
from ingest.metadata.times import parse_exif_datetime, parse_offset
from ingest.metadata.values import camera, clean_text, finite, orientation, positive_int

# Tags asked of exiftool for RAW files; -n gives numbers, and Composite GPS values are signed.
_EXIFTOOL_TAGS = (
    "-DateTimeOriginal",
    "-OffsetTimeOriginal",
    "-Make",
    "-Model",
    "-Orientation",
    "-ImageWidth",
    "-ImageHeight",
    "-ImageSize",  # Composite: the raw image's size where IFD0 holds only a preview (CR2)
    "-GPSLatitude",
    "-GPSLongitude",
    "-GPSAltitude",
    "-MIMEType",
    "-FileType",
    "-Error",
    "-Warning",
)


class ExiftoolError(Exception):
    """exiftool ran but failed without saying why in its output."""


def exiftool_args(tags: Sequence[str]) -> list[str]:
    """The exiftool command line reading the file from stdin; pure, no file names involved."""
    return ["exiftool", "-j", "-n", "-G0", "-fast", *tags, "-"]


def probe_raw(fd: int, info: MediaInfo, timeout: float) -> None:
    """Fill ``info`` from exiftool; its failures and timeouts become "probe_failed"."""
    try:
        record = run_exiftool(fd, _EXIFTOOL_TAGS, timeout)
    except subprocess.TimeoutExpired:
        info.add_problem("probe_failed", "exiftool timed out")
        return
    except ExiftoolError as exc:
        info.add_problem("probe_failed", str(exc))
        return
    _fill_from_exiftool(record, info)


def run_exiftool(fd: int, tags: Sequence[str], timeout: float) -> dict[str, Any]:
    """exiftool's JSON record for the file behind ``fd``, read as stdin from the start."""
    with child_fd(fd) as child:
        os.lseek(child, 0, os.SEEK_SET)  # exiftool reads stdin from the current offset
        result = run_child(exiftool_args(tags), stdin=child, pass_fds=(), timeout=timeout)
    try:
        records = json.loads(result.stdout)
        record = records[0]
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise ExiftoolError(
            f"exiftool failed (exit {result.returncode}): {stderr_text(result.stderr)}"
        ) from exc
    if not isinstance(record, dict):
        raise ExiftoolError("exiftool printed an unexpected record")
    return record


def _fill_from_exiftool(record: Mapping[str, Any], info: MediaInfo) -> None:
    _exiftool_problems(record, info)
    info.camera = camera(pick(record, "Make"), pick(record, "Model"))
    info.orientation = orientation(pick(record, "Orientation"), info)
    info.width, info.height = _raw_size(record)
    info.time_candidates.extend(_raw_time_candidates(record, info))
    info.gps = plausible_gps(
        finite(pick(record, "GPSLatitude", prefer="Composite")),
        finite(pick(record, "GPSLongitude", prefer="Composite")),
        finite(pick(record, "GPSAltitude", prefer="Composite")),
    )


def _exiftool_problems(record: Mapping[str, Any], info: MediaInfo) -> None:
    """exiftool's own Error and Warning, and content that is not an image at all."""
    error = clean_text(pick(record, "Error"))
    if error:
        info.add_problem("damaged", f"exiftool: {error}")
    warning = clean_text(pick(record, "Warning"))
    if warning and not warning.startswith("[minor]"):
        info.add_problem("unreadable_metadata", f"exiftool: {warning}")
    mime = clean_text(pick(record, "MIMEType")) or ""
    if not error and not mime.startswith("image/"):
        file_type = clean_text(pick(record, "FileType")) or "unknown"
        info.add_problem("damaged", f"not a RAW image (exiftool identifies it as {file_type})")


def _raw_time_candidates(record: Mapping[str, Any], info: MediaInfo) -> list[TimeCandidate]:
    raw = pick(record, "DateTimeOriginal")
    try:
        value = parse_exif_datetime(raw)
    except ValueError:
        info.add_problem("unreadable_metadata", f"raw_exif: unparseable date {raw!r}")
        return []
    if value is None:
        return []
    offset = parse_offset(pick(record, "OffsetTimeOriginal"))
    return [TimeCandidate(value if offset is None else value.replace(tzinfo=offset), "raw_exif")]


def _raw_size(record: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """Composite ImageSize ("W H" with -n) when exiftool worked it out, else ImageWidth/Height."""
    size = clean_text(pick(record, "ImageSize", prefer="Composite"))
    parts = size.replace("x", " ").split() if size else []
    if len(parts) == 2:
        width, height = positive_int(parts[0]), positive_int(parts[1])
        if width and height:
            return width, height
    return positive_int(pick(record, "ImageWidth")), positive_int(pick(record, "ImageHeight"))


def pick(record: Mapping[str, Any], tag: str, *, prefer: str = "EXIF") -> Any:
    """A tag's value from exiftool -G0 output ("Group:Tag" keys), preferring one group."""
    if f"{prefer}:{tag}" in record:
        return record[f"{prefer}:{tag}"]
    for key, value in record.items():
        if key.rpartition(":")[2] == tag:
            return value
    return None
