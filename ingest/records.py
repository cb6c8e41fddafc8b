"""One catalog record per archived file, built the same way by an import and by a repair."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from appliance import boxclock, fields
from appliance.config import Config
from ingest import metadata


@dataclass
class Description:
    info: metadata.MediaInfo
    captured_at: datetime
    date_source: str
    date_problems: list[dict[str, str]]


# How far past the box's clock a capture time is still believed while that clock is not
# known to be right (appliance.boxclock): a box switched off for months boots that far behind.
UNTRUSTED_CLOCK_TOLERANCE = timedelta(days=366)


def describe(fd: int, kind: str, config: Config, now: datetime, *,
             file_mtime: float | None = None, clock_trusted: bool | None = None,
             floor: datetime | None = None) -> Description:
    """Read an open file's metadata and settle its capture time.

    `file_mtime` is the time the card gave the file (the fallback capture time); by default
    the open file's own. `clock_trusted`: whether `now` may judge a capture time as in the
    future (by default `kit.clock` decides, boxclock.trusted). When it may not, `now` is only
    a lower bound of the true time, raised to `floor` (the latest time the box is known to
    have seen, sync.hlc.known_time) when that is later.
    """
    info = metadata.probe(fd, kind, timeout=config.ingest.probe_timeout_s)
    tolerance = timedelta(hours=config.ingest.future_tolerance_hours)
    if clock_trusted is None:
        clock_trusted = boxclock.trusted(config.kit.clock)
    if not clock_trusted:
        tolerance = max(tolerance, UNTRUSTED_CLOCK_TOLERANCE)
        if floor is not None and floor > now:
            now = floor
    captured, source, problems = metadata.resolve_capture_time(
        info,
        os.fstat(fd).st_mtime if file_mtime is None else file_mtime,
        tz=config.zone,
        now=now,
        earliest_year=config.ingest.earliest_year,
        future_tolerance=tolerance,
    )
    return Description(info, captured, source, problems)


def make_record(
    *,
    sha256: str,
    size: int,
    kind: str,
    original_name: str,
    source_path: str,
    archive_path: str,
    folder: str,
    activity: str,
    filed_by: str,
    description: Description,
    imported_at: datetime,
    import_id: str,
) -> dict[str, Any]:
    info = description.info
    return {
        "sha256": sha256,
        "size": size,
        "kind": kind,
        "original_name": original_name,
        "source_path": source_path,
        "archive_path": archive_path,
        "folder": folder,
        "activity": activity,
        "filed_by": filed_by,
        "captured_at": description.captured_at.isoformat(),
        "date_source": description.date_source,
        "camera": info.camera,
        "gps": info.gps,
        "orientation": info.orientation,
        "rotation": info.rotation,
        "width": info.width,
        "height": info.height,
        "duration": info.duration,
        "problems": [*info.problems, *description.date_problems],
        "imported_at": imported_at.isoformat(),
        "import_id": import_id,
        **fields.defaults(),
    }
