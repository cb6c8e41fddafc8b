"""What the box is doing now, for the live status bar, `GET /api/status` and later the kiosk.

Gathered from the state files other roles write (devices, recordings, jobs) and the disk,
so it works whether those roles run in this process or in their own systemd units. Counting
the job queue reads every queue shard (about 0.4 s with 100,000 jobs), so its figure is
cached for a few seconds: phones poll this every couple of seconds.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

from appliance.config import Config
from appliance.datadir import DataDir
from appliance.jobs import JobQueue
from appliance.storage import CorruptStateError

log = logging.getLogger(__name__)

JOB_COUNTS_TTL_S = 5.0
DISK_GRAIN = 64 * 1024 * 1024


class StatusBoard:
    def __init__(self, config: Config, *, latest_import: Callable[[], str | None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.data = DataDir.at(config.data_dir)
        self.latest_import = latest_import
        self.clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[str, Any] | None = None
        self._jobs_at = float("-inf")

    def snapshot(self) -> dict[str, Any]:
        return {
            "kit": self.config.kit.name,
            "devices": self.devices(),
            "jobs": self.jobs(),
            "disk": self.disk(),
            "sync": self.sync(),
            "latest_import": self.latest_import(),
        }

    def devices(self) -> list[dict[str, Any]]:
        from ingest.devices.capture import Recorder
        from ingest.devices.state import DeviceStates

        try:
            devices = DeviceStates(self.data.state).all()
            recordings = {r.device_id: r for r in Recorder.from_config(self.config).active()}
        except CorruptStateError as exc:
            log.error("device state unreadable: %s", exc)
            return []
        out = []
        for device in devices:
            if device.status == "removed":
                continue
            recording = recordings.get(device.id)
            out.append({
                "id": device.id, "kind": device.kind, "status": device.status,
                "name": device.name, "total": device.total, "verified": device.verified,
                "duplicates": device.duplicates, "failed": device.failed,
                # what is safe in the archive: new copies and files it held already (the
                # progress shown; `acopio devices` counts the same)
                "done": device.verified + device.duplicates,
                "reason": device.reason, "updated_at": device.updated_at,
                "recording": recording.as_dict() if recording else None,
            })
        return out

    def jobs(self) -> dict[str, Any]:
        with self._lock:
            if self._jobs is None or self.clock() - self._jobs_at >= JOB_COUNTS_TTL_S:
                self._jobs = self._count_jobs()
                self._jobs_at = self.clock()
            return self._jobs

    def _count_jobs(self) -> dict[str, Any]:
        try:
            counts = JobQueue(self.data).counts()
        except CorruptStateError as exc:
            log.error("job queue unreadable: %s (run `acopio jobs --repair`)", exc)
            return {"error": str(exc), "by_kind": {}, "pending": 0, "running": 0,
                    "parked": 0, "done": 0}
        totals = {state: sum(c.get(state, 0) for c in counts.values())
                  for state in ("queued", "running", "parked", "done")}
        return {"by_kind": counts, "pending": totals["queued"] + totals["running"],
                "running": totals["running"], "parked": totals["parked"],
                "done": totals["done"]}

    def disk(self) -> dict[str, int]:
        usage = shutil.disk_usage(self.data.archive if self.data.archive.exists()
                                  else self.data.root)
        # Rounded to 64 MiB: the strip shows tenths of a GB, and an answer that changes with
        # every byte another process writes would defeat the pollers' ETag (304) answers.
        grain = DISK_GRAIN
        return {"total": usage.total, "free": usage.free // grain * grain,
                "used": usage.used // grain * grain,
                "reserve": self.config.ingest.min_free_mb * 1024 * 1024}

    def sync(self) -> dict[str, Any]:
        """What the sync role last wrote (state/sync/status.json; sync.kit.status): state,
        pending items and bytes, the current upload with its rate, last success and error."""
        from sync.kit import status

        return status.read(self.data)
