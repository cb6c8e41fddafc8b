"""Originals uploaded on several connections at once (`sync.parallel_uploads`).

Why: the hub answers a request only once it holds the whole body and has written and hashed
it (waitress hands a request to the app when its body is in), and one connection sends its
next request only after that answer. On one connection the link idles for the hub's part of
every request: a 1 Gbit/s link carried 1 GB of photos and videos in 13.7 s against rsync's
8.5 s (`./scripts/bench sync --only lan`), and only the larger files came near the link's
rate. On two lanes one lane's bytes are on the wire while the hub works on the other's.

What stays as it was:

- **the cut bound**: the lanes share `sync.chunk_mb` (each sends chunks of chunk_mb /
  lanes, and a file that fits in a lane's chunk goes in one request), so a dropped link,
  which cuts every lane at once, costs at most one `sync.chunk_mb` sent again;
- **order**: files start in the outbox's priority order, one lane after the other;
- **a failure**: the lane that meets it ends the round; the others stop at their next chunk
  boundary (a chunk on the wire is finished, not thrown away) and resume from the hub's
  offset next round;
- each lane has its own connection (a `requests.Session` is not shared between threads),
  its own tus transport and read-ahead; all share the bandwidth cap and the durable upload
  URLs.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from sync.kit.outbox import Original
from sync.kit.transport import Transport

# What a lane runs: send `original` through `transport`; None when the hub has every byte,
# else why it could not be sent.
Work = Callable[[Transport, Original], "str | None"]
Finished = tuple[Original, "Future[str | None]"]


class Lanes:
    """`submit(original, work)` runs `work` on a free lane; `finished()` returns the uploads
    that ended, each with its future (`.result()` gives the outcome or raises)."""

    def __init__(self, transports: list[Transport]) -> None:
        assert transports, "at least one lane"
        self._transports = transports
        self._free = list(transports)
        self._pool = ThreadPoolExecutor(max_workers=len(transports),
                                        thread_name_prefix="sync-lane")
        self._running: dict[Future[str | None], tuple[Original, Transport]] = {}

    @property
    def free(self) -> bool:
        return bool(self._free)

    @property
    def busy(self) -> bool:
        return bool(self._running)

    def submit(self, original: Original, work: Work) -> None:
        assert self._free, "wait for finished() first"
        transport = self._free.pop(0)
        future = self._pool.submit(work, transport, original)
        self._running[future] = (original, transport)

    def finished(self, *, wait: bool) -> list[Finished]:
        """The uploads that have ended, in the order they were submitted; with `wait`, at
        least one (when any is running)."""
        if not self._running:
            return []
        done, _ = concurrent.futures.wait(self._running, timeout=None if wait else 0,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        out = []
        for future in [f for f in self._running if f in done]:
            original, transport = self._running.pop(future)
            self._free.append(transport)
            out.append((original, future))
        return out

    def close(self) -> list[Original]:
        """Wait for the uploads still running (the caller has told them to stop at their
        next chunk boundary), close the lanes; the originals among them that reached the
        hub whole (their verification is still to be asked)."""
        sent = []
        try:
            while self._running:
                for original, future in self.finished(wait=True):
                    exc = future.exception()
                    if exc is None and future.result() is None:
                        sent.append(original)
                    elif exc is not None and not isinstance(exc, Exception):
                        raise exc  # not an upload's failure (KeyboardInterrupt...)
        finally:
            self._pool.shutdown(wait=True)
            for transport in self._transports:
                transport.close()
                transport.client.close()
        return sent
