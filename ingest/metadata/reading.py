"""Reading the caller's descriptor from Python, and telling damage from a failing device.

Why (design decision 4): the pipeline hands over a descriptor it opened itself and checked to
be a regular file; nothing here opens anything by name, because a card's names are hostile
input. Libraries that want a file object get ``fd_reader``: it reads with pread, so it has its
own position and never closes the fd. The structural damage checks read through ``ReadAt``
(pread at an offset), never through mmap: a page fault on a file whose device fails raises
SIGBUS, which kills the process, where pread raises EIO, which the pipeline handles.

Bad media never raises out of ``probe``; a real I/O error (a card pulled mid-read: EIO) does,
as OSError. Pillow reports damage as OSError without an errno, a failing read(2) always has
one; and since a library may wrap a failed read in an error of its own, the reader remembers
it and ``raise_unless_media_error`` re-raises it as it was.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import struct
from collections.abc import Callable, Iterator
from typing import IO, Any

# Reads ``count`` bytes at ``offset``; fewer only at the end of the file.
ReadAt = Callable[[int, int], bytes]

# Errors third-party parsers raise on hostile input. Pillow's own Image.open treats SyntaxError,
# IndexError, TypeError and struct.error as "not this format"; libheif errors arrive as
# ValueError, RuntimeError or EOFError. OSError is handled apart (see is_media_error).
PARSER_ERRORS = (
    ValueError,
    RuntimeError,
    EOFError,
    SyntaxError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    struct.error,
)


class Damaged(ValueError):
    """A structural check found that the file cannot be whole; the message says where."""


class FdReader(io.RawIOBase):
    """A read-only file object over the caller's fd, for libraries that want one.

    It reads with pread, so it has its own position and never closes the fd. It remembers a
    failed read because some libraries re-raise it as a format error (pillow-heif turns any
    OSError into SyntaxError, which Pillow reports as "cannot identify image file").
    """

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._pos = 0
        self.io_error: OSError | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            base = 0
        elif whence == os.SEEK_CUR:
            base = self._pos
        elif whence == os.SEEK_END:
            base = os.fstat(self._fd).st_size
        else:
            raise ValueError(f"invalid whence {whence}")
        if base + offset < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        count = self._preadv(buffer, self._pos)
        self._pos += count
        return count

    def pread(self, offset: int, count: int) -> bytes:
        """``count`` bytes at ``offset`` (fewer only at end of file); the position stays put."""
        buffer = bytearray(max(0, count))
        view = memoryview(buffer)
        done = 0
        while done < len(buffer):
            got = self._preadv(view[done:], offset + done)
            if got == 0:
                break
            done += got
        return bytes(buffer) if done == len(buffer) else bytes(buffer[:done])

    def _preadv(self, buffer: Any, offset: int) -> int:
        try:
            return os.preadv(self._fd, [buffer], offset)
        except OSError as exc:
            self.io_error = exc
            raise


@contextlib.contextmanager
def fd_reader(fd: int) -> Iterator[io.BufferedReader]:
    """A buffered file object over ``fd`` (see FdReader); the caller's fd stays open."""
    with io.BufferedReader(FdReader(fd), buffer_size=256 * 1024) as fp:
        yield fp


def reader_for(fp: IO[bytes]) -> ReadAt:
    """Positioned reads for ``fp``: pread when it is an ``fd_reader``, else seek and read."""
    raw = getattr(fp, "raw", None)
    if isinstance(raw, FdReader):
        return raw.pread

    def seek_and_read(offset: int, count: int) -> bytes:
        fp.seek(offset)
        return fp.read(count)

    return seek_and_read


def raise_unless_media_error(exc: Exception, fp: IO[bytes]) -> None:
    """Re-raise I/O errors, including one a library wrapped in an error of its own."""
    io_error = getattr(getattr(fp, "raw", None), "io_error", None)
    if io_error is not None:
        raise io_error from exc
    if not is_media_error(exc):
        raise exc


def is_media_error(exc: BaseException) -> bool:
    """True for a decoder's complaint about content, False for a real I/O error (EIO, ...)."""
    if isinstance(exc, OSError):
        return exc.errno is None
    return isinstance(exc, PARSER_ERRORS)


def describe(exc: BaseException) -> str:
    """A parser's complaint as a person reads it: Pillow names what it could not read by its
    Python object ("cannot identify image file <_io.BufferedReader name=...>")."""
    text = re.sub(r"\s*<_io\.\w+[^>]*>", "", str(exc)).strip()
    if text == "cannot identify image file":
        return "not an image Pillow can read (unknown format or damaged header)"
    return text or type(exc).__name__
