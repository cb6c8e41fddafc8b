"""Video and audio derivatives: a poster frame, a 720p H.264/AAC proxy, an AAC audio proxy and a
waveform picture, so that any browser can show and play what the archive holds.

Why it is split this way: the ffmpeg command lines are pure functions of their inputs (tested
and audited without running anything), and every run goes through ingest.derive.ffmpeg, which
owns safety (input whitelists, timeout, nice, temp file and rename). The jobs' functions here
only join the two.

Rotation: phones store the picture as shot plus a display matrix. ffmpeg 5.1 turns the decoded
frames by that matrix (``-autorotate``, its default, stated explicitly here) and then writes an
identity matrix, so the output is upright with nothing left for a player to turn again. Turning
by hand instead is not possible in 5.1: with ``-noautorotate`` the matrix is copied to the
output and ``-metadata:s:v rotate=0`` does not clear it (measured), so a player would turn the
already turned picture. The ``rotation`` the catalog recorded (from the same matrix) is
therefore checked, not applied twice.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from ingest.derive.ffmpeg import FFmpegError, output_target, run_ffmpeg, safe_input
from ingest.metadata.children import run_child, stderr_text

# The Raspberry Pi 4's H.264 encoder (bcm2835-codec); the Pi 5 has none.
PI_ENCODER_DEVICE = "/dev/video11"
ENCODERS_TIMEOUT_S = 10.0
AUDIO_FORMAT = "aformat=channel_layouts=mono|stereo:sample_rates=44100|48000"
# showwavespic keeps every sample until the end: mono at 8 kHz keeps an hour in about 60 MB.
WAVEFORM_INPUT = "aformat=channel_layouts=mono:sample_rates=8000"
WAVEFORM_COLOR = "0x2f6fdb"
POSTER_MAX_SEEK_S = 5.0


# ---------------------------------------------------------------------------------------------
# Encoder choice


def parse_encoders(listing: str) -> set[str]:
    """Encoder names from ``ffmpeg -hide_banner -encoders`` (lines like " V....D libx264 ...")."""
    names = set()
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] in "VAS" and parts[1] != "=":
            names.add(parts[1])
    return names


def available_encoders(ffmpeg: str = "ffmpeg") -> set[str]:
    """What this ffmpeg can encode with (asked each call: keep the answer in an Encoders)."""
    try:
        result = run_child(
            [ffmpeg, "-hide_banner", "-encoders"],
            stdin=subprocess.DEVNULL,
            pass_fds=(),
            timeout=ENCODERS_TIMEOUT_S,
        )
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        raise FFmpegError(f"cannot list ffmpeg's encoders: {exc}") from exc
    if result.returncode != 0:
        raise FFmpegError(f"cannot list ffmpeg's encoders: {stderr_text(result.stderr)}")
    return parse_encoders(result.stdout.decode("utf-8", "replace"))


def device_usable(path: str) -> bool:
    """The encoder device exists and this user may open it (group "video" on a Pi)."""
    return os.access(path, os.R_OK | os.W_OK)


def choose_encoder(available: set[str], has_device: Callable[[str], bool]) -> tuple[str, list[str]]:
    """The H.264 encoder for proxies and its options: the Pi 4's hardware encoder when ffmpeg
    has it and the device is there, else libx264 (quality-based, fast preset)."""
    if "h264_v4l2m2m" in available and has_device(PI_ENCODER_DEVICE):
        # A hardware encoder has no CRF: a bitrate generous for 720p, a keyframe every ~2 s
        # (ffmpeg's default GOP of 12 frames would waste the bitrate on keyframes).
        return "h264_v4l2m2m", ["-b:v", "4M", "-g", "60"]
    return "libx264", ["-preset", "veryfast", "-crf", "23"]


class Encoders:
    """This box's ffmpeg encoders, asked once per worker (ffmpeg is not upgraded under it)."""

    def __init__(
        self, ffmpeg: str = "ffmpeg", has_device: Callable[[str], bool] = device_usable
    ) -> None:
        self.ffmpeg = ffmpeg
        self._has_device = has_device

    @functools.cached_property
    def available(self) -> set[str]:
        return available_encoders(self.ffmpeg)

    def video(self) -> tuple[str, list[str]]:
        return choose_encoder(self.available, self._has_device)


# ---------------------------------------------------------------------------------------------
# Argument builders (pure)


def _check_rotation(rotation: int) -> None:
    if rotation not in (0, 90, 180, 270):
        raise ValueError(f"rotation must be a clockwise quarter turn, not {rotation!r}")


def fit_filter(width: int, height: int) -> str:
    """Scale to fit a ``width`` x ``height`` box (turned for portrait pictures), never up, keeping
    the displayed aspect (non-square pixels become square) and even sizes, as H.264 needs."""
    dw = "(iw*sar)"  # displayed width
    portrait = f"lt({dw},ih)"
    box_w = f"if({portrait},{height},{width})"
    box_h = f"if({portrait},{width},{height})"
    factor = f"min(1,min({box_w}/{dw},{box_h}/ih))"
    w = f"max(2,2*round({dw}*{factor}/2))"
    h = f"max(2,2*round(ih*{factor}/2))"
    return f"scale=w='{w}':h='{h}',setsar=1"


def poster_time(duration: float | None) -> float:
    """Where the poster frame is taken: a tenth in (past black openings), at most 5 s."""
    if not duration or duration <= 0:
        return 0.0
    return min(duration / 10, POSTER_MAX_SEEK_S)


def poster_args(
    src: Path, dst: Path, *, at_s: float, rotation: int, width: int = 1280, height: int = 720
) -> list[str]:
    """One upright frame at ``at_s`` as JPEG (``dst`` ending .jpg/.jpeg) or PNG."""
    _check_rotation(rotation)
    suffix = dst.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        codec = ["-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p"]
    elif suffix == ".png":
        codec = ["-c:v", "png"]
    else:
        raise ValueError(f"a poster is a .jpg or a .png, not {dst.name}")
    return [
        "-autorotate", "1",
        *safe_input(src, seek_s=at_s),
        "-map", "0:v:0",
        "-frames:v", "1",
        "-vf", fit_filter(width, height),
        *codec,
        "-map_metadata", "-1",
        "-f", "image2", "-update", "1",
        output_target(dst),
    ]  # fmt: skip


def video_proxy_args(
    src: Path,
    dst: Path,
    *,
    encoder: tuple[str, list[str]],
    width: int = 1280,
    height: int = 720,
    has_audio: bool | None,
    rotation: int,
) -> list[str]:
    """A browser-playable MP4: H.264 yuv420p fitting 1280x720 (720x1280 for portrait), AAC,
    moov first (faststart) so playback starts before the download ends.

    ``has_audio`` None means "the first audio stream, if there is one".
    """
    _check_rotation(rotation)
    name, options = encoder
    if has_audio is False:
        audio = ["-an"]
    else:
        audio = ["-map", "0:a:0" if has_audio else "0:a:0?", "-af", AUDIO_FORMAT]
        audio += ["-c:a", "aac", "-b:a", "128k"]
    return [
        "-autorotate", "1",
        *safe_input(src),
        "-map", "0:v:0",
        "-vf", f"{fit_filter(width, height)},format=yuv420p",
        "-c:v", name, *options, "-pix_fmt", "yuv420p",
        *audio,
        "-sn", "-dn", "-map_metadata", "-1", "-map_chapters", "-1",
        "-movflags", "+faststart",
        "-f", "mp4",
        output_target(dst),
    ]  # fmt: skip


def audio_proxy_args(src: Path, dst: Path) -> list[str]:
    """AAC 128k in an .m4a (every browser plays it): mono or stereo as recorded (more channels
    are mixed down to stereo), 44.1 or 48 kHz (other rates go to the nearer one)."""
    return [
        *safe_input(src),
        "-map", "0:a:0",
        "-af", AUDIO_FORMAT,
        "-c:a", "aac", "-b:a", "128k",
        "-map_metadata", "-1", "-map_chapters", "-1",
        "-movflags", "+faststart",
        "-f", "ipod",
        output_target(dst),
    ]  # fmt: skip


def waveform_args(src: Path, dst: Path, width: int = 1200, height: int = 200) -> list[str]:
    """A PNG of the first audio stream's waveform: one blue wave on a transparent background,
    square-root scaled so that quiet speech still shows."""
    wave = f"showwavespic=s={width}x{height}:colors={WAVEFORM_COLOR}:scale=sqrt:filter=peak"
    return [
        *safe_input(src),
        "-filter_complex", f"[0:a:0]{WAVEFORM_INPUT},{wave}[wave]",
        "-map", "[wave]",
        "-frames:v", "1",
        "-c:v", "png",
        "-f", "image2", "-update", "1",
        output_target(dst),
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The jobs' functions


def make_poster(
    src: Path, dst: Path, *, duration: float | None, rotation: int, timeout: float,
    ffmpeg: str = "ffmpeg",
) -> None:  # fmt: skip
    """Write the poster frame; from the start when the chosen moment has no frame (a duration
    longer than the real stream)."""
    src, dst = Path(src).absolute(), Path(dst).absolute()
    at_s = poster_time(duration)
    try:
        _run(poster_args(src, dst, at_s=at_s, rotation=rotation), dst, None, timeout, ffmpeg)
    except FFmpegError as exc:
        if at_s == 0 or exc.timed_out or exc.returncode is not None:
            raise
        _run(poster_args(src, dst, at_s=0, rotation=rotation), dst, None, timeout, ffmpeg)


def make_video_proxy(
    src: Path,
    dst: Path,
    *,
    duration: float | None,
    rotation: int,
    encoder: tuple[str, list[str]],
    timeout: float,
    has_audio: bool | None = None,
    progress: Callable[[float], None] | None = None,
    ffmpeg: str = "ffmpeg",
) -> None:
    """Write the 720p H.264/AAC proxy; ``progress`` hears percents of ``duration``."""
    src, dst = Path(src).absolute(), Path(dst).absolute()
    args = video_proxy_args(src, dst, encoder=encoder, has_audio=has_audio, rotation=rotation)
    run_ffmpeg(
        args, output=dst, duration_s=duration, timeout_s=timeout, progress=progress, ffmpeg=ffmpeg
    )


def make_audio_proxy(
    src: Path,
    dst: Path,
    *,
    duration: float | None,
    timeout: float,
    progress: Callable[[float], None] | None = None,
    ffmpeg: str = "ffmpeg",
) -> None:
    """Write the AAC .m4a proxy."""
    src, dst = Path(src).absolute(), Path(dst).absolute()
    run_ffmpeg(
        audio_proxy_args(src, dst),
        output=dst,
        duration_s=duration,
        timeout_s=timeout,
        progress=progress,
        ffmpeg=ffmpeg,
    )


def make_waveform(
    src: Path, dst: Path, *, timeout: float, width: int = 1200, height: int = 200,
    ffmpeg: str = "ffmpeg",
) -> None:  # fmt: skip
    """Write the waveform PNG."""
    src, dst = Path(src).absolute(), Path(dst).absolute()
    _run(waveform_args(src, dst, width, height), dst, None, timeout, ffmpeg)


def _run(args: list[str], dst: Path, duration: float | None, timeout: float, ffmpeg: str) -> None:
    run_ffmpeg(
        args, output=dst, duration_s=duration, timeout_s=timeout, progress=None, ffmpeg=ffmpeg
    )
