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

The package is split along those lines: `args` (pure templates, argument lists and
constants), `processes` (ffmpeg's identity, signals and spawning), `repair` (fsync and the
repair of killed files), `recorder` (start, stop, recover) and `importing`.
"""

from __future__ import annotations

from ingest.devices.capture.args import (
    AUDIO_FORMATS,
    CLUSTER_MS,
    CONTAINERS,
    DEFAULT_AUDIO_INPUT,
    DEFAULT_VIDEO_INPUT,
    EXTENSIONS,
    KEYFRAME_S,
    KILL_TIMEOUT_S,
    PLACEHOLDERS,
    START_CHECK_S,
    STOP_TIMEOUT_S,
    TERM_TIMEOUT_S,
    AudioFormat,
    CaptureKind,
    Container,
    RecordError,
    RecordingStatus,
    alsa_card,
    capture_args,
    capture_kind,
    check_device_id,
    check_input_template,
    device_values,
    input_args,
    output_format,
    recording_name,
)
from ingest.devices.capture.importing import import_recording
from ingest.devices.capture.processes import (
    ProcessId,
    boot_id,
    end_process,
    identify,
    is_running,
    log_tail,
    open_pidfd,
    proc_stat,
    process_state,
    reap,
    spawn,
    wait_exit,
)
from ingest.devices.capture.recorder import Recorder, Recording, log_path
from ingest.devices.capture.repair import (
    container_of,
    content_hash,
    content_hash_args,
    finalize,
    fsync_file,
    probe_args,
    probe_duration,
    repair_args,
    sweep_repairs,
)

__all__ = [
    "AUDIO_FORMATS", "CLUSTER_MS", "CONTAINERS", "DEFAULT_AUDIO_INPUT", "DEFAULT_VIDEO_INPUT",
    "EXTENSIONS", "KEYFRAME_S", "KILL_TIMEOUT_S", "PLACEHOLDERS", "START_CHECK_S",
    "STOP_TIMEOUT_S", "TERM_TIMEOUT_S", "AudioFormat", "CaptureKind", "Container",
    "ProcessId", "RecordError", "Recorder", "Recording", "RecordingStatus", "alsa_card",
    "boot_id", "capture_args", "capture_kind", "check_device_id", "check_input_template",
    "container_of", "content_hash", "content_hash_args", "device_values", "end_process",
    "finalize", "fsync_file", "identify", "import_recording", "input_args", "is_running",
    "log_path", "log_tail", "open_pidfd", "output_format", "probe_args", "probe_duration",
    "proc_stat", "process_state", "reap", "recording_name", "repair_args", "spawn",
    "sweep_repairs", "wait_exit",
]
