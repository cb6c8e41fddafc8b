"""Running the child programs that read media (ffprobe, exiftool) safely.

Why: a file on a card is hostile input and the programs that parse it are large. Each child
gets an argument list, never a shell; the file only as a duplicate of the caller's descriptor
(as stdin, or kept open with ``pass_fds``), never by name; a timeout; and its own process group,
so that a hung program and anything it started are killed together.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator


@contextlib.contextmanager
def child_fd(fd: int) -> Iterator[int]:
    """A close-on-exec duplicate of ``fd`` numbered 3 or above, safe to hand to a child.

    Numbers 0-2 would be overwritten by the child's stdin/stdout/stderr.
    """
    child = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    try:
        yield child
    finally:
        os.close(child)


def find_program(name: str) -> str:
    """The full path of a program on PATH; RuntimeError (naming it) when it is not installed."""
    program = shutil.which(name)
    if program is None:
        raise RuntimeError(f"{name} is not installed (not found on PATH); Acopio needs it")
    return program


@contextlib.contextmanager
def child_group(
    args: list[str], *, stdin: int, stdout: int, stderr: int, pass_fds: tuple[int, ...] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a program (found on PATH) as the leader of its own process group.

    For callers that talk to the child while it runs (run_child only waits for it). If the body
    raises (its own timeout, an interrupt, a bug), the whole group is killed and the child
    reaped before the exception goes on. Raises RuntimeError when the program is not installed.
    """
    program = find_program(args[0])
    with subprocess.Popen(
        args,
        executable=program,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        pass_fds=pass_fds,
        start_new_session=True,  # own process group: killpg reaches anything it started
    ) as proc:
        try:
            yield proc
        except BaseException:
            _kill_group(proc.pid)
            proc.communicate()  # reap it and drain the pipes
            raise


def run_child(
    args: list[str], *, stdin: int, pass_fds: tuple[int, ...], timeout: float
) -> subprocess.CompletedProcess[bytes]:
    """Run a program (found on PATH) with a timeout; on timeout its whole group is killed.

    Raises RuntimeError when the program is not installed, subprocess.TimeoutExpired on timeout.
    """
    with child_group(
        args, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=pass_fds
    ) as proc:
        out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group already exited: nothing to kill
        os.killpg(pgid, signal.SIGKILL)


def stderr_text(stderr: bytes | str | None) -> str:
    """A child's error output as one short line for a problem's detail."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    return "; ".join(lines)[:300] if lines else "no error message"
