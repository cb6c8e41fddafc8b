"""The index file: its tables (SCHEMA), its version, and opening it sound or making it anew.

Why apart: whatever else changes, the file must never be trusted blindly. It is a cache of
the shards, so a file that is missing, damaged, of another schema version (PRAGMA
user_version), with tables other than SCHEMA makes (as a development build may leave under
the same version) or made for another time zone is replaced by an empty one, which the next
refresh fills from the shards: never an error to the user. Bump SCHEMA_VERSION whenever
SCHEMA changes.

The tables: one narrow row per item (`items`) with the columns the filters and orders need,
indexed so that a count reads an index alone; the whole record as JSON text apart
(`records`, returned as stored); an FTS5 table for free text; small per-folder summaries for
the archive pages and for counting by one filter; the agenda's activities; and what each
shard was when last read.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

log = logging.getLogger(__name__)

# Bump when SCHEMA changes: an index with another user_version is rebuilt.
SCHEMA_VERSION = 3
DB_NAME = "query.sqlite"

# The items table's pick codes (a small integer keeps the many indexes that carry it small).
PICKS = {"none": 0, "picked": 1, "rejected": 2}

# Below this many items, SQLite plans without statistics (see analyze_if_grown).
ANALYZE_FROM = 1000

_SQLITE_HEADER = b"SQLite format 3\x00"
_CORRUPT_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB

SCHEMA = """
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
    imported_ts INTEGER NOT NULL,
    -- what people added (appliance.editorial): pick as PICKS codes (0 neither, 1 picked,
    -- 2 rejected), rating 0-5, approved 0/1 and when it was last approved or withdrawn
    pick INTEGER NOT NULL,
    rating INTEGER NOT NULL,
    approved INTEGER NOT NULL,
    approved_ts INTEGER NOT NULL
);
-- The whole records apart: the items rows stay narrow, so scans and sorts stay fast.
CREATE TABLE records (id INTEGER PRIMARY KEY, record TEXT NOT NULL);
-- The orders pages are listed in, with the filter columns: a search with many matches
-- walks one of them, checking the filters without reading a row.
CREATE INDEX items_imported ON items (imported_ts DESC, captured_ts DESC, sha256,
                                      kind, problems, camera, pick, rating, approved,
                                      captured_date, activity, month);
CREATE INDEX items_captured ON items (captured_ts, archive_path, sha256,
                                      kind, problems, camera, pick, rating, approved);
CREATE INDEX items_folder ON items (folder, captured_ts, archive_path, sha256,
                                    kind, problems, camera, pick, rating, approved);
-- The filters: each index starts with the column it narrows by and carries the columns
-- the filters used with it check, so counting the matches reads that index alone (a
-- "covering" index) instead of a table row per match.
CREATE INDEX items_kind ON items (kind, problems, camera, pick, rating, approved);
CREATE INDEX items_camera ON items (camera, kind, problems, pick, rating, approved);
CREATE INDEX items_problems ON items (problems, kind, camera, pick, rating, approved);
CREATE INDEX items_date ON items (captured_date, activity, kind, problems, camera,
                                  pick, rating, approved);
-- An event's, a month's, a pick's or an approval's items are also listed newest first
-- straight from their index.
CREATE INDEX items_activity ON items (activity, imported_ts DESC, captured_ts DESC,
                                      kind, problems, camera, pick, rating, approved,
                                      captured_date);
CREATE INDEX items_month ON items (month, imported_ts DESC, captured_ts DESC,
                                   kind, problems, camera, pick, rating, approved,
                                   captured_date, activity);
CREATE INDEX items_pick ON items (pick, imported_ts DESC, captured_ts DESC,
                                  kind, problems, camera, rating, approved);
CREATE INDEX items_approved ON items (approved, imported_ts DESC, captured_ts DESC,
                                      kind, problems, camera, pick, rating);
-- A minimum rating is a range; its items newest first are merged from one run per rating.
CREATE INDEX items_rating ON items (rating, imported_ts DESC, captured_ts DESC,
                                    kind, problems, camera, pick, approved);
CREATE INDEX items_sha256 ON items (sha256);
-- body: the item's own words (caption, tags, people, credit, place, file name, camera,
-- activity slug); title: its activity's agenda title; facets: one token per kind, status,
-- camera, pick, approval and rating step (text.item_facets), so a text search with those
-- filters is answered by the FTS alone.
CREATE VIRTUAL TABLE fts USING fts5 (
    body, title, facets,
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
-- How many of a folder's items each broad filter value matches (rows.marks: "kind:photo",
-- "camera:Canon EOS R6", "status:problems", "pick:picked", "pick:rejected", "approved:yes",
-- "rating:3" for rated 3 or more): a search by one such filter is counted by adding these
-- up, and of several, the one matching fewest items leads (search.py).
CREATE TABLE folder_marks (
    folder TEXT NOT NULL,
    mark TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (mark, folder)
);
"""


def connect(path: Path, *, writer: bool, frozen: bool = False) -> sqlite3.Connection:
    """A connection to the index file: the writer's (one per process, creates the file), or
    a reader's (query only, never creates it). `frozen`: a reader that writes nothing at all
    (SQLite's immutable mode: no lock, no shared-memory file), for a disk that takes no
    write; it sees the file as last checkpointed."""
    if writer:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                               timeout=30)
    else:
        mode = "mode=ro&immutable=1" if frozen else "mode=rw"
        conn = sqlite3.connect(f"file:{quote(str(path))}?{mode}", uri=True,
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


def open_index(path: Path, zone: ZoneInfo) -> sqlite3.Connection:
    """The writer connection on the index at `path` if it is a sound one of this schema made
    for `zone`; else on a new, empty one in its place. Call it under the refresh's flock,
    so that no other process replaces the file meanwhile."""
    reason = None
    with contextlib.suppress(FileNotFoundError):
        if os.stat(path).st_size > 0:
            try:
                conn = connect(path, writer=True)
                sound = False
                try:
                    reason = schema_problem(conn)
                    if reason is None:
                        row = conn.execute("SELECT value FROM meta WHERE key = 'zone'"
                                           ).fetchone()
                        sound = bool(row) and row[0] == str(zone)
                        # capture dates are local dates in the kit's zone
                        reason = None if sound else f"made for time zone {row and row[0]}"
                finally:
                    if not sound:
                        conn.close()
                if sound:
                    return conn
            except sqlite3.DatabaseError as exc:
                if not is_corrupt(exc):
                    raise  # a full or read-only disk is no damage: the file stays as it is
                reason = str(exc)
    if reason:
        log.warning("query index %s is unusable (%s); rebuilding it from the catalog",
                    path, reason)
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")
    conn = connect(path, writer=True)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(f"BEGIN; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION};")
    conn.execute("INSERT INTO meta VALUES ('zone', ?)", (str(zone),))
    conn.execute("COMMIT")
    return conn


# SQLITE_READONLY, SQLITE_IOERR (a shared-memory file that cannot grow), SQLITE_FULL,
# SQLITE_CANTOPEN: what a full or read-only disk makes SQLite say.
_NO_WRITE_CODES = (8, 10, 13, 14)


def cannot_write(exc: sqlite3.DatabaseError) -> bool:
    """The index file may be sound, but its disk takes no write now (full, or read-only)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _NO_WRITE_CODES


def schema_problem(conn: sqlite3.Connection) -> str | None:
    """Why the index `conn` opened is not of this schema (another user_version, or tables
    other than SCHEMA makes), or None."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        return f"schema {version}, this Acopio uses {SCHEMA_VERSION}"
    found, expected = _tables(conn), _expected_tables()
    if found != expected:
        names = sorted({name for kind, name in found.keys() ^ expected.keys()} |
                       {name for kind, name in found.keys() & expected.keys()
                        if found[kind, name] != expected[kind, name]})
        return f"its tables differ from schema {SCHEMA_VERSION}'s: {', '.join(names)}"
    return None


def _tables(conn: sqlite3.Connection) -> dict[tuple[str, str], str]:
    """{(type, name): CREATE statement} of the tables and indexes in a database (SQLite's
    own apart)."""
    return {(kind, name): sql for kind, name, sql in conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite%'")}


@functools.cache
def _expected_tables() -> dict[tuple[str, str], str]:
    """_tables of an index made by SCHEMA (with this SQLite: its FTS5 tables too)."""
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        conn.executescript(SCHEMA)
        return _tables(conn)


def header_ok(fd: int) -> bool:
    """The file still starts as an SQLite database (garbage written over it shows).

    Read through a descriptor the caller keeps open as long as its connections: closing
    any descriptor of the database file drops every POSIX lock this process holds on it
    (SQLite's "How To Corrupt", 2.2), and another process would then take the file for
    unused, checkpoint and delete the WAL this process is still writing into.
    """
    try:
        return os.pread(fd, 16, 0) == _SQLITE_HEADER
    except OSError:
        return False


def is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF in _CORRUPT_CODES


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
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


def analyze_if_grown(conn: sqlite3.Connection) -> None:
    """Keep the statistics SQLite's planner picks indexes by (ANALYZE) in step with the
    index: made again whenever the number of items has doubled or halved since (0.15 s at
    100,000 items), whether they came in one build or one event at a time."""
    items = conn.execute("SELECT coalesce(sum(count), 0) FROM folders").fetchone()[0]
    row = conn.execute("SELECT value FROM meta WHERE key = 'analyzed'").fetchone()
    last = int(row[0]) if row else 0
    if items < ANALYZE_FROM or last / 2 < items < last * 2:
        return
    with transaction(conn):
        conn.execute("ANALYZE")
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('analyzed', ?)", (str(items),))
