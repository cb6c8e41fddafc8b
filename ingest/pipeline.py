"""The importer: a card or folder in, verified archive files and catalog records out.

Interface-agnostic, like beets' importer: the CLI, the device watcher and the web UI all call
`Importer.run()` and watch it through a `Reporter`; nothing here prints or knows about HTTP.

Per file the stages are: already archived? (dedup by source key, confirmed by hash) -> copy
into the archive's staging folder while hashing -> dedup by content -> read metadata from the
copy -> choose the folder (filing) -> link into place and verify -> record. Records are
written to the catalog in batches; a crash between a file's link and its batch write leaves
a verified but uncatalogued file, which the next run adopts (same name, same SHA-256)
instead of copying again, and which `acopio check` reports until then.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import secrets
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from appliance import boxclock
from appliance.agenda import Agenda, check_slug
from appliance.catalog import Catalog, SchemaTooNewError, is_folder_key
from appliance.config import Config
from appliance.datadir import DataDir
from appliance.fsutil import file_lock, fsync_dir, remove_debris
from appliance.keyindex import KeyIndex
from appliance.storage import CorruptStateError
from ingest import copy, filing, records
from ingest.derive import plan
from ingest.kinds import SIDECAR_EXTENSIONS
from ingest.sources import FolderSource, Source
from ingest.walk import NotARegularFile, Scan, SourceFile, display
from sync.hlc import Clock, box_node, known_time, make

log = logging.getLogger(__name__)

Status = Literal["imported", "duplicate", "failed"]
COMMIT_LOCK = "ingest-commit.lock"  # in state/: one import's catalog commit at a time
# In state/: every import holds it shared while it runs, so `acopio check` knows that files
# in the archive but not yet in the catalog may be a running import's.
IMPORTING_LOCK = "ingest-running.lock"
# errno values meaning the source itself is gone (card pulled, FUSE daemon dead).
_SOURCE_GONE = frozenset({errno.ENODEV, errno.ENOTCONN, errno.ENXIO, errno.ESHUTDOWN})
# The archive disk failing as a whole (an I/O error, a filesystem found corrupt, writes no
# longer allowed): every later file would fail too, so the import stops. ENOSPC and EROFS
# have stops of their own.
_ARCHIVE_FAILING = frozenset({errno.EIO, errno.EUCLEAN, errno.EACCES, errno.EPERM})
CLOCK_WENT_BACK = timedelta(seconds=5)  # the box's clock this far behind its known floor


class IngestError(Exception):
    """The import cannot start (bad source, bad activity); nothing was written."""


class StopImport(Exception):
    """The import must stop (disk full, source gone); what is done stays done."""


@dataclass
class Outcome:
    rel: bytes
    status: Status
    reason: str = ""
    sha256: str = ""
    archive_path: str = ""
    size: int = 0
    record: dict[str, Any] | None = field(default=None, repr=False)  # for the catalog
    source_key: str = ""
    stop: str = ""  # set when this file's failure stops the whole import
    shard: str = ""  # the catalog folder its record goes to, when not its `folder`

    @property
    def path(self) -> str:
        return display(self.rel)


@dataclass
class Summary:
    source: str
    imported: int = 0
    duplicates: int = 0
    failed: list[Outcome] = field(default_factory=list)
    skipped: list[tuple[bytes, str]] = field(default_factory=list)
    unknown: list[bytes] = field(default_factory=list)
    not_attempted: int = 0
    bytes_imported: int = 0
    stopped: str = ""  # why the run stopped early, empty when it ran to the end
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.stopped

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "imported": self.imported,
            "duplicates": self.duplicates,
            "failed": [{"path": o.path, "reason": o.reason} for o in self.failed],
            "skipped": [{"path": display(r), "reason": why} for r, why in self.skipped],
            "unknown": [display(r) for r in self.unknown],
            "not_attempted": self.not_attempted,
            "bytes_imported": self.bytes_imported,
            "stopped": self.stopped,
            "seconds": round(self.seconds, 3),
        }


class Reporter:
    """What a front end (terminal, device watcher, web UI) hears of an import. No-ops here;
    override what you need."""

    def started(self, scan: Scan) -> None:
        """The source was scanned; the import begins."""

    def advanced(self, nbytes: int) -> None:
        """`nbytes` more bytes were read from the source."""

    def file_done(self, outcome: Outcome) -> None:
        """One file was imported, found a duplicate, or failed."""

    def committed(self, outcomes: list[Outcome]) -> None:
        """These files are now in the catalog (imported) or were already (duplicates): the
        source copy may be let go (an inbox deletes its file only now)."""


class Claims:
    """Content hashes being imported right now, shared by the imports of one process.

    Two cards holding the same photo, imported at once by the same process, archive it once.
    Across processes the commit does it (`_archived_meanwhile`, under `COMMIT_LOCK`): the
    copy of the import that commits second is removed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hashes: set[str] = set()

    def claim(self, sha256: str) -> bool:
        with self._lock:
            if sha256 in self._hashes:
                return False
            self._hashes.add(sha256)
            return True

    def release(self, sha256: str) -> None:
        with self._lock:
            self._hashes.discard(sha256)


def source_key(f: SourceFile) -> str:
    """Identity of a file on a card without reading it: path, size and modification time."""
    return hashlib.sha256(b"%d\0%d\0" % (f.size, f.mtime_ns) + f.rel).hexdigest()


class Importer:
    def __init__(
        self,
        config: Config,
        *,
        reporter: Reporter | None = None,
        claims: Claims | None = None,
        cancel: threading.Event | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.data = DataDir.at(config.data_dir)
        self.catalog = Catalog(self.data)
        self.sources = KeyIndex(self.data.index / "source", self.data.tmp)
        self.agenda = Agenda(self.data.state)
        self.reporter = reporter or Reporter()
        self.claims = claims or Claims()
        self.cancel = cancel or threading.Event()
        self.clock = clock

    # -- the run ------------------------------------------------------------------------

    def run(self, source: str | os.PathLike[str], activity: str | None = None) -> Summary:
        """Import a mounted card or a folder."""
        root = Path(source).absolute()
        self._check_source(root)
        with FolderSource(root) as folder:
            return self.run_source(folder, activity)

    def run_source(self, source: Source, activity: str | None = None) -> Summary:
        """Import from any source (a folder, a camera over PTP).

        Two files are in flight at most: while a worker thread reads the metadata of file N
        from its copy, links it into place and reads it back to verify it, this thread
        copies file N+1 from the source. Both hash with the GIL released, so on a two-core
        box the verification pass costs little wall time.
        """
        started = time.monotonic()
        if activity is not None:
            check_slug(activity)
        self.data.ensure()
        with file_lock(self.data.state / IMPORTING_LOCK, shared=True):
            return self._run_source(source, activity, started)

    def _run_source(self, source: Source, activity: str | None, started: float) -> Summary:
        remove_debris(self.data.tmp)  # left by crashed state writes
        remove_debris(self.data.staging)  # left by crashed copies
        summary = Summary(source=source.description)
        found = source.scan(self.config.ingest.extra_clutter)
        summary.skipped = found.skipped
        summary.unknown = found.unknown
        summary.failed = [Outcome(rel, "failed", reason) for rel, reason in found.errors]
        run = _Run(self, source, activity, summary)
        self.reporter.started(found)
        in_flight = run.in_flight
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify") as finisher:
            try:
                for index, f in enumerate(found.files):
                    if self.cancel.is_set():
                        summary.stopped = summary.stopped or "cancelled"
                    if not summary.stopped:
                        staged = run.guarded(f, run.stage)
                        if isinstance(staged, copy.TempCopy):
                            in_flight.append(finisher.submit(run.guarded, f, staged))
                        else:
                            run.collect(staged, summary)
                    while in_flight and (len(in_flight) > 1 or in_flight[0].done()
                                         or summary.stopped):
                        run.collect(in_flight.popleft().result(), summary)
                    if summary.stopped:
                        summary.not_attempted = len(found.files) - index - 1 + (
                            1 if summary.stopped == "cancelled" else 0)
                        break
                while in_flight:
                    run.collect(in_flight.popleft().result(), summary)
            finally:
                # Left only by an unexpected error in this thread: wait for those files and
                # let go of their claims (they are verified in the archive but not yet
                # recorded; the next run adopts them, as after a crash).
                for future in in_flight:
                    with contextlib.suppress(Exception):
                        if (leftover := future.result()).record is not None:
                            self.claims.release(leftover.sha256)
                try:
                    run.flush()
                except StopImport as stop:
                    summary.stopped = summary.stopped or str(stop)
        summary.seconds = time.monotonic() - started
        return summary

    def _check_source(self, root: Path) -> None:
        if not root.is_dir():
            raise IngestError(f"source is not a folder: {root}")
        real = root.resolve()
        data_root = self.data.root.resolve()
        owned = [p.resolve() for p in (self.data.archive, self.data.state,
                                       self.data.derivatives)]
        if real == data_root or real in data_root.parents or any(
            real == p or p in real.parents for p in owned
        ):
            raise IngestError(f"source {root} overlaps the data folder {data_root}")


class _Run:
    """The state of one import: pending catalog records, folders already prepared.

    Only the importing thread touches the pending state; the worker thread only finishes
    files (metadata, filing, placing, verifying) and hands back an Outcome with its record.
    """

    def __init__(self, importer: Importer, source: Source, activity: str | None,
                 summary: Summary) -> None:
        self.imp = importer
        self.summary = summary
        self.in_flight: deque[Future[Outcome]] = deque()
        self.source = source
        self.config = importer.config
        self.activity = activity
        self.agenda = importer.agenda.activities()
        self.current = importer.agenda.current()
        # Asked once per import: may the box's clock call a camera time "in the future"?
        self.clock_trusted = boxclock.trusted(self.config.kit.clock)
        self.clock_floor = None if self.clock_trusted else known_time(importer.data.state)
        self.import_id = f"{importer.clock():%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
        self.pending: dict[str, list[dict[str, Any]]] = {}
        self.pending_sources: dict[str, dict[str, str]] = {}
        self.pending_outcomes: list[Outcome] = []
        self.claimed: list[str] = []
        self.prepared: set[Path] = set()
        self.prepared_lock = threading.Lock()
        # (source folder, lower-case stem) -> where that media file was filed: its XMP
        # sidecar (which sorts after it) goes with it (worker thread only)
        self.filed_media: dict[tuple[bytes, str], filing.Filing] = {}
        self.reader = copy.ReadBack()  # used by the worker thread only
        self.last_flush = time.monotonic()

    def imported_at(self) -> datetime:
        """Now, for a record's `imported_at`. While the box's clock is not known to be right,
        never before the latest time the box is known to have seen (the sync clock's floor,
        which each commit moves on): a clock come back from a power cut 50 minutes behind
        sorted the card just imported below the morning's in "Lo más reciente", and the
        grid's live refresh, which waits for a newer import, never came."""
        now = self.imp.clock()
        # The floor runs up to a second ahead of the clock (hlc.LEASE_MS): a clock that
        # went back is told by more than that.
        if self.clock_floor is not None and self.clock_floor - now > CLOCK_WENT_BACK:
            return self.clock_floor
        return now

    # -- one file -----------------------------------------------------------------------

    def guarded(self, f: SourceFile, step: Callable[[SourceFile], Any] | copy.TempCopy
                ) -> Outcome | copy.TempCopy:
        """Run a step for one file; its errors become a failed Outcome, which may stop the
        import (returned, not raised, so that the worker thread can hand it back)."""
        try:
            if isinstance(step, copy.TempCopy):
                return self.finish(f, step)
            return step(f)
        except StopImport as stop:
            return Outcome(f.rel, "failed", f"stopped: {stop}", stop=str(stop))
        except NotARegularFile as exc:
            return Outcome(f.rel, "failed", f"not_regular_file: {exc.strerror}")
        except OSError as exc:
            stop = ""
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                stop = f"the archive disk is full ({exc.strerror}); free space and run again"
            elif exc.errno == errno.EROFS:  # only the archive is written: not the card's fault
                stop = (f"the archive disk takes no writes ({exc.strerror}); after an I/O "
                        "error the system may have made it read-only: check the disk "
                        "(dmesg), remount it or restart, then run again")
            elif isinstance(exc, copy.ArchiveError) and exc.errno in _ARCHIVE_FAILING:
                stop = (f"the archive disk failed a write or read ({exc.strerror}): check it "
                        "(dmesg, acopio check); the card is untouched, run the import again "
                        "once the disk is sound")
            elif exc.errno in _SOURCE_GONE:
                stop = f"the source disappeared ({exc.strerror})"
            if stop:
                return Outcome(f.rel, "failed", f"stopped: {stop}", stop=stop)
            if isinstance(exc, copy.ArchiveError):
                return Outcome(f.rel, "failed", f"write_error: {exc.strerror or exc}")
            if exc.errno == errno.ENOENT:
                return Outcome(f.rel, "failed", "vanished: the file disappeared from the source")
            reason = "verify_failed" if isinstance(exc, copy.VerifyError) else "read_error"
            return Outcome(f.rel, "failed", f"{reason}: {exc.strerror or exc}")

    def advanced(self, nbytes: int) -> None:
        """Progress while copying; also accounts at once for a file the worker thread has
        finished, so a front end sees it verified without waiting for this copy to end."""
        self.imp.reporter.advanced(nbytes)
        while self.in_flight and self.in_flight[0].done() and not self.summary.stopped:
            self.collect(self.in_flight.popleft().result(), self.summary)

    def collect(self, outcome: Outcome, summary: Summary) -> None:
        """Account for a finished file (importing thread only)."""
        if outcome.stop:
            summary.stopped = summary.stopped or outcome.stop
        if outcome.record is not None:
            shard = outcome.shard or outcome.record["folder"]
            self.pending.setdefault(shard, []).append(outcome.record)
            self.claimed.append(outcome.sha256)  # released once the catalog knows it
            self.pending_outcomes.append(outcome)
        if outcome.source_key and outcome.sha256:
            self.pending_sources[outcome.source_key] = {"sha256": outcome.sha256}
        if outcome.status == "duplicate" and self._archived(outcome.sha256):
            # Only once the catalog holds it: a duplicate of content that another import is
            # still copying (a claim) is not committed until that import records it.
            self.imp.reporter.committed([outcome])
        if outcome.status == "imported":
            summary.imported += 1
            summary.bytes_imported += outcome.size
        elif outcome.status == "duplicate":
            summary.duplicates += 1
        else:
            summary.failed.append(outcome)
        self.imp.reporter.file_done(outcome)
        if not summary.stopped:
            try:
                self.flush_if_due()
            except StopImport as stop:
                summary.stopped = str(stop)

    def stage(self, f: SourceFile) -> Outcome | copy.TempCopy:
        """Copy into the staging folder while hashing; a duplicate ends here."""
        known = self._already_archived(f)
        if known:
            return Outcome(f.rel, "duplicate", sha256=known, size=f.size)
        self._check_space(f.size)
        temp = copy.stage(self.source, f, self.imp.data.staging, self.advanced)
        duplicate = Outcome(f.rel, "duplicate", sha256=temp.sha256, size=f.size,
                            source_key=source_key(f))
        if not self.imp.claims.claim(temp.sha256):
            temp.discard()  # the same content is being imported right now
            return duplicate
        if self._archived(temp.sha256, temp.size):
            self.imp.claims.release(temp.sha256)
            temp.discard()
            return duplicate
        return temp

    def finish(self, f: SourceFile, temp: copy.TempCopy) -> Outcome:
        """Metadata from our own copy, the folder it belongs in, its name, verification
        (worker thread). The claim on its hash is released here only on failure."""
        try:
            final, where, description, lost = self._describe_and_place(temp, f)
        except BaseException:
            self.imp.claims.release(temp.sha256)
            raise
        if lost is not None:  # restored: its record as it was, the file where it says
            record = {**lost, "archive_path": self.imp.data.relative(final)}
            return Outcome(f.rel, "imported", sha256=temp.sha256, size=temp.size,
                           archive_path=record["archive_path"], record=record,
                           source_key=source_key(f), shard=where.folder_key)
        record = records.make_record(
            sha256=temp.sha256,
            size=temp.size,
            kind=f.kind,
            original_name=os.fsdecode(f.name),
            source_path=os.fsdecode(f.rel),
            archive_path=self.imp.data.relative(final),
            folder=where.folder_key,
            activity=where.activity,
            filed_by=where.reason,
            description=description,
            imported_at=self.imported_at(),
            import_id=self.import_id,
        )
        return Outcome(f.rel, "imported", sha256=temp.sha256, size=temp.size,
                       archive_path=record["archive_path"], record=record,
                       source_key=source_key(f))

    def _describe_and_place(self, temp: copy.TempCopy, f: SourceFile
                            ) -> tuple[Path, filing.Filing, records.Description,
                                       dict[str, Any] | None]:
        try:
            temp.sync()
            # Metadata comes from our own copy (just written, still in the page cache), so
            # the card is read once and no decoder ever touches the card itself.
            fd = os.open(temp.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                description = records.describe(fd, f.kind, self.config, self.imp.clock(),
                                               file_mtime=f.mtime_ns / 1e9,
                                               clock_trusted=self.clock_trusted,
                                               floor=self.clock_floor)
            finally:
                os.close(fd)
            lost = self._lost_original(temp.sha256)
            if lost is not None:
                # Its record is here and its file is not: the copy goes back into the
                # folder the file lay in (whose shard holds the record; its `folder` may
                # name another, where a sync merge moved it while it was evicted), and the
                # record stays the one.
                lies_in = str(lost["archive_path"]).split("/", 1)[1].rsplit("/", 1)[0]
                where = filing.Filing(lies_in, lost.get("activity") or "",
                                      lost.get("filed_by") or "unsorted")
                name = Path(lost["archive_path"]).name
                log.warning("%s: its archived original %s was missing; restored from %s",
                            temp.sha256[:12], lost["archive_path"], display(f.rel))
            else:
                where = self._sidecar_filing(f) or filing.choose(
                    description.captured_at,
                    agenda=self.agenda,
                    zone=self.config.zone,
                    requested=self.activity,
                    current=self.current,
                )
                if f.kind != "other":
                    self.filed_media[_stem_key(f.rel)] = where
                name = copy.safe_name(f.name)
            with copy.archive_side():
                dest = self._prepare(where.folder_key)
                final, adopted = copy.place(
                    temp, dest, name,
                    same_content=lambda p: _same_content(p, temp.sha256, temp.size,
                                                         self.reader),
                    sync_dir=False,  # once per folder, before its batch is recorded (flush)
                )
        except BaseException:
            temp.discard()
            raise
        try:
            with copy.archive_side():
                self.reader.verify(final, temp.sha256, temp.size)
        except BaseException:
            if not adopted:
                with contextlib.suppress(FileNotFoundError):
                    final.unlink()
            raise
        return final, where, description, lost

    # -- stages -------------------------------------------------------------------------

    def _already_archived(self, f: SourceFile) -> str | None:
        """Cheap dedup for a card seen before: same path, size and time, then confirmed by
        hashing the source (a read, no write). Returns the SHA-256 when archived."""
        entry = self.imp.sources.get(source_key(f))
        if not entry or not self._archived(entry.get("sha256", ""), f.size):
            return None
        sha256, size = copy.hash_source(self.source, f, self.advanced)
        return sha256 if sha256 == entry["sha256"] and size == f.size else None

    def _archived(self, sha256: str, size: int | None = None) -> bool:
        """True when the catalog indexes this content and its file is in the archive (of
        `size` bytes, when given: a file cut short is not archived, and its card restores
        it)."""
        entry = self.imp.catalog.lookup(sha256) if len(sha256) == 64 else None
        if not entry:
            return False
        try:
            st = (self.imp.data.root / entry["archive_path"]).stat()
        except (KeyError, TypeError, OSError):
            return False
        return stat.S_ISREG(st.st_mode) and (size is None or st.st_size == size)

    def _sidecar_filing(self, f: SourceFile) -> filing.Filing | None:
        """Where the photo or video an XMP sidecar describes was filed in this import (a
        sidecar has no capture time of its own: filed by its file time, it could land in
        another day's folder than its photo)."""
        if os.path.splitext(os.fsdecode(f.name))[1].lower() not in SIDECAR_EXTENSIONS:
            return None
        return self.filed_media.get(_stem_key(f.rel))

    def _lost_original(self, sha256: str) -> dict[str, Any] | None:
        """The catalogued record of this content when its archive file is gone (deleted by
        hand) or damaged (its size is not the record's: cut short by a failing disk), else
        None. A damaged file is moved out of the archive first (`_set_aside`)."""
        entry = self.imp.catalog.lookup(sha256)
        if not entry or not is_folder_key(str(entry.get("folder"))):
            return None
        record = next((r for r in self.imp.catalog.read_shard(entry["folder"])
                       if r.get("sha256") == sha256), None)
        expected = f"archive/{entry['folder']}/"
        if record is None or record.get("archive_path") != entry.get("archive_path") \
                or not str(record["archive_path"]).startswith(expected) \
                or "/" in record["archive_path"][len(expected):]:
            return None  # a record that does not name a file of its folder: file it anew
        path = self.imp.data.root / record["archive_path"]
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return record
        if size == record.get("size"):
            return None
        self._set_aside(path, record)
        return record

    def _set_aside(self, path: Path, record: dict[str, Any]) -> None:
        """The damaged original out of the archive, so the good copy takes its name."""
        target = copy.set_aside_damaged(self.imp.data.state, path, record["sha256"])
        log.warning("%s: %d bytes on disk, %d catalogued; the damaged file is kept as %s and "
                    "the original comes back from this import", record["archive_path"],
                    target.stat().st_size, record.get("size", 0), target)

    def _prepare(self, folder_key: str) -> Path:
        dest = self.imp.data.archive / folder_key
        with self.prepared_lock:
            if dest not in self.prepared:
                dest.mkdir(parents=True, exist_ok=True)
                self.prepared.add(dest)
        return dest

    def _check_space(self, size: int) -> None:
        st = os.statvfs(self.imp.data.staging)
        free = st.f_bavail * st.f_frsize
        reserve = self.config.ingest.min_free_mb * 1024 * 1024
        if free - size < reserve:
            raise StopImport(
                f"the archive disk is nearly full: {free / 2**20:.1f} MiB free, "
                f"{size / 2**20:.1f} MiB needed plus a reserve of "
                f"{self.config.ingest.min_free_mb} MiB (ingest.min_free_mb)"
            )

    # -- catalog writes -----------------------------------------------------------------

    def flush_if_due(self) -> None:
        count = sum(len(v) for v in self.pending.values())
        if count >= self.config.ingest.catalog_batch or (
            count and time.monotonic() - self.last_flush > 5.0
        ):
            self.flush()

    def flush(self) -> None:
        """Record pending items: shard first, then the hash index, then the source index.

        A failure leaves the shard as it was (atomic write); the files already placed are
        verified originals that the next run, or `acopio check --repair`, adopts.
        """
        try:
            # The new names first, one fsync per folder: a record never points at a file
            # whose name a power cut could still undo.
            for folder in {(self.imp.data.root / r["archive_path"]).parent
                           for batch in self.pending.values() for r in batch}:
                fsync_dir(folder)
            recorded = []
            # One commit at a time per data folder: claims are per process, and on a box the
            # device watcher and the inbox import in two processes.
            with file_lock(self.imp.data.state / COMMIT_LOCK):
                for folder_key, batch in list(self.pending.items()):
                    batch = [r for r in batch if not self._archived_meanwhile(r)]
                    if batch:
                        self.imp.catalog.upsert(folder_key, batch)
                        recorded.append(batch)
                    del self.pending[folder_key]
            for batch in recorded:
                self._enqueue_derivatives(batch)
            if recorded and not self.clock_trusted:
                self._note_import_time(recorded)
            self.imp.sources.put_many(self.pending_sources)
            self.pending_sources = {}
            committed, self.pending_outcomes = self.pending_outcomes, []
            if committed:
                self.imp.reporter.committed(committed)
        except (OSError, CorruptStateError, SchemaTooNewError) as exc:
            self.pending.clear()
            self.pending_sources.clear()
            self.pending_outcomes.clear()
            hint = "free space and run the import again" if isinstance(exc, OSError) \
                else "run `acopio check --repair`, then the import again"
            raise StopImport(f"could not write the catalog ({exc}); {hint}") from exc
        finally:
            for sha256 in self.claimed:
                self.imp.claims.release(sha256)
            self.claimed.clear()
            self.last_flush = time.monotonic()

    def _archived_meanwhile(self, record: dict[str, Any]) -> bool:
        """Whether another process archived this content under another name since this
        import checked (a card's photo copied into the inbox while the card imports): then
        this copy goes, the file stays single and catalogued, and this file counts as a
        duplicate. Called under the commit lock."""
        sha, ours = record["sha256"], record["archive_path"]
        entry = self.imp.catalog.lookup(sha)
        theirs = entry.get("archive_path") if entry else None
        if not isinstance(theirs, str):
            return False
        if theirs == ours:
            # The same card imported twice at once: the other import placed this very file
            # (this one found it there, same content) and recorded it first. The file is
            # theirs to count; a record this import made would only replace theirs.
            if record.get("import_id") != self.import_id:
                return False  # a record brought back (a lost original restored): it stands
            self._counted_as_duplicate(record, theirs)
            return True
        try:
            if (self.imp.data.root / theirs).stat().st_size != record["size"]:
                return False
        except OSError:
            return False  # its file is gone: this copy is the one
        path = self.imp.data.root / ours
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        fsync_dir(path.parent)
        self._counted_as_duplicate(record, theirs)
        log.info("%s: archived meanwhile by another import as %s; this copy removed", ours,
                 theirs)
        return True

    def _note_import_time(self, recorded: list[list[dict[str, Any]]]) -> None:
        """The sync clock's floor moves past the newest `imported_at` recorded, so that a
        box whose clock goes back (a power cut, no NTP) files its next imports after these."""
        newest = max(datetime.fromisoformat(r["imported_at"]) for b in recorded for r in b)
        try:
            clock = Clock(self.imp.data.state, box_node(self.imp.data.state,
                                                        self.config.kit.name),
                          tmp_dir=self.imp.data.tmp)
            clock.observe(make(int(newest.timestamp() * 1000), 0, clock.node))
            self.clock_floor = known_time(self.imp.data.state)
        except (OSError, ValueError) as exc:  # only the order of "Lo más reciente" is at stake
            log.warning("could not note the import time in the sync clock: %s", exc)

    def _counted_as_duplicate(self, record: dict[str, Any], theirs: str) -> None:
        for outcome in self.pending_outcomes:
            if outcome.record is record:
                outcome.status, outcome.archive_path = "duplicate", theirs
                self.summary.imported -= 1
                self.summary.bytes_imported -= outcome.size
                self.summary.duplicates += 1

    def _enqueue_derivatives(self, batch: list[dict[str, Any]]) -> None:
        """Queue thumbnails and proxies for the worker. Never a reason to stop an import:
        derivatives can be queued again any time (`acopio derive --rebuild`)."""
        try:
            plan.enqueue(self.imp.data, batch)
        except (OSError, CorruptStateError) as exc:
            log.warning("could not queue derivatives for %d items (%s); run `acopio jobs "
                        "--repair` and `acopio derive --rebuild`", len(batch), exc)


def _stem_key(rel: bytes) -> tuple[bytes, str]:
    """(source folder, lower-case name without its extension) of a file of the source."""
    folder, _, name = rel.rpartition(b"/")
    return folder, os.path.splitext(os.fsdecode(name))[0].lower()


def _same_content(path: Path, sha256: str, size: int, reader: copy.ReadBack) -> bool:
    try:
        if path.stat().st_size != size:
            return False
        return reader.sha256(path)[0] == sha256
    except OSError:
        return False
