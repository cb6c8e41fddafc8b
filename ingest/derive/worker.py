"""The worker: takes derivative jobs from the queue and makes them, politely.

`acopio worker` (and the `worker` role of `acopio run`) claims the most urgent job, keeps its
lease alive with a heartbeat while it works, and records the result only while it still holds
the lease: a worker that was presumed dead never records a result twice. Every output is
written to a temp file and renamed into place, so a killed worker leaves no half-made
derivative under its final name; its job comes back when the lease expires.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

from appliance.catalog import Catalog, SchemaTooNewError
from appliance.config import Config
from appliance.datadir import DataDir
from appliance.jobs import Job, JobQueue, LeaseLost
from appliance.storage import CorruptStateError
from ingest.derive import av, plan
from ingest.derive.ffmpeg import FFmpegError
from ingest.derive.photo import PREVIEW_SIZE, THUMB_SIZE, render_photo

log = logging.getLogger(__name__)

DISK_FULL_WAIT_S = 10.0  # how often a worker on a full disk looks again
DISK_FULL_FLOOR_MB = 4  # the reserve when ingest.min_free_mb is lower (0: no import reserve)

# Errors that are the job's (bad media, a tool that failed or hung), not the worker's.
JOB_ERRORS = (FFmpegError, OSError, RuntimeError, ValueError, subprocess.TimeoutExpired,
              CorruptStateError)


class Stopping(Exception):
    """The worker was asked to stop while ffmpeg ran: ffmpeg is killed, the job given back."""


class Worker:
    def __init__(self, config: Config, *, owner: str | None = None) -> None:
        self.config = config
        self.data = DataDir.at(config.data_dir)
        self.queue = JobQueue(self.data)
        self.catalog = Catalog(self.data)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self.encoders = av.Encoders()
        self.stop = threading.Event()
        self._was_full = False

    # -- loops --------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Work until `stop` is set, waiting `worker.poll_s` when the queue is empty. A stop
        during a transcode ends ffmpeg at its next progress report (about twice a second)
        and gives the job back, queued: a 90 s proxy took 29 s to stop on this machine,
        past systemd's stop timeout on a Pi."""
        self.stop = stop
        while not stop.is_set():
            if self._disk_full():
                stop.wait(max(self.config.worker.poll_s, DISK_FULL_WAIT_S))
                continue
            try:
                job = self.queue.claim(self.owner, self.config.worker.lease_s)
                if job is None:
                    stop.wait(self.config.worker.poll_s)
                    continue
                self.run_job(job)
            except (OSError, CorruptStateError) as exc:
                # A damaged queue shard, a full disk: never the role's end (that stopped
                # every role of `acopio run`, an import with them); tried again later.
                log.error("the worker could not go on (%s); trying again in %.0f s", exc,
                          DISK_FULL_WAIT_S)
                stop.wait(DISK_FULL_WAIT_S)

    def run_once(self) -> int:
        """Work until no job is ready; returns how many jobs were run."""
        count = 0
        while not self._disk_full() and \
                (job := self.queue.claim(self.owner, self.config.worker.lease_s)) is not None:
            self.run_job(job)
            count += 1
        return count

    # -- one job ------------------------------------------------------------------------

    def run_job(self, job: Job) -> None:
        lost = threading.Event()
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job, done, lost),
                                name=f"lease-{job.id[:8]}", daemon=True)
        beat.start()
        stopping = False
        item: dict[str, Any] | None = None
        try:
            error, item = self._make(job)
        except Stopping:
            stopping = True
        finally:
            done.set()
            beat.join()
        if stopping:
            with contextlib.suppress(LeaseLost):
                self.queue.release(job)
            log.info("%s of %s given back: the worker is stopping", job.kind, job.item[:12])
            return
        if error is not None and self._disk_full():
            # Not the media's fault: counted as a failure, a full disk parked every job
            # within seconds, and they stayed parked once space was freed.
            with contextlib.suppress(LeaseLost):
                self.queue.release(job)
            log.warning("%s of %s given back (the disk is full): %s", job.kind,
                        job.item[:12], error)
            return
        try:
            if error is None:
                self.queue.complete(job)
                log.info("%s of %s done", job.kind, job.item[:12])
                self._clear_gave_up(job, item)
            else:
                stored = self.queue.fail(job, error)
                log.warning("%s of %s failed (%s): %s", job.kind, job.item[:12],
                            stored.state, error)
                if stored.state == "parked":
                    self._note_gave_up(job, error)
        except LeaseLost:
            log.warning("%s of %s: lease lost, result dropped", job.kind, job.item[:12])

    def _disk_full(self) -> bool:
        """Below the reserve imports keep (`ingest.min_free_mb`): derivatives wait, rather
        than eat the disk to its last byte (imports, edits and the roles' state need it) or
        fail every job."""
        try:
            free = shutil.disk_usage(self.data.root).free
        except OSError:
            return False
        reserve_mb = max(self.config.ingest.min_free_mb, DISK_FULL_FLOOR_MB)
        full = free < reserve_mb * 1024 * 1024
        if full != self._was_full:
            self._was_full = full
            if full:
                log.warning("the disk has %d MiB free, below the %d MiB reserve "
                            "(ingest.min_free_mb): derivatives wait for space", free >> 20,
                            reserve_mb)
            else:
                log.info("disk space is back: derivatives go on")
        return full

    def _note_gave_up(self, job: Job, error: str) -> None:
        """A derivative given up on (parked) leaves the item without a picture to show or a
        copy to play: it says so on the item ("no_preview", the derivative named), so the
        page warns instead of "preview on its way" for good, and the kiosk and the printed
        mural leave it out. A later success (`acopio jobs --retry`) of every parked one takes
        it back. Best effort: a damaged shard is check's to report, not this job's end."""
        try:  # read again (rare: a job given up): it may be what failed
            item = self._item(job.item)
            if item is not None:
                self._record_problems(item, [{"code": "no_preview",
                                              "detail": f"{job.kind}: {error}"}])
        except (OSError, CorruptStateError, SchemaTooNewError) as exc:
            log.warning("could not note on %s that its %s was given up: %s", job.item[:12],
                        job.kind, exc)

    def _clear_gave_up(self, job: Job, item: dict[str, Any] | None) -> None:
        """After a success: the item as the job read it says whether there is a note to
        clear (no second read of its shard per job)."""
        if item is None or not any(_gave_up(p) for p in item.get("problems") or ()):
            return
        try:
            if any(parked.item == job.item for parked in self.queue.parked()):
                return  # another derivative of it is still given up on
            self.catalog.remove_problems(item["folder"], item["sha256"], _gave_up)
        except (OSError, CorruptStateError, SchemaTooNewError) as exc:
            log.warning("could not clear %s's given-up note: %s", job.item[:12], exc)

    def _heartbeat(self, job: Job, done: threading.Event, lost: threading.Event) -> None:
        interval = self.config.worker.lease_s / 3
        while not done.wait(interval):
            if not self.queue.renew(job, self.config.worker.lease_s):
                lost.set()
                return

    def _make(self, job: Job) -> tuple[str | None, dict[str, Any] | None]:
        """Make one derivative: (the error text when it failed, else None; the item's record
        as read, None when it could not be or the item left the catalog)."""
        item = None
        try:
            item = self._item(job.item)
            if item is None:
                return None, None  # the item left the catalog: nothing to make
            source = self.data.root / item["archive_path"]
            target = plan.path(self.data, job.item, job.kind)
            target.parent.mkdir(parents=True, exist_ok=True)
            self._render(job, item, source, target)
        except JOB_ERRORS as exc:
            return f"{type(exc).__name__}: {exc}", item
        return None, item

    def _render(self, job: Job, item: dict[str, Any], source: Path, target: Path) -> None:
        duration = item.get("duration")
        timeout = max(self.config.worker.timeout_s,
                      (duration or 0) * self.config.worker.timeout_per_media_s)

        def progress(percent: float) -> None:
            if self.stop.is_set() and percent < 100:  # at 100 the output is in place
                raise Stopping  # through ffmpeg's runner, which kills it and its temp file
            self.queue.progress(job, percent)

        if job.kind in ("thumb", "preview"):
            size = THUMB_SIZE if job.kind == "thumb" else PREVIEW_SIZE
            problems = render_photo(source, item["kind"], {job.kind: (target, size)})
            self._record_problems(item, problems)
        elif job.kind == "poster":
            av.make_poster(source, target, duration=duration, rotation=item.get("rotation") or 0,
                           timeout=timeout)
        elif job.kind == "video_proxy":
            av.make_video_proxy(source, target, duration=duration,
                                rotation=item.get("rotation") or 0,
                                encoder=self.encoders.video(), timeout=timeout,
                                progress=progress)
        elif job.kind == "audio_proxy":
            av.make_audio_proxy(source, target, duration=duration, timeout=timeout,
                                progress=progress)
        elif job.kind == "waveform":
            av.make_waveform(source, target, timeout=timeout)
        else:
            raise ValueError(f"unknown job kind {job.kind!r}")

    def _item(self, sha256: str) -> dict[str, Any] | None:
        entry = self.catalog.lookup(sha256)
        if entry is None:
            return None
        return next((r for r in self.catalog.read_shard(entry["folder"])
                     if r["sha256"] == sha256), None)

    def _record_problems(self, item: dict[str, Any], problems: list[dict[str, str]]) -> None:
        """A problem found while rendering (a damaged image) goes on the item's record."""
        if problems:
            self.catalog.add_problems(item["folder"], item["sha256"], problems)


def rebuild(config: Config, item: str | None = None) -> int:
    """Delete derivatives (all, or one item's) and queue them again; returns jobs queued."""
    data = DataDir.at(config.data_dir)
    catalog = Catalog(data)
    items = [i for i in catalog.items() if item is None or i["sha256"] == item]
    if item is not None and not items:
        raise ValueError(f"no item {item} in the catalog")
    for record in items:
        folder = plan.folder(data, record["sha256"])
        for name in plan.BY_KIND.get(record["kind"], ()):
            with contextlib.suppress(FileNotFoundError):
                plan.path(data, record["sha256"], name).unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()
    requests = plan.requests_for(items)
    queue = JobQueue(data)
    for start in range(0, len(requests), 5000):  # bounded memory on a 1 GB box
        queue.enqueue_many(requests[start:start + 5000])
    return len(requests)


def _gave_up(problem: Any) -> bool:
    """A "no_preview" the worker noted on giving up a derivative ("<kind>: <error>"), not a
    RAW file's own lack of an embedded preview."""
    return isinstance(problem, dict) and problem.get("code") == "no_preview" and \
        str(problem.get("detail", "")).startswith(tuple(f"{k}: " for k in plan.DERIVATIVES))
