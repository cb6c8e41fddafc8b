"""Where an import reads from: a mounted card or folder, or (see ptp.py) a camera.

The pipeline only needs two things of a source: the list of files it offers (a `Scan`) and
their bytes, pushed chunk by chunk into a sink that hashes and writes them. Everything about
reading safely from that kind of source stays behind this interface.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ingest.walk import Scan, SourceFile, open_source, scan

CHUNK = 4 * 1024 * 1024
RING = 3
Sink = Callable[[memoryview], None]


class BufferRing:
    """The buffers a source reads into, in turn, allocated once per source.

    A chunk handed to a sink stays untouched until the sink has returned twice more: the
    stager writes one chunk on another thread while the next is read and hashed.
    """

    def __init__(self, size: int = CHUNK, count: int = RING) -> None:
        self._buffers = [bytearray(size) for _ in range(count)]
        self._next = 0

    def next(self) -> bytearray:
        buf = self._buffers[self._next]
        self._next = (self._next + 1) % len(self._buffers)
        return buf


class SourceChangedError(OSError):
    """The source file changed size or time while it was being read."""


class Source(Protocol):
    description: str

    def scan(self, extra_clutter: tuple[str, ...] = ()) -> Scan: ...

    def read(self, entry: SourceFile, sink: Sink) -> int:
        """Push the entry's bytes into `sink`; return the count. OSError when reading fails.

        Chunks come from a BufferRing: each stays untouched until `sink` has returned twice
        more. One thread reads a source at a time.
        """
        ...

    def close(self) -> None: ...


class FolderSource:
    """A mounted card or a folder, read without following links (see walk.py)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.description = str(self.root)
        self._fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._ring = BufferRing()

    def scan(self, extra_clutter: tuple[str, ...] = ()) -> Scan:
        return scan(self.root, extra_clutter)

    def read(self, entry: SourceFile, sink: Sink) -> int:
        with open_source(self._fd, entry.rel) as fd:
            before = os.fstat(fd)
            with contextlib.suppress(OSError):  # only a hint; some filesystems refuse it
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            offset = 0
            while True:
                buf = self._ring.next()
                n = os.preadv(fd, [buf], offset)
                if n == 0:
                    break
                sink(memoryview(buf)[:n])
                offset += n
            after = os.fstat(fd)
        if offset != before.st_size or after.st_size != before.st_size \
                or after.st_mtime_ns != before.st_mtime_ns:
            raise SourceChangedError(errno.EIO, "source changed while it was being read")
        return offset

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FolderSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
