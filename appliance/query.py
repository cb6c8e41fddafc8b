"""The read-side query index: the catalog shards copied into SQLite for the web UI.

Why: the catalog is one TinyDB shard per archive folder (design decision 3), which is right
for writing and for repair but cannot answer "newest imports first" or a text search over
100,000 items within a web request, and holding every record in memory costs too much. So
the web process keeps `state/query.sqlite`: one row per item with the columns the filters and
orders need (indexed), the whole record as JSON text in a table apart (returned as stored),
an FTS5 table for free text, and small per-folder summaries for the archive pages.

Free text: captions, tags, activity slug, original name and camera are folded (no accents,
lower case) and cut into letter/digit runs in Python, for the index and for the query alike,
so "comunicacion" finds "Comunicación" and "dsc_00" finds DSC_0012.JPG; each typed word is
a quoted prefix phrase, so nothing typed is ever FTS syntax. The agenda title of the item's
activity is a second FTS column, rewritten for that activity's items when the agenda changes.

It is a cache, never a truth. The shards stay the only thing ingest writes and nothing but
this module writes `query.sqlite`; deleting it, finding it damaged or written with another
schema (PRAGMA user_version) means it is rebuilt from the shards, never an error to the user.

Refresh is incremental: a table notes each shard's (mtime_ns, size, inode) as last read, so a
refresh with nothing new costs one stat per shard file and of `agenda.json`; a shard that
changed is re-read (through `Catalog.read_shard`, so migrations apply) and its folder's rows
replaced in one transaction. The agenda's activities (title, area, place) live in their own
table, joined at query time, so an agenda edit never re-reads a shard.

Concurrency: a WSGI server calls this from several threads, and other processes (the CLI,
`acopio run`) may open the same index. Readers take a connection from a small pool; WAL
journal mode means they never wait for the writer. Refresh runs in one thread at a time (a
lock) and in one process at a time (an flock on `query.sqlite.lock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote
from zoneinfo import ZoneInfo

from appliance import storage
from appliance.agenda import Agenda
from appliance.catalog import Catalog, SchemaTooNewError, is_folder_key
from appliance.datadir import DataDir
from appliance.fsutil import file_lock

log = logging.getLogger(__name__)
T = TypeVar("T")

# Bump when the tables below change: an index with another user_version is rebuilt.
SCHEMA_VERSION = 1
DB_NAME = "query.sqlite"

KINDS = ("photo", "raw", "video", "audio", "other")
STATUSES = ("problems", "ok")
ORDERS = ("imported", "captured")
MAX_LIMIT = 500
# Free text is cut to this many words of this many characters: a pasted essay must not
# become an FTS query of thousands of terms.
MAX_WORDS = 16
MAX_WORD_CHARS = 64

# Sort key of a time that cannot be parsed (never written by ingest): before everything.
_NO_TIME = -(2**62)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_SQLITE_HEADER = b"SQLite format 3\x00"
_CORRUPT_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
_TOKEN = re.compile(r"[^\W_]+")
# A search matching more items than this is led by an index rather than sorted whole.
_WALK_ORDER_FROM = 3000
# Rows written per refresh transaction (whole folders; the last one may pass it).
_BATCH_ROWS = 20_000

_SCHEMA = """
CREATE TABLE shards (
    folder TEXT PRIMARY KEY,
    mtime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL,
    ino INTEGER NOT NULL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE activities (
    slug TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    area TEXT NOT NULL,
    place TEXT NOT NULL
);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL,
    folder TEXT NOT NULL,
    month TEXT NOT NULL,
    activity TEXT NOT NULL,
    kind TEXT NOT NULL,
    camera TEXT,
    size INTEGER NOT NULL,
    problems INTEGER NOT NULL,
    archive_path TEXT NOT NULL,
    captured_ts INTEGER NOT NULL,
    captured_date TEXT,
    imported_ts INTEGER NOT NULL
);
-- The whole records apart: the items rows stay narrow, so scans and sorts stay fast.
CREATE TABLE records (id INTEGER PRIMARY KEY, record TEXT NOT NULL);
CREATE INDEX items_imported ON items (imported_ts DESC, captured_ts DESC, sha256);
CREATE INDEX items_captured ON items (captured_ts, archive_path, sha256);
CREATE INDEX items_folder ON items (folder, captured_ts, archive_path, sha256);
CREATE INDEX items_month ON items (month, imported_ts DESC);
CREATE INDEX items_kind ON items (kind, imported_ts DESC);
CREATE INDEX items_camera ON items (camera, imported_ts DESC);
CREATE INDEX items_activity ON items (activity, imported_ts DESC);
CREATE INDEX items_date ON items (captured_date);
CREATE INDEX items_problems ON items (problems, imported_ts DESC);
CREATE INDEX items_sha256 ON items (sha256);
CREATE VIRTUAL TABLE fts USING fts5 (
    body, title,
    tokenize = 'unicode61 remove_diacritics 2',
    prefix = '1 2 3',
    columnsize = 0
);
CREATE TABLE folders (
    folder TEXT PRIMARY KEY,
    month TEXT NOT NULL,
    slug TEXT NOT NULL,
    count INTEGER NOT NULL,
    first_captured TEXT,
    last_imported TEXT,
    cover TEXT
);
CREATE INDEX folders_month ON folders (month, folder);
CREATE TABLE folder_kinds (
    folder TEXT NOT NULL,
    kind TEXT NOT NULL,
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (folder, kind)
);
CREATE TABLE folder_cameras (
    folder TEXT NOT NULL,
    camera TEXT NOT NULL,
    PRIMARY KEY (camera, folder)
);
"""


@dataclass(frozen=True)
class ItemQuery:
    """What the web UI asks for; every field narrows the result. Invalid values raise
    ValueError when the query is built."""

    q: str = ""  # free text: every word must match, as a prefix, accents and case ignored
    month: str | None = None  # "YYYY-MM", the archive folder's month
    activity: str | None = None  # slug
    folder: str | None = None  # folder key "YYYY/MM/YYYY-MM-DD_slug"
    kind: str | None = None  # photo raw video audio other
    camera: str | None = None  # "Make Model" as ItemIndex.cameras() returns it
    area: str | None = None  # the agenda area of the item's activity
    status: str | None = None  # "problems" | "ok"
    date_from: date | None = None  # inclusive, capture date local to the kit's zone
    date_to: date | None = None
    order: str = "imported"  # "imported" newest first | "captured" oldest first
    limit: int = 60
    offset: int = 0

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}: use one of {STATUSES}")
        if self.order not in ORDERS:
            raise ValueError(f"unknown order {self.order!r}: use one of {ORDERS}")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) \
                or not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_LIMIT}, not {self.limit!r}")
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) \
                or self.offset < 0:
            raise ValueError(f"offset must be >= 0, not {self.offset!r}")
        for name in ("date_from", "date_to"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, date):
                raise ValueError(f"{name} must be a date, not {value!r}")
        if not isinstance(self.q, str):
            raise ValueError(f"q must be text, not {self.q!r}")


# -- text --------------------------------------------------------------------------------


def fold(text: str) -> str:
    """Lower case without accents: "Comunicación" -> "comunicacion"."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def tokens(text: str) -> list[str]:
    """Folded letter/digit runs; everything else (space, _ . - punctuation) separates."""
    return _TOKEN.findall(fold(text))


def fts_query(text: str) -> str | None:
    """An FTS5 query in which each typed word must match, as a prefix, or None for none.

    Each word becomes one quoted phrase of its tokens with the last one a prefix, so
    "dsc_00" is the phrase "dsc 00"* (finds DSC_0012.JPG) and nothing a user types is ever
    FTS syntax: quotes, stars, NEAR, AND, parentheses are separators or plain words.
    """
    phrases = []
    for word in text.split()[:MAX_WORDS]:
        parts = tokens(word[:MAX_WORD_CHARS])
        if parts:
            phrase = " ".join(parts).replace('"', '""')
            phrases.append(f'"{phrase}"*')
    return " ".join(phrases) or None


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


def _text(value: Any) -> str:
    """A string SQLite can store: lone surrogates (undecodable file names) replaced."""
    if not isinstance(value, str):
        return "" if value is None else str(value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value


def _timestamp(value: Any, zone: ZoneInfo) -> tuple[int, str | None]:
    """(microseconds since the epoch, local date) of an ISO time; unparseable sorts first."""
    if not isinstance(value, str):
        return _NO_TIME, None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return _NO_TIME, None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    try:
        local = moment.astimezone(zone)
    except (OverflowError, ValueError):
        return _NO_TIME, None
    return (moment - _EPOCH) // _MICROSECOND, local.date().isoformat()


def _month(folder_key: str) -> str:
    return folder_key[:7].replace("/", "-")


def _slug(folder_key: str) -> str:
    return folder_key.split("_", 1)[1]


# -- the index ---------------------------------------------------------------------------


class _Row(NamedTuple):
    """One item as the items table holds it (the first 12 fields, in column order), its
    record as stored, and the raw times the folder summary shows."""

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
    record: str
    captured_at: Any
    imported_at: Any


@dataclass
class _Pooled:
    conn: sqlite3.Connection
    generation: int


class ItemIndex:
    """The query index over one data folder's catalog, safe to share between threads."""

    def __init__(self, data: DataDir, zone: ZoneInfo, *,
                 refresh_interval_s: float = 1.0) -> None:
        self.data = data
        self.zone = zone
        self.refresh_interval_s = refresh_interval_s
        self.catalog = Catalog(data)
        self.path = data.state / DB_NAME
        self.lock_path = data.state / (DB_NAME + ".lock")
        self.agenda_path = data.state / "agenda.json"
        self._refresh_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._pool: list[_Pooled] = []
        self._writer: sqlite3.Connection | None = None
        self._db_ino: int | None = None  # the file our connections opened
        self._generation = 0  # bumped when that file is replaced: pooled readers reopen
        self._last_refresh: float | None = None
        self._known: dict[str, tuple[int, int, int]] = {}  # the shards table, in memory
        self._agenda_known: tuple[int, int, int] | None = None
        self._warned: dict[str, tuple[int, int, int]] = {}
        self._closed = False

    # -- refresh -----------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> int:
        """Bring the index up to date with the shards and the agenda; the number of shards
        (re)read. Unforced, does nothing when the last refresh is under refresh_interval_s
        old, or when another thread or process is refreshing an index already built (a
        reader never waits for the writer). Forced, or the first time, it waits."""
        if self._closed:
            raise RuntimeError("the query index is closed")
        if not force and self._fresh():
            return 0
        ready = self._last_refresh is not None
        if not self._refresh_lock.acquire(blocking=force or not ready):
            return 0  # another thread is at it; readers see the last committed state
        try:
            if not force and self._fresh():
                return 0
            wait = force or not ready
            try:
                count = self._refresh(wait=wait)
            except sqlite3.DatabaseError as exc:
                if not _is_corrupt(exc):
                    raise
                log.warning("query index %s is damaged (%s); rebuilding it", self.path, exc)
                self._discard(self._db_ino)
                count = self._refresh(wait=True)
            self._last_refresh = time.monotonic()
            return count
        finally:
            self._refresh_lock.release()

    def _fresh(self) -> bool:
        last = self._last_refresh
        return last is not None and time.monotonic() - last < self.refresh_interval_s

    def _refresh(self, *, wait: bool) -> int:
        shards = self._scan_shards()
        agenda = _stat(self.agenda_path)
        db_ino = _stat(self.path)
        if (self._writer is not None and db_ino is not None and db_ino[2] == self._db_ino
                and shards == self._known and agenda == self._agenda_known
                and self._header_ok()):
            return 0  # nothing changed: no lock, no write
        with _exclusive(self.lock_path, wait=wait) as locked:
            if not locked:
                return 0  # another process is writing; readers see what it commits
            conn = self._open_writer()
            self._load_known(conn)
            if agenda != self._agenda_known:
                self._refresh_agenda(conn, agenda)
            changed = [(key, stat) for key, stat in shards.items()
                       if self._known.get(key) != stat]
            count = self._refresh_shards(conn, changed)
            gone = [key for key in self._known if key not in shards]
            if gone:
                with _transaction(conn):
                    for key in gone:
                        self._delete_folder(conn, key)
                        conn.execute("DELETE FROM shards WHERE folder = ?", (key,))
                for key in gone:
                    self._known.pop(key, None)
            if count > 20:
                conn.execute("PRAGMA optimize")
            return count

    def _scan_shards(self) -> dict[str, tuple[int, int, int]]:
        """{folder key: (mtime_ns, size, inode)} of every shard file, as Catalog names them."""
        found: dict[str, tuple[int, int, int]] = {}
        root = self.data.catalog
        for year in _scandir(root):
            if not year.is_dir(follow_symlinks=False):
                continue
            for month in _scandir(Path(year.path)):
                if not month.is_dir(follow_symlinks=False):
                    continue
                for entry in _scandir(Path(month.path)):
                    if not entry.name.endswith(".json"):
                        continue
                    key = f"{year.name}/{month.name}/{entry.name[:-5]}"
                    if not is_folder_key(key):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    found[key] = (st.st_mtime_ns, st.st_size, st.st_ino)
        return found

    def _header_ok(self) -> bool:
        """The file still starts as an SQLite database (garbage written over it shows)."""
        try:
            with open(self.path, "rb") as f:
                return f.read(16) == _SQLITE_HEADER
        except OSError:
            return False

    def _open_writer(self) -> sqlite3.Connection:
        """The writer connection on a sound index of our schema; rebuilt otherwise.
        Called under the flock, so no other process is replacing the file meanwhile."""
        st = _stat(self.path)
        if self._writer is not None and st is not None and st[2] == self._db_ino \
                and self._header_ok():
            return self._writer
        self._close_writer()
        reason = None
        if st is not None and st[1] > 0:
            try:
                conn = self._connect(writer=True)
                try:
                    version = conn.execute("PRAGMA user_version").fetchone()[0]
                    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                    if version != SCHEMA_VERSION:
                        reason = f"schema {version}, this Acopio uses {SCHEMA_VERSION}"
                    else:
                        row = conn.execute("SELECT value FROM meta WHERE key = 'zone'"
                                           ).fetchone()
                        if row and row[0] == str(self.zone):
                            self._adopt_writer(conn)
                            return conn
                        # capture dates are local dates in the kit's zone
                        reason = f"made for time zone {row[0] if row else None}"
                finally:
                    if self._writer is not conn:
                        conn.close()
            except sqlite3.DatabaseError as exc:
                reason = str(exc)
        if reason:
            log.warning("query index %s is unusable (%s); rebuilding it from the catalog",
                        self.path, reason)
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}{suffix}")
        conn = self._connect(writer=True)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION};")
        conn.execute("INSERT INTO meta VALUES ('zone', ?)", (str(self.zone),))
        conn.execute("COMMIT")
        self._adopt_writer(conn)
        return conn

    def _adopt_writer(self, conn: sqlite3.Connection) -> None:
        self._writer = conn
        st = _stat(self.path)
        ino = st[2] if st else None
        if ino != self._db_ino:
            self._db_ino = ino
            self._generation += 1
        self._known = {}
        self._agenda_known = None

    def _close_writer(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(sqlite3.Error):
                self._writer.close()
            self._writer = None

    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if writer:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=30)
        else:  # never creates the file
            conn = sqlite3.connect(f"file:{quote(str(self.path))}?mode=rw", uri=True,
                                   isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA busy_timeout = 30000")
        if writer:
            conn.execute("PRAGMA cache_size = -8000")
            conn.execute("PRAGMA synchronous = NORMAL")  # a cache: a lost commit is re-read
            conn.execute("PRAGMA journal_size_limit = 67108864")
        else:
            conn.execute("PRAGMA cache_size = -2000")
            conn.execute("PRAGMA query_only = 1")
        return conn

    def _load_known(self, conn: sqlite3.Connection) -> None:
        """The shards table and agenda stat as committed (another process may have moved
        them on since we last looked)."""
        self._known = {row[0]: (row[1], row[2], row[3]) for row in
                       conn.execute("SELECT folder, mtime_ns, size, ino FROM shards")}
        row = conn.execute("SELECT value FROM meta WHERE key = 'agenda'").fetchone()
        self._agenda_known = tuple(json.loads(row[0])) if row else None  # type: ignore[assignment]

    def _refresh_agenda(self, conn: sqlite3.Connection,
                        stat: tuple[int, int, int] | None) -> None:
        try:
            activities = Agenda(self.data.state).activities() if stat else []
        except (storage.CorruptStateError, ValueError, KeyError, TypeError) as exc:
            if self._warned.get("agenda") != stat:
                log.warning("agenda %s could not be read (%s); keeping the activities as "
                            "last read", self.agenda_path, exc)
                self._warned["agenda"] = stat  # type: ignore[assignment]
            return
        self._warned.pop("agenda", None)
        new = {a.slug: (_text(a.title), _text(a.area), _text(a.place)) for a in activities}
        old = {row[0]: (row[1], row[2], row[3]) for row in
               conn.execute("SELECT slug, title, area, place FROM activities")}
        with _transaction(conn):
            conn.execute("DELETE FROM activities")
            conn.executemany("INSERT INTO activities VALUES (?, ?, ?, ?)",
                             [(slug, *values) for slug, values in new.items()])
            for slug in set(old) | set(new):
                title = new.get(slug, ("",))[0]
                if title != old.get(slug, ("",))[0]:
                    conn.execute(
                        "UPDATE fts SET title = ? WHERE rowid IN "
                        "(SELECT id FROM items WHERE activity = ?)",
                        (" ".join(tokens(title)), slug))
            if stat is None:
                conn.execute("DELETE FROM meta WHERE key = 'agenda'")
            else:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('agenda', ?)",
                             (json.dumps(stat),))
        self._agenda_known = stat

    def _refresh_shards(self, conn: sqlite3.Connection,
                        changed: list[tuple[str, tuple[int, int, int]]]) -> int:
        """Re-read the changed shards and replace their folders' rows. Each folder changes
        whole within one transaction; a transaction gathers folders up to _BATCH_ROWS rows
        (a first build commits a few dozen times, not once per shard)."""
        count = 0
        pending: list[tuple[str, tuple[int, int, int]]] = []
        rows_in_batch = 0
        titles = dict(conn.execute("SELECT slug, title FROM activities").fetchall())
        next_id = (conn.execute("SELECT max(id) FROM items").fetchone()[0] or 0) + 1
        try:
            for key, stat in changed:
                records = self._read_shard(key, stat)
                if records is None:
                    continue
                if not conn.in_transaction:
                    conn.execute("BEGIN IMMEDIATE")
                next_id = self._replace_folder(conn, key, stat, records, titles, next_id)
                pending.append((key, stat))
                rows_in_batch += len(records)
                if rows_in_batch >= _BATCH_ROWS:
                    conn.execute("COMMIT")
                    count += self._committed(pending)
                    rows_in_batch = 0
            if conn.in_transaction:
                conn.execute("COMMIT")
            count += self._committed(pending)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return count

    def _committed(self, pending: list[tuple[str, tuple[int, int, int]]]) -> int:
        for key, stat in pending:
            self._known[key] = stat
        count = len(pending)
        pending.clear()
        return count

    def _read_shard(self, key: str, stat: tuple[int, int, int]) -> list[dict[str, Any]] | None:
        try:
            records = self.catalog.read_shard(key)
        except (storage.CorruptStateError, SchemaTooNewError, ValueError, OSError) as exc:
            # Keep what we had; not marked as read, so the next refresh tries again.
            if self._warned.get(key) != stat:
                log.warning("catalog shard %s could not be read (%s); the query index keeps "
                            "its previous items until it can", key, exc)
                self._warned[key] = stat
            return None
        self._warned.pop(key, None)
        return records

    def _replace_folder(self, conn: sqlite3.Connection, key: str, stat: tuple[int, int, int],
                        records: list[dict[str, Any]], titles: dict[str, str],
                        next_id: int) -> int:
        """Bring one folder's rows to `records` (inside the caller's transaction); the next
        free id. Rows whose record is unchanged stay: a shard that grows by one import batch
        costs that batch, not the whole event again."""
        rows, texts = self._rows(key, records, titles)
        kept: dict[tuple[str, str], list[int]] = {}
        if key in self._known:  # else it has no rows: they come with its shards row
            for row_id, sha256, record in conn.execute(
                    "SELECT i.id, i.sha256, r.record FROM items i JOIN records r ON r.id = i.id"
                    " WHERE i.folder = ?", (key,)):
                kept.setdefault((sha256, record), []).append(row_id)
        new: list[tuple[int, _Row, tuple[str, str]]] = []
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
            "INSERT INTO items (id, sha256, folder, month, activity, kind, camera, size,"
            " problems, archive_path, captured_ts, captured_date, imported_ts)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(i, *row[:12]) for i, row, _ in new])
        conn.executemany("INSERT INTO records (id, record) VALUES (?, ?)",
                         [(i, row.record) for i, row, _ in new])
        conn.executemany("INSERT INTO fts (rowid, body, title) VALUES (?, ?, ?)",
                         [(i, *text) for i, _, text in new])
        self._delete_summary(conn, key)
        self._write_summary(conn, key, self._summary(rows))
        conn.execute("INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?)", (key, *stat))
        return next_id

    def _rows(self, key: str, records: list[dict[str, Any]], titles: dict[str, str]
              ) -> tuple[list[_Row], list[tuple[str, str]]]:
        """The rows of a shard's records and their search texts (body, agenda title)."""
        month = _month(key)
        rows, texts = [], []
        folded_titles: dict[str, str] = {}
        for record in records:
            if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
                continue
            activity = _text(record.get("activity") or _slug(key))
            camera = camera_name(record.get("camera"))
            captured_ts, captured_date = _timestamp(record.get("captured_at"), self.zone)
            imported_ts, _ = _timestamp(record.get("imported_at"), self.zone)
            problems = record.get("problems")
            size = record.get("size")
            rows.append(_Row(
                _text(record["sha256"]), key, month, activity,
                _text(record.get("kind") or "other"), _text(camera) if camera else None,
                size if isinstance(size, int) and not isinstance(size, bool) else 0,
                len(problems) if isinstance(problems, list) else 0,
                _text(record.get("archive_path")), captured_ts, captured_date, imported_ts,
                json.dumps(record, ensure_ascii=True, separators=(",", ":")),
                record.get("captured_at"), record.get("imported_at"),
            ))
            tags = record.get("tags")
            parts = [record.get("caption"), activity, record.get("original_name"), camera]
            if isinstance(tags, list):
                parts.extend(tags)
            body = " ".join(" ".join(tokens(p)) for p in parts if isinstance(p, str))
            if activity not in folded_titles:
                folded_titles[activity] = " ".join(tokens(titles.get(activity, "")))
            texts.append((body, folded_titles[activity]))
        return rows, texts

    def _summary(self, rows: list[_Row]) -> dict[str, Any]:
        """What the archive pages show of a folder, worked out once per shard read."""
        kinds: dict[str, list[int]] = {}
        for row in rows:
            entry = kinds.setdefault(row.kind, [0, 0])
            entry[0] += 1
            entry[1] += row.size

        def in_order(r: _Row) -> tuple:
            return r.captured_ts, r.archive_path, r.sha256

        first = min(rows, key=in_order, default=None)
        last = max(rows, key=lambda r: (r.imported_ts, r.captured_ts), default=None)
        rank = {"photo": 0, "video": 1}  # the cover: the first photo, else video, else any
        cover = min(rows, key=lambda r: (rank.get(r.kind, 2), *in_order(r)), default=None)
        return {
            "count": len(rows), "kinds": kinds,
            "cameras": {row.camera for row in rows if row.camera},
            "first_captured": first.captured_at if first else None,
            "last_imported": last.imported_at if last else None,
            "cover": cover.sha256 if cover else None,
        }

    def _write_summary(self, conn: sqlite3.Connection, key: str,
                       summary: dict[str, Any]) -> None:
        if not summary["count"]:
            return
        conn.execute(
            "INSERT INTO folders VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key, _month(key), _slug(key), summary["count"],
             _str_or_none(summary["first_captured"]), _str_or_none(summary["last_imported"]),
             summary["cover"]))
        conn.executemany("INSERT INTO folder_kinds VALUES (?, ?, ?, ?)",
                         [(key, kind, n, b) for kind, (n, b) in summary["kinds"].items()])
        conn.executemany("INSERT INTO folder_cameras VALUES (?, ?)",
                         [(key, camera) for camera in summary["cameras"]])

    def _delete_folder(self, conn: sqlite3.Connection, key: str) -> None:
        conn.execute("DELETE FROM fts WHERE rowid IN (SELECT id FROM items WHERE folder = ?)",
                     (key,))
        conn.execute("DELETE FROM records WHERE id IN (SELECT id FROM items WHERE folder = ?)",
                     (key,))
        conn.execute("DELETE FROM items WHERE folder = ?", (key,))
        self._delete_summary(conn, key)

    def _delete_summary(self, conn: sqlite3.Connection, key: str) -> None:
        conn.execute("DELETE FROM folders WHERE folder = ?", (key,))
        conn.execute("DELETE FROM folder_kinds WHERE folder = ?", (key,))
        conn.execute("DELETE FROM folder_cameras WHERE folder = ?", (key,))

    # -- reading -----------------------------------------------------------------------

    def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one read transaction (one snapshot) on a pooled connection, after
        a throttled refresh. A damaged index found here is rebuilt and the work retried."""
        self.refresh()
        for attempt in (1, 2):
            try:
                with self._reader() as conn:
                    conn.execute("BEGIN")
                    try:
                        result = work(conn)
                    except BaseException:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                        raise
                    conn.execute("COMMIT")
                    return result
            except sqlite3.DatabaseError as exc:
                if attempt == 2 or not _is_corrupt(exc):
                    raise
                log.warning("query index %s is damaged (%s); rebuilding it", self.path, exc)
                with self._refresh_lock:
                    self._discard(self._db_ino)
                self.refresh(force=True)
        raise AssertionError("unreachable")

    def _discard(self, ino: int | None) -> None:
        """Drop a damaged index file (unless another process has replaced it already), so
        that the next refresh builds a new one. The caller holds the refresh lock."""
        with file_lock(self.lock_path):
            self._close_writer()
            st = _stat(self.path)
            if st is not None and st[2] == ino:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """A pooled read-only connection on the current index file."""
        pooled = None
        with self._pool_lock:
            while self._pool and pooled is None:
                candidate = self._pool.pop()
                if candidate.generation == self._generation:
                    pooled = candidate
                else:
                    candidate.conn.close()  # opened on a file since replaced
        for _ in range(3):
            if pooled is not None:
                break
            # Under the shared flock, so never while another process replaces the file; a
            # reader opens only the file our last refresh checked (never creates one).
            with file_lock(self.lock_path, shared=True):
                st = _stat(self.path)
                if st is not None and st[2] == self._db_ino:
                    generation = self._generation
                    pooled = _Pooled(self._connect(writer=False), generation)
            if pooled is None:
                self.refresh(force=True)  # replaced or deleted meanwhile: rebuild, reopen
        if pooled is None:
            raise RuntimeError(f"query index {self.path} keeps disappearing")
        ok = False
        try:
            yield pooled.conn
            ok = True
        finally:
            if ok and not self._closed and pooled.generation == self._generation:
                with self._pool_lock:
                    self._pool.append(pooled)
            else:
                with contextlib.suppress(sqlite3.Error):
                    pooled.conn.close()

    def search(self, query: ItemQuery) -> tuple[list[dict[str, Any]], int]:
        """(records of the page asked for, how many items match in all)."""
        filters, params = self._where(query)
        match = fts_query(query.q)
        if query.order == "imported":
            order, index = "imported_ts DESC, captured_ts DESC, sha256", "items_imported"
        else:
            order, index = "captured_ts, archive_path, sha256", "items_captured"

        # Filters that pick a stretch of time (an event, a month, dates) have an index of
        # their own and few enough rows to sort; the others (kind, camera, status, text)
        # can match most of the archive.
        narrow = any(v is not None for v in (query.month, query.folder, query.activity,
                                             query.area, query.date_from, query.date_to))

        def work(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]], int]:
            clauses, args = list(filters), list(params)
            if match:
                matched = conn.execute("SELECT count(*) FROM fts WHERE fts MATCH ?",
                                       (match,)).fetchone()[0]
                if not matched:
                    return [], 0
                # Few matches: SQLite looks each one up. Many: "+id" keeps it from doing so,
                # and the matches become a set that the rows led by an index are checked in.
                clauses.append(f"{'+id' if matched > _WALK_ORDER_FROM else 'id'} IN "
                               "(SELECT rowid FROM fts WHERE fts MATCH ?)")
                args.append(match)
            where = " AND ".join(clauses) or "1"
            if match and not filters:
                total = matched
            else:
                total = conn.execute(f"SELECT count(*) FROM items WHERE {where}",
                                     args).fetchone()[0]
            if total <= query.offset:
                return [], total
            # Many matches and no narrow filter: walk the order's own index and keep the rows
            # that match, which fills a page long before sorting every match would.
            walk = total > _WALK_ORDER_FROM and not narrow
            source = f"items INDEXED BY {index}" if walk else "items"
            ids = [row[0] for row in conn.execute(
                f"SELECT id FROM {source} WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
                [*args, query.limit, query.offset])]
            return _records(conn, ids), total

        return self._read(work)

    def _where(self, query: ItemQuery) -> tuple[list[str], list[Any]]:
        """The SQL conditions of the query's filters (the free text apart)."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("month", query.month), ("folder", query.folder),
                              ("activity", query.activity), ("kind", query.kind),
                              ("camera", query.camera)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if query.area is not None:
            clauses.append("activity IN (SELECT slug FROM activities WHERE area = ?)")
            params.append(query.area)
        if query.status == "problems":
            clauses.append("problems > 0")
        elif query.status == "ok":
            clauses.append("problems = 0")
        if query.date_from is not None:
            clauses.append("captured_date >= ?")
            params.append(_day(query.date_from))
        if query.date_to is not None:
            clauses.append("captured_date <= ?")
            params.append(_day(query.date_to))
        return clauses, params

    def get(self, sha256: str) -> dict[str, Any] | None:
        def work(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute("SELECT id FROM items WHERE sha256 = ? "
                               "ORDER BY imported_ts DESC LIMIT 1", (sha256,)).fetchone()
            return _records(conn, [row[0]])[0] if row else None

        return self._read(work)

    def neighbours(self, sha256: str) -> tuple[str | None, str | None]:
        """(previous, next) item in the same folder by capture time, then archive path."""
        def work(conn: sqlite3.Connection) -> tuple[str | None, str | None]:
            row = conn.execute(
                "SELECT folder, captured_ts, archive_path, sha256 FROM items WHERE sha256 = ? "
                "ORDER BY imported_ts DESC LIMIT 1", (sha256,)).fetchone()
            if row is None:
                return None, None
            before = conn.execute(
                "SELECT sha256 FROM items WHERE folder = ? AND "
                "(captured_ts, archive_path, sha256) < (?, ?, ?) "
                "ORDER BY captured_ts DESC, archive_path DESC, sha256 DESC LIMIT 1",
                row).fetchone()
            after = conn.execute(
                "SELECT sha256 FROM items WHERE folder = ? AND "
                "(captured_ts, archive_path, sha256) > (?, ?, ?) "
                "ORDER BY captured_ts, archive_path, sha256 LIMIT 1", row).fetchone()
            return (before[0] if before else None), (after[0] if after else None)

        return self._read(work)

    def months(self) -> list[dict[str, Any]]:
        """[{"month": "2026-05", "count": n}], newest month first."""
        return self._read(lambda conn: [
            {"month": month, "count": count} for month, count in conn.execute(
                "SELECT month, sum(count) FROM folders GROUP BY month ORDER BY month DESC")])

    def folders(self, month: str) -> list[dict[str, Any]]:
        """The archive folders of a month, newest folder first, with agenda title/area."""
        return self._read(lambda conn: [
            {"folder": row[0], "activity": row[1], "title": row[2], "area": row[3],
             "count": row[4], "first_captured": row[5], "last_imported": row[6],
             "cover": row[7]}
            for row in conn.execute(
                "SELECT f.folder, f.slug, coalesce(a.title, ''), coalesce(a.area, ''), "
                "f.count, f.first_captured, f.last_imported, f.cover FROM folders f "
                "LEFT JOIN activities a ON a.slug = f.slug WHERE f.month = ? "
                "ORDER BY f.folder DESC", (month,))])

    def cameras(self) -> list[str]:
        return self._read(lambda conn: [row[0] for row in conn.execute(
            "SELECT DISTINCT camera FROM folder_cameras ORDER BY camera")])

    def areas(self) -> list[str]:
        """The agenda's areas (those of every activity, with items or not)."""
        return self._read(lambda conn: [row[0] for row in conn.execute(
            "SELECT DISTINCT area FROM activities WHERE area != '' ORDER BY area")])

    def latest_import(self) -> str | None:
        """The newest imported_at of any item (ISO), for "something new" checks."""
        def work(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT id FROM items ORDER BY imported_ts DESC LIMIT 1"
                               ).fetchone()
            if row is None:
                return None
            value = conn.execute("SELECT json_extract(record, '$.imported_at') FROM records "
                                 "WHERE id = ?", row).fetchone()
            return value[0] if value else None

        return self._read(work)

    def stats(self) -> dict[str, Any]:
        """{"items": n, "bytes": total size, "by_kind": {kind: n}} (every kind, 0 too)."""
        def work(conn: sqlite3.Connection) -> dict[str, Any]:
            by_kind = dict.fromkeys(KINDS, 0)
            items = total = 0
            for kind, count, size in conn.execute(
                    "SELECT kind, sum(count), sum(bytes) FROM folder_kinds GROUP BY kind "
                    "ORDER BY kind"):
                by_kind[kind] = count
                items += count
                total += size
            return {"items": items, "bytes": total, "by_kind": by_kind}

        return self._read(work)

    def close(self) -> None:
        self._closed = True
        with self._refresh_lock:
            self._close_writer()
        with self._pool_lock:
            pool, self._pool = self._pool, []
        for pooled in pool:
            pooled.conn.close()

    def __enter__(self) -> ItemIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- helpers -----------------------------------------------------------------------------


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction (IMMEDIATE), rolled back on error."""
    if not conn.in_transaction:
        conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if conn.in_transaction:
        conn.execute("COMMIT")


@contextlib.contextmanager
def _exclusive(path: Path, *, wait: bool) -> Iterator[bool]:
    """The refresh's inter-process lock (fsutil.file_lock's flock); with wait=False, False
    at once when another process holds it."""
    if wait:
        with file_lock(path):
            yield True
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF in _CORRUPT_CODES


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _records(conn: sqlite3.Connection, ids: list[int]) -> list[dict[str, Any]]:
    """The stored records of `ids`, in that order."""
    found = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        found.update(conn.execute(
            f"SELECT id, record FROM records WHERE id IN ({','.join('?' * len(chunk))})",
            chunk).fetchall())
    return [json.loads(found[i]) for i in ids if i in found]


def _day(value: date) -> str:
    return (value.date() if isinstance(value, datetime) else value).isoformat()


def _str_or_none(value: Any) -> str | None:
    return _text(value) if isinstance(value, str) else None
