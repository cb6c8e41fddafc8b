"""The verified copy (design decision 4), one file at a time.

Order matters and is the whole point: hash while reading the source; write a temp file on the
archive's filesystem (its staging folder, because the destination folder depends on metadata
read from the copy); fsync it; give it its final name in the destination folder without ever
replacing an existing file; read the destination back from the disk, not from the page cache,
and compare hashes; fsync that folder. Only then may the catalog say it is archived. (An
import fsyncs each folder once per catalog batch, just before the batch is recorded.)

A temp file holds an flock for as long as its writer lives, so a crash leaves an unlocked
temp that any later run (or `acopio check --repair`) can recognise as debris and delete,
while a concurrent import's live temp is left alone.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import queue
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from appliance.fsutil import fsync_dir, open_temp
from ingest.sources import CHUNK, Source
from ingest.walk import SourceFile

MAX_NAME_BYTES = 255


class VerifyError(OSError):
    """The destination read back from disk does not match what was read from the source."""


class ArchiveError(OSError):
    """The archive's disk, not the card, failed: a write, a flush, a link or a read back.

    Told apart from the card's errors so that an import stops on a failing archive disk
    (every later file would fail the same way, each called a card read error) while a card's
    unreadable file fails alone."""


@contextlib.contextmanager
def archive_side() -> Iterator[None]:
    """Errors raised inside are the archive disk's: OSError becomes ArchiveError (same errno,
    message and file name, so ENOSPC and EROFS are still told by errno)."""
    try:
        yield
    except (ArchiveError, VerifyError):
        raise
    except OSError as exc:
        raise ArchiveError(exc.errno, exc.strerror or str(exc), exc.filename) from exc


@dataclass
class TempCopy:
    path: Path
    fd: int  # kept open: it holds the flock that marks the temp as alive
    sha256: str
    size: int

    def sync(self) -> None:
        """Make the copy's bytes durable (before it gets its final name)."""
        with archive_side():
            os.fsync(self.fd)

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def hash_fd(fd: int, progress: Callable[[int], None] | None = None) -> tuple[str, int]:
    """SHA-256 and length of an open file, read from the start."""
    digest = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    offset = 0
    while True:
        n = os.preadv(fd, [buf], offset)
        if n == 0:
            return digest.hexdigest(), offset
        digest.update(view[:n])
        offset += n
        if progress:
            progress(n)


WRITEBACK_STEP = 16 * 1024 * 1024


def _write_all(fd: int, chunk: memoryview) -> None:
    while chunk:
        chunk = chunk[os.write(fd, chunk):]


class _Writer:
    """Writes chunks on a thread of its own, one behind the reader: reading and hashing the
    next chunk overlaps writing this one (both release the GIL). Relies on the source's
    BufferRing: a chunk stays untouched until the sink has returned twice more, and the queue
    holds one, so the reader never refills a buffer that is still being written."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.queue: queue.Queue[memoryview | None] = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="stage-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        written = flushed = 0
        while (chunk := self.queue.get()) is not None:
            if self.error is None:
                try:
                    _write_all(self.fd, chunk)
                    written += len(chunk)
                    if written - flushed >= 2 * WRITEBACK_STEP:
                        # Start writing back what is one step behind, without waiting and
                        # without keeping it cached: the final fsync then has little left
                        # to do, the disk works while we read, and a Pi's small memory is
                        # not filled with dirty pages. (The read-back bypasses the cache.)
                        os.posix_fadvise(self.fd, flushed, WRITEBACK_STEP,
                                         os.POSIX_FADV_DONTNEED)
                        flushed += WRITEBACK_STEP
                except BaseException as exc:  # handed to the reading thread
                    self.error = exc

    def put(self, chunk: memoryview) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(chunk)

    def close(self) -> None:
        """Wait until everything is written; raise the writer's error if it had one."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def stage(source: Source, entry: SourceFile, staging: Path,
          progress: Callable[[int], None] | None = None) -> TempCopy:
    """Copy one source entry into a new, fsynced temp file in `staging`, hashing as it reads.

    `staging` is inside the archive (same filesystem), so the final link is atomic. The temp
    keeps the source's modification time, as `cp -p` would. Files larger than one chunk are
    written by a second thread while the next chunk is read and hashed. The temp is not yet
    durable: `TempCopy.sync()` comes next (on the verifying thread, so that the next file's
    copy is not held up by this one's flush).
    """
    with archive_side():
        out, path = open_temp(staging)
    temp = TempCopy(path, out, "", 0)
    digest = hashlib.sha256()
    writer = _Writer(out) if entry.size > CHUNK else None

    def sink(chunk: memoryview) -> None:
        digest.update(chunk)
        with archive_side():
            if writer is not None:
                writer.put(chunk)
            else:
                _write_all(out, chunk)
        if progress:
            progress(len(chunk))

    try:
        try:
            temp.size = source.read(entry, sink)
        finally:
            if writer is not None:
                with archive_side():
                    writer.close()
        with archive_side():
            os.utime(out, ns=(entry.mtime_ns, entry.mtime_ns))
    except BaseException:
        temp.discard()
        raise
    temp.sha256 = digest.hexdigest()
    return temp


def hash_source(source: Source, entry: SourceFile,
                progress: Callable[[int], None] | None = None) -> tuple[str, int]:
    """SHA-256 and length of a source entry, read without writing anything."""
    digest = hashlib.sha256()

    def sink(chunk: memoryview) -> None:
        digest.update(chunk)
        if progress:
            progress(len(chunk))

    size = source.read(entry, sink)
    return digest.hexdigest(), size


def safe_name(original: bytes) -> str:
    """The archive name for an original name: valid UTF-8 (NFC), no control characters,
    not hidden, no leading dash, at most 255 bytes with the extension kept."""
    text = unicodedata.normalize("NFC", original.decode("utf-8", "replace"))
    text = "".join("_" if (not ch.isprintable() or ch in "/\\\ufffd") else ch for ch in text)
    text = text.strip()
    if not text or text in {".", ".."}:
        text = "sin-nombre"
    if text[0] in ".-~":
        text = "_" + text[1:]
    return _fit(text, "")


def _fit(name: str, suffix: str) -> str:
    """`name` with `suffix` before its extension, shortened to fit MAX_NAME_BYTES."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext.encode()) > 16:
        stem, ext = name, ""
    tail = suffix + ("." + ext if ext else "")
    budget = MAX_NAME_BYTES - len(tail.encode())
    encoded = stem.encode()
    if len(encoded) > budget:
        stem = encoded[:budget].decode("utf-8", "ignore")
    return stem + tail


def candidate_names(name: str) -> Iterator[str]:
    """The name, then its suffixed variants, in the order a clash tries them."""
    yield name
    for i in range(2, 1000):
        yield _fit(name, f"_{i}")


def place(temp: TempCopy, dest_dir: Path, name: str,
          same_content: Callable[[Path], bool], *, sync_dir: bool = True) -> tuple[Path, bool]:
    """Give the temp file a final name in `dest_dir` without ever replacing a file.

    Returns (final path, adopted). If a file of that name already holds the same content (a
    run that crashed after its rename but before its catalog write), it is adopted and the
    temp discarded. A clash with different content takes the next free suffix.
    `sync_dir=False` leaves fsyncing `dest_dir` to the caller, who must do it before any
    record says the file is archived (an import does it once per folder and batch).
    """
    for candidate in candidate_names(name):
        final = dest_dir / candidate
        try:
            os.link(temp.path, final)  # fails with EEXIST instead of replacing
        except FileExistsError:
            if same_content(final):
                temp.discard()
                return final, True
            continue
        os.unlink(temp.path)
        temp.close()
        if sync_dir:
            fsync_dir(dest_dir)
        return final, False
    raise OSError(errno.EEXIST, f"too many files named {name!r} in {dest_dir}")


def set_aside_damaged(state: Path, path: Path, sha256: str) -> Path:
    """Move an archived original found damaged (cut short, or its bytes no longer its
    SHA-256) out of the archive into `state/damaged/`, kept, never deleted: its record
    then names a missing file, which the card's next import restores
    (ingest.pipeline) and `acopio check` reports until then. Returns where it went."""
    aside = state / "damaged"
    aside.mkdir(parents=True, exist_ok=True)
    target = aside / f"{time.strftime('%Y%m%dT%H%M%S')}-{sha256[:12]}-{path.name}"
    os.rename(path, target)
    fsync_dir(aside)
    fsync_dir(path.parent)
    return target


class ReadBack:
    """Reads files back from the disk itself, bypassing the page cache, to verify them.

    O_DIRECT where the filesystem supports it (it needs a page-aligned buffer, kept here and
    reused: mapping a fresh one per file costs more than reading a small photo); elsewhere
    (tmpfs, some FUSE) the cached pages are dropped first so the read cannot be served from
    what was just written. One instance per thread. A file larger than a chunk is read ahead
    by a helper thread while the previous chunk is hashed, so the disk and the hash overlap.
    """

    def __init__(self, chunk: int = CHUNK) -> None:
        self._buffers = [mmap.mmap(-1, chunk) for _ in range(3)]

    def sha256(self, path: Path) -> tuple[str, int]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                return hash_fd(fd)
            finally:
                os.close(fd)
        try:
            digest = hashlib.sha256()
            offset = 0
            for chunk in self._chunks(fd, os.fstat(fd).st_size):
                digest.update(chunk)
                offset += len(chunk)
            return digest.hexdigest(), offset
        finally:
            os.close(fd)

    def _chunks(self, fd: int, size: int) -> Iterator[memoryview]:
        """The file's chunks in order. Above one chunk, a reader thread fills the buffers in
        turn, one ahead: with three buffers and a queue of one, it refills a buffer only
        after the consumer has asked for the chunk after it (as copy._Writer, reversed)."""
        if size <= len(self._buffers[0]):
            n = os.preadv(fd, [self._buffers[0]], 0)
            if n:
                yield memoryview(self._buffers[0])[:n]
            return
        chunks: queue.Queue[memoryview | BaseException | None] = queue.Queue(maxsize=1)
        stop = threading.Event()

        def read_ahead() -> None:
            offset, index = 0, 0
            try:
                while not stop.is_set():
                    buf = self._buffers[index % 3]
                    n = os.preadv(fd, [buf], offset)
                    if n == 0:
                        break
                    chunks.put(memoryview(buf)[:n])
                    offset += n
                    index += 1
                chunks.put(None)
            except BaseException as exc:  # handed to the consumer
                chunks.put(exc)

        reader = threading.Thread(target=read_ahead, name="read-back", daemon=True)
        reader.start()
        try:
            while (item := chunks.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while reader.is_alive():  # unblock a reader waiting to put, then let it end
                with contextlib.suppress(queue.Empty):
                    chunks.get(timeout=0.1)
            reader.join()

    def verify(self, path: Path, sha256: str, size: int) -> None:
        actual, length = self.sha256(path)
        if actual != sha256 or length != size:
            raise VerifyError(errno.EIO, f"verification failed for {path.name}: read back "
                              f"{length} bytes with SHA-256 {actual[:12]}…, expected "
                              f"{sha256[:12]}…")
