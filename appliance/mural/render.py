"""Drawing the mural's boxes with Pillow, and writing the PDF and its PNG preview.

Each sheet is one RGB image at the print resolution (A1 at 150 dpi: 3508 x 4967 px, 52 MB),
drawn and written to the PDF before the next one is made, so memory holds one sheet, one
photo being decoded and the small previews. The PDF is Pillow's: each sheet an image with
the PDF's resolution set to the dpi, so the page measures exactly the paper (A1: 1684 x 2384
pt); JPEG inside at quality 92 without chroma subsampling (sharp coloured text). The preview
PNG beside it (`FILE.png`) shows every sheet 1000 px wide, side by side.

Photos are drawn from their screen preview (`preview.jpg`, 1600 px, already upright and
sRGB) when it has the pixels the box needs, else decoded from the original the way web-size
copies are (shrunk on load, EXIF orientation applied, sRGB). A photo that cannot be drawn
(original missing, damaged) leaves a grey box and is reported (`unavailable`).

`cached_mural` keeps the files the web UI offers under `state/reports/`, named by a hash of
everything that went into them (the month's content, the paper, the settings, the fonts):
asking again with nothing changed sends the same files; a new caption or approval makes new
ones, and the month's older files for that paper are removed (all but the one before,
which a request may still be sending).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from PIL import Image, ImageDraw, ImageOps

from appliance.agenda import Agenda
from appliance.config import Config
from appliance.datadir import DataDir
from appliance.fsutil import atomic_write, file_lock, fsync_dir, open_temp
from appliance.mural import fonts as fonts_mod
from appliance.mural.content import MuralContent, MuralPhoto, gather
from appliance.mural.fonts import Fonts
from appliance.mural.layout import PALETTE, Box, Layout, layout
from appliance.query import ItemIndex
from ingest.derive import plan

RECIPE_VERSION = 1
PREVIEW_WIDTH = 1000
PREVIEW_GAP = 24
PDF_QUALITY = 92
# Use the preview unless it would have to be enlarged by more than this.
PREVIEW_STRETCH = 1.05
REPORTS = "reports"


@dataclass
class Rendered:
    pdf: Path
    png: Path
    summary: dict[str, Any]


def reports_dir(data: DataDir) -> Path:
    return data.state / REPORTS


# --- photos -------------------------------------------------------------------------------


class PhotoLoader:
    """Each photo's pixels at exactly its box's size, cropped to fill it (a photo keeps its
    shape in the layout, so the crop only trims what the aspect bounds cut)."""

    def __init__(self, data: DataDir, photos: list[MuralPhoto]) -> None:
        self.data = data
        self.photos = {p.sha256: p for p in photos}
        self.unavailable: list[str] = []
        self.sources: dict[str, str] = {}  # sha256 -> "preview" | "original"

    def load(self, box: Box) -> Image.Image | None:
        photo = self.photos[box.sha256]
        size = (box.w, box.h)
        image = self._from_preview(photo, size, strict=True) or self._from_original(photo, size) \
            or self._from_preview(photo, size, strict=False)
        if image is None:
            self.unavailable.append(photo.sha256)
        return image

    def _from_preview(self, photo: MuralPhoto, size: tuple[int, int], *,
                      strict: bool) -> Image.Image | None:
        path = plan.path(self.data, photo.sha256, "preview")
        try:
            with Image.open(path, formats=("JPEG",)) as opened:
                scale = max(size[0] / opened.width, size[1] / opened.height)
                if strict and scale > PREVIEW_STRETCH:
                    return None  # the original has the pixels this box needs
                opened.draft("RGB", (math.ceil(opened.width * scale),
                                     math.ceil(opened.height * scale)))
                image = ImageOps.exif_transpose(opened.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError):
            return None
        self.sources[photo.sha256] = "preview"
        return ImageOps.fit(image, size, Image.Resampling.LANCZOS)

    def _from_original(self, photo: MuralPhoto, size: tuple[int, int]) -> Image.Image | None:
        from appliance.delivery import webcopy
        from ingest.derive import photo as photo_mod

        aspect = photo.aspect
        box_aspect = size[0] / size[1]
        # The long side that covers the box, with room for the aspect's rounding.
        if aspect >= box_aspect:
            long_side = max(size[1] * aspect, size[1])
        else:
            long_side = max(size[0], size[0] / aspect)
        long_side = math.ceil(long_side * 1.1)
        record = {"sha256": photo.sha256, "archive_path": photo.archive_path}
        try:
            source = webcopy.original_path(self.data, record)
            decoded = photo_mod._decode(source, photo.kind, long_side)
            image = photo_mod._fit(photo_mod._flatten(decoded.image), long_side)
            orientation, icc = decoded.orientation, decoded.icc
            del decoded
            if orientation in photo_mod._TRANSPOSE:
                image = image.transpose(photo_mod._TRANSPOSE[orientation])
            image = photo_mod._to_srgb(image, icc, [])
            if image.mode != "RGB":
                image = image.convert("RGB")
        except (photo_mod._Unusable, OSError, ValueError, RuntimeError,
                Image.DecompressionBombError):
            return None
        except Exception:  # a decoder's complaint about a hostile file: not printable
            return None
        self.sources[photo.sha256] = "original"
        return ImageOps.fit(image, size, Image.Resampling.LANCZOS)


# --- drawing --------------------------------------------------------------------------------


def draw_page(result: Layout, number: int, loader: PhotoLoader, fonts: Fonts) -> Image.Image:
    page = result.page
    image = Image.new("RGB", (page.width, page.height), PALETTE["paper"])
    draw = ImageDraw.Draw(image)
    for box in result.boxes:
        if box.page != number:
            continue
        if box.kind == "photo":
            photo = loader.load(box)
            if photo is None:
                draw.rectangle((box.x, box.y, box.right - 1, box.bottom - 1),
                               fill=(200, 200, 200))
            else:
                image.paste(photo, (box.x, box.y))
                photo.close()
        elif box.lines:
            face = fonts.face(box.style, box.size)
            for i, line in enumerate(box.lines):
                draw.text((box.x + box.inset, box.y + i * box.line_height + box.top), line,
                          font=face, fill=PALETTE[box.color], anchor="la")
        else:
            draw.rectangle((box.x, box.y, box.right - 1, box.bottom - 1),
                           fill=PALETTE[box.color])
    return image


@contextlib.contextmanager
def _temp_file(folder: Path) -> Iterator[tuple[Path, IO[bytes]]]:
    """A temp file beside the destination, flocked while written (so `acopio check` tells a
    live one from a dead writer's debris), removed unless the caller renamed it."""
    fd, path = open_temp(folder, flags=os.O_RDWR)
    try:
        with os.fdopen(fd, "w+b") as fp:
            yield path, fp
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def write_files(result: Layout, content: MuralContent, pdf: Path, png: Path,
                loader: PhotoLoader, fonts: Fonts) -> None:
    """The PDF (every sheet) and the preview PNG, each written whole or not at all."""
    pdf.parent.mkdir(parents=True, exist_ok=True)
    png.parent.mkdir(parents=True, exist_ok=True)
    previews: list[Image.Image] = []
    title = f"{content.title} — {content.month_label}"
    with _temp_file(pdf.parent) as (pdf_tmp, pdf_fp):
        for number in range(result.pages):
            sheet = draw_page(result, number, loader, fonts)
            sheet.save(pdf_fp, "PDF", resolution=result.page.dpi, append=number > 0,
                       quality=PDF_QUALITY, subsampling=0, title=title,
                       author=content.institution, creator="Acopio")
            height = round(sheet.height * PREVIEW_WIDTH / sheet.width)
            previews.append(sheet.resize((PREVIEW_WIDTH, height), Image.Resampling.LANCZOS,
                                         reducing_gap=3.0))
            sheet.close()
        pdf_fp.flush()
        os.fsync(pdf_fp.fileno())
        width = PREVIEW_WIDTH * len(previews) + PREVIEW_GAP * (len(previews) - 1)
        sheet_height = max(p.height for p in previews)
        combined = Image.new("RGB", (width, sheet_height), (160, 160, 160))
        for i, preview in enumerate(previews):
            combined.paste(preview, (i * (PREVIEW_WIDTH + PREVIEW_GAP), 0))
        with _temp_file(png.parent) as (png_tmp, png_fp):
            combined.save(png_fp, "PNG", compress_level=6)
            png_fp.flush()
            os.fsync(png_fp.fileno())
            os.replace(pdf_tmp, pdf)
            os.replace(png_tmp, png)
    fsync_dir(pdf.parent)
    if png.parent != pdf.parent:
        fsync_dir(png.parent)


# --- the whole thing --------------------------------------------------------------------------


def summary(content: MuralContent, result: Layout, loader: PhotoLoader, pdf: Path, png: Path,
            seconds: float) -> dict[str, Any]:
    placed = {b.sha256 for b in result.photos}
    activities = [a for a in content.activities if any(p.sha256 in placed for p in a.photos)]
    return {
        "month": content.month, "month_label": content.month_label,
        "pdf": os.fspath(pdf), "png": os.fspath(png),
        "activities": len(activities), "approved": len(content.photos),
        "photos": len(placed), **result.as_dict(),
        "unavailable": list(loader.unavailable),
        "sources": dict(loader.sources), "seconds": round(seconds, 2),
        "content": content.as_dict(),
    }


def render_mural(config: Config, data: DataDir, content: MuralContent, paper: str,
                 pdf: Path, png: Path) -> dict[str, Any]:
    """Lay out and draw `content`; the summary (the layout's boxes among it)."""
    started = time.monotonic()
    fonts = Fonts()
    result = layout(content, paper, config.mural.dpi,
                    photos_per_activity=config.mural.photos_per_activity, fonts=fonts)
    loader = PhotoLoader(data, content.photos)
    write_files(result, content, pdf, png, loader, fonts)
    return summary(content, result, loader, pdf, png, time.monotonic() - started)


def make_mural(config: Config, data: DataDir, month: str, paper: str, pdf: Path, *,
               index: ItemIndex | None = None, agenda: Agenda | None = None) -> Rendered:
    """The mural of `month` on `paper` as `pdf`, with its preview beside it (`.png`).
    Raises NoApprovedPhotos when the month has none."""
    png = pdf.with_suffix(".png")
    own_index = index is None
    index = index or ItemIndex(data, config.zone)
    try:
        content = gather(config, data, index, agenda or Agenda(data.state, config.kit.name),
                         month)
    finally:
        if own_index:
            index.close()
    return Rendered(pdf, png, render_mural(config, data, content, paper, pdf, png))


def cache_key(config: Config, content: MuralContent, paper: str) -> str:
    recipe = {"v": RECIPE_VERSION, "paper": paper, "dpi": config.mural.dpi,
              "photos_per_activity": config.mural.photos_per_activity,
              "fonts": fonts_mod.identity(), "content": content.as_dict()}
    # surrogateescape: a name read from a card that is not UTF-8 keeps its bytes
    blob = json.dumps(recipe, ensure_ascii=False, sort_keys=True).encode("utf-8",
                                                                         "surrogateescape")
    return hashlib.sha256(blob).hexdigest()[:20]


def cached_mural(config: Config, data: DataDir, index: ItemIndex, agenda: Agenda, month: str,
                 paper: str) -> Rendered:
    """The mural's files under state/reports/, made when missing or out of date. Raises
    NoApprovedPhotos."""
    content = gather(config, data, index, agenda, month)
    key = cache_key(config, content, paper)
    folder = reports_dir(data)
    stem = f"mural-{month}-{paper}-"
    pdf, png, manifest = (folder / f"{stem}{key}{ext}" for ext in (".pdf", ".png", ".json"))
    with file_lock(folder / ".mural.lock"):
        if pdf.is_file() and png.is_file() and manifest.is_file():
            return Rendered(pdf, png, json.loads(manifest.read_text()))
        made = render_mural(config, data, content, paper, pdf, png)
        atomic_write(manifest, json.dumps(made, ensure_ascii=False).encode())
        prune(folder, stem, made=key)
        return Rendered(pdf, png, made)


def prune(folder: Path, stem: str, *, made: str, keep: int = 2) -> None:
    """Remove all but `keep` versions of the files named `stem<key>.*`: the one just made
    (key `made`, kept whatever its time says: after the clock stepped back it was the
    "oldest"), and the newest other, which a request that found it a moment ago may still be
    sending."""
    versions: dict[str, list[Path]] = {}
    for path in folder.glob(f"{stem}*"):
        versions.setdefault(path.name[len(stem):].split(".", 1)[0], []).append(path)
    versions.pop(made, None)
    keep -= 1

    def newest(paths: list[Path]) -> float:
        times = []
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                times.append(path.stat().st_mtime)
        return max(times, default=0.0)

    ordered = sorted(versions.values(), key=newest, reverse=True)
    for paths in ordered[keep:]:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
