"""Capture times: parsing the dates files carry, and choosing the one to file an item under.

Why (design decision 5): an item is filed by the day it was taken, and a wrong date files it
where nobody will look. Embedded times come first (EXIF with its offset, then container
metadata), then the card's file time, then the import time; dates that cannot be true (before
1990, or in the future) are flagged rather than trusted. Parsing is strict: a date that does
not parse is reported, never guessed.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from ingest.metadata.info import MediaInfo, TimeCandidate
from ingest.metadata.values import clean_text

_EXIF_DATE_RE = re.compile(
    r"(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6})\d*)?"
)
_OFFSET_RE = re.compile(r"([+-])(\d{2}):?(\d{2})")


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_exif_datetime(raw: object) -> datetime | None:
    """An EXIF "YYYY:MM:DD HH:MM:SS" as a naive datetime.

    None when absent or explicitly unknown (blank, or all zeros as cameras with an unset clock
    write); ValueError for anything else that is not a date.
    """
    text = clean_text(raw)
    if text is None or not text.strip(" :0-T"):
        return None
    match = _EXIF_DATE_RE.fullmatch(text)
    if match is None:
        raise ValueError(text)
    *parts, fraction = match.groups()
    micro = int((fraction or "0").ljust(6, "0"))
    return datetime(*map(int, parts), micro)  # ValueError for month 13 and such


def subsec_micro(raw: object) -> int:
    """EXIF SubSecTime digits ("302" = .302 s) as microseconds; 0 when absent or garbage."""
    text = clean_text(raw)
    if text is None or not text.isdigit():
        return 0
    return int(text[:6].ljust(6, "0"))


def parse_offset(raw: object) -> timezone | None:
    """An EXIF OffsetTime ("+03:00") as a timezone; None when absent or nonsense."""
    text = clean_text(raw)
    match = _OFFSET_RE.fullmatch(text) if text else None
    if match is None:
        return None
    sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3))
    if hours > 14 or minutes >= 60:
        return None
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if sign == "-" else delta)


def parse_iso_datetime(raw: object) -> datetime | None:
    """ISO 8601 from container tags ("...Z" is UTC, "+0300" an offset); ValueError if garbage."""
    text = clean_text(raw)
    if text is None:
        return None
    value = datetime.fromisoformat(text)
    if value.tzinfo is not None and value.utcoffset() == timedelta(0):
        value = value.astimezone(UTC)
    return value


# ---------------------------------------------------------------------------------------------
# Capture time policy


def resolve_capture_time(
    info: MediaInfo,
    file_mtime: float,
    *,
    tz: ZoneInfo,
    now: datetime,
    earliest_year: int = 1990,
    future_tolerance: timedelta = timedelta(days=1),
) -> tuple[datetime, str, list[dict]]:
    """Pick the capture time: first plausible candidate; else the file time (source
    "file_mtime", made aware in tz); else `now` (source "import_time").

    Implausible candidates (before earliest_year, or later than now + future_tolerance) are NOT
    used and each adds a problem {"code": "implausible_date", "detail": "<source>: <value>"}; an
    implausible file time is flagged the same way. Naive candidates are interpreted in `tz`.
    Always returns an AWARE datetime, keeping the EXIF offset when known, else tz's offset for
    that instant. A container time stored in UTC is an instant, not the local offset of the
    place it was taken, so it is shown in `tz`.
    """
    problems: list[dict] = []
    now_local = _in_zone(now, tz)
    earliest = datetime(earliest_year, 1, 1, tzinfo=tz)
    latest = now_local + future_tolerance
    for candidate in info.time_candidates:
        value = _localize(candidate, tz)
        if value is not None and earliest <= value <= latest:
            return value, candidate.source, problems
        problems.append(_implausible(candidate.source, candidate.value.isoformat()))
    mtime = _from_timestamp(file_mtime, tz)
    if mtime is not None and earliest <= mtime <= latest:
        return mtime, "file_mtime", problems
    problems.append(_implausible("file_mtime", mtime.isoformat() if mtime else repr(file_mtime)))
    return now_local, "import_time", problems


def _localize(candidate: TimeCandidate, tz: ZoneInfo) -> datetime | None:
    """The candidate as an aware datetime; None when it cannot be shown in tz (year 1 or 9999)."""
    value = candidate.value
    if value.tzinfo is None:
        return value.replace(tzinfo=tz)
    if candidate.source == "media_creation_time" and value.utcoffset() == timedelta(0):
        try:
            return value.astimezone(tz)
        except OverflowError:
            return None
    return value


def _in_zone(value: datetime, tz: ZoneInfo) -> datetime:
    return value.replace(tzinfo=tz) if value.tzinfo is None else value.astimezone(tz)


def _from_timestamp(timestamp: float, tz: ZoneInfo) -> datetime | None:
    try:
        return datetime.fromtimestamp(timestamp, tz)
    except (OverflowError, ValueError, OSError):  # NaN, or beyond what datetime can hold
        return None


def _implausible(source: str, value: str) -> dict:
    return {"code": "implausible_date", "detail": f"{source}: {value}"}
