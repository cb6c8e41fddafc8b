"""Originals to the hub with tus 1.0 (tuspy), resumable across restarts and days.

tuspy (`tusclient`) does the protocol: `POST /sync/files/` with `Upload-Length` and
`Upload-Metadata` creates an upload, `HEAD` asks its offset, `PATCH` appends a chunk from it
with `Upload-Checksum`. Its URL storage, keyed by a file fingerprint, is what makes an upload
resumable: here the fingerprint is the item's SHA-256 (already known, nothing to re-read) and
the storage is `state/sync/uploads/ab/<sha256>` (a durable `KeyIndex`), so an upload cut by
a kill -9, a power cut or a week without a link continues from the hub's offset: at most one
chunk (`sync.chunk_mb`) is sent again, the one that was in flight. A file that fits in one
chunk goes with its creation (tus creation-with-upload: one request instead of two; the
separate creations took 2 s of 10 s for 1 GB of photos and videos in `./scripts/bench sync`)
and has no URL stored: there is nothing of it to resume.

`KitUploader` subclasses tuspy's `Uploader` where the kit needs more than it offers:

- every request goes through one `requests.Session` with timeouts (tuspy's have none, so a
  dead link would hang the role) and `verify=` the configured CA (`sync.ca_file`);
- a chunk is sent from memory through `ThrottledBody`, which paces it with the bandwidth cap
  (`pacing.RateLimiter`), reports progress for the status strip, and stops at once when the
  role is asked to stop (the hub drops a chunk that arrives incomplete);
- chunk checksums are SHA-256 (the hub accepts sha1 and sha256);
- between chunks it calls back, so the role can hold the upload while a card imports;
- `Upload-Metadata` values keep file names with undecodable bytes (sent as their bytes).

A stored upload URL the hub no longer knows (404/410: it expired, or the hub was rebuilt) is
forgotten and a new upload created. An upload URL is only ever used on the hub's own origin,
so the kit's token goes nowhere else.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

import requests
from tusclient.client import TusClient
from tusclient.exceptions import TusUploadFailed
from tusclient.request import TusRequest
from tusclient.storage.interface import Storage
from tusclient.uploader import Uploader

from appliance.keyindex import KeyIndex
from sync.kit.client import (
    CONNECT_TIMEOUT_S,
    READ_TIMEOUT_S,
    HubClient,
    HubError,
    HubRefused,
    HubUnreachable,
    SyncError,
    _reason,
    hash_timeout,
)
from sync.kit.pacing import RateLimiter
from sync.kit.readahead import ReadAhead
from sync.kit.store import now_iso

log = logging.getLogger(__name__)

SEND_BLOCK = 16 * 1024  # what the limiter paces at a time (smooth at any cap)
CHECKSUM_RETRIES = 3


class Stopped(Exception):
    """The role is stopping; the upload ends here and resumes from the hub's offset."""


class SourceChanged(SyncError):
    """The kit's file is not what the catalog says (size): it is not sent."""


class UploadGone(HubError):
    """The hub does not know this upload URL (any more)."""


class TooLarge(HubError):
    """The hub refuses files this large (hub.max_upload_gb)."""


@dataclass
class Hooks:
    """What the role wants to hear about, or have a say in, during an upload."""

    should_stop: Callable[[], bool] = lambda: False
    between_chunks: Callable[[], None] = lambda: None  # may wait (pause) or raise Stopped
    progress: Callable[[int], None] = lambda offset: None  # bytes the hub will have


def same_origin(url: str, base: str) -> bool:
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


class UploadURLs(Storage):
    """tuspy's URL storage: upload URLs by SHA-256 in `state/sync/uploads/`."""

    def __init__(self, index: KeyIndex, base_url: str) -> None:
        self.index = index
        self.base_url = base_url

    def get_item(self, key: str) -> str | None:
        entry = self.index.get(key)
        url = entry.get("url") if entry else None
        # Made on another hub (the kit was paired again elsewhere): not this hub's upload.
        if isinstance(url, str) and same_origin(url, self.base_url):
            return url
        return None

    def set_item(self, key: str, value: str | None) -> None:
        if value is None:  # tuspy "stores" the absence of a URL too: nothing to keep
            return
        self.index.put(key, {"url": value, "at": now_iso()})

    def remove_item(self, key: str) -> None:
        self.index.remove(key)


class ThrottledBody:
    """A PATCH body read by urllib3 block by block: paced, counted, stoppable."""

    def __init__(self, data: bytes, limiter: RateLimiter, on_sent: Callable[[int], None],
                 should_stop: Callable[[], bool]) -> None:
        self.view = memoryview(data)
        self.pos = 0
        self.limiter = limiter
        self.on_sent = on_sent
        self.should_stop = should_stop

    def __len__(self) -> int:
        return len(self.view) - self.pos

    def __iter__(self):
        while block := self.read(SEND_BLOCK):
            yield block

    def read(self, size: int = -1) -> bytes:
        if self.should_stop():
            raise Stopped()
        size = SEND_BLOCK if size is None or size < 0 else min(size, SEND_BLOCK)
        block = bytes(self.view[self.pos:self.pos + size])
        if block:
            self.limiter.consume(len(block))
            self.pos += len(block)
            self.on_sent(self.pos)
        return block


class KitRequest(TusRequest):
    """One chunk to the hub, through the uploader's session, paced and with a timeout: a
    PATCH at the uploader's offset or, with `create`, the creation carrying the file's first
    (for the kit: only) chunk (tus creation-with-upload)."""

    def __init__(self, uploader: KitUploader, *, create: bool = False) -> None:
        self.create = create
        self._url = uploader.client.url if create else uploader.url
        self.response_headers: dict[str, str] = {}
        self.status_code: int | None = None
        self.response_content: bytes | None = None
        self.uploader = uploader
        self.offset = uploader.offset
        self.length = uploader.get_request_length()
        self._request_headers = {"Content-Type": "application/offset+octet-stream"}
        if create:
            self._request_headers.update(uploader.get_url_creation_headers())
        else:
            self._request_headers["upload-offset"] = str(uploader.offset)
            self._request_headers.update(uploader.get_headers())
        self._upload_checksum = uploader.upload_checksum
        self._checksum_algorithm = uploader.checksum_algorithm
        self._checksum_algorithm_name = uploader.checksum_algorithm_name

    def perform(self) -> None:
        up = self.uploader
        fd = up.stream.fileno()
        ahead = up.readahead.take(fd, self.offset, self.length) if up.readahead else None
        if ahead is not None:
            chunk = ahead[0]
            self._request_headers["upload-checksum"] = \
                f"sha256 {base64.b64encode(ahead[1]).decode('ascii')}"
        else:
            up.stream.seek(self.offset)
            chunk = up.stream.read(self.length)
            if len(chunk) != self.length:
                raise SourceChanged(f"{up.name}: the file is shorter than when the upload "
                                    "began (changed on disk? run `acopio check`)")
            self.add_checksum(chunk)
        if up.readahead:  # read the next chunk while this one is on the wire
            after = self.offset + self.length
            if after < up.stop_at:
                up.readahead.ahead_fd(fd, after, min(up.chunk_size, up.stop_at - after))
            elif up.next_original is not None:
                path, size = up.next_original
                up.readahead.ahead_path(path, min(up.chunk_size, size))
        body = ThrottledBody(chunk, up.limiter,
                             lambda sent: up.hooks.progress(self.offset + sent),
                             up.hooks.should_stop)
        final = self.offset + self.length >= up.stop_at
        timeout = hash_timeout(up.stop_at) if final else (CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
        send = up.session.post if self.create else up.session.patch
        try:
            resp = send(self._url, data=body, headers=self._request_headers,
                        timeout=timeout, verify=up.verify)
        except requests.exceptions.RequestException as exc:
            if up.hooks.should_stop():
                raise Stopped() from exc
            raise HubUnreachable(f"upload of {up.name} cut at about {self.offset + body.pos} "
                                 f"bytes: {_reason(exc)}") from exc
        finally:
            up.bytes_sent += body.pos
        self.status_code = resp.status_code
        self.response_content = resp.content
        self.response_headers = {k.lower(): v for k, v in resp.headers.items()}


class KitUploader(Uploader):
    CHECKSUM_ALGORITHM_PAIR = ("sha256", hashlib.sha256)

    def __init__(self, *, stream: IO[bytes], sha256: str, name: str, session: requests.Session,
                 verify: bool | str, limiter: RateLimiter, hooks: Hooks,
                 readahead: ReadAhead | None = None,
                 next_original: tuple[Path, int] | None = None, **kwargs: Any) -> None:
        # Set before tuspy's __init__: it asks the stored URL's offset (HEAD) through us.
        self.stream = stream
        self.sha256 = sha256
        self.name = name
        self.session = session
        self.verify = verify
        self.limiter = limiter
        self.hooks = hooks
        self.readahead = readahead
        self.next_original = next_original  # (path, size) of the file to send after this
        self.bytes_sent = 0  # chunk bytes put on the wire by this uploader, resent ones too
        self.created_offset = 0
        # An upload sent in one chunk has nothing to resume (the hub keeps no part of a
        # chunk): its URL is not stored, which saves a durable write per photo.
        store_url = os.fstat(stream.fileno()).st_size > kwargs["chunk_size"]
        super().__init__(file_stream=stream, verify_tls_cert=bool(verify),
                         store_url=store_url, upload_checksum=True, retries=0, **kwargs)

    # tuspy reads the file to fingerprint it; the content hash is the fingerprint here.
    def _get_fingerprint(self) -> str:
        return self.sha256

    def encode_metadata(self) -> list[str]:
        out = []
        for key, value in self.metadata.items():
            raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
            out.append(f"{key} {base64.b64encode(raw).decode('ascii')}")
        return out

    def get_offset(self) -> int:
        try:
            resp = self.session.head(self.url, headers=self.get_headers(), verify=self.verify,
                                     timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
        except requests.exceptions.RequestException as exc:
            raise HubUnreachable(f"hub unreachable asking the offset of {self.name}: "
                                 f"{_reason(exc)}") from exc
        if resp.status_code in (404, 410):
            raise UploadGone(f"the hub no longer knows the upload of {self.name}",
                             resp.status_code)
        _raise_status(resp.status_code, f"HEAD of the upload of {self.name}")
        offset = resp.headers.get("upload-offset")
        if offset is None or not offset.isdigit():
            raise HubError(f"the hub gave no Upload-Offset for {self.name}")
        return int(offset)

    def create_url(self) -> str:
        """Create the upload (POST) and return its URL; the hub's offset for it goes to
        `created_offset`."""
        try:
            resp = self.session.post(self.client.url, headers=self.get_url_creation_headers(),
                                     verify=self.verify,
                                     timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
        except requests.exceptions.RequestException as exc:
            raise HubUnreachable(f"hub unreachable creating the upload of {self.name}: "
                                 f"{_reason(exc)}") from exc
        return self._created(resp.status_code, resp.headers)

    def create_with_upload(self) -> str:
        """Create the upload with the whole file in the same request (it fits in one chunk:
        one round trip per photo instead of two); its URL, the hub's offset in
        `created_offset` (the length, or 0 when the hub refused the bytes' checksum)."""
        request = KitRequest(self, create=True)
        request.perform()
        if request.status_code == 460:
            raise UploadGone(f"the hub dropped the upload of {self.name}: its whole SHA-256 "
                             "is not the one announced", 460)
        return self._created(request.status_code or 0, request.response_headers)

    def _created(self, status: int, headers: Mapping[str, str]) -> str:
        if status == 413:
            raise TooLarge(f"the hub refuses {self.name}: larger than its hub.max_upload_gb",
                           413)
        _raise_status(status, f"creating the upload of {self.name}", ok=(200, 201))
        location = headers.get("location")
        if not location:
            raise HubError(f"the hub gave no Location for the upload of {self.name}")
        url = urljoin(self.client.url, location)
        if not same_origin(url, self.client.url):
            raise HubError(f"the hub sent the upload of {self.name} to another origin: {url}")
        offset = headers.get("upload-offset", "0")
        # The hub may answer that it already holds every byte (this kit sent it before).
        self.created_offset = int(offset) if offset.isdigit() else 0
        return url

    def _do_request(self) -> None:
        self.request = KitRequest(self)
        self.request.perform()
        if not 200 <= (self.request.status_code or 0) < 300:
            raise TusUploadFailed("", self.request.status_code, self.request.response_content)

    def upload(self, stop_at: int | None = None) -> None:
        self.stop_at = stop_at or self.get_file_size()
        if not self.url:
            whole = 0 < self.stop_at <= self.chunk_size  # nothing of it to resume
            if whole:
                self.hooks.between_chunks()
            self.set_url(self.create_with_upload() if whole else self.create_url())
            self.offset = min(self.created_offset, self.stop_at)
            self.hooks.progress(self.offset)
        failures = 0
        while self.offset < self.stop_at:
            self.hooks.between_chunks()
            try:
                self.upload_chunk()
                failures = 0
            except TusUploadFailed as exc:
                # 460: a chunk's checksum did not match (damaged on the way) and was dropped;
                # 409: our offset is not the hub's. Both: ask the offset, send again.
                failures += 1
                if exc.status_code in (460, 409) and failures <= CHECKSUM_RETRIES:
                    log.warning("chunk of %s refused (%s); sending it again", self.name,
                                exc.status_code)
                    self.offset = self.get_offset()
                    continue
                if exc.status_code in (404, 410):
                    raise UploadGone(f"the hub dropped the upload of {self.name}",
                                     exc.status_code) from exc
                if exc.status_code == 413:
                    raise TooLarge(f"the hub refuses {self.name} (413)", 413) from exc
                if exc.status_code in (401, 403):
                    raise HubRefused(f"the hub refused this kit during the upload of "
                                     f"{self.name} ({exc.status_code}); pair it again with "
                                     "`acopio sync pair URL CODE`") from exc
                if exc.status_code and exc.status_code >= 500:
                    raise HubUnreachable(f"hub failing during the upload of {self.name}: "
                                         f"{exc.status_code}") from exc
                raise HubError(f"chunk of {self.name} refused: {exc.status_code}",
                               exc.status_code) from exc
            self.hooks.progress(self.offset)


def _raise_status(status: int, what: str, ok: tuple[int, ...] = (200, 204)) -> None:
    if status in ok:
        return
    if status in (401, 403):
        raise HubRefused(f"the hub refused this kit {what} ({status}); pair it again with "
                         "`acopio sync pair URL CODE`")
    if status >= 500:
        raise HubUnreachable(f"hub failing: {what} -> {status}")
    raise HubError(f"{what} -> {status}", status)


@dataclass
class Sent:
    sha256: str
    size: int
    resumed_from: int  # the hub's offset when this run started on it
    sent: int  # bytes this run sent (all chunks, including any sent again)
    seconds: float

    @property
    def rate_bps(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


class Transport:
    """Sends one original at a time to the hub over tus; durable resume by SHA-256."""

    def __init__(self, client: HubClient, uploads: KeyIndex, *, chunk_size: int,
                 limiter: RateLimiter) -> None:
        self.client = client
        self.urls = UploadURLs(uploads, client.base_url)
        self.chunk_size = chunk_size
        self.limiter = limiter
        self.tus = TusClient(client.url("/sync/files/"),
                             headers={"Authorization": f"Bearer {client.token}"})
        self.readahead = ReadAhead()

    def close(self) -> None:
        self.readahead.close()

    def send(self, path: str | os.PathLike[str], *, sha256: str, name: str, kind: str,
             hooks: Hooks | None = None, next_original: tuple[Path, int] | None = None
             ) -> Sent:
        """Upload the file at `path` (whose content is `sha256`) until the hub has every
        byte. Resumes from the hub's offset when an upload of it was started before.
        `next_original` (path, size) is read ahead while the last chunk is on the wire."""
        hooks = hooks or Hooks()
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            uploader = self._uploader(stream, sha256, name, kind, hooks, next_original)
            start_offset = uploader.offset
            if uploader.url and start_offset:
                log.info("resuming %s %s at offset %d of %d (the hub's)", sha256, name,
                         start_offset, size)
            started = time.monotonic()
            uploader.upload()
            seconds = time.monotonic() - started
        self.urls.remove_item(sha256)
        return Sent(sha256, size, start_offset, uploader.bytes_sent, seconds)

    def _uploader(self, stream: IO[bytes], sha256: str, name: str, kind: str,
                  hooks: Hooks, next_original: tuple[Path, int] | None) -> KitUploader:
        kwargs = dict(stream=stream, sha256=sha256, name=name, session=self.client.session,
                      verify=self.client.verify, limiter=self.limiter, hooks=hooks,
                      readahead=self.readahead, next_original=next_original,
                      client=self.tus, chunk_size=self.chunk_size, url_storage=self.urls,
                      metadata={"sha256": sha256, "filename": name, "kind": kind})
        try:
            return KitUploader(**kwargs)
        except UploadGone:
            log.info("the hub forgot the upload of %s; starting it again", name)
            self.urls.remove_item(sha256)
            return KitUploader(**kwargs)
