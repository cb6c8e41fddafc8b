"""The derivatives of files the hub keeps, queued in batches, off the upload's answer.

Why: queueing an item's jobs is a handful of durable writes to the job queue (its shard and
key files rewritten and fsynced), about 6 ms a file on the benchmark's machine: a quarter of
the hub's time per photo when done inside each final PATCH (`./scripts/bench sync`). A kit
does not wait for thumbnails, so the hub gathers kept files for a moment and queues them
together, one durable write per batch (`JobQueue.enqueue_many`).

Nothing is lost to a crash meanwhile: the hub's start (`Hub.finish_interrupted`) queues again
the derivatives missing for the files it kept last (its "done" upload markers of the ten
minutes before the newest), and queueing a job already queued is a no-op. A batch the job
queue refuses (a full disk) is tried again with the next one, at most every 30 s.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from appliance import storage
from appliance.datadir import DataDir

log = logging.getLogger(__name__)

GATHER_S = 0.5  # how long a batch gathers after its first file
MAX_BATCH = 500
RETRY_S = 30.0  # after the job queue refused a batch


class DerivativeBatcher:
    """`add(record)` from any thread; a daemon thread queues the jobs of each batch."""

    def __init__(self, data: DataDir, gather_s: float = GATHER_S) -> None:
        self.data = data
        self.gather_s = gather_s
        self._pending: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._busy = False

    def add(self, record: dict[str, Any]) -> None:
        item = {k: record.get(k) for k in ("sha256", "kind", "captured_at")}
        with self._cond:
            if self._closed:  # a straggler after close: queued at once
                self._enqueue([item], retry=False)
                return
            self._pending.append(item)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hub-derivatives",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self) -> None:
        """Queue everything gathered so far, now (tests, and `close`)."""
        with self._cond:
            batch, self._pending = self._pending, []
            while self._busy:
                self._cond.wait()
            self._enqueue(batch, retry=False)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=30)
        self.flush()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                # gather a little more, unless closing or already a full batch
                self._cond.wait_for(lambda: self._closed or len(self._pending) >= MAX_BATCH,
                                    timeout=self.gather_s)
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                self._busy = True
            ok = False
            try:
                ok = self._enqueue(batch)
            finally:
                with self._cond:
                    self._busy = False
                    if not ok:
                        self._pending[:0] = batch  # tried again with the next batch
                    self._cond.notify_all()
                    if not ok:
                        self._cond.wait_for(lambda: self._closed, timeout=RETRY_S)

    def _enqueue(self, batch: list[dict[str, Any]], *, retry: bool = True) -> bool:
        if not batch:
            return True
        from ingest.derive import plan

        try:
            plan.enqueue(self.data, batch)
        except (OSError, storage.CorruptStateError) as exc:  # a full disk, a damaged queue
            log.error("could not queue the derivatives of %d kept files (%s); %s", len(batch),
                      exc, f"trying again in {RETRY_S:.0f} s" if retry else
                      "they are queued at the hub's next start")
            return False
        except Exception:  # a record no check foresaw: never the thread's or the start's end
            log.exception("could not queue the derivatives of %s; left out (`acopio derive "
                          "--rebuild --item SHA` queues one again)",
                          ", ".join(str(r.get("sha256"))[:12] for r in batch))
        return True
