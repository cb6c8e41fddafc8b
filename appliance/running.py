"""Which roles run on a data folder now, and who runs them: `state/running/`.

Whoever runs a role (appliance.service) holds an flock on `<role>.lock` while it runs (the
kernel drops it when the process dies, kill -9 included) and writes `<role>.json`, its
startup flag: pid, start time, roles. A module of its own because status pages in other
processes (the web UI's status strip, `acopio sync status`) ask whether the sync role runs:
importing that from appliance.service pulled in the import pipeline (Pillow, ffmpeg-python;
118 modules, about 80 ms here) for one flock probe.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from appliance.datadir import DataDir
from appliance.fsutil import lock_held, try_lock


def running_dir(data: DataDir) -> Path:
    return data.state / "running"


def role_flag(data: DataDir, role: str) -> Path:
    return running_dir(data) / f"{role}.json"


def role_lock(data: DataDir, role: str) -> contextlib.AbstractContextManager[bool]:
    """Held by the process that runs `role` on this data folder, while it runs it; False at
    once when another process holds it."""
    return try_lock(running_dir(data) / f"{role}.lock")


def role_running(data: DataDir, role: str) -> bool:
    """Whether a process runs `role` on this data folder now (its lock is held)."""
    return bool(lock_held(running_dir(data) / f"{role}.lock"))


def describe_running(data: DataDir, role: str) -> str:
    """Who runs `role`, from its flag: "pid N, started T" (or "no flag")."""
    try:
        flag = json.loads(role_flag(data, role).read_text())
    except (OSError, ValueError):
        return "no flag"
    return f"pid {flag.get('pid', '?')}, started {flag.get('started_at', '?')}"
