"""Photos (JPEG, MPO, HEIF, PNG, TIFF, WEBP) read with Pillow and pillow-heif.

Why Pillow: it parses the formats cameras and phones write, and it opens lazily: ``Image.open``
reads the headers and EXIF, not the pixels (pillow-heif reads the file into memory but decodes
nothing until ``load()``, which is never called here). Damage is then looked for in the file's
structure (see damage), never by decoding.

* Only the formats photos come in are allowed (``_PILLOW_FORMATS``): exotic plugins stay away
  from card content (EPS, for one, starts Ghostscript when loaded).
* Pillow's decompression-bomb limit is respected: when Pillow refuses to open an image that far
  over it, exiftool still reads its size from the header. A JPEG is the exception: it is opened
  without that check (nothing is decoded here), so a 200 MP phone photo's EXIF is read like
  any other's, and whether it is too large to decode is the thumbnail job's rule
  (``ingest.derive.photo.jpeg_bomb_refusal``: one that shrink-on-load makes small is decoded
  there), which records "too_large" itself when it refuses.
* Bad EXIF is recorded as "unreadable_metadata"; the file itself may well be fine.

Threading note: Pillow reports corrupt EXIF only through ``warnings``, and
``warnings.catch_warnings`` changes process-wide state, so photo probes capture them under a
lock: photos are probed one at a time per process (video, audio and RAW probes, which run in
child processes, are not serialised).
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import warnings
from collections.abc import Iterator, Mapping
from typing import IO

import pillow_heif
from PIL import Image, JpegImagePlugin

from ingest.metadata.damage import check_structure, too_large
from ingest.metadata.gps import gps_from_exif
from ingest.metadata.info import MediaInfo, TimeCandidate
from ingest.metadata.raw import ExiftoolError, pick, run_exiftool
from ingest.metadata.reading import describe, fd_reader, raise_unless_media_error
from ingest.metadata.times import parse_exif_datetime, parse_offset, subsec_micro
from ingest.metadata.values import camera, orientation, positive_int

# Pillow formats a "photo" may be. MPO is opened by the JPEG plugin.
_PILLOW_FORMATS = ("JPEG", "HEIF", "PNG", "TIFF", "WEBP")
_JPEG_FORMATS = ("JPEG", "MPO")
_JPEG_START = b"\xff\xd8\xff"

# EXIF tags (IFD0 and the Exif sub-IFD).
_TAG_MAKE, _TAG_MODEL, _TAG_ORIENTATION, _TAG_DATETIME = 271, 272, 274, 306
_IFD_EXIF, _IFD_GPS = 0x8769, 0x8825
# (source, date tag, in IFD0?, offset tag, sub-second tag), in priority order.
_EXIF_TIMES = (
    ("exif", 36867, False, 36881, 37521),
    ("exif_digitized", 36868, False, 36882, 37522),
    ("exif_datetime", _TAG_DATETIME, True, 36880, 37520),
)

# Serialises warnings.catch_warnings, which is process-wide (see the threading note above).
_WARNINGS_LOCK = threading.Lock()


def probe_photo(fd: int, size: int, info: MediaInfo, timeout: float) -> None:
    """Fill ``info`` from the photo behind ``fd`` (``size`` bytes) and check its structure."""
    pillow_heif.register_heif_opener()  # idempotent: (re)registers the HEIF plugin with Pillow
    with fd_reader(fd) as fp, _warnings_as_problems(info):
        img = _open_image(fp, fd, info, timeout)
        if img is None:
            return
        with img:
            ifd0, exif_ifd, gps_ifd = _read_exif(img, fp, info)
            _fill_from_exif(info, img, ifd0, exif_ifd, gps_ifd)
            if img.format not in _JPEG_FORMATS:
                too_large(img.size, info)
            check_structure(fp, img, size, info)


def _open_image(fp: IO[bytes], fd: int, info: MediaInfo, timeout: float) -> Image.Image | None:
    """Image.open with its errors turned into problems; None when nothing could be opened."""
    try:
        if fp.read(3) == _JPEG_START:
            fp.seek(0)
            return JpegImagePlugin.jpeg_factory(fp)  # JPEG or MPO, no open-time bomb check
        fp.seek(0)
        return Image.open(fp, formats=_PILLOW_FORMATS)
    except Image.DecompressionBombError as exc:
        info.add_problem("too_large", f"{exc} Not decoded.")
        info.width, info.height = _header_size_from_exiftool(fd, info, timeout)
    except Exception as exc:
        raise_unless_media_error(exc, fp)
        info.add_problem("damaged", describe(exc))
    return None


def _header_size_from_exiftool(
    fd: int, info: MediaInfo, timeout: float
) -> tuple[int | None, int | None]:
    """Width and height from the header when Pillow refused to even open (decompression bomb)."""
    try:
        record = run_exiftool(fd, ("-ImageWidth", "-ImageHeight"), timeout)
    # exiftool missing (RuntimeError) is not fatal here: the size is a nicety for photos.
    except (RuntimeError, subprocess.TimeoutExpired, ExiftoolError) as exc:
        info.add_problem("probe_failed", str(exc))
        return None, None
    return positive_int(pick(record, "ImageWidth")), positive_int(pick(record, "ImageHeight"))


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
        raise_unless_media_error(exc, fp)
        info.add_problem("unreadable_metadata", f"EXIF: {describe(exc)}")
        return {}, {}, {}
    return ifd0, _get_ifd(ifd0, _IFD_EXIF, fp, info), _get_ifd(ifd0, _IFD_GPS, fp, info)


def _get_ifd(exif: Image.Exif, tag: int, fp: IO[bytes], info: MediaInfo) -> Mapping:
    try:
        return exif.get_ifd(tag)
    except Exception as exc:
        raise_unless_media_error(exc, fp)
        info.add_problem("unreadable_metadata", f"EXIF IFD {tag:#x}: {describe(exc)}")
        return {}


def _fill_from_exif(
    info: MediaInfo, img: Image.Image, ifd0: Mapping, exif_ifd: Mapping, gps_ifd: Mapping
) -> None:
    info.camera = camera(ifd0.get(_TAG_MAKE), ifd0.get(_TAG_MODEL))
    raw_orientation = ifd0.get(_TAG_ORIENTATION)
    if img.format == "HEIF":
        # pillow-heif resets the EXIF tag to 1 (libheif rotates while decoding) and keeps the
        # original value here.
        original = img.info.get("original_orientation")
        raw_orientation = raw_orientation if original is None else original
    info.orientation = orientation(raw_orientation, info)
    width, height = img.size
    if img.format == "HEIF" and info.orientation in (5, 6, 7, 8):
        width, height = height, width  # pillow-heif reports the size after rotation
    info.width, info.height = width, height
    info.time_candidates.extend(_exif_time_candidates(ifd0, exif_ifd, info))
    info.gps = gps_from_exif(gps_ifd)


def _exif_time_candidates(
    ifd0: Mapping, exif_ifd: Mapping, info: MediaInfo
) -> Iterator[TimeCandidate]:
    for source, date_tag, in_ifd0, offset_tag, subsec_tag in _EXIF_TIMES:
        raw = (ifd0 if in_ifd0 else exif_ifd).get(date_tag)
        try:
            value = parse_exif_datetime(raw)
        except ValueError:
            info.add_problem("unreadable_metadata", f"{source}: unparseable date {raw!r}")
            continue
        if value is None:
            continue
        value = value.replace(
            microsecond=value.microsecond or subsec_micro(exif_ifd.get(subsec_tag))
        )
        offset = parse_offset(exif_ifd.get(offset_tag))
        yield TimeCandidate(value if offset is None else value.replace(tzinfo=offset), source)


@contextlib.contextmanager
def _warnings_as_problems(info: MediaInfo) -> Iterator[None]:
    """Pillow reports corrupt EXIF only as a warning: record those as problems, not stderr."""
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        # The bomb warning is reported as "too_large" from the size by damage.too_large.
        if not issubclass(warning.category, Image.DecompressionBombWarning):
            info.add_problem("unreadable_metadata", str(warning.message).strip())
