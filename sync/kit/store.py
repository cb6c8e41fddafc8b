"""The kit's durable sync state, all under `state/sync/`.

    state/sync/credentials.json          hub URL, kit name and token (mode 0600; credentials.py)
    state/sync/acked/objects/ab/<sha>     originals the hub verified (GET /sync/objects ?verify=1)
    state/sync/acked/records/ab/<sha>     the digest of the record revision the hub accepted
    state/sync/uploads/ab/<sha>           tus upload URL of an original being sent (resume),
                                          or `sent`: its question to the hub went unanswered
    state/sync/evicted/ab/<sha>           originals removed from the kit for space (evict.py)
    state/sync/cursor.json               where the last `GET /sync/changes` ended
    state/sync/status.json               what the sync role is doing (status.py)

Each index is a `KeyIndex` (one small file per SHA-256, written atomically), so its cost per
item stays the same however large the archive grows, and an entry damaged by a crash reads
as absent: the item is then sent (or checked with the hub) again, never skipped. Nothing here
is ever removed from `acked/`: an acknowledgement is what makes eviction safe.

Acknowledgements of originals are written without their two fsyncs each and made durable
together with one `syncfs`: every `ACK_BATCH` of them or `ACK_WINDOW_S` after the first not
yet durable, at the end of a round, and before any eviction. Two fsyncs per file were 0.8 s
of the kit's time for 410 files in `./scripts/bench sync`, and on a box's SD card an fsync
costs tens of milliseconds. A kill -9 loses none of them (the kernel has the writes); a power
cut can lose those of the last seconds. Those items read as pending again, nothing is evicted
on them, and the next round sends them: a file larger than a chunk is not sent again (its
upload's creation answers "complete"), a smaller one is (its creation carries its bytes).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance import storage
from appliance.datadir import DataDir
from appliance.fsutil import atomic_write, syncfs
from appliance.keyindex import KeyIndex
from appliance.storage import dump_json

log = logging.getLogger(__name__)

ACK_BATCH = 64  # acknowledgements of originals made durable together, at most
ACK_WINDOW_S = 2.0  # and at the latest when one comes this long after the first not durable


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def record_digest(record: dict[str, Any]) -> str:
    """What identifies one revision of a catalog record on the wire: any change to any
    field (an edit, a re-filing, a merge from the hub, a problem found later) changes it."""
    return hashlib.sha256(dump_json(record)).hexdigest()[:32]


def sync_dir(data: DataDir) -> Path:
    return data.state / "sync"


class SyncStore:
    def __init__(self, data: DataDir) -> None:
        self.data = data
        self.root = sync_dir(data)
        tmp = data.tmp
        self.objects = KeyIndex(self.root / "acked" / "objects", tmp)
        self.records = KeyIndex(self.root / "acked" / "records", tmp)
        self.uploads = KeyIndex(self.root / "uploads", tmp)
        self.evicted = KeyIndex(self.root / "evicted", tmp)
        self.fetched = KeyIndex(self.root / "fetched", tmp)  # brought back: {"at": epoch s}
        self._unsynced_acks = 0
        self._unsynced_since = 0.0
        self._acks_lock = threading.Lock()
        self.forgotten = 0  # acknowledgements withdrawn (`unack`): outboxes look again

    @property
    def cursor_path(self) -> Path:
        return self.root / "cursor.json"

    @property
    def status_path(self) -> Path:
        return self.root / "status.json"

    @property
    def agenda_sent_path(self) -> Path:
        return self.root / "agenda-sent.json"

    def agenda_sent(self) -> str:
        """The digest of the agenda the hub last took from this kit ("" when none)."""
        raw = self._cache(self.agenda_sent_path, "the agenda is sent again")
        value = (raw or {}).get("digest", "")
        return value if isinstance(value, str) else ""

    def set_agenda_sent(self, digest: str) -> None:
        atomic_write(self.agenda_sent_path, dump_json({"digest": digest, "at": now_iso()}),
                     self.data.tmp)

    # -- acknowledgements ------------------------------------------------------------------

    def object_acked(self, sha256: str) -> bool:
        return self.objects.get(sha256) is not None

    def ack_object(self, sha256: str, size: int) -> None:
        """Written now; durable with the batch it ends (`sync_acks`)."""
        self.objects.put(sha256, {"size": size, "at": now_iso()}, durable=False)
        now = time.monotonic()
        with self._acks_lock:
            if not self._unsynced_acks:
                self._unsynced_since = now
            self._unsynced_acks += 1
            due = self._unsynced_acks >= ACK_BATCH or \
                now - self._unsynced_since >= ACK_WINDOW_S
        if due:
            self.sync_acks()

    def sync_acks(self, *, whoever: bool = False) -> None:
        """Make the acknowledgements this store wrote durable (one syncfs); `whoever`: those
        of any writer too, another store or process (eviction cannot know who wrote them)."""
        with self._acks_lock:
            if not (self._unsynced_acks or whoever):
                return
            syncfs(self.data.root)
            self._unsynced_acks = 0

    def unack(self, sha256: str) -> None:
        """The hub no longer holds this content, though it acknowledged it: its original and
        its record are pending again (sent again whole)."""
        self.objects.remove(sha256)
        self.records.remove(sha256)
        self.forgotten += 1

    def record_acked(self, record: dict[str, Any]) -> bool:
        entry = self.records.get(record["sha256"])
        return entry is not None and entry.get("digest") == record_digest(record)

    def ack_records(self, records: list[dict[str, Any]]) -> None:
        at = now_iso()
        self.records.put_many({r["sha256"]: {"digest": record_digest(r), "at": at}
                               for r in records})

    def forget_hub(self) -> int:
        """Paired with another hub: what the old one acknowledged means nothing to the new
        one. Forget it all (but the originals evicted: they are only at the old hub now);
        how many acknowledgements were forgotten."""
        count = 0
        for index in (self.records, self.objects):
            for sha in list(index.keys()):
                if index is self.objects and self.evicted.get(sha) is not None:
                    continue
                index.remove(sha)
                count += 1
        for sha in list(self.uploads.keys()):
            self.uploads.remove(sha)
        self.cursor_path.unlink(missing_ok=True)
        self.agenda_sent_path.unlink(missing_ok=True)
        return count

    # -- pull cursor -----------------------------------------------------------------------

    def cursor(self) -> str:
        raw = self._cache(self.cursor_path, "the hub's changes are read again from the start")
        value = (raw or {}).get("since", "")
        return value if isinstance(value, str) else str(value)

    def _cache(self, path: Path, consequence: str) -> dict[str, Any] | None:
        """A file that only saves work (the change cursor, the agenda last sent): damaged,
        it is moved aside and forgotten, and the work is done again (the merge takes a
        change twice the same way). It made every round fail, with no hint."""
        try:
            return storage.read_json_file(path)
        except storage.CorruptStateError as exc:
            aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            log.warning("%s is damaged (%s): moved aside as %s; %s", path, exc.reason,
                        aside.name, consequence)
            return None

    def set_cursor(self, cursor: Any) -> None:
        atomic_write(self.cursor_path, dump_json({"since": cursor, "at": now_iso()}),
                     self.data.tmp)
