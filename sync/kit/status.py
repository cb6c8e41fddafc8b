"""What the sync role is doing, for the web UI's status strip and `acopio sync status`.

The role writes `state/sync/status.json` (atomically, without fsync: it is a report, not
state) at most once a second; readers in other processes (the web UI, the CLI) never talk to
the role. Keys:

    state          not_configured | idle | sending | paused | offline | error
    pending_items  items with metadata or an original the hub has not acknowledged
    pending_bytes  bytes of the originals not acknowledged yet
    current        an upload in progress: {sha256, name, offset, size, rate_bps}, or null;
                   with parallel uploads the last one that moved, and rate_bps is
                   theirs together (what the link carries)
    last_success   when a round last ended with the hub acknowledging everything it was sent
    last_error     {"at", "message"} of the last failure, or null
    hub            the hub's URL (or null when not paired)
    updated_at     when the file was written

`read` adds `running`: whether a process runs the sync role on this data folder now (its
lock, appliance.running), so a page can tell a stopped acopio-sync.service from a quiet one.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from appliance import storage
from appliance.datadir import DataDir
from appliance.fsutil import atomic_write
from appliance.running import role_running
from appliance.storage import CorruptStateError, dump_json
from sync.kit.store import now_iso, sync_dir

STATES = ("not_configured", "idle", "sending", "paused", "offline", "error")
MIN_INTERVAL_S = 1.0


# What `last_error.code` may be: the hub does not answer; refuses this kit's token; cannot
# be trusted (TLS); answers wrongly; originals this kit cannot send (missing or damaged
# here); anything else (a damaged state file, a full disk).
ERROR_CODES = ("unreachable", "refused", "untrusted", "hub", "originals", "internal")


def empty(state: str = "not_configured", hub: str | None = None) -> dict[str, Any]:
    return {"state": state, "pending_items": 0, "pending_bytes": 0, "current": None,
            "last_success": None, "last_error": None, "hub": hub, "updated_at": None}


def read(data: DataDir) -> dict[str, Any]:
    """The status as last written, with whether the sync role runs now; every field is
    there in every state (`not_configured` when the kit is not paired), so that a script
    reading `running` or `pending_items` never meets a missing key."""
    from sync.kit import credentials

    try:
        paired = credentials.load(data)
    except CorruptStateError:
        paired = None
    except OSError as exc:  # the sync role says the same in its own status
        return empty("error") | {"last_error": {
            "at": None, "message": f"cannot read the pairing: {exc.strerror or exc}"}}
    if paired is None:
        return empty() | {"running": role_running(data, "sync")}
    try:
        raw = storage.read_json_file(sync_dir(data) / "status.json")
    except CorruptStateError:
        raw = None
    out = empty("idle", paired.hub_url)
    if raw:
        out.update({k: raw[k] for k in out if k in raw})
    if out["state"] not in STATES:
        out["state"] = "error"
    out["running"] = role_running(data, "sync")
    return out


class RateMeter:
    """Achieved rate over the last few seconds (what the status strip shows)."""

    def __init__(self, window_s: float = 3.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, total: int) -> None:
        now = self.clock()
        self.samples.append((now, total))
        while len(self.samples) > 2 and now - self.samples[1][0] > self.window_s:
            self.samples.popleft()

    def rate(self) -> int:
        if len(self.samples) < 2:
            return 0
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        return int((b1 - b0) / (t1 - t0)) if t1 > t0 else 0


class LinkMeter:
    """The rate of every upload lane together (sync.kit.lanes): what the link carries, not
    one file. `add(key, offset)` takes each upload's offset as it grows; an upload's first
    offset (where it resumed) is where its count starts."""

    def __init__(self, window_s: float = 3.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._offsets: dict[str, int] = {}
        self._total = 0
        self._meter = RateMeter(window_s, clock)

    def add(self, key: str, offset: int) -> int:
        """Count `key`'s progress to `offset`; the rate now, bytes per second."""
        with self._lock:
            last = self._offsets.get(key, offset)
            self._offsets[key] = offset
            self._total += max(0, offset - last)
            self._meter.add(self._total)
            return self._meter.rate()

    def done(self, key: str) -> None:
        with self._lock:
            self._offsets.pop(key, None)


class StatusWriter:
    """Holds the role's status in memory; writes it out at most once per `min_interval`."""

    def __init__(self, data: DataDir, *, hub: str | None = None,
                 min_interval: float = MIN_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.data = data
        self.path = sync_dir(data) / "status.json"
        self.min_interval = min_interval
        self.clock = clock
        self._lock = threading.Lock()
        self._written_at = float("-inf")
        self._dirty = False
        previous = read(data)  # keep last_success / last_error across restarts
        self.status = empty("idle", hub)
        self.status["last_success"] = previous.get("last_success")
        self.status["last_error"] = previous.get("last_error")

    def update(self, *, force: bool = False, **changes: Any) -> None:
        with self._lock:
            self.status.update(changes)
            self._dirty = True
            if force or self.clock() - self._written_at >= self.min_interval:
                self._write()

    def error(self, message: str, *, state: str = "error", code: str = "") -> None:
        """`code` names the kind of error for good (ERROR_CODES), so that a screen can say it
        in its language; `message` is the English detail of the logs."""
        self.update(state=state, current=None,
                    last_error={"at": now_iso(), "message": message, "code": code}, force=True)

    def flush(self) -> None:
        with self._lock:
            if self._dirty:
                self._write()

    def _write(self) -> None:
        self.status["updated_at"] = now_iso()
        atomic_write(self.path, dump_json(self.status), self.data.tmp, durable=False)
        self._written_at = self.clock()
        self._dirty = False
