"""tus uploads in progress, on disk (no Flask here).

Each upload is two files in `state/hub/uploads/<kit>/`: `<id>.bin`, the bytes received, and
`<id>.json`, what was announced and the acknowledged offset (`length`, `offset`,
`metadata`, `kit`, `created`, `updated`, `done`). A PATCH appends to the `.bin` (O_APPEND),
checks the chunk's checksum, and only then writes the new offset into the JSON (temp,
rename) and answers with it. Whatever a crash or a refused chunk left past that offset in
the `.bin` is cut off before the next append, so an offset the hub answered survives a
kill -9 of the hub.

Neither is fsynced per chunk: nothing is acknowledged to a kit until the whole file is
kept, and keeping it fsyncs the bytes first (sync.hub.keeper). A power cut can lose the last
seconds of an upload: a `.bin` found shorter than its offset is taken at its length (the kit
is told that offset and sends from there), and any other damage makes the whole file's
SHA-256 differ, so the upload is dropped and sent again; a wrong byte is never kept.
(`./scripts/bench sync` measured the fsync per chunk at 0.76 s of 11.8 s for 1 GB.)

One PATCH or DELETE at a time per upload: an flock on `<id>.lock` (released by the kernel
when the process dies), taken without waiting; a second request meanwhile is told 423.

While the bytes arrive, the hub also hashes the whole file as far as it has it (in memory,
per upload; for an upload sent in one chunk with a SHA-256 checksum, the chunk's own digest
is the file's). So the hub decides to keep a file without reading it back when its last byte
arrives; the read back from the disk, past the page cache, is the kit's `?verify=1`, the
acknowledgement. A hub restarted mid-upload has no running hash and reads the file back.

Upload ids are 128 random bits in hex; a kit's uploads live under its own folder, so another
kit's id is simply not found (404), and no path is ever built from anything but a checked
kit name and a checked id.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from appliance import storage
from appliance.fsutil import atomic_write, fsync_dir
from sync.hub.kits import check_kit_name

log = logging.getLogger(__name__)

BUFFER = 1024 * 1024  # bytes read from the request at a time
CHECKSUMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}
_ID = re.compile(r"[0-9a-f]{32}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_META_KEY = re.compile(r"[!#-+\--~]{1,64}")  # visible ASCII but space and comma
MAX_METADATA = 8192
MAX_RUNNING = 1000  # running whole-file hashes kept at once (uploads in progress)


class UploadError(Exception):
    """A refused tus request: HTTP status, a short code and a message for the client."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def is_sha256(value: Any) -> bool:
    return isinstance(value, str) and bool(_SHA256.fullmatch(value))


def parse_metadata(header: str | None) -> dict[str, str]:
    """tus `Upload-Metadata`: `key base64,key base64,key` -> {key: text}."""
    if not header:
        return {}
    if len(header) > MAX_METADATA:
        raise UploadError(400, "bad_metadata", "Upload-Metadata is too long")
    out: dict[str, str] = {}
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not _META_KEY.fullmatch(parts[0]) or parts[0] in out:
            raise UploadError(400, "bad_metadata",
                              f"Upload-Metadata: malformed or repeated pair {pair.strip()!r}")
        value = ""
        if len(parts) == 2:
            try:
                # a file name that is not UTF-8 keeps its bytes (as \udcXX escapes)
                value = base64.b64decode(parts[1], validate=True).decode(
                    "utf-8", "surrogateescape")
            except ValueError:
                raise UploadError(400, "bad_metadata",
                                  f"Upload-Metadata: the value of {parts[0]!r} is not "
                                  "base64") from None
        out[parts[0]] = value
    return out


def encode_metadata(metadata: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode('utf-8', 'surrogateescape')).decode()}"
                    for k, v in metadata.items())


def parse_checksum(header: str | None) -> tuple[str, bytes] | None:
    """tus `Upload-Checksum: <algorithm> <base64 digest>`."""
    if header is None:
        return None
    parts = header.strip().split(" ")
    if len(parts) != 2:
        raise UploadError(400, "bad_checksum", "Upload-Checksum must be '<algorithm> <base64>'")
    algorithm, encoded = parts[0].lower(), parts[1]
    if algorithm not in CHECKSUMS:
        raise UploadError(400, "unsupported_checksum",
                          f"checksum algorithm {parts[0]!r} is not supported (use "
                          f"{', '.join(CHECKSUMS)})")
    try:
        digest = base64.b64decode(encoded, validate=True)
    except ValueError:
        raise UploadError(400, "bad_checksum", "Upload-Checksum: the digest is not base64") \
            from None
    if len(digest) != CHECKSUMS[algorithm]().digest_size:
        raise UploadError(400, "bad_checksum",
                          f"Upload-Checksum: a {algorithm} digest has "
                          f"{CHECKSUMS[algorithm]().digest_size} bytes")
    return algorithm, digest


@dataclass
class Upload:
    id: str
    kit: str
    length: int
    offset: int
    metadata: dict[str, str]
    created: float
    updated: float
    # Complete and kept (or, at creation, content this kit had sent before): no bytes left
    # here; the upload answers its full offset until it is deleted after a day.
    done: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return self.metadata.get("sha256", "")

    @property
    def complete(self) -> bool:
        return self.offset >= self.length


class Uploads:
    def __init__(self, root: Path, tmp_dir: Path) -> None:
        self.root = root
        self.tmp_dir = tmp_dir
        # upload id -> (bytes hashed, SHA-256 of them): the running whole-file hash
        self._running: dict[str, tuple[int, Any]] = {}

    def _folder(self, kit: str) -> Path:
        return self.root / check_kit_name(kit)

    def _paths(self, kit: str, upload_id: str) -> tuple[Path, Path, Path] | None:
        if not isinstance(upload_id, str) or not _ID.fullmatch(upload_id):
            return None
        folder = self._folder(kit)
        return (folder / f"{upload_id}.json", folder / f"{upload_id}.bin",
                folder / f"{upload_id}.lock")

    def data_path(self, upload: Upload) -> Path:
        paths = self._paths(upload.kit, upload.id)
        assert paths is not None
        return paths[1]

    # -- reading -------------------------------------------------------------------------

    def on_disk(self, upload: Upload) -> int:
        """The offset the hub can go on from: the acknowledged one, or less when a power cut
        lost bytes answered for (they are not fsynced per chunk)."""
        if upload.done:
            return upload.offset
        try:
            return min(upload.offset, os.stat(self.data_path(upload)).st_size)
        except FileNotFoundError:
            return 0

    def get(self, kit: str, upload_id: str) -> Upload | None:
        paths = self._paths(kit, upload_id)
        if paths is None:
            return None
        try:
            raw = storage.read_json_file(paths[0])
        except storage.CorruptStateError:
            return None  # an upload whose state is damaged is started again
        if raw is None:
            return None
        try:
            return Upload(id=upload_id, kit=kit, length=int(raw["length"]),
                          offset=int(raw["offset"]), metadata=dict(raw["metadata"]),
                          created=float(raw["created"]), updated=float(raw["updated"]),
                          done=bool(raw.get("done", False)), extra=dict(raw.get("extra", {})))
        except (KeyError, TypeError, ValueError):
            return None

    def all(self) -> Iterator[Upload]:
        if not self.root.is_dir():
            return
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir():
                continue
            for meta in sorted(folder.glob("*.json")):
                upload = self.get(folder.name, meta.stem)
                if upload is not None:
                    yield upload

    # -- writing -------------------------------------------------------------------------

    def _save(self, upload: Upload, *, durable: bool = True) -> None:
        paths = self._paths(upload.kit, upload.id)
        assert paths is not None
        record = asdict(upload)
        del record["id"]
        atomic_write(paths[0], json.dumps(record, sort_keys=True).encode(), self.tmp_dir,
                     durable=durable)

    def create(self, kit: str, length: int, metadata: dict[str, str], *,
               done: bool = False) -> Upload:
        folder = self._folder(kit)
        folder.mkdir(parents=True, exist_ok=True)
        now = time.time()
        upload = Upload(id=secrets.token_hex(16), kit=kit, length=length,
                        offset=length if done else 0, metadata=metadata, created=now,
                        updated=now, done=done)
        paths = self._paths(kit, upload.id)
        assert paths is not None
        if not done:
            fd = os.open(paths[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            os.close(fd)
        # Not made durable: nothing of an upload is acknowledged before it is kept. One lost
        # in a crash is a 404 to the kit, which creates it again.
        self._save(upload, durable=done)
        return upload

    @contextlib.contextmanager
    def locked(self, kit: str, upload_id: str, *, wait: bool = False) -> Iterator[Upload]:
        """The upload, under its lock (404 unknown; 423 when another request holds it,
        unless `wait`)."""
        paths = self._paths(kit, upload_id)
        if paths is None or not paths[0].exists():
            raise UploadError(404, "not_found", "no such upload")
        fd = os.open(paths[2], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise UploadError(423, "locked", "another request is writing this upload; "
                                  "ask its offset (HEAD) and try again") from None
            upload = self.get(kit, upload_id)
            if upload is None:
                raise UploadError(404, "not_found", "no such upload")
            yield upload
        finally:
            os.close(fd)

    def append(self, upload: Upload, offset: int, body: BinaryIO, content_length: int | None,
               checksum: tuple[str, bytes] | None) -> Upload:
        """Append a PATCH body at `offset` (call under `locked`). Returns the upload with its
        new offset, saved. Raises UploadError for a wrong offset (409), a body past the
        announced length (413), a short body (400) or a checksum mismatch (460); the bytes of a
        refused chunk are cut off again."""
        if upload.done:
            # Created for content this kit had sent before: whatever comes is not needed
            # (a client that ignores the creation's Upload-Offset sends one chunk anyway).
            return upload
        if (on_disk := self.on_disk(upload)) < upload.offset:
            # A power cut lost bytes the hub had answered for: what the disk holds is the
            # offset now (HEAD says so too), and the kit sends from there.
            log.warning("upload %s of kit %s: %d bytes on disk, %d answered before a stop; "
                        "going on from %d", upload.id, upload.kit, on_disk, upload.offset,
                        on_disk)
            self._running.pop(upload.id, None)
            upload.offset = on_disk
            self._save(upload, durable=False)
        if offset != upload.offset:
            raise UploadError(409, "offset_mismatch",
                              f"Upload-Offset {offset} does not match the upload's offset "
                              f"{upload.offset}; ask it with HEAD", offset=upload.offset)
        room = upload.length - upload.offset
        if content_length is not None and content_length > room:
            raise UploadError(413, "too_long", f"the body ({content_length} bytes) goes past "
                              f"Upload-Length ({room} bytes remain)")
        digest = CHECKSUMS[checksum[0]]() if checksum else None
        whole = self._running_hash(upload, digest if checksum and checksum[0] == "sha256"
                                   and content_length == upload.length else None)
        # kept to go on with after a refused chunk (a chunk sent whole has no other hash)
        before = whole.copy() if whole is not None and whole is not digest else None
        path = self.data_path(upload)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size != upload.offset:
                # past the acknowledged offset: a crash or a refused chunk; never trusted
                os.ftruncate(fd, upload.offset)
            written = 0
            want = room if content_length is None else content_length
            buf = bytearray(BUFFER)
            view = memoryview(buf)
            try:
                while written < want:
                    n = body.readinto(view[: min(BUFFER, want - written)]) \
                        if hasattr(body, "readinto") else _read_into(body, view,
                                                                     min(BUFFER, want - written))
                    if not n:
                        break
                    chunk = view[:n]
                    if digest is not None:
                        digest.update(chunk)
                    if whole is not None and whole is not digest:
                        whole.update(chunk)
                    while chunk:
                        chunk = chunk[os.write(fd, chunk):]
                    written += n
                if content_length is None and body.read(1):
                    raise UploadError(413, "too_long", "the body goes past Upload-Length")
                if content_length is not None and written < content_length:
                    raise UploadError(400, "short_body", f"the body ended after {written} "
                                      f"of {content_length} bytes")
                if checksum is not None and digest is not None \
                        and digest.digest() != checksum[1]:
                    raise UploadError(460, "checksum_mismatch",
                                      f"the chunk's {checksum[0]} does not match "
                                      "Upload-Checksum; it was dropped", offset=upload.offset)
            except BaseException as exc:
                os.ftruncate(fd, upload.offset)
                if before is not None:
                    self._running[upload.id] = (upload.offset, before)
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise UploadError(507, "insufficient_storage", "the hub's disk is full; "
                                      "the chunk was dropped, try later",
                                      offset=upload.offset) from exc
                raise
        finally:
            os.close(fd)
        upload.offset += written
        upload.updated = time.time()
        if whole is not None:
            self._running[upload.id] = (upload.offset, whole)
        self._save(upload, durable=False)  # complete: kept later (sync.hub.keeper)
        return upload

    def sync_data(self, upload: Upload) -> None:
        """Make the upload's bytes durable (before they are kept)."""
        fd = os.open(self.data_path(upload), os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _running_hash(self, upload: Upload, chunk_digest: Any) -> Any:
        """The whole-file hash to go on with at this offset, or None (then the file is read
        back when complete). Taken out of the table: a chunk that fails leaves none."""
        hashed, running = self._running.pop(upload.id, (-1, None))
        if upload.offset == 0:
            if len(self._running) > MAX_RUNNING:  # uploads abandoned halfway: forget them
                self._running.clear()
            return chunk_digest if chunk_digest is not None else hashlib.sha256()
        return running if hashed == upload.offset else None

    def received_sha256(self, upload: Upload) -> str | None:
        """The SHA-256 of every byte of a complete upload as this process received them, or
        None when it did not see them all (restarted mid-upload)."""
        hashed, running = self._running.pop(upload.id, (-1, None))
        return running.hexdigest() if running is not None and hashed == upload.length \
            else None

    def mark_done(self, upload: Upload) -> None:
        """Kept and catalogued: the bytes go, the upload stays known as complete for a day
        (a HEAD answers its full offset to a kit whose last answer was lost).

        Not made durable: the catalog, written durably before, is what says the file is
        kept. A marker lost to a crash makes a kit that asks send its last chunk again, and
        the hub then finds the file already kept."""
        upload.done = True
        upload.offset = upload.length
        upload.updated = time.time()
        paths = self._paths(upload.kit, upload.id)
        assert paths is not None
        self._save(upload, durable=False)  # first: "complete, not done" means the bytes are here
        with contextlib.suppress(FileNotFoundError):
            paths[1].unlink()

    def delete(self, upload: Upload) -> None:
        paths = self._paths(upload.kit, upload.id)
        assert paths is not None
        self._running.pop(upload.id, None)
        for path in (paths[0], paths[1], paths[2]):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with contextlib.suppress(FileNotFoundError):
            fsync_dir(paths[0].parent)


def _read_into(body: BinaryIO, view: memoryview, n: int) -> int:
    data = body.read(n)
    view[: len(data)] = data
    return len(data)
