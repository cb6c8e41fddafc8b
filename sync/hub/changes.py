"""The hub's change feed: which catalog records changed since a kit's cursor (no Flask).

Whatever changes a record at the hub (a kit's records merged in, an upload completed, an
edit or an approval in the headquarters web UI, `acopio items set`, a re-filing) ends up in
its catalog shard, so the feed is derived from the shards alone, the way the query index is:
`refresh()` stats every shard and re-reads only those whose file changed (inode, mtime, size;
every write renames a new file into place), compares each record's digest with the last one
seen, and gives each changed record the next number of a per-hub sequence. The hub's agenda
gets a number the same way when its file changes.

`state/hub/changes.sqlite` holds per record its folder, digest, sequence number and the kits
that own it (`kits`), and per shard its stat. It is derived data: deleted or damaged, it is
rebuilt from the shards under a new generation, and cursors of the old generation count as
"from the start" (every record is sent again; the kit's merge makes that harmless).

A cursor is `<generation>-<sequence>`; `changes(kit, since)` answers the records the kit
owns whose number is past the cursor, oldest change first, and the next cursor.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from appliance import storage
from appliance.catalog import Catalog

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shards(key TEXT PRIMARY KEY, ino INTEGER, mtime_ns INTEGER,
                                  size INTEGER);
CREATE TABLE IF NOT EXISTS items(sha256 TEXT PRIMARY KEY, folder TEXT NOT NULL,
                                 digest TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS items_seq ON items(seq);
CREATE INDEX IF NOT EXISTS items_folder ON items(folder);
CREATE TABLE IF NOT EXISTS owners(kit TEXT NOT NULL, sha256 TEXT NOT NULL,
                                  PRIMARY KEY(kit, sha256)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS owners_sha ON owners(sha256);
"""

Stat = tuple[int, int, int]


def _stat(path: Path) -> Stat | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def digest(value: Any) -> str:
    return hashlib.sha256(storage.dump_json(value)).hexdigest()


def owners_in(path: Path, sha256s: list[str]) -> dict[str, list[str]]:
    """The kits that owned each item as the feed last saw them, read-only, for `acopio
    check --repair` on a hub: a shard rebuilt from the files alone would lose `kits`, and
    with them each kit's access to its items. {} when there is no usable feed."""
    if not path.exists() or not sha256s:
        return {}
    owners: dict[str, list[str]] = {}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            for sha in sha256s:
                kits = [row[0] for row in conn.execute(
                    "SELECT kit FROM owners WHERE sha256=? ORDER BY kit", (sha,))]
                if kits:
                    owners[sha] = kits
        finally:
            conn.close()
    except sqlite3.Error as exc:
        log.warning("hub change feed %s unreadable (%s): kits not restored", path, exc)
        return {}
    return owners


class ChangeFeed:
    def __init__(self, catalog: Catalog, path: Path, agenda_path: Path) -> None:
        self.catalog = catalog
        self.path = path
        self.agenda_path = agenda_path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    # -- the database --------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(2):
            try:
                conn = sqlite3.connect(self.path, check_same_thread=False,
                                       isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(SCHEMA)
                if conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone() \
                        is None:
                    conn.execute("INSERT INTO meta VALUES ('generation', ?), ('seq', '0')",
                                 (secrets.token_hex(4),))
                self._conn = conn
                return conn
            except sqlite3.DatabaseError as exc:
                if attempt:
                    raise
                log.warning("hub change feed %s is unusable (%s); rebuilding it from the "
                            "catalog", self.path, exc)
                self._discard()
        raise AssertionError("unreachable")

    def _discard(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}{suffix}")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._open()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- refresh -------------------------------------------------------------------------

    def refresh(self) -> None:
        with self._lock:
            try:
                self._refresh()
            except sqlite3.DatabaseError as exc:
                log.warning("hub change feed damaged (%s); rebuilding it", exc)
                self._discard()
                self._refresh()

    def _refresh(self) -> None:
        root = self.catalog.data.catalog
        now = {key: _stat(root / f"{key}.json") for key in self.catalog.folder_keys()}
        with self._transaction() as conn:
            known = {row[0]: (row[1], row[2], row[3])
                     for row in conn.execute("SELECT key, ino, mtime_ns, size FROM shards")}
            seq = int(conn.execute("SELECT value FROM meta WHERE key='seq'").fetchone()[0])
            for key in sorted(set(known) - set(now)):
                conn.execute("DELETE FROM shards WHERE key=?", (key,))
                self._forget_folder(conn, key, keep=set())
            for key, st in sorted(now.items()):
                if st is None or known.get(key) == st:
                    continue
                try:
                    records = self.catalog.read_shard(key)
                except (storage.CorruptStateError, OSError) as exc:
                    log.warning("hub change feed: shard %s unreadable (%s); skipped", key, exc)
                    continue
                seq = self._update_folder(conn, key, records, seq)
                conn.execute("INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?)", (key, *st))
            agenda = _stat(self.agenda_path)
            stored = {k: v for k, v in conn.execute(
                "SELECT key, value FROM meta WHERE key LIKE 'agenda_%'")}
            stat_text = repr(agenda)
            if stored.get("agenda_stat") != stat_text:
                value = digest(self.agenda())
                if stored.get("agenda_digest") != value:
                    seq += 1
                    conn.execute("INSERT OR REPLACE INTO meta VALUES ('agenda_seq', ?)",
                                 (str(seq),))
                    conn.execute("INSERT OR REPLACE INTO meta VALUES ('agenda_digest', ?)",
                                 (value,))
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('agenda_stat', ?)",
                             (stat_text,))
            conn.execute("UPDATE meta SET value=? WHERE key='seq'", (str(seq),))

    def _update_folder(self, conn: sqlite3.Connection, key: str,
                       records: list[dict[str, Any]], seq: int) -> int:
        seen = set()
        for record in records:
            sha = record.get("sha256")
            if not isinstance(sha, str):
                continue
            seen.add(sha)
            value = digest(record)
            row = conn.execute("SELECT digest, folder FROM items WHERE sha256=?",
                               (sha,)).fetchone()
            if row is not None and row[0] == value and row[1] == key:
                continue
            seq += 1
            conn.execute("INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?)",
                         (sha, key, value, seq))
            conn.execute("DELETE FROM owners WHERE sha256=?", (sha,))
            kits = record.get("kits") if isinstance(record.get("kits"), list) else []
            conn.executemany("INSERT OR IGNORE INTO owners VALUES (?, ?)",
                             [(kit, sha) for kit in kits if isinstance(kit, str)])
        self._forget_folder(conn, key, keep=seen)
        return seq

    @staticmethod
    def _forget_folder(conn: sqlite3.Connection, key: str, keep: set[str]) -> None:
        gone = [row[0] for row in conn.execute("SELECT sha256 FROM items WHERE folder=?",
                                                (key,)) if row[0] not in keep]
        for sha in gone:
            conn.execute("DELETE FROM items WHERE sha256=?", (sha,))
            conn.execute("DELETE FROM owners WHERE sha256=?", (sha,))

    # -- queries -------------------------------------------------------------------------

    def agenda(self) -> list[dict[str, Any]]:
        """The hub's agenda activities as stored (with whatever stamps they carry)."""
        try:
            raw = storage.read_json_file(self.agenda_path) or {}
        except storage.CorruptStateError:
            return []
        table = raw.get("activities", {})
        return [dict(v) for _, v in sorted(table.items(), key=lambda kv: int(kv[0]))] \
            if isinstance(table, dict) else []

    def changes(self, kit: str, since: str | None, limit: int
                ) -> tuple[list[tuple[str, str]], bool, str, bool]:
        """([(sha256, folder)] owned by `kit` changed after `since`, oldest first; whether
        the agenda changed; the next cursor; whether more are waiting)."""
        self.refresh()
        with self._lock:
            conn = self._open()
            generation = conn.execute(
                "SELECT value FROM meta WHERE key='generation'").fetchone()[0]
            top = int(conn.execute("SELECT value FROM meta WHERE key='seq'").fetchone()[0])
            after = 0
            if since:
                gen, _, number = since.partition("-")
                if gen == generation and number.isdigit():
                    after = min(int(number), top)
            rows = conn.execute(
                "SELECT i.sha256, i.folder, i.seq FROM items i JOIN owners o "
                "ON o.sha256 = i.sha256 AND o.kit = ? WHERE i.seq > ? ORDER BY i.seq "
                "LIMIT ?", (kit, after, limit + 1)).fetchall()
            agenda_row = conn.execute(
                "SELECT value FROM meta WHERE key='agenda_seq'").fetchone()
        more = len(rows) > limit
        rows = rows[:limit]
        agenda_changed = agenda_row is not None and int(agenda_row[0]) > after
        last = rows[-1][2] if more else top
        return [(r[0], r[1]) for r in rows], agenda_changed, f"{generation}-{last}", more

    def owners(self, sha256: str) -> list[str]:
        self.refresh()
        with self._lock:
            conn = self._open()
            return [r[0] for r in conn.execute(
                "SELECT kit FROM owners WHERE sha256=? ORDER BY kit", (sha256,))]
