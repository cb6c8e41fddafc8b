"""ItemIndex: the query index of one data folder, as the web UI and the CLI use it.

Why apart: this is the part that ties the others together and keeps them safe to use from
many threads and processes. A WSGI server calls it from several threads, and other
processes (the CLI, `acopio run`) may open the same file. Readers take a connection from a
small pool and read one snapshot per call; WAL journal mode means they never wait for the
writer. Each call first refreshes the index (refresh.py), at most once per
refresh_interval_s, and never waits while another thread or process is already at it. A
damaged file, or one whose tables changed under it, is dropped and rebuilt, and the call
retried: the index is a cache, never an error to the user. A write this process made is
followed at once from the records written (`apply_changes`, the listener that
editorial.Editor takes), so the next page shows it without re-reading the shard.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from appliance.catalog import ShardWrite
from appliance.datadir import DataDir
from appliance.fsutil import file_lock
from appliance.query.refresh import Refresher, stat
from appliance.query.schema import DB_NAME, cannot_write, connect, is_corrupt, schema_problem
from appliance.query.search import KINDS, ItemQuery, records, search

log = logging.getLogger(__name__)
T = TypeVar("T")


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
        self.path = data.state / DB_NAME
        self.lock_path = data.state / (DB_NAME + ".lock")
        self._refresher = Refresher(data, zone, self.path, self.lock_path)
        self._refresh_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._pool: list[_Pooled] = []
        self._last_refresh: float | None = None
        self._closed = False
        self._frozen = False  # the disk takes no write: readers use the file as it stands

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
                count = self._refresher.run(wait=wait)
            except sqlite3.DatabaseError as exc:
                if cannot_write(exc) and self._refresher.adopt():
                    # A full (or read-only) disk: pages are served from the index as last
                    # written, read without a write of any kind, rather than every page
                    # answering 500; tried again after refresh_interval_s.
                    if not self._frozen:
                        log.warning("query index %s not brought up to date (%s): pages show "
                                    "it as it was", self.path, exc)
                        self._frozen = True
                    self._last_refresh = time.monotonic()
                    return 0
                if not self._unusable(exc):
                    raise
                count = self._rebuild(exc)
            self._thaw()
            self._last_refresh = time.monotonic()
            return count
        finally:
            self._refresh_lock.release()

    def apply_changes(self, writes: Iterable[ShardWrite]) -> int:
        """Bring the index up to date with shard writes just made (catalog.ShardWrite: an
        edit, an approval), from the records written rather than the files: only the
        changed items' rows are rewritten, and the shards noted as read, so the next refresh
        has nothing to do. A shard the index did not hold as the write found it is re-read
        (refresh.Refresher.apply). The number of shards re-read; waits like a forced
        refresh."""
        writes = list(writes)
        if not writes:
            return 0
        if self._closed:
            raise RuntimeError("the query index is closed")
        if self._last_refresh is None:
            return self.refresh(force=True)  # never built here yet: read everything once
        with self._refresh_lock:
            try:
                count = self._refresher.apply(writes)
                self._thaw()
                return count
            except sqlite3.DatabaseError as exc:
                if cannot_write(exc):  # the edit itself is saved; a later refresh reads it
                    log.warning("query index %s not brought up to date: %s", self.path, exc)
                    return 0
                if not self._unusable(exc):
                    raise
                count = self._rebuild(exc)
                self._last_refresh = time.monotonic()
                return count

    def _thaw(self) -> None:
        """The index was written again: readers go back to ordinary (locking) ones."""
        if self._frozen:
            log.info("query index %s is up to date again", self.path)
            self._frozen = False
            self._refresher.generation += 1  # pooled frozen readers are reopened

    def _rebuild(self, exc: sqlite3.DatabaseError) -> int:
        """A damaged index file: dropped and built again from the shards (call with the
        refresh lock held). The number of shards read."""
        log.warning("query index %s is damaged (%s); rebuilding it", self.path, exc)
        self._refresher.discard(self._refresher.db_ino)
        return self._refresher.run(wait=True)

    def _fresh(self) -> bool:
        last = self._last_refresh
        return last is not None and time.monotonic() - last < self.refresh_interval_s

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
                if attempt == 2 or not self._unusable(exc):
                    raise
                log.warning("query index %s is damaged (%s); rebuilding it", self.path, exc)
                with self._refresh_lock:
                    self._refresher.discard(self._refresher.db_ino)
                self.refresh(force=True)
        raise AssertionError("unreachable")

    def _unusable(self, exc: sqlite3.DatabaseError) -> bool:
        """Whether `exc` says the index file is damaged, or no longer of our schema (its
        tables changed under an open index: "no such table")."""
        if self._frozen:
            # Read without locks while the disk is full: a read torn by another process's
            # write looks corrupt, and must never have the file thrown away.
            return False
        if is_corrupt(exc):
            return True
        if not isinstance(exc, sqlite3.OperationalError) or cannot_write(exc):
            return False  # a full or read-only disk is no reason to throw the file away
        try:
            with contextlib.closing(connect(self.path, writer=False)) as conn:
                return schema_problem(conn) is not None
        except sqlite3.DatabaseError:
            return True

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """A pooled read-only connection on the current index file."""
        refresher = self._refresher
        pooled = None
        with self._pool_lock:
            while self._pool and pooled is None:
                candidate = self._pool.pop()
                if candidate.generation == refresher.generation:
                    pooled = candidate
                else:
                    candidate.conn.close()  # opened on a file since replaced
        for _ in range(3):
            if pooled is not None:
                break
            # Under the shared flock, so never while another process replaces the file; a
            # reader opens only the file our last refresh checked (never creates one).
            with file_lock(self.lock_path, shared=True):
                st = stat(self.path)
                if st is not None and st[2] == refresher.db_ino:
                    generation = refresher.generation
                    pooled = _Pooled(connect(self.path, writer=False,
                                             frozen=self._frozen), generation)
            if pooled is None:
                self.refresh(force=True)  # replaced or deleted meanwhile: rebuild, reopen
        if pooled is None:
            raise RuntimeError(f"query index {self.path} keeps disappearing")
        ok = False
        try:
            yield pooled.conn
            ok = True
        finally:
            if ok and not self._closed and pooled.generation == refresher.generation:
                with self._pool_lock:
                    self._pool.append(pooled)
            else:
                with contextlib.suppress(sqlite3.Error):
                    pooled.conn.close()

    def search(self, query: ItemQuery) -> tuple[list[dict[str, Any]], int]:
        """(records of the page asked for, how many items match in all)."""
        return self._read(lambda conn: search(conn, query))

    def explain(self, query: ItemQuery) -> list[tuple[str, list[str]]]:
        """The statements search(query) runs, each with its query plan (the details of
        EXPLAIN QUERY PLAN): to see which index answers which filters."""
        plans: list[tuple[str, list[str]]] = []
        self._read(lambda conn: search(conn, query, plans))
        return plans

    def get(self, sha256: str) -> dict[str, Any] | None:
        def work(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute("SELECT id FROM items WHERE sha256 = ? "
                               "ORDER BY imported_ts DESC LIMIT 1", (sha256,)).fetchone()
            return records(conn, [row[0]])[0] if row else None

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

    def kit_counts(self) -> dict[str, int]:
        """How many items each kit sent (a hub's records list their `kits`); {} on a kit."""
        return self._read(lambda conn: dict(conn.execute(
            "SELECT k.value, count(*) FROM records, json_each(records.record, '$.kits') AS k "
            "WHERE json_type(records.record, '$.kits') = 'array' GROUP BY k.value")))

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
            self._refresher.close()
        with self._pool_lock:
            pool, self._pool = self._pool, []
        for pooled in pool:
            pooled.conn.close()

    def __enter__(self) -> ItemIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

