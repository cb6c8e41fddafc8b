"""The web-size JPEG of a photo for social media, with its caption and credit embedded.

``web_copy(config, data, record)`` returns the path of a JPEG whose long side is
``editorial.web_long_side`` (never enlarged), quality ``editorial.web_quality``, progressive,
sRGB, upright (EXIF orientation applied to the pixels), with none of the original's metadata
(no GPS, no camera EXIF, no maker notes), the optional institutional watermark
(``editorial.watermark``) stamped bottom right, and these fields embedded by exiftool:

==============================  ==========================================================
item / setting                  IPTC (IIM, UTF-8)            XMP
==============================  ==========================================================
caption                         Caption-Abstract             dc:description
credit (else the first preset)  By-line, Credit              dc:creator, photoshop:Credit
``editorial.rights``            CopyrightNotice              dc:rights
tags                            Keywords                     dc:subject
people                          -                            Iptc4xmpExt:PersonInImage
place                           Sub-location                 Iptc4xmpCore:Location
SHA-256 of the original         -                            dc:identifier
==============================  ==========================================================

IPTC IIM fields have byte limits (By-line and Credit 32, Keywords 64, CopyrightNotice 128,
Caption-Abstract 2000); they are cut there on a character boundary, XMP carries the whole
value. City is not written: ``place`` is free text ("Sala de Cabildo"), not a city.

How:

* **Decoding** is photo.py's (``ingest.derive.photo``): JPEG shrunk on load by libjpeg's DCT
  scaling (a 24 MP JPEG is decoded at 3000x2000 for 2048 px), HEIF through pillow-heif (libheif
  orients it), PNG/TIFF/WebP in full within Pillow's limit, RAW through its largest embedded
  JPEG (exiftool), ICC profiles converted to sRGB, the same decompression-bomb policy.
* **Embedding**: exiftool reads the JPEG on stdin and writes the result on stdout (``-o -
  -``): an argument list, never a shell, no file name on its command line and no temp file
  of its own. Each value is one ``-GROUP:TAG=value`` argument: exiftool takes everything
  after the first ``=`` literally, so a caption such as ``-o /tmp/x``, ``<=/etc/passwd`` or
  with newlines and quotes is stored verbatim (tests/test_delivery.py checks it). Control
  characters other than newline and tab are dropped first (XML cannot hold them).
* **Cache**: the file is a derivative, ``derivatives/<ab>/<sha256>/web-<key>.jpg``, where
  ``key`` hashes everything that went into it (the embedded values, size, quality, the
  watermark's bytes and scale). A second request with nothing changed returns the same file
  without decoding anything; a changed caption or setting makes a new key, and the item's
  older ``web-*.jpg`` are removed once the new one is in place. The file is written with
  ``atomic_write`` (temp file, fsync, rename): a concurrent reader never sees half a file.
  Requests for one item are serialised by an flock on its derivative folder (no lock file),
  so two phones asking at once make it once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import stat
import subprocess
import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from appliance.config import Config, ConfigError
from appliance.datadir import DataDir
from appliance.fsutil import atomic_write
from ingest.derive import photo, plan

WEB_PREFIX = "web-"
WEB_SUFFIX = ".jpg"
PHOTO_KINDS = ("photo", "raw")
# Bumped when the way a web copy is made changes, so cached copies are made again.
RECIPE_VERSION = 1
EXIFTOOL_TIMEOUT_S = 60.0
WATERMARK_MAX_BYTES = 20 * 1024 * 1024
WATERMARK_MAX_PIXELS = 4096 * 4096
# The watermark never covers more than this fraction of the picture's height.
WATERMARK_MAX_HEIGHT = 0.5
# Margin between the watermark and the picture's edges, as a fraction of the short side.
WATERMARK_MARGIN = 0.02

# IPTC IIM byte limits of the fields written (IIM 4.2, Application Record).
_IPTC_LIMITS = {
    "Caption-Abstract": 2000, "By-line": 32, "Credit": 32, "CopyrightNotice": 128,
    "Keywords": 64, "Sub-location": 32,
}  # fmt: skip
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ARCHIVE = "\0archive"  # key of the resolved archive in original_path's folder cache


class DeliveryError(ValueError):
    """This item cannot be delivered as asked; the message says why (for the person)."""


class NotAPhoto(DeliveryError):
    """A web-size copy was asked of a video, an audio file or anything not a photo."""


class Undecodable(DeliveryError):
    """The photo cannot be decoded (damaged, too large, a RAW without an embedded preview)."""


class WatermarkError(ConfigError):
    """``editorial.watermark`` names a file that cannot be used; the message names the setting."""


# --- the original --------------------------------------------------------------------------


def original_path(data: DataDir, record: dict[str, Any],
                  _folders: dict[str, Path] | None = None) -> Path:
    """The archived original of ``record``, checked to lie inside the archive.

    The catalog wrote ``archive_path``, but a damaged or hand-edited shard must still not lead
    out of the archive, and the file itself must be a regular file, not a link (its folders
    are resolved, its own name is not, so a symlink is seen as one). Raises FileNotFoundError
    when nothing is there and DeliveryError (a ValueError) for a path outside the archive or
    something that is not a regular file. ``_folders`` caches resolved folders (a ZIP of
    thousands of items from a few folders resolves each folder once)."""
    sha = record.get("sha256")
    rel = record.get("archive_path")
    if not isinstance(rel, str) or not rel or rel.endswith("/"):
        raise DeliveryError(f"{sha}: the catalog record has no archive path")
    folder_rel, _, name = rel.rpartition("/")
    folders = {} if _folders is None else _folders
    if _ARCHIVE not in folders:
        folders[_ARCHIVE] = data.archive.resolve()
    parent = folders.get(folder_rel)
    if parent is None:
        parent = (data.root / folder_rel).resolve()
        if not parent.is_relative_to(folders[_ARCHIVE]):
            raise DeliveryError(f"{sha}: archive path {rel!r} lies outside the archive")
        folders[folder_rel] = parent
    if name in ("", ".", ".."):
        raise DeliveryError(f"{sha}: archive path {rel!r} names no file")
    path = parent / name
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "the original is not in the archive",
                                os.fspath(path)) from None
    if not stat.S_ISREG(st.st_mode):
        raise DeliveryError(f"{sha}: {rel} is not a regular file (a link or a special file); "
                            "not sent")
    return path


# --- what is embedded ----------------------------------------------------------------------


def _clean(value: Any) -> str:
    """Text as exiftool gets it: NFC, no control characters but newline and tab, trimmed."""
    if not isinstance(value, str):
        return ""
    value = unicodedata.normalize("NFC", value)
    return "".join(c for c in value
                   if c in "\n\t" or unicodedata.category(c)[0] != "C").strip()  # fmt: skip


def _clip_bytes(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` bytes of UTF-8, never inside a character."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore").rstrip()


def _text_list(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    seen: dict[str, str] = {}
    for item in value:
        text = " ".join(_clean(item).split())
        if text:
            seen.setdefault(text.casefold(), text)
    return list(seen.values())


def embedded_metadata(config: Config, record: dict[str, Any]) -> list[tuple[str, str]]:
    """The (exiftool tag, value) pairs a web copy of ``record`` carries, in order.

    A list tag (keywords, subjects, people) appears once per value. Empty fields are left out.
    The credit falls back to the first of ``editorial.credit_presets``."""
    caption = _clean(record.get("caption"))
    credit = _clean(record.get("credit"))
    if not credit and config.editorial.credit_presets:
        credit = _clean(config.editorial.credit_presets[0])
    rights = _clean(config.editorial.rights)
    place = " ".join(_clean(record.get("place")).split())
    tags = _text_list(record.get("tags"))
    people = _text_list(record.get("people"))
    sha = record.get("sha256", "")

    pairs: list[tuple[str, str]] = []

    def iptc(tag: str, value: str) -> None:
        clipped = _clip_bytes(value, _IPTC_LIMITS[tag])
        if clipped:
            pairs.append((f"IPTC:{tag}", clipped))

    if caption:
        iptc("Caption-Abstract", caption)
        pairs.append(("XMP-dc:Description", caption))
    if credit:
        iptc("By-line", credit)
        iptc("Credit", credit)
        pairs.append(("XMP-dc:Creator", credit))
        pairs.append(("XMP-photoshop:Credit", credit))
    if rights:
        iptc("CopyrightNotice", rights)
        pairs.append(("XMP-dc:Rights", rights))
    for tag in tags:
        iptc("Keywords", tag)
    for tag in tags:
        pairs.append(("XMP-dc:Subject", tag))
    for person in people:
        pairs.append(("XMP-iptcExt:PersonInImage", person))
    if place:
        iptc("Sub-location", place)
        pairs.append(("XMP-iptcCore:Location", place))
    if isinstance(sha, str) and _SHA256.match(sha):
        pairs.append(("XMP-dc:Identifier", sha))
    return pairs


def exiftool_args(pairs: list[tuple[str, str]]) -> list[str]:
    """exiftool's argument list: the JPEG on stdin, the result on stdout, one arg per value."""
    args = ["exiftool", "-q", "-charset", "iptc=UTF8"]
    if any(tag.startswith("IPTC:") for tag, _ in pairs):
        args.append("-IPTC:CodedCharacterSet=UTF8")  # ESC % G: readers decode UTF-8
    args += [f"-{tag}={value}" for tag, value in pairs]
    return [*args, "-o", "-", "-"]


# --- the watermark -------------------------------------------------------------------------


class _Watermark:
    __slots__ = ("digest", "image", "path")

    def __init__(self, path: Path, digest: str, image: Image.Image) -> None:
        self.path = path
        self.digest = digest
        self.image = image


_watermarks: dict[tuple[str, int, int, int], _Watermark] = {}
_watermarks_lock = threading.Lock()


def _watermark_path(config: Config) -> Path | None:
    setting = config.editorial.watermark.strip()
    if not setting:
        return None
    path = Path(setting).expanduser()
    return path if path.is_absolute() else config.data_dir / path


def load_watermark(config: Config) -> _Watermark | None:
    """The watermark PNG of ``editorial.watermark`` (None when the setting is empty).

    A relative path is taken from the data folder. Raises WatermarkError, naming the setting,
    when the file is missing, unreadable or not a PNG: a copy published without the
    institution's mark because a file went missing must not happen silently."""
    path = _watermark_path(config)
    if path is None:
        return None
    where = f"editorial.watermark: {path}"
    try:
        st = path.stat()
    except OSError as exc:
        raise WatermarkError(f"{where}: {exc.strerror or exc}") from None
    cache_key = (os.fspath(path), st.st_ino, st.st_size, st.st_mtime_ns)
    with _watermarks_lock:
        cached = _watermarks.get(cache_key)
    if cached is not None:
        return cached
    if st.st_size > WATERMARK_MAX_BYTES:
        raise WatermarkError(f"{where}: {st.st_size} bytes; a watermark must be a PNG under "
                             f"{WATERMARK_MAX_BYTES // (1024 * 1024)} MiB")
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise WatermarkError(f"{where}: {exc.strerror or exc}") from None
    try:
        with Image.open(io.BytesIO(content), formats=("PNG",)) as opened:
            if opened.width * opened.height > WATERMARK_MAX_PIXELS:
                raise ValueError(f"{opened.width}x{opened.height} pixels; at most "
                                 f"{WATERMARK_MAX_PIXELS} (a logo needs far fewer)")
            opened.load()
            image = opened.convert("RGBA")
    except Exception as exc:  # any decoder complaint: the setting is what is wrong
        raise WatermarkError(f"{where}: not a PNG image Acopio can read ({exc})") from None
    if image.width < 1 or image.height < 1:
        raise WatermarkError(f"{where}: empty image")
    mark = _Watermark(path, hashlib.sha256(content).hexdigest(), image)
    with _watermarks_lock:
        _watermarks.clear()  # one watermark in use at a time: keep only the current one
        _watermarks[cache_key] = mark
    return mark


def stamp(image: Image.Image, mark: Image.Image, scale: float) -> Image.Image:
    """``mark`` (RGBA) over ``image`` (RGB), ``scale`` of its width, bottom right, blended by
    its alpha."""
    width = max(1, round(image.width * scale))
    height = max(1, round(mark.height * width / mark.width))
    max_height = max(1, round(image.height * WATERMARK_MAX_HEIGHT))
    if height > max_height:
        width = max(1, round(width * max_height / height))
        height = max_height
    resized = mark.resize((width, height), Image.Resampling.LANCZOS)
    margin = round(min(image.size) * WATERMARK_MARGIN)
    x = max(0, image.width - width - margin)
    y = max(0, image.height - height - margin)
    image.paste(resized, (x, y), resized)
    return image


# --- making it -----------------------------------------------------------------------------


def web_copy_name(config: Config, record: dict[str, Any]) -> str:
    """The file name of the web copy ``record`` would get with today's settings.

    Raises WatermarkError when the watermark setting is unusable."""
    mark = load_watermark(config)
    recipe = {
        "v": RECIPE_VERSION,
        "long_side": config.editorial.web_long_side,
        "quality": config.editorial.web_quality,
        "watermark": mark.digest if mark else None,
        "watermark_scale": config.editorial.watermark_scale if mark else None,
        "metadata": embedded_metadata(config, record),
    }
    blob = json.dumps(recipe, ensure_ascii=False, sort_keys=True).encode("utf-8")
    return f"{WEB_PREFIX}{hashlib.sha256(blob).hexdigest()[:16]}{WEB_SUFFIX}"


def web_copy(config: Config, data: DataDir, record: dict[str, Any]) -> Path:
    """The web-size JPEG of a photo or RAW item: made on first request, then reused.

    Raises NotAPhoto for video, audio and other kinds; Undecodable for a photo that cannot be
    decoded; FileNotFoundError when the original is missing; WatermarkError for a bad
    ``editorial.watermark``; RuntimeError when exiftool is missing or fails;
    subprocess.TimeoutExpired when it hangs; OSError for I/O errors."""
    kind = record.get("kind")
    sha = record.get("sha256")
    if kind not in PHOTO_KINDS:
        what = {"video": "a video", "audio": "an audio file"}.get(str(kind), f"a {kind!r} item")
        raise NotAPhoto(f"{sha}: web-size copies are made of photos only; this item is {what} "
                        "(download the original instead)")
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise DeliveryError(f"not a SHA-256: {sha!r}")
    source = original_path(data, record)
    name = web_copy_name(config, record)
    folder = plan.folder(data, sha)
    dest = folder / name
    if dest.is_file():
        return dest
    with _item_lock(folder):
        if dest.is_file():  # made by a concurrent request while this one waited
            return dest
        try:
            jpeg = render(config, source, kind)
        except Undecodable as exc:
            raise Undecodable(f"{record.get('original_name') or sha}: {exc}") from None
        jpeg = embed(jpeg, embedded_metadata(config, record))
        atomic_write(dest, jpeg)
        _remove_older(folder, keep=name)
    return dest


def render(config: Config, source: Path, kind: str) -> bytes:
    """The web-size JPEG's pixels, encoded, with no metadata at all (exiftool adds some)."""
    long_side = config.editorial.web_long_side
    mark = load_watermark(config)  # before decoding: a bad setting fails fast
    try:
        decoded = photo._decode(source, kind, long_side)
    except photo._Unusable as exc:
        raise Undecodable(f"cannot make a web copy: {exc.detail}") from None
    image = photo._fit(photo._flatten(decoded.image), long_side)
    orientation, icc = decoded.orientation, decoded.icc
    del decoded
    if orientation in photo._TRANSPOSE:
        image = image.transpose(photo._TRANSPOSE[orientation])
    image = photo._to_srgb(image, icc, [])
    if image.mode != "RGB":
        image = image.convert("RGB")
    if mark is not None:
        image = stamp(image, mark.image, config.editorial.watermark_scale)
    image.info = {}  # nothing of the original's metadata goes out: no EXIF, no GPS, no XMP
    out = io.BytesIO()
    image.save(out, "JPEG", quality=config.editorial.web_quality, progressive=True,
               optimize=True)
    return out.getvalue()


def embed(jpeg: bytes, pairs: list[tuple[str, str]]) -> bytes:
    """``jpeg`` with ``pairs`` written by exiftool (stdin to stdout: no file names, no temp)."""
    from ingest.metadata.children import child_group, stderr_text

    if not pairs:
        return jpeg
    args = exiftool_args(pairs)
    with child_group(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE) as proc:
        out, err = proc.communicate(jpeg, timeout=EXIFTOOL_TIMEOUT_S)
    if proc.returncode != 0 or not out.startswith(b"\xff\xd8\xff"):
        raise RuntimeError(f"exiftool could not embed the web copy's metadata "
                           f"(exit {proc.returncode}): {stderr_text(err)}")
    return out


@contextlib.contextmanager
def _item_lock(folder: Path) -> Iterator[None]:
    """An flock on the item's derivative folder itself: one maker at a time, no lock file."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_older(folder: Path, *, keep: str) -> None:
    for path in folder.glob(f"{WEB_PREFIX}*{WEB_SUFFIX}"):
        if path.name != keep:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
