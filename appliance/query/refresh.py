"""Bringing the index file up to date with the catalog shards and the agenda.

Why apart: this is the index's only writer, and the part that must stay cheap when nothing
changed. A table notes each shard's (mtime_ns, size, inode) as last read, so a refresh with
nothing new costs one stat per shard file and of `agenda.json`, no lock and no write. A shard
that changed is re-read (through `Catalog.read_shard`, so migrations apply) and its folder's
rows replaced in one transaction, keeping the rows whose record did not change. The agenda's
activities (title, area, place) live in their own table, joined at query time, so an agenda
edit never re-reads a shard: it only rewrites the FTS title of that activity's items.

A write this process made (an edit in the web UI) needs no re-read at all: `apply` takes the
records the writer holds (catalog.ShardWrite) and rewrites only the changed items' rows, then
notes the shard as read at the stat the writer took after writing, so the next refresh finds
nothing to do. That is only sound when the index held exactly the shard the write started
from; when it did not (another writer got in between, or the index was behind), the shard
is re-read as any changed shard is.

Locks: one Refresher runs in one thread at a time (the ItemIndex's lock) and in one process
at a time (an flock on `query.sqlite.lock`, waited for only when asked to: a reader never
waits for another process's refresh).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from appliance import storage
from appliance.agenda import Agenda
from appliance.catalog import Catalog, SchemaTooNewError, ShardStat, ShardWrite, is_folder_key
from appliance.datadir import DataDir
from appliance.fsutil import file_lock, try_lock
from appliance.query import rows
from appliance.query.schema import (
    analyze_if_grown,
    connect,
    header_ok,
    open_index,
    schema_problem,
    transaction,
)
from appliance.query.text import tokens

log = logging.getLogger(__name__)

Stat = ShardStat  # (mtime_ns, size, inode)

# Rows written per refresh transaction (whole folders; the last one may pass it).
_BATCH_ROWS = 20_000


class Refresher:
    """The writer of one index file, and what it last read of the shards and the agenda."""

    def __init__(self, data: DataDir, zone: ZoneInfo, path: Path, lock_path: Path) -> None:
        self.data = data
        self.zone = zone
        self.path = path
        self.lock_path = lock_path
        self.catalog = Catalog(data)
        self.agenda_path = data.state / "agenda.json"
        self.writer: sqlite3.Connection | None = None
        self.header_fd = -1  # kept open with the writer: see schema.header_ok
        self.db_ino: int | None = None  # the file our connections opened
        self.generation = 0  # bumped when that file is replaced: pooled readers reopen
        self._known: dict[str, Stat] = {}  # the shards table, in memory
        self._agenda_known: Stat | None = None
        self._warned: dict[str, Stat | None] = {}

    def run(self, *, wait: bool) -> int:
        """Read what changed; the number of shards (re)read. Without `wait`, nothing is done
        while another process refreshes."""
        shards = self._scan_shards()
        agenda = stat(self.agenda_path)
        db = stat(self.path)
        if (self.writer is not None and db is not None and db[2] == self.db_ino
                and shards == self._known and agenda == self._agenda_known
                and header_ok(self.header_fd)):
            return 0  # nothing changed: no lock, no write
        with try_lock(self.lock_path, wait=wait) as locked:
            if not locked:
                return 0  # another process is writing; readers see what it commits
            conn = self._open()
            self._load_known(conn)
            if agenda != self._agenda_known:
                self._refresh_agenda(conn, agenda)
            changed = [(key, st) for key, st in shards.items() if self._known.get(key) != st]
            count = self._refresh_shards(conn, changed)
            gone = [key for key in self._known if key not in shards]
            if gone:
                with transaction(conn):
                    for key in gone:
                        rows.delete_folder(conn, key)
                        conn.execute("DELETE FROM shards WHERE folder = ?", (key,))
                for key in gone:
                    self._known.pop(key, None)
            if count or gone:
                analyze_if_grown(conn)
            return count

    def apply(self, writes: Sequence[ShardWrite]) -> int:
        """Follow shard writes from the records they wrote, in one transaction; a shard the
        index did not hold as the write found it is re-read instead. The number of shards
        re-read."""
        with file_lock(self.lock_path):
            conn = self._open()
            keys = list(dict.fromkeys(w.folder_key for w in writes))
            held: dict[str, Stat] = {}
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                held.update((row[0], (row[1], row[2], row[3])) for row in conn.execute(
                    "SELECT folder, mtime_ns, size, ino FROM shards WHERE folder IN "
                    f"({', '.join('?' * len(chunk))})", chunk))
            now, behind, replaced = self._apply_writes(conn, writes, held)
            for key, st in now.items():
                self._known[key] = st
            if replaced:
                analyze_if_grown(conn)
            if not behind:
                return 0
            self._load_known(conn)  # as committed: _refresh_shards goes by it
            reread = []
            for key in behind:
                st = stat(self.catalog.shard_path(key))
                if st is None:
                    if key in held:
                        with transaction(conn):
                            rows.delete_folder(conn, key)
                            conn.execute("DELETE FROM shards WHERE folder = ?", (key,))
                        self._known.pop(key, None)
                elif st != held.get(key):
                    reread.append((key, st))
            count = self._refresh_shards(conn, reread)
            if count:
                analyze_if_grown(conn)
            return count

    def _apply_writes(self, conn: sqlite3.Connection, writes: Sequence[ShardWrite],
                      held: dict[str, Stat]) -> tuple[dict[str, Stat], set[str], bool]:
        """The writes that follow on what the index holds, applied in one transaction:
        ({folder: its stat now}, {folders to re-read instead}, whether any folder's rows
        were replaced whole)."""
        now: dict[str, Stat] = {}
        behind: set[str] = set()
        replaced = False
        titles: dict[str, str] = {}
        next_id: int | None = None
        with transaction(conn):
            for write in writes:
                key = write.folder_key
                if key in behind:
                    continue  # the re-read sees this write too
                current = now.get(key, held.get(key))
                if current == write.after:
                    continue  # read already (a refresh got to the new file first)
                if current != write.before:
                    behind.add(key)
                    continue
                self._titles(conn, key, write.records if write.changed is None
                             else write.changed, titles)
                if write.changed is None or not rows.update_rows(
                        conn, key, write.changed, titles, self.zone):
                    if write.records is None:  # an edit of rows the index lacks: read it
                        behind.add(key)
                        continue
                    if next_id is None:
                        next_id = (conn.execute("SELECT max(id) FROM items").fetchone()[0]
                                   or 0) + 1
                    self._titles(conn, key, write.records, titles)
                    next_id = rows.replace_folder(conn, key, write.records, titles,
                                                  self.zone, next_id, has_rows=True)
                    replaced = True
                conn.execute("INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?)",
                             (key, *write.after))
                now[key] = write.after
        return now, behind, replaced

    @staticmethod
    def _titles(conn: sqlite3.Connection, key: str, records: list[dict[str, Any]],
                titles: dict[str, str]) -> None:
        """Add the agenda titles of the records' activities to `titles` (not the whole
        agenda's: it only grows)."""
        wanted = {rows.activity_of(key, r) for r in records if isinstance(r, dict)}
        wanted -= titles.keys()
        if not wanted:
            return
        titles.update(dict.fromkeys(wanted, ""))
        slugs = list(wanted)
        for start in range(0, len(slugs), 500):
            chunk = slugs[start:start + 500]
            titles.update(conn.execute(
                "SELECT slug, title FROM activities WHERE slug IN "
                f"({', '.join('?' * len(chunk))})", chunk))

    def discard(self, ino: int | None) -> None:
        """Drop a damaged index file (unless another process has replaced it already), so
        that the next run builds a new one."""
        with file_lock(self.lock_path):
            self.close()
            st = stat(self.path)
            if st is not None and st[2] == ino:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)

    def close(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(sqlite3.Error):
                self.writer.close()
            self.writer = None
        if self.header_fd >= 0:
            os.close(self.header_fd)
            self.header_fd = -1

    def adopt(self) -> bool:
        """After a refresh the disk refused (full, read-only): let readers use the index
        file as it stands, when it is a sound one of ours (checked read-only). A stale
        page beats an error page; the next refresh catches up."""
        st = stat(self.path)
        if st is None:
            return False
        if st[2] == self.db_ino:
            return True
        try:
            with contextlib.closing(connect(self.path, writer=False, frozen=True)) as conn:
                if schema_problem(conn) is not None:
                    return False
        except sqlite3.DatabaseError:
            return False
        self.db_ino = st[2]
        self.generation += 1
        return True

    def _open(self) -> sqlite3.Connection:
        """The writer connection: kept while its file stays; else the file opened again,
        checked, rebuilt if need be (schema.open_index). Called under the flock."""
        st = stat(self.path)
        if self.writer is not None and st is not None and st[2] == self.db_ino \
                and header_ok(self.header_fd):
            return self.writer
        self.close()
        self.writer = open_index(self.path, self.zone)
        self.header_fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        ino = os.fstat(self.header_fd).st_ino
        if ino != self.db_ino:
            self.db_ino = ino
            self.generation += 1
        self._known, self._agenda_known = {}, None
        return self.writer

    def _scan_shards(self) -> dict[str, Stat]:
        """{folder key: stat} of every shard file, as Catalog names them."""
        found: dict[str, Stat] = {}
        for year in _scandir(self.data.catalog):
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

    def _load_known(self, conn: sqlite3.Connection) -> None:
        """The shards table and agenda stat as committed (another process may have moved
        them on since we last looked)."""
        self._known = {row[0]: (row[1], row[2], row[3]) for row in
                       conn.execute("SELECT folder, mtime_ns, size, ino FROM shards")}
        row = conn.execute("SELECT value FROM meta WHERE key = 'agenda'").fetchone()
        self._agenda_known = tuple(json.loads(row[0])) if row else None  # type: ignore[assignment]

    def _refresh_agenda(self, conn: sqlite3.Connection, st: Stat | None) -> None:
        try:
            activities = Agenda(self.data.state).activities() if st else []
        except (storage.CorruptStateError, ValueError, KeyError, TypeError) as exc:
            if self._warned.get("agenda") != st:
                log.warning("agenda %s could not be read (%s); keeping the activities as "
                            "last read", self.agenda_path, exc)
                self._warned["agenda"] = st
            return
        self._warned.pop("agenda", None)
        text = rows.storable
        new = {a.slug: (text(a.title), text(a.area), text(a.place)) for a in activities}
        old = {row[0]: (row[1], row[2], row[3]) for row in
               conn.execute("SELECT slug, title, area, place FROM activities")}
        with transaction(conn):
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
            if st is None:
                conn.execute("DELETE FROM meta WHERE key = 'agenda'")
            else:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('agenda', ?)",
                             (json.dumps(st),))
        self._agenda_known = st

    def _refresh_shards(self, conn: sqlite3.Connection, changed: list[tuple[str, Stat]]) -> int:
        """Re-read the changed shards and replace their folders' rows. Each folder changes
        whole within one transaction; a transaction gathers folders up to _BATCH_ROWS rows
        (a first build commits a few dozen times, not once per shard)."""
        count = 0
        pending: list[tuple[str, Stat]] = []
        rows_in_batch = 0
        titles = dict(conn.execute("SELECT slug, title FROM activities").fetchall())
        next_id = (conn.execute("SELECT max(id) FROM items").fetchone()[0] or 0) + 1
        try:
            for key, st in changed:
                records = self._read_shard(key, st)
                if records is None:
                    continue
                if not conn.in_transaction:
                    conn.execute("BEGIN IMMEDIATE")
                next_id = rows.replace_folder(conn, key, records, titles, self.zone,
                                              next_id, has_rows=key in self._known)
                conn.execute("INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?)", (key, *st))
                pending.append((key, st))
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

    def _committed(self, pending: list[tuple[str, Stat]]) -> int:
        for key, st in pending:
            self._known[key] = st
        count = len(pending)
        pending.clear()
        return count

    def _read_shard(self, key: str, st: Stat) -> list[dict[str, Any]] | None:
        try:
            records = self.catalog.read_shard(key)
        except (storage.CorruptStateError, SchemaTooNewError, ValueError, OSError) as exc:
            # Keep what we had; not marked as read, so the next refresh tries again.
            if self._warned.get(key) != st:
                log.warning("catalog shard %s could not be read (%s); the query index keeps "
                            "its previous items until it can", key, exc)
                self._warned[key] = st
            return None
        self._warned.pop(key, None)
        return records


def stat(path: Path) -> Stat | None:
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
