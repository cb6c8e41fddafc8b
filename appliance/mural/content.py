"""What goes on the printed mural: the month's activities by area, each with its best
approved photos, read from the query index and the agenda (no Flask: the CLI and the web UI
both call this).

Activities are the month's archive folders (an activity's folder is dated by its first day,
so an activity belongs to the month it starts in); the items of no activity make one
"Sin actividad" block per day. Only photos and RAWs approved by Dirección are printed (not
those the import or the worker found damaged: their previews are placeholders); an activity
without one is left off. The best come first: rating (5 stars first), then picked
before unmarked before rejected, then capture time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from babel import dates as babel_dates
from PIL import Image

from appliance.agenda import SIN_ACTIVIDAD, Agenda
from appliance.config import Config
from appliance.datadir import DataDir
from appliance.mural.text import clean
from appliance.query import MAX_LIMIT, ItemIndex, ItemQuery
from ingest.derive import plan

PHOTO_KINDS = ("photo", "raw")
LOCALE = "es_MX"  # the mural hangs in a Mexican town hall: always in Spanish
NO_AREA = "Otras actividades"
UNSORTED_TITLE = "Sin actividad"
# Photos are laid out with their own shape, within these bounds (a panorama or a very tall
# crop is trimmed to them when drawn).
MIN_ASPECT, MAX_ASPECT = 0.6, 2.4
_PICK_ORDER = {"picked": 0, None: 1, "rejected": 2}


class NoApprovedPhotos(LookupError):
    """The month has no approved photo: there is nothing to print."""


@dataclass(frozen=True)
class MuralPhoto:
    sha256: str
    kind: str
    caption: str  # clean, one line
    credit: str
    aspect: float  # width / height as shown, within MIN_ASPECT..MAX_ASPECT
    rating: int
    pick: str | None
    captured_at: str
    archive_path: str
    original_name: str

    def as_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "kind": self.kind, "caption": self.caption,
                "credit": self.credit, "aspect": round(self.aspect, 4),
                "rating": self.rating, "pick": self.pick, "captured_at": self.captured_at,
                "archive_path": self.archive_path, "original_name": self.original_name}


@dataclass(frozen=True)
class MuralActivity:
    folder: str  # the archive folder key "YYYY/MM/YYYY-MM-DD_slug"
    slug: str
    title: str
    area: str
    place: str
    when: str  # the date and time, in Spanish
    photos: tuple[MuralPhoto, ...]  # every approved photo, best first

    def as_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "slug": self.slug, "title": self.title,
                "area": self.area, "place": self.place, "when": self.when,
                "photos": [p.as_dict() for p in self.photos]}


@dataclass(frozen=True)
class MuralContent:
    month: str
    month_label: str  # "Noviembre de 2026"
    institution: str
    title: str
    # (area as printed, its activities by start), areas by name, "Otras actividades" last
    areas: tuple[tuple[str, tuple[MuralActivity, ...]], ...]
    credits: tuple[str, ...] = field(default=())

    @property
    def activities(self) -> list[MuralActivity]:
        return [activity for _, activities in self.areas for activity in activities]

    @property
    def photos(self) -> list[MuralPhoto]:
        return [photo for activity in self.activities for photo in activity.photos]

    def as_dict(self) -> dict[str, Any]:
        return {"month": self.month, "month_label": self.month_label,
                "institution": self.institution, "title": self.title,
                "areas": [{"area": area, "activities": [a.as_dict() for a in activities]}
                          for area, activities in self.areas],
                "credits": list(self.credits)}


def month_label(month: str) -> str:
    """"2026-11" -> "Noviembre de 2026" (Babel, Spanish)."""
    first = date(int(month[:4]), int(month[5:7]), 1)
    text = babel_dates.format_date(first, "LLLL 'de' y", locale=LOCALE)
    return text[:1].upper() + text[1:]


def rank_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """Best first: rating, then picked, unmarked, rejected, then capture time."""
    rating = record.get("rating")
    rating = rating if isinstance(rating, int) and not isinstance(rating, bool) else 0
    return (-rating, _PICK_ORDER.get(record.get("pick"), 1),
            str(record.get("captured_at") or ""), str(record.get("sha256") or ""))


def approved_photos(index: ItemIndex, month: str) -> list[dict[str, Any]]:
    """Every approved photo and RAW of the month's folders (records as the index holds them)."""
    found: list[dict[str, Any]] = []
    for kind in PHOTO_KINDS:
        offset = 0
        while True:
            page, total = index.search(ItemQuery(month=month, kind=kind, approved=True,
                                                 order="captured", limit=MAX_LIMIT,
                                                 offset=offset))
            found.extend(page)
            offset += len(page)
            if not page or offset >= total:
                break
    return found


def gather(config: Config, data: DataDir, index: ItemIndex, agenda: Agenda,
           month: str) -> MuralContent:
    """The mural's content for `month` ("YYYY-MM"). Raises NoApprovedPhotos when the month
    has no approved photo."""
    records = [r for r in approved_photos(index, month) if not plan.has_no_picture(r)]
    if not records:
        raise NoApprovedPhotos(
            f"no approved photos in {month}: Dirección approves the photos that may be "
            "printed (item page, or `acopio items set SHA256 --approve --as USER`)")
    folders = {f["folder"]: f for f in index.folders(month)}
    by_folder: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_folder.setdefault(str(record.get("folder") or ""), []).append(record)
    zone = config.zone
    activities = []
    for folder_key, members in by_folder.items():
        members.sort(key=rank_key)
        folder = folders.get(folder_key, {})
        slug = str(members[0].get("activity") or folder.get("activity") or SIN_ACTIVIDAD)
        found = agenda.get(slug) if slug != SIN_ACTIVIDAD else None
        day = _folder_day(folder_key)
        if found is not None:
            title, area, place = found.title, found.area, found.place
            when = when_text(found.start, found.end, zone)
            start = found.start.astimezone(zone).isoformat()
        else:
            title = folder.get("title") or UNSORTED_TITLE
            area = folder.get("area") or ""
            place = ""
            when = _day_text(day) if day else ""
            start = day.isoformat() if day else ""
        activities.append((clean(area) or NO_AREA, start, folder_key, MuralActivity(
            folder=folder_key, slug=slug, title=clean(title) or UNSORTED_TITLE,
            area=clean(area), place=clean(place), when=when,
            photos=tuple(_photo(data, record) for record in members))))
    areas: dict[str, list[MuralActivity]] = {}
    for area, _, _, activity in sorted(
            activities, key=lambda a: (a[0] == NO_AREA, a[0].casefold(), a[1], a[2])):
        areas.setdefault(area, []).append(activity)
    credits = sorted({clean(r.get("credit")) or _default_credit(config) for r in records} - {""},
                     key=str.casefold)
    return MuralContent(
        month=month, month_label=month_label(month),
        institution=clean(config.mural.institution), title=clean(config.mural.title),
        areas=tuple((area, tuple(items)) for area, items in areas.items()),
        credits=tuple(credits))


def _default_credit(config: Config) -> str:
    presets = config.editorial.credit_presets
    return clean(presets[0]) if presets else ""


def _photo(data: DataDir, record: dict[str, Any]) -> MuralPhoto:
    rating = record.get("rating")
    return MuralPhoto(
        sha256=str(record["sha256"]), kind=str(record.get("kind") or "photo"),
        caption=clean(record.get("caption")), credit=clean(record.get("credit")),
        aspect=shown_aspect(data, record),
        rating=rating if isinstance(rating, int) and not isinstance(rating, bool) else 0,
        pick=record.get("pick") if record.get("pick") in ("picked", "rejected") else None,
        captured_at=str(record.get("captured_at") or ""),
        archive_path=str(record.get("archive_path") or ""),
        original_name=str(record.get("original_name") or ""))


def shown_aspect(data: DataDir, record: dict[str, Any]) -> float:
    """The photo's width / height as shown: the preview's (upright already), else the
    catalog's size turned by its EXIF orientation, else 3:2; kept within the bounds."""
    aspect = None
    preview = plan.path(data, str(record["sha256"]), "preview")
    try:
        with Image.open(preview) as opened:  # reads the header only
            width, height = opened.size
            aspect = width / height
    except (OSError, ValueError, ZeroDivisionError, Image.DecompressionBombError):
        width, height = record.get("width"), record.get("height")
        if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
            if record.get("orientation") in (5, 6, 7, 8):
                width, height = height, width
            aspect = width / height
    if aspect is None or not math.isfinite(aspect):
        aspect = 1.5
    return min(MAX_ASPECT, max(MIN_ASPECT, aspect))


def _folder_day(folder_key: str) -> date | None:
    name = folder_key.rsplit("/", 1)[-1]
    try:
        return date.fromisoformat(name[:10])
    except ValueError:
        return None


def _day_text(day: date) -> str:
    return babel_dates.format_date(day, "EEEE d 'de' MMMM 'de' y", locale=LOCALE)


def when_text(start: datetime, end: datetime, zone: ZoneInfo) -> str:
    """"martes 10 de noviembre de 2026, 9:00–12:00"; several days: "10 – 12 de noviembre"."""
    start, end = start.astimezone(zone), end.astimezone(zone)
    hours = (f"{babel_dates.format_time(start, 'H:mm', locale=LOCALE)}–"
             f"{babel_dates.format_time(end, 'H:mm', locale=LOCALE)}")
    if start.date() == end.date():
        return f"{_day_text(start.date())}, {hours}"
    first = babel_dates.format_date(start.date(), "d 'de' MMMM", locale=LOCALE)
    last = babel_dates.format_date(end.date(), "d 'de' MMMM 'de' y", locale=LOCALE)
    return f"{first} – {last}"
