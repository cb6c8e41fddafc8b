"""Uploads whose last byte arrived are kept (made durable, placed, catalogued) by a thread of
the hub's own, several at a time, after the final PATCH has been answered.

Why: keeping a file was the most expensive step of a final PATCH (fsync the bytes, link
them into the archive, fsync folders, rewrite the activity's catalog shard and fsync it, make
the content index durable): about 6 ms a photo on the benchmark's machine, and growing with
the folder, while the kit waited (`./scripts/bench sync`). Now the final PATCH is answered as
soon as the whole file's SHA-256 is checked (a file that is not what was announced still gets
460 at once), the kit goes on with its next file, and the acknowledgement, the kit's
`GET /sync/objects/<sha256>?verify=1`, waits for the keep (`Keeper.wait`). Files that arrive
while a batch is being kept, or within `GATHER_S` of the first of a batch, are kept together:
one shard write per activity folder and one content-index syncfs per batch instead of one of
each per file. Without the gathering the keeper kept up with a kit's photos two at a time,
rewriting the growing activity shard for each pair: in `./scripts/bench sync`, 219 shard
writes for 410 files and 6.2 s of keeping, against 20 writes and 3.1 s with it. The kit's
verifier asks about many files at once (sync.kit.verifier), so the wait costs it nothing.

Nothing is lost to a crash meanwhile: until it is kept, the upload's state says "complete,
not done", which the hub's start keeps (`Hub.finish_interrupted`), and the kit marks nothing
synced before its `?verify=1` answers 200.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

MAX_BATCH = 64  # uploads kept in one batch (their locks are held together)
GATHER_S = 0.1  # how long a batch gathers after its first upload
WAIT_S = 120.0  # how long a question about a file waits for its keep


class Keeper:
    """`submit(kit, upload_id, sha256)` from any thread; a daemon thread calls `keep` with
    the batches, in the order submitted."""

    def __init__(self, keep: Callable[[list[tuple[str, str, str]]], None],
                 max_batch: int = MAX_BATCH, gather_s: float = GATHER_S) -> None:
        self.keep = keep
        self.max_batch = max_batch
        self.gather_s = gather_s
        self._queue: list[tuple[str, str, str]] = []
        self._busy: dict[str, int] = {}  # sha256 -> uploads of it queued or being kept
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, kit: str, upload_id: str, sha256: str) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the hub is stopping")
            self._queue.append((kit, upload_id, sha256))
            self._busy[sha256] = self._busy.get(sha256, 0) + 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hub-keeper",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def busy_with(self, sha256: str) -> bool:
        with self._cond:
            return sha256 in self._busy

    def wait(self, sha256: str, timeout: float = WAIT_S) -> bool:
        """Until no upload of `sha256` waits to be kept; False when `timeout` ran out."""
        with self._cond:
            return self._cond.wait_for(lambda: sha256 not in self._busy, timeout=timeout)

    def idle(self, timeout: float = WAIT_S) -> bool:
        """Until everything submitted has been kept (tests; `close`)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._busy, timeout=timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Keep what was submitted (up to `timeout`), then stop; what is left is kept at
        the hub's next start."""
        self.idle(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                if self._closed:
                    return
                # gather a little more, unless stopping or already a full batch
                self._cond.wait_for(lambda: self._closed
                                    or len(self._queue) >= self.max_batch,
                                    timeout=self.gather_s)
                batch = self._queue[:self.max_batch]
                del self._queue[:self.max_batch]
            try:
                self.keep(batch)
            except Exception:  # the uploads stay "complete, not done": kept at next start
                log.exception("keeping %d uploads failed; they are kept at the hub's next "
                              "start (or sent again by their kits)", len(batch))
            finally:
                with self._cond:
                    for _kit, _id, sha in batch:
                        left = self._busy.get(sha, 0) - 1
                        if left > 0:
                            self._busy[sha] = left
                        else:
                            self._busy.pop(sha, None)
                    self._cond.notify_all()
