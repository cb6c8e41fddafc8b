"""The hot folder: files dropped into `<data>/inbox/` are imported, then leave the inbox.

People drop pictures on the box from a laptop or a network share (Samba exports the inbox).
Such a file arrives over seconds or minutes, and nothing announces "done": a watchdog event
only says that something changed. So an inbox file is imported only once it is *complete*:

- it has not changed (size, mtime, ctime, inode) for `settle_s` seconds. ctime cannot be set
  from user space and moves on every write, rename and chmod, so a file first seen with an
  old ctime (dropped while the service was down, or a folder renamed in whole) counts as
  settled since then and is imported at once;
- no process has it open for writing, read from `/proc/PID/fd` and `/proc/PID/fdinfo`. This
  is best effort: it sees only processes whose `/proc` entries this service may read (all of
  them as root; only its own user's otherwise, or none with `hidepid`), in the same mount
  and PID namespace, and only writers holding a file descriptor on this host. A client
  writing through Samba is visible through its `smbd` while that keeps the file open (when
  smbd's `/proc` entries are readable here: not from acopio.service, whose `acopio` user and
  `ProtectProc=invisible` hide other users' processes), but an
  NFS client (the kernel server holds no descriptor), a writer on another host writing to a
  share mounted *as* the inbox, or a writer that closes and reopens between chunks is not.
  That is what the settle time is for; raise it for slow or flaky links.

Watchdog (inotify) events only wake the loop early and restart a file's settle time; the
inbox is also rescanned every `rescan_s` seconds and at start, so a missed event (inotify
queue overflow, a share mounted on the inbox, a file dropped while the service was down)
only delays an import.

Complete files go through the real pipeline (`Importer.run_source`) from a `FolderSource` on
the inbox that offers exactly those files, and reads each only if it is still the file found
complete; so the catalog's `source_path` is the path inside the inbox. A file leaves the
inbox only when `Reporter.committed` says the catalog has it (imported, or already archived),
after this module has looked the content up in the catalog itself and found the archived
file, and only if it is still the file that was imported (inode, size, mtime, ctime). It is
removed relative to its own folder, opened from the inbox without following links, after
being renamed aside to `.acopio-removing-*` and checked there, so a file renamed over the name
at that instant is never the one removed (a crash in that instant leaves the aside name,
reported as an unknown file). Folders emptied that way are removed too, never the inbox.
Everything else stays: failed files (retried only when they change), files of unknown kinds
and clutter (reported once), symlinks, FIFOs and devices (never followed or read, walk.py).

Imports from the inbox are serialised: a lock in the process, and an flock on the inbox
folder across processes (`acopio run` and a one-shot command do not import one file twice).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from appliance.config import Config
from appliance.datadir import DataDir
from appliance.storage import CorruptStateError
from ingest.pipeline import Claims, Importer, Outcome, Reporter, StopImport, Summary
from ingest.sources import FolderSource, Sink, SourceChangedError
from ingest.walk import Scan, SourceFile, display, open_source, scan

log = logging.getLogger(__name__)

INBOX_MODE = 0o775  # group-writable: the Samba or SFTP account that drops files is a member
DEFAULT_SETTLE_S = 5.0
STOP_BACKOFF_S = 60.0  # after an import stopped (disk full, catalog unwritable)
_TICK_S = 0.2  # longest the run loop sleeps without looking at its stop event
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_ACCMODE = 0o3
_ASIDE_PREFIX = ".acopio-removing-"  # an inbox file being removed, renamed out of reach
# Events that mean "something arrived or changed"; our own reads (open, close without
# writing) and file deletions are not subscribed to, so they never wake the loop. Folder
# deletions are, for the one that matters: the inbox itself deleted ends the watch.
_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent, DirCreatedEvent, FileModifiedEvent, FileMovedEvent, DirMovedEvent,
    FileClosedEvent, DirDeletedEvent,
]


@dataclass(frozen=True)
class _Snap:
    """What identifies one state of a file: any write, rename or chmod changes it."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> _Snap:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass
class _Watched:
    entry: SourceFile
    snap: _Snap
    since: float  # time.monotonic() from which the file has been unchanged


class _Dirs:
    """Directory fds under the inbox, opened component by component without following links."""

    def __init__(self, root_fd: int) -> None:
        self._fds: dict[bytes, int] = {b"": root_fd}

    def fd(self, folder: bytes) -> int:
        if folder not in self._fds:
            up, _, name = folder.rpartition(b"/")
            self._fds[folder] = os.open(name, _DIR_FLAGS, dir_fd=self.fd(up))
        return self._fds[folder]

    def lstat(self, rel: bytes) -> os.stat_result:
        folder, _, name = rel.rpartition(b"/")
        return os.stat(name, dir_fd=self.fd(folder), follow_symlinks=False)

    def close(self) -> None:
        for folder, fd in self._fds.items():
            if folder:
                os.close(fd)
        self._fds = {b"": self._fds[b""]}


def open_for_writing(root: Path, targets: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """The (dev, inode) pairs among `targets` that some process has open for writing.

    Best effort (see the module docstring): processes whose fds cannot be read are not seen.
    Links are compared as text against the inbox's real path first, so no file outside the
    inbox is ever stat()ed (a hung network mount elsewhere cannot hang this).
    """
    if not targets:
        return set()
    prefix = os.fsencode(os.path.realpath(root)) + b"/"
    found: set[tuple[int, int]] = set()
    try:
        pids = [p for p in os.listdir(b"/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = b"/proc/" + pid + b"/fd/"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                if not os.readlink(fd_dir + fd).startswith(prefix):
                    continue
                flags, ino = _fdinfo(b"/proc/" + pid + b"/fdinfo/" + fd)
                if flags & _O_ACCMODE not in (os.O_WRONLY, os.O_RDWR):
                    continue
                st = os.stat(fd_dir + fd)  # inside the inbox: a local folder
            except OSError:
                continue
            if ino in (None, st.st_ino) and (st.st_dev, st.st_ino) in targets:
                found.add((st.st_dev, st.st_ino))
    return found


def _fdinfo(path: bytes) -> tuple[int, int | None]:
    with open(path, "rb") as fh:
        fields = dict(line.split(b":", 1) for line in fh.read().splitlines() if b":" in line)
    ino = fields.get(b"ino")
    return int(fields[b"flags"].strip(), 8), int(ino) if ino is not None else None


def _remove_if_same(parent: int, name: bytes, snap: _Snap) -> bool:
    """Unlink `name` in the folder `parent` only if it is still the file `snap` describes.

    Checking and then unlinking by name would race with a file renamed over that name in
    between, so the file is first renamed to a name of our own, checked there by inode, and
    only then unlinked; anything else found there is put back (never over a new file).
    """
    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    if not stat.S_ISREG(st.st_mode) or _Snap.of(st) != snap:
        return False
    aside = (_ASIDE_PREFIX + secrets.token_hex(8)).encode()
    os.rename(name, aside, src_dir_fd=parent, dst_dir_fd=parent)
    st = os.stat(aside, dir_fd=parent, follow_symlinks=False)
    # The rename itself moved ctime; identity is the inode, with size and mtime.
    if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == (
            snap.dev, snap.ino, snap.size, snap.mtime_ns):
        os.unlink(aside, dir_fd=parent)
        return True
    try:  # not ours: a link never replaces what may have arrived under the name since
        os.link(aside, name, src_dir_fd=parent, dst_dir_fd=parent, follow_symlinks=False)
    except OSError as exc:
        log.warning("inbox: a file that arrived during a removal is kept as %s (%s)",
                    display(aside), exc.strerror)
        return False
    os.unlink(aside, dir_fd=parent)
    return False


class _InboxSource(FolderSource):
    """The inbox as a source that offers exactly the files found complete, and reads each
    only while it is still the file that was found complete (a batch can take minutes)."""

    def __init__(self, root: Path, offered: Scan, snaps: dict[bytes, _Snap]) -> None:
        super().__init__(root)
        self._offered = offered
        self._snaps = snaps

    def scan(self, extra_clutter: tuple[str, ...] = ()) -> Scan:
        return self._offered

    def read(self, entry: SourceFile, sink: Sink) -> int:
        with open_source(self._fd, entry.rel) as fd:
            if _Snap.of(os.fstat(fd)) != self._snaps[entry.rel]:
                raise SourceChangedError(errno.EAGAIN, "changed since it was found complete")
        # FolderSource.read checks in turn that it does not change while being read.
        return super().read(entry, sink)


class _InboxReporter(Reporter):
    def __init__(self, inbox: Inbox, root_fd: int, snaps: dict[bytes, _Snap],
                 importer: Importer, stop: threading.Event | None) -> None:
        self.inbox = inbox
        self.root_fd = root_fd
        self.snaps = snaps
        self.importer = importer
        self.stop = stop

    def advanced(self, nbytes: int) -> None:
        if self.stop is not None and self.stop.is_set():
            raise StopImport("the service is stopping")

    def file_done(self, outcome: Outcome) -> None:
        if outcome.status != "failed" or outcome.reason.startswith("stopped:"):
            return
        snap = self.snaps[outcome.rel]
        dirs = _Dirs(self.root_fd)
        try:
            now = _Snap.of(dirs.lstat(outcome.rel))
        except OSError:
            now = None
        finally:
            dirs.close()
        if now == snap:
            self.inbox._failed_import(outcome.rel, snap, outcome.reason)
        else:  # changed or gone meanwhile: not the file's fault; a changed file is retried
            log.info("inbox: %s changed while it was being imported (%s); looked at again",
                     display(outcome.rel), outcome.reason)

    def committed(self, outcomes: list[Outcome]) -> None:
        # Folders are opened afresh from the inbox by their current names: a folder moved
        # out of the inbox since the scan is not followed there.
        dirs = _Dirs(self.root_fd)
        try:
            emptied: set[bytes] = set()
            for outcome in outcomes:
                if self.inbox._release(dirs, self.importer, outcome, self.snaps[outcome.rel]):
                    folder = outcome.rel.rpartition(b"/")[0]
                    while folder:
                        emptied.add(folder)
                        folder = folder.rpartition(b"/")[0]
            self.inbox._remove_empty_folders(dirs, emptied)
        finally:
            dirs.close()


class _Events(FileSystemEventHandler):
    """Watchdog's thread: note what changed and wake the loop; the scan decides the rest."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.prefix = os.fsencode(inbox.root) + b"/"

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type == "deleted":
            self.inbox._wake.set()  # the loop checks that its watch still stands
            return
        path = event.dest_path if event.event_type == "moved" else event.src_path
        raw = os.fsencode(path)
        if raw.startswith(self.prefix):
            self.inbox._touch(raw[len(self.prefix):])


class Inbox:
    """Watch `<data>/inbox/` and import the files dropped there once they are complete."""

    def __init__(self, config: Config, *, settle_s: float = DEFAULT_SETTLE_S,
                 rescan_s: float | None = None, claims: Claims | None = None) -> None:
        if settle_s <= 0 or (rescan_s is not None and rescan_s <= 0):
            raise ValueError("settle_s and rescan_s must be greater than 0")
        self.config = config
        self.data = DataDir.at(config.data_dir)
        self.root = self.data.inbox
        self.settle_s = settle_s
        self.rescan_s = rescan_s if rescan_s is not None else settle_s
        self.claims = claims or Claims()
        self._run_lock = threading.Lock()  # one import at a time in this process
        self._state = threading.Lock()  # guards everything below (status() reads it)
        self._watched: dict[bytes, _Watched] = {}
        self._complete: set[bytes] = set()
        self._failed: dict[tuple[bytes, _Snap], str] = {}
        self._left: dict[bytes, str] = {}  # unknown, clutter, links, FIFOs: reported once
        self._touched: dict[bytes, float] = {}
        self._wake = threading.Event()
        self._importing = False
        self._watching = False
        self._watched_folder: tuple[int, int] | None = None  # (dev, inode) being watched
        self._last: dict[str, Any] | None = None
        self._hold_until = 0.0
        self._held_because = ""
        self.ensure()

    @classmethod
    def from_config(cls, config: Config, *, claims: Claims | None = None) -> Inbox:
        """The inbox as `acopio run` starts it: settle time from `devices.inbox_settle_s`."""
        return cls(config, settle_s=config.devices.inbox_settle_s, claims=claims)

    def ensure(self) -> None:
        """Create the inbox (group-writable) if it is missing."""
        try:
            self.root.mkdir(mode=INBOX_MODE, parents=True)
        except FileExistsError:
            return
        os.chmod(self.root, INBOX_MODE)  # mkdir's mode is cut by the umask
        log.info("inbox: created %s", self.root)

    # -- one pass -----------------------------------------------------------------------

    def process_once(self, stop: threading.Event | None = None) -> Summary | None:
        """Scan the inbox and import the files that are complete now.

        None when nothing was complete, or when another process is importing the inbox.
        `stop` set during the import stops it between reads (what is done stays done).
        """
        with self._run_lock:
            self.ensure()
            root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            dirs = _Dirs(root_fd)
            try:
                try:
                    fcntl.flock(root_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    log.info("inbox: another process is importing %s; skipped", self.root)
                    return None
                offered = self._look(dirs)
                if not offered.files:
                    return None
                return self._import(root_fd, offered, stop)
            finally:
                dirs.close()
                os.close(root_fd)  # also releases the flock

    def _look(self, dirs: _Dirs) -> Scan:
        """Rescan; update what is settling, failed and left; return the complete files."""
        with self._state:
            touched, self._touched = self._touched, {}
            self._wake.clear()
        found = scan(self.root, self.config.ingest.extra_clutter)
        now, wall = time.monotonic(), time.time()
        watched: dict[bytes, _Watched] = {}
        for entry in found.files:
            try:
                st = dirs.lstat(entry.rel)
            except OSError:
                continue  # gone since the walk; the next pass sees what replaced it
            if not stat.S_ISREG(st.st_mode):
                continue
            snap = _Snap.of(st)
            old = self._watched.get(entry.rel)
            if old is not None and old.snap == snap:
                since = old.since
            else:  # new or changed: unchanged since its ctime, as far as we can tell
                since = now - min(max(wall - st.st_ctime_ns / 1e9, 0.0), self.settle_s)
            since = max(since, touched.get(entry.rel, since))
            watched[entry.rel] = _Watched(
                replace(entry, size=st.st_size, mtime_ns=st.st_mtime_ns), snap, since)
        current = {(rel, w.snap) for rel, w in watched.items()}
        failed = {k: v for k, v in self._failed.items() if k in current}
        settled = {rel: w for rel, w in watched.items()
                   if now - w.since >= self.settle_s and (rel, w.snap) not in failed}
        writing = open_for_writing(self.root, {(w.snap.dev, w.snap.ino)
                                               for w in settled.values()})
        complete = [w.entry for w in settled.values()
                    if (w.snap.dev, w.snap.ino) not in writing]
        self._report_left(found)
        with self._state:
            self._watched = watched
            self._failed = failed
            self._complete = {f.rel for f in complete}
        return Scan(files=complete, unknown=found.unknown, skipped=found.skipped,
                    errors=found.errors)

    def _report_left(self, found: Scan) -> None:
        left = {rel: "unknown" for rel in found.unknown}
        left.update(found.skipped)
        left.update(found.errors)
        errors = {rel for rel, _ in found.errors}
        for rel, why in left.items():
            if self._left.get(rel) == why:
                continue
            if rel in errors:
                log.warning("inbox: %s could not be read (%s)", display(rel), why)
            elif why == "clutter":
                log.debug("inbox: %s is clutter; left in the inbox", display(rel))
            elif why == "unknown":
                log.info("inbox: %s is not a kind of media Acopio imports; left in the inbox",
                         display(rel), extra={"inbox_left": display(rel)})
            else:
                log.info("inbox: %s is not imported (%s); left in the inbox", display(rel), why,
                         extra={"inbox_left": display(rel)})
        with self._state:
            self._left = left

    def _import(self, root_fd: int, offered: Scan, stop: threading.Event | None) -> Summary:
        snaps = {}
        with self._state:
            for f in offered.files:
                snaps[f.rel] = self._watched[f.rel].snap
            self._importing = True
        importer = Importer(self.config, claims=self.claims)
        importer.reporter = _InboxReporter(self, root_fd, snaps, importer, stop)
        log.info("inbox: importing %d complete file(s)", len(offered.files))
        try:
            with _InboxSource(self.root, offered, snaps) as source:
                summary = importer.run_source(source, activity=None)
        finally:
            with self._state:
                self._importing = False
                self._complete = set()
        if summary.stopped:
            log.warning("inbox: the import stopped: %s", summary.stopped)
            if not (stop is not None and stop.is_set()):
                self._hold_until = time.monotonic() + STOP_BACKOFF_S
                self._held_because = summary.stopped
        else:
            self._hold_until, self._held_because = 0.0, ""
        log.info("inbox: %d imported, %d duplicate(s), %d failed, %.1f s", summary.imported,
                 summary.duplicates, len(summary.failed), summary.seconds)
        with self._state:
            self._last = summary.as_dict()
        return summary

    # -- called by the reporter ---------------------------------------------------------

    def _failed_import(self, rel: bytes, snap: _Snap, reason: str) -> None:
        log.warning("inbox: %s could not be imported: %s; left in the inbox, retried when it "
                    "changes", display(rel), reason, extra={"inbox_failed": display(rel)})
        with self._state:
            self._failed[(rel, snap)] = reason

    def _release(self, dirs: _Dirs, importer: Importer, outcome: Outcome, snap: _Snap) -> bool:
        """Delete an inbox file the catalog now holds; True when it was deleted."""
        rel, name = outcome.rel, display(outcome.rel)
        archived = self._in_archive(importer, outcome.sha256, snap.size)
        if archived is None:
            # A concurrent import claimed the same content and has not recorded it yet.
            log.info("inbox: %s is not in the catalog yet; kept for the next pass", name)
            return False
        folder, _, base = rel.rpartition(b"/")
        try:
            parent = dirs.fd(folder)
            removed = _remove_if_same(parent, base, snap)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                log.warning("inbox: %s was already gone after its import", name)
                return True
            self._failed_import(rel, snap, f"not_removed: {exc.strerror or exc}")
            return False
        if not removed:
            log.info("inbox: %s changed since it was imported; kept and looked at again", name)
            return False
        with self._state:
            self._watched.pop(rel, None)
        log.info("inbox: %s %s (archived as %s); removed from the inbox", name,
                 outcome.status, archived,
                 extra={"inbox_removed": name, "sha256": outcome.sha256})
        return True

    def _in_archive(self, importer: Importer, sha256: str, size: int) -> str | None:
        """The archive path of this content when the catalog indexes it and the archived
        file is there with this size; else None."""
        try:
            entry = importer.catalog.lookup(sha256) if len(sha256) == 64 else None
            path = entry.get("archive_path") if entry else None
            if not isinstance(path, str):
                return None
            st = (self.data.root / path).stat()
        except (OSError, CorruptStateError):
            return None
        return path if stat.S_ISREG(st.st_mode) and st.st_size == size else None

    def _remove_empty_folders(self, dirs: _Dirs, folders: Iterable[bytes]) -> None:
        """rmdir the folders left empty, deepest first; never the inbox itself."""
        for folder in sorted(folders, key=lambda f: f.count(b"/"), reverse=True):
            up, _, name = folder.rpartition(b"/")
            try:
                os.rmdir(name, dir_fd=dirs.fd(up))
            except OSError:
                continue  # not empty (clutter, new files), or already gone
            log.info("inbox: removed the empty folder %s", display(folder))

    # -- the service loop ---------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Watch and import until `stop` is set (a role inside `acopio run`)."""
        observer = self._start_observer()
        try:
            while not stop.is_set():
                observer = self._keep_watching(observer)
                now = time.monotonic()
                if now < self._hold_until:
                    self._wait(stop, self._hold_until, self._hold_until)
                    continue
                started = time.monotonic()
                try:
                    self.process_once(stop)
                except Exception:
                    log.exception("inbox: the pass failed; retrying in %d s", STOP_BACKOFF_S)
                    self._hold_until = time.monotonic() + STOP_BACKOFF_S
                    continue
                self._wait(stop, self._next_due(started),
                           started + min(self.settle_s / 2, 1.0))
        finally:
            if observer is not None:
                observer.stop()
                observer.join(timeout=5)
            with self._state:
                self._watching = False

    def _start_observer(self, quiet: bool = False) -> Any:
        observer = Observer()
        try:
            self.ensure()
            st = os.stat(self.root)
            observer.schedule(_Events(self), str(self.root), recursive=True,
                              event_filter=_EVENTS)
            observer.start()
        except OSError as exc:  # inotify limits: fall back to rescans alone
            if not quiet:
                log.warning("inbox: cannot watch %s (%s); rescanning every %.1f s instead",
                            self.root, exc, self.rescan_s)
            return None
        with self._state:
            self._watching = True
            self._watched_folder = (st.st_dev, st.st_ino)
        return observer

    def _keep_watching(self, observer: Any) -> Any:
        """A watch ends when the inbox folder is deleted or replaced (it is recreated here);
        then, or when watching could not start, try again."""
        try:
            st = os.stat(self.root)
            same = (st.st_dev, st.st_ino) == self._watched_folder
        except OSError:
            same = False
        if observer is not None and same and observer.emitters and all(
                e.is_alive() for e in observer.emitters):
            return observer
        if observer is not None:
            log.warning("inbox: the watch on %s ended; watching again", self.root)
            observer.stop()
            observer.join(timeout=5)
        with self._state:
            self._watching = False
        return self._start_observer(quiet=True)

    def _next_due(self, started: float) -> float:
        """When the next pass is due: a settling file's deadline, else the next rescan."""
        due, now = started + self.rescan_s, time.monotonic()
        with self._state:
            for rel, w in self._watched.items():
                settles = w.since + self.settle_s + 0.05
                # Files already settled but open for writing wait for their close event
                # (or the rescan), not for a deadline that has passed.
                if settles > now and (rel, w.snap) not in self._failed:
                    due = min(due, settles)
        return due

    def _wait(self, stop: threading.Event, deadline: float, earliest: float) -> None:
        """Sleep until `deadline`, or until an event once `earliest` has passed."""
        while not stop.is_set():
            now = time.monotonic()
            if now >= deadline:
                return
            if self._wake.is_set():
                if now >= earliest:
                    return
                stop.wait(min(earliest - now, _TICK_S))
            else:
                self._wake.wait(min(deadline - now, _TICK_S))

    def _touch(self, rel: bytes) -> None:
        with self._state:
            self._touched[rel] = time.monotonic()
        self._wake.set()

    # -- for the UI and `acopio devices list` -------------------------------------------

    def status(self) -> dict[str, Any]:
        with self._state:
            failed = sorted((display(rel), snap.size, reason)
                            for (rel, snap), reason in self._failed.items())
            pending = sum(1 for rel, w in self._watched.items()
                          if rel not in self._complete and (rel, w.snap) not in self._failed)
            return {
                "inbox": str(self.root),
                "watching": self._watching,
                "importing": self._importing,
                "pending": pending,
                "complete": len(self._complete),
                "failed": len(failed),
                "failed_files": [{"path": p, "size": s, "reason": r} for p, s, r in failed],
                "left": sorted(({"path": display(rel), "reason": why}
                                for rel, why in self._left.items()),
                               key=lambda d: d["path"]),
                "held": self._held_because if time.monotonic() < self._hold_until else "",
                "last_import": self._last,
            }


__all__ = ["DEFAULT_SETTLE_S", "INBOX_MODE", "Inbox", "open_for_writing"]
