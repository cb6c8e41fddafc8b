"""Storage pressure on the kit: evict originals the hub holds; fetch one back on demand.

When the archive disk has less than `sync.evict_below_mb` MiB free, originals the hub has
acknowledged (a verified `GET /sync/objects/<sha>?verify=1`, kept in `state/sync/acked/`)
are removed from the kit, oldest capture first, until there is that much free again.
Nothing unacknowledged is ever evicted; thumbnails, previews and the catalog record stay, so
the item is still browsed, described and approved on the kit, and shown "en la central".
When the hub is reachable it is also asked, just before each eviction, whether it still
holds the content (a plain GET: no re-hash); when it is not (at an event, where space runs
out), the acknowledgement alone decides.

Each eviction is written to `state/sync/evicted/ab/<sha256>` (durably, with the catalog
record as it was) before the file goes, so a crash in between leaves an item marked evicted
whose file is still there (the next round removes it), never a missing original nobody
accounts for. `acopio check` does not report an evicted item's missing original
(`is_evicted`).

`fetch_back` brings one back: `GET /sync/objects/<sha>/content` streamed to a temp file in
`archive/.incoming/` (hashed on the way), fsynced, read back past the page cache and
compared with the SHA-256, then linked under the item's current archive name (never
replacing a file) and the eviction mark removed. A crash leaves at most a temp file, which
`acopio check --repair` removes as debris.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from appliance.catalog import Catalog
from appliance.config import Config
from appliance.datadir import DataDir
from appliance.fsutil import fsync_dir, open_temp
from appliance.storage import CorruptStateError
from sync.kit.client import HubClient, SyncError
from sync.kit.outbox import _captured_ts
from sync.kit.store import SyncStore, now_iso

log = logging.getLogger(__name__)

MIB = 1024 * 1024
FETCHED_KEEP_S = 24 * 3600  # an original fetched back is evicted last for this long


def _data(where: DataDir | Config | str | os.PathLike[str]) -> DataDir:
    if isinstance(where, DataDir):
        return where
    if isinstance(where, Config):
        return DataDir.at(where.data_dir)
    return DataDir.at(where)


def is_evicted(data: DataDir | Config | str | os.PathLike[str], sha256: str) -> bool:
    """True when the kit removed this item's original for space (the hub holds it) and it
    has not come back since (fetched from the hub, or imported again from its card)."""
    root = _data(data)
    try:
        entry = SyncStore(root).evicted.get(sha256)
    except ValueError:  # not a SHA-256
        return False
    if entry is None:
        return False
    path = entry.get("archive_path") if isinstance(entry, dict) else None
    return not (isinstance(path, str) and (root.root / path).is_file())


class Evictor:
    def __init__(self, config: Config, data: DataDir | None = None,
                 store: SyncStore | None = None, catalog: Catalog | None = None) -> None:
        self.config = config
        self.data = data or DataDir.at(config.data_dir)
        self.store = store or SyncStore(self.data)
        self.catalog = catalog or Catalog(self.data)

    @property
    def threshold(self) -> int:
        return self.config.sync.evict_below_mb * MIB

    def free(self) -> int:
        root = self.data.archive if self.data.archive.is_dir() else self.data.root
        return shutil.disk_usage(root).free

    def needed(self) -> bool:
        return self.threshold > 0 and self.free() < self.threshold

    def candidates(self) -> list[dict[str, Any]]:
        """Acknowledged items whose original is still on the kit, oldest capture first, and
        those someone fetched back in the last `FETCHED_KEEP_S` last of all (the oldest
        capture is the first to go: a photo fetched for today's work went again a round
        later)."""
        out = []
        for key in self.catalog.folder_keys():
            try:
                records = self.catalog.read_shard(key)
            except CorruptStateError:
                continue
            for record in records:
                sha = record["sha256"]
                if self.store.object_acked(sha):
                    entry = self.store.evicted.get(sha)
                    if entry is None or (self.data.root / record["archive_path"]).exists():
                        out.append(record)
        recent = time.time() - FETCHED_KEEP_S

        def fetched_lately(sha: str) -> bool:
            entry = self.store.fetched.get(sha)
            at = entry.get("at") if isinstance(entry, dict) else None
            return isinstance(at, int | float) and at > recent

        out.sort(key=lambda r: (fetched_lately(r["sha256"]), _captured_ts(r), r["sha256"]))
        return out

    def run(self, client: HubClient | None = None) -> list[str]:
        """Evict while the disk is below the threshold; the SHA-256s evicted."""
        if not self.needed():
            return []
        # never evict on an acknowledgement a power cut can undo
        self.store.sync_acks(whoever=True)
        evicted: list[str] = []
        for record in self.candidates():
            if not self.needed():
                break
            sha = record["sha256"]
            if client is not None:
                try:
                    if client.object_status(sha) is None:
                        log.warning("the hub no longer holds %s; it stays on the kit and is "
                                    "sent again", sha)
                        self.store.unack(sha)
                        continue
                except SyncError:
                    client = None  # gone meanwhile: the acknowledgements decide
            if self.evict(record):
                evicted.append(sha)
        if evicted:
            log.info("evicted %d originals the hub holds (%d MiB free now, threshold %d MiB)",
                     len(evicted), self.free() // MIB, self.config.sync.evict_below_mb)
        elif self.needed():
            log.warning("disk below sync.evict_below_mb (%d MiB free) and nothing the hub "
                        "has acknowledged left to evict", self.free() // MIB)
        return evicted

    def evict(self, record: dict[str, Any]) -> bool:
        """Remove one acknowledged original (marking it first). False when not allowed."""
        sha = record["sha256"]
        if not self.store.object_acked(sha):
            return False  # never without the hub's verified acknowledgement
        path = self.data.root / record["archive_path"]
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None and st.st_size != record.get("size"):
            log.warning("%s: size on disk differs from the catalog; not evicted (run "
                        "`acopio check`)", record["archive_path"])
            return False
        # The record goes with the mark: should the catalog shard ever be rebuilt from the
        # files (`acopio check --repair`), this is what knows the item without its file.
        self.store.evicted.put(sha, {"archive_path": record["archive_path"],
                                     "size": record.get("size"), "at": now_iso(),
                                     "record": record})
        if st is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            fsync_dir(path.parent)
        return True


class FetchError(RuntimeError):
    pass


def fetch_back(config: Config, sha256: str, client: HubClient | None = None) -> Path:
    """Restore an evicted original from the hub, byte for byte; its path. Idempotent: an
    original already on the kit is left as it is."""
    from ingest.copy import ReadBack, VerifyError
    from sync.kit import credentials

    data = DataDir.at(config.data_dir)
    store = SyncStore(data)
    entry = Catalog(data).lookup(sha256)
    if entry is None:
        raise FetchError(f"no item {sha256} in the catalog")
    dest = data.root / entry["archive_path"]
    size = 0
    for record in Catalog(data).read_shard(entry["folder"]):
        if record["sha256"] == sha256:
            size = int(record.get("size") or 0)
    if dest.exists():
        store.evicted.remove(sha256)
        return dest
    if client is None:
        paired = credentials.load(data)
        if paired is None:
            raise FetchError("this kit is not paired with a hub (`acopio sync pair`)")
        client = HubClient(config.sync.hub_url or paired.hub_url, paired.token,
                           ca_file=config.sync.ca_file)
    data.staging.mkdir(parents=True, exist_ok=True)
    fd, tmp = open_temp(data.staging)  # flocked: alive, not debris for a sweep
    try:
        with os.fdopen(os.dup(fd), "wb") as out:
            got = client.fetch_content(sha256, out, size=size)
            out.flush()
            os.fsync(out.fileno())
        if got != sha256:
            raise FetchError(f"the hub sent content with SHA-256 {got}, not {sha256}; "
                             "nothing was restored")
        try:
            ReadBack().verify(tmp, sha256, os.fstat(fd).st_size)
        except VerifyError as exc:
            raise FetchError(str(exc)) from exc
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(tmp, dest)  # never replaces a file
        except FileExistsError:
            actual, _ = ReadBack().sha256(dest)
            if actual != sha256:
                raise FetchError(f"{entry['archive_path']} exists with other content; "
                                 "nothing was restored") from None
        fsync_dir(dest.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.close(fd)
    fsync_dir(data.staging)
    store.fetched.put(sha256, {"at": time.time()})  # evicted last for a while
    store.evicted.remove(sha256)
    log.info("restored %s from the hub (%s)", entry["archive_path"], sha256)
    return _follow(config, data, sha256) or dest


def _follow(config: Config, data: DataDir, sha256: str) -> Path | None:
    """Where the item is now, when a sync merge filed it elsewhere while its original was
    away (the move could not happen without the file) and it has followed now."""
    from appliance.refile import RefileError, Refiler

    try:
        moved = Refiler(config, data).follow([sha256], by="hub")
    except RefileError as exc:
        log.warning("item %s stays where it is, though the hub filed it elsewhere: %s",
                    sha256, exc)
        return None
    return data.root / moved[0]["archive_path"] if moved else None
