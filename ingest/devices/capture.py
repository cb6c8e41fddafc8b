"""Recording from microphones (ALSA) and webcams (V4L2) with ffmpeg, safe against crashes.

`acopio record start` and `acopio record stop` are separate processes, and the box can lose
power or have the microphone pulled mid-interview; so ffmpeg runs detached (own session,
stdin /dev/null, stderr to a log beside the recording) and is tracked in a small crash-safe
state file, `state/recordings.json`. Each entry keeps the pid with the process's start time
(from /proc/<pid>/stat) and the boot id, and every signal goes through a pidfd opened only
after that identity matched: a recycled pid is never signalled.

Why these formats (measured with ffmpeg 5.1 on this machine kind; kill -9 after ~4 s):

* FLAC with `-flush_packets 1` loses nothing measurable: the killed file decodes to the same
  length as a cleanly stopped one. Without the flag the killed file was 0 bytes (avio buffers).
  FLAC keeps its sample count in STREAMINFO, rewritten only at the end, so a killed file has
  no duration for ffprobe (it still decodes whole). `finalize()` repairs that by re-encoding
  FLAC to FLAC (lossless) and replaces the file only when the decoded audio hashes the same.
* WAV with `-flush_packets 1` also loses nothing: ffmpeg writes 0xFFFFFFFF placeholder sizes
  (the streaming-WAV convention), so ffmpeg and ffprobe read a killed file to its end with the
  right duration; strict readers (Python's `wave`) see a bogus frame count. `-rf64 auto` lifts
  the 4 GiB limit of plain WAV. No repair is attempted (it would lose the bext capture time).
* Matroska (H.264 ultrafast, FLAC audio) is streamable, but the muxer builds each cluster in
  memory and writes it when it closes (after 5 s on a seekable file, or at a keyframe, which
  x264 makes every 250 frames): killed after 4 s the file held 569 bytes and did not decode.
  With `-cluster_time_limit 500` and `-flush_packets 1` a killed file decodes to within about
  0.5 s of a clean stop (1000 ms: ~0.9 s lost; without -flush_packets: 0 bytes). The killed
  file has no duration or cues; `finalize()` remuxes it (stream copy) and replaces it only
  when every stream's packets hash the same.

So one growing file per recording, no segments: nothing to concatenate, and the importer
sees exactly one item. A stop sends SIGINT (ffmpeg finalizes headers and index), escalates to
SIGTERM then SIGKILL, then finalizes and fsyncs the file.

The finished file is imported through the normal verified pipeline by `import_recording()`,
from its folder as a source offering only that file, and deleted only once the pipeline
reports it committed to the catalog and the archive holds it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tinydb import Query

from appliance import storage, templates
from appliance.agenda import check_slug
from appliance.catalog import Catalog
from appliance.datadir import DataDir
from appliance.fsutil import file_lock, fsync_dir
from ingest.devices.state import Device
from ingest.pipeline import Importer, Outcome, Reporter, Summary
from ingest.sources import FolderSource
from ingest.walk import Scan

if TYPE_CHECKING:
    from appliance.config import Config

logger = logging.getLogger(__name__)

CaptureKind = Literal["microphone", "webcam"]
AudioFormat = Literal["flac", "wav"]
Container = Literal["flac", "wav", "matroska"]
RecordingStatus = Literal["recording", "ended"]

DEFAULT_AUDIO_INPUT = "-f alsa -i hw:{card}"
DEFAULT_VIDEO_INPUT = "-f v4l2 -i {device}"
AUDIO_FORMATS: tuple[AudioFormat, ...] = ("flac", "wav")
PLACEHOLDERS = ("card", "device")
EXTENSIONS: Mapping[Container, str] = {"flac": ".flac", "wav": ".wav", "matroska": ".mkv"}
CONTAINERS: Mapping[str, Container] = {ext: fmt for fmt, ext in EXTENSIONS.items()}

STOP_TIMEOUT_S = 10.0  # SIGINT: ffmpeg writes its trailer (FLAC STREAMINFO, Matroska cues)
TERM_TIMEOUT_S = 5.0
KILL_TIMEOUT_S = 5.0
START_CHECK_S = 5.0  # how long start() waits for the output file to appear
CLUSTER_MS = 500  # Matroska cluster length: about the most video a crash can lose
KEYFRAME_S = 2  # H.264 keyframe interval, in seconds whatever the webcam's frame rate

_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ALSA_CARD = re.compile(r"(?:^|/)(?:card|controlC|pcmC)(\d+)(?:D\d+[cp])?$")
# Signals an interpreter may ignore (Python ignores SIGPIPE): reset so ffmpeg sees defaults.
_RESET_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE,
                  signal.SIGXFSZ)
_ACTIVE, _FINISHED = "recordings", "finished"
_REPAIR_PREFIX = ".repair-"


class RecordError(Exception):
    """A recording cannot start or stop; the message says why and what to do."""


# -- pure: templates and argument lists ---------------------------------------------------


def check_input_template(template: str) -> str | None:
    """Why `template` is not a usable ffmpeg input template, or None (for config checks)."""
    return templates.problem(template, PLACEHOLDERS, required=("-i",))


def input_args(template: str, values: Mapping[str, str]) -> list[str]:
    """Split `template` with shlex, then fill {card}/{device} inside each argument.

    Substituting after splitting means a value (a device name from udev) can never add or
    remove arguments: `0 -i /etc/passwd` stays one argument.
    """
    problem = check_input_template(template)
    if problem:
        raise RecordError(f"capture input template {template!r}: {problem}")
    try:
        return templates.fill(template, values)
    except templates.TemplateError as exc:
        raise RecordError(f"capture input template: {exc}; this device does not have it") \
            from None


def output_format(kind: CaptureKind, audio_format: str) -> Container:
    """The container a capture device records into."""
    if kind == "webcam":
        return "matroska"
    if audio_format not in AUDIO_FORMATS:
        raise RecordError(f"unknown audio format {audio_format!r}: use flac or wav")
    return "flac" if audio_format == "flac" else "wav"


def capture_args(
    input_template: str,
    values: Mapping[str, str],
    output: Path,
    kind: CaptureKind,
    fmt: Container,
    *,
    started: datetime | None = None,
    zone: tzinfo = UTC,
    ffmpeg: str = "ffmpeg",
) -> list[str]:
    """The whole ffmpeg command line for one recording; pure, so it can be tested.

    Never -y: -n makes ffmpeg refuse an existing output. The output is given as `file:` so a
    name can never be read as another protocol.
    """
    if (kind == "webcam") != (fmt == "matroska"):
        raise RecordError(f"a {kind} cannot record into {fmt}")
    return [
        ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error", "-n",
        *input_args(input_template, values),
        *_codec_args(fmt),
        *_metadata_args(fmt, started, zone),
        "-flush_packets", "1",
        "-f", fmt,
        f"file:{output}",
    ]


def _codec_args(fmt: Container) -> list[str]:
    if fmt == "flac":
        return ["-c:a", "flac"]
    if fmt == "wav":
        return ["-c:a", "pcm_s16le", "-rf64", "auto"]
    return [
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-force_key_frames", f"expr:gte(t,n_forced*{KEYFRAME_S})",
        "-c:a", "flac",
        "-cluster_time_limit", str(CLUSTER_MS),
    ]


def _metadata_args(fmt: Container, started: datetime | None, zone: tzinfo) -> list[str]:
    """The capture time, where the ingest's metadata reader looks for it."""
    if started is None:
        return []
    if fmt == "wav":  # bext origination: local time, as the broadcast WAV standard says
        local = started.astimezone(zone)
        return ["-write_bext", "1",
                "-metadata", f"origination_date={local:%Y-%m-%d}",
                "-metadata", f"origination_time={local:%H:%M:%S}"]
    utc = started.astimezone(UTC)
    return ["-metadata", f"creation_time={utc:%Y-%m-%dT%H:%M:%S.%f}Z"]


def recording_name(device_id: str, started: datetime, zone: tzinfo, fmt: Container) -> str:
    """`YYYYMMDD-HHMMSS_<device-id>.<ext>`, in the kit's local time."""
    return f"{started.astimezone(zone):%Y%m%d-%H%M%S}_{device_id}{EXTENSIONS[fmt]}"


def check_device_id(device_id: str) -> str:
    """Device ids become folder names: only kernel-name characters are allowed."""
    if not _DEVICE_ID.fullmatch(device_id):
        raise RecordError(f"device id {device_id!r} cannot name a recordings folder")
    return device_id


def alsa_card(device: Device) -> str | None:
    """The ALSA card number: the digits of `card1` (the kernel name udev gives a sound card),
    looked for in the id, the udev DEVPATH/DEVNAME properties, the sysfs path and the node."""
    candidates = (device.id, device.properties.get("DEVPATH", ""), device.syspath,
                  device.properties.get("DEVNAME", ""), device.devnode)
    for text in candidates:
        match = _ALSA_CARD.search(text or "")
        if match:
            return match.group(1)
    return None


def device_values(device: Device) -> dict[str, str]:
    """The placeholder values a device offers: {card} for ALSA, {device} for its node."""
    values: dict[str, str] = {}
    card = alsa_card(device)
    if card is not None:
        values["card"] = card
    if device.devnode:
        if not device.devnode.startswith("/"):
            raise RecordError(f"device {device.id} has a relative node {device.devnode!r}")
        values["device"] = device.devnode
    return values


def capture_kind(device: Device) -> CaptureKind:
    if device.kind == "microphone":
        return "microphone"
    if device.kind == "webcam":
        return "webcam"
    raise RecordError(f"device {device.id} is a {device.kind}, not a microphone or webcam")


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
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
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


# -- the recorder -----------------------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    device_id: str
    kind: CaptureKind
    activity: str | None
    output: Path
    started_at: str  # ISO 8601, UTC
    process: ProcessId
    status: RecordingStatus = "recording"  # "ended": ffmpeg exited without a stop

    @property
    def log(self) -> Path:
        return log_path(self.output)

    def as_dict(self) -> dict[str, Any]:
        """For `acopio record list --json` and the web UI."""
        return {"device_id": self.device_id, "kind": self.kind, "activity": self.activity,
                "output": str(self.output), "started_at": self.started_at,
                "pid": self.process.pid, "status": self.status}

    def to_record(self, root: Path) -> dict[str, Any]:
        return {"device_id": self.device_id, "kind": self.kind, "activity": self.activity,
                "output": self.output.relative_to(root).as_posix(),
                "started_at": self.started_at, "pid": self.process.pid,
                "proc_start": self.process.start, "boot_id": self.process.boot_id}

    @classmethod
    def from_record(cls, row: Mapping[str, Any], root: Path) -> Recording:
        process = ProcessId(int(row["pid"]), int(row["proc_start"]), str(row["boot_id"]))
        return cls(str(row["device_id"]), row["kind"], row.get("activity"),
                   root / row["output"], str(row["started_at"]), process)


def log_path(output: Path) -> Path:
    return output.with_name(output.stem + ".log")


def _state_path(data: DataDir) -> Path:
    return data.state / "recordings.json"


@contextlib.contextmanager
def _files_lock(data: DataDir) -> Iterator[None]:
    """Serialises what touches finished files: stop's finalize, recover, import."""
    with file_lock(data.state / "recordings.files.lock"):
        yield


def _now() -> datetime:
    return datetime.now(UTC)


class Recorder:
    """Start, stop and recover recordings; every method is safe from separate processes."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        audio_input: str = DEFAULT_AUDIO_INPUT,
        video_input: str = DEFAULT_VIDEO_INPUT,
        audio_format: str = "flac",
        zone: tzinfo,
        ffmpeg: str = "ffmpeg",
        ffprobe: str = "ffprobe",
        stop_timeout: float = STOP_TIMEOUT_S,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        for name, template in (("audio_input", audio_input), ("video_input", video_input)):
            problem = check_input_template(template)
            if problem:
                raise RecordError(f"devices.{name} {template!r}: {problem}")
        output_format("microphone", audio_format)  # validates it
        self.data = DataDir.at(data_dir)
        self.root = self.data.recordings
        self.state_path = _state_path(self.data)
        self.audio_input = audio_input
        self.video_input = video_input
        self.audio_format = audio_format
        self.zone = zone
        self.ffmpeg = ffmpeg
        self.ffprobe = ffprobe
        self.stop_timeout = stop_timeout
        self.clock = clock

    @classmethod
    def from_config(cls, config: Config) -> Recorder:
        devices = config.devices  # the [devices] section
        return cls(config.data_dir, audio_input=devices.audio_input,
                   video_input=devices.video_input, audio_format=devices.audio_format,
                   zone=config.zone)

    # -- start ------------------------------------------------------------------------

    def start(self, device: Device, activity: str | None = None) -> Recording:
        kind = capture_kind(device)
        check_device_id(device.id)
        if device.status in ("removed", "removed_early"):
            raise RecordError(f"device {device.id} is not attached ({device.status})")
        if activity is not None:
            check_slug(activity)
        fmt = output_format(kind, self.audio_format)
        started = self.clock()
        output = self.root / device.id / recording_name(device.id, started, self.zone, fmt)
        template = self.audio_input if kind == "microphone" else self.video_input
        args = capture_args(template, device_values(device), output, kind, fmt,
                            started=started, zone=self.zone, ffmpeg=self.ffmpeg)
        recording = self._launch_tracked(device.id, kind, activity, output, args, started)
        self._confirm_started(recording)
        return recording

    def _launch_tracked(self, device_id: str, kind: CaptureKind, activity: str | None,
                        output: Path, args: list[str], started: datetime) -> Recording:
        """Check, spawn and record under the state lock: two starts cannot both succeed."""
        launched: Recording | None = None
        try:
            with storage.transaction(self.state_path, self.data.tmp) as db:
                self._refuse_if_recording(db, device_id)
                output.parent.mkdir(parents=True, exist_ok=True)
                if output.exists():
                    raise RecordError(f"{output} already exists; refusing to overwrite it "
                                      "(wait a second and start again)")
                pid = spawn(args, log_path(output))
                process = identify(pid) or ProcessId(pid, -1, boot_id())
                launched = Recording(device_id, kind, activity, output,
                                     started.astimezone(UTC).isoformat(), process)
                db.table(_ACTIVE).insert(launched.to_record(self.data.root))
        except BaseException:
            if launched is not None:
                end_process(launched.process, 0)
            raise
        return launched

    def _refuse_if_recording(self, db: Any, device_id: str) -> None:
        row = db.table(_ACTIVE).get(Query().device_id == device_id)
        if row is None:
            return
        old = Recording.from_record(row, self.data.root)
        if is_running(old.process):
            raise RecordError(f"device {device_id} is already recording since "
                              f"{old.started_at} into {old.output}; stop it first")
        logger.warning("recording %s had ended on its own; kept for recover()", old.output)
        self._retire(db, old, "ended")

    def _confirm_started(self, recording: Recording) -> None:
        """Wait until ffmpeg creates the output; if it dies first, say why."""
        deadline = time.monotonic() + START_CHECK_S
        while time.monotonic() < deadline:
            if not is_running(recording.process):
                self._failed_start(recording)
            if recording.output.exists():
                return
            time.sleep(0.05)

    def _failed_start(self, recording: Recording) -> None:
        end_process(recording.process, 0)  # already gone: only reaps it
        has_data = _has_data(recording.output)
        with storage.transaction(self.state_path, self.data.tmp) as db:
            db.table(_ACTIVE).remove(Query().output == self._rel(recording.output))
            if has_data:
                self._retire(db, recording, "ended")
        message = log_tail(recording.log) or "no message"
        if has_data:
            kept = f"; what it wrote is kept in {recording.output} (log: {recording.log})"
        else:  # nothing recorded: the message above is all the log holds
            kept = ""
            _unlink_if_empty(recording.output)
            recording.log.unlink(missing_ok=True)
        raise RecordError(f"ffmpeg stopped at once for {recording.device_id}{kept}: {message}")

    # -- stop -------------------------------------------------------------------------

    def stop(self, device_id: str) -> Path:
        """Stop the device's recording; the finished, fsynced file, ready for import.

        A recording whose ffmpeg had already ended on its own (device unplugged) is
        finalized and returned the same way.
        """
        recording = self._get(device_id)
        if recording is None:
            raise RecordError(f"device {device_id} is not recording")
        how = end_process(recording.process, self.stop_timeout)
        if how != "stopped":
            logger.warning("recording %s: ffmpeg %s", recording.output, how)
        with _files_lock(self.data):
            has_data = self._finish_file(recording.output)
            with storage.transaction(self.state_path, self.data.tmp) as db:
                db.table(_ACTIVE).remove(Query().output == self._rel(recording.output))
                if has_data:
                    self._retire(db, recording, how)
        if not has_data:
            raise RecordError(f"the recording of {device_id} holds no data: "
                              f"{log_tail(recording.log) or 'no message'} "
                              f"(log: {recording.log})")
        return recording.output

    def _finish_file(self, output: Path) -> bool:
        """Make the file durable (and repaired after a kill); False when it holds nothing."""
        if not _has_data(output):
            _unlink_if_empty(output)
            return False
        finalize(output, self.ffmpeg, self.ffprobe)
        fsync_file(output)
        fsync_dir(output.parent)
        return True

    # -- listing ----------------------------------------------------------------------

    def active(self) -> list[Recording]:
        """Every tracked recording; status "ended" when its ffmpeg is gone (crashed,
        unplugged, killed, power lost) so `recover()` must collect its file."""
        rows = storage.snapshot(self.state_path).table(_ACTIVE).all()
        recordings = [Recording.from_record(row, self.data.root) for row in rows]
        return sorted(
            (r if is_running(r.process) else replace(r, status="ended") for r in recordings),
            key=lambda r: r.device_id,
        )

    def activity_for(self, path: Path) -> str | None:
        """The activity a finished recording was started for (None if unknown)."""
        rel = self._rel(Path(path).absolute())
        row = storage.snapshot(self.state_path).table(_FINISHED).get(Query().output == rel)
        return row.get("activity") if row else None

    # -- recover ----------------------------------------------------------------------

    def recover(self) -> list[Path]:
        """Recordings on disk that no live ffmpeg is writing, finalized and ready for
        import: stopped ones whose import failed, and those of a crash or power loss."""
        with _files_lock(self.data):
            for recording in self.active():
                if recording.status == "ended":
                    self._collect_ended(recording)
            files = [p for p in self._idle_files() if self._finish_file(p)]
            self._prune_finished(files)
            return files

    def _idle_files(self) -> list[Path]:
        """Recording files no tracked ffmpeg writes. Listed under the state lock, which start()
        holds from spawning ffmpeg to recording it: a new recording is never mistaken for an
        abandoned one (and "repaired" under ffmpeg's feet)."""
        with storage.transaction(self.state_path, self.data.tmp) as db:
            tracked = {self.data.root / row["output"] for row in db.table(_ACTIVE).all()}
            return [path for path in self._files() if path not in tracked]

    def _collect_ended(self, recording: Recording) -> None:
        end_process(recording.process, 0)  # already gone: only reaps a zombie child
        logger.warning("recording %s ended without a stop (ffmpeg died): %s",
                       recording.output, log_tail(recording.log) or "no message")
        with storage.transaction(self.state_path, self.data.tmp) as db:
            db.table(_ACTIVE).remove(Query().output == self._rel(recording.output))
            self._retire(db, recording, "ended")

    def _files(self) -> list[Path]:
        """Recording files in the device folders (no logs, no hidden names), repair debris
        swept on the way."""
        if not self.root.is_dir():
            return []
        files: list[Path] = []
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            sweep_repairs(folder)
            files.extend(path for path in sorted(folder.iterdir())
                         if path.is_file() and not path.name.startswith(".")
                         and container_of(path))
        return files

    def _prune_finished(self, files: list[Path]) -> None:
        keep = {self._rel(p) for p in files}
        with storage.transaction(self.state_path, self.data.tmp) as db:
            db.table(_FINISHED).remove(Query().output.test(lambda rel: rel not in keep))

    # -- state helpers ----------------------------------------------------------------

    def _get(self, device_id: str) -> Recording | None:
        row = storage.snapshot(self.state_path).table(_ACTIVE).get(
            Query().device_id == device_id)
        return None if row is None else Recording.from_record(row, self.data.root)

    def _retire(self, db: Any, recording: Recording, how: str) -> None:
        """Remember a finished recording's activity until it is imported."""
        rel = self._rel(recording.output)
        db.table(_FINISHED).upsert(
            {"output": rel, "device_id": recording.device_id, "activity": recording.activity,
             "started_at": recording.started_at, "ended_at": _now().isoformat(), "ended": how},
            Query().output == rel,
        )

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.data.root).as_posix()


def _has_data(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def _unlink_if_empty(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size == 0:
            path.unlink()


# -- import -----------------------------------------------------------------------------


class _OneFile(FolderSource):
    """The recording's folder as an import source that offers only the recording: the other
    files there (its log, an older recording awaiting recover) are not part of this import."""

    def __init__(self, path: Path) -> None:
        super().__init__(path.parent)
        self.name = os.fsencode(path.name)

    def scan(self, extra_clutter: tuple[str, ...] = ()) -> Scan:
        found = super().scan(extra_clutter)
        return Scan(files=[f for f in found.files if f.rel == self.name])


class _Committed(Reporter):
    """Keeps the outcomes the pipeline reports as safely in the catalog."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def committed(self, outcomes: list[Outcome]) -> None:
        self.outcomes.extend(outcomes)


def import_recording(config: Config, path: str | os.PathLike[str],
                     activity: str | None) -> Summary:
    """Import one finished recording through the verified pipeline; delete it only once the
    archive holds it (imported or already there). On failure it stays for `recover()`."""
    data = DataDir.at(config.data_dir)
    with _files_lock(data):
        path = _check_recording_path(data, Path(path))
        reporter = _Committed()
        with _OneFile(path) as source:
            summary = Importer(config, reporter=reporter).run_source(source, activity)
        if _archived(data, summary, reporter.outcomes, path):
            _discard(data, path)
        else:
            logger.warning("recording %s not imported, kept for recover(): %s", path,
                           summary.stopped or [o.reason for o in summary.failed])
    return summary


def _check_recording_path(data: DataDir, path: Path) -> Path:
    path = path.absolute()
    root = data.recordings
    if path.parent.parent != root or container_of(path) is None:
        raise RecordError(f"{path} is not a recording in {root}")
    if not path.is_file():
        raise RecordError(f"recording {path} does not exist")
    rows = storage.snapshot(_state_path(data)).table(_ACTIVE).all()
    for row in rows:
        recording = Recording.from_record(row, data.root)
        if recording.output == path and is_running(recording.process):
            raise RecordError(f"{path} is still being recorded; stop it first")
    return path


def _archived(data: DataDir, summary: Summary, committed: list[Outcome], path: Path) -> bool:
    """True only when the pipeline committed this one file (imported, or already archived)
    and the archive holds a file of its size under the catalog's name for its hash."""
    if not summary.ok or summary.imported + summary.duplicates != 1 or len(committed) != 1:
        return False
    outcome = committed[0]
    if outcome.status not in ("imported", "duplicate") or outcome.rel != os.fsencode(path.name):
        return False
    entry = Catalog(data).lookup(outcome.sha256)
    if not entry:
        return False
    archived = data.root / entry["archive_path"]
    return archived.is_file() and archived.stat().st_size == path.stat().st_size


def _discard(data: DataDir, path: Path) -> None:
    """Delete an archived recording, its log, and its folder once empty."""
    path.unlink()
    with contextlib.suppress(FileNotFoundError):
        log_path(path).unlink()
    fsync_dir(path.parent)
    try:
        path.parent.rmdir()
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    rel = path.relative_to(data.root).as_posix()
    with storage.transaction(_state_path(data), data.tmp) as db:
        db.table(_FINISHED).remove(Query().output == rel)
