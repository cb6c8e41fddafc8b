"""The outbox: everything the hub has not acknowledged yet, in the order to send it.

Nothing is queued when an item is imported or edited: the outbox is worked out from the
catalog and the acknowledgement indexes (store.py) each round, so an edit, a re-filing, a
catalog rebuilt by `acopio check --repair` or a crash at any moment can never leave
something unsent. An item is pending when

- its record's current revision (`store.record_digest`: any change to any field) is not the
  one the hub accepted: the metadata goes again, so edits made after a sync reach the hub;
- its original has no verified acknowledgement (`GET /sync/objects/<sha>?verify=1`) and was
  not evicted (an evicted original was acknowledged before it went).

Order: all metadata before any original (records are small, and the hub catalogues an item
from its record, so the office sees it at once); within each, approved items first, then
picked ones, then the rest, with rejected ones last; newest capture first within a tier
(what was just shot is what headquarters asks for).

Cost: reading every shard and one stat per item per index. A shard found entirely
acknowledged is remembered by its file identity (inode, mtime, size): acknowledgements are
never withdrawn, so until the shard is written again it is skipped without being read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from appliance.catalog import Catalog
from appliance.datadir import DataDir
from appliance.storage import CorruptStateError
from ingest.walk import display
from sync.kit.store import SyncStore

TIERS = ("approved", "picked", "other", "rejected")


def tier(record: dict[str, Any]) -> int:
    if record.get("approved"):
        return 0
    pick = record.get("pick")
    if pick == "picked":
        return 1
    if pick == "rejected":
        return 3
    return 2


def _captured_ts(record: dict[str, Any]) -> float:
    try:
        return datetime.fromisoformat(str(record.get("captured_at"))).timestamp()
    except (ValueError, OverflowError, OSError):
        return 0.0


def order_key(record: dict[str, Any]) -> tuple[int, float, str]:
    return (tier(record), -_captured_ts(record), str(record.get("sha256")))


@dataclass
class Original:
    sha256: str
    size: int
    name: str
    kind: str
    archive_path: str  # relative to the data folder
    tier: int
    captured: float = 0.0  # capture time (POSIX seconds), for the order

    @property
    def shown(self) -> str:
        """The name for a log line: a card's file may be named with a newline or bytes that
        are not UTF-8, which would forge or garble lines in the journal."""
        return display(os.fsencode(self.name))


@dataclass
class Pending:
    records: list[dict[str, Any]] = field(default_factory=list)
    originals: list[Original] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # shards that could not be read

    @property
    def items(self) -> int:
        return len({r["sha256"] for r in self.records} | {o.sha256 for o in self.originals})

    @property
    def bytes(self) -> int:
        return sum(o.size for o in self.originals)

    @property
    def empty(self) -> bool:
        return not self.records and not self.originals


class Outbox:
    def __init__(self, data: DataDir, store: SyncStore | None = None,
                 catalog: Catalog | None = None) -> None:
        self.data = data
        self.store = store or SyncStore(data)
        self.catalog = catalog or Catalog(data)
        self._clean: dict[str, tuple[int, int, int]] = {}
        self._forgotten = self.store.forgotten

    def _identity(self, key: str) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.catalog.shard_path(key))
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def scan(self) -> Pending:
        pending = Pending()
        if self.store.forgotten != self._forgotten:  # an acknowledgement withdrawn: a shard
            self._clean.clear()                      # clean before may not be any more
            self._forgotten = self.store.forgotten
        for key in self.catalog.folder_keys():
            identity = self._identity(key)
            if identity is not None and self._clean.get(key) == identity:
                continue
            try:
                records = self.catalog.read_shard(key)
            except CorruptStateError:
                pending.damaged.append(key)  # `acopio check --repair`; sent once rebuilt
                continue
            clean = True
            for record in records:
                if not self.store.record_acked(record):
                    pending.records.append(record)
                    clean = False
                sha = record["sha256"]
                if not self.store.object_acked(sha) and self.store.evicted.get(sha) is None:
                    pending.originals.append(Original(
                        sha, int(record.get("size") or 0),
                        str(record.get("original_name") or record["archive_path"]),
                        str(record.get("kind") or "other"), record["archive_path"],
                        tier(record), _captured_ts(record)))
                    clean = False
            if clean and identity is not None:
                self._clean[key] = identity
            else:
                self._clean.pop(key, None)
        pending.records.sort(key=order_key)
        pending.originals.sort(key=lambda o: (o.tier, -o.captured, o.sha256))
        return pending
