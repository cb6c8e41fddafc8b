"""Find what is on a card without trusting anything the card says.

A card is hostile input: symlinks to /etc/passwd or into the archive, FIFOs that hang a
reader, device nodes, loops, names with newlines or invalid UTF-8. The walk therefore never
follows a link, only descends into real directories on the source's own filesystem, and
later opens each file component by component with O_NOFOLLOW relative to the source root,
so a name swapped for a link between the scan and the open is refused, not followed.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ingest.kinds import Kind, is_clutter, kind_of

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO that raced in after the scan must not block the import.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class SourceFile:
    rel: bytes  # path relative to the source root, raw bytes as the filesystem has them
    size: int
    mtime_ns: int
    kind: Kind

    @property
    def name(self) -> bytes:
        return self.rel.rsplit(b"/", 1)[-1]


@dataclass
class Scan:
    files: list[SourceFile] = field(default_factory=list)
    unknown: list[bytes] = field(default_factory=list)  # regular files of no known kind
    skipped: list[tuple[bytes, str]] = field(default_factory=list)  # (rel, reason code)
    errors: list[tuple[bytes, str]] = field(default_factory=list)  # folders that failed

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def display(rel: bytes) -> str:
    """A path for messages: undecodable bytes and control characters shown escaped."""
    text = rel.decode("utf-8", "backslashreplace")
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


def scan(root: str | os.PathLike[str], extra_clutter: tuple[str, ...] = ()) -> Scan:
    """List the importable files under `root`, and account for everything else."""
    result = Scan()
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        root_dev = os.fstat(root_fd).st_dev
        _scan_dir(root_fd, b"", root_dev, result, extra_clutter)
    finally:
        os.close(root_fd)
    result.files.sort(key=lambda f: f.rel)
    return result


def _scan_dir(dir_fd: int, prefix: bytes, root_dev: int, result: Scan,
              extra_clutter: tuple[str, ...]) -> None:
    try:
        entries = sorted(os.scandir(dir_fd), key=lambda e: e.name)
    except OSError as exc:
        result.errors.append((prefix.rstrip(b"/") or b".", f"unreadable_folder: {exc.strerror}"))
        return
    for entry in entries:
        name = os.fsencode(entry.name)
        rel = prefix + name
        if is_clutter(os.fsdecode(name), extra_clutter, at_root=not prefix):
            result.skipped.append((rel, "clutter"))
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            result.errors.append((rel, f"unreadable: {exc.strerror}"))
            continue
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            result.skipped.append((rel, "symlink"))
        elif stat.S_ISDIR(mode):
            if st.st_dev != root_dev:
                result.skipped.append((rel, "other_filesystem"))
                continue
            try:
                sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                result.errors.append((rel, f"unreadable_folder: {exc.strerror}"))
                continue
            try:
                _scan_dir(sub, rel + b"/", root_dev, result, extra_clutter)
            finally:
                os.close(sub)
        elif stat.S_ISREG(mode):
            kind = kind_of(os.fsdecode(name))
            if kind is None:
                result.unknown.append(rel)
            else:
                result.files.append(SourceFile(rel, st.st_size, st.st_mtime_ns, kind))
        else:
            result.skipped.append((rel, "not_regular_file"))


class NotARegularFile(OSError):
    pass


@contextmanager
def open_source(root_fd: int, rel: bytes) -> Iterator[int]:
    """Open a scanned file read-only, refusing links anywhere on its path and non-files."""
    parts = rel.split(b"/")
    fds: list[int] = []
    try:
        current = root_fd
        for part in parts[:-1]:
            current = os.open(part, _DIR_FLAGS, dir_fd=current)
            fds.append(current)
        fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=current)
    except OSError as exc:
        for d in fds:
            os.close(d)
        if exc.errno == errno.ELOOP:
            raise NotARegularFile(errno.ELOOP, "is a symbolic link") from None
        raise
    for d in fds:
        os.close(d)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotARegularFile(errno.EINVAL, "not a regular file")
        os.set_blocking(fd, True)
        yield fd
    finally:
        os.close(fd)
