"""The hub's archive of every kit: verified uploads placed, records merged (no Flask here).

The hub's data folder is an ordinary Acopio data folder: originals in the same layout
(`archive/YYYY/MM/<folder>/<name>`), the same catalog shards, so `acopio items`, `acopio
check`, the query index and the web UI work on it unchanged. A hub record is the kit's
record (merged, see sync.merge) plus `kits` (the kits that sent the original, verified) and
`sources` (per kit, its own `archive_path`). The same content from two kits is one file and
one record.

Ownership is proof of possession: a kit owns an item once the hub has received the whole
original from that kit and verified it. Records a kit sends for content it does not own yet
(metadata before originals, or content another kit already sent) are kept apart, per kit, in
`state/hub/pending/<kit>/` and merged into the catalog when that kit's upload of it is
verified. So knowing a hash never lets a kit read, claim or change another kit's item; the
price is that a kit sends content the hub already has (stored once all the same).

`state/hub/` beside the usual state: `kits.json` and `pairing.json` (sync.hub.kits),
`uploads/<kit>/` (sync.hub.uploads), `pending/<kit>/ab/<sha256>` (records waiting for their
original), `changes.sqlite` (sync.hub.changes), `corrupt/` (originals that failed a
re-verification, moved out of the archive, never deleted), `spool/` (request bodies being
received, see sync.hub.server), `tmp/`.
"""

from __future__ import annotations

import contextlib
import copy as _copy
import errno
import logging
import os
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tinydb import Query

from appliance import storage
from appliance.agenda import Agenda
from appliance.catalog import Catalog, is_folder_key
from appliance.config import Config
from appliance.datadir import DataDir
from appliance.fsutil import fsync_dir, hold_temp, remove_debris, temp_name
from appliance.keyindex import KeyIndex
from ingest import copy, filing, kinds, records
from sync.hub.changes import ChangeFeed
from sync.hub.contact import Contacts
from sync.hub.derivatives import DerivativeBatcher
from sync.hub.keeper import Keeper
from sync.hub.kits import Kits, check_kit_name
from sync.hub.uploads import Upload, UploadError, Uploads, is_sha256

log = logging.getLogger(__name__)

HUB_NODE = "hub"  # the hub's node name in hybrid logical clock stamps
# Where the original lies at the hub: the hub's own, never taken from a kit's record.
PLACEMENT = ("archive_path", "folder", "activity", "filed_by")
# Only the hub writes these.
HUB_ONLY = ("kits", "sources", "derivatives")
# Not sent back to kits in the change feed: where the file lies at the hub, and the hub's
# bookkeeping. `folder` and `activity` are sent (merged fields: a re-filing at either end
# moves the file at the other), except for an item the hub described from its file because
# the kit's record had not come yet (its filing is not news to the kit).
NOT_SENT = ("archive_path", "filed_by", *HUB_ONLY, "described_by")
MAX_RECORD_BYTES = 256 * 1024
UPLOAD_IDLE_DAYS = 30  # an upload nobody wrote to for this long is deleted at start
DONE_MARKER_DAYS = 1  # "already here" uploads answered at creation
SHARDS_KEPT = 8  # parsed catalog shards the hub keeps for questions (Hub._shard)
REQUEUE_WINDOW_S = 600  # derivatives looked at again at start: files kept this long before
# the last one (sync.hub.derivatives)


class RecordError(ValueError):
    pass


@dataclass
class _KeepBatch:
    """Uploads placed and not yet let go: their new records, by folder, written together."""

    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    kept: list[tuple[Upload, dict[str, Any]]] = field(default_factory=list)
    shas: set[str] = field(default_factory=set)

    def add(self, folder: str, upload: Upload, record: dict[str, Any]) -> None:
        self.records.setdefault(folder, []).append(record)
        self.kept.append((upload, record))


def _now() -> datetime:
    return datetime.now(UTC)


class Hub:
    def __init__(self, config: Config, data: DataDir | None = None) -> None:
        self.config = config
        self.data = data or DataDir.at(config.data_dir)
        self.data.ensure()
        self.state = self.data.state / "hub"
        self.tmp = self.state / "tmp"
        for path in (self.state, self.tmp, self.state / "uploads", self.state / "pending"):
            path.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(self.data)
        self.kits = Kits(self.state, code_minutes=config.hub.pair_code_minutes)
        self.contacts = Contacts(self.state)
        self.uploads = Uploads(self.state / "uploads", self.tmp)
        self.derivatives = DerivativeBatcher(self.data)
        self.keeper = Keeper(self._keep_queued)
        self._keep_failed: dict[str, Exception] = {}  # sha256 -> why its last keep failed
        self._shards: OrderedDict[str, tuple[tuple[int, int, int], list[dict[str, Any]]]] = \
            OrderedDict()
        self._shards_lock = threading.Lock()
        self._safe_folders: set[str] = set()  # archive folders checked to lie inside it
        self.agenda = Agenda(self.data.state)
        self.feed = ChangeFeed(self.catalog, self.state / "changes.sqlite", self.agenda.path)
        self.max_upload = int(config.hub.max_upload_gb * 1024**3)
        # One writer of hub records at a time (placing, merging, dropping), per process;
        # the catalog's shard locks keep other processes (the UI, the CLI) consistent.
        self.lock = threading.RLock()
        self._local = threading.local()
        self._clock: Any = None

    # -- helpers ---------------------------------------------------------------------------

    @property
    def reader(self) -> copy.ReadBack:
        reader = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._local.reader = copy.ReadBack()
        return reader

    @property
    def clock(self) -> Any:
        if self._clock is None:
            from sync.hlc import Clock

            self._clock = Clock(self.data.state, HUB_NODE)  # shared with the hub's UI
        return self._clock

    def pending(self, kit: str) -> KeyIndex:
        return pending_records(self.state, kit)

    def record(self, sha256: str) -> dict[str, Any] | None:
        """The catalog record of `sha256` (None when the hub has none)."""
        record = self._stored(sha256)
        return None if record is None else _copy.deepcopy(record)

    def _stored(self, sha256: str) -> dict[str, Any] | None:
        """The record of `sha256` as the shard cache holds it: to read, never to change."""
        entry = self.catalog.lookup(sha256)
        folder = entry.get("folder") if entry else None
        if isinstance(folder, str) and is_folder_key(folder):
            for record in self._shard(folder):
                if record.get("sha256") == sha256:
                    return record
        return None

    def _shard(self, folder: str) -> list[dict[str, Any]]:
        """A shard's records, parsed again only when its file changed (every question a kit
        asks reads one record of a shard of hundreds; bench_sync measured the parsing at a
        tenth of the hub's time). The last few shards are kept; never handed out as is."""
        path = self.catalog.shard_path(folder)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return []
        seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._shards_lock:
            cached = self._shards.get(folder)
            if cached is not None and cached[0] == seen:
                self._shards.move_to_end(folder)
                return cached[1]
        records = self.catalog.read_shard(folder)
        with self._shards_lock:
            self._shards[folder] = (seen, records)
            self._shards.move_to_end(folder)
            while len(self._shards) > SHARDS_KEPT:
                self._shards.popitem(last=False)
        return records

    def original_path(self, record: dict[str, Any]) -> Path | None:
        """The archived file of a record: a regular file (not a link) in a folder that lies
        inside the archive. The hub writes every `archive_path` itself; the check is cheap
        (each folder resolved once), as it is made for every question a kit asks."""
        rel = record.get("archive_path")
        if not isinstance(rel, str) or not rel.startswith("archive/") or "\0" in rel or \
                any(part in ("", ".", "..") for part in rel.split("/")):
            return None
        path = self.data.root / rel
        folder = str(path.parent)
        if folder not in self._safe_folders:
            try:
                inside = path.parent.resolve(strict=True).is_relative_to(
                    self.data.archive.resolve())
            except OSError:
                return None
            if not inside:
                return None
            self._safe_folders.add(folder)
        try:
            return path if stat.S_ISREG(os.lstat(path).st_mode) else None
        except OSError:
            return None

    def owned(self, kit: str, sha256: str) -> dict[str, Any] | None:
        """The record, when `kit` owns that content and its original is in the archive."""
        if not is_sha256(sha256):
            return None
        record = self.record(sha256)
        if record is None or kit not in (record.get("kits") or []):
            return None
        return record if self.original_path(record) is not None else None

    def missing(self, kit: str, sha256s: list[str]) -> list[str]:
        """Of contents `kit` was told the hub holds for it, those it does not hold now: set
        aside as corrupt (`check --deep --repair`, a `?verify=1`), its file lost, or the hub
        restored from an older backup. The kit sends them again (sync.kit.audit)."""
        gone = []
        for sha in sha256s:
            record = self._stored(sha)
            if record is None or kit not in (record.get("kits") or []) or \
                    self.original_path(record) is None:
                gone.append(sha)
        return gone

    # -- uploads ---------------------------------------------------------------------------

    def create_upload(self, kit: str, length: int, metadata: dict[str, str]) -> Upload:
        sha = metadata.get("sha256", "").lower()
        if not is_sha256(sha):
            raise UploadError(400, "bad_metadata", "Upload-Metadata must carry `sha256`: the "
                              "hex SHA-256 of the whole file")
        metadata["sha256"] = sha
        if length > self.max_upload:
            raise UploadError(413, "too_large", f"Upload-Length {length} is over the hub's "
                              f"limit of {self.max_upload} bytes (hub.max_upload_gb)")
        self._check_space(length)
        self.keeper.wait(sha)  # sent again while its last upload is being kept
        record = self.owned(kit, sha)  # None at once for content never seen here
        if record is not None and record.get("size") == length:
            # Sent before by this kit (its acknowledgement was lost): nothing to send.
            return self.uploads.create(kit, length, metadata, done=True)
        upload = self.uploads.create(kit, length, metadata)
        if length == 0:
            self.finish(upload)
        return upload

    def _check_space(self, length: int) -> None:
        st = os.statvfs(self.uploads.root)
        free = st.f_bavail * st.f_frsize
        reserve = self.config.ingest.min_free_mb * 1024 * 1024
        if free - length < reserve:
            log.warning("refused an upload of %d bytes: %d MiB free, reserve %d MiB "
                        "(ingest.min_free_mb)", length, free // 2**20,
                        self.config.ingest.min_free_mb)
            raise UploadError(507, "insufficient_storage",
                              f"the hub's disk cannot take {length} bytes now "
                              f"({free // 2**20} MiB free); try later")

    def drop_idle_uploads(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        dropped = 0
        for upload in list(self.uploads.all()):
            limit = DONE_MARKER_DAYS if upload.done else UPLOAD_IDLE_DAYS
            if now - upload.updated > limit * 86400:
                with contextlib.suppress(UploadError), \
                        self.uploads.locked(upload.kit, upload.id) as current:
                    self.uploads.delete(current)
                    dropped += 1
        return dropped

    def finish(self, upload: Upload, *, wait: bool = True) -> None:
        """An upload whose last byte arrived: keep it (bytes fsynced, placed, catalogued) only
        when it is the announced content, by the hash of the bytes as they came (or, when
        this process did not see them all, read back from the disk); else 460 and it is
        dropped. With `wait=False` (the final PATCH) the keep is left to the keeper's thread
        (sync.hub.keeper) and this returns once the hash is checked. The acknowledgement is
        a read back later (`object_status(verify=True)`). Call under the upload's lock."""
        path = self.uploads.data_path(upload)
        received = self.uploads.received_sha256(upload)
        if received is not None:
            actual, size = received, os.stat(path).st_size
        else:
            actual, size = self.reader.sha256(path)
        if actual != upload.sha256 or size != upload.length:
            self.uploads.delete(upload)
            log.warning("kit %s: upload %s of %s bytes has SHA-256 %s, not the announced %s; "
                        "dropped (the kit sends it again)", upload.kit, upload.id, size,
                        actual, upload.sha256)
            raise UploadError(460, "checksum_mismatch",
                              f"the whole file's SHA-256 is {actual}, not the announced "
                              f"{upload.sha256}; the upload was dropped: start again",
                              offset=0)
        if wait:
            self._keep_uploads([upload])
        else:
            self.keeper.submit(upload.kit, upload.id, upload.sha256)

    def _keep_queued(self, batch: list[tuple[str, str, str]]) -> None:
        """The keeper's batch: each upload under its lock, all kept together."""
        with contextlib.ExitStack() as held:
            uploads = []
            for kit, upload_id, _sha in batch:
                try:
                    upload = held.enter_context(self.uploads.locked(kit, upload_id,
                                                                    wait=True))
                except UploadError:
                    continue  # deleted meanwhile
                if upload.complete and not upload.done:
                    uploads.append(upload)
            self._keep_uploads(uploads)

    def _keep_uploads(self, uploads: list[Upload]) -> None:
        """Keep complete, checked uploads (under their locks): their bytes made durable,
        placed, and their new records written one shard write per activity folder. One that
        fails (a full disk) stays complete and unkept: a kit asking about it has it kept
        again then (`object_status`), and the hub's next start does too."""
        durable = []
        for upload in uploads:
            try:
                self.uploads.sync_data(upload)
                durable.append(upload)
            except OSError as exc:
                self._failed_keep(upload, exc)
        with self.lock:
            batch = _KeepBatch()
            for upload in durable:
                if upload.sha256 in batch.shas:  # two kits, one content: the first is kept
                    self._commit_or_fail(batch)  # first, the second then finds it here
                    batch = _KeepBatch()
                try:
                    self._keep(upload, self.uploads.data_path(upload), batch)
                    batch.shas.add(upload.sha256)
                except (OSError, storage.CorruptStateError) as exc:
                    self._failed_keep(upload, exc)
            self._commit_or_fail(batch)

    def _failed_keep(self, upload: Upload, exc: Exception) -> None:
        self._keep_failed[upload.sha256] = exc
        log.error("kit %s: could not keep upload %s of %s (%s); kept when the kit asks "
                  "about it again, or at the hub's next start", upload.kit, upload.id,
                  upload.sha256[:12], exc)

    def _commit_or_fail(self, batch: _KeepBatch) -> None:
        try:
            self._commit(batch)
        except (OSError, storage.CorruptStateError) as exc:
            for upload, _record in batch.kept:
                if not upload.done:
                    self._failed_keep(upload, exc)

    def _keep_again(self, kit: str, sha256: str) -> None:
        """A kit asks about content whose keep failed: keep its complete uploads of it now;
        still failing, the kit is told so (507 for a full disk, else 500) and asks later."""
        waiting = False
        for upload in list(self.uploads.all()):
            if upload.kit != kit or upload.sha256 != sha256 or upload.done or \
                    not upload.complete:
                continue
            with contextlib.suppress(UploadError), \
                    self.uploads.locked(kit, upload.id, wait=True) as current:
                if current.complete and not current.done:
                    try:
                        self.finish(current)  # a 460 here drops it: the kit sends it again
                    except OSError as exc:
                        self._failed_keep(current, exc)
                    waiting = waiting or not current.done
        failed = self._keep_failed.get(sha256)
        if failed is None:
            return
        if not waiting:  # nothing of it left to keep (it went): the kit sends it again
            self._keep_failed.pop(sha256, None)
            return
        full = isinstance(failed, OSError) and failed.errno in (errno.ENOSPC, errno.EDQUOT)
        raise UploadError(507 if full else 500, "keep_failed",
                          f"the hub has this file but could not archive it yet ({failed}); "
                          "ask again later")

    def _commit(self, batch: _KeepBatch) -> None:
        """Write a batch's new records (one durable shard write per folder), then let the
        uploads go."""
        for folder, new in batch.records.items():
            self.catalog.upsert(folder, new)
        for upload, record in batch.kept:
            self._keep_failed.pop(upload.sha256, None)
            self.pending(upload.kit).remove(upload.sha256)
            self.derivatives.add(record)
            self.uploads.mark_done(upload)
            log.info("kit %s: %s verified and archived as %s", upload.kit,
                     upload.sha256[:12], record["archive_path"])

    def _keep(self, upload: Upload, path: Path, batch: _KeepBatch) -> None:
        """Place one upload; its record joins `batch` (a record the hub had, whose file had
        gone missing, is rewritten in its shard now)."""
        kit, sha = upload.kit, upload.sha256
        pending = self.pending(kit)
        mine = pending.get(sha)
        existing = self.record(sha)
        if existing is not None and self.original_path(existing) is not None:
            # Already here (another kit sent it, or this one before): one file, one more kit.
            self._merge_owned(sha, kit, mine, add_owner=True)
            pending.remove(sha)
            self._keep_failed.pop(sha, None)
            self.uploads.mark_done(upload)
            log.info("kit %s sent %s, already in the archive: catalogued for it too",
                     kit, sha[:12])
            return
        base = _copy.deepcopy(mine) if mine else None
        if existing is not None:
            # A record whose original went missing (dropped as corrupt, deleted by hand).
            from sync.merge import merge_record

            kept = {k: v for k, v in existing.items() if k not in PLACEMENT}
            base = merge_record(kept, base) if base else kept
        if base is None:
            base = self._describe(upload, path)
        folder = base.get("folder") if isinstance(base.get("folder"), str) else ""
        if existing is not None:
            folder = existing["folder"]  # a record whose file went missing: same shard
        elif not is_folder_key(folder):
            folder = self._describe(upload, path)["folder"]
        activity = folder.split("_", 1)[1]
        dest = self.data.archive / folder
        dest.mkdir(parents=True, exist_ok=True)
        name = copy.safe_name(os.fsencode(str(base.get("original_name")
                                              or upload.metadata.get("filename")
                                              or "sin-nombre")))
        final = self._place(path, dest, name, sha, upload.length)
        record = dict(base)
        record.update({
            "sha256": sha, "size": upload.length,
            "archive_path": self.data.relative(final), "folder": folder,
            "activity": activity,
            "filed_by": record.get("filed_by") or "hub",
        })
        sources = dict(existing.get("sources") or {}) if existing else {}
        sources[kit] = mine.get("archive_path") if mine else sources.get(kit)
        kits_list = sorted({*(existing.get("kits") or [] if existing else []), kit})
        record["kits"] = kits_list
        record["sources"] = sources
        if existing is not None:
            self.catalog.update(folder, [sha], lambda _old: record)
            self.catalog.by_hash.put(sha, {"folder": folder,
                                           "archive_path": record["archive_path"]})
            batch.kept.append((upload, record))
        else:
            batch.add(folder, upload, record)

    def _describe(self, upload: Upload, path: Path) -> dict[str, Any]:
        """A record made from the file itself, as an import would (no record from the kit
        yet): metadata, capture time, filed by the hub's agenda."""
        name = upload.metadata.get("filename") or "sin-nombre"
        kind = upload.metadata.get("kind")
        if kind not in ("photo", "raw", "video", "audio", "other"):
            kind = kinds.kind_of(name) or "other"
        now = _now()
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            description = records.describe(fd, kind, self.config, now)
        finally:
            os.close(fd)
        where = filing.choose(description.captured_at, agenda=self.agenda.activities(),
                              zone=self.config.zone)
        record = records.make_record(
            sha256=upload.sha256, size=upload.length, kind=kind, original_name=name,
            source_path=name, archive_path="", folder=where.folder_key,
            activity=where.activity, filed_by=where.reason, description=description,
            imported_at=now, import_id=f"hub-{upload.id[:12]}")
        record["described_by"] = HUB_NODE
        return record

    def _place(self, path: Path, dest: Path, name: str, sha: str, size: int) -> Path:
        """Link the verified upload into the archive without copying and without replacing
        a file: a name in archive/.incoming (same inode), then ingest's `place`."""
        staging = self.data.staging
        staging.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            temp_path = staging / temp_name()
            try:
                os.link(path, temp_path)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                _copy_file(path, temp_path)  # the archive is on another filesystem
            fd = os.open(temp_path, os.O_RDONLY | os.O_CLOEXEC)
            if hold_temp(fd, temp_path):  # else an import's sweep took it for debris
                break
            os.close(fd)
        else:
            raise OSError(f"temp files in {staging} keep being removed as debris")
        temp = copy.TempCopy(temp_path, fd, sha, size)

        def same(candidate: Path) -> bool:
            try:
                return candidate.stat().st_size == size and \
                    self.reader.sha256(candidate)[0] == sha
            except OSError:
                return False

        final, _adopted = copy.place(temp, dest, name, same_content=same)
        return final

    def finish_interrupted(self) -> int:
        """At start: temp files of writes a crash cut short (their writer gone), uploads
        whose last byte was acknowledged but that a crash stopped before they were placed,
        and the derivatives of files kept lately that a stop left
        unqueued (sync.hub.derivatives). Returns how many uploads were kept."""
        for folder in (self.tmp, self.data.tmp, self.data.staging):
            removed = remove_debris(folder) if folder.is_dir() else []
            if removed:
                log.info("removed %d temp files a stop left in %s", len(removed), folder)
        kept = 0
        uploads = list(self.uploads.all())
        # A batch of derivatives lost to a stop was gathered in the moments before it: the
        # files kept last (done markers written shortly before the newest one).
        newest = max((u.updated for u in uploads if u.done), default=0.0)
        for upload in uploads:
            try:
                kept += self._finish_one(upload, newest)
            except (storage.CorruptStateError, OSError) as exc:
                # One damaged catalog shard must not keep the hub from starting (every
                # kit then met "connection refused"): the rest goes on, this waits.
                log.error("interrupted upload %s of kit %s not finished: %s; %s", upload.id,
                          upload.kit, exc, storage.repair_hint(self.data, exc))
        self.derivatives.flush()
        return kept

    def _finish_one(self, upload: Upload, newest: float) -> int:
        from ingest.derive import plan

        if upload.done:
            if upload.updated >= newest - REQUEUE_WINDOW_S and is_sha256(upload.sha256):
                kind = upload.metadata.get("kind") or \
                    kinds.kind_of(upload.metadata.get("filename", "")) or ""
                missing = [name for name in plan.BY_KIND.get(kind, ())
                           if not plan.path(self.data, upload.sha256, name).is_file()]
                record = self.record(upload.sha256) if missing else None
                if record is not None:
                    self.derivatives.add(record)  # a job already queued is not doubled
            return 0
        if not upload.complete:
            return 0
        try:
            with self.uploads.locked(upload.kit, upload.id) as current:
                self.finish(current)
                return 1
        except UploadError as exc:
            log.warning("interrupted upload %s of kit %s: %s", upload.id, upload.kit,
                        exc.message)
            return 0

    # -- objects ---------------------------------------------------------------------------

    def object_status(self, kit: str, sha256: str, *, verify: bool = False
                      ) -> dict[str, Any] | None:
        """What the kit may know of `sha256`: None unless it owns it. With `verify`, the
        original is read back from the disk and hashed now; a mismatch drops it (moved to
        state/hub/corrupt/) so that the kits send it again. A file being kept is waited for
        (sync.hub.keeper)."""
        self.keeper.wait(sha256)
        if sha256 in self._keep_failed:
            self._keep_again(kit, sha256)
        record = self.owned(kit, sha256)
        if record is None:
            return None
        answer = {"sha256": sha256, "size": record.get("size"), "verified": True,
                  "kits": list(record.get("kits") or [])}
        if not verify:
            return answer
        path = self.original_path(record)
        assert path is not None
        actual, size = self.reader.sha256(path)
        if actual == sha256 and size == record.get("size"):
            answer["checked_at"] = _now().isoformat(timespec="seconds")
            return answer
        self.drop_corrupt(sha256, actual, size)
        return {**answer, "verified": False, "actual_sha256": actual, "actual_size": size}

    def drop_corrupt(self, sha256: str, actual: str, size: int) -> None:
        with self.lock:
            record = self.record(sha256)
            if record is not None:
                set_aside_corrupt(self.data, self.catalog, record, self.original_path(record),
                                  actual, size)

    # -- records ---------------------------------------------------------------------------

    def receive_records(self, kit: str, batch: list[Any]) -> list[dict[str, Any]]:
        """Merge a kit's records: into the catalog for items it owns, else into its pending
        records. Returns per record its `status` (`merged`, `pending` or `refused`)."""
        from sync.merge import merge_record

        results = []
        pending = self.pending(kit)
        staged: dict[str, dict[str, Any]] = {}  # pending records, written at once at the end
        with self.lock:
            for raw in batch:
                try:
                    remote = self._clean(raw)
                except RecordError as exc:
                    sha = raw.get("sha256") if isinstance(raw, dict) else None
                    results.append({"sha256": sha if isinstance(sha, str) else None,
                                    "status": "refused", "message": str(exc)})
                    continue
                sha = remote["sha256"]
                if self.owned(kit, sha) is not None:
                    self._merge_owned(sha, kit, remote)
                    results.append({"sha256": sha, "status": "merged"})
                else:
                    merged = merge_record(staged.get(sha) or pending.get(sha), remote)
                    merged["archive_path"] = remote.get("archive_path")
                    staged[sha] = merged
                    results.append({"sha256": sha, "status": "pending"})
            pending.put_many(staged)  # durable (one syncfs) before the kit hears "pending"
        return results

    def _merge_owned(self, sha: str, kit: str, remote: dict[str, Any] | None, *,
                     add_owner: bool = False) -> None:
        """Merge a kit's record into the catalog record of an item it owns (or now owns:
        `add_owner`), through sync.merge (edit log, clock); the hub's file follows a merged
        change of folder (a re-filing on a kit) with `Refiler.follow`."""
        from appliance.fields import FILING, IMPORT_FACTS
        from sync.merge import merge_into_catalog

        entry = self.catalog.lookup(sha)
        folder = entry["folder"] if entry else None
        if not isinstance(folder, str):
            return

        def own(local: dict[str, Any]) -> dict[str, Any] | None:
            out = dict(local)
            if add_owner:
                out["kits"] = sorted({*(local.get("kits") or []), kit})
            sources = dict(local.get("sources") or {})
            if remote is not None or kit not in sources:
                sources[kit] = remote.get("archive_path") if remote is not None \
                    else sources.get(kit)
            out["sources"] = sources
            if remote is not None and local.get("described_by") == HUB_NODE:
                # Made from the file before the kit's record came: the kit's facts and
                # filing are the item's.
                out.update({k: remote[k] for k in (*IMPORT_FACTS, *FILING) if k in remote})
                edited = dict(out.get("edited") or {})
                for key in FILING:
                    edited.pop(key, None)
                out["edited"] = edited
                del out["described_by"]
            return None if out == local else out

        self.catalog.update(folder, [sha], own)
        if remote is None:
            return
        changed = merge_into_catalog(self.catalog, [remote], clock=self.clock)
        moved = [r["sha256"] for r in changed if r.get("folder") != folder]
        if not moved:
            record = self.record(sha)
            moved = [sha] if record is not None and record.get("folder") != folder else []
        if moved:
            from appliance.refile import RefileError, Refiler

            try:
                Refiler(self.config, self.data, lock_timeout=30.0).follow(moved)
            except RefileError as exc:
                log.warning("the hub could not follow a re-filing of %s: %s", sha[:12], exc)

    def _clean(self, raw: Any) -> dict[str, Any]:
        from sync.merge import check_record, stamps_of

        if not isinstance(raw, dict):
            raise RecordError("a record must be a JSON object")
        size = raw.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RecordError("a record needs `size`: a byte count")
        if len(storage.dump_json(raw)) > MAX_RECORD_BYTES:
            raise RecordError(f"a record may have at most {MAX_RECORD_BYTES} bytes of JSON")
        try:
            check_record(raw)
            for stamp in stamps_of(raw):
                self.clock.check(stamp)
        except ValueError as exc:
            raise RecordError(str(exc)) from None
        return {k: v for k, v in raw.items() if k not in (*HUB_ONLY, "described_by")}

    def receive_agenda(self, batch: list[Any]) -> list[str]:
        """Merge a kit's agenda activities into the hub's (per field, by stamp); the slugs
        whose record changed."""
        return self.agenda.merge(batch, clock=self.clock)

    # -- changes ---------------------------------------------------------------------------

    def changes(self, kit: str, since: str | None, limit: int) -> dict[str, Any]:
        rows, agenda_changed, cursor, more = self.feed.changes(kit, since, limit)
        by_folder: dict[str, list[str]] = {}
        for sha, folder in rows:
            by_folder.setdefault(folder, []).append(sha)
        found: dict[str, dict[str, Any]] = {}
        for folder, shas in by_folder.items():
            wanted = set(shas)
            with contextlib.suppress(storage.CorruptStateError, OSError, ValueError):
                for record in self.catalog.read_shard(folder):
                    if record.get("sha256") in wanted and kit in (record.get("kits") or []):
                        found[record["sha256"]] = for_kit(record)
        out = [found[sha] for sha, _ in rows if sha in found]
        return {"records": out, "agenda": self.feed.agenda() if agenda_changed else None,
                "cursor": cursor, "more": more}

    def kit_summary(self, items: dict[str, int] | None = None) -> list[dict[str, Any]]:
        """Each paired kit with how many items it owns, how many of its records wait for
        their original, its uploads in progress and its last contact. `items`: the counts
        per kit when the caller has them (the web UI's index), else the catalog is read."""
        if items is None:
            items = {}
            for record in self.catalog.items():
                for kit in record.get("kits") or []:
                    items[kit] = items.get(kit, 0) + 1
        uploading: dict[str, int] = {}
        for upload in self.uploads.all():
            if not upload.done:
                uploading[upload.kit] = uploading.get(upload.kit, 0) + 1
        contacts = self.contacts.read()
        out = []
        for kit in self.kits.list():
            contact = contacts.get(kit.name) or {}
            out.append({**kit.to_public(), "items": items.get(kit.name, 0),
                        "pending_records": sum(1 for _ in self.pending(kit.name).keys()),  # noqa: SIM118
                        "uploads_in_progress": uploading.get(kit.name, 0),
                        "last_contact": contact.get("at"),
                        "last_address": contact.get("address") or None})
        return out

    def close(self) -> None:
        self.keeper.close()
        self.derivatives.close()
        self.feed.close()


def _editorial() -> tuple[str, ...]:
    from appliance.fields import ALL

    return ALL


def for_kit(record: dict[str, Any]) -> dict[str, Any]:
    """A hub record as the change feed sends it: without the hub's own placement and
    bookkeeping (the kit keeps its own folder and file name)."""
    hidden = NOT_SENT if record.get("described_by") != HUB_NODE else (*NOT_SENT, *PLACEMENT)
    out = {k: v for k, v in record.items() if k not in hidden}
    edited = out.get("edited")
    if isinstance(edited, dict):
        out["edited"] = {k: v for k, v in edited.items() if k not in hidden}
    return out


def _copy_file(src: Path, dst: Path) -> None:
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        while chunk := fin.read(4 * 1024 * 1024):
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())


def pending_records(hub_state: Path, kit: str) -> KeyIndex:
    """A kit's records waiting at the hub for their originals (state/hub/pending/KIT)."""
    return KeyIndex(hub_state / "pending" / check_kit_name(kit), hub_state / "tmp")


def set_aside_corrupt(data: DataDir, catalog: Catalog, record: dict[str, Any],
                      path: Path | None, actual: str, size: int) -> None:
    """An original at the hub that no longer reads as its SHA-256 (found by a kit's
    `?verify=1`, or by `acopio check --deep --repair` at headquarters): moved out of the
    archive to state/hub/corrupt/ (kept, never deleted), and its record out of the catalog
    into each owner kit's pending records, so that whichever kit sends the original again
    restores it whole. Kits learn of it when they ask (sync.kit.audit) and send it again."""
    sha256 = record["sha256"]
    log.error(
        "CORRUPT ORIGINAL at the hub: %s should have SHA-256 %s (%s bytes) but reads "
        "%s (%s bytes) from the disk; moved out of the archive to state/hub/corrupt/ "
        "and its record set aside until a kit sends it again (kits: %s). Check the "
        "disk.", record.get("archive_path"), sha256, record.get("size"), actual or "?", size,
        ", ".join(record.get("kits") or []))
    state = data.state / "hub"
    if path is not None:
        corrupt = state / "corrupt"
        corrupt.mkdir(parents=True, exist_ok=True)
        stem = f"{time.strftime('%Y%m%dT%H%M%S')}-{sha256[:16]}"
        target = corrupt / f"{stem}-{path.name}"
        n = 1
        while os.path.lexists(target):  # spoilt again within the second: keep both
            n += 1
            target = corrupt / f"{stem}-{n}-{path.name}"
        os.rename(path, target)
        fsync_dir(corrupt)
        fsync_dir(path.parent)
    # The merged record (people's work at the hub included) waits in each owner's
    # pending records, so whichever kit sends the original again restores it whole.
    kept = {k: v for k, v in record.items() if k not in (*PLACEMENT, *HUB_ONLY)}
    kept["folder"] = record.get("folder")
    for kit in record.get("kits") or []:
        with contextlib.suppress(ValueError):
            pending_records(state, kit).put(
                sha256, {**kept, "archive_path": (record.get("sources") or {}).get(kit)})
    shard = catalog.shard_path(record["folder"])
    with storage.transaction(shard, data.tmp) as db:
        db.table("items").remove(Query().sha256 == sha256)
    catalog.by_hash.remove(sha256)
