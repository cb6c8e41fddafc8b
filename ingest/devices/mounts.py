"""Mounting cards read-only in a private place, through configurable command templates.

The service mounts cards itself (not a udev RUN rule, which udev kills after a few seconds
and which runs in udev's own mount namespace). The commands are templates so a box can use
plain mount, udisks or systemd-mount, and the tests fusefat on a FAT image; each placeholder
is substituted inside one argument after splitting, so a hostile label or device name can
never become an extra argument.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

from appliance import templates


class MountError(RuntimeError):
    pass


def command_args(template: str, **values: str) -> list[str]:
    """Split a command template, then fill `{name}` placeholders argument by argument."""
    return templates.fill(template, values)


def _run(args: list[str], timeout: float) -> None:
    try:
        result = subprocess.run(args, capture_output=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise MountError(f"command not found: {args[0]}") from None
    except subprocess.TimeoutExpired:
        raise MountError(f"{args[0]} did not finish within {timeout:.0f} s") from None
    if result.returncode != 0:
        message = (result.stderr or result.stdout).decode(errors="replace").strip()
        raise MountError(message.splitlines()[-1] if message else
                         f"{args[0]} exited with status {result.returncode}")


def is_mountpoint(path: Path) -> bool:
    """Like os.path.ismount, but true for a dead FUSE mount too (stat fails: ENOTCONN)."""
    target = os.fspath(path.absolute())
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) > 4 and _unescape(fields[4]) == target:
                    return True
    except OSError:
        pass
    return False


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="replace")


class Mounter:
    def __init__(self, mount_command: str, unmount_command: str, root: Path,
                 timeout: float) -> None:
        self.mount_command = mount_command
        self.unmount_command = unmount_command
        self.root = root
        self.timeout = timeout

    def mountpoint_for(self, device_id: str) -> Path:
        return self.root / device_id

    def mount(self, devnode: str, device_id: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)  # private: nobody else browses the cards
        mountpoint = self.mountpoint_for(device_id)
        if is_mountpoint(mountpoint):
            self.unmount(mountpoint)  # a stale mount from a crashed run
        mountpoint.mkdir(exist_ok=True, mode=0o700)
        _run(command_args(self.mount_command, device=devnode, mountpoint=str(mountpoint)),
             self.timeout)
        if not is_mountpoint(mountpoint):
            raise MountError(f"{devnode} was not mounted at {mountpoint}")
        return mountpoint

    def unmount(self, mountpoint: Path, attempts: int = 3) -> None:
        """Unmount, retrying while busy; a mount that will not go is detached lazily."""
        error: MountError | None = None
        for attempt in range(attempts):
            if not is_mountpoint(mountpoint):
                break
            try:
                _run(command_args(self.unmount_command, mountpoint=str(mountpoint)),
                     self.timeout)
            except MountError as exc:
                error = exc
                time.sleep(0.3 * (attempt + 1))
        if is_mountpoint(mountpoint):
            # A pulled card leaves a dead mount that cannot be unmounted normally.
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True,
                           timeout=self.timeout, stdin=subprocess.DEVNULL)
        if is_mountpoint(mountpoint):
            raise MountError(f"could not unmount {mountpoint}: {error}")
        with contextlib.suppress(OSError):  # not empty: not ours to delete, leave it
            mountpoint.rmdir()

    def stale(self) -> list[Path]:
        """Mounts left under the root by a watcher that was killed."""
        if not self.root.is_dir():
            return []
        return [p for p in sorted(self.root.iterdir()) if is_mountpoint(p)]
