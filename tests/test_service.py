"""The startup flag of each role (appliance.service), with real processes on one data folder.

On a box several services share the data folder (acopio.service, acopio-worker.service,
acopio-sync.service, acopio-devices.service). A kill -9 of one must be reported at that
role's next start, and another service's clean stop must neither hide it nor cause a false
report.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from appliance.datadir import DataDir
from appliance.running import role_running
from tests.conftest import REPO, TEST_ENV, run_cli

UNCLEAN = "did not stop cleanly"


class Acopio:
    """`acopio ARGS` running on a data folder, its output in a log file."""

    def __init__(self, data: Path, log: Path, *args: str) -> None:
        self.log = log
        env = {"PATH": "/usr/bin:/bin", **TEST_ENV, "PYTHONUNBUFFERED": "1"}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "appliance", "--data-dir",
                                          str(data), *args], cwd=REPO, env=env,
                                         stdout=out, stderr=subprocess.STDOUT)

    def said(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, f"{what}: exited {self.proc.returncode}\n" \
                                             f"{self.said()}"
            assert time.monotonic() < deadline, f"{what}: not within {timeout} s\n{self.said()}"
            time.sleep(0.05)

    def started(self) -> Acopio:
        self.wait_for("running", lambda: "acopio running on" in self.said())
        return self

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=30) == 0, self.said()
        return self.said()


def test_each_role_finds_its_own_unclean_stop(tmp_path: Path) -> None:
    data = tmp_path / "data"
    flags = data / "state" / "running"
    worker = Acopio(data, tmp_path / "worker-1.log", "worker").started()
    sync = Acopio(data, tmp_path / "sync-1.log", "sync").started()
    assert sorted(p.name for p in flags.glob("*.json")) == ["sync.json", "worker.json"]
    assert json.loads((flags / "worker.json").read_text())["pid"] == worker.proc.pid

    # sync stops cleanly while the worker runs: only its own flag goes
    assert UNCLEAN not in sync.stop()
    assert sorted(p.name for p in flags.glob("*.json")) == ["worker.json"]
    # the worker is killed: its flag stays, and its next start says so, naming it
    worker.proc.kill()
    worker.proc.wait(timeout=10)
    again = Acopio(data, tmp_path / "worker-2.log", "worker").started()
    said = again.stop()
    assert f"the previous run of worker (pid {worker.proc.pid}, started" in said
    assert UNCLEAN in said
    # ... once: that start's clean stop cleared it; sync's stop was clean too
    for role in ("worker", "sync"):
        later = Acopio(data, tmp_path / f"{role}-3.log", role).started()
        assert UNCLEAN not in later.stop()
    assert not list(flags.glob("*.json"))


def test_a_role_started_twice_is_said_so_not_taken_for_an_unclean_stop(tmp_path: Path
                                                                       ) -> None:
    data = tmp_path / "data"
    assert not role_running(DataDir.at(data), "worker")
    first = Acopio(data, tmp_path / "first.log", "worker").started()
    assert role_running(DataDir.at(data), "worker")
    second = Acopio(data, tmp_path / "second.log", "worker").started()
    said = second.stop()
    assert ("role worker is already running in another process on this data folder (pid "
            f"{first.proc.pid}, started") in said
    assert UNCLEAN not in said
    # the second left the first's flag alone: the first's kill -9 is still found
    assert role_running(DataDir.at(data), "worker")
    first.proc.kill()
    first.proc.wait(timeout=10)
    assert not role_running(DataDir.at(data), "worker")  # the kernel dropped its lock
    again = Acopio(data, tmp_path / "third.log", "worker").started()
    assert f"the previous run of worker (pid {first.proc.pid}, started" in again.stop()


def test_a_role_that_runs_once_per_folder_is_not_started_twice(tmp_path: Path) -> None:
    """Two sync roles would send the same files twice (two inboxes would archive a photo
    twice, two device watchers mount one card): the second start is refused with exit 75 and
    who runs it, whatever command asks for it; the first runs on untouched."""
    data = tmp_path / "data"
    flags = data / "state" / "running"
    first = Acopio(data, tmp_path / "first.log", "sync").started()
    busy = f"the sync role is already running on this data folder (pid {first.proc.pid}"
    for n, args in enumerate([("sync",), ("sync", "--once"), ("run", "--roles", "inbox,sync")]):
        second = Acopio(data, tmp_path / f"second-{n}.log", *args)
        assert second.proc.wait(timeout=30) == 75, second.said()
        assert busy in second.said()
        if "--once" in args:
            assert "acopio: the sync role is already sending this kit's archive" in \
                second.said()
    assert not (flags / "inbox.json").exists()  # `run` started none of its roles
    assert json.loads((flags / "sync.json").read_text())["pid"] == first.proc.pid
    assert first.proc.poll() is None and UNCLEAN not in first.stop()
    # once the first has stopped, `sync --once` runs (this kit is not paired: exit 2), as
    # the role, and leaves neither its lock held nor its flag behind
    once = Acopio(data, tmp_path / "once.log", "sync", "--once")
    assert once.proc.wait(timeout=60) == 2, once.said()
    assert "not paired" in once.said()
    assert not role_running(DataDir.at(data), "sync") and not list(flags.glob("*.json"))


def test_run_with_an_empty_role_list_starts_nothing(tmp_path: Path) -> None:
    """`--roles "$ROLES"` with the variable unset once started every role."""
    for roles in ("", " , "):
        result = run_cli("--data-dir", tmp_path, "run", "--roles", roles, timeout=30)
        assert result.returncode == 2 and b"--roles names no role" in result.stderr
    assert not (tmp_path / "state" / "running").exists() or \
        not list((tmp_path / "state" / "running").iterdir())


def test_a_start_sweeps_what_a_killed_writer_left(tmp_path: Path) -> None:
    """After a kill -9, `acopio check` reported the dead writer's temp file (stray_temp)
    until a repair or an import swept it; a start of any role now does. A live writer's temp
    (its flock held) stays."""
    import fcntl
    import os

    from appliance.fsutil import TEMP_PREFIX

    data = tmp_path / "data"
    DataDir.at(data).ensure()
    tmp = DataDir.at(data).tmp
    dead = tmp / f"{TEMP_PREFIX}users.json.abc123"
    dead.write_bytes(b"half")
    live = tmp / f"{TEMP_PREFIX}agenda.json.def456"
    live.write_bytes(b"being written")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert run_cli("--data-dir", data, "check").returncode == 1
        said = Acopio(data, tmp_path / "worker.log", "worker").started().stop()
        assert "removed 1 temp files a stop left" in said, said
        assert not dead.exists() and live.exists()
    finally:
        os.close(fd)


def test_a_taken_port_is_said_plainly(tmp_path: Path) -> None:
    """`acopio run` with the web UI's port taken printed a 25-line traceback (`acopio serve`
    said it in a line)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("--data-dir", tmp_path / "data", "run", "--roles", "web,inbox",
                       env={"ACOPIO_WEB_HOST": "127.0.0.1", "ACOPIO_WEB_PORT": str(port)},
                       timeout=60)
    said = done.stderr.decode()
    assert done.returncode == 1, said
    assert f"role web cannot start: cannot listen on 127.0.0.1:{port}: Address already in use" \
        in said
    assert "Traceback" not in said, said
