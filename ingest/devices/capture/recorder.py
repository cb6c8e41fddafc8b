"""The recorder: starts, stops and recovers recordings, tracked in `state/recordings.json`."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinydb import Query

from appliance import storage
from appliance.agenda import check_slug
from appliance.datadir import DataDir
from appliance.fsutil import file_lock, fsync_dir
from ingest.devices.capture.args import (
    DEFAULT_AUDIO_INPUT,
    DEFAULT_VIDEO_INPUT,
    START_CHECK_S,
    STOP_TIMEOUT_S,
    CaptureKind,
    RecordError,
    RecordingStatus,
    capture_args,
    capture_kind,
    check_device_id,
    check_input_template,
    device_values,
    output_format,
    recording_name,
)
from ingest.devices.capture.processes import (
    ProcessId,
    boot_id,
    end_process,
    identify,
    is_running,
    log_tail,
    spawn,
)
from ingest.devices.capture.repair import container_of, finalize, fsync_file, sweep_repairs
from ingest.devices.state import Device

if TYPE_CHECKING:
    from appliance.config import Config

logger = logging.getLogger("ingest.devices.capture")  # one logger name, as before the split

_ACTIVE, _FINISHED = "recordings", "finished"


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
