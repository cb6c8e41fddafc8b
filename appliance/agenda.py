"""The agenda: the office's activities, which decide where imported items are filed.

Kept in one small TinyDB state file (it grows with the agenda, not the archive). The kit's
"current activity" lives beside it: at an event the team sets it once and every card that
does not match an agenda window is filed there.

The agenda syncs with headquarters (README "Metadata both ways", sync/merge.py): every add
and change stamps the fields it sets with the box's hybrid logical clock
(`edited[field]["hlc"]`, and `added` for an add), and a removal leaves a tombstone
`{"slug", "removed": stamp}` instead of deleting, so that a replica that still has the
activity learns it is gone. Tombstones are hidden from everything here; adding the slug
again revives it. The current activity is this box's own and does not sync.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from tinydb import Query

from appliance import storage
from sync.hlc import Clock, box_node

log = logging.getLogger(__name__)

SIN_ACTIVIDAD = "sin-actividad"
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,78}[a-z0-9])?$")
_SLUG_MAX = 80


class AgendaError(ValueError):
    """A refused agenda change; the message is English (the CLI and the JSON API show it).
    `code` names the problem for good, with the `values` its message needs, so that the web
    pages can say it in the screen's language (web/i18n.py `agenda.error.<code>`)."""

    def __init__(self, message: str, code: str = "", **values: Any) -> None:
        super().__init__(message)
        self.code = code
        self.values = values


def slugify(text: str) -> str:
    """ASCII, lower case, hyphens: "Informe Anual — Cabildo" -> "informe-anual-cabildo"."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:80].strip("-")


def check_slug(slug: str) -> str:
    if not _SLUG.match(slug):
        raise AgendaError(
            f"invalid activity slug {slug!r}: use lower-case letters, digits and hyphens "
            "(at most 80)", "slug_invalid", slug=slug
        )
    return slug


def slug_candidates(base: str, day: date) -> Iterator[str]:
    """Slugs to try, in order, for an activity whose slug is made from its title: `base`
    itself, then with the start date (a weekly "Sesión de Cabildo" on 27 November 2026 is
    `sesion-de-cabildo-2026-11-27`), then with -2, -3… (two on one day). Each fits the
    80 characters of a slug; `base` must be a valid slug."""
    check_slug(base)
    yield base
    dated = f"-{day.isoformat()}"
    for n in itertools.count(1):
        suffix = dated if n == 1 else f"{dated}-{n}"
        yield base[:_SLUG_MAX - len(suffix)].rstrip("-") + suffix


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
            f"invalid date-time {text!r}: use ISO 8601, e.g. 2026-05-10T09:00",
            "time_invalid", text=text
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=zone)


FIELDS = ("title", "start", "end", "area", "place")


def _removed(record: dict[str, Any]) -> bool:
    """A tombstone: removed, and not added again since (sync.merge.activity_removed)."""
    removed = record.get("removed")
    return isinstance(removed, str) and bool(removed) and str(record.get("added", "")) <= removed


class Agenda:
    """`node`: this box's name for the sync clock (`kit.name`); only writes use the clock."""

    def __init__(self, state_dir: Path, node: str = "kit", *, hlc: Clock | None = None
                 ) -> None:
        self.path = state_dir / "agenda.json"
        self.state_dir = state_dir
        self.node = node
        self._hlc = hlc
        # (file identity, activities): a long-lived reader (the web UI) parses the file
        # again only when a write has replaced it. Writes rename a new file into place, so
        # the inode changes with every write.
        self._cache: tuple[tuple[int, int, int], list[Activity]] | None = None

    @property
    def hlc(self) -> Clock:
        if self._hlc is None:
            self._hlc = Clock(self.state_dir, box_node(self.state_dir, self.node))
        return self._hlc

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
        found = []
        for record in db.table("activities").all():
            if _removed(record):
                continue
            try:
                found.append(Activity.from_record(record))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("agenda: activity %r unreadable (%s); skipped",
                            record.get("slug"), exc)
        activities = sorted(found, key=lambda a: (a.start, a.slug))
        self._cache = (identity, activities)
        return list(activities)

    def get(self, slug: str) -> Activity | None:
        return next((a for a in self.activities() if a.slug == slug), None)

    def add(self, activity: Activity) -> Activity:
        check_slug(activity.slug)
        if activity.slug == SIN_ACTIVIDAD:
            raise AgendaError(f"{SIN_ACTIVIDAD!r} is reserved for unsorted items",
                              "slug_reserved", slug=SIN_ACTIVIDAD)
        if activity.end < activity.start:
            raise AgendaError("the activity ends before it starts", "ends_before_start")
        with storage.transaction(self.path, self.path.parent / "tmp") as db:
            table = db.table("activities")
            row = table.get(Query().slug == activity.slug)
            if row is not None and not _removed(row):
                raise AgendaError(f"an activity {activity.slug!r} already exists", "exists",
                                  slug=activity.slug)
            stamp = self.hlc.now()
            record = {**activity.to_record(), "edited": {f: {"hlc": stamp} for f in FIELDS},
                      "added": stamp}
            if row is not None:
                record["removed"] = row["removed"]  # added again after its removal
            _put(table, record)
        return activity

    def update(self, slug: str, **changes: Any) -> Activity:
        """Change an activity's title, area, place, start or end (its slug stays: items and
        folders are named by it). Items already filed stay where they are."""
        allowed = {"title", "area", "place", "start", "end"}
        unknown = set(changes) - allowed
        if unknown:
            raise AgendaError(f"cannot change {', '.join(sorted(unknown))} of an activity",
                              "cannot_change", fields=sorted(unknown))
        with storage.transaction(self.path, self.path.parent / "tmp") as db:
            table = db.table("activities")
            row = table.get(Query().slug == slug)
            if row is None or _removed(row):
                raise AgendaError(f"no activity {slug!r} in the agenda", "no_activity",
                                  slug=slug)
            current = Activity.from_record(dict(row))
            updated = Activity(**{**asdict(current), **changes})
            if not updated.title.strip():
                raise AgendaError("an activity needs a title", "no_title")
            if updated.end < updated.start:
                raise AgendaError("the activity ends before it starts", "ends_before_start")
            values = updated.to_record()
            diff = [f for f in FIELDS if values[f] != row.get(f)]
            if diff:
                stamp = self.hlc.now()
                edited = dict(row.get("edited") or {})
                edited.update({f: {"hlc": stamp} for f in diff})
                _put(table, {**dict(row), **values, "edited": edited})
        return updated

    def remove(self, slug: str) -> None:
        with storage.transaction(self.path, self.path.parent / "tmp") as db:
            table = db.table("activities")
            row = table.get(Query().slug == slug)
            if row is None or _removed(row):
                raise AgendaError(f"no activity {slug!r} in the agenda", "no_activity",
                                  slug=slug)
            # Every stamp here is older than a new one, so nothing of it outlives the removal.
            _put(table, {"slug": slug, "removed": self.hlc.now()})
            if self.current() == slug:
                db.table("kit").truncate()
        # The items already filed under it stay where they are; re-filing is explicit.

    # -- sync ---------------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        """Every activity record as stored, tombstones included (what sync sends)."""
        return [dict(r) for r in storage.snapshot(self.path).table("activities").all()]

    def merge(self, remote_records: Any, *, clock: Clock) -> list[str]:
        """Merge activity records from another replica (sync.merge.merge_activity) in one
        write; the slugs whose record changed. Malformed records and stamps the clock
        refuses are logged and skipped; the others' stamps are observed first. A current
        activity removed by the merge stops being current."""
        from sync.merge import accepted, check_activity, merge_activity, stamps_of

        valid = list(accepted(remote_records, check_activity, clock, "activity"))
        stamps = [s for r in valid for s in stamps_of(r)]
        if stamps:
            clock.observe(max(stamps))
        if not valid:
            return []
        changed: list[str] = []
        with storage.transaction(self.path, self.path.parent / "tmp") as db:
            table = db.table("activities")
            by_slug = {r["slug"]: dict(r) for r in table.all()}
            for record in valid:
                local = by_slug.get(record["slug"])
                merged = merge_activity(local, record)
                if merged != local:
                    _put(table, merged)
                    by_slug[merged["slug"]] = merged
                    if merged["slug"] not in changed:
                        changed.append(merged["slug"])
            kit = db.table("kit").get(doc_id=1)
            current = kit.get("current_activity") if kit else None
            if current in by_slug and _removed(by_slug[current]):
                db.table("kit").truncate()
        return changed

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


def _put(table: Any, record: dict[str, Any]) -> None:
    """Replace the activity's whole record (an update would keep keys the new one drops)."""
    table.remove(Query().slug == record["slug"])
    table.insert(record)
