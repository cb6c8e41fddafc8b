"""The one place Acopio runs ffmpeg to make a derivative.

Why one helper: every transcode must be polite, bounded and safe on a small box, and must never
leave a half-written file where a finished one is expected. So each run here

* is an argument list, never a shell, under ``nice`` and in its own process group (see
  ingest.metadata.children), with ``setpriv --pdeathsig KILL`` so that ffmpeg dies with its
  worker (kill -9, OOM): otherwise it would carry on alone for minutes, competing with the
  retry of the same job;
* reads its input only through ``safe_input``: the archived original is a trusted path but
  hostile content, so only the "file" protocol and the container demuxers ffprobe may use are
  allowed (a playlist posing as an MP4 reaches neither the network nor other files);
* writes to a temp file beside the output, named with fsutil.TEMP_PREFIX and flocked for as
  long as the worker or ffmpeg lives, fsynced and renamed into place only on success; on any
  failure the temp is removed, and a temp left by a killed worker is debris that the next run
  in that folder removes (fsutil.is_debris);
* ends at a wall-clock timeout with the whole group killed;
* reports progress from ffmpeg's ``-progress`` key=value blocks as a percent of the duration.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from appliance.fsutil import fsync_dir, open_temp, remove_debris
from ingest.metadata.av import _DEMUXERS as PROBE_DEMUXERS
from ingest.metadata.children import child_group, find_program

# ffmpeg writes a progress block every 0.5 s; the caller hears at most this often.
PROGRESS_INTERVAL_S = 0.5
# What is kept of ffmpeg's error output for the error message.
_STDERR_KEEP = 8192


class FFmpegError(Exception):
    """ffmpeg could not make the derivative; ``str()`` is the reason to record for the job.

    ``timed_out`` tells a hang (worth a retry) from a refusal of the file (``returncode``).
    """

    def __init__(self, reason: str, *, returncode: int | None = None, timed_out: bool = False):
        super().__init__(reason)
        self.returncode = returncode
        self.timed_out = timed_out


def safe_input(src: Path, *, seek_s: float | None = None) -> list[str]:
    """The input options for an archived file: file protocol only, known containers only.

    ``src`` must be absolute (Acopio builds it); the ``file:`` prefix keeps a name with a colon
    or a leading dash from being read as a protocol or an option. ``seek_s`` seeks on the input
    (fast, keyframe-based).
    """
    if not src.is_absolute():
        raise ValueError(f"ffmpeg input must be an absolute path, not {src}")
    seek = ["-ss", f"{seek_s:.3f}"] if seek_s else []
    return [
        *seek,
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        ",".join(PROBE_DEMUXERS),
        "-i",
        f"file:{src}",
    ]


def output_target(dst: Path) -> str:
    """How an argument list names its output: always the last argument."""
    if not dst.is_absolute():
        raise ValueError(f"ffmpeg output must be an absolute path, not {dst}")
    return f"file:{dst}"


def check_inputs(args: list[str]) -> None:
    """Refuse an argument list whose inputs did not come from safe_input."""
    for index, arg in enumerate(args):
        if arg != "-i":
            continue
        before = args[:index]
        url = args[index + 1] if index + 1 < len(args) else ""
        whitelisted = any(
            before[i : i + 2] == ["-protocol_whitelist", "file"] for i in range(len(before))
        )
        if not url.startswith("file:") or not whitelisted or "-format_whitelist" not in before:
            raise ValueError(f"ffmpeg input {url!r} is not restricted to the file; use safe_input")


def run_ffmpeg(
    args: list[str],
    *,
    output: Path,
    duration_s: float | None,
    timeout_s: float,
    progress: Callable[[float], None] | None,
    nice: int = 10,
    ffmpeg: str = "ffmpeg",
) -> None:
    """Run ``ffmpeg ARGS`` whose last argument is ``file:<output>``, publishing ``output`` only
    when ffmpeg succeeded.

    ``progress`` gets percents (0-100, rising, at most every PROGRESS_INTERVAL_S) computed from
    ``duration_s``, and 100 once the output is in place. Raises FFmpegError on failure or
    timeout, leaving no temp file and ``output`` as it was (absent, or an earlier version).
    """
    if not args or args[-1] != output_target(output):
        raise ValueError(f"the last ffmpeg argument must be {output_target(output)!r}")
    check_inputs(args)
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_debris(output.parent)  # temps of earlier runs whose worker was killed
    with _locked_temp(output) as (tmp, fd):
        command = _command([*args[:-1], f"file:{tmp}"], ffmpeg=ffmpeg, nice=nice)
        _run(command, fd, _Progress(duration_s, progress), timeout_s)
        if os.fstat(fd).st_size == 0:
            raise FFmpegError("ffmpeg wrote no output (no frame or sample at that point)")
        os.fsync(fd)
        os.replace(tmp, output)  # still flocked: a cleaner cannot take it meanwhile
        fsync_dir(output.parent)
    if progress is not None:
        progress(100.0)


def _command(args: list[str], *, ffmpeg: str, nice: int) -> list[str]:
    """The full command line: parent-death signal, nice, ffmpeg with quiet, parseable output."""
    try:
        setpriv, nice_program, program = (find_program(p) for p in ("setpriv", "nice", ffmpeg))
    except RuntimeError as exc:
        raise FFmpegError(str(exc)) from exc
    wrappers = [setpriv, "--pdeathsig", "KILL", "--", nice_program, "-n", str(nice)]
    quiet = ["-nostdin", "-hide_banner", "-nostats", "-loglevel", "error"]
    return [*wrappers, program, *quiet, "-progress", "pipe:1", "-y", *args]


@contextlib.contextmanager
def _locked_temp(output: Path) -> Iterator[tuple[Path, int]]:
    """A new, flocked temp file beside ``output`` (same suffix, for people reading a listing),
    removed unless the body renamed it into place."""
    # Flocked until the rename; ffmpeg inherits it too (see _run), so a temp whose writer is
    # alive is never taken for debris.
    fd, tmp = open_temp(output.parent, suffix=output.suffix)
    try:
        yield tmp, fd
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    finally:
        os.close(fd)


def _run(command: list[str], lock_fd: int, progress: _Progress, timeout_s: float) -> None:
    """Run ffmpeg to the end or the deadline; FFmpegError unless it exited with 0."""
    stderr = bytearray()
    try:
        with child_group(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(lock_fd,),
        ) as proc:
            _pump(proc, time.monotonic() + timeout_s, progress, stderr)
    except (_Deadline, subprocess.TimeoutExpired):
        raise FFmpegError(f"ffmpeg timed out after {timeout_s:g} s", timed_out=True) from None
    if proc.returncode != 0:
        raise FFmpegError(_failure(proc.returncode, bytes(stderr)), returncode=proc.returncode)


class _Deadline(Exception):
    """The timeout passed while ffmpeg was still running."""


def _pump(
    proc: subprocess.Popen[bytes], deadline: float, progress: _Progress, stderr: bytearray
) -> None:
    """Read ffmpeg's progress (stdout) and errors (stderr) until it exits or time runs out."""
    assert proc.stdout is not None and proc.stderr is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ, progress.feed)
        selector.register(proc.stderr, selectors.EVENT_READ, lambda data: _keep_tail(stderr, data))
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Deadline
            for key, _ in selector.select(remaining):
                data = os.read(key.fd, 65536)
                if data:
                    key.data(data)
                else:
                    selector.unregister(key.fileobj)
    proc.wait(timeout=max(0.0, deadline - time.monotonic()))


def _keep_tail(buffer: bytearray, data: bytes) -> None:
    buffer += data
    del buffer[:-_STDERR_KEEP]


def _failure(returncode: int, stderr: bytes) -> str:
    """The reason to record: how ffmpeg ended and the last lines it wrote."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    tail = "; ".join(lines[-4:])[-400:] or "no error message"
    if returncode < 0:
        return f"ffmpeg was killed by signal {-returncode}: {tail}"
    return f"ffmpeg exited with status {returncode}: {tail}"


@dataclass
class _Progress:
    """Turns ffmpeg's ``-progress`` output into throttled percents for a callback.

    ffmpeg writes blocks of key=value lines, each ending with ``progress=continue`` or
    ``progress=end``; ``out_time_us`` is the output position (``out_time_ms`` is microseconds
    too, despite its name, and is only a fallback).
    """

    duration_s: float | None
    callback: Callable[[float], None] | None
    clock: Callable[[], float] = time.monotonic
    _partial: bytes = b""
    _block: dict[str, str] = field(default_factory=dict)
    _last_percent: float = -1.0
    _last_time: float = float("-inf")

    def feed(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            key, sep, value = line.decode("ascii", "replace").strip().partition("=")
            if not sep:
                continue
            self._block[key] = value
            if key == "progress":
                self._end_block()

    def _end_block(self) -> None:
        percent = self.percent(self._block)
        self._block = {}
        if self.callback is None or percent is None or percent <= self._last_percent:
            return
        now = self.clock()
        if now - self._last_time < PROGRESS_INTERVAL_S:
            return
        self._last_percent, self._last_time = percent, now
        self.callback(percent)

    def percent(self, block: dict[str, str]) -> float | None:
        """How far one block is, below 100 (100 is said once the output is in place)."""
        if not self.duration_s or self.duration_s <= 0:
            return None
        micros = block.get("out_time_us", block.get("out_time_ms", ""))
        try:
            seconds = int(micros) / 1_000_000
        except ValueError:  # "N/A" before the first frame
            return None
        return round(min(max(seconds / self.duration_s * 100, 0.0), 99.9), 1)
