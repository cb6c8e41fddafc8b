"""Where an item goes in the archive (design decision 5), as a pure function.

An item is filed into the agenda activity whose window holds its capture time, else into
the activity the operator named for this import, else into the kit's current activity, else
into the day's `sin-actividad` folder. An activity's folder is dated by the activity's first
day, so a three-day fair stays one folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from appliance.agenda import SIN_ACTIVIDAD, Activity


@dataclass(frozen=True)
class Filing:
    folder_key: str  # "YYYY/MM/YYYY-MM-DD_slug", relative to archive/
    activity: str  # the slug, or "sin-actividad"
    reason: str  # "agenda", "requested", "current", "unsorted"


def folder_key(day: datetime, slug: str) -> str:
    return f"{day:%Y/%m/%Y-%m-%d}_{slug}"


def choose(
    captured_at: datetime,
    *,
    agenda: list[Activity],
    zone: ZoneInfo,
    requested: str | None = None,
    current: str | None = None,
) -> Filing:
    matches = [a for a in agenda if a.contains(captured_at)]
    if matches:
        activity = max(matches, key=lambda a: (a.start, a.slug))
        return Filing(folder_key(activity.start.astimezone(zone), activity.slug),
                      activity.slug, "agenda")
    local = captured_at.astimezone(zone)
    for slug, reason in ((requested, "requested"), (current, "current")):
        if slug and slug != SIN_ACTIVIDAD:
            known = next((a for a in agenda if a.slug == slug), None)
            day = known.start.astimezone(zone) if known else local
            return Filing(folder_key(day, slug), slug, reason)
    return Filing(folder_key(local, SIN_ACTIVIDAD), SIN_ACTIVIDAD, "unsorted")
