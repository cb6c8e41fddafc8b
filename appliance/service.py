"""`acopio run`: every role of the appliance in one process, until SIGTERM.

Each role (device watcher, inbox, recordings, worker, web, sync) is an object with
`run(stop: threading.Event)` on a thread of its own; systemd units run them apart with the
same code. Like OctoPrint, a startup flag records that a role is running: if it is still
there at the role's next start, its last stop was not clean (power cut, kill -9) and that is
logged loudly; the imports themselves recover on their own (see ingest.pipeline). The flags
are per role (`state/running/<role>.json`) because several processes share one data folder
on a box: one service's start or clean stop must not read or clear another's flag. Whoever
runs a role holds an flock on `state/running/<role>.lock` while it runs (appliance.running;
the kernel drops it when the process dies, kill -9 included): a lock already held is the
same role started twice, said as such, not an unclean stop, and only the holder writes and
clears that role's flag.
A lock, not a pid check: the units' ProcSubset=pid hides /proc/sys and its boot id.

A role already running is not started again, but for the worker (`SHARED_ROLES`): the
process exits with `EXIT_BUSY` and says who runs it. Twice, any other role would do its work
twice: two device watchers mounting one card, two inboxes archiving one photo twice (claims
are per process), two sync roles sending the same files, two hubs keeping the same uploads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from appliance.config import Config
from appliance.datadir import DataDir
from appliance.fsutil import atomic_write, fsync_dir, remove_debris
from appliance.running import describe_running, role_flag, role_lock, running_dir
from ingest.pipeline import Claims

log = logging.getLogger(__name__)

ALL_ROLES = ("devices", "inbox", "recordings", "worker", "web", "sync")
# Roles of a headquarters box, never in a kit's default set: `hub` serves the kits' sync
# protocol and the web UI over every kit (sync.hub.server; `acopio hub`).
HUB_ROLES = ("hub",)
# Roles several processes may run on one data folder at once: workers share the job queue
# through leases (appliance.jobs).
SHARED_ROLES = ("worker",)
EXIT_BUSY = 75  # EX_TEMPFAIL: a role asked for already runs here; try again once it stops


class RoleBusy(RuntimeError):
    """A role that runs once per data folder is running in another process."""

    def __init__(self, data: DataDir, role: str) -> None:
        super().__init__(f"the {role} role is already running on this data folder "
                         f"({describe_running(data, role)}); not started twice")
        self.role = role


class Role(Protocol):
    def run(self, stop: threading.Event) -> None: ...


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Libraries' warnings (Pillow's "Corrupt EXIF data" on a camera's odd file) become log
    # lines with a time and a level, not bare lines on stderr between them.
    logging.captureWarnings(True)


class RecoverRecordings:
    """At start, import recordings a crash or a power cut left behind; then nothing."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def run(self, stop: threading.Event) -> None:
        from ingest.devices.capture import Recorder, import_recording

        recorder = Recorder.from_config(self.config)
        for path in recorder.recover():
            if stop.is_set():
                return
            summary = import_recording(self.config, path, recorder.activity_for(path))
            if summary.ok:
                log.info("recovered recording %s", path.name)
            else:
                log.warning("recording %s could not be imported (%s); it stays for `acopio "
                            "record recover`", path.name, summary.stopped or summary.failed)


def _make_role(name: str, config: Config, claims: Claims) -> Role:
    if name == "devices":
        from ingest.devices.watcher import DeviceWatcher

        return DeviceWatcher(config, claims=claims)
    if name == "inbox":
        from ingest.inbox import Inbox

        return Inbox.from_config(config, claims=claims)
    if name == "recordings":
        return RecoverRecordings(config)
    if name == "worker":
        from ingest.derive.worker import Worker

        return Worker(config)
    if name == "web":
        from appliance.web.server import WebServer

        try:
            return WebServer(config)
        except OSError as exc:  # the port taken, the address not this box's
            raise RoleCannotStart(f"cannot listen on {config.web.host}:{config.web.port}: "
                                  f"{exc.strerror or exc}") from None
    if name == "sync":
        from sync.kit.role import SyncRole

        return SyncRole(config)
    if name == "hub":
        from sync.hub.server import HubServer

        try:
            return HubServer(config)
        except OSError as exc:
            raise RoleCannotStart(f"cannot listen on {config.hub.host}:{config.hub.port}: "
                                  f"{exc.strerror or exc}") from None
    raise ValueError(f"unknown role {name!r}")


class RoleCannotStart(Exception):
    """A role's known reason not to start (a port in use): logged without a traceback."""


class Service:
    def __init__(self, config: Config, roles: tuple[str, ...] = ALL_ROLES,
                 make_role: Callable[[str, Config, Claims], Role] = _make_role) -> None:
        for name in roles:
            if name not in ALL_ROLES + HUB_ROLES:
                raise ValueError(f"unknown role {name!r} (roles: "
                                 f"{', '.join(ALL_ROLES + HUB_ROLES)})")
        self.config = config
        # One Claims for the process: a photo on a card and in the inbox is archived once.
        self.claims = Claims()
        self.data = DataDir.at(config.data_dir)
        self.roles = roles
        self.make_role = make_role
        self.stop = threading.Event()
        self.failed: list[str] = []

    @property
    def flags(self) -> Path:
        return running_dir(self.data)

    def flag(self, role: str) -> Path:
        return role_flag(self.data, role)

    def run_until_signal(self) -> int:
        configure_logging(self.config.log_level)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop.set())
        return self.run()

    def run(self) -> int:
        self.data.ensure()
        with contextlib.ExitStack() as locks:
            try:
                held = self._hold_roles(locks)
            except RoleBusy as exc:
                log.error("%s", exc)
                return EXIT_BUSY
            return self._run(held)

    def _run(self, held: list[str]) -> int:
        self._check_unclean_stop(held)
        self._recover_refiles()  # -- re-filing (appliance.refile) --
        self._sweep_debris()
        flag = json.dumps({
            "pid": os.getpid(), "started_at": datetime.now(UTC).isoformat(),
            "roles": list(self.roles)}).encode()
        for name in held:
            try:
                atomic_write(self.flag(name), flag)
            except OSError as exc:  # a full disk: the roles must run all the same (sync
                # evicts, the web UI says the disk is full); only this check is lost
                log.error("could not write %s (%s): an unclean stop of %s will not be "
                          "noticed at the next start", self.flag(name), exc.strerror or exc,
                          name)
        threads = [threading.Thread(target=self._run_role, args=(name,), name=f"role-{name}")
                   for name in self.roles]
        log.info("acopio running on %s with roles: %s", self.data.root, ", ".join(self.roles))
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.5)
        for name in held:
            self.flag(name).unlink(missing_ok=True)
        try:
            fsync_dir(self.flags)
        except OSError as exc:
            log.warning("could not flush %s: %s", self.flags, exc)
        log.info("acopio stopped%s", f" (failed roles: {', '.join(self.failed)})"
                 if self.failed else "")
        return 1 if self.failed else 0

    def _run_role(self, name: str) -> None:
        try:
            role = self.make_role(name, self.config, self.claims)
            role.run(self.stop)
        except RoleCannotStart as exc:  # said plainly: no traceback for a known cause
            log.error("role %s cannot start: %s; stopping the service", name, exc)
            self.failed.append(name)
            self.stop.set()
        except Exception:
            log.exception("role %s failed; stopping the service", name)
            self.failed.append(name)
            self.stop.set()  # let systemd restart the whole service

    def _sweep_debris(self) -> None:
        """Temp files a killed writer left (state writes, copies in staging): `acopio check`
        reports them until something sweeps, so the start does, as imports do. Only files
        whose writer is gone (their flock free) are removed."""
        for folder in (self.data.tmp, self.data.staging):
            try:
                removed = remove_debris(folder) if folder.is_dir() else []
            except OSError as exc:
                log.warning("could not sweep %s: %s", folder, exc)
                continue
            if removed:
                log.info("removed %d temp files a stop left in %s", len(removed), folder)

    # -- re-filing (appliance.refile) -------------------------------------------------------

    def _recover_refiles(self) -> None:
        """Finish the re-filings a crash interrupted, before any role touches the archive.
        Never fatal: what cannot be finished now stays for `acopio check --repair`."""
        from appliance.refile import Refiler

        try:
            handled = Refiler(self.config, self.data, lock_timeout=10.0).recover()
        except Exception as exc:
            log.warning("interrupted re-filings could not be finished (%s); run `acopio "
                        "check --repair`", exc)
            return
        if handled:
            log.info("finished interrupted re-filings of %d items", len(handled))

    # -- end re-filing -----------------------------------------------------------------------

    def _hold_roles(self, locks: contextlib.ExitStack) -> list[str]:
        """The roles whose locks this process now holds (until `locks` closes). A shared
        role whose lock another process holds is running there too, and is named; any other
        raises RoleBusy."""
        self.flags.mkdir(parents=True, exist_ok=True)
        held = []
        for name in self.roles:
            if locks.enter_context(role_lock(self.data, name)):
                held.append(name)
            elif name in SHARED_ROLES:
                log.warning("role %s is already running in another process on this data "
                            "folder (%s); both run now", name,
                            describe_running(self.data, name))
            else:
                raise RoleBusy(self.data, name)
        return held

    def _check_unclean_stop(self, held: list[str]) -> None:
        """Say which of the roles this process holds did not stop cleanly last time, grouped
        by the process that ran them: their flag is there, and nobody holds their lock."""
        unclean: dict[str, list[str]] = {}
        for name in held:
            if self.flag(name).exists():
                unclean.setdefault(describe_running(self.data, name), []).append(name)
        for key, names in unclean.items():
            log.warning("the previous run of %s (%s) did not stop cleanly; interrupted imports "
                        "resume by themselves, `acopio check` verifies the archive",
                        ", ".join(names), key)
