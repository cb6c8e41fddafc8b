"""HTTP to the hub (README "Sync with headquarters"): pairing, objects, records, changes.

Every request has a timeout (a link that dies mid-request must not hang the role), carries
`Authorization: Bearer <token>` (all but pairing), and verifies the hub's certificate when
the URL is https: against `sync.ca_file` when set, else the system's CAs. Failures are sorted
into what the role does about them:

- `HubUnreachable`: no answer (refused, timed out, cut, DNS) or a 5xx: back off and retry;
- `HubRefused`: 401/403, the token is wrong or was revoked: retrying will not help until
  someone pairs the kit again (`acopio sync pair`); `HubUntrusted`, its kind for a TLS
  failure (a certificate `sync.ca_file` does not vouch for);
- `HubError`: any other answer the protocol does not expect.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Callable, Iterable
from email.utils import parsedate_to_datetime
from typing import IO, Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection

from sync.kit.credentials import normalize_url

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
# The hub hashes a whole file from its disk when asked to verify (and after the last chunk):
# allow for that at a slow disk's pace on top of the usual timeout.
HASH_RATE_BPS = 20 * 1024 * 1024
RECORDS_BATCH = 200
USER_AGENT = "acopio-kit/1"
# A link that dies without a word (a phone's hotspot that leaves, a cable pulled beyond a
# switch) sends no reset: the kit would learn of it only when a request's timeout ran out,
# a minute or more with the status still saying "sending". So every connection to the hub
# gives up once LINK_DEAD_S pass without the hub's machine acknowledging anything: bytes sent
# unanswered (TCP_USER_TIMEOUT), or keepalive probes while waiting for an answer. The hub's
# kernel answers the probes even while its app works on a long request, so a slow hub is
# not taken for a dead link; READ_TIMEOUT_S still bounds a hub that answers nothing.
LINK_DEAD_S = 20
KEEPALIVE_IDLE_S = 5


class SyncError(Exception):
    """Something between the kit and the hub went wrong; the message says what, plainly."""


class HubUnreachable(SyncError):
    pass


class HubRefused(SyncError):
    pass


class HubUntrusted(HubRefused):
    """TLS failed: the hub's certificate is not signed by `sync.ca_file` (or the system's
    CAs), or names another host. Retrying will not help until the setting is fixed."""


class HubError(SyncError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class HubCorrupt(HubError):
    """`?verify=1` answered 409: the hub's copy failed its re-hash and was set aside; the
    hub wants the original again."""


def verify_setting(ca_file: str) -> bool | str:
    """What `requests` takes as `verify=`: the CA file when configured, else the system's."""
    if ca_file:
        if not os.path.isfile(ca_file):
            raise SyncError(f"sync.ca_file {ca_file!r} does not exist")
        return ca_file
    return True


def link_socket_options() -> list[tuple[int, int, int]]:
    """The socket options of every connection to the hub (see LINK_DEAD_S): Linux names
    them all; elsewhere, those the platform has."""
    options = [*HTTPConnection.default_socket_options,
               (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
                        ("TCP_KEEPINTVL", KEEPALIVE_IDLE_S),
                        ("TCP_KEEPCNT", LINK_DEAD_S // KEEPALIVE_IDLE_S),
                        ("TCP_USER_TIMEOUT", LINK_DEAD_S * 1000)):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


class LinkWatchAdapter(HTTPAdapter):
    """requests' adapter, its connections opened with `link_socket_options`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["socket_options"] = link_socket_options()
        super().init_poolmanager(*args, **kwargs)


def hub_session() -> requests.Session:
    session = requests.Session()
    adapter = LinkWatchAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def hash_timeout(size: int) -> tuple[float, float]:
    return (CONNECT_TIMEOUT_S, READ_TIMEOUT_S + size / HASH_RATE_BPS)


class HubClient:
    def __init__(self, base_url: str, token: str | None = None, *, ca_file: str = "",
                 session: requests.Session | None = None) -> None:
        self.base_url = normalize_url(base_url)
        self.token = token
        self.verify = verify_setting(ca_file)
        self.session = session or hub_session()
        self.session.headers["User-Agent"] = USER_AGENT
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def close(self) -> None:
        self.session.close()

    # -- plumbing --------------------------------------------------------------------------

    def request(self, method: str, path: str, *, ok: Iterable[int] = (200,),
                timeout: tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
                **kwargs: Any) -> requests.Response:
        url = path if path.startswith(("http://", "https://")) else self.url(path)
        try:
            resp = self.session.request(method, url, timeout=timeout, verify=self.verify,
                                        **kwargs)
        except requests.exceptions.SSLError as exc:
            raise HubUntrusted(f"TLS with the hub at {self.base_url} failed: {_reason(exc)} "
                               "(check sync.ca_file)") from exc
        except requests.exceptions.RequestException as exc:
            raise HubUnreachable(f"hub {self.base_url} unreachable: {_reason(exc)}") from exc
        ok = tuple(ok)
        if resp.status_code in ok:
            return resp
        detail = _detail(resp)
        if resp.status_code in (401, 403):
            raise HubRefused(f"the hub refused this kit ({resp.status_code}{detail}); pair it "
                             "again with `acopio sync pair URL CODE`")
        if resp.status_code >= 500:
            raise HubUnreachable(f"hub {self.base_url} failing: {method} {path} -> "
                                 f"{resp.status_code}{detail}")
        raise HubError(f"{method} {path} -> {resp.status_code}{detail}", resp.status_code)

    # -- the protocol ----------------------------------------------------------------------

    def pair(self, code: str, kit: str, kit_id: str | None = None) -> dict[str, Any]:
        """`POST /sync/pair {"code", "kit", "kit_id"}` -> {"kit", "token"}."""
        resp = self.request("POST", "/sync/pair", json={"code": code, "kit": kit,
                                                        "kit_id": kit_id},
                            ok=(200, 201, 401, 403, 404, 405, 409))
        error = _json(resp, default={}).get("error")
        if resp.status_code == 403 and error == "pairing_refused":
            raise HubRefused("the hub refused the pairing code (wrong, used or expired: "
                             "make a new one with `acopio hub pair`)")
        if resp.status_code in (401, 403, 404, 405):  # a web server, but not a hub's answer
            raise HubRefused(f"{self.base_url} is not an Acopio hub (POST /sync/pair -> "
                             f"{resp.status_code}{_detail(resp)}): check the URL's port; the "
                             "hub listens on its hub.port (8090 unless set), not on the "
                             "kit's web UI port")
        if resp.status_code == 409:  # the name is another kit's (the code is still good)
            message = _json(resp, default={}).get("message")
            raise HubError(str(message or f"another kit is paired as {kit!r}"), 409)
        body = _json(resp)
        if not isinstance(body.get("token"), str) or not body["token"]:
            raise HubError("the hub's pairing answer has no token")
        return body

    def object_status(self, sha256: str, *, verify: bool = False, size: int = 0
                      ) -> dict[str, Any] | None:
        """`GET /sync/objects/<sha256>[?verify=1]`: the hub's answer when it holds the
        content (verified now, with `verify`), None when it does not (404). With `verify`,
        a copy that failed the re-hash (409) raises HubCorrupt."""
        resp = self.request("GET", f"/sync/objects/{sha256}",
                            params={"verify": "1"} if verify else None, ok=(200, 404, 409),
                            timeout=hash_timeout(size) if verify else
                            (CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
        if resp.status_code == 409 and verify:  # its copy failed verification, dropped
            raise HubCorrupt("the hub's copy failed verification and was set aside", 409)
        if resp.status_code in (404, 409):
            return None
        body = _json(resp, default={})
        if body.get("verified") is False or body.get("ok") is False:
            return None
        return body

    def missing(self, sha256s: list[str]) -> list[str] | None:
        """`POST /sync/objects/missing`: of these contents, acknowledged before, those the
        hub no longer holds; None from a hub too old to be asked."""
        resp = self.request("POST", "/sync/objects/missing", json={"sha256": sha256s},
                            ok=(200, 404, 405))
        if resp.status_code != 200:
            return None
        gone = _json(resp, default={}).get("missing")
        if not isinstance(gone, list):
            raise HubError("the hub's answer about missing contents holds no list")
        asked = set(sha256s)
        return [s for s in gone if isinstance(s, str) and s in asked]

    def send_records(self, records: list[dict[str, Any]],
                     agenda: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """`POST /sync/records {"records": [...], "agenda": [...]}`: the hub's answer."""
        body: dict[str, Any] = {"records": records}
        if agenda:
            body["agenda"] = agenda
        resp = self.request("POST", "/sync/records", json=body, ok=(200, 201, 202, 204))
        return _json(resp, default={}) if resp.content else {}

    def changes(self, since: str) -> tuple[dict[str, Any], float | None]:
        """`GET /sync/changes?since=CURSOR`: the page, and the hub's time (its HTTP `Date`,
        as a Unix time; None when missing or garbled)."""
        resp = self.request("GET", "/sync/changes", params={"since": since})
        try:
            sent_at = parsedate_to_datetime(resp.headers.get("Date", "")).timestamp()
        except (TypeError, ValueError, IndexError):
            sent_at = None
        return _json(resp), sent_at

    def fetch_content(self, sha256: str, out: IO[bytes], *, size: int = 0,
                      progress: Callable[[int], None] | None = None) -> str:
        """`GET /sync/objects/<sha256>/content` streamed into `out`; the SHA-256 of what
        was received (the caller compares it)."""
        digest = hashlib.sha256()
        resp = self.request("GET", f"/sync/objects/{sha256}/content", stream=True,
                            timeout=hash_timeout(size))
        received = 0
        try:
            for block in resp.iter_content(chunk_size=1024 * 1024):
                out.write(block)
                digest.update(block)
                received += len(block)
                if progress:
                    progress(received)
        except requests.exceptions.RequestException as exc:
            raise HubUnreachable(f"download of {sha256} cut: {_reason(exc)}") from exc
        finally:
            resp.close()
        return digest.hexdigest()


def _json(resp: requests.Response, default: Any = None) -> Any:
    try:
        value = resp.json()
    except ValueError:
        if default is not None:
            return default
        raise HubError(f"the hub answered {resp.request.method} {resp.url} with something "
                       "that is not JSON") from None
    if not isinstance(value, dict):
        if default is not None:
            return default
        raise HubError(f"the hub answered {resp.request.method} {resp.url} with JSON that is "
                       "not an object")
    return value


def _detail(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        text = resp.text.strip()[:200]
        return f": {text}" if text else ""
    if isinstance(body, dict):
        message = body.get("error") or body.get("message")
        if message:
            return f": {str(message)[:200]}"
    return ""


def _reason(exc: Exception) -> str:
    """The innermost reason of a requests error, short: "connection refused", "timed out"."""
    text = str(exc)
    for marker in ("Connection refused", "timed out", "Name or service not known",
                   "Temporary failure in name resolution", "No route to host",
                   "Network is unreachable", "Connection reset by peer",
                   "certificate verify failed", "RemoteDisconnected", "Broken pipe"):
        if marker.lower() in text.lower():
            return marker.lower()
    return text[:300]
