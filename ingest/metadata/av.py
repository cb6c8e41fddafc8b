"""Video and audio read by ffprobe: duration, size, rotation, creation time, camera, location.

Why it is run this way: ffprobe opens whatever a file points at, and a crafted playlist posing
as a video could reach the network or read other files. So it may only use the "file" protocol
and a fixed list of container demuxers (no hls, concat, image2), it reads a duplicate of the
caller's descriptor as ``file:/proc/self/fd/N`` (it must be able to seek, so not stdin), and it
runs under a timeout in its own process group (see children).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping
from typing import Any

import ffmpeg

from ingest.metadata.children import child_fd, run_child, stderr_text
from ingest.metadata.gps import parse_iso6709
from ingest.metadata.info import MediaInfo, TimeCandidate
from ingest.metadata.times import parse_iso_datetime
from ingest.metadata.values import camera, finite, positive_float, positive_int

# Demuxers ffprobe may use: the containers behind kinds.VIDEO_EXTENSIONS and AUDIO_EXTENSIONS.
# Playlist and indirection formats (hls, concat, image2, ...) are not on the list on purpose.
_MAX_BOXES = 100_000  # top-level boxes walked at most (a hostile file may claim millions)
# Top-level boxes whose end past the file's means frames lost: the media data, the index.
_CUT_MATTERS = frozenset({b"mdat", b"moov", b"moof", b"mfra"})
_FOURCC = re.compile(rb"[a-z0-9 ]{4}|[A-Za-z0-9]{4}")
_DEMUXERS = ("mov", "matroska", "avi", "mpegts", "mpeg", "wav", "w64", "mp3", "flac", "ogg", "aac")


def ffprobe_args(input_url: str) -> list[str]:
    """The ffprobe command line for ``input_url``; pure, so it can be tested and audited.

    Only the "file" protocol is allowed (no network, no other protocols a playlist could name),
    and only the container demuxers in _DEMUXERS (no hls or concat playlists that point at other
    files). The input comes last, after -i, so it can never be read as an option.
    """
    return [
        "ffprobe",
        "-v",
        "error",
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        ",".join(_DEMUXERS),
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        "-i",
        input_url,
    ]


def probe_av(fd: int, info: MediaInfo, timeout: float) -> None:
    """Fill ``info`` from ffprobe; its failures and timeouts become "probe_failed"."""
    try:
        data = _run_ffprobe(fd, timeout)
    except subprocess.TimeoutExpired:
        info.add_problem("probe_failed", "ffprobe timed out")
        return
    except ffmpeg.Error as exc:
        info.add_problem("probe_failed", f"ffprobe: {stderr_text(exc.stderr)}")
        return
    fill_from_ffprobe(data, info)
    fmt = data.get("format") if isinstance(data.get("format"), dict) else {}
    if {"mov", "mp4"} & set(str(fmt.get("format_name") or "").split(",")):
        cut = iso_bmff_cut(fd)
        if cut:
            info.add_problem("damaged", cut)


def iso_bmff_cut(fd: int) -> str | None:
    """Where an MP4/MOV (ISO BMFF) file is cut short, or None: its top-level boxes must end
    inside the file. A camera's or phone's video with its index first ("faststart") that a
    pulled card cut in half still probes whole (6 s, from the index) while half its frames
    are gone; a few box headers show it. Nothing but those headers is read."""
    size = os.fstat(fd).st_size
    offset = boxes = 0
    while offset + 8 <= size and boxes < _MAX_BOXES:
        head = os.pread(fd, 16, offset)
        box_size, kind = int.from_bytes(head[:4], "big"), head[4:8]
        if kind not in _CUT_MATTERS and not _FOURCC.fullmatch(kind):
            return None  # not a box: a trailer some cameras append (RIFF, Samsung's SEF)
        if box_size == 1:  # 64-bit size after the type
            box_size = int.from_bytes(head[8:16], "big") if len(head) == 16 else 0
        elif box_size == 0:
            return None  # the last box: it runs to the end of the file
        if box_size < 8:
            return None  # not a box either; ffprobe read the file, so leave it be
        if offset + box_size > size:
            if kind not in _CUT_MATTERS:
                return None  # a trailer that looks like a box, or padding: no frames lost
            return (f"cut short: its {kind.decode()!r} box ends at byte "
                    f"{offset + box_size}, the file at {size} "
                    f"({100 * (size - offset) // box_size}% of it is there)")
        offset += box_size
        boxes += 1
    return None


def _run_ffprobe(fd: int, timeout: float) -> dict[str, Any]:
    """ffprobe's JSON for the file behind ``fd``.

    ffmpeg-python's ffmpeg.probe() cannot pass a descriptor or a timeout, so the child is run
    here; failures raise ffmpeg.Error like ffmpeg.probe() does.
    """
    with child_fd(fd) as child:
        args = ffprobe_args(f"file:/proc/self/fd/{child}")
        result = run_child(args, stdin=subprocess.DEVNULL, pass_fds=(child,), timeout=timeout)
    if result.returncode != 0:
        raise ffmpeg.Error("ffprobe", result.stdout, result.stderr)
    try:
        data = json.loads(result.stdout)
    except ValueError as exc:
        raise ffmpeg.Error("ffprobe", result.stdout, b"ffprobe printed invalid JSON") from exc
    if not isinstance(data, dict):
        raise ffmpeg.Error("ffprobe", result.stdout, b"ffprobe printed unexpected JSON")
    return data


def fill_from_ffprobe(data: Mapping[str, Any], info: MediaInfo) -> None:
    """Fill ``info`` from ffprobe's JSON, which is the file's word: every field is checked."""
    fmt = data.get("format") if isinstance(data.get("format"), dict) else {}
    streams = [s for s in data.get("streams") or [] if isinstance(s, dict)]
    tags = _lower_tags(fmt.get("tags"))
    info.duration = positive_float(fmt.get("duration"))
    video = _first_video_stream(streams)
    if video is not None:
        info.width = positive_int(video.get("width"))
        info.height = positive_int(video.get("height"))
        info.rotation = stream_rotation(video)
    info.time_candidates.extend(_media_time_candidates(tags, streams, info))
    info.camera = camera(
        tags.get("com.apple.quicktime.make") or tags.get("com.android.manufacturer"),
        tags.get("com.apple.quicktime.model") or tags.get("com.android.model"),
    )
    location = tags.get("com.apple.quicktime.location.iso6709") or tags.get("location")
    info.gps = parse_iso6709(location)


def _first_video_stream(streams: list[dict]) -> dict | None:
    """The first real video stream; cover art in audio files is a video stream too."""
    for stream in streams:
        disposition = stream.get("disposition") or {}
        if stream.get("codec_type") == "video" and not disposition.get("attached_pic"):
            return stream
    return None


def stream_rotation(stream: Mapping[str, Any]) -> int:
    """Clockwise degrees to turn the picture for display (0, 90, 180, 270)."""
    for side in stream.get("side_data_list") or []:
        if isinstance(side, dict) and "rotation" in side:
            # The display matrix angle is counterclockwise.
            return _quarter_turn(-(finite(side["rotation"]) or 0.0))
    rotate = finite(_lower_tags(stream.get("tags")).get("rotate"))  # legacy tag, clockwise
    return _quarter_turn(rotate or 0.0)


def _quarter_turn(degrees: float) -> int:
    return (round(degrees / 90) % 4) * 90


def _media_time_candidates(
    tags: Mapping[str, str], streams: list[dict], info: MediaInfo
) -> list[TimeCandidate]:
    """Container times, best first: Apple's local creation date, creation_time, stream times."""
    raws = [tags.get("com.apple.quicktime.creationdate"), _creation_time(tags)]
    raws += [_creation_time(_lower_tags(s.get("tags"))) for s in streams]
    candidates: list[TimeCandidate] = []
    for raw in raws:
        try:
            value = parse_iso_datetime(raw)
        except ValueError:
            info.add_problem("unreadable_metadata", f"media_creation_time: unparseable {raw!r}")
            continue
        candidate = TimeCandidate(value, "media_creation_time") if value else None
        if candidate and candidate not in candidates:
            candidates.append(candidate)
    return candidates


def _creation_time(tags: Mapping[str, str]) -> str | None:
    """creation_time, joined with the date when it is only a time (WAV bext origination)."""
    value = tags.get("creation_time")
    day = tags.get("date")
    if value and day and re.fullmatch(r"\d{2}:\d{2}:\d{2}", value.strip()):
        return f"{day.strip()}T{value.strip()}"
    return value


def _lower_tags(tags: object) -> dict[str, str]:
    if not isinstance(tags, dict):
        return {}
    return {str(k).lower(): str(v) for k, v in tags.items()}
