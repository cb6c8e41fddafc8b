"""One catalog record per archived file, built the same way by an import and by a repair."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from appliance import fields
from appliance.config import Config
from ingest import metadata


@dataclass
class Description:
    info: metadata.MediaInfo
    captured_at: datetime
    date_source: str
    date_problems: list[dict[str, str]]


def describe(fd: int, kind: str, config: Config, now: datetime, *,
             file_mtime: float | None = None) -> Description:
    """Read an open file's metadata and settle its capture time.

    `file_mtime` is the time the card gave the file (the fallback capture time); by default
    the open file's own.
    """
    info = metadata.probe(fd, kind, timeout=config.ingest.probe_timeout_s)
    captured, source, problems = metadata.resolve_capture_time(
        info,
        os.fstat(fd).st_mtime if file_mtime is None else file_mtime,
        tz=config.zone,
        now=now,
        earliest_year=config.ingest.earliest_year,
        future_tolerance=timedelta(hours=config.ingest.future_tolerance_hours),
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
