"""Pure parts of recording: ffmpeg input templates, argument lists, names and constants."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Literal

from appliance import templates
from ingest.devices.state import Device

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
