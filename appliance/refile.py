"""Re-filing: move items to another agenda activity, or back to their day's `sin-actividad`.

The archive is the truth (design decision 1), so a re-filing moves the file itself: its name
leaves `archive/<old folder>/` and appears in `archive/<new folder>/`, and the catalog
follows. Bytes are never copied and an original is never opened for writing: the new name is
a hard link to the same inode (same filesystem), and the old name is removed last. The folder
of an activity is dated by the activity's first day (`ingest.filing.folder_key`); an item sent
back to `sin-actividad` goes to the folder of its capture day, in the kit's zone.

## The steps, and what a crash (kill -9, power cut) at each one leaves

One re-filing runs at a time per data folder (an flock on `state/refile/.lock`, which
`acopio check` holds too while it compares folders); the catalog shards keep their own locks,
so imports, edits and the web UI carry on meanwhile. For a batch of items:

1. **Plan** (nothing written): every item is looked up, its file checked, the target folder
   and a free name there chosen (a clash takes `_2`, `_3`, as an import does); an unknown
   item or activity, a bad slug, or an item already in that folder is a `RefileError`, and
   nothing changes.
2. **Journal**: `state/refile/<id>.json` says who moves what from where to where (written
   with temp + fsync + rename + fsync; its temp files live in `state/refile/tmp/`, so that
   debris of an interrupted re-filing is recognisable as such).
3. **Link** each file under its new name (`os.link`, which never replaces a file; should an
   import take the name meanwhile, the next free one is journalled, then linked), then fsync
   each target folder. *Commit point*: once every new name is durable, the re-filing is only
   ever finished, never undone. (Where the kernel refuses the hard link, see `_link`, the
   file is renamed without replacing instead: one atomic step, the old name gone at once.)
4. **Catalog**: one `refile` entry per item in the edit log (so that a shard rebuilt by
   `acopio check --repair` puts the item where it went, with who and when); each target
   shard gets its records in one write (`folder`, `activity`, `archive_path`, `filed_by`
   "manual", a history entry `refile` with the old and new values, revision bumped), which
   also points the content index at the new names; then each source shard loses them in one
   write. The source shards stay locked from reading the records until they lose them, so an
   edit made meanwhile is not lost (it waits, then finds the item moved). The new `folder`
   and `activity` are stamped with the sync clock (`edited[field]["hlc"]`, sync/hlc.py),
   taken under those locks, and the edit-log entries carry the stamp.
5. **Unlink** the old names, fsync the source folders, and remove the journal.

`follow()` is the same move for an item whose record a sync merge gave another folder
(sync/merge.py): the file goes where the record already says, and the merged filing keeps
its stamps (only `archive_path`, `filed_by` and the history change), so following is not a
new change of its own.

`recover()` reads the journals left behind and decides per journal, from the files alone:

- a crash while the journal is written leaves a temp file in `state/refile/tmp/` and no
  journal: the debris is removed, nothing had moved;
- during the links: journal, some of the new names: **undone**, the new names are unlinked
  (only a name that is the same inode as its old name; a renamed file is renamed back), so
  a batch moves whole or not at all; once every new name exists, it is finished instead;
- during the catalog writes: journal, both names, the records in the source shard or in both
  shards: **finished**, each target shard gets what it lacks, each source shard loses it,
  the old names go;
- during the unlinks or the last fsyncs: journal, the new name (the old one maybe still
  there): **finished**, an old name still there goes, then the journal.

Every step of the recovery is idempotent (a record already in its target shard is left as it
is, an old name already gone is skipped, a duplicate edit-log entry changes nothing on
replay), so a crash during a recovery is recovered the same way. Recovery runs at the start
of every re-filing, in `acopio check` (with `--repair`; without it an interrupted re-filing is
the finding `refile_interrupted`, and its two names are not reported as uncatalogued), and at
service start.

An import of the same content at the same time finds it archived throughout: the content
index points at the old name until the new one is catalogued and durable, then at the new
one, and the old name is removed only after that. Derivatives are keyed by content hash and
do not move; the query index follows the changed shards by itself, or at once from the
records written when the caller passes its `apply_changes` as `on_written` (the web UI).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import re
import secrets
import stat
import time
import unicodedata
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance import storage
from appliance.agenda import SIN_ACTIVIDAD, Activity, Agenda, AgendaError, check_slug
from appliance.catalog import (
    ITEMS,
    META,
    Catalog,
    SchemaTooNewError,
    ShardWrite,
    is_folder_key,
    shard_stat,
)
from appliance.config import Config
from appliance.datadir import DataDir
from appliance.editorial import EditLog, apply
from appliance.fsutil import (
    TEMP_PREFIX,
    atomic_write,
    fsync_dir,
    is_debris,
    libc,
    open_lock_file,
    remove_debris,
)
from appliance.storage import CorruptStateError, dump_json
from ingest import copy, filing
from sync.hlc import Clock, box_node

log = logging.getLogger(__name__)

JOURNAL_VERSION = 1
FILED_BY = "manual"
ACTION = "refile"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_BY_LIMIT = 64


class RefileError(ValueError):
    """The re-filing cannot be done as asked (unknown item or activity, bad slug, already
    there); nothing was changed. The message (English: CLI, API) says which and why; `code`
    and `values` let the web pages say it in the screen's language (`refile.error.<code>`)."""

    def __init__(self, message: str, code: str = "", **values: Any) -> None:
        super().__init__(message)
        self.code = code
        self.values = values


class RefileBusy(RefileError):
    """Another re-filing (or `acopio check`) holds the data folder's re-filing lock."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def journal_dir(data: DataDir) -> Path:
    return data.state / "refile"


@contextlib.contextmanager
def exclusive(data: DataDir, timeout: float | None = None) -> Iterator[None]:
    """Hold the data folder's re-filing lock (flock: a killed holder releases it).

    `timeout` None waits as long as it takes; otherwise RefileBusy after that many seconds.
    """
    # A user who may only read (an `acopio check` by someone else), or a disk remounted
    # read-only: no lock file at all means no re-filing ever ran here.
    fd = open_lock_file(journal_dir(data) / ".lock", missing_ok=True)
    if fd is None:
        yield
        return
    try:
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise RefileBusy("another re-filing or `acopio check` is running; "
                                         "try again in a moment", "busy") from None
                    time.sleep(0.05)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class _RefileData(DataDir):
    """The data folder, with the temp files of the re-filing's state writes kept apart in
    `state/refile/tmp/`: what a crash leaves there is known to be a re-filing's."""

    @property
    def tmp(self) -> Path:
        return journal_dir(self) / "tmp"


@dataclass
class Move:
    """One item of a re-filing: from `archive/<source>/<source_name>` to
    `archive/<target>/<target_name>`."""

    sha256: str
    source: str
    source_name: str
    target: str
    target_name: str
    activity: str
    wanted: str  # the name it should have had, before a clash suffix

    @property
    def source_rel(self) -> str:
        return f"archive/{self.source}/{self.source_name}"

    @property
    def target_rel(self) -> str:
        return f"archive/{self.target}/{self.target_name}"

    def as_dict(self) -> dict[str, str]:
        return {"sha256": self.sha256, "source": self.source, "source_name": self.source_name,
                "target": self.target, "target_name": self.target_name,
                "activity": self.activity, "wanted": self.wanted}


@dataclass
class Journal:
    path: Path
    by: str
    at: str
    moves: list[Move]

    def dump(self) -> bytes:
        return dump_json({"version": JOURNAL_VERSION, "by": self.by, "at": self.at,
                          "moves": [m.as_dict() for m in self.moves]})


def _check_name(name: Any) -> str:
    """A file name inside an archive folder, never a path (journals are re-read from disk)."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name \
            or "\0" in name or name.startswith(TEMP_PREFIX) or len(os.fsencode(name)) > 255:
        raise ValueError(f"not a file name: {name!r}")
    return name


def load_journal(path: Path) -> Journal:
    """A journal as written; anything odd in it (damage, tampering) raises ValueError, so a
    path is never built from it unchecked."""
    raw = storage.read_json_file(path)
    if raw is None:
        raise FileNotFoundError(path)
    if raw.get("version") != JOURNAL_VERSION:
        raise ValueError(f"unknown journal version {raw.get('version')!r}")
    moves = []
    for entry in raw.get("moves") or []:
        if not isinstance(entry, dict):
            raise ValueError("a move is not an object")
        sha = entry.get("sha256")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise ValueError(f"not a content hash: {sha!r}")
        for key in ("source", "target"):
            if not isinstance(entry.get(key), str) or not is_folder_key(entry[key]):
                raise ValueError(f"not an archive folder: {entry.get(key)!r}")
        moves.append(Move(sha, entry["source"], _check_name(entry.get("source_name")),
                          entry["target"], _check_name(entry.get("target_name")),
                          str(entry.get("activity", "")), str(entry.get("wanted", ""))))
    if not moves or not isinstance(raw.get("by"), str) or not isinstance(raw.get("at"), str):
        raise ValueError("incomplete journal")
    return Journal(path, raw["by"], raw["at"], moves)


@dataclass
class Interrupted:
    """What an interrupted re-filing left: a journal (or a temp file of one)."""

    path: str  # relative to the data folder
    detail: str
    sha256s: list[str] = field(default_factory=list)
    archive_paths: set[str] = field(default_factory=set)  # both names of each item


def _check_by(by: Any) -> str:
    if not isinstance(by, str):
        raise RefileError("who re-files must be named (by)")
    by = unicodedata.normalize("NFC", by).strip()
    if not by or len(by) > _BY_LIMIT or any(unicodedata.category(c)[0] == "C" for c in by):
        raise RefileError(f"invalid name of who re-files: {by[:80]!r}")
    return by


def _check_shas(sha256s: Iterable[Any]) -> list[str]:
    if isinstance(sha256s, str):
        sha256s = [sha256s]
    shas = list(dict.fromkeys(sha256s))
    if not shas:
        raise RefileError("nothing to re-file: give at least one item")
    for sha in shas:
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise RefileError(f"not a content hash (64 lower-case hex digits): {str(sha)[:80]!r}")
    return shas


def _same_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except FileNotFoundError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _exists(path: Path) -> bool:
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    return True


def _make_dirs(folder: Path, stop: Path) -> None:
    """Create `folder` (and missing parents up to `stop`), each new name made durable."""
    missing = []
    while not folder.is_dir() and folder != stop:
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir()
        fsync_dir(path.parent)


def _rename_noreplace(src: Path, dst: Path) -> None:
    """rename(2) that fails with EEXIST instead of replacing `dst` (Linux renameat2)."""
    at_fdcwd, rename_noreplace = -100, 1
    if libc().renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst),
                      rename_noreplace) != 0:
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), os.fspath(dst))
        raise OSError(err, os.strerror(err), os.fspath(src))


def _free_name(wanted: str, taken: set[str]) -> str:
    for candidate in copy.candidate_names(wanted):
        if candidate not in taken:
            return candidate
    raise RefileError(f"too many files named {wanted!r} in the target folder")


class Refiler:
    def __init__(self, config: Config, data: DataDir | None = None,
                 catalog: Catalog | None = None, *, lock_timeout: float | None = 30.0,
                 clock: Callable[[], str] = _now, node: str | None = None,
                 hlc: Clock | None = None,
                 on_written: Callable[[list[ShardWrite]], object] | None = None) -> None:
        """`node`: the name this box stamps its changes with for sync (default `kit.name`);
        `hlc`: a clock to use instead of the data folder's own; `on_written`: told of the
        catalog shards a re-filing (or a recovery it finished first) wrote, once it is done
        (catalog.ShardWrite; the web passes its query index's `apply_changes`)."""
        self.config = config
        self.data = data or DataDir.at(config.data_dir)
        self.catalog = catalog or Catalog(self.data)
        # Writes go through a catalog whose temp files live in state/refile/tmp/.
        self.writer = Catalog(_RefileData(self.data.root),
                              schema_version=self.catalog.schema_version,
                              migrations=self.catalog.migrations)
        self.agenda = Agenda(self.data.state)
        self.log = EditLog(self.data)
        self.root = journal_dir(self.data)
        self.tmp = self.root / "tmp"
        self.lock_timeout = lock_timeout
        self.clock = clock
        self.hlc = hlc or Clock(self.data.state, box_node(self.data.state,
                                                          node or config.kit.name),
                                tmp_dir=self.tmp)
        self.on_written = on_written
        self._written: list[ShardWrite] = []

    # -- re-filing ----------------------------------------------------------------------

    def refile(self, sha256s: list[str], activity: str | None, *, by: str
               ) -> list[dict[str, Any]]:
        """Move items to the agenda activity `activity` (its folder is dated by its first
        day), or with None or "sin-actividad" back to their capture day's `sin-actividad`
        folder. Returns the records as the catalog now holds them, in the order asked."""
        by = _check_by(by)
        shas = _check_shas(sha256s)
        target = self._target_activity(activity)
        with exclusive(self.data, self.lock_timeout), self._telling():
            self._recover_first()
            return self._move(self._plan(shas, target), by)

    def follow(self, sha256s: list[str], *, by: str = "sync") -> list[dict[str, Any]]:
        """Move items to the folder their catalog record names, where a sync merge changed
        `folder` and `activity` (sync.merge.merge_into_catalog) and the file is still in its
        old folder. The record's filing and its stamps stay as merged (only `archive_path`,
        `filed_by` and the history follow), so the move is not a new change that would win
        over later ones elsewhere. Items already where their record says are skipped;
        returns the records of the items moved."""
        by = _check_by(by)
        shas = _check_shas(sha256s)
        with exclusive(self.data, self.lock_timeout), self._telling():
            self._recover_first()
            wanted: dict[str, tuple[str, str]] = {}
            for sha in shas:
                entry = self.catalog.lookup(sha)
                source = entry.get("folder") if entry else None
                if not isinstance(source, str) or not is_folder_key(source):
                    raise RefileError(f"no item {sha} in the catalog")
                record = next((r for r in self.catalog.read_shard(source)
                               if r.get("sha256") == sha), None)
                if record is None:
                    raise RefileError(f"item {sha} is not in its catalog folder {source}; "
                                      "run `acopio check --repair`")
                key, slug = record.get("folder"), record.get("activity")
                if key == source:
                    continue
                if not isinstance(key, str) or not is_folder_key(key) \
                        or not isinstance(slug, str):
                    raise RefileError(f"item {sha}: its record names no archive folder "
                                      f"({str(key)[:80]!r})")
                wanted[sha] = (key, slug)
            if not wanted:
                return []
            return self._move(self._plan(list(wanted), None, wanted), by)

    @contextlib.contextmanager
    def _telling(self) -> Iterator[None]:
        """Tell `on_written` of the shard writes made inside, at the end (also when it
        failed half way: what was written stays written)."""
        self._written = []
        try:
            yield
        finally:
            written, self._written = self._written, []
            if written and self.on_written is not None:
                self.on_written(written)

    def _recover_first(self) -> None:
        _, errors = self._recover_all()
        if errors:
            raise RefileError("an interrupted re-filing could not be finished ("
                              + "; ".join(errors) + "); run `acopio check --repair`")

    def _move(self, moves: list[Move], by: str) -> list[dict[str, Any]]:
        """Journal, link, catalog, unlink (the module doc's steps 2 to 5)."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        journal = Journal(self.root / f"{stamp}-{secrets.token_hex(6)}.json", by,
                          self.clock(), moves)
        self._write_journal(journal)
        self._link_all(journal)
        try:
            self._finish(journal, journal.moves)
        except OSError as exc:
            raise RefileError(
                f"the re-filing stopped half way ({exc}); nothing is lost, and the next "
                "re-filing, `acopio check --repair` or the service start finishes it"
            ) from exc
        return self._records(journal.moves)

    def _target_activity(self, activity: str | None) -> Activity | None:
        if activity is None or activity == SIN_ACTIVIDAD:
            return None
        if not isinstance(activity, str):
            raise RefileError("activity must be a slug or null")
        try:
            check_slug(activity)
        except AgendaError as exc:
            raise RefileError(str(exc)) from None
        found = self.agenda.get(activity)
        if found is None:
            raise RefileError(f"no activity {activity!r} in the agenda (see `acopio agenda "
                              f"list`); use {SIN_ACTIVIDAD!r} for unsorted items",
                              "no_activity", slug=activity)
        return found

    def _plan(self, shas: list[str], target: Activity | None,
              explicit: dict[str, tuple[str, str]] | None = None) -> list[Move]:
        """`explicit`: {sha256: (folder key, activity slug)} instead of `target`."""
        zone = self.config.zone
        shards: dict[str, list[dict[str, Any]]] = {}

        def shard(key: str) -> list[dict[str, Any]]:
            if key not in shards:
                shards[key] = self.catalog.read_shard(key)  # damage raises, before any change
            return shards[key]

        moves: list[Move] = []
        for sha in shas:
            entry = self.catalog.lookup(sha)
            source = entry.get("folder") if entry else None
            if not isinstance(source, str) or not is_folder_key(source):
                raise RefileError(f"no item {sha} in the catalog")
            record = next((r for r in shard(source) if r.get("sha256") == sha), None)
            if record is None:
                raise RefileError(f"item {sha} is not in its catalog folder {source}; run "
                                  "`acopio check --repair`")
            archive_path = record.get("archive_path", "")
            folder, _, name = str(archive_path).rpartition("/")
            try:
                if folder != f"archive/{source}":
                    raise ValueError(archive_path)
                _check_name(name)
            except ValueError:
                raise RefileError(f"item {sha}: unexpected archive path {archive_path!r}; "
                                  "run `acopio check`") from None
            try:
                regular = stat.S_ISREG(os.lstat(self.data.archive / source / name).st_mode)
            except FileNotFoundError:
                regular = False
            if not regular:
                raise RefileError(f"{archive_path}: the file is missing from the archive; "
                                  "run `acopio check`", "missing_file",
                                  name=record.get("original_name") or archive_path)
            if explicit is not None:
                key, slug = explicit[sha]
            elif target is None:
                key = filing.folder_key(self._captured(record).astimezone(zone), SIN_ACTIVIDAD)
                slug = SIN_ACTIVIDAD
            else:
                key = filing.folder_key(target.start.astimezone(zone), target.slug)
                slug = target.slug
            if key == source:
                raise RefileError(f"item {sha} is already in {key}", "already_there",
                                  name=record.get("original_name") or sha)
            shard(key)
            original = record.get("original_name")
            wanted = copy.safe_name(os.fsencode(original)) \
                if isinstance(original, str) and original else name
            moves.append(Move(sha, source, name, key, "", slug, wanted))
        taken: dict[str, set[str]] = {}
        for move in moves:
            if move.target not in taken:
                folder_path = self.data.archive / move.target
                taken[move.target] = set(os.listdir(folder_path)) if folder_path.is_dir() \
                    else set()
            move.target_name = _free_name(move.wanted, taken[move.target])
            taken[move.target].add(move.target_name)
        return moves

    def _captured(self, record: dict[str, Any]) -> datetime:
        try:
            value = datetime.fromisoformat(str(record.get("captured_at")))
        except ValueError:
            raise RefileError(f"item {record['sha256']}: no usable capture time") from None
        return value if value.tzinfo else value.replace(tzinfo=self.config.zone)

    def _write_journal(self, journal: Journal) -> None:
        atomic_write(journal.path, journal.dump(), self.tmp)

    def _path(self, folder: str, name: str) -> Path:
        return self.data.archive / folder / name

    def _link_all(self, journal: Journal) -> None:
        """Give every file its new name, durably. Any failure undoes what was done."""
        done: list[Move] = []
        renamed: set[str] = set()
        try:
            for move in journal.moves:
                folder = self.data.archive / move.target
                _make_dirs(folder, self.data.archive)
                src = self._path(move.source, move.source_name)
                while True:
                    try:
                        if self._link(src, folder / move.target_name):
                            renamed.add(move.sha256)
                        break
                    except FileExistsError:
                        # An import took the name since the plan: journal the next free one
                        # before linking it, so that a crash never leaves a name unaccounted.
                        taken = set(os.listdir(folder)) | {
                            m.target_name for m in journal.moves if m.target == move.target}
                        move.target_name = _free_name(move.wanted, taken)
                        self._write_journal(journal)
                done.append(move)
            folders = {m.target for m in journal.moves}
            folders |= {m.source for m in journal.moves if m.sha256 in renamed}
            for key in sorted(folders):
                fsync_dir(self.data.archive / key)
        except BaseException as exc:
            self._undo(journal, done, renamed)
            if isinstance(exc, OSError) and not isinstance(exc, RefileError):
                raise RefileError(f"could not give {move.source_rel} its new name in "
                                  f"{move.target} ({exc.strerror or exc}); nothing was "
                                  "changed") from exc
            raise

    @staticmethod
    def _link(src: Path, dst: Path) -> bool:
        """A second name for the file (never replacing one); True when it had to be a
        rename instead.

        A hard link is refused (EPERM) to a process that neither owns the file nor may write
        it when the kernel protects hard links (`fs.protected_hardlinks`, on by default):
        files that the device watcher (root) imported, re-filed from the web UI (the acopio
        user). Then the file is renamed without replacing (renameat2 RENAME_NOREPLACE): still
        no copy and a single atomic step, but for the few milliseconds until the catalog
        follows, the content index names a path that is gone, and an import of the very same
        content in that instant would archive it a second time.
        """
        try:
            os.link(src, dst)
            return False
        except PermissionError as exc:
            if exc.errno != errno.EPERM:
                raise
            _rename_noreplace(src, dst)
            return True

    def _undo(self, journal: Journal, moves: list[Move], renamed: Collection[str] = ()
              ) -> None:
        """Before the commit point: remove the new names (never a file that is not the same
        inode as its old name; a renamed file gets its old name back), then the journal."""
        folders = set()
        for move in moves:
            src = self._path(move.source, move.source_name)
            dst = self._path(move.target, move.target_name)
            if move.sha256 in renamed and _exists(dst) and not _exists(src):
                _rename_noreplace(dst, src)
                folders |= {move.target, move.source}
            elif _same_file(src, dst):
                os.unlink(dst)
                folders.add(move.target)
        for key in sorted(folders):
            fsync_dir(self.data.archive / key)
        self._drop(journal)

    def _drop(self, journal: Journal) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(journal.path)
        fsync_dir(self.root)

    def _finish(self, journal: Journal, moves: list[Move]) -> None:
        """After the commit point: catalog, then the old names, then the journal. Idempotent,
        so a recovery runs it again from whatever step a crash stopped at."""
        present = {key: {r.get("sha256") for r in self.catalog.read_shard(key)}
                   for key in {m.target for m in moves}}
        sources = sorted({m.source for m in moves})
        # Source shards stay locked while their records move (see the module doc); only
        # when a source folder is also a target (two dates' sin-actividad swapping items)
        # they are done one at a time, since a shard's lock is never taken twice.
        rounds = [sources] if not set(sources) & set(present) else [[s] for s in sources]
        orphans: list[Move] = []
        for keys in rounds:
            orphans += self._commit(journal, [m for m in moves if m.source in keys], keys,
                                    present)
        emptied = set()
        for move in moves:
            src = self._path(move.source, move.source_name)
            dst = self._path(move.target, move.target_name)
            if move in orphans:
                # In neither shard (only a damaged shard can do that): keep one name, the
                # old one if there, for `acopio check --repair` to adopt.
                if _same_file(src, dst):
                    os.unlink(dst)
                    emptied.add(move.target)
                log.warning("re-filing %s: no catalog record found; `acopio check --repair` "
                            "adopts the file", move.sha256)
            elif _same_file(src, dst):
                os.unlink(src)
                emptied.add(move.source)
        for key in sorted(emptied):
            fsync_dir(self.data.archive / key)
        self._drop(journal)

    def _commit(self, journal: Journal, moves: list[Move], sources: list[str],
                present: dict[str, set[Any]]) -> list[Move]:
        """Move the records of `moves` (all from `sources`) to their target shards: one
        write per target shard, then one per source shard. Returns the moves whose record
        was in neither shard."""
        orphans: list[Move] = []
        listening = self.on_written is not None
        stats: dict[str, list[os.stat_result | None]] = {key: [] for key in sources}
        left: dict[str, list[dict[str, Any]]] = {}  # the source shards as written
        with ExitStack() as stack:
            dbs = {}
            for key in sources:
                path = self.writer.shard_path(key)
                dbs[key] = stack.enter_context(storage.transaction(
                    path, self.tmp, written=(lambda b, a, k=key: stats[k].extend((b, a)))
                    if listening else None))
            new: dict[str, list[dict[str, Any]]] = {}
            entries: list[dict[str, Any]] = []
            index: dict[str, dict[str, str]] = {}
            removed: dict[str, list[int]] = {}
            stamps: list[str] = []

            def stamp() -> str:
                # The sync clock's stamp of the new filing, taken under the source shards'
                # locks (a recovery takes a new one: the move lands now).
                if not stamps:
                    stamps.append(self.hlc.now())
                return stamps[0]

            for move in moves:
                table = dbs[move.source].table(ITEMS)
                doc = next((d for d in table.all() if d.get("sha256") == move.sha256
                            and d.get("archive_path") == move.source_rel), None)
                if doc is not None:
                    removed.setdefault(move.source, []).append(doc.doc_id)
                if move.sha256 in present[move.target]:
                    # Already there (a recovery after its write): the target's record wins.
                    index[move.sha256] = {"folder": move.target, "archive_path": move.target_rel}
                    continue
                if doc is None:
                    orphans.append(move)
                    continue
                record = self._current(dbs[move.source], dict(doc))
                changed = apply(record, {"folder": move.target, "activity": move.activity,
                                         "archive_path": move.target_rel,
                                         "filed_by": FILED_BY},
                                by=journal.by, at=journal.at, action=ACTION,
                                hlc=stamp) or record
                new.setdefault(move.target, []).append(changed)
                changes = changed["history"][-1]["changes"]
                entries.append({"sha256": move.sha256, "at": journal.at, "by": journal.by,
                                "action": ACTION, "changes": changes,
                                **({"hlc": stamps[0]} if stamps and ("folder" in changes or
                                                                     "activity" in changes)
                                   else {})})
                present[move.target].add(move.sha256)
            self.log.append(entries)
            for key, records in new.items():
                # also points the content index at the new names
                self.writer.upsert(key, records,
                                   after_write=self._written.append if listening else None)
            if index:
                self.writer.by_hash.put_many(index)
            for key, doc_ids in removed.items():
                dbs[key].table(ITEMS).remove(doc_ids=doc_ids)
                if listening:
                    left[key] = [self._current(dbs[key], dict(d))
                                 for d in dbs[key].table(ITEMS).all()]
        for key, records in left.items():
            if len(stats[key]) == 2 and stats[key][1] is not None:
                before, after = stats[key]
                self._written.append(ShardWrite(
                    key, None, records, shard_stat(before) if before else None,
                    shard_stat(after)))
        return orphans

    def _current(self, db: Any, record: dict[str, Any]) -> dict[str, Any]:
        """A record read straight from a shard, brought to the current schema."""
        meta = db.table(META).get(doc_id=1)
        version = meta["schema_version"] if meta else self.catalog.schema_version
        if version > self.catalog.schema_version:
            raise SchemaTooNewError(f"catalog schema {version} is newer than this Acopio")
        for step in range(version, self.catalog.schema_version):
            record = self.catalog.migrations[step](record)
        return record

    def _records(self, moves: list[Move]) -> list[dict[str, Any]]:
        by_sha: dict[str, dict[str, Any]] = {}
        for key in {m.target for m in moves}:
            for record in self.catalog.read_shard(key):
                by_sha[record["sha256"]] = record
        return [by_sha[m.sha256] for m in moves if m.sha256 in by_sha]

    # -- recovery -----------------------------------------------------------------------

    def recover(self, *, locked: bool = False) -> list[str]:
        """Finish (or undo, when not every new name was made) the re-filings a crash
        interrupted; the content hashes of their items. Idempotent. `locked`: the caller
        already holds `exclusive(data)` (acopio check)."""
        if not self.root.is_dir():
            return []
        if locked:
            return self._recover_all()[0]
        with exclusive(self.data, self.lock_timeout):
            return self._recover_all()[0]

    def _recover_all(self) -> tuple[list[str], list[str]]:
        handled: list[str] = []
        errors: list[str] = []
        if self.tmp.is_dir():
            remove_debris(self.tmp)
        for path in sorted(self.root.glob("*.json")):
            try:
                journal = load_journal(path)
                self._resume(journal)
            except (OSError, ValueError, CorruptStateError, SchemaTooNewError) as exc:
                log.warning("interrupted re-filing %s could not be finished: %s", path.name, exc)
                errors.append(f"{path.name}: {exc}")
                continue
            handled.extend(m.sha256 for m in journal.moves)
            log.info("interrupted re-filing %s finished (%d items)", path.name,
                     len(journal.moves))
        return handled, errors

    def _resume(self, journal: Journal) -> None:
        linked, moved, unlinked = [], [], []
        for move in journal.moves:
            src = self._path(move.source, move.source_name)
            dst = self._path(move.target, move.target_name)
            if _same_file(src, dst):
                linked.append(move)  # both names: the same inode
            elif not _exists(src) and _exists(dst):
                moved.append(move)  # the old name gone (unlinked after the commit, or renamed)
            elif _exists(src):
                unlinked.append(move)  # the new name never made (or is someone else's)
            else:
                log.warning("re-filing %s: neither %s nor %s exists", move.sha256,
                            move.source_rel, move.target_rel)
        if unlinked:
            # A new name is missing, so the crash came before the commit point (the catalog
            # is untouched): undone, as if never asked; a renamed file gets its name back.
            self._undo(journal, linked + moved, {m.sha256 for m in moved})
            return
        self._finish(journal, linked + moved)

    def interrupted(self) -> list[Interrupted]:
        """The re-filings a crash interrupted (their journals, and temp files of journals
        or of catalog writes that were being written), as `acopio check` reports them.
        Meaningful while holding `exclusive(data)`: then no re-filing is running."""
        found: list[Interrupted] = []
        if not self.root.is_dir():
            return found
        if self.tmp.is_dir():
            for path in sorted(self.tmp.glob(TEMP_PREFIX + "*")):
                if is_debris(path):
                    found.append(Interrupted(
                        self.data.relative(path),
                        "temp file of an interrupted re-filing; nothing is lost, "
                        "`acopio check --repair` removes it"))
        for path in sorted(self.root.glob("*.json")):
            rel = self.data.relative(path)
            try:
                journal = load_journal(path)
            except (OSError, ValueError, CorruptStateError) as exc:
                found.append(Interrupted(rel, f"re-filing journal cannot be read ({exc}); "
                                              "check the files it names by hand"))
                continue
            targets = sorted({m.target for m in journal.moves})
            found.append(Interrupted(
                rel,
                f"re-filing of {len(journal.moves)} item(s) to {', '.join(targets)} by "
                f"{journal.by} at {journal.at} did not finish; `acopio check --repair`, the "
                "next re-filing or the service start finishes it",
                [m.sha256 for m in journal.moves],
                {p for m in journal.moves for p in (m.source_rel, m.target_rel)}))
        return found


__all__ = ["Interrupted", "Journal", "Move", "RefileBusy", "RefileError", "Refiler",
           "exclusive", "journal_dir", "load_journal"]
