"""When each kit last reached the hub, and from where (no Flask here).

Why: headquarters' first question about a kit in the field is "when did it last sync?". A
kit's sync role asks the hub at least every `sync.poll_s` while it has a link, so the time of
its last authenticated request answers it. Writing that on every request (tus chunks come
several a second) would cost a file write each; it is written at most once a minute per kit
(`WRITE_EVERY_S`), like a web session's last_seen, to `state/hub/contact.json`. A file lost or
damaged by a crash only forgets those times: it is read as empty, with a warning.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from appliance import fsutil
from sync.hub.kits import iso_utc

log = logging.getLogger(__name__)

WRITE_EVERY_S = 60.0
FILE_NAME = "contact.json"


class Contacts:
    def __init__(self, hub_state: Path, *, clock: Callable[[], float] = time.time,
                 ticks: Callable[[], float] = time.monotonic) -> None:
        """`clock` gives the time written; `ticks` paces the writes (monotonic: a wall
        clock stepped back by hours held every write back for as long)."""
        self.path = hub_state / FILE_NAME
        self.tmp_dir = hub_state / "tmp"
        self.clock = clock
        self.ticks = ticks
        self._lock = threading.Lock()
        self._seen: dict[str, dict[str, Any]] | None = None  # read on first use
        self._written: dict[str, float] = {}  # kit -> ticks when its contact was written

    def seen(self, kit: str, address: str | None) -> None:
        """`kit` made an authenticated request now, from `address`."""
        now, tick = self.clock(), self.ticks()
        with self._lock:
            seen = self._load()
            seen[kit] = {"at": iso_utc(now), "address": address or ""}
            if tick - self._written.get(kit, float("-inf")) < WRITE_EVERY_S:
                return
            self._written[kit] = tick
            data = json.dumps(seen, indent=1, sort_keys=True).encode()
            try:
                fsutil.atomic_write(self.path, data, self.tmp_dir)
            except OSError as exc:  # a full disk must not refuse the kit's upload; tried
                # again a minute later, not at each of its requests (several a second)
                log.warning("could not record kit %s's contact in %s: %s", kit, self.path, exc)

    def read(self) -> dict[str, dict[str, Any]]:
        """Each kit's last contact: {"at": ISO 8601 UTC, "address": its IP}. In the hub's
        process the latest (in memory); in another (the CLI) as last written."""
        with self._lock:
            if self._seen is not None:
                return {kit: dict(v) for kit, v in self._seen.items()}
        return self._read_file()

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._seen is None:
            self._seen = self._read_file()
        return self._seen

    def _read_file(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("%s is unreadable (%s): kits' last contact times are forgotten",
                        self.path, exc)
            return {}
        if not isinstance(data, dict):
            log.warning("%s is not a JSON object: kits' last contact times are forgotten",
                        self.path)
            return {}
        return {str(k): v for k, v in data.items()
                if isinstance(v, dict) and _is_time(v.get("at"))}


def _is_time(value: Any) -> bool:
    """An ISO 8601 time with its offset, as `seen` writes it (the status page compares it)."""
    try:
        return isinstance(value, str) and datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False
