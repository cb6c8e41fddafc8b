"""The hub's verification of one upload runs while the next file uploads.

Why: the acknowledgement of an original is the hub's `GET /sync/objects/<sha>?verify=1`,
which reads the whole file back from the hub's disk and hashes it; asked in turn after each
upload, it was a fifth of the time of `./scripts/bench sync`, the link idle meanwhile. Here
one question is in flight on its own connection while the role sends the next file: the
disk read and the hash at the hub overlap the next upload. Nothing changes in what counts
as acknowledged (the role marks an original synced only on the verified answer) nor in
order: answers are taken in the order the uploads were made, one at a time, so a cut or a
stop loses at most one question, asked again next round.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sync.kit.client import HubClient
from sync.kit.outbox import Original


class Verifier:
    """`start(original)` asks the hub to verify it in the background; `take()` returns the
    original started before and its answer (or raises what asking raised)."""

    def __init__(self, base_url: str, token: str | None, ca_file: str) -> None:
        # Its own connection: a requests.Session is not shared between threads.
        self.client = HubClient(base_url, token, ca_file=ca_file)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-verify")
        self._in_flight: tuple[Original, Future[dict[str, Any] | None]] | None = None

    def start(self, original: Original) -> None:
        assert self._in_flight is None, "take() the previous answer first"
        future = self._pool.submit(self.client.object_status, original.sha256, verify=True,
                                   size=original.size)
        self._in_flight = (original, future)

    def take(self) -> tuple[Original, Future[dict[str, Any] | None]] | None:
        """The original in flight and its finished question (`.result()` gives the answer or
        raises), waiting for it; None when nothing is in flight."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight[1].exception()  # waits; the caller reads the result
        return in_flight

    def close(self) -> None:
        """Wait for a question in flight (its answer is dropped: the original stays pending
        and is verified next round) and close the connection."""
        self._in_flight = None
        self._pool.shutdown(wait=True)
        self.client.close()
