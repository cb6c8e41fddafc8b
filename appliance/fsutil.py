"""Durable file writes.

Every state file Acopio keeps is written the same way: a temp file in the same folder, fsync,
rename over the old one, fsync the folder. A crash at any instant leaves either the old or the
new content, never a mix and never an empty file (design decision 3).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

TEMP_PREFIX = ".acopio-tmp-"
# Files that are opened and written in place (lock files, append-only logs), not replaced: two
# services write them, the device watcher as root and acopio.service as the acopio user, both
# in the acopio group with UMask=0002 (systemd/). Group write is what lets the acopio user
# open a lock file the device watcher made first; the umask still narrows it elsewhere.
SHARED_MODE = 0o664


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or a new name inside `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name() -> str:
    """A hidden, unique temp file name; `acopio check` recognises the prefix as debris."""
    return f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"


def open_temp(folder: str | os.PathLike[str], *, suffix: str = "", mode: int = 0o644,
              flags: int = os.O_WRONLY) -> tuple[int, Path]:
    """A new temp file in `folder`, open and flocked: (fd, path). Keep the fd open until
    the file is renamed into place or removed: the flock is what tells a live temp from a
    dead writer's debris (`remove_debris` in another thread or process).

    The file is made without a name (O_TMPFILE), flocked, then named: no sweep ever sees it
    unlocked. Where the filesystem cannot (FAT, some FUSE), it is created by name, and a
    sweep that takes it in the instant before its flock makes this try another name."""
    try:
        fd = os.open(folder, os.O_TMPFILE | flags | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
    else:
        fcntl.flock(fd, fcntl.LOCK_EX)
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            while True:
                name = temp_name() + suffix
                with contextlib.suppress(FileExistsError):
                    # linkat(..., AT_SYMLINK_FOLLOW): a dir fd makes Python call linkat
                    os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dir_fd,
                            follow_symlinks=True)
                    return fd, Path(folder) / name
        except BaseException:
            os.close(fd)
            raise
        finally:
            os.close(dir_fd)
    for _ in range(100):
        path = Path(folder) / (temp_name() + suffix)
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        if hold_temp(fd, path):
            return fd, path
        os.close(fd)
    raise OSError(f"temp files in {folder} keep being removed as debris")


def hold_temp(fd: int, path: Path) -> bool:
    """Flock a temp file this process just made; False when a sweep removed it first.

    Between its creation and this flock a sweep may have found it unlocked and removed it
    (the sweep unlinks under its own flock, which this waits for); then `path` no longer
    names the fd's file, and the caller makes another."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def atomic_write(path: str | os.PathLike[str], data: bytes,
                 tmp_dir: str | os.PathLike[str] | None = None, *, durable: bool = True,
                 mode: int = 0o644) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new file, whole.

    `tmp_dir` (same filesystem) gathers the temp files of many small writes in one folder,
    so that crash debris is found by listing one folder, not a whole index. `durable=False`
    skips both fsyncs, for a batch of writes made durable at once with `syncfs`. `mode`
    0o600 keeps secrets (password hashes) from other users of the box.
    """
    path = Path(path)
    fd, tmp = _write_temp(path, data, tmp_dir, mode)
    try:
        if durable:
            os.fsync(fd)
        _rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)  # after the rename: the flock marks a live temp until then
    if durable:
        fsync_dir(path.parent)


def atomic_write_many(files: Mapping[Path, bytes], tmp_dir: str | os.PathLike[str]) -> None:
    """`atomic_write` for a batch, with one flush instead of two fsyncs per file.

    Every temp file is written, then one `syncfs` makes them all durable before any is
    renamed, then each folder is fsynced once. So each file is, after a crash, the old or the
    new one, whole, as with `atomic_write`; none is ever empty. On an SD card an fsync costs
    milliseconds, and an import's batch rewrites up to 256 job key files.
    """
    if len(files) <= 1:
        for path, data in files.items():
            atomic_write(path, data, tmp_dir)
        return
    written: list[tuple[int, Path, Path]] = []
    try:
        for path, data in files.items():
            fd, tmp = _write_temp(Path(path), data, tmp_dir, 0o644)
            written.append((fd, tmp, Path(path)))
        syncfs(tmp_dir)
    except BaseException:
        for fd, tmp, _path in written:
            _drop_temp(fd, tmp)
        raise
    renamed = 0
    try:
        for _fd, tmp, path in written:
            os.replace(tmp, path)
            renamed += 1
    finally:
        for i, (fd, tmp, _path) in enumerate(written):
            os.close(fd)  # after the rename: the flock marks a live temp until then
            if i >= renamed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
    for folder in dict.fromkeys(path.parent for _fd, _tmp, path in written):
        fsync_dir(folder)


def _write_temp(path: Path, data: bytes, tmp_dir: str | os.PathLike[str] | None,
                mode: int) -> tuple[int, Path]:
    """A new temp file holding `data`, its fd open and flocked (not yet fsynced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if tmp_dir is not None:
        Path(tmp_dir).mkdir(parents=True, exist_ok=True)
    fd, tmp = open_temp(tmp_dir or path.parent, mode=mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    except BaseException:
        _drop_temp(fd, tmp)
        raise
    return fd, tmp


def _drop_temp(fd: int, tmp: Path) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def _rename(tmp: Path, path: Path) -> None:
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@functools.cache
def libc() -> Any:
    """The C library, loaded once per process (a `ctypes.CDLL` made per call costs a handle
    and a function pointer each time, which a sync role's rounds kept adding up)."""
    import ctypes  # here, not at module level: every command imports this module

    return ctypes.CDLL(None, use_errno=True)


def syncfs(path: str | os.PathLike[str]) -> None:
    """Flush every pending write of the filesystem holding `path` (one call for a batch of
    small files instead of two fsyncs each)."""
    import ctypes

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc().syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fspath(path))
    finally:
        os.close(fd)


def remove_debris(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temp files in `folder` whose writer died (their flock is free)."""
    removed = [path for path in Path(folder).glob(TEMP_PREFIX + "*") if remove_if_debris(path)]
    if removed:
        fsync_dir(folder)
    return removed


def remove_if_debris(path: Path) -> bool:
    """Delete `path` if it is a temp file whose writer is gone; whether it did.

    The test and the removal are one step: the file is flocked (exclusively, without
    waiting) and unlinked under that flock, so a writer that takes its flock meanwhile
    either keeps the file or finds it gone (`hold_temp`) and makes another."""
    if not path.name.startswith(TEMP_PREFIX):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:  # gone, not ours to read, or not a file (a link): not debris to remove
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    try:
        if os.stat(path, follow_symlinks=False).st_ino != os.fstat(fd).st_ino:
            return False  # renamed into place meanwhile: another file has its name now
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)


def is_debris(path: Path) -> bool:
    """A temp file whose writer is gone: every writer holds an flock on its temp file."""
    return path.name.startswith(TEMP_PREFIX) and lock_held(path) is False


def lock_in_use(path: str | os.PathLike[str]) -> bool:
    """Whether any process holds a flock on `path` now, shared or exclusive (False when
    there is no such file)."""
    return bool(_probe(path, fcntl.LOCK_EX))


def lock_held(path: str | os.PathLike[str]) -> bool | None:
    """Whether a process holds an exclusive flock on `path` now; None when there is no such
    file. Needs only read access (a status page in another process)."""
    return _probe(path, fcntl.LOCK_SH)


def _probe(path: str | os.PathLike[str], operation: int) -> bool | None:
    """Whether taking `operation` (without waiting) on `path` would have to wait; None when
    there is no such file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


# Writes the data disk refuses as a whole, not this file's fault: full, over quota, or
# read-only (ext4 remounts itself so after an I/O error). What to do, for the CLI's message;
# the web UI answers 507 for each.
DISK_REFUSED = {
    errno.ENOSPC: "the data disk is full: free some space, then run it again",
    errno.EDQUOT: "the disk quota is used up: free some space, then run it again",
    errno.EROFS: "the data disk takes no writes; after an I/O error the system may have made "
                 "it read-only: check the disk (dmesg), then remount it or restart",
}


def open_lock_file(path: str | os.PathLike[str], *, missing_ok: bool = False) -> int | None:
    """A descriptor of the lock file `path` (made, with its folder, when missing).

    A user that may not write there (another user; a disk remounted read-only) gets a
    read-only descriptor of a lock file that exists: flock works on it too. When none exists
    and none can be made, `missing_ok` says nobody can ever have held it (None: go on
    without); otherwise the error is raised.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, SHARED_MODE)
    except OSError as exc:
        if not isinstance(exc, PermissionError) and exc.errno != errno.EROFS:
            raise
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if missing_ok:
                return None
            raise exc from None


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], *, shared: bool = False,
              missing_ok: bool = False) -> Iterator[None]:
    """An advisory inter-process lock (flock) on a sidecar lock file (see open_lock_file
    for a reader that may not write there, and `missing_ok`).

    flock locks belong to the open file description, so they are released by the kernel when a
    process dies, even by kill -9: a crashed writer never leaves a stale lock behind.
    """
    fd = open_lock_file(path, missing_ok=missing_ok)
    if fd is None:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def try_lock(path: str | os.PathLike[str], *, wait: bool = False) -> Iterator[bool]:
    """`file_lock`'s exclusive lock; without `wait`, yields False at once when another
    process holds it (and holds nothing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, SHARED_MODE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
