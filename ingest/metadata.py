"""Per-item metadata for ingest: capture time, camera, GPS, orientation, size, duration.

Why it looks like this (design decisions 4 and 5):

* It works on a file descriptor the pipeline already opened (O_RDONLY|O_NOFOLLOW, checked to be
  a regular file) and never opens anything by name. A card's names are hostile input: a symlink
  swapped in after the check, or a name starting with "-", must not change what gets read.
  Libraries that want a file object get one that reads the fd with pread (its own position,
  never closes the fd); child programs get a duplicate of the fd, as stdin (exiftool) or as
  ``file:/proc/self/fd/N`` passed with ``pass_fds`` (ffprobe, which must be able to seek).
* Bad media never raises. The original is archived byte for byte whatever its state, so a
  decoder's complaint becomes an entry in ``MediaInfo.problems`` and the other fields are best
  effort. A real I/O error (a card pulled mid-read: EIO) is different, it is the caller's to
  handle, so it propagates as OSError. Pillow reports damage as OSError without an errno, a
  failing read(2) always has one; and since a library may wrap a failed read in an error of its
  own, the file object remembers it and it is re-raised as it was.
* Damage detection has to be cheap on a Raspberry Pi-class box: JPEG and MPO are decoded at 1/8
  scale (DCT scaling still reads every byte, so truncation is caught, but only 1/64 of the pixels
  are produced), PNG is checked with ``verify()``, TIFF by comparing its strip extents with the
  file size. HEIF has no reduced decode, so its images are decoded in full. Pillow's
  decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) is respected: an oversized image is
  reported as "too_large" and never decoded.
* Child programs (ffprobe, exiftool) get an argument list, never a shell, a timeout, and their
  own process group so that a hung program and anything it started can be killed together.
  ffprobe may only use the "file" protocol and a fixed list of container demuxers, so a crafted
  playlist posing as a video can neither reach the network nor read other files.
* Capture time policy lives in ``resolve_capture_time``: embedded times first (EXIF with its
  offset, then container metadata), then the card's file time, then the import time; dates that
  cannot be true are flagged rather than trusted.

Threading note: Pillow reports corrupt EXIF only through ``warnings``, and the damage check
re-opens the file, which repeats them. ``warnings.catch_warnings`` changes process-wide state,
so photo probes capture them under a lock: photos are probed one at a time per process (video,
audio and RAW probes, which run in child processes, are not serialised).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import math
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import IO, Any, get_args
from zoneinfo import ZoneInfo

import ffmpeg
import pillow_heif
from PIL import Image

from ingest.kinds import Kind

# ---------------------------------------------------------------------------------------------
# Public data


@dataclass(frozen=True)
class TimeCandidate:
    """One embedded capture time, as found in the file."""

    value: datetime  # aware when the file states the offset (or UTC), else naive wall-clock time
    source: str  # "exif", "exif_digitized", "exif_datetime", "media_creation_time", "raw_exif"


@dataclass
class MediaInfo:
    """What ``probe`` learned about one item. Every field is best effort.

    ``orientation`` is the EXIF value (1..8) of a photo. For HEIF, libheif already applies the
    rotation when it decodes, and pillow-heif hides the EXIF tag (sets it to 1) to avoid a double
    rotation; ``orientation`` still reports the original tag and ``width``/``height`` are the
    stored (unrotated) size, like for JPEG. ``rotation`` is for video: degrees clockwise (0, 90,
    180, 270) a player turns the picture for display.
    """

    time_candidates: list[TimeCandidate] = field(default_factory=list)
    camera: dict | None = None
    gps: dict | None = None
    orientation: int | None = None
    rotation: int | None = None
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    problems: list[dict] = field(default_factory=list)

    def add_problem(self, code: str, detail: str) -> None:
        """Record a problem once (decoders tend to repeat themselves)."""
        entry = {"code": code, "detail": detail}
        if entry not in self.problems:
            self.problems.append(entry)


# ---------------------------------------------------------------------------------------------
# Constants

_KINDS: frozenset[str] = frozenset(get_args(Kind))

# Pillow formats a "photo" may be. Restricting Image.open keeps exotic plugins away from card
# content (EPS, for one, starts Ghostscript when loaded). MPO is opened by the JPEG plugin.
_PILLOW_FORMATS = ("JPEG", "HEIF", "PNG", "TIFF", "WEBP")

# Frames checked for damage in a multi-image file, at most. Hostile files can claim thousands.
_FRAME_CHECK_LIMIT = 16

# Demuxers ffprobe may use: the containers behind kinds.VIDEO_EXTENSIONS and AUDIO_EXTENSIONS.
# Playlist and indirection formats (hls, concat, image2, ...) are not on the list on purpose.
_DEMUXERS = ("mov", "matroska", "avi", "mpegts", "mpeg", "wav", "w64", "mp3", "flac", "ogg", "aac")

# Tags asked of exiftool for RAW files; -n gives numbers, and Composite GPS values are signed.
_EXIFTOOL_TAGS = (
    "-DateTimeOriginal",
    "-OffsetTimeOriginal",
    "-Make",
    "-Model",
    "-Orientation",
    "-ImageWidth",
    "-ImageHeight",
    "-ImageSize",  # Composite: the raw image's size where IFD0 holds only a preview (CR2)
    "-GPSLatitude",
    "-GPSLongitude",
    "-GPSAltitude",
    "-MIMEType",
    "-FileType",
    "-Error",
    "-Warning",
)

# EXIF tags (IFD0 and the Exif sub-IFD).
_TAG_MAKE, _TAG_MODEL, _TAG_ORIENTATION, _TAG_DATETIME = 271, 272, 274, 306
_IFD_EXIF, _IFD_GPS = 0x8769, 0x8825
# (source, date tag, in IFD0?, offset tag, sub-second tag), in priority order.
_EXIF_TIMES = (
    ("exif", 36867, False, 36881, 37521),
    ("exif_digitized", 36868, False, 36882, 37522),
    ("exif_datetime", _TAG_DATETIME, True, 36880, 37520),
)

# Errors third-party parsers raise on hostile input. Pillow's own Image.open treats SyntaxError,
# IndexError, TypeError and struct.error as "not this format"; libheif errors arrive as
# ValueError, RuntimeError or EOFError. OSError is handled apart (see _is_media_error).
_PARSER_ERRORS = (
    ValueError,
    RuntimeError,
    EOFError,
    SyntaxError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    struct.error,
)

_EXIF_DATE_RE = re.compile(
    r"(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6})\d*)?"
)
_OFFSET_RE = re.compile(r"([+-])(\d{2}):?(\d{2})")
_ISO6709_RE = re.compile(r"([+-][\d.]+)([+-][\d.]+)([+-][\d.]+)?(?:CRS[^/]*)?/?")

_WARNINGS_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------------
# Entry point


def probe(fd: int, kind: str, *, timeout: float = 30.0) -> MediaInfo:
    """Read the metadata of the open regular file ``fd`` judged to be of ``kind``.

    ``fd`` is not closed and stays usable; its file offset may move. Bad media yields problems,
    never exceptions. Raises OSError for I/O errors on ``fd``, ValueError for a ``kind`` that is
    not a ``Kind`` or an ``fd`` that is not a regular file, RuntimeError when the program a kind
    needs (ffprobe, exiftool) is not installed.
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(_KINDS)}")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"fd {fd} is not a regular file")
    info = MediaInfo()
    if kind == "other":
        return info
    if st.st_size == 0:
        info.add_problem("damaged", "file is empty")
        return info
    if kind == "photo":
        _probe_photo(fd, st.st_size, info, timeout)
    elif kind == "raw":
        _probe_raw(fd, info, timeout)
    else:
        _probe_av(fd, info, timeout)
    return info


# ---------------------------------------------------------------------------------------------
# Photos (Pillow, pillow-heif)


def _probe_photo(fd: int, size: int, info: MediaInfo, timeout: float) -> None:
    pillow_heif.register_heif_opener()  # idempotent: (re)registers the HEIF plugin with Pillow
    with _fd_reader(fd) as fp, _warnings_as_problems(info):
        img = _open_image(fp, fd, info, timeout)
        if img is None:
            return
        with img:
            ifd0, exif_ifd, gps_ifd = _read_exif(img, fp, info)
            _fill_from_exif(info, img, ifd0, exif_ifd, gps_ifd)
            if _too_large(img.size, info):
                return
            _check_decodes(fp, img, size, info)


def _open_image(fp: IO[bytes], fd: int, info: MediaInfo, timeout: float) -> Image.Image | None:
    """Image.open with its errors turned into problems; None when nothing could be opened."""
    try:
        return Image.open(fp, formats=_PILLOW_FORMATS)
    except Image.DecompressionBombError as exc:
        info.add_problem("too_large", f"{exc} Not decoded.")
        info.width, info.height = _header_size_from_exiftool(fd, info, timeout)
    except Exception as exc:
        _raise_unless_media_error(exc, fp)
        info.add_problem("damaged", _describe(exc))
    return None


def _read_exif(
    img: Image.Image, fp: IO[bytes], info: MediaInfo
) -> tuple[Mapping, Mapping, Mapping]:
    """IFD0, the Exif sub-IFD and the GPS IFD; empty mappings for what cannot be parsed."""
    if img.format == "PNG" and "exif" not in img.info:
        # No eXIf chunk before the pixel data. Pillow's getexif() would decode the whole image
        # to look for one after it; cameras do not write PNG, so that cost is not paid here.
        return {}, {}, {}
    try:
        ifd0 = img.getexif()
    except Exception as exc:
        _raise_unless_media_error(exc, fp)
        info.add_problem("unreadable_metadata", f"EXIF: {_describe(exc)}")
        return {}, {}, {}
    return ifd0, _get_ifd(ifd0, _IFD_EXIF, fp, info), _get_ifd(ifd0, _IFD_GPS, fp, info)


def _get_ifd(exif: Image.Exif, tag: int, fp: IO[bytes], info: MediaInfo) -> Mapping:
    try:
        return exif.get_ifd(tag)
    except Exception as exc:
        _raise_unless_media_error(exc, fp)
        info.add_problem("unreadable_metadata", f"EXIF IFD {tag:#x}: {_describe(exc)}")
        return {}


def _fill_from_exif(
    info: MediaInfo, img: Image.Image, ifd0: Mapping, exif_ifd: Mapping, gps_ifd: Mapping
) -> None:
    info.camera = _camera(ifd0.get(_TAG_MAKE), ifd0.get(_TAG_MODEL))
    raw_orientation = ifd0.get(_TAG_ORIENTATION)
    if img.format == "HEIF":
        # pillow-heif resets the EXIF tag to 1 (libheif rotates while decoding) and keeps the
        # original value here.
        original = img.info.get("original_orientation")
        raw_orientation = raw_orientation if original is None else original
    info.orientation = _orientation(raw_orientation, info)
    width, height = img.size
    if img.format == "HEIF" and info.orientation in (5, 6, 7, 8):
        width, height = height, width  # pillow-heif reports the size after rotation
    info.width, info.height = width, height
    info.time_candidates.extend(_exif_time_candidates(ifd0, exif_ifd, info))
    info.gps = _gps_from_exif(gps_ifd)


def _exif_time_candidates(
    ifd0: Mapping, exif_ifd: Mapping, info: MediaInfo
) -> Iterator[TimeCandidate]:
    for source, date_tag, in_ifd0, offset_tag, subsec_tag in _EXIF_TIMES:
        raw = (ifd0 if in_ifd0 else exif_ifd).get(date_tag)
        try:
            value = _parse_exif_datetime(raw)
        except ValueError:
            info.add_problem("unreadable_metadata", f"{source}: unparseable date {raw!r}")
            continue
        if value is None:
            continue
        value = value.replace(
            microsecond=value.microsecond or _subsec_micro(exif_ifd.get(subsec_tag))
        )
        offset = _parse_offset(exif_ifd.get(offset_tag))
        yield TimeCandidate(value if offset is None else value.replace(tzinfo=offset), source)


def _check_decodes(fp: IO[bytes], img: Image.Image, size: int, info: MediaInfo) -> None:
    """Cheap damage detection, chosen by format; records "damaged" or "too_large"."""
    if img.format in ("JPEG", "MPO"):
        _check_jpeg_frames(fp, getattr(img, "n_frames", 1), info)
    elif img.format == "PNG":
        _guard_decode(fp, info, lambda: _verify(fp))
    elif img.format == "TIFF":
        _guard_decode(fp, info, lambda: _check_tiff_extents(img, size, info))
    else:  # HEIF, WEBP: no reduced decode available, decode every frame in full
        _guard_decode(fp, info, lambda: _load_frames(img, range(_frame_count(img)), info))


def _check_jpeg_frames(fp: IO[bytes], n_frames: int, info: MediaInfo) -> None:
    """Decode the first and last frame at 1/8 scale; truncation always hits the last one."""
    for index in sorted({0, n_frames - 1}):
        # A fresh open per frame: Pillow's MPO seek does not undo an earlier frame's draft().
        def check(index: int = index) -> None:
            with _reopen(fp) as frame:
                frame.seek(index)
                if _too_large(frame.size, info):
                    return
                frame.draft("RGB", (max(1, frame.width // 8), max(1, frame.height // 8)))
                frame.load()

        _guard_decode(fp, info, check)


def _verify(fp: IO[bytes]) -> None:
    """Pillow's verify() (PNG: chunk CRCs through IEND) on a fresh open; it spoils the image."""
    with _reopen(fp) as fresh:
        fresh.verify()


def _load_frames(img: Image.Image, indexes: range, info: MediaInfo) -> None:
    for index in indexes:
        img.seek(index)
        if not _too_large(img.size, info):
            img.load()


def _check_tiff_extents(img: Image.Image, size: int, info: MediaInfo) -> None:
    """TIFF truncation shows as strips or tiles that end past the end of the file."""
    for index in range(_frame_count(img)):
        img.seek(index)
        tags = img.tag_v2
        offsets = _int_tuple(tags.get(273) or tags.get(324))
        counts = _int_tuple(tags.get(279) or tags.get(325))
        end = max((o + c for o, c in zip(offsets, counts, strict=False)), default=0)
        if end > size:
            info.add_problem(
                "damaged", f"image file is truncated (frame {index} needs {end} bytes, has {size})"
            )
            return


def _guard_decode(fp: IO[bytes], info: MediaInfo, check: Callable[[], object]) -> None:
    """Run a decode check; a decoder error becomes a "damaged" problem, I/O errors propagate."""
    try:
        check()
    except Image.DecompressionBombError as exc:
        info.add_problem("too_large", f"{exc} Not decoded.")
    except Exception as exc:
        _raise_unless_media_error(exc, fp)
        info.add_problem("damaged", _describe(exc))


def _too_large(size: tuple[int, int], info: MediaInfo) -> bool:
    """Pillow's decompression-bomb limit, checked before any decode; records "too_large"."""
    limit = Image.MAX_IMAGE_PIXELS
    pixels = max(1, size[0]) * max(1, size[1])
    if limit is None or pixels <= limit:
        return False
    info.add_problem(
        "too_large", f"{size[0]}x{size[1]} = {pixels} pixels exceeds {limit}; not decoded"
    )
    return True


def _header_size_from_exiftool(
    fd: int, info: MediaInfo, timeout: float
) -> tuple[int | None, int | None]:
    """Width and height from the header when Pillow refused to even open (decompression bomb)."""
    try:
        record = _run_exiftool(fd, ("-ImageWidth", "-ImageHeight"), timeout)
    # exiftool missing (RuntimeError) is not fatal here: the size is a nicety for photos.
    except (RuntimeError, subprocess.TimeoutExpired, _ExiftoolError) as exc:
        info.add_problem("probe_failed", str(exc))
        return None, None
    return _positive_int(_pick(record, "ImageWidth")), _positive_int(_pick(record, "ImageHeight"))


def _reopen(fp: IO[bytes]) -> Image.Image:
    fp.seek(0)
    return Image.open(fp, formats=_PILLOW_FORMATS)


def _frame_count(img: Image.Image) -> int:
    return min(getattr(img, "n_frames", 1), _FRAME_CHECK_LIMIT)


@contextlib.contextmanager
def _warnings_as_problems(info: MediaInfo) -> Iterator[None]:
    """Pillow reports corrupt EXIF only as a warning: record those as problems, not stderr."""
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        # The bomb warning is reported as "too_large" from the size by _too_large.
        if not issubclass(warning.category, Image.DecompressionBombWarning):
            info.add_problem("unreadable_metadata", str(warning.message).strip())


# ---------------------------------------------------------------------------------------------
# RAW (exiftool)


class _ExiftoolError(Exception):
    """exiftool ran but failed without saying why in its output."""


def _exiftool_args(tags: Sequence[str]) -> list[str]:
    """The exiftool command line reading the file from stdin; pure, no file names involved."""
    return ["exiftool", "-j", "-n", "-G0", "-fast", *tags, "-"]


def _probe_raw(fd: int, info: MediaInfo, timeout: float) -> None:
    try:
        record = _run_exiftool(fd, _EXIFTOOL_TAGS, timeout)
    except subprocess.TimeoutExpired:
        info.add_problem("probe_failed", "exiftool timed out")
        return
    except _ExiftoolError as exc:
        info.add_problem("probe_failed", str(exc))
        return
    _fill_from_exiftool(record, info)


def _run_exiftool(fd: int, tags: Sequence[str], timeout: float) -> dict[str, Any]:
    """exiftool's JSON record for the file behind ``fd``, read as stdin from the start."""
    with _child_fd(fd) as child:
        os.lseek(child, 0, os.SEEK_SET)  # exiftool reads stdin from the current offset
        result = _run_child(_exiftool_args(tags), stdin=child, pass_fds=(), timeout=timeout)
    try:
        records = json.loads(result.stdout)
        record = records[0]
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise _ExiftoolError(
            f"exiftool failed (exit {result.returncode}): {_stderr_text(result.stderr)}"
        ) from exc
    if not isinstance(record, dict):
        raise _ExiftoolError("exiftool printed an unexpected record")
    return record


def _fill_from_exiftool(record: Mapping[str, Any], info: MediaInfo) -> None:
    _exiftool_problems(record, info)
    info.camera = _camera(_pick(record, "Make"), _pick(record, "Model"))
    info.orientation = _orientation(_pick(record, "Orientation"), info)
    info.width, info.height = _raw_size(record)
    info.time_candidates.extend(_raw_time_candidates(record, info))
    info.gps = _plausible_gps(
        _finite(_pick(record, "GPSLatitude", prefer="Composite")),
        _finite(_pick(record, "GPSLongitude", prefer="Composite")),
        _finite(_pick(record, "GPSAltitude", prefer="Composite")),
    )


def _exiftool_problems(record: Mapping[str, Any], info: MediaInfo) -> None:
    """exiftool's own Error and Warning, and content that is not an image at all."""
    error = _clean_text(_pick(record, "Error"))
    if error:
        info.add_problem("damaged", f"exiftool: {error}")
    warning = _clean_text(_pick(record, "Warning"))
    if warning and not warning.startswith("[minor]"):
        info.add_problem("unreadable_metadata", f"exiftool: {warning}")
    mime = _clean_text(_pick(record, "MIMEType")) or ""
    if not error and not mime.startswith("image/"):
        file_type = _clean_text(_pick(record, "FileType")) or "unknown"
        info.add_problem("damaged", f"not a RAW image (exiftool identifies it as {file_type})")


def _raw_time_candidates(record: Mapping[str, Any], info: MediaInfo) -> list[TimeCandidate]:
    raw = _pick(record, "DateTimeOriginal")
    try:
        value = _parse_exif_datetime(raw)
    except ValueError:
        info.add_problem("unreadable_metadata", f"raw_exif: unparseable date {raw!r}")
        return []
    if value is None:
        return []
    offset = _parse_offset(_pick(record, "OffsetTimeOriginal"))
    return [TimeCandidate(value if offset is None else value.replace(tzinfo=offset), "raw_exif")]


def _raw_size(record: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """Composite ImageSize ("W H" with -n) when exiftool worked it out, else ImageWidth/Height."""
    size = _clean_text(_pick(record, "ImageSize", prefer="Composite"))
    parts = size.replace("x", " ").split() if size else []
    if len(parts) == 2:
        width, height = _positive_int(parts[0]), _positive_int(parts[1])
        if width and height:
            return width, height
    return _positive_int(_pick(record, "ImageWidth")), _positive_int(_pick(record, "ImageHeight"))


def _pick(record: Mapping[str, Any], tag: str, *, prefer: str = "EXIF") -> Any:
    """A tag's value from exiftool -G0 output ("Group:Tag" keys), preferring one group."""
    if f"{prefer}:{tag}" in record:
        return record[f"{prefer}:{tag}"]
    for key, value in record.items():
        if key.rpartition(":")[2] == tag:
            return value
    return None


# ---------------------------------------------------------------------------------------------
# Video and audio (ffprobe)


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


def _probe_av(fd: int, info: MediaInfo, timeout: float) -> None:
    try:
        data = _run_ffprobe(fd, timeout)
    except subprocess.TimeoutExpired:
        info.add_problem("probe_failed", "ffprobe timed out")
        return
    except ffmpeg.Error as exc:
        info.add_problem("probe_failed", f"ffprobe: {_stderr_text(exc.stderr)}")
        return
    _fill_from_ffprobe(data, info)


def _run_ffprobe(fd: int, timeout: float) -> dict[str, Any]:
    """ffprobe's JSON for the file behind ``fd``.

    ffmpeg-python's ffmpeg.probe() cannot pass a descriptor or a timeout, so the child is run
    here; failures raise ffmpeg.Error like ffmpeg.probe() does.
    """
    with _child_fd(fd) as child:
        args = ffprobe_args(f"file:/proc/self/fd/{child}")
        result = _run_child(args, stdin=subprocess.DEVNULL, pass_fds=(child,), timeout=timeout)
    if result.returncode != 0:
        raise ffmpeg.Error("ffprobe", result.stdout, result.stderr)
    try:
        data = json.loads(result.stdout)
    except ValueError as exc:
        raise ffmpeg.Error("ffprobe", result.stdout, b"ffprobe printed invalid JSON") from exc
    if not isinstance(data, dict):
        raise ffmpeg.Error("ffprobe", result.stdout, b"ffprobe printed unexpected JSON")
    return data


def _fill_from_ffprobe(data: Mapping[str, Any], info: MediaInfo) -> None:
    fmt = data.get("format") if isinstance(data.get("format"), dict) else {}
    streams = [s for s in data.get("streams") or [] if isinstance(s, dict)]
    tags = _lower_tags(fmt.get("tags"))
    info.duration = _positive_float(fmt.get("duration"))
    video = _first_video_stream(streams)
    if video is not None:
        info.width = _positive_int(video.get("width"))
        info.height = _positive_int(video.get("height"))
        info.rotation = _stream_rotation(video)
    info.time_candidates.extend(_media_time_candidates(tags, streams, info))
    info.camera = _camera(
        tags.get("com.apple.quicktime.make") or tags.get("com.android.manufacturer"),
        tags.get("com.apple.quicktime.model") or tags.get("com.android.model"),
    )
    location = tags.get("com.apple.quicktime.location.iso6709") or tags.get("location")
    info.gps = _parse_iso6709(location)


def _first_video_stream(streams: list[dict]) -> dict | None:
    """The first real video stream; cover art in audio files is a video stream too."""
    for stream in streams:
        disposition = stream.get("disposition") or {}
        if stream.get("codec_type") == "video" and not disposition.get("attached_pic"):
            return stream
    return None


def _stream_rotation(stream: Mapping[str, Any]) -> int:
    """Clockwise degrees to turn the picture for display (0, 90, 180, 270)."""
    for side in stream.get("side_data_list") or []:
        if isinstance(side, dict) and "rotation" in side:
            # The display matrix angle is counterclockwise.
            return _quarter_turn(-(_finite(side["rotation"]) or 0.0))
    rotate = _finite(_lower_tags(stream.get("tags")).get("rotate"))  # legacy tag, clockwise
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
            value = _parse_iso_datetime(raw)
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


# ---------------------------------------------------------------------------------------------
# Child processes and descriptors


class _FdReader(io.RawIOBase):
    """A read-only file object over the caller's fd, for libraries that want one.

    It reads with pread, so it has its own position and never closes the fd. It remembers a
    failed read because some libraries re-raise it as a format error (pillow-heif turns any
    OSError into SyntaxError, which Pillow reports as "cannot identify image file").
    """

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._pos = 0
        self.io_error: OSError | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            base = 0
        elif whence == os.SEEK_CUR:
            base = self._pos
        elif whence == os.SEEK_END:
            base = os.fstat(self._fd).st_size
        else:
            raise ValueError(f"invalid whence {whence}")
        if base + offset < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        try:
            count = os.preadv(self._fd, [buffer], self._pos)
        except OSError as exc:
            self.io_error = exc
            raise
        self._pos += count
        return count


@contextlib.contextmanager
def _fd_reader(fd: int) -> Iterator[io.BufferedReader]:
    """A buffered file object over ``fd`` (see _FdReader); the caller's fd stays open."""
    with io.BufferedReader(_FdReader(fd), buffer_size=256 * 1024) as fp:
        yield fp


@contextlib.contextmanager
def _child_fd(fd: int) -> Iterator[int]:
    """A close-on-exec duplicate of ``fd`` numbered 3 or above, safe to hand to a child.

    Numbers 0-2 would be overwritten by the child's stdin/stdout/stderr.
    """
    child = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    try:
        yield child
    finally:
        os.close(child)


def _run_child(
    args: list[str], *, stdin: int, pass_fds: tuple[int, ...], timeout: float
) -> subprocess.CompletedProcess[bytes]:
    """Run a program (found on PATH) with a timeout; on timeout its whole group is killed."""
    program = shutil.which(args[0])
    if program is None:
        raise RuntimeError(f"{args[0]} is not installed (not found on PATH); Acopio needs it")
    with subprocess.Popen(
        args,
        executable=program,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=pass_fds,
        start_new_session=True,  # own process group: killpg reaches anything it started
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            _kill_group(proc.pid)
            proc.communicate()  # reap it and drain the pipes
            raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group already exited: nothing to kill
        os.killpg(pgid, signal.SIGKILL)


def _stderr_text(stderr: bytes | str | None) -> str:
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    return "; ".join(lines)[:300] if lines else "no error message"


# ---------------------------------------------------------------------------------------------
# Error triage and value parsing shared by the three paths


def _raise_unless_media_error(exc: Exception, fp: IO[bytes]) -> None:
    """Re-raise I/O errors, including one a library wrapped in an error of its own."""
    io_error = getattr(getattr(fp, "raw", None), "io_error", None)
    if io_error is not None:
        raise io_error from exc
    if not _is_media_error(exc):
        raise exc


def _is_media_error(exc: BaseException) -> bool:
    """True for a decoder's complaint about content, False for a real I/O error (EIO, ...)."""
    if isinstance(exc, OSError):
        return exc.errno is None
    return isinstance(exc, _PARSER_ERRORS)


def _describe(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


def _clean_text(raw: object) -> str | None:
    """EXIF/tag text without NULs and surrounding whitespace; None when empty or not text."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str):
        return None
    text = raw.replace("\x00", "").strip()
    return text or None


def _camera(make: object, model: object) -> dict | None:
    make_text, model_text = _clean_text(make), _clean_text(model)
    if make_text is None and model_text is None:
        return None
    return {"make": make_text, "model": model_text}


def _orientation(raw: object, info: MediaInfo) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, int) and 1 <= raw <= 8:
        return raw
    info.add_problem("unreadable_metadata", f"orientation: invalid value {raw!r}")
    return None


def _parse_exif_datetime(raw: object) -> datetime | None:
    """An EXIF "YYYY:MM:DD HH:MM:SS" as a naive datetime.

    None when absent or explicitly unknown (blank, or all zeros as cameras with an unset clock
    write); ValueError for anything else that is not a date.
    """
    text = _clean_text(raw)
    if text is None or not text.strip(" :0-T"):
        return None
    match = _EXIF_DATE_RE.fullmatch(text)
    if match is None:
        raise ValueError(text)
    *parts, fraction = match.groups()
    micro = int((fraction or "0").ljust(6, "0"))
    return datetime(*map(int, parts), micro)  # ValueError for month 13 and such


def _subsec_micro(raw: object) -> int:
    """EXIF SubSecTime digits ("302" = .302 s) as microseconds; 0 when absent or garbage."""
    text = _clean_text(raw)
    if text is None or not text.isdigit():
        return 0
    return int(text[:6].ljust(6, "0"))


def _parse_offset(raw: object) -> timezone | None:
    """An EXIF OffsetTime ("+03:00") as a timezone; None when absent or nonsense."""
    text = _clean_text(raw)
    match = _OFFSET_RE.fullmatch(text) if text else None
    if match is None:
        return None
    sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3))
    if hours > 14 or minutes >= 60:
        return None
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if sign == "-" else delta)


def _parse_iso_datetime(raw: object) -> datetime | None:
    """ISO 8601 from container tags ("...Z" is UTC, "+0300" an offset); ValueError if garbage."""
    text = _clean_text(raw)
    if text is None:
        return None
    value = datetime.fromisoformat(text)
    if value.tzinfo is not None and value.utcoffset() == timedelta(0):
        value = value.astimezone(UTC)
    return value


def _rational(raw: object) -> float | None:
    try:
        return _finite(float(raw))  # IFDRational, int, float; 0/0 gives nan
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def _finite(raw: object) -> float | None:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _positive_int(raw: object) -> int | None:
    value = _finite(raw)
    return int(value) if value is not None and value >= 1 and value == int(value) else None


def _positive_float(raw: object) -> float | None:
    value = _finite(raw)
    return value if value is not None and value > 0 else None


def _int_tuple(raw: object) -> tuple[int, ...]:
    if isinstance(raw, int):
        return (raw,)
    if isinstance(raw, tuple | list):
        return tuple(v for v in raw if isinstance(v, int))
    return ()


def _dms(raw: object) -> float | None:
    """EXIF degrees, minutes, seconds (three rationals) as decimal degrees."""
    if not isinstance(raw, tuple | list) or not 1 <= len(raw) <= 3:
        return None
    parts = [_rational(v) for v in raw]
    if any(p is None or p < 0 for p in parts):
        return None
    return sum(p / 60**i for i, p in enumerate(parts))


def _gps_from_exif(gps: Mapping[int, object]) -> dict | None:
    if not gps or (_clean_text(gps.get(9)) or "").upper() == "V":  # GPSStatus V: no fix
        return None
    lat, lon = _dms(gps.get(2)), _dms(gps.get(4))
    if lat is None or lon is None:
        return None
    if (_clean_text(gps.get(1)) or "").upper() == "S":
        lat = -lat
    if (_clean_text(gps.get(3)) or "").upper() == "W":
        lon = -lon
    alt = _rational(gps.get(6))
    if alt is not None and gps.get(5) in (1, b"\x01"):  # GPSAltitudeRef 1: below sea level
        alt = -alt
    return _plausible_gps(lat, lon, alt)


def _plausible_gps(lat: float | None, lon: float | None, alt: float | None) -> dict | None:
    """Decimal degrees, or None for missing, out-of-range, or 0,0 (a receiver without a fix)."""
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    if lat == 0 and lon == 0:
        return None
    return {
        "lat": round(lat, 7),
        "lon": round(lon, 7),
        "alt": None if alt is None else round(alt, 2),
    }


def _parse_iso6709(raw: object) -> dict | None:
    """ISO 6709 ("+19.4326-099.1332+2240.000/") from a video's location tag."""
    text = _clean_text(raw)
    match = _ISO6709_RE.fullmatch(text) if text else None
    if match is None:
        return None
    lat = _iso6709_angle(match.group(1), 2)
    lon = _iso6709_angle(match.group(2), 3)
    alt = _finite(match.group(3)) if match.group(3) else None
    return _plausible_gps(lat, lon, alt)


def _iso6709_angle(text: str, degree_digits: int) -> float | None:
    """±DD.D, ±DDMM.M or ±DDMMSS.S (latitude; longitude has one more degree digit)."""
    sign = -1.0 if text[0] == "-" else 1.0
    whole, _, fraction = text[1:].partition(".")
    if not whole.isdigit() or (fraction and not fraction.isdigit()):
        return None
    if len(whole) - degree_digits not in (0, 2, 4):
        return None
    # Degrees, then two digits each of minutes and seconds; the fraction belongs to the last.
    fields = [whole[:degree_digits]]
    fields += [whole[i : i + 2] for i in range(degree_digits, len(whole), 2)]
    numbers = [float(f) for f in fields]
    numbers[-1] += float(f"0.{fraction}") if fraction else 0.0
    return sign * sum(n / 60**i for i, n in enumerate(numbers))


# ---------------------------------------------------------------------------------------------
# Capture time policy (design decision 5)


def resolve_capture_time(
    info: MediaInfo,
    file_mtime: float,
    *,
    tz: ZoneInfo,
    now: datetime,
    earliest_year: int = 1990,
    future_tolerance: timedelta = timedelta(days=1),
) -> tuple[datetime, str, list[dict]]:
    """Pick the capture time: first plausible candidate; else the file time (source
    "file_mtime", made aware in tz); else `now` (source "import_time").

    Implausible candidates (before earliest_year, or later than now + future_tolerance) are NOT
    used and each adds a problem {"code": "implausible_date", "detail": "<source>: <value>"}; an
    implausible file time is flagged the same way. Naive candidates are interpreted in `tz`.
    Always returns an AWARE datetime, keeping the EXIF offset when known, else tz's offset for
    that instant. A container time stored in UTC is an instant, not the local offset of the
    place it was taken, so it is shown in `tz`.
    """
    problems: list[dict] = []
    now_local = _in_zone(now, tz)
    earliest = datetime(earliest_year, 1, 1, tzinfo=tz)
    latest = now_local + future_tolerance
    for candidate in info.time_candidates:
        value = _localize(candidate, tz)
        if value is not None and earliest <= value <= latest:
            return value, candidate.source, problems
        problems.append(_implausible(candidate.source, candidate.value.isoformat()))
    mtime = _from_timestamp(file_mtime, tz)
    if mtime is not None and earliest <= mtime <= latest:
        return mtime, "file_mtime", problems
    problems.append(_implausible("file_mtime", mtime.isoformat() if mtime else repr(file_mtime)))
    return now_local, "import_time", problems


def _localize(candidate: TimeCandidate, tz: ZoneInfo) -> datetime | None:
    """The candidate as an aware datetime; None when it cannot be shown in tz (year 1 or 9999)."""
    value = candidate.value
    if value.tzinfo is None:
        return value.replace(tzinfo=tz)
    if candidate.source == "media_creation_time" and value.utcoffset() == timedelta(0):
        try:
            return value.astimezone(tz)
        except OverflowError:
            return None
    return value


def _in_zone(value: datetime, tz: ZoneInfo) -> datetime:
    return value.replace(tzinfo=tz) if value.tzinfo is None else value.astimezone(tz)


def _from_timestamp(timestamp: float, tz: ZoneInfo) -> datetime | None:
    try:
        return datetime.fromtimestamp(timestamp, tz)
    except (OverflowError, ValueError, OSError):  # NaN, or beyond what datetime can hold
        return None


def _implausible(source: str, value: str) -> dict:
    return {"code": "implausible_date", "detail": f"{source}: {value}"}
