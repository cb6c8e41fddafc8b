"""Files: durability (fsync) and the repair of recordings killed before their trailer."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from appliance.fsutil import fsync_dir
from ingest.devices.capture.args import CONTAINERS, Container, RecordError

logger = logging.getLogger("ingest.devices.capture")  # one logger name, as before the split

_REPAIR_PREFIX = ".repair-"


# -- files: durability and repair -------------------------------------------------------


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def container_of(path: Path) -> Container | None:
    return CONTAINERS.get(path.suffix.lower())


def _read_args(ffmpeg: str, path: Path, fmt: Container) -> list[str]:
    return [ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error",
            "-protocol_whitelist", "file", "-f", fmt, "-i", f"file:{path}"]


def content_hash_args(ffmpeg: str, path: Path, fmt: Container) -> list[str]:
    """What must not change in a repair: decoded samples (FLAC is re-encoded), else the
    packets of every stream (stream copy)."""
    if fmt == "flac":
        return [*_read_args(ffmpeg, path, fmt), "-map", "0:a", "-f", "hash", "-hash",
                "sha256", "-"]
    return [*_read_args(ffmpeg, path, fmt), "-map", "0", "-c", "copy", "-f", "streamhash",
            "-hash", "sha256", "-"]


def repair_args(ffmpeg: str, src: Path, dst: Path, fmt: Container) -> list[str]:
    """Rewrite a killed recording so its headers hold the duration (and Matroska its cues)."""
    codec = ["-c:a", "flac"] if fmt == "flac" else ["-c", "copy"]
    # -map_metadata 0 spelled out: by default ffmpeg drops creation_time, the capture time.
    return [*_read_args(ffmpeg, src, fmt), "-map", "0", "-map_metadata", "0", *codec, "-n",
            "-f", fmt, f"file:{dst}"]


def probe_args(ffprobe: str, path: Path, fmt: Container) -> list[str]:
    return [ffprobe, "-v", "error", "-protocol_whitelist", "file", "-f", fmt,
            "-show_entries", "format=duration", "-of", "default=noprint_wrappers=1:nokey=1",
            f"file:{path}"]


def _work_timeout(path: Path) -> float:
    """Seconds allowed to read or rewrite a recording: a minute plus a second per MiB."""
    return 60.0 + path.stat().st_size / (1024 * 1024)


def _run(args: list[str], timeout: float) -> str:
    """Run a short ffmpeg/ffprobe job; its stdout, or RecordError with its stderr."""
    try:
        result = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True,
                                timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RecordError(f"{args[0]} timed out after {timeout:.0f} s") from exc
    except OSError as exc:
        raise RecordError(f"cannot run {args[0]}: {exc.strerror or exc}") from exc
    if result.returncode != 0:
        detail = result.stderr.decode("utf-8", "replace").strip()
        raise RecordError(f"{args[0]} failed ({result.returncode}): {detail}")
    return result.stdout.decode("utf-8", "replace")


def probe_duration(path: Path, fmt: Container, ffprobe: str = "ffprobe") -> float | None:
    """The duration ffprobe reads from the headers, None when they do not say."""
    out = _run(probe_args(ffprobe, path, fmt), _work_timeout(path)).strip()
    try:
        return float(out.splitlines()[0])
    except (IndexError, ValueError):
        return None  # "N/A": a killed FLAC or Matroska file


def content_hash(path: Path, fmt: Container, ffmpeg: str = "ffmpeg") -> str:
    out = _run(content_hash_args(ffmpeg, path, fmt), _work_timeout(path)).strip()
    if not out:
        raise RecordError(f"ffmpeg printed no hash for {path}")
    return out


def finalize(path: Path, ffmpeg: str = "ffmpeg", ffprobe: str = "ffprobe") -> bool:
    """Give a killed FLAC or Matroska file its duration; True when it was rewritten.

    The rewrite happens in a private folder beside the file and replaces it (rename, fsync)
    only when its content hash equals the original's. Any failure is logged and leaves the
    original as it is: it still decodes and imports, only without a duration in its headers.
    """
    fmt = container_of(path)
    if fmt is None or fmt == "wav" or path.stat().st_size == 0:
        return False
    try:
        if probe_duration(path, fmt, ffprobe) is not None:
            return False
        _repair(path, fmt, ffmpeg, ffprobe)
    except (RecordError, OSError) as exc:
        logger.warning("recording %s kept as it is (no duration in its headers): %s", path, exc)
        return False
    logger.info("recording %s rewritten with its duration after a crash", path)
    return True


def _repair(path: Path, fmt: Container, ffmpeg: str, ffprobe: str) -> None:
    # The flock on the private folder tells sweep_repairs() that this repair is alive.
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=_REPAIR_PREFIX) as tmp, \
            _held_dir_lock(Path(tmp)):
        fixed = Path(tmp) / path.name
        _run(repair_args(ffmpeg, path, fixed, fmt), _work_timeout(path))
        before = content_hash(path, fmt, ffmpeg)
        after = content_hash(fixed, fmt, ffmpeg)
        if before != after:
            raise RecordError(f"the rewritten file differs ({before} != {after})")
        if probe_duration(fixed, fmt, ffprobe) is None:
            raise RecordError("the rewritten file still has no duration")
        fsync_file(fixed)
        os.replace(fixed, path)
        fsync_dir(path.parent)


@contextlib.contextmanager
def _held_dir_lock(folder: Path) -> Iterator[None]:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def sweep_repairs(folder: Path) -> None:
    """Remove repair folders whose writer died (their flock is free)."""
    for tmp in folder.glob(_REPAIR_PREFIX + "*"):
        fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a repair is running now
        finally:
            os.close(fd)
        shutil.rmtree(tmp)
        logger.info("removed %s, left by a repair that did not finish", tmp)
