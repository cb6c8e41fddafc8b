"""What a shard's records become in the index (item rows, their FTS text, a folder summary),
and writing one folder's rows.

Why apart: this is the only place that reads catalog records field by field, and it must
take whatever a shard holds (a record written by an older ingest, an odd camera, a file name
that is not valid UTF-8, a time that does not parse) without failing: a refresh that stopped
at one odd record would leave the web UI without the rest. refresh.py decides which folders
to write, and when; this module knows what goes into the tables for one.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from appliance.query.schema import PICKS
from appliance.query.text import item_facets, tokens

# Sort key of a time that cannot be parsed (never written by ingest): before everything.
NO_TIME = -(2**62)
# How many of Row's fields are the items table's columns (after its id).
COLUMNS = 16
_PICK_NAMES = {code: name for name, code in PICKS.items()}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class Row(NamedTuple):
    """One item as the items table holds it (the first COLUMNS fields, in column order),
    its record as stored, and the raw times the folder summary shows."""

    sha256: str
    folder: str
    month: str
    activity: str
    kind: str
    camera: str | None
    size: int
    problems: int
    archive_path: str
    captured_ts: int
    captured_date: str | None
    imported_ts: int
    pick: int  # schema.PICKS
    rating: int
    approved: int
    approved_ts: int
    record: str
    captured_at: Any
    imported_at: Any


def replace_folder(conn: sqlite3.Connection, key: str, records: list[dict[str, Any]],
                   titles: dict[str, str], zone: ZoneInfo, next_id: int, *,
                   has_rows: bool) -> int:
    """Bring one folder's rows to `records` (inside the caller's transaction); the next
    free id. Rows whose record is unchanged stay: a shard that grows by one import batch
    costs that batch, not the whole event again."""
    rows, texts = item_rows(key, records, titles, zone)
    kept: dict[tuple[str, str], list[int]] = {}
    if has_rows:
        for row_id, sha256, record in conn.execute(
                "SELECT i.id, i.sha256, r.record FROM items i JOIN records r ON r.id = i.id"
                " WHERE i.folder = ?", (key,)):
            kept.setdefault((sha256, record), []).append(row_id)
    new: list[tuple[int, Row, tuple[str, str, str]]] = []
    for row, text in zip(rows, texts, strict=True):
        same = kept.get((row.sha256, row.record))
        if same:
            same.pop()
        else:
            new.append((next_id, row, text))
            next_id += 1
    stale = [(row_id,) for ids in kept.values() for row_id in ids]
    conn.executemany("DELETE FROM fts WHERE rowid = ?", stale)
    conn.executemany("DELETE FROM records WHERE id = ?", stale)
    conn.executemany("DELETE FROM items WHERE id = ?", stale)
    conn.executemany(
        f"INSERT INTO items (id, {', '.join(Row._fields[:COLUMNS])})"
        f" VALUES ({', '.join('?' * (COLUMNS + 1))})",
        [(i, *row[:COLUMNS]) for i, row, _ in new])
    conn.executemany("INSERT INTO records (id, record) VALUES (?, ?)",
                     [(i, row.record) for i, row, _ in new])
    conn.executemany("INSERT INTO fts (rowid, body, title, facets) VALUES (?, ?, ?, ?)",
                     [(i, *text) for i, _, text in new])
    _delete_summary(conn, key)
    _write_summary(conn, key, summary(rows))
    return next_id


def update_rows(conn: sqlite3.Connection, key: str, records: list[dict[str, Any]],
                titles: dict[str, str], zone: ZoneInfo) -> bool:
    """Rewrite the rows of some records of a folder whose other records did not change (an
    edit): their items, records and FTS rows in place, and the folder's marks by the
    difference. Returns False, having written nothing, when that cannot be done: a record
    without exactly one row in the folder (new, or odd), or a change to what the folder's
    summary shows besides its marks (kind, size, camera, the times, the archive path). The
    caller then replaces the folder's rows (replace_folder) instead."""
    new_rows, texts = item_rows(key, records, titles, zone)
    if len(new_rows) != len(records) or len({r.sha256 for r in new_rows}) != len(new_rows):
        return False
    old: dict[str, tuple[Any, ...]] = {}
    for start in range(0, len(new_rows), _CHUNK):
        chunk = [row.sha256 for row in new_rows[start:start + _CHUNK]]
        for found in conn.execute(
                f"SELECT i.id, {', '.join('i.' + c for c in Row._fields[:COLUMNS])},"
                " json_extract(r.record, '$.captured_at'),"
                " json_extract(r.record, '$.imported_at')"
                " FROM items i JOIN records r ON r.id = i.id"
                f" WHERE i.sha256 IN ({', '.join('?' * len(chunk))}) AND i.folder = ?",
                (*chunk, key)):
            if found[1] in old:
                return False  # two rows of one item: let replace_folder sort it out
            old[found[1]] = found
    delta: dict[str, int] = {}
    changed_columns, fts = [], []
    for row, text in zip(new_rows, texts, strict=True):
        was = old.get(row.sha256)
        if was is None:
            return False
        row_id, columns = was[0], was[1:COLUMNS + 1]
        before = Row(*columns, record="", captured_at=was[-2], imported_at=was[-1])
        if _summary_shape(before) != _summary_shape(row):
            return False
        if columns != tuple(row[:COLUMNS]):
            changed_columns.append((*(getattr(row, c) for c in _EDITABLE_COLUMNS), row_id))
            for mark in marks(before):
                delta[mark] = delta.get(mark, 0) - 1
            for mark in marks(row):
                delta[mark] = delta.get(mark, 0) + 1
        fts.append((*text, row_id))
    records_text = [(row.record, old[row.sha256][0]) for row in new_rows]
    conn.executemany(
        f"UPDATE items SET {', '.join(c + ' = ?' for c in _EDITABLE_COLUMNS)} WHERE id = ?",
        changed_columns)
    conn.executemany("UPDATE records SET record = ? WHERE id = ?", records_text)
    conn.executemany("UPDATE fts SET body = ?, title = ?, facets = ? WHERE rowid = ?", fts)
    moved = [(key, mark, n) for mark, n in delta.items() if n]
    if moved:
        conn.executemany(
            "INSERT INTO folder_marks VALUES (?, ?, ?) ON CONFLICT (mark, folder)"
            " DO UPDATE SET count = count + excluded.count", moved)
        conn.execute("DELETE FROM folder_marks WHERE folder = ? AND count <= 0", (key,))
    return True


# The items columns an edit may change without touching the folder's summary (besides its
# marks); update_rows falls back to replace_folder when any other one changes.
_EDITABLE_COLUMNS = ("activity", "problems", "pick", "rating", "approved", "approved_ts")
_CHUNK = 500  # sha256s per IN (...) list


def _summary_shape(row: Row) -> tuple[Any, ...]:
    """What the folder summary takes from a row, besides its marks' editorial part."""
    return (row.kind, row.size, row.camera, row.captured_ts, row.captured_date,
            row.imported_ts, row.archive_path, _storable_or_none(row.captured_at),
            _storable_or_none(row.imported_at), row.month)


def delete_folder(conn: sqlite3.Connection, key: str) -> None:
    conn.execute("DELETE FROM fts WHERE rowid IN (SELECT id FROM items WHERE folder = ?)",
                 (key,))
    conn.execute("DELETE FROM records WHERE id IN (SELECT id FROM items WHERE folder = ?)",
                 (key,))
    conn.execute("DELETE FROM items WHERE folder = ?", (key,))
    _delete_summary(conn, key)


def _write_summary(conn: sqlite3.Connection, key: str, found: dict[str, Any]) -> None:
    if not found["count"]:
        return
    conn.execute(
        "INSERT INTO folders VALUES (?, ?, ?, ?, ?, ?, ?)",
        (key, month_of(key), slug_of(key), found["count"],
         _storable_or_none(found["first_captured"]),
         _storable_or_none(found["last_imported"]), found["cover"]))
    conn.executemany("INSERT INTO folder_kinds VALUES (?, ?, ?, ?)",
                     [(key, kind, n, b) for kind, (n, b) in found["kinds"].items()])
    conn.executemany("INSERT INTO folder_cameras VALUES (?, ?)",
                     [(key, camera) for camera in found["cameras"]])
    conn.executemany("INSERT INTO folder_marks VALUES (?, ?, ?)",
                     [(key, mark, n) for mark, n in found["marks"].items()])


def _delete_summary(conn: sqlite3.Connection, key: str) -> None:
    conn.execute("DELETE FROM folders WHERE folder = ?", (key,))
    conn.execute("DELETE FROM folder_kinds WHERE folder = ?", (key,))
    conn.execute("DELETE FROM folder_cameras WHERE folder = ?", (key,))
    conn.execute("DELETE FROM folder_marks WHERE folder = ?", (key,))


def item_rows(key: str, records: list[dict[str, Any]], titles: dict[str, str],
              zone: ZoneInfo) -> tuple[list[Row], list[tuple[str, str, str]]]:
    """The rows of a shard's records and their FTS columns (body, agenda title, facets);
    `titles` are the agenda's, by activity slug."""
    month = month_of(key)
    rows, texts = [], []
    folded_titles: dict[str, str] = {}
    for record in records:
        if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
            continue
        activity = activity_of(key, record)
        camera = camera_name(record.get("camera"))
        captured_ts, captured_date = timestamp(record.get("captured_at"), zone)
        imported_ts, _ = timestamp(record.get("imported_at"), zone)
        problems = record.get("problems")
        size = record.get("size")
        pick = record.get("pick")
        pick = pick if pick in ("picked", "rejected") else "none"
        rating = record.get("rating")
        if isinstance(rating, bool) or not isinstance(rating, int) or not 0 <= rating <= 5:
            rating = 0
        approved = record.get("approved") is True
        row = Row(
            storable(record["sha256"]), key, month, activity,
            storable(record.get("kind") or "other"), storable(camera) if camera else None,
            size if isinstance(size, int) and not isinstance(size, bool) else 0,
            len(problems) if isinstance(problems, list) else 0,
            storable(record.get("archive_path")), captured_ts, captured_date, imported_ts,
            PICKS[pick], rating, int(approved), timestamp(record.get("approved_at"), zone)[0],
            # as the shard file holds it (storage.dump_json), whether read from it or not
            json.dumps(record, ensure_ascii=True, separators=(",", ":"), sort_keys=True),
            record.get("captured_at"), record.get("imported_at"),
        )
        rows.append(row)
        parts = [record.get(field) for field in ("caption", "credit", "place")]
        parts += [activity, record.get("original_name"), camera]
        for field in ("tags", "people"):
            values = record.get(field)
            if isinstance(values, list):
                parts.extend(values)
        body = " ".join(" ".join(tokens(p)) for p in parts if isinstance(p, str))
        if activity not in folded_titles:
            folded_titles[activity] = " ".join(tokens(titles.get(activity, "")))
        texts.append((body, folded_titles[activity],
                      item_facets(row.kind, row.problems, row.camera, pick, rating,
                                  approved)))
    return rows, texts


def activity_of(key: str, record: dict[str, Any]) -> str:
    """A record's activity slug as the items table holds it."""
    return storable(record.get("activity") or slug_of(key))


def summary(rows: list[Row]) -> dict[str, Any]:
    """What the archive pages show of a folder, worked out once per shard read."""
    kinds: dict[str, list[int]] = {}
    found: dict[str, int] = {}
    for row in rows:
        entry = kinds.setdefault(row.kind, [0, 0])
        entry[0] += 1
        entry[1] += row.size
        for mark in marks(row):
            found[mark] = found.get(mark, 0) + 1

    def in_order(r: Row) -> tuple:
        return r.captured_ts, r.archive_path, r.sha256

    first = min(rows, key=in_order, default=None)
    last = max(rows, key=lambda r: (r.imported_ts, r.captured_ts), default=None)
    rank = {"photo": 0, "video": 1}  # the cover: the first photo, else video, else any
    cover = min(rows, key=lambda r: (rank.get(r.kind, 2), *in_order(r)), default=None)
    return {
        "count": len(rows), "kinds": kinds, "marks": found,
        "cameras": {row.camera for row in rows if row.camera},
        "first_captured": first.captured_at if first else None,
        "last_imported": last.imported_at if last else None,
        "cover": cover.sha256 if cover else None,
    }


def marks(row: Row) -> list[str]:
    """The folder_marks an item counts in: its kind and camera, its status if it has
    problems, its pick if any, its approval if approved, and "rating:k" for each k from 1 to
    its rating. ("status:ok", "pick:none" and "approved:no" are the rest of the folder.)"""
    found = [f"kind:{row.kind}"]
    if row.camera:
        found.append(f"camera:{row.camera}")
    if row.problems:
        found.append("status:problems")
    if row.pick:
        found.append(f"pick:{_PICK_NAMES[row.pick]}")
    if row.approved:
        found.append("approved:yes")
    found += [f"rating:{k}" for k in range(1, row.rating + 1)]
    return found


def camera_name(camera: Any) -> str | None:
    """"Make Model" from a record's camera; a model that repeats the make is not doubled."""
    if not isinstance(camera, dict):
        return None
    make = camera.get("make") if isinstance(camera.get("make"), str) else ""
    model = camera.get("model") if isinstance(camera.get("model"), str) else ""
    make, model = make.strip(), model.strip()
    if make and model.casefold().startswith(make.casefold()):
        make = ""
    return " ".join(p for p in (make, model) if p) or None


def storable(value: Any) -> str:
    """A string SQLite can store: lone surrogates (undecodable file names) replaced."""
    if not isinstance(value, str):
        return "" if value is None else str(value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value


def _storable_or_none(value: Any) -> str | None:
    return storable(value) if isinstance(value, str) else None


def timestamp(value: Any, zone: ZoneInfo) -> tuple[int, str | None]:
    """(microseconds since the epoch, local date) of an ISO time; unparseable sorts first."""
    if not isinstance(value, str):
        return NO_TIME, None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return NO_TIME, None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    try:
        local = moment.astimezone(zone)
    except (OverflowError, ValueError):
        return NO_TIME, None
    return (moment - _EPOCH) // _MICROSECOND, local.date().isoformat()


def month_of(folder_key: str) -> str:
    return folder_key[:7].replace("/", "-")


def slug_of(folder_key: str) -> str:
    return folder_key.split("_", 1)[1]
