"""The next chunk to upload, read from the kit's disk and hashed while the current one is on
the wire.

Why: reading a chunk and hashing it for `Upload-Checksum` took about 1.5 s per GB on the
uploads' own thread, the link idle meanwhile (`./scripts/bench sync`). A helper thread does
both one chunk ahead: the next chunk of a large file, or the first (for a photo, the only)
chunk of the next original. File reads and SHA-256 release the GIL, so this overlaps on a
Pi's cores. At most one chunk is held ahead (`sync.chunk_mb` of memory).

A chunk read ahead is only used for the same file (device and inode), offset and length; it
is read through its own file descriptor, so nothing else's bytes can stand in for it. What
the hub receives is checked against the whole file's SHA-256 all the same.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

Key = tuple[int, int, int, int]  # st_dev, st_ino, offset, length


def key_of(fd: int, offset: int, length: int) -> Key:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino, offset, length)


def _read(path: Path | None, fd: int | None, offset: int, length: int
          ) -> tuple[Key, bytes, bytes]:
    """(key, chunk, its SHA-256) through a descriptor of its own (`fd` is a dup to close)."""
    own = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC) if path else fd
    assert own is not None
    try:
        parts = []
        got = 0
        while got < length:
            part = os.pread(own, length - got, offset + got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        chunk = parts[0] if len(parts) == 1 else b"".join(parts)
        return key_of(own, offset, length), chunk, hashlib.sha256(chunk).digest()
    finally:
        os.close(own)


class ReadAhead:
    """`ahead_path`/`ahead_fd` start reading a chunk in the background; `take` gives it
    (chunk, SHA-256 digest) when it is the one asked for, else None."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-readahead")
        # (offset, length), the read, and the descriptor it was given (closed by the read)
        self._next: tuple[tuple[int, int], Future[tuple[Key, bytes, bytes]], int | None] | \
            None = None

    def ahead_path(self, path: Path, length: int) -> None:
        """The first `length` bytes of the file at `path` (the next original)."""
        if length > 0:
            self.drop()
            self._next = ((0, length), self._pool.submit(_read, path, None, 0, length), None)

    def ahead_fd(self, fd: int, offset: int, length: int) -> None:
        """`length` bytes at `offset` of the open file `fd` (the next chunk)."""
        if length > 0:
            self.drop()
            own = os.dup(fd)
            self._next = ((offset, length), self._pool.submit(_read, None, own, offset, length),
                          own)

    def take(self, fd: int, offset: int, length: int) -> tuple[bytes, bytes] | None:
        """The chunk at `offset`, `length` of the file open as `fd`, if it was read ahead
        (waiting for it if it is being read); None otherwise (then the caller reads it, and
        reports what goes wrong)."""
        pending, self._next = self._next, None
        if pending is None or pending[0] != (offset, length):
            self._drop(pending)
            return None
        try:
            key, chunk, digest = pending[1].result()
        except OSError:
            return None
        if key != key_of(fd, offset, length) or len(chunk) != length:
            return None
        return chunk, digest

    def drop(self) -> None:
        pending, self._next = self._next, None
        self._drop(pending)

    @staticmethod
    def _drop(pending: tuple[tuple[int, int], Future[tuple[Key, bytes, bytes]], int | None]
              | None) -> None:
        if pending is None:
            return
        if pending[1].cancel():
            if pending[2] is not None:  # never run: its descriptor is ours to close
                os.close(pending[2])
        else:
            pending[1].exception()  # let it end (it closes its descriptor)

    def close(self) -> None:
        self.drop()
        self._pool.shutdown(wait=True)
