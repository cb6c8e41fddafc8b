"""A TinyDB storage that survives crashes and refuses to read damage as "empty".

TinyDB's stock JSONStorage truncates and rewrites its file in place and treats an empty file
as an empty database: a power cut mid-write, or a file filled with NULs by a dying SD card,
silently becomes a catalog with nothing in it. Here every write is temp + fsync + rename +
fsync(dir), and a file that is empty, has NUL bytes or is not a JSON object raises
`CorruptStateError` naming the file, so the caller stops instead of overwriting it.

`Transaction` buffers a whole read-modify-write in memory under an exclusive flock on a
sidecar lock file, and writes once at the end: two processes updating the same file never
lose each other's updates, and a batch of N changes costs one durable write, not N.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage

from appliance.fsutil import atomic_write, file_lock


class CorruptStateError(RuntimeError):
    """A state file exists but cannot be trusted; it must be repaired, never overwritten."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def read_json_file(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, None when the file does not exist; damage raises."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if not data.strip():
        raise CorruptStateError(path, "file is empty (truncated by a crash or a failing disk)")
    if b"\x00" in data:
        raise CorruptStateError(path, "file contains NUL bytes (damaged on disk)")
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptStateError(path, f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise CorruptStateError(path, "does not hold a JSON object")
    return value


def dump_json(value: Any) -> bytes:
    # ensure_ascii keeps file names with undecodable bytes (lone surrogates) writable.
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"), sort_keys=True).encode()


class SafeJSONStorage(Storage):
    """TinyDB storage backed by one JSON file, written atomically."""

    def __init__(self, path: str | os.PathLike[str],
                 tmp_dir: str | os.PathLike[str] | None = None, *, mode: int = 0o644) -> None:
        self.path = Path(path)
        self.tmp_dir = tmp_dir
        self.mode = mode

    def read(self) -> dict[str, Any] | None:
        return read_json_file(self.path)

    def write(self, data: dict[str, Any]) -> None:
        atomic_write(self.path, dump_json(data), self.tmp_dir, mode=self.mode)


class _BufferedStorage(Storage):
    """Reads the backing file once; keeps writes in memory until the transaction commits."""

    def __init__(self, backing: SafeJSONStorage) -> None:
        self.backing = backing
        self.data: dict[str, Any] | None = None
        self.loaded = False
        self.dirty = False

    def read(self) -> dict[str, Any] | None:
        if not self.loaded:
            self.data = self.backing.read()
            self.loaded = True
        return self.data

    def write(self, data: dict[str, Any]) -> None:
        self.data = data
        self.dirty = True


def lock_path_for(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@contextmanager
def transaction(path: str | os.PathLike[str],
                tmp_dir: str | os.PathLike[str] | None = None, *,
                mode: int = 0o644,
                written: Callable[[os.stat_result | None, os.stat_result], None] | None = None,
                ) -> Iterator[TinyDB]:
    """A TinyDB over `path`, exclusively locked, written once (durably) on success.

    An exception inside the block writes nothing: the file keeps its previous content.
    `written`, when given, is called after the write (not when nothing was written), the
    lock still held, with the file's stat as the lock was taken (None: no file) and as
    written: which version of the file the transaction read, and which it made.
    """
    path = Path(path)
    with file_lock(lock_path_for(path)):
        before = None
        if written is not None:
            with suppress(FileNotFoundError):
                before = os.stat(path)
        buffered = _BufferedStorage(SafeJSONStorage(path, tmp_dir, mode=mode))
        db = TinyDB(storage=lambda: buffered)  # TinyDB calls the factory with no arguments
        yield db
        if buffered.dirty and buffered.data is not None:
            buffered.backing.write(buffered.data)
            if written is not None:
                written(before, os.stat(path))


def snapshot(path: str | os.PathLike[str]) -> TinyDB:
    """A read-only TinyDB over the file as it is now; no lock needed, renames are atomic."""
    buffered = _BufferedStorage(SafeJSONStorage(path))

    def refuse(data: dict[str, Any]) -> None:
        raise RuntimeError("snapshot() is read-only; use transaction() to change state")

    buffered.write = refuse  # type: ignore[method-assign]
    return TinyDB(storage=lambda: buffered)


def repair_hint(data: Any, exc: Exception) -> str:
    """What mends a damaged state file (`data`: the DataDir): `check --repair` rebuilds only
    the catalog and its indexes, `jobs --repair` the job queue; the other state files are not
    derived from anything, so the operator restores them or starts them anew."""
    path = getattr(exc, "path", None)
    if not isinstance(exc, CorruptStateError) or path is None:
        return "a newer Acopio wrote it: update this one (`acopio check` lists what it reads)"
    try:
        rel = Path(path).relative_to(data.state).parts
    except ValueError:
        rel = ()
    if rel[:1] in (("catalog",), ("index",)):
        return "run `acopio check --repair` to rebuild it from the archive"
    if rel[:1] == ("jobs",):
        return "run `acopio jobs --repair`, then `acopio derive --rebuild`"
    return (f"it is not derived from the archive, so no command rebuilds it: restore it "
            f"from a backup, or move it aside (`mv {path} {path}.damaged`) to start it "
            f"empty; nothing was changed")
