"""The catalog: an index of the archive, one TinyDB shard per activity folder.

The archive is the truth (design decision 1); the catalog says what each file is. Sharding
by archive folder keeps every TinyDB file small (one event, not the whole archive), so a
write costs the same in year five as on day one, and a damaged shard loses the index of one
folder, which `acopio check --repair` rebuilds from the files themselves.

A shard lives at `state/catalog/<YYYY>/<MM>/<folder>.json` for the archive folder
`archive/<YYYY>/<MM>/<folder>/`. Its `_meta` table holds the schema version; older shards are
migrated in order when next written, and read through the same migrations meanwhile.

A write can tell a listener what it made (`after_write`, a `ShardWrite`): the records, and
the shard file's (mtime_ns, size, inode) before and after, both taken under the shard's lock.
That is how the web process's query index follows its own edits without reading the shard
again (appliance/query); the catalog knows nothing of who listens.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from tinydb import Query, TinyDB
from tinydb.table import Document

from appliance import fields, storage
from appliance.datadir import DataDir
from appliance.fsutil import file_lock
from appliance.keyindex import KeyIndex

SCHEMA_VERSION = 2
ITEMS = "items"
META = "_meta"

Migration = Callable[[dict[str, Any]], dict[str, Any]]
# MIGRATIONS[n] turns an item record of schema n into schema n + 1. Append, never edit.
MIGRATIONS: Mapping[int, Migration] = {
    1: fields.with_defaults,  # 2: editorial fields (caption, pick, approval, history, ...)
}

_FOLDER_KEY = re.compile(r"^\d{4}/\d{2}/\d{4}-\d{2}-\d{2}_[a-z0-9][a-z0-9-]{0,79}$")


# A shard file's (mtime_ns, size, inode): which version of it a reader or writer saw.
ShardStat = tuple[int, int, int]


class ShardWrite(NamedTuple):
    """One durable write of a shard, as a listener (the query index) is told of it."""

    folder_key: str
    # The records this write changed, as stored now; None when any may have (the shard was
    # migrated to this schema by the write, or records were taken out of it).
    changed: list[dict[str, Any]] | None
    # Every record of the shard after the write, or None when `changed` says it all (an
    # edit: a listener that needs more reads the shard again). Not kept for edits: a batch
    # edit over 50 folders held 25,000 records at once and left the web process 85 MB
    # larger (`./scripts/bench web`).
    records: list[dict[str, Any]] | None
    before: ShardStat | None  # the file the write read (None: there was none)
    after: ShardStat  # the file it made


def shard_stat(st: os.stat_result) -> ShardStat:
    return st.st_mtime_ns, st.st_size, st.st_ino


class _Stats:
    """Collects storage.transaction's `written` stats."""

    def __init__(self) -> None:
        self.before: ShardStat | None = None
        self.after: ShardStat | None = None

    def __call__(self, before: os.stat_result | None, after: os.stat_result) -> None:
        self.before = shard_stat(before) if before is not None else None
        self.after = shard_stat(after)


class SchemaTooNewError(RuntimeError):
    """A shard written by a newer Acopio; this version must not touch it."""


def is_folder_key(key: str) -> bool:
    return bool(_FOLDER_KEY.match(key))


class Catalog:
    def __init__(
        self,
        data: DataDir,
        *,
        schema_version: int = SCHEMA_VERSION,
        migrations: Mapping[int, Migration] = MIGRATIONS,
    ) -> None:
        self.data = data
        self.schema_version = schema_version
        self.migrations = migrations
        self.by_hash = KeyIndex(data.index / "sha256", data.tmp)

    # -- shards -------------------------------------------------------------------------

    def shard_path(self, folder_key: str) -> Path:
        if not is_folder_key(folder_key):
            raise ValueError(f"not an archive folder key: {folder_key!r}")
        return self.data.catalog / f"{folder_key}.json"

    def folder_keys(self) -> list[str]:
        """Every shard's archive folder key, oldest month first."""
        root = self.data.catalog
        if not root.is_dir():
            return []
        keys = []
        for path in root.glob("*/*/*.json"):
            key = path.relative_to(root).as_posix()[: -len(".json")]
            if is_folder_key(key):
                keys.append(key)
        return sorted(keys)

    def _migrate(self, db: TinyDB, path: Path) -> bool:
        """Bring the shard's records to the current schema; True when anything changed.
        Every write goes through here first: a garbled record stops it (CorruptStateError),
        as it stops a read, so nothing is written over a shard `check --repair` must see."""
        for doc in db.table(ITEMS).all():
            problem = _record_problem(dict(doc))
            if problem:
                raise storage.CorruptStateError(path, f"record {doc.doc_id}: {problem}")
        meta = db.table(META).get(doc_id=1)
        version = meta["schema_version"] if meta else self.schema_version
        if version > self.schema_version:
            raise SchemaTooNewError(
                f"{path}: catalog schema {version} is newer than this Acopio "
                f"({self.schema_version}); upgrade Acopio"
            )
        if version == self.schema_version and meta:
            return False
        items = db.table(ITEMS)
        docs = {doc.doc_id: dict(doc) for doc in items.all()}
        for step in range(version, self.schema_version):
            docs = {doc_id: self.migrations[step](record) for doc_id, record in docs.items()}
        # Replace whole records (a migration may rename or drop fields), in one write.
        items.truncate()
        items.insert_multiple(Document(record, doc_id=doc_id) for doc_id, record in docs.items())
        db.table(META).upsert(
            {"schema_version": self.schema_version}, Query().schema_version.exists()
        )
        return True

    def read_shard(self, folder_key: str) -> list[dict[str, Any]]:
        """The items of one shard, migrated in memory if the file is older. Damage raises."""
        path = self.shard_path(folder_key)
        raw = storage.read_json_file(path)
        if raw is None:
            return []
        meta = raw.get(META, {}).get("1")
        version = meta["schema_version"] if meta else self.schema_version
        if version > self.schema_version:
            raise SchemaTooNewError(f"{path}: catalog schema {version} is newer than this Acopio")
        docs = raw.get(ITEMS, {})
        if not isinstance(docs, dict):
            raise storage.CorruptStateError(path, "its items are not a JSON object")
        for doc_id, doc in docs.items():
            problem = _record_problem(doc)
            if problem:  # valid JSON, garbled record (a flipped bit in a key, a null path)
                raise storage.CorruptStateError(path, f"record {doc_id}: {problem}")
        records = [dict(doc) for doc in docs.values()]
        for step in range(version, self.schema_version):
            records = [self.migrations[step](r) for r in records]
        return records

    def upsert(self, folder_key: str, records: Iterable[dict[str, Any]], *,
               after_write: Callable[[ShardWrite], None] | None = None) -> None:
        """Insert or replace records (by sha256) in one locked, durable write.
        `after_write` is told of the write once the lock is released."""
        path = self.shard_path(folder_key)
        records = list(records)
        for record in records:
            problem = _record_problem(record)
            if problem:  # never written, so that no reader finds it and calls it damage
                raise ValueError(f"not a catalog record for {path}: {problem}")
        stats = _Stats()
        with storage.transaction(path, self.data.tmp,
                                 written=stats if after_write else None) as db:
            migrated = self._migrate(db, path)
            items = db.table(ITEMS)
            by_sha = {doc["sha256"]: doc.doc_id for doc in items.all()}
            for record in records:
                doc_id = by_sha.get(record["sha256"])
                if doc_id is None:
                    by_sha[record["sha256"]] = items.insert(record)
                else:
                    # Met again (a re-adopted copy): what people wrote about it stays.
                    kept = {k: v for k, v in record.items() if k not in fields.ALL}
                    items.update(kept, doc_ids=[doc_id])
            everything: list[dict[str, Any]] = items.all() if after_write else []
        self._index(records, folder_key)
        if after_write is not None and stats.after is not None:
            upserted = {r["sha256"] for r in records}
            after_write(ShardWrite(
                folder_key, None if migrated else
                [r for r in everything if r.get("sha256") in upserted],
                everything, stats.before, stats.after))

    def update(self, folder_key: str, sha256s: Iterable[str],
               change: Callable[[dict[str, Any]], dict[str, Any] | None], *,
               before_commit: Callable[[list[dict[str, Any]]], None] | None = None,
               after_write: Callable[[ShardWrite], None] | None = None,
               ) -> dict[str, dict[str, Any]]:
        """Read-modify-write some records of one shard under its lock (an edit).

        `change` gets each record and returns its new version, or None to leave it;
        `before_commit` sees the changed records while the lock is held, so whatever it
        writes (the edit log) is in the same order as the shard's writes; `after_write` is
        told of the write (when there was one) once the lock is released. Returns
        {sha256: record as it is now} for the records found; an exception writes nothing."""
        path = self.shard_path(folder_key)
        wanted = set(sha256s)
        found: dict[str, dict[str, Any]] = {}
        stats = _Stats()
        listened = after_write is not None
        everything: list[dict[str, Any]] = []  # the shard as written, when migrated
        stored: list[dict[str, Any]] = []  # the changed records as written
        with storage.transaction(path, self.data.tmp,
                                 written=stats if listened else None) as db:
            migrated = self._migrate(db, path)
            whole = listened and migrated  # then every record may have changed
            items = db.table(ITEMS)
            changed = []
            for doc in items.all():  # each a fresh copy (tinydb's Document is a dict)
                if doc.get("sha256") not in wanted:
                    if whole:
                        everything.append(doc)
                    continue
                new = change(dict(doc))
                if new is None:
                    found[doc["sha256"]] = dict(doc)
                    if whole:
                        everything.append(doc)
                    continue
                items.update(new, doc_ids=[doc.doc_id])
                found[doc["sha256"]] = new
                changed.append(new)
                if listened:
                    stored.append({**doc, **new})  # as TinyDB's update leaves it: merged
                    if whole:
                        everything.append(stored[-1])
            if changed and before_commit is not None:
                before_commit(changed)
        if after_write is not None and stats.after is not None:
            after_write(ShardWrite(folder_key, None, everything, stats.before, stats.after)
                        if migrated else
                        ShardWrite(folder_key, stored, None, stats.before, stats.after))
        return found

    def add_problems(self, folder_key: str, sha256: str,
                     problems: Iterable[dict[str, str]]) -> None:
        """Add problems found later (by a derivative job) to an item, under the shard lock;
        a code the item already has (the import's "damaged") is not added twice."""
        problems = list(problems)

        def add(current: list[Any]) -> list[Any]:
            known = {p.get("code") for p in current if isinstance(p, dict)}
            return current + [p for p in problems if p.get("code") not in known]

        self._change_problems(folder_key, sha256, add)

    def remove_problems(self, folder_key: str, sha256: str,
                        unwanted: Callable[[dict[str, Any]], bool]) -> None:
        """Drop the item's problems `unwanted` picks (a derivative made after all)."""
        self._change_problems(folder_key, sha256, lambda current: [
            p for p in current if not (isinstance(p, dict) and unwanted(p))])

    def _change_problems(self, folder_key: str, sha256: str,
                         change: Callable[[list[Any]], list[Any]]) -> None:
        path = self.shard_path(folder_key)
        with storage.transaction(path, self.data.tmp) as db:
            self._migrate(db, path)
            items = db.table(ITEMS)
            doc = items.get(Query().sha256 == sha256)
            if doc is None:
                return
            current = list(doc.get("problems") or [])
            changed = change(current)
            if changed != current:
                items.update({"problems": changed}, doc_ids=[doc.doc_id])

    def _index(self, records: Iterable[dict[str, Any]], folder_key: str) -> None:
        self.by_hash.put_many({
            r["sha256"]: {"folder": folder_key, "archive_path": r["archive_path"]}
            for r in records
        })

    def replace_shard(self, folder_key: str, records: list[dict[str, Any]]) -> None:
        """Write a shard from scratch (repair). The damaged file is replaced atomically."""
        path = self.shard_path(folder_key)
        data = {
            META: {"1": {"schema_version": self.schema_version}},
            ITEMS: {str(i): r for i, r in enumerate(records, start=1)},
        }
        with file_lock(storage.lock_path_for(path)):
            storage.SafeJSONStorage(path, self.data.tmp).write(data)
        self._index(records, folder_key)

    # -- queries ------------------------------------------------------------------------

    def items(self, *, month: str | None = None, folder_prefix: str | None = None
              ) -> Iterator[dict[str, Any]]:
        """Every item, shard by shard; `month` is "YYYY-MM"."""
        for key in self.folder_keys():
            if month and not key.startswith(month.replace("-", "/") + "/"):
                continue
            if folder_prefix and not key.startswith(folder_prefix):
                continue
            yield from self.read_shard(key)

    def lookup(self, sha256: str) -> dict[str, Any] | None:
        """The index entry for a content hash: {"folder", "archive_path"}, or None."""
        return self.by_hash.get(sha256)


def _record_problem(record: Any) -> str | None:
    """What makes a record unusable by every reader (check, the worker, sync, the pages),
    or None. Only what they all rely on: its content hash, its file, its size."""
    if not isinstance(record, dict):
        return "not an object"
    sha = record.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64 or sha.strip("0123456789abcdef"):
        return f"sha256 is not a content hash ({str(sha)[:80]!r})"
    if not isinstance(record.get("archive_path"), str) or not record["archive_path"]:
        return f"archive_path is not a path ({str(record.get('archive_path'))[:80]!r})"
    size = record.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return f"size is not a byte count ({str(size)[:80]!r})"
    return None
