"""Damage detection at import: a structural check per photo format that decodes no pixels.

Why: the import must stay close to copy speed on a Raspberry Pi-class box, and decoding to find
damage cost more than the copy (a 1/8-scale JPEG decode: 60-100 ms per 10 MB photo on x86; a
full HEIF decode: over 300 ms per iPhone photo). Every photo is decoded later anyway, when the
background jobs make thumbnails, and those record a failed decode as damage. What the import
must catch, so that the archivist sees it at once, is the damage that happens to files on
cards: a cut (card pulled, copy interrupted). A cut shows in the structure, so that is all that
is read here, a few KB per file:

* JPEG and MPO: marker segments, the end-of-image marker, the MP index (see jpeg).
* HEIF: every item's extents lie inside the file (see heif).
* PNG: Pillow's ``verify()``, which reads every chunk and checks its CRC but inflates nothing.
* TIFF: the strips or tiles of every frame end inside the file.
* WEBP: nothing more to do. Pillow's WEBP plugin demuxes the whole file when it opens it
  (libwebp checks every chunk size then), so a cut WEBP already fails to open.

Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) is respected: an image over it is
reported as "too_large" (the thumbnail jobs will not decode it either). Not a JPEG's: the
thumbnail job decodes one far over it when shrink-on-load makes it small, and records
"too_large" itself when it will not (``ingest.derive.photo.jpeg_bomb_refusal``). Since nothing here
decodes, the structural checks still run on such an image, so a cut in it is reported too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import IO

from PIL import Image

from ingest.metadata.heif import check_heif
from ingest.metadata.info import MediaInfo
from ingest.metadata.jpeg import check_jpeg
from ingest.metadata.reading import Damaged, describe, raise_unless_media_error, reader_for
from ingest.metadata.values import int_tuple

# Frames checked in a multi-image file, at most. Hostile files can claim thousands.
_FRAME_CHECK_LIMIT = 16


def check_structure(fp: IO[bytes], img: Image.Image, size: int, info: MediaInfo) -> None:
    """Look for damage in the open image ``img`` read from ``fp`` (``size`` bytes), by format.

    Records "damaged" (and "too_large" for a further frame over the pixel limit); I/O errors
    propagate as OSError.
    """
    reader = reader_for(fp)
    if img.format in ("JPEG", "MPO"):

        def jpeg() -> None:
            check_jpeg(reader, size, _mp_entries(img), max_frames=_FRAME_CHECK_LIMIT)

        _guard(fp, info, jpeg)
    elif img.format == "HEIF":
        _guard(fp, info, lambda: check_heif(reader, size))
        _guard(fp, info, lambda: _note_too_large(_frame_sizes(img), info))
    elif img.format == "PNG":
        _guard(fp, info, lambda: _verify_png(fp))
    elif img.format == "TIFF":
        _guard(fp, info, lambda: _check_tiff_extents(img, size, info))


def _guard(fp: IO[bytes], info: MediaInfo, check: Callable[[], object]) -> None:
    """Run a check; a parser's complaint becomes a "damaged" problem, I/O errors propagate."""
    try:
        check()
    except Image.DecompressionBombError as exc:
        info.add_problem("too_large", f"{exc} Not decoded.")
    except Exception as exc:
        raise_unless_media_error(exc, fp)
        info.add_problem("damaged", describe(exc))


def too_large(size: tuple[int, int], info: MediaInfo) -> bool:
    """Pillow's decompression-bomb limit, checked before any decode; records "too_large"."""
    limit = Image.MAX_IMAGE_PIXELS
    pixels = max(1, size[0]) * max(1, size[1])
    if limit is None or pixels <= limit:
        return False
    info.add_problem(
        "too_large", f"{size[0]}x{size[1]} = {pixels} pixels exceeds {limit}; not decoded"
    )
    return True


def _note_too_large(sizes: Iterable[tuple[int, int]], info: MediaInfo) -> None:
    for frame_size in sizes:
        too_large(frame_size, info)


def _mp_entries(img: Image.Image) -> list[tuple[int, int]]:
    """(offset, size) per image of the MP index Pillow parsed; empty without one."""
    mpinfo = getattr(img, "mpinfo", None)  # set when Pillow opened the file as MPO
    if mpinfo is None and "mp" in img.info:
        # An MP index in a file Pillow keeps as JPEG (an Ultra HDR photo and its gain map).
        # Pillow has already warned if the index is malformed; that is not damage.
        with contextlib.suppress(Exception):
            mpinfo = img._getmp()
    if not mpinfo:
        return []
    try:
        return [(int(entry["DataOffset"]), int(entry["Size"])) for entry in mpinfo[0xB002]]
    except (KeyError, TypeError, ValueError) as exc:
        raise Damaged(f"unreadable MP index: {describe(exc)}") from exc


def _frame_sizes(img: Image.Image) -> Iterator[tuple[int, int]]:
    """The size of every frame (up to the limit); seeking a frame decodes nothing."""
    for index in range(_frame_count(img)):
        img.seek(index)
        yield img.size


def _verify_png(fp: IO[bytes]) -> None:
    """Pillow's verify() (chunk CRCs through IEND) on a fresh open; it spoils the image."""
    fp.seek(0)
    with Image.open(fp, formats=("PNG",)) as fresh:
        fresh.verify()


def _check_tiff_extents(img: Image.Image, size: int, info: MediaInfo) -> None:
    """TIFF truncation shows as strips or tiles that end past the end of the file."""
    for index in range(_frame_count(img)):
        img.seek(index)
        tags = img.tag_v2
        offsets = int_tuple(tags.get(273) or tags.get(324))
        counts = int_tuple(tags.get(279) or tags.get(325))
        end = max((o + c for o, c in zip(offsets, counts, strict=False)), default=0)
        if end > size:
            info.add_problem(
                "damaged", f"image file is truncated (frame {index} needs {end} bytes, has {size})"
            )
            return


def _frame_count(img: Image.Image) -> int:
    return min(getattr(img, "n_frames", 1), _FRAME_CHECK_LIMIT)
