"""Photo derivatives: a grid thumbnail and a screen preview, as sRGB JPEGs without metadata.

``render_photo(source, kind, outputs)`` opens the original once, decodes it once at the smallest
size that still covers the largest output, makes that output, then makes each smaller one from
the image in memory (the thumbnail from the preview). It returns the problems found in the
source, ``[]`` when there were none; a source that cannot be shown gets a placeholder.

Why it is built this way (a Raspberry Pi-class box, 1-8 GB, several workers):

* **Shrink-on-load.** JPEG and MPO (first frame) are decoded by libjpeg's DCT scaling
  (``Image.draft``: 1/2, 1/4 or 1/8, the largest factor that keeps the decode at least as big
  as the largest output), then resized (``resize(..., reducing_gap=2)``: an integer
  ``reduce`` first when the gap allows it) with LANCZOS for thumbnails, BICUBIC for
  previews. A 24 MP JPEG is decoded at 3000x2000 for a 1600 px preview and at 750x500 for a
  thumbnail alone, never at full size. HEIF has no reduced decode (libheif) but may hold a
  thumbnail: pillow-heif's ``draft`` decodes that one instead when it covers the largest
  output (iPhones store 320x240: a thumbnail-only job), else the whole image. PNG, TIFF and
  WebP are decoded in full, then reduced.
* **RAW** (kind "raw") is never decoded: exiftool extracts the largest embedded JPEG
  (JpgFromRaw, PreviewImage or ThumbnailImage; the file as stdin, an argument list, a timeout)
  and that JPEG goes the JPEG way. Its orientation is the preview's own EXIF one when it has
  one, else the RAW's.
* **Orientation** (``ImageOps.exif_transpose`` semantics) is applied to the small image after
  the resize: the draft box is computed on the stored (unrotated) size, which has the same long
  side. HEIF is the exception: libheif rotates while decoding and pillow-heif resets the EXIF
  tag to 1 (the original stays in ``info["original_orientation"]``), so nothing is turned again.
* **Colour.** Embedded ICC profiles (Adobe RGB, Display P3, CMYK press profiles, grey) are
  converted to sRGB with LittleCMS (``ImageCms``, relative colorimetric with black point
  compensation), on the small image. A CMYK JPEG without a profile (Adobe's inverted CMYK is
  un-inverted by Pillow's decoder) is converted with a generic SWOP profile when the system has
  one (Ghostscript's, Debian ``libgs-common``), else with Pillow's naive formula. Alpha is
  composited on white; 16-bit greys are scaled, not clipped. The output carries no ICC profile
  (browsers take untagged JPEG as sRGB), no EXIF (no GPS), no XMP and no comment.
* **Decompression bombs.** ``Image.MAX_IMAGE_PIXELS`` stays as it is, process-wide: nothing
  here changes it. An image over it is refused ("too_large", placeholder) unless it is a JPEG
  that shrink-on-load makes small: 200 MP phone photos (16320x12240) are real. A JPEG or MPO
  over Pillow's limit is decoded only when all of these hold (``jpeg_bomb_refusal``):

  - at most ``JPEG_MAX_PIXELS`` (400 MP) in its header;
  - baseline: a progressive JPEG makes libjpeg keep every DCT coefficient of the whole image
    (2 bytes per sample: about 600 MB for 200 MP at 4:2:0) whatever the scaling;
  - the drafted decode is at most ``DRAFT_MAX_PIXELS`` (12 MP: 48 MB in Pillow's 4-byte RGB).

  Such a JPEG is opened with the JPEG plugin's factory directly (``Image.open`` is where
  Pillow applies its limit), which leaves the global limit in force for every other image and
  every other thread. Measured: a 200 MP baseline JPEG to thumbnail and preview peaks at about
  50 MB RSS (tests/test_derive_photo.py).
* **Damage.** A file that cannot be decoded gets a placeholder (a grey image with a broken-image
  mark) and a "damaged" problem; nothing raises for bad media. Pillow's
  ``LOAD_TRUNCATED_IMAGES`` stays off, so a cut JPEG is reported, not half shown. A cut HEIF
  would decode with the missing tiles painted green (libheif does not complain), so HEIF files
  are first checked with the import's structural check (``ingest.metadata.heif``).
* **Memory** (peak RSS of the whole worker process, measured): 24 MP baseline JPEG to
  thumbnail + preview 63-68 MB (the 3000x2000 draft is 24 MB: Pillow keeps RGB in 4 bytes a
  pixel), thumbnail alone 27 MB; 200 MP JPEG 50 MB. What a scaled decode cannot bound: a
  progressive JPEG within Pillow's limit (libjpeg buffers all its coefficients: 24 MP takes
  about 118 MB) and HEIF (decoded in full: a 12 MP iPhone photo about 130 MB, unless its
  embedded thumbnail serves).
* **Writes are atomic** (``appliance.fsutil.atomic_write``: temp file in the destination
  folder, fsync, rename, fsync folder): a half-written derivative never has its final name.
  ``durable=False`` leaves the fsyncs to the caller (one ``syncfs`` per batch).

Errors that are not the file's fault propagate, for the job queue to retry: OSError with an
errno (EIO from a failing disk, a full derivative disk), RuntimeError when exiftool is missing,
subprocess.TimeoutExpired when exiftool hangs on a RAW file.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from PIL import Image, JpegImagePlugin

from appliance.fsutil import atomic_write

THUMB_SIZE = 320  # grid thumbnail, long side in px
PREVIEW_SIZE = 1600  # screen preview, long side in px
THUMB_QUALITY = 85
PREVIEW_QUALITY = 88  # every output that is not named "thumb"

# Decompression-bomb policy for JPEG/MPO over Image.MAX_IMAGE_PIXELS (see the module docstring).
JPEG_MAX_PIXELS = 400_000_000
DRAFT_MAX_PIXELS = 12_000_000
# PNG, TIFF and WebP are decoded whole, at about 6 bytes a pixel at the peak (measured: an
# 88 MP PNG or TIFF took the worker to 505 MB, a 48 MP 16-bit PNG to 295 MB), which a 1 GB
# box running the web UI, an import and the kiosk's Chromium cannot spare. 40 MP keeps an A4
# page scanned at 600 dpi (35 MP).
FULL_DECODE_MAX_PIXELS = 40_000_000

# exiftool reads a whole RAW file (previews are often at its end): tens of MB on an SD card.
RAW_TIMEOUT = 120.0
# Embedded JPEGs exiftool may find in a RAW file; the largest wins.
RAW_PREVIEW_TAGS = ("JpgFromRaw", "PreviewImage", "ThumbnailImage")

# A generic CMYK profile for CMYK JPEGs that embed none (Debian libgs-common: US SWOP coated).
CMYK_FALLBACK_PROFILES = (
    "/usr/share/color/icc/ghostscript/default_cmyk.icc",
    "/usr/share/color/icc/ghostscript/ps_cmyk.icc",
)

PLACEHOLDER_GREY = (158, 158, 158)
_PLACEHOLDER_INK = (112, 112, 112)
_PLACEHOLDER_ASPECT = (4, 3)

# LANCZOS up to this long side (thumbnails: sharpest, and cheap at that size); BICUBIC above
# (a 1600 px preview from a 3000x2000 draft: 43 ms instead of Lanczos's 59 here).
_LANCZOS_UP_TO = 640
_REDUCING_GAP = 2.0
_WHITE = (255, 255, 255)
_TAG_ORIENTATION = 0x0112
# EXIF orientation -> the transposition that shows the image upright (as ImageOps.exif_transpose).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_KINDS = ("photo", "raw")

Problem = dict[str, str]


class _Unusable(Exception):
    """The source cannot be shown; a placeholder is made instead and ``code`` recorded."""

    def __init__(self, code: str, detail: str, size: tuple[int, int] | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.size = size  # the picture's size as displayed, when the header told it


class _Decoded:
    """What a decoder hands over (a plain class: dataclasses would cost a worker's start-up)."""

    __slots__ = ("icc", "image", "orientation")

    def __init__(self, image: Image.Image, orientation: int, icc: bytes | None) -> None:
        self.image = image  # loaded, maybe drafted; still in its stored orientation
        self.orientation = orientation  # EXIF orientation to apply (1 for HEIF: libheif did)
        self.icc = icc


def render_photo(
    source: Path, kind: str, outputs: Mapping[str, tuple[Path, int]], *, durable: bool = True
) -> list[Problem]:
    """Write a JPEG for each ``outputs`` name -> (destination, long side in px).

    ``kind`` is the item's kind: "photo" (JPEG, MPO, HEIF, PNG, TIFF, WebP) or "raw". Returns
    the problems found in the source as ``{"code", "detail"}`` dicts ("damaged", "too_large",
    "no_preview" with a placeholder written; "unreadable_metadata" for a colour profile that
    could not be used, with a real derivative). Images are never enlarged. Raises OSError on an
    I/O error, RuntimeError when exiftool is missing (RAW), subprocess.TimeoutExpired when it
    hangs, ValueError for a bad ``kind`` or size.

    Every output is written atomically. ``durable=False`` skips the two fsyncs per output
    (file and folder: about 11 ms of a 24 MP thumbnail's 80 ms here, more on an SD card), for a
    worker that makes a batch durable at once with ``appliance.fsutil.syncfs`` before it
    records the batch as done; the rename still never shows a half-written file.
    """
    if kind not in _KINDS:
        raise ValueError(f"render_photo: unknown kind {kind!r}; expected one of {_KINDS}")
    order = sorted(outputs.items(), key=lambda item: item[1][1], reverse=True)
    for name, (_, size) in order:
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"render_photo: output {name!r} has a bad size {size!r}")
    if not order:
        return []
    problems: list[Problem] = []
    largest = order[0][1][1]
    try:
        decoded = _decode(Path(source), kind, largest)
    except _Unusable as exc:
        problems.append({"code": exc.code, "detail": exc.detail})
        for _, (path, size) in order:
            data = _encode(placeholder(exc.size, size), PREVIEW_QUALITY)
            atomic_write(path, data, durable=durable)
        return problems
    image, orientation, icc = decoded.image, decoded.orientation, decoded.icc
    del decoded  # the decoded pixels go as soon as the first resize has made its own
    image = _fit(_flatten(image), largest)
    if orientation in _TRANSPOSE:
        image = image.transpose(_TRANSPOSE[orientation])
    image = _to_srgb(image, icc, problems)
    image.info = {}  # nothing of the original's metadata (EXIF, XMP, comment) goes out
    for name, (path, size) in order:
        image = _fit(image, size)
        quality = THUMB_QUALITY if name == "thumb" else PREVIEW_QUALITY
        atomic_write(path, _encode(image, quality), durable=durable)
    return problems


def fit_size(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """``size`` scaled so that its long side is at most ``long_side``; never enlarged."""
    width, height = size
    longest = max(width, height)
    if longest <= long_side:
        return width, height
    scale = long_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def jpeg_bomb_refusal(
    size: tuple[int, int], drafted: tuple[int, int], progressive: bool
) -> str | None:
    """Why a JPEG of ``size`` (decoded at ``drafted``) must not be decoded, or None.

    Pillow's limit (``Image.MAX_IMAGE_PIXELS``) decides up to itself; above it, see the module
    docstring for the three conditions of the memory bound.
    """
    limit = Image.MAX_IMAGE_PIXELS
    pixels = size[0] * size[1]
    if limit is None or pixels <= limit:
        return None
    where = f"{size[0]}x{size[1]} = {pixels} pixels exceeds Pillow's limit of {limit}"
    if pixels > JPEG_MAX_PIXELS:
        return f"{where} and the {JPEG_MAX_PIXELS} allowed for a JPEG decoded scaled down"
    if progressive:
        return f"{where}; progressive JPEG: a scaled decode still buffers the whole image"
    if drafted[0] * drafted[1] > DRAFT_MAX_PIXELS:
        return (
            f"{where}; a scaled decode would still be {drafted[0]}x{drafted[1]} "
            f"(over {DRAFT_MAX_PIXELS} pixels)"
        )
    return None


def placeholder(size: tuple[int, int] | None, long_side: int) -> Image.Image:
    """A neutral grey picture with a broken-image mark, of the source's shape when known."""
    from PIL import ImageDraw

    shape = size if size and min(size) > 0 else _PLACEHOLDER_ASPECT
    scale = long_side / max(shape)
    width, height = (max(1, round(side * scale)) for side in shape)
    image = Image.new("RGB", (width, height), PLACEHOLDER_GREY)
    draw = ImageDraw.Draw(image)
    unit = min(width, height) / 8
    line = max(1, round(unit / 4))
    cx, cy = width / 2, height / 2
    left, top, right, bottom = cx - 2 * unit, cy - 1.5 * unit, cx + 2 * unit, cy + 1.5 * unit
    draw.rectangle((left, top, right, bottom), outline=_PLACEHOLDER_INK, width=line)
    # A mountain and a sun, torn apart by a zigzag: "this picture is broken".
    draw.line(
        [(left, bottom - 0.4 * unit), (cx - 0.8 * unit, cy), (cx, cy + 0.8 * unit),
         (cx + 0.9 * unit, cy - 0.3 * unit), (right, bottom - 0.6 * unit)],
        fill=_PLACEHOLDER_INK, width=line,
    )  # fmt: skip
    sun = 0.4 * unit
    draw.ellipse((left + unit - sun, top + unit - sun, left + unit + sun, top + unit + sun),
                 outline=_PLACEHOLDER_INK, width=line)  # fmt: skip
    zigzag = [(cx + (0.35 if i % 2 else -0.35) * unit, top - 0.3 * unit + i * 0.75 * unit)
              for i in range(6)]  # fmt: skip
    draw.line(zigzag, fill=PLACEHOLDER_GREY, width=3 * line)
    draw.line(zigzag, fill=_PLACEHOLDER_INK, width=line)
    return image


# --- decoding -----------------------------------------------------------------------------


def _decode(source: Path, kind: str, long_side: int) -> _Decoded:
    """Open and decode the source at the smallest size covering ``long_side``."""
    if kind == "raw":
        preview, raw_orientation = _raw_preview(source)
        return _decode_jpeg(io.BytesIO(preview), long_side, fallback_orientation=raw_orientation)
    with open(source, "rb") as fp:
        head = fp.read(16)
        fp.seek(0)
        if head.startswith(b"\xff\xd8\xff"):
            return _decode_jpeg(fp, long_side, fallback_orientation=1)
        if head[4:8] == b"ftyp":
            return _decode_heif(fp, long_side)
        return _decode_other(fp, head)


def _decode_jpeg(fp: IO[bytes], long_side: int, *, fallback_orientation: int) -> _Decoded:
    """JPEG and MPO (first frame): opened without Image.open's bomb check, bounded here."""
    with _media_errors():
        # Image.open would refuse a 200 MP photo outright; jpeg_bomb_refusal bounds it instead.
        image = JpegImagePlugin.jpeg_factory(fp)
    size = image.size
    orientation = _orientation(image, fallback_orientation)
    shown = _shown_size(size, orientation)
    progressive = bool(image.info.get("progressive") or image.info.get("progression"))
    with _media_errors(shown):
        # The box is in stored (unrotated) pixels: same long side as the displayed picture.
        image.draft("RGB", fit_size(size, long_side))
    refusal = jpeg_bomb_refusal(size, image.size, progressive)
    if refusal is not None:
        raise _Unusable("too_large", f"{refusal}; not decoded", shown)
    with _media_errors(shown):
        image.load()
    # Not closed: Image.close() would drop the decoded pixels too; the caller closes fp.
    return _Decoded(image, orientation, image.info.get("icc_profile") or None)


def _decode_heif(fp: IO[bytes], long_side: int) -> _Decoded:
    """HEIF/HEIC: checked for cuts, then decoded in full (libheif rotates while decoding).

    libheif has no reduced decode, but pillow-heif's ``draft`` picks an embedded thumbnail
    that covers ``long_side`` when the file has one (iPhones store 320x240 beside the photo),
    which a thumbnail-only job then decodes instead of the 12 MP image.
    """
    import pillow_heif

    from ingest.metadata.heif import check_heif
    from ingest.metadata.reading import fd_reader, reader_for

    pillow_heif.register_heif_opener()  # idempotent
    with fd_reader(fp.fileno()) as reader:
        with _media_errors(reader=reader):
            # libheif paints the tiles of a cut file green instead of failing.
            check_heif(reader_for(reader), os.fstat(fp.fileno()).st_size)
            image = Image.open(reader, formats=("HEIF",))
        _check_pillow_limit(image.size)
        with _media_errors(image.size, reader):
            image.draft(None, fit_size(image.size, long_side))
            image.load()
        # The EXIF orientation is 1 now; info["original_orientation"] was applied.
        return _Decoded(image, 1, image.info.get("icc_profile") or None)


def _decode_other(fp: IO[bytes], head: bytes) -> _Decoded:
    """PNG, TIFF and WebP: decoded in full (no reduced decode), within Pillow's limit."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        fmt = "PNG"
    elif head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        from PIL import TiffImagePlugin  # noqa: F401  (registers TIFF without loading them all)

        fmt = "TIFF"
    elif head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        from PIL import WebPImagePlugin  # noqa: F401

        fmt = "WEBP"
    else:
        raise _Unusable("damaged", f"not a photo format Acopio reads (starts with {head[:8]!r})")
    with _media_errors():
        image = Image.open(fp, formats=(fmt,))
    _check_pillow_limit(image.size)
    with _media_errors(image.size):
        image.load()
    orientation = _orientation(image, 1)  # after load: a PNG eXIf chunk may follow the pixels
    return _Decoded(image, orientation, image.info.get("icc_profile") or None)


def _check_pillow_limit(size: tuple[int, int]) -> None:
    """Formats without a reduced decode (PNG, TIFF, WebP) keep to Pillow's limit (Image.open
    only warns up to 2x) and to FULL_DECODE_MAX_PIXELS, the box's memory."""
    limit = Image.MAX_IMAGE_PIXELS
    pixels = size[0] * size[1]
    if limit is not None and pixels > limit:
        raise _Unusable(
            "too_large",
            f"{size[0]}x{size[1]} = {pixels} pixels exceeds Pillow's limit of {limit}; "
            "this format has no reduced decode; not decoded",
            size,
        )
    if pixels > FULL_DECODE_MAX_PIXELS:
        raise _Unusable(
            "too_large",
            f"{size[0]}x{size[1]} = {pixels} pixels exceeds the {FULL_DECODE_MAX_PIXELS} "
            "decoded whole on this box (this format has no reduced decode: it would take "
            f"about {pixels * 6 // 2**20} MB of memory); not decoded",
            size,
        )


def _orientation(image: Image.Image, fallback: int) -> int:
    """The EXIF orientation (1-8); ``fallback`` without the tag, 1 when it is unreadable."""
    try:
        value = image.getexif().get(_TAG_ORIENTATION)
    except Exception:  # bad EXIF is the metadata probe's to report; the pixels may be fine
        return 1
    if value is None:
        return fallback
    try:
        value = int(value)
    except (TypeError, ValueError):
        return 1
    return value if 1 <= value <= 8 else 1


def _shown_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


# Errors parsers raise on hostile input (as ingest.metadata.reading.PARSER_ERRORS; that module
# is imported only for HEIF and RAW, to keep a worker's start light). OSError is apart.
_PARSER_ERRORS = (
    ValueError, RuntimeError, EOFError, SyntaxError, IndexError, KeyError, TypeError,
    ZeroDivisionError, struct.error,
)  # fmt: skip


@contextlib.contextmanager
def _media_errors(
    size: tuple[int, int] | None = None, reader: IO[bytes] | None = None
) -> Iterator[None]:
    """Turn a decoder's complaint into _Unusable; I/O errors (with an errno) propagate."""
    try:
        yield
    except _Unusable:
        raise
    except Image.DecompressionBombError as exc:
        raise _Unusable("too_large", f"{exc} Not decoded.", size) from exc
    except MemoryError as exc:
        raise _Unusable("too_large", "out of memory while decoding", size) from exc
    except Exception as exc:
        # pillow-heif turns a failed read into SyntaxError; the fd_reader remembers the OSError.
        io_error = getattr(getattr(reader, "raw", None), "io_error", None)
        if io_error is not None:
            raise io_error from exc
        if (isinstance(exc, OSError) and exc.errno is None) or isinstance(exc, _PARSER_ERRORS):
            raise _Unusable("damaged", str(exc).strip() or type(exc).__name__, size) from exc
        raise


def raw_preview_args() -> list[str]:
    """exiftool's command line for a RAW file's embedded JPEGs (base64 in JSON) on stdin."""
    return ["exiftool", "-j", "-b", "-n", "-G0", "-Orientation",
            *(f"-{tag}" for tag in RAW_PREVIEW_TAGS), "-"]  # fmt: skip


def _raw_preview(source: Path) -> tuple[bytes, int]:
    """The largest JPEG embedded in a RAW file and the RAW's orientation (1 when unknown)."""
    import json

    from ingest.metadata.children import child_fd, run_child, stderr_text
    from ingest.metadata.raw import pick

    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with child_fd(fd) as child:
            # The file as stdin, never its name (a name may look like an option).
            result = run_child(raw_preview_args(), stdin=child, pass_fds=(), timeout=RAW_TIMEOUT)
    finally:
        os.close(fd)
    try:
        record = json.loads(result.stdout)[0]
        if not isinstance(record, dict):
            raise TypeError("not an object")
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise _Unusable(
            "damaged",
            f"exiftool could not read it (exit {result.returncode}): {stderr_text(result.stderr)}",
        ) from exc
    previews = [data for key, value in record.items()
                if key.rpartition(":")[2] in RAW_PREVIEW_TAGS
                and (data := _base64_jpeg(value)) is not None]  # fmt: skip
    if not previews:
        error = pick(record, "Error")
        if error or result.returncode != 0:  # "Unknown file type" comes on stderr, exit 1
            detail = error or stderr_text(result.stderr)
            raise _Unusable("damaged", f"exiftool (exit {result.returncode}): {detail}")
        raise _Unusable("no_preview", "no embedded JPEG preview (RAW data is not decoded)")
    orientation = pick(record, "Orientation")
    orientation = orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1
    return max(previews, key=len), orientation


def _base64_jpeg(value: Any) -> bytes | None:
    """exiftool -j -b gives binary values as "base64:..."; keep those that are JPEGs."""
    import base64

    if not isinstance(value, str) or not value.startswith("base64:"):
        return None
    try:
        data = base64.b64decode(value[len("base64:") :])
    except ValueError:
        return None
    return data if data.startswith(b"\xff\xd8\xff") else None


# --- pixels -------------------------------------------------------------------------------


def _flatten(image: Image.Image) -> Image.Image:
    """RGB, L or CMYK: alpha composited on white, 16-bit scaled to 8, palettes expanded."""
    mode = image.mode
    if mode in ("RGB", "L", "CMYK"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode == "I" or mode.startswith("I;16"):
        wide = image if mode == "I" else image.convert("I")
        return wide.point(lambda value: value / 257).convert("L")  # 0-65535 -> 0-255
    if mode == "F":
        return image.convert("L")
    if mode == "LAB":
        from PIL import ImageCms

        return ImageCms.profileToProfile(
            image, ImageCms.createProfile("LAB"), _srgb_profile(), outputMode="RGB"
        )
    if mode == "P" and "transparency" not in image.info:
        return image.convert("RGB")
    if mode in ("RGBA", "RGBa", "LA", "La", "PA", "P"):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, _WHITE)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat.convert("L") if mode in ("LA", "La") else flat
    return image.convert("RGB")


def _fit(image: Image.Image, long_side: int) -> Image.Image:
    size = fit_size(image.size, long_side)
    if size == image.size:
        return image
    small = long_side <= _LANCZOS_UP_TO
    resample = Image.Resampling.LANCZOS if small else Image.Resampling.BICUBIC
    return image.resize(size, resample, reducing_gap=_REDUCING_GAP)


def _to_srgb(image: Image.Image, icc: bytes | None, problems: list[Problem]) -> Image.Image:
    """sRGB (or untagged grey) pixels from ``image`` in its embedded profile ``icc``."""
    if icc is None and image.mode != "CMYK":
        return image
    from PIL import ImageCms

    try:
        if icc is not None:
            transform = _icc_transform(icc, image.mode)
        else:
            transform = _cmyk_fallback_transform()
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        problems.append({"code": "unreadable_metadata", "detail": f"ICC profile: {exc}"})
        transform = None
    if transform is None:
        return image if image.mode in ("RGB", "L") else image.convert("RGB")
    return ImageCms.applyTransform(image, transform)


def _srgb_profile() -> Any:
    from PIL import ImageCms

    return ImageCms.createProfile("sRGB")


@functools.lru_cache(maxsize=16)
def _icc_transform(icc: bytes, mode: str) -> Any:
    """An ImageCms transform from ``icc`` (for ``mode`` pixels) to sRGB; None for sRGB."""
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    if mode == "RGB" and ImageCms.getProfileDescription(profile).strip().lower().startswith("srgb"):
        return None  # already sRGB: nothing to do
    return _build_transform(profile, mode)


@functools.lru_cache(maxsize=1)
def _cmyk_fallback_transform() -> Any:
    """CMYK without an embedded profile: a generic SWOP profile if the system has one."""
    from PIL import ImageCms

    for path in CMYK_FALLBACK_PROFILES:
        if os.path.exists(path):
            return _build_transform(ImageCms.getOpenProfile(path), "CMYK")
    return None  # Pillow's naive conversion


def _build_transform(profile: Any, mode: str) -> Any:
    from PIL import ImageCms

    return ImageCms.buildTransform(
        profile, _srgb_profile(), mode, "RGB",
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
        # NOCACHE: LittleCMS's one-pixel cache is not safe for a transform shared by threads.
        flags=ImageCms.Flags.BLACKPOINTCOMPENSATION | ImageCms.Flags.NOCACHE,
    )  # fmt: skip


def _encode(image: Image.Image, quality: int) -> bytes:
    """A progressive JPEG; nothing but the pixels (no EXIF, ICC, XMP or comment)."""
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, progressive=True, optimize=False)
    return out.getvalue()
