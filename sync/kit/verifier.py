"""The hub's verifications of the last few uploads run while the next files upload.

Why: the acknowledgement of an original is the hub's `GET /sync/objects/<sha>?verify=1`,
which waits for the hub to keep the file (the hub keeps files in batches after answering
their last PATCH, sync.hub.keeper), then reads it back from the hub's disk and hashes it.
Asked in turn after each upload, it was a fifth of the time of `./scripts/bench sync`, the
link idle meanwhile; with one question in flight, the hub kept one file at a time. Here up
to `WINDOW` questions are in flight, one after the other on a connection of their own,
while the role sends the next files: the hub keeps the files that arrived meanwhile
together, and its disk read and hash overlap the uploads. Nothing changes in what counts as
acknowledged (the role marks an original synced only on its verified answer) nor in order
(answers are taken in the order the uploads were made). The window is wide because the hub
gathers files for a moment before keeping them together (sync.hub.keeper): with 8 questions
in flight a kit sending photos waited on that gathering, and the benchmark's run took 8.5 s
instead of 6.7 s. A cut or a stop loses at most `WINDOW` questions: the role notes their
originals as sent (`state/sync/uploads/`) and asks about them first next round, so none of
them is sent again when the hub has it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sync.kit.client import HubClient
from sync.kit.outbox import Original

WINDOW = 64  # questions in flight at most

Asked = tuple[Original, "Future[dict[str, Any] | None]"]


class Verifier:
    """`start(original)` asks the hub to verify it in the background (and calls
    `on_verified(original)` there on a verified answer); `take()` returns the oldest original
    asked about and its answer (or raises what asking raised)."""

    def __init__(self, base_url: str, token: str | None, ca_file: str,
                 window: int = WINDOW,
                 on_verified: Callable[[Original], None] | None = None) -> None:
        # Its own connection: a requests.Session is not shared between threads.
        self.client = HubClient(base_url, token, ca_file=ca_file)
        self.window = window
        self.on_verified = on_verified
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-verify")
        self._in_flight: deque[Asked] = deque()

    @property
    def full(self) -> bool:
        return len(self._in_flight) >= self.window

    def start(self, original: Original) -> None:
        assert not self.full, "take() an answer first"
        future = self._pool.submit(self._ask, original)
        self._in_flight.append((original, future))

    def _ask(self, original: Original) -> dict[str, Any] | None:
        answer = self.client.object_status(original.sha256, verify=True, size=original.size)
        if answer is not None and self.on_verified is not None:
            self.on_verified(original)  # recorded here, off the uploads' thread
        return answer

    def take(self, *, wait: bool = True) -> Asked | None:
        """The oldest original asked about and its finished question (`.result()` gives the
        answer or raises), waiting for it unless `wait` is False; None when nothing is in
        flight (or, without `wait`, the oldest is not answered yet)."""
        if not self._in_flight or (not wait and not self._in_flight[0][1].done()):
            return None
        asked = self._in_flight.popleft()
        asked[1].exception()  # waits; the caller reads the result
        return asked

    def close(self) -> list[Original]:
        """Drop the questions not asked yet, wait for the one being asked, close the
        connection; returns the originals whose answers were not taken (the role asks about
        the unacknowledged ones first next round, before sending them)."""
        unanswered = [original for original, _future in self._in_flight]
        for _original, future in self._in_flight:
            future.cancel()
        self._in_flight.clear()
        self._pool.shutdown(wait=True)
        self.client.close()
        return unanswered
