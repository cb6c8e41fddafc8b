"""The device watcher: react to whatever is plugged in, with nobody at a keyboard.

One thread listens to udev; every card or camera gets a job thread of its own, so several
cards import concurrently and a second card never waits for the first. The jobs share one
`Claims` so two cards holding the same photo archive it once. States go to the device state
file that `acopio devices list` and the web UI read.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from appliance.config import Config
from appliance.datadir import DataDir
from ingest.devices.history import CardHistory
from ingest.devices.mounts import Mounter, MountError
from ingest.devices.state import Device, DeviceStates
from ingest.devices.udev import DeviceEvent, UdevWatcher
from ingest.pipeline import Claims, Importer, Outcome, Reporter, Summary
from ingest.sources import FolderSource, Source
from ingest.walk import Scan

log = logging.getLogger(__name__)


class _JobReporter(Reporter):
    """Turns an import's progress into device state, at most a few writes a second."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.last = 0.0
        self.dirty = False

    def started(self, scan: Scan) -> None:
        self.job.device.total = len(scan.files)
        self._save(force=True)

    def advanced(self, nbytes: int) -> None:
        if self.dirty:  # counts that changed during a burst: written once a long copy runs
            self._save()

    def file_done(self, outcome: Outcome) -> None:
        device = self.job.device
        if outcome.sha256 and outcome.status != "failed":
            self.job.contents.append(outcome.sha256)
        if outcome.status == "imported":
            device.verified += 1
        elif outcome.status == "duplicate":
            device.duplicates += 1
        else:
            device.failed += 1
        first = device.verified + device.duplicates + device.failed == 1
        self._save(force=first)  # the first file verified shows at once

    def _save(self, force: bool = False) -> None:
        now = time.monotonic()
        self.dirty = True
        if force or now - self.last > 0.3:
            self.last = now
            self.dirty = False
            self.job.save()


@dataclass
class Job:
    """One device's import, from plug-in to "safe to remove"."""

    watcher: DeviceWatcher
    event: DeviceEvent
    device: Device
    removed: threading.Event = field(default_factory=threading.Event)  # unplugged
    cancel: threading.Event = field(default_factory=threading.Event)  # unplugged or shutdown
    thread: threading.Thread | None = None
    contents: list[str] = field(default_factory=list)  # SHA-256 of what was read from it

    def save(self) -> None:
        self.watcher.states.put(self.device)

    def set(self, status: str, reason: str = "") -> None:
        self.device.status = status  # type: ignore[assignment]
        self.device.reason = reason
        self.save()
        log.info("%s %s: %s%s", self.device.kind, self.device.id, status,
                 f" ({reason})" if reason else "")

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"job-{self.device.id}",
                                       daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.run()
        except Exception as exc:  # a job must always end in a visible state
            log.exception("job for %s failed", self.device.id)
            self.set("error", f"internal error: {exc}")
        finally:
            self.watcher.job_ended(self)

    def run(self) -> None:
        raise NotImplementedError

    def _import(self, source: Source) -> Summary:
        importer = Importer(self.watcher.config, reporter=_JobReporter(self),
                            claims=self.watcher.claims, cancel=self.cancel)
        return importer.run_source(source)

    def _finish(self, summary: Summary) -> str:
        """The state after an import: removed early, error, or done."""
        done = self.device.verified + self.device.duplicates
        if self.removed.is_set() or "source disappeared" in summary.stopped:
            self.set("removed_early", f"{done} of {self.device.total} verified")
            return "removed_early"
        if summary.stopped == "cancelled":
            self.set("error", f"stopped by the service shutting down; {done} of "
                     f"{self.device.total} verified")
            return "error"
        if summary.stopped:
            self.set("error", summary.stopped)
            return "error"
        reason = f"{len(summary.failed)} files failed" if summary.failed else ""
        self.device.reason = reason
        return "done"


class CardJob(Job):
    def identify(self) -> None:
        """Recognise the card by UUID, label and the content it was seen to hold."""
        props = self.event.properties
        identity = self.watcher.history.identify(
            props.get("ID_FS_UUID", ""), props.get("ID_FS_LABEL", ""),
            props.get("ID_FS_TYPE", ""), self.contents)
        self.device.card_id = identity.card_id

    def run(self) -> None:
        started = datetime.now(UTC).isoformat()
        fstype = self.event.properties.get("ID_FS_TYPE", "")
        if fstype not in self.watcher.config.devices.filesystems:
            self.set("error", f"unsupported filesystem {fstype!r} (devices.filesystems)")
            return
        self.set("mounting")
        mounter = self.watcher.mounter
        try:
            mountpoint = mounter.mount(self.device.devnode, self.device.id)
        except MountError as exc:
            if self.removed.is_set():
                self.set("removed_early", "removed before it was mounted")
            else:
                self.set("error", f"could not mount: {exc}")
            return
        summary = None
        try:
            if self.removed.is_set():
                self.set("removed_early", "removed before the import started")
                return
            self.set("importing")
            with FolderSource(mountpoint) as card:
                summary = self._import(card)
        finally:
            try:
                mounter.unmount(mountpoint)
            except MountError as exc:
                self.set("error", str(exc))
                summary = None
        if summary is None:
            return
        self.identify()
        outcome = self._finish(summary)
        if outcome == "done":
            self.set("safe_to_remove", self.device.reason)
        self.watcher.history.record_import({
            "card_id": self.device.card_id, "device_id": self.device.id,
            "label": self.event.properties.get("ID_FS_LABEL", ""),
            "started_at": started, "finished_at": datetime.now(UTC).isoformat(),
            "status": self.device.status, "total": self.device.total,
            "verified": self.device.verified, "duplicates": self.device.duplicates,
            "failed": self.device.failed, "reason": self.device.reason,
        })


class CameraJob(Job):
    def run(self) -> None:
        from ingest.ptp import CameraSource  # libgphoto2 is loaded only when a camera appears

        props = self.event.properties
        port = self.watcher.config.devices.gphoto2_port.format(
            busnum=props.get("BUSNUM", ""), devnum=props.get("DEVNUM", ""))
        self.set("importing")
        try:
            source = CameraSource(port)
        except OSError as exc:
            self.set("removed_early" if self.removed.is_set() else "error",
                     f"could not open the camera: {exc}")
            return
        try:
            summary = self._import(source)
        finally:
            source.close()
        if self._finish(summary) == "done":
            self.set("done", self.device.reason)


class DeviceWatcher:
    def __init__(self, config: Config, udev: UdevWatcher | None = None,
                 claims: Claims | None = None) -> None:
        self.config = config
        self.data = DataDir.at(config.data_dir)
        self.states = DeviceStates(self.data.state)
        self.history = CardHistory(self.data.state)
        d = config.devices
        self.mounter = Mounter(d.mount_command, d.unmount_command, d.mount_root,
                               d.command_timeout_s)
        self.claims = claims or Claims()
        self.udev = udev
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()

    def run(self, stop: threading.Event) -> None:
        """Watch until `stop` is set; then cancel the imports between files and wait."""
        self.data.ensure()
        for stale in self.mounter.stale():
            log.warning("unmounting %s, left by a watcher that did not stop cleanly", stale)
            try:
                self.mounter.unmount(stale)
            except MountError as exc:
                log.error("%s", exc)
        for old in self.states.all():  # coldplug will list what is still attached
            self.states.remove(old.id)
        udev = self.udev or UdevWatcher(
            system_paths=(*self.config.devices.system_paths, self.data.root))
        for event in udev.coldplug():
            self.handle(event)
        for event in udev.events(stop):
            self.handle(event)
        with self.lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            job.cancel.set()  # stops between files; the file being copied finishes
        for job in jobs:
            if job.thread:
                job.thread.join(timeout=60)

    def handle(self, event: DeviceEvent) -> None:
        log.debug("udev %s %s %s", event.action, event.kind, event.id)
        if event.action == "remove":
            self._removed(event)
        elif event.action == "add":
            self._added(event)

    def _added(self, event: DeviceEvent) -> None:
        with self.lock:
            if event.id in self.jobs:
                return  # seen by both coldplug and the monitor
            device = Device(id=event.id, kind=event.kind, name=event.name,
                            devnode=event.devnode, syspath=event.syspath,
                            properties=dict(event.properties))
            if event.kind in ("microphone", "webcam"):
                device.status = "ready"
                self.states.put(device)
                return
            job_class = CardJob if event.kind == "card" else CameraJob
            job = job_class(self, event, device)
            self.jobs[event.id] = job
        job.save()
        job.start()

    def _removed(self, event: DeviceEvent) -> None:
        with self.lock:
            job = self.jobs.get(event.id)
        if job is not None:
            job.removed.set()
            job.cancel.set()
            return
        device = self.states.get(event.id)
        if device is not None and device.status not in ("removed_early", "error"):
            self.states.remove(event.id)

    def job_ended(self, job: Job) -> None:
        with self.lock:
            if self.jobs.get(job.device.id) is job:
                del self.jobs[job.device.id]
        if job.removed.is_set() and job.device.status in ("safe_to_remove", "done"):
            self.states.remove(job.device.id)  # unplugged after it finished: gone
