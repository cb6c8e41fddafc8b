"""Whether the hub still holds what it acknowledged: a slow, steady pass over the kit's
acknowledgements (no Flask here).

Why: an acknowledgement is final for the kit. It never sends that original again, and may
evict its own copy for space. But the hub can lose an original after acknowledging it: bit
rot found by `acopio check --deep --repair` at headquarters (set aside, sync.hub.ledger
`drop_corrupt`), a disk replaced, the hub restored from an older backup. Unasked, every kit
would go on believing the hub holds it, and the central archive would stay without it.

So each round the kit asks the hub about the next `PAGE` of its acknowledged originals
(`POST /sync/objects/missing`), in SHA-256 order from where it stopped
(`state/sync/audit.json`); after a whole pass it rests `sync.audit_hours`. What the hub no longer
holds loses its acknowledgements (original and record) and is sent again, record and all,
in this very round. An original this kit evicted is only at the hub, which lost it: that is
logged as an error, with what is left to do. Eviction itself asks the hub first
(sync.kit.evict), so nothing is evicted on an acknowledgement the hub no longer stands by.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from appliance import storage
from appliance.fsutil import atomic_write
from appliance.storage import dump_json
from sync.kit.client import HubClient
from sync.kit.store import SyncStore

log = logging.getLogger(__name__)

PAGE = 1000  # acknowledged originals asked about per round (the hub's limit per request)


class Audit:
    def __init__(self, store: SyncStore, rest_hours: float, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.rest_s = rest_hours * 3600.0  # after a whole pass, before the next
        self.path = store.root / "audit.json"
        self.clock = clock

    def _state(self) -> dict[str, Any]:
        try:
            state = storage.read_json_file(self.path)
        except storage.CorruptStateError:
            state = None  # a damaged place in the pass: it starts over, nothing is skipped
        return state if isinstance(state, dict) else {}

    def run(self, client: HubClient) -> tuple[list[str], list[str]]:
        """Ask the hub about the next page: (the contents to send again, their
        acknowledgements forgotten; those lost at both ends, evicted here)."""
        state = self._state()
        rest_until = state.get("rest_until")
        now = self.clock()
        if isinstance(rest_until, int | float) and now < rest_until and \
                rest_until - now <= self.rest_s:  # a clock stepped back: no endless rest
            return [], []
        after = state.get("after") if isinstance(state.get("after"), str) else ""
        page = list(itertools.islice(self.store.objects.keys_after(after), PAGE))
        gone = client.missing(page) if page else []
        if gone is None:
            log.info("the hub cannot be asked which originals it still holds (an older "
                     "version); asked again after sync.audit_hours")
            gone = []
            page = []
        again, lost = [], []
        for sha in gone:
            if self.store.evicted.get(sha) is not None:
                lost.append(sha)
                log.error("the hub no longer holds %s, which it had acknowledged, and this "
                          "kit evicted its own copy: import the card it came from again "
                          "here, or restore it at headquarters", sha)
                continue
            log.warning("the hub no longer holds %s, which it had acknowledged: sending it "
                        "again", sha)
            self.store.unack(sha)
            again.append(sha)
        if len(page) < PAGE:
            state = {"after": "", "rest_until": now + self.rest_s}
        else:
            state = {"after": page[-1]}
        atomic_write(self.path, dump_json(state), self.store.data.tmp, durable=False)
        return again, lost
