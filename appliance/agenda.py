"""The agenda: the office's activities, which decide where imported items are filed.

Kept in one small TinyDB state file (it grows with the agenda, not the archive). The kit's
"current activity" lives beside it: at an event the team sets it once and every card that
does not match an agenda window is filed there.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from tinydb import Query

from appliance import storage

SIN_ACTIVIDAD = "sin-actividad"
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,78}[a-z0-9])?$")


class AgendaError(ValueError):
    pass


def slugify(text: str) -> str:
    """ASCII, lower case, hyphens: "Informe Anual — Cabildo" -> "informe-anual-cabildo"."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:80].strip("-")


def check_slug(slug: str) -> str:
    if not _SLUG.match(slug):
        raise AgendaError(
            f"invalid activity slug {slug!r}: use lower-case letters, digits and hyphens "
            "(at most 80)"
        )
    return slug


@dataclass(frozen=True)
class Activity:
    slug: str
    title: str
    start: datetime  # aware
    end: datetime  # aware
    area: str = ""
    place: str = ""

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment <= self.end

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["start"] = self.start.isoformat()
        record["end"] = self.end.isoformat()
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Activity:
        return cls(
            slug=record["slug"],
            title=record["title"],
            start=datetime.fromisoformat(record["start"]),
            end=datetime.fromisoformat(record["end"]),
            area=record.get("area", ""),
            place=record.get("place", ""),
        )


def parse_time(text: str, zone: ZoneInfo) -> datetime:
    """ISO 8601 date-time; without an offset it is local time in the kit's zone."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise AgendaError(
            f"invalid date-time {text!r}: use ISO 8601, e.g. 2026-05-10T09:00"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=zone)


class Agenda:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "agenda.json"
        # (file identity, activities): a long-lived reader (the web UI) parses the file
        # again only when a write has replaced it. Writes rename a new file into place, so
        # the inode changes with every write.
        self._cache: tuple[tuple[int, int, int], list[Activity]] | None = None

    def activities(self) -> list[Activity]:
        try:
            st = os.stat(self.path)
            identity = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            identity = (0, 0, 0)
        cached = self._cache
        if cached is not None and cached[0] == identity:
            return list(cached[1])
        db = storage.snapshot(self.path)
        activities = sorted(
            (Activity.from_record(r) for r in db.table("activities").all()),
            key=lambda a: (a.start, a.slug),
        )
        self._cache = (identity, activities)
        return list(activities)

    def get(self, slug: str) -> Activity | None:
        return next((a for a in self.activities() if a.slug == slug), None)

    def add(self, activity: Activity) -> Activity:
        check_slug(activity.slug)
        if activity.slug == SIN_ACTIVIDAD:
            raise AgendaError(f"{SIN_ACTIVIDAD!r} is reserved for unsorted items")
        if activity.end < activity.start:
            raise AgendaError("the activity ends before it starts")
        with storage.transaction(self.path, self.path.parent / "tmp") as db:
            table = db.table("activities")
            if table.contains(Query().slug == activity.slug):
                raise AgendaError(f"an activity {activity.slug!r} already exists")
            table.insert(activity.to_record())
        return activity

    def update(self, slug: str, **changes: Any) -> Activity:
        """Change an activity's title, area, place, start or end (its slug stays: items and
        folders are named by it). Items already filed stay where they are."""
        allowed = {"title", "area", "place", "start", "end"}
        unknown = set(changes) - allowed
        if unknown:
            raise AgendaError(f"cannot change {', '.join(sorted(unknown))} of an activity")
        with storage.transaction(self.path, self.path.parent / "tmp") as db:
            table = db.table("activities")
            row = table.get(Query().slug == slug)
            if row is None:
                raise AgendaError(f"no activity {slug!r} in the agenda")
            current = Activity.from_record(dict(row))
            updated = Activity(**{**asdict(current), **changes})
            if not updated.title.strip():
                raise AgendaError("an activity needs a title")
            if updated.end < updated.start:
                raise AgendaError("the activity ends before it starts")
            table.update(updated.to_record(), Query().slug == slug)
        return updated

    def remove(self, slug: str) -> None:
        with storage.transaction(self.path, self.path.parent / "tmp") as db:
            if not db.table("activities").remove(Query().slug == slug):
                raise AgendaError(f"no activity {slug!r} in the agenda")
            if self.current() == slug:
                db.table("kit").truncate()
        # The items already filed under it stay where they are; re-filing is explicit.

    def current(self) -> str | None:
        row = storage.snapshot(self.path).table("kit").get(doc_id=1)
        return row.get("current_activity") if row else None

    def set_current(self, slug: str | None) -> None:
        if slug is not None:
            check_slug(slug)
        with storage.transaction(self.path, self.path.parent / "tmp") as db:
            table = db.table("kit")
            table.truncate()
            if slug is not None:
                table.insert({"current_activity": slug})

    def find(self, moment: datetime) -> Activity | None:
        """The activity whose window holds `moment`; the most recently started wins."""
        matches = [a for a in self.activities() if a.contains(moment)]
        return max(matches, key=lambda a: (a.start, a.slug)) if matches else None
