"""A ZIP of a selection, made while it is sent: bounded memory, nothing written to disk.

``zip_stream(data, records, variant=..., config=...)`` returns an iterator of bytes chunks
(about ``chunk_size`` each) for the web layer to stream as the response body. ``zipfile``
writes into a sink that cannot seek, so it puts each entry's CRC and sizes in a data
descriptor after the entry's bytes; the sink only collects what was written since the last
chunk went out. Entries are stored (``ZIP_STORED``): photos and videos are compressed already,
and deflating them would only cost the box's CPU. ZIP64 is used where needed (an entry over
4 GiB, a ZIP over 4 GiB, more than 65,535 entries) and only there, so ordinary ZIPs open
everywhere.

What is held in memory: one chunk of a file, the bytes written since the last chunk was
yielded (at most about one chunk), and zipfile's list of entries (a few hundred bytes each)
for the central directory at the end, which goes out in one piece: about 100 bytes an entry,
0.5 MB for ``editorial.zip_max_items`` = 5000.

Entries are ``<activity folder>/<original name>`` (for variant "web", the name with ``.jpg``),
made safe for every unzip tool and file system: no ``..``, no absolute paths, no backslashes,
no control or invisible formatting characters, none of Windows' forbidden characters or
device names, no trailing dots or spaces; a name that was not valid UTF-8 (kept by the import
as surrogate escapes) has its stray bytes read as Windows-1252, which is what a name like
``Fotografía.jpg`` from an old Windows machine is. Names that clash (ignoring case, as Windows
and macOS do) get `` (2)``, `` (3)`` before the extension. Each entry is dated by the item's
capture time in the kit's time zone (ZIP dates have no zone).

Files are opened read-only with ``O_NOFOLLOW`` (and ``O_NONBLOCK``, so a FIFO planted in
the archive cannot hang the stream), checked to be regular files inside the archive, and
read in chunks. When the consumer stops (the generator is closed: the HTTP client went away)
the open file is closed at once and nothing is left anywhere: the ZIP never touches the disk.

An item that cannot be included (its original missing, a web copy that cannot be made, a
video in a "web" ZIP) is skipped and named, with the reason, in a text entry at the end of
the ZIP (``ERRORES.txt``). Why skip and tell: by the time an item turns out to be missing,
the response has started and its status (200) is sent, so the request cannot fail
properly; stopping the stream would throw away a download of 2,000 items for one missing
file; and skipping silently would let a person believe they have everything. An I/O error
*in the middle of* a file is different: its first bytes are already sent and cannot be taken
back, so the stream stops with the error (the browser shows a failed download) rather than
deliver a silently cut file.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from appliance.config import Config
from appliance.datadir import DataDir
from appliance.delivery import webcopy

Variant = Literal["original", "web"]
VARIANTS = ("original", "web")
# 256 KiB: under waitress's output buffer limit (above it waitress spools to a temp file)
# and under the web process's mmap threshold (1 MiB chunks were each a fresh mmap):
# 2.7 -> 1.5 s of CPU per GB served (`./scripts/bench web`).
CHUNK_SIZE = 256 * 1024
ERRORS_ENTRY = "ERRORES.txt"
NAME_MAX_CHARS = 150  # per path component: room for " (12)" within every file system's limit
FOLDER_FALLBACK = "sin-carpeta"
NAME_FALLBACK = "archivo"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_ZIP_END = (2107, 12, 31, 23, 59, 58)
_FORBIDDEN = frozenset('<>:"/\\|?*')  # Windows cannot hold these in a name; "/" and "\\" nest
_WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
     *(f"lpt{i}" for i in range(1, 10))}
)  # fmt: skip
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class TooManyItems(webcopy.DeliveryError):
    """The selection has more items than ``editorial.zip_max_items``."""


# --- names ---------------------------------------------------------------------------------


def _readable(name: str) -> str:
    """Surrogate escapes (bytes that were not UTF-8) read as Windows-1252, "_" if undefined."""
    if not any("\udc80" <= c <= "\udcff" for c in name):
        return name
    out = []
    for c in name:
        if "\udc80" <= c <= "\udcff":
            out.append(bytes([ord(c) - 0xDC00]).decode("cp1252", "replace").replace("\ufffd",
                                                                                     "_"))
        else:
            out.append(c)
    return "".join(out)


def safe_component(name: str, fallback: str = NAME_FALLBACK) -> str:
    """One path component that every unzip tool and file system takes as a plain name."""
    name = unicodedata.normalize("NFC", _readable(name if isinstance(name, str) else ""))
    chars = []
    for c in name:
        if c.isspace():  # newlines and tabs too: one space
            chars.append(" ")
        elif c in _FORBIDDEN or unicodedata.category(c)[0] == "C":  # control, format chars
            chars.append("_")
        else:
            chars.append(c)
    name = " ".join("".join(chars).split())  # tabs, newlines, runs of spaces: one space
    name = name.lstrip(". ").rstrip(". ")  # "..", hidden files, Windows' trailing dots
    if not name:
        return fallback
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    if stem.casefold() in _WINDOWS_DEVICES or name.casefold() in _WINDOWS_DEVICES:
        name = f"_{name}"
    if len(name) > NAME_MAX_CHARS:
        ext = f".{ext}" if dot and 0 < len(ext) <= 10 else ""
        name = name[: NAME_MAX_CHARS - len(ext)].rstrip(". ") + ext
    return name


def _split_ext(name: str) -> tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return name, ""
    return stem, f".{ext}"


def base_name(record: dict[str, Any], variant: Variant) -> str:
    """``<folder>/<name>`` of ``record`` in a ZIP of ``variant``, before clashes are settled."""
    folder_key = record.get("folder")
    folder = folder_key.rsplit("/", 1)[-1] if isinstance(folder_key, str) else ""
    original = record.get("original_name")
    if not isinstance(original, str) or not original:
        archive_path = record.get("archive_path")
        original = archive_path.rsplit("/", 1)[-1] if isinstance(archive_path, str) else ""
    name = safe_component(original)
    if variant == "web":
        name = safe_component(f"{_split_ext(name)[0]}.jpg")
    return f"{safe_component(folder, FOLDER_FALLBACK)}/{name}"


class _Names:
    """Unique entry names, compared as Windows and macOS would (ignoring case)."""

    def __init__(self) -> None:
        self.taken: set[str] = set()
        self.next: dict[str, int] = {}  # name -> the next number to try: no quadratic search

    def claim(self, name: str) -> str:
        key = name.casefold()
        if key not in self.taken:
            self.taken.add(key)
            self.next[key] = 2
            return name
        folder, _, file = name.rpartition("/")
        stem, ext = _split_ext(file)
        n = self.next.get(key, 2)
        while True:
            candidate = f"{folder}/{stem} ({n}){ext}" if folder else f"{stem} ({n}){ext}"
            n += 1
            if candidate.casefold() not in self.taken:
                break
        self.next[key] = n
        self.taken.add(candidate.casefold())
        return candidate


def entry_names(records: Iterable[dict[str, Any]], variant: Variant = "original") -> list[str]:
    """The entry names a ZIP of ``records`` would use if every item were included."""
    names = _Names()
    return [names.claim(base_name(r, variant)) for r in records]


def _date_time(record: dict[str, Any], config: Config | None) -> tuple[int, ...]:
    """The capture time as a ZIP date (local to the kit; ZIP holds 1980 to 2107)."""
    try:
        when = datetime.fromisoformat(record["captured_at"])
    except (KeyError, TypeError, ValueError):
        return _ZIP_EPOCH
    if when.tzinfo is not None and config is not None:
        when = when.astimezone(config.zone)
    stamp = (when.year, when.month, when.day, when.hour, when.minute, when.second)
    return min(max(stamp, _ZIP_EPOCH), _ZIP_END)


def zip_name(records: list[dict[str, Any]], *, variant: Variant = "original",
             config: Config | None = None, now: datetime | None = None) -> str:
    """A download name: ``<folder>-N-elementos.zip`` when the selection is one activity
    folder, else ``acopio-YYYY-MM-DD-N-elementos.zip`` (today, in the kit's time zone);
    ``-web`` before ``.zip`` for web-size copies. ASCII only."""
    count = len({r.get("sha256") for r in records})
    noun = "elemento" if count == 1 else "elementos"
    folders = {r.get("folder") for r in records}
    folder = next(iter(folders)) if len(folders) == 1 else None
    if isinstance(folder, str) and folder:
        prefix = safe_component(folder.rsplit("/", 1)[-1], "acopio")
    else:
        now = now or datetime.now(config.zone if config else None)
        if config is not None and now.tzinfo is not None:
            now = now.astimezone(config.zone)
        prefix = f"acopio-{now:%Y-%m-%d}"
    prefix = prefix.encode("ascii", "ignore").decode() or "acopio"
    suffix = "-web" if variant == "web" else ""
    return f"{prefix}-{count}-{noun}{suffix}.zip"


# --- the stream ----------------------------------------------------------------------------


class _Sink:
    """Where zipfile writes: it can tell its position but not seek, and keeps only the bytes
    written since the last ``take``."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.pending = 0
        self.position = 0
        self.discard = False

    def write(self, data: bytes) -> int:
        n = len(data)
        self.position += n
        if not self.discard and n:
            self.parts.append(bytes(data))
            self.pending += n
        return n

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        parts, self.parts, self.pending = self.parts, [], 0
        return parts[0] if len(parts) == 1 else b"".join(parts)


def zip_stream(data: DataDir, records: list[dict[str, Any]], *, variant: Variant = "original",
               config: Config, chunk_size: int = CHUNK_SIZE,
               force_zip64: bool = False) -> Iterator[bytes]:
    """The ZIP of ``records`` (catalog records) as an iterator of bytes chunks.

    Checks what can be checked before a byte is sent, so the web layer can still answer with
    an error status: raises ValueError for a bad variant or chunk size, TooManyItems over
    ``editorial.zip_max_items``, and for variant "web" WatermarkError for a bad
    ``editorial.watermark`` and RuntimeError when exiftool is not installed. An item listed
    twice is included once. ``force_zip64`` writes every entry with ZIP64 extra fields."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of bytes, not {chunk_size!r}")
    unique = list({r.get("sha256"): r for r in records}.values())
    limit = config.editorial.zip_max_items
    if len(unique) > limit:
        raise TooManyItems(f"{len(unique)} items selected; a ZIP holds at most {limit} "
                           "(editorial.zip_max_items)")
    if variant == "web":
        from ingest.metadata.children import find_program

        webcopy.load_watermark(config)
        find_program("exiftool")
    return _stream(data, unique, variant, config, chunk_size, force_zip64)


def _stream(data: DataDir, records: list[dict[str, Any]], variant: Variant, config: Config,
            chunk_size: int, force_zip64: bool) -> Iterator[bytes]:
    sink = _Sink()
    archive = zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED,
                              allowZip64=True)
    names = _Names()
    folders: dict[str, Path] = {}  # resolved archive folders
    skipped: list[tuple[str, str, str]] = []
    finished = False
    try:
        for record in records:
            try:
                fd = _open_source(data, record, variant, config, folders)
            except _Skip as exc:
                # Named as the original is: "clip.mp4", not the "clip.jpg" it would have been.
                skipped.append((base_name(record, "original"), str(record.get("sha256")),
                                exc.reason))
                continue
            try:
                size = os.fstat(fd).st_size
                info = zipfile.ZipInfo(names.claim(base_name(record, variant)),
                                       _date_time(record, config))
                info.compress_type = zipfile.ZIP_STORED
                info.create_system = 3  # Unix: the mode below is honoured by unzip
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                info.file_size = size  # decides ZIP64 before the header goes out
                with archive.open(info, "w", force_zip64=force_zip64) as entry:
                    remaining = size
                    while remaining > 0:
                        block = os.read(fd, min(chunk_size, remaining))
                        if not block:
                            raise OSError(f"{info.filename}: the file shrank while it was "
                                          "being sent")
                        entry.write(block)
                        remaining -= len(block)
                        del block
                        if sink.pending >= chunk_size:
                            yield sink.take()
            finally:
                os.close(fd)
        if skipped:
            archive.writestr(_errors_info(config), _errors_text(skipped, variant))
        archive.close()
        finished = True
        if sink.pending:
            yield sink.take()
    finally:
        if not finished:
            # The consumer went away (GeneratorExit) or an error stops the stream: the files
            # are closed already; drop what zipfile still wants to write.
            sink.discard = True
            with contextlib.suppress(Exception):
                archive.close()
            sink.parts.clear()


class _Skip(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _open_source(data: DataDir, record: dict[str, Any], variant: Variant, config: Config,
                 folders: dict[str, Path]) -> int:
    """An open descriptor on what goes into the ZIP for ``record``, or _Skip with why not."""
    try:
        if variant == "web":
            if record.get("kind") not in webcopy.PHOTO_KINDS:
                kind = {"video": "video", "audio": "audio"}.get(str(record.get("kind")),
                                                               str(record.get("kind")))
                raise _Skip(f"no hay copia web de un {kind}; descargue el original "
                            f"(no web-size copy of {kind}: download the original)")
            try:
                return _open_regular(webcopy.web_copy(config, data, record))
            except FileNotFoundError:
                # Replaced by a newer copy (an edit) between making and opening it: once more.
                return _open_regular(webcopy.web_copy(config, data, record))
        return _open_regular(webcopy.original_path(data, record, folders))
    except _Skip:
        raise
    except FileNotFoundError:
        raise _Skip("falta el original en el archivo (missing from the archive)") from None
    except (OSError, webcopy.DeliveryError, RuntimeError, subprocess.SubprocessError) as exc:
        raise _Skip(str(exc) or type(exc).__name__) from None


def _open_regular(path: Path) -> int:
    fd = os.open(path, _OPEN_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path.name}: not a regular file")
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _errors_info(config: Config) -> zipfile.ZipInfo:
    now = datetime.now(config.zone)
    info = zipfile.ZipInfo(ERRORS_ENTRY, (now.year, now.month, now.day, now.hour,
                                          now.minute, now.second))
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    return info


def _errors_text(skipped: list[tuple[str, str, str]], variant: Variant) -> bytes:
    what = "originales" if variant == "original" else "copias web"
    count = len(skipped)
    lines = [
        f"Estos {count} elementos de la selección no se incluyeron en el ZIP ({what}):"
        if count > 1 else f"Este elemento de la selección no se incluyó en el ZIP ({what}):",
        f"These {count} selected items are not in this ZIP:"
        if count > 1 else "This selected item is not in this ZIP:",
        "",
    ]
    for name, sha, reason in skipped:
        lines.append(f"- {name}")
        lines.append(f"  sha256: {sha}")
        lines.append(f"  motivo: {' '.join(reason.split())}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8-sig")  # BOM: Notepad reads UTF-8
