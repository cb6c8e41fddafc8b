"""The ffmpeg process: identity that survives pid reuse, pidfds, spawning and stopping."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
from dataclasses import dataclass
from pathlib import Path

from appliance.fsutil import SHARED_MODE
from ingest.devices.capture.args import KILL_TIMEOUT_S, TERM_TIMEOUT_S, RecordError

logger = logging.getLogger("ingest.devices.capture")  # one logger name, as before the split

# Signals an interpreter may ignore (Python ignores SIGPIPE): reset so ffmpeg sees defaults.
_RESET_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE,
                  signal.SIGXFSZ)


# -- processes ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessId:
    """A process as the kernel knows it: a pid alone can be recycled, this cannot."""

    pid: int
    start: int  # field 22 of /proc/<pid>/stat: clock ticks after boot
    boot_id: str


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) of a pid, None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ")".
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def identify(pid: int) -> ProcessId | None:
    stat = proc_stat(pid)
    return None if stat is None else ProcessId(pid, stat[1], boot_id())


def process_state(proc: ProcessId) -> str | None:
    """The state letter of exactly this process, None when it is gone or the pid recycled."""
    if proc.boot_id != boot_id():
        return None
    stat = proc_stat(proc.pid)
    if stat is None or stat[1] != proc.start:
        return None
    return stat[0]


def is_running(proc: ProcessId) -> bool:
    return process_state(proc) not in (None, "Z", "X")


def open_pidfd(proc: ProcessId) -> int | None:
    """A pidfd for exactly this process (zombie included), None when it is gone.

    The identity is checked after the pidfd is open, so the pidfd cannot refer to a process
    that took the pid over in between.
    """
    try:
        pidfd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        return None
    if process_state(proc) is None:
        os.close(pidfd)
        return None
    return pidfd


def wait_exit(pidfd: int, timeout: float) -> bool:
    """True when the process behind `pidfd` has exited within `timeout` seconds."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000))))


def reap(pidfd: int) -> None:
    """Collect an exited child's status so it does not stay a zombie."""
    # ChildProcessError: not our child (started by another acopio process); init reaps it.
    with contextlib.suppress(ChildProcessError):
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)


def end_process(proc: ProcessId, stop_timeout: float) -> str:
    """Stop ffmpeg: SIGINT (clean finish), then SIGTERM, then SIGKILL.

    Returns how it ended: "stopped" (SIGINT or SIGTERM), "killed", or "ended" when it had
    already exited on its own.
    """
    pidfd = open_pidfd(proc)
    if pidfd is None:
        return "ended"
    try:
        if not is_running(proc):
            return "ended"
        steps = ((signal.SIGINT, stop_timeout, "stopped"), (signal.SIGTERM, TERM_TIMEOUT_S,
                 "stopped"), (signal.SIGKILL, KILL_TIMEOUT_S, "killed"))
        for sig, timeout, outcome in steps:
            try:
                signal.pidfd_send_signal(pidfd, sig)
            except ProcessLookupError:
                return outcome  # it exited between the wait and the signal
            if wait_exit(pidfd, timeout):
                return outcome
            logger.warning("ffmpeg pid %d did not exit %.0f s after %s", proc.pid, timeout,
                           sig.name)
        raise RecordError(f"ffmpeg (pid {proc.pid}) did not exit even after SIGKILL")
    finally:
        reap(pidfd)
        os.close(pidfd)


def spawn(args: list[str], log: Path) -> int:
    """Start `args` detached: own session, stdin /dev/null, stdout and stderr to `log`."""
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                     SHARED_MODE)
    try:
        return os.posix_spawnp(
            args[0], args, os.environ,
            file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                          (os.POSIX_SPAWN_DUP2, log_fd, 1),
                          (os.POSIX_SPAWN_DUP2, log_fd, 2)],
            setsid=True, setsigdef=_RESET_SIGNALS, setsigmask=(),
        )
    except OSError as exc:
        raise RecordError(f"cannot start {args[0]}: {exc.strerror or exc}") from exc
    finally:
        os.close(log_fd)


def log_tail(log: Path, limit: int = 2000) -> str:
    """The end of an ffmpeg log, for error messages."""
    try:
        with open(log, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - limit))
            return fh.read().decode("utf-8", "replace").strip()
    except FileNotFoundError:
        return ""
