"""The printed mural and the results report, on a real archive: photos made with distinct
solid colours, imported by the real `acopio ingest`, derived by `acopio worker --once`,
filed into agenda activities of three areas, some approved by Dirección and some not.

Every check looks at what was really made: the PDF's page size with `pdfinfo`, the page
rendered back by poppler's `pdftoppm`, each approved photo found by its colour at its box
and on the page, no unapproved one anywhere, the layout's boxes (no overlaps, inside the
margins, every line measured again with the font it is drawn with).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape
from PIL import Image, ImageChops, ImageFilter, ImageStat

from appliance.agenda import Activity, Agenda
from appliance.catalog import Catalog
from appliance.datadir import DataDir
from appliance.editorial import Editor
from appliance.mural.content import MuralActivity, MuralContent, MuralPhoto
from appliance.mural.fonts import Fonts
from appliance.mural.layout import PAPERS, Box, Layout, layout
from appliance.mural.text import ELLIPSIS, clean
from appliance.web.i18n import MESSAGES
from tests.cards import exif_jpeg, ffmpeg_audio, ffmpeg_video
from tests.conftest import require_tool, run_cli
from tests.webclient import ZONE, WebApp, web_app

MONTH = "2026-11"
DIRECTOR = "directora"

# Solid colours, far from each other and from the mural's own ink, accent and greys.
APPROVED = {
    "obra-1.jpg": (0, 160, 255),
    "obra-2.jpg": (255, 200, 0),
    "luz-1.jpg": (0, 200, 80),
    "festival-1.jpg": (255, 100, 0),
    "festival-2.jpg": (160, 0, 255),
    "salud-1.jpg": (0, 220, 220),
}
# Stored sideways (EXIF orientation 6): left half pink, right half dark blue, so upright it
# is pink on top and dark blue below.
ROTATED = "luz-girada.jpg"
ROTATED_TOP, ROTATED_BOTTOM = (255, 0, 160), (40, 40, 200)
NOT_APPROVED = {
    "obra-3.jpg": (200, 255, 100),  # in an activity of the month, never approved
    "festival-3.jpg": (120, 60, 0),
    "suelta.jpg": (90, 255, 200),  # in no activity
    "octubre.jpg": (0, 100, 60),  # approved, but of another month
}
LONG_CAPTION = "Vecinos de la colonia " + "muy " * 200 + "contentos."
WORD_CAPTION = "Supercalifragilísticoespialidoso" * 12
HTML_CAPTION = '<script>alert("pie")</script> <b>Entrega</b> de luminarias & más'
HOSTILE_TITLE = "Festival de Otoño <b>¡gratis!</b> \u202eodnum\u202c"
HOSTILE_AREA = 'Desarrollo Social & <i onmouseover="x()">Bienestar</i>'
TOLERANCE = 28  # per channel, after two JPEG encodings and poppler's rendering


def _activity(slug: str, title: str, area: str, place: str, day: int, start: int, end: int,
              month: int = 11) -> Activity:
    return Activity(slug=slug, title=title, area=area, place=place,
                    start=datetime(2026, month, day, start, 0, tzinfo=ZONE),
                    end=datetime(2026, month, day, end, 0, tzinfo=ZONE))


AGENDA = (
    _activity("obra-calle-juarez", "Arranque de obra en la calle Juárez", "Obras Públicas",
              "Calle Juárez", 5, 9, 13),
    _activity("entrega-de-luminarias", "Entrega de luminarias", "Obras Públicas",
              "Col. Centro", 12, 17, 20),
    _activity("festival-de-otono", HOSTILE_TITLE, "Cultura", "Plaza Principal", 15, 10, 22),
    _activity("feria-de-salud", "Feria de la salud", HOSTILE_AREA, "Deportivo Norte", 20, 9,
              14),
    _activity("sesion-de-cabildo", "Sesión de cabildo", "Cultura", "Palacio", 25, 9, 11),
    _activity("informe-octubre", "Informe de octubre", "Obras Públicas", "Palacio", 20, 9,
              12, month=10),
)


@dataclass
class Archive:
    data_dir: Path
    sha: dict[str, str]  # original name -> sha256

    def copy_to(self, data_dir: Path) -> Path:
        shutil.copytree(self.data_dir, data_dir, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("query.sqlite*", "reports"))
        return data_dir


def _rotated_jpeg(path: Path, when: str) -> None:
    exif_jpeg(path, when, "-06:00", size=(240, 320), color=ROTATED_TOP)
    with Image.open(path) as opened:
        exif = opened.getexif()
    image = Image.new("RGB", (240, 320), ROTATED_TOP)
    image.paste(ROTATED_BOTTOM, (120, 0, 240, 320))
    exif[0x0112] = 6
    image.save(path, "JPEG", exif=exif, quality=90)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    root = tmp_path_factory.mktemp("mural")
    data = root / "data"
    DataDir.at(data).ensure()
    agenda = Agenda(DataDir.at(data).state)
    for activity in AGENDA:
        agenda.add(activity)
    card = root / "card" / "DCIM" / "100CANON"
    shots = {  # name -> (local capture time, size)
        "obra-1.jpg": ("2026:11:05 09:30:00", (320, 240)),
        "obra-2.jpg": ("2026:11:05 09:40:00", (240, 320)),
        "obra-3.jpg": ("2026:11:05 09:50:00", (320, 240)),
        "luz-1.jpg": ("2026:11:12 17:30:00", (320, 240)),
        "festival-1.jpg": ("2026:11:15 11:00:00", (320, 240)),
        "festival-2.jpg": ("2026:11:15 11:10:00", (320, 213)),
        "festival-3.jpg": ("2026:11:15 11:20:00", (320, 240)),
        "salud-1.jpg": ("2026:11:20 10:00:00", (300, 300)),
        "suelta.jpg": ("2026:11:28 10:00:00", (320, 240)),
        "octubre.jpg": ("2026:10:20 10:00:00", (320, 240)),
    }
    colours = {**APPROVED, **NOT_APPROVED}
    for name, (when, size) in shots.items():
        exif_jpeg(card / name, when, "-06:00", size=size, color=colours[name])
    _rotated_jpeg(card / ROTATED, "2026:11:12 17:40:00")
    ffmpeg_video(root / "card" / "PRIVATE" / "clip.mp4", "2026-11-05T16:00:00Z")
    wav = ffmpeg_audio(root / "card" / "AUDIO" / "entrevista.wav", "2026-11-15T18:00:00Z")
    moment = datetime(2026, 11, 15, 12, 0, tzinfo=ZONE).timestamp()
    import os

    os.utime(wav, (moment, moment))  # a WAV carries no creation time: its file time counts
    done = run_cli("--data-dir", data, "ingest", root / "card")
    assert done.returncode == 0, done.stderr.decode()
    worked = run_cli("--data-dir", data, "worker", "--once", timeout=300)
    assert worked.returncode == 0, worked.stderr.decode()
    items = json.loads(run_cli("--data-dir", data, "items", "--json").stdout)
    sha = {item["original_name"]: item["sha256"] for item in items}
    assert len(sha) == len(shots) + 3, sorted(sha)
    by_name = {item["original_name"]: item for item in items}
    assert by_name["suelta.jpg"]["activity"] == "sin-actividad"
    assert by_name["clip.mp4"]["activity"] == "obra-calle-juarez"
    assert by_name["entrevista.wav"]["activity"] == "festival-de-otono"
    assert by_name[ROTATED]["activity"] == "entrega-de-luminarias"

    editor = Editor(DataDir.at(data))
    editor.edit(sha["obra-1.jpg"], {"caption": "Arranque de la obra.", "rating": 5},
                by=DIRECTOR)
    editor.edit(sha["obra-2.jpg"], {"caption": LONG_CAPTION, "rating": 3, "pick": "picked",
                                    "credit": "Ana Pérez"}, by=DIRECTOR)
    editor.edit(sha["luz-1.jpg"], {"caption": HTML_CAPTION}, by=DIRECTOR)
    editor.edit(sha["festival-2.jpg"], {"caption": WORD_CAPTION, "rating": 4}, by=DIRECTOR)
    editor.edit(sha["obra-3.jpg"], {"caption": "No aprobada", "rating": 5}, by=DIRECTOR)
    editor.approve([sha[n] for n in [*APPROVED, ROTATED, "octubre.jpg", "clip.mp4"]],
                   by=DIRECTOR)
    return Archive(data_dir=data, sha=sha)


# -- looking at a rendered page ----------------------------------------------------------------


def _mask(image: Image.Image, colour: tuple[int, int, int], tolerance: int = TOLERANCE
          ) -> Image.Image:
    """White where the pixel is within `tolerance` of `colour` in every channel."""
    bands = [band.point(lambda v, c=c: 255 if abs(v - c) <= tolerance else 0)
             for band, c in zip(image.convert("RGB").split(), colour, strict=True)]
    return ImageChops.multiply(ImageChops.multiply(bands[0], bands[1]), bands[2])


def has_region(image: Image.Image, colour: tuple[int, int, int], side: int = 9) -> bool:
    """A solid `side` x `side` patch of `colour` somewhere (text antialiasing makes none)."""
    return _mask(image, colour).filter(ImageFilter.MinFilter(side)).getbbox() is not None


def region_colour(image: Image.Image, box: Box, top: float = 0.2, bottom: float = 0.8
                  ) -> tuple[float, ...]:
    """The mean colour of the middle of `box` (the part between `top` and `bottom` of its
    height, a fifth in from each side)."""
    crop = image.crop((box.x + box.w // 5, box.y + round(box.h * top),
                       box.right - box.w // 5, box.y + round(box.h * bottom)))
    return tuple(ImageStat.Stat(crop).mean)


def near(actual: tuple[float, ...], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - e) <= TOLERANCE for a, e in zip(actual, expected, strict=True))


def pdfinfo(path: Path) -> dict[str, str]:
    out = subprocess.run([require_tool("pdfinfo"), str(path)], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return dict(line.split(":", 1) for line in out.splitlines() if ":" in line)


def page_points(path: Path) -> tuple[float, float]:
    match = re.match(r"\s*([\d.]+) x ([\d.]+) pts", pdfinfo(path)["Page size"])
    assert match, pdfinfo(path)
    return float(match[1]), float(match[2])


def pdftoppm(path: Path, dpi: int = 150) -> list[Path]:
    prefix = path.with_name(path.stem + "-poppler")
    subprocess.run([require_tool("pdftoppm"), "-r", str(dpi), "-png", str(path), str(prefix)],
                   check=True, timeout=300, capture_output=True)
    return sorted(path.parent.glob(prefix.name + "-*.png"))


def boxes_of(manifest: dict[str, Any]) -> list[Box]:
    fields = set(Box.__dataclass_fields__)
    return [Box(**{k: tuple(v) if k == "lines" else v for k, v in b.items() if k in fields})
            for b in manifest["boxes"]]


def check_geometry(boxes: list[Box], width: int, height: int, margin: int) -> None:
    """No two boxes overlap; every box lies inside the margins."""
    for box in boxes:
        assert box.w > 0 and box.h > 0, box
        assert margin <= box.x and box.right <= width - margin, box
        assert margin <= box.y and box.bottom <= height - margin, box
    for i, box in enumerate(boxes):
        for other in boxes[i + 1:]:
            assert not box.overlaps(other), (box, other)


def check_text_fits(boxes: list[Box], fonts: Fonts) -> None:
    """Every line's ink, measured with the font it is drawn with, lies inside its box."""
    for box in boxes:
        if not box.lines:
            continue
        face = fonts.face(box.style, box.size)
        assert box.h == box.line_height * len(box.lines), box
        for i, line in enumerate(box.lines):
            assert line and line == line.strip(), box
            assert fonts.length(box.style, box.size, line) <= box.w - 2 * box.inset, (line, box)
            left, top, right, bottom = face.getbbox(line, anchor="la")
            assert box.inset + left >= 0 and box.inset + right <= box.w, (line, box)
            y = i * box.line_height + box.top
            assert y + top >= 0 and y + bottom <= box.h, (line, box)
            assert not re.search(r"[\u202a-\u202e\u2066-\u2069\u200b-\u200f]", line), line


# -- the mural from the command line -------------------------------------------------------------


@dataclass
class Made:
    pdf: Path
    png: Path
    manifest: dict[str, Any]
    seconds: float


def make(archive: Archive, out: Path, size: str) -> Made:
    started = time.monotonic()
    done = run_cli("--data-dir", archive.data_dir, "mural", "--month", MONTH, "--size", size,
                   "--out", out, "--json", timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    return Made(out, out.with_suffix(".png"), json.loads(done.stdout),
                time.monotonic() - started)


@pytest.fixture(scope="module")
def a3(archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> Made:
    return make(archive, tmp_path_factory.mktemp("a3") / "mural.pdf", "A3")


@pytest.fixture(scope="module")
def a3_page(a3: Made) -> Image.Image:
    pages = pdftoppm(a3.pdf)
    assert len(pages) == 1
    with Image.open(pages[0]) as opened:
        return opened.convert("RGB")


def test_a3_is_exactly_a3_at_print_resolution(a3: Made, a3_page: Image.Image) -> None:
    width_pt, height_pt = page_points(a3.pdf)
    assert abs(width_pt - 842) <= 1 and abs(height_pt - 1191) <= 1
    assert pdfinfo(a3.pdf)["Pages"].strip() == "1"
    # poppler at 150 dpi gives the pixels of a page of 297 x 420 mm at 150 dpi
    assert abs(a3_page.width - 297 / 25.4 * 150) <= 1.5
    assert abs(a3_page.height - 420 / 25.4 * 150) <= 1.5
    assert (a3_page.width, a3_page.height) == (a3.manifest["width"], a3.manifest["height"])
    assert a3.manifest["dpi"] >= 150 and a3.manifest["paper"] == "A3"
    with Image.open(a3.png) as preview:
        assert preview.format == "PNG" and preview.width == 1000
        assert abs(preview.height - 1000 * 420 / 297) <= 2


def test_every_approved_photo_of_the_month_and_no_other(archive: Archive, a3: Made,
                                                         a3_page: Image.Image) -> None:
    photos = {b.sha256: b for b in boxes_of(a3.manifest) if b.kind == "photo"}
    expected = {archive.sha[name] for name in [*APPROVED, ROTATED]}
    assert set(photos) == expected
    assert a3.manifest["photos"] == len(expected) == a3.manifest["approved"]
    assert a3.manifest["activities"] == 4 and a3.manifest["omitted"] == []
    assert a3.manifest["unavailable"] == []
    for name, colour in APPROVED.items():
        box = photos[archive.sha[name]]
        assert near(region_colour(a3_page, box), colour), (name, region_colour(a3_page, box))
        assert has_region(a3_page, colour), name
    rotated = photos[archive.sha[ROTATED]]
    assert rotated.w > rotated.h  # upright: landscape
    assert near(region_colour(a3_page, rotated, 0.1, 0.35), ROTATED_TOP)
    assert near(region_colour(a3_page, rotated, 0.65, 0.9), ROTATED_BOTTOM)
    for name, colour in NOT_APPROVED.items():
        assert not has_region(a3_page, colour), name
    # the preview shows the same photos
    with Image.open(a3.png) as preview:
        preview_rgb = preview.convert("RGB")
    for name, colour in APPROVED.items():
        assert has_region(preview_rgb, colour, 3), name
    for name, colour in NOT_APPROVED.items():
        assert not has_region(preview_rgb, colour, 3), name


def test_best_photos_first_and_each_activity_in_its_area(archive: Archive, a3: Made) -> None:
    content = a3.manifest["content"]
    assert [a["area"] for a in content["areas"]] == ["Cultura", clean(HOSTILE_AREA),
                                                    "Obras Públicas"]
    obras = content["areas"][2]["activities"]
    assert [a["slug"] for a in obras] == ["obra-calle-juarez", "entrega-de-luminarias"]
    assert [p["sha256"] for p in obras[0]["photos"]] == [archive.sha["obra-1.jpg"],
                                                         archive.sha["obra-2.jpg"]]
    festival = content["areas"][0]["activities"][0]
    assert festival["photos"][0]["sha256"] == archive.sha["festival-2.jpg"]  # 4 stars
    assert festival["place"] == "Plaza Principal"
    assert festival["when"] == "domingo 15 de noviembre de 2026, 10:00–22:00"
    assert content["month_label"] == "Noviembre de 2026"
    texts = {b.kind: [] for b in boxes_of(a3.manifest)}
    for box in boxes_of(a3.manifest):
        texts[box.kind].append(" ".join(box.lines))
    assert texts["institution"] == ["H. Ayuntamiento — Comunicación Social"]
    assert texts["title"] == ["Mural de actividades"]
    assert texts["month"] == ["Noviembre de 2026"]
    assert texts["area"] == ["Cultura", clean(HOSTILE_AREA), "Obras Públicas"]
    assert "Arranque de obra en la calle Juárez" in texts["activity"]
    assert any(t.startswith("Fotografías: Ana Pérez, Comunicación Social") for t in
               texts["footer"])


def test_layout_no_overlaps_inside_margins_no_cut_text(a3: Made) -> None:
    boxes = boxes_of(a3.manifest)
    check_geometry(boxes, a3.manifest["width"], a3.manifest["height"], a3.manifest["margin"])
    check_text_fits(boxes, Fonts())
    # a caption under each photo it belongs to, as wide as the photo
    photos = {b.sha256: b for b in boxes if b.kind == "photo"}
    for caption in (b for b in boxes if b.kind == "caption"):
        photo = photos[caption.sha256]
        assert caption.x == photo.x and caption.w == photo.w and caption.y > photo.bottom


def test_hostile_captions_are_printed_as_text_and_reported_when_shortened(
        archive: Archive, a3: Made) -> None:
    boxes = boxes_of(a3.manifest)
    captions = {b.sha256: b for b in boxes if b.kind == "caption"}
    html_lines = " ".join(captions[archive.sha["luz-1.jpg"]].lines)
    assert html_lines == clean(HTML_CAPTION) or html_lines.startswith('<script>alert("pie")')
    long = captions[archive.sha["obra-2.jpg"]]
    assert long.ellipsized and len(long.lines) == 3 and long.lines[-1].endswith(ELLIPSIS)
    assert long.lines[-1][:-1].split()[-1] in ("muy", "colonia", "contentos.")  # whole words
    word = captions[archive.sha["festival-2.jpg"]]
    assert word.ellipsized and word.lines[-1].endswith(ELLIPSIS)
    assert "".join(word.lines)[:-1] in WORD_CAPTION  # broken between characters, in order
    reported = {e["sha256"] for e in a3.manifest["ellipsized"] if e["kind"] == "caption"}
    assert reported == {archive.sha["obra-2.jpg"], archive.sha["festival-2.jpg"]}
    title = next(b for b in boxes if b.kind == "activity" and "Otoño" in b.lines[0])
    assert " ".join(title.lines) == "Festival de Otoño <b>¡gratis!</b> odnum"  # no override


def test_a2_and_a1_paper_sizes(archive: Archive, tmp_path: Path) -> None:
    for size, (width_mm, height_mm, _) in (("A2", PAPERS["A2"]), ("A1", PAPERS["A1"])):
        made = make(archive, tmp_path / f"mural-{size}.pdf", size)
        width_pt, height_pt = page_points(made.pdf)
        assert abs(width_pt - width_mm * 72 / 25.4) <= 1, size
        assert abs(height_pt - height_mm * 72 / 25.4) <= 1, size
        assert made.manifest["width"] >= width_mm / 25.4 * 150 - 1
        check_geometry(boxes_of(made.manifest), made.manifest["width"],
                       made.manifest["height"], made.manifest["margin"])
        assert made.png.is_file() and made.manifest["photos"] == len(APPROVED) + 1
    a1 = {"A1": (1684, 2384)}["A1"]
    assert abs(page_points(tmp_path / "mural-A1.pdf")[0] - a1[0]) <= 1
    assert abs(page_points(tmp_path / "mural-A1.pdf")[1] - a1[1]) <= 1


def test_a_month_without_approved_photos_is_an_error(archive: Archive, tmp_path: Path,
                                                     data_dir: Path) -> None:
    out = tmp_path / "vacio.pdf"
    for month in ("2026-12", "2026-09"):
        done = run_cli("--data-dir", archive.data_dir, "mural", "--month", month, "--size",
                       "A3", "--out", out)
        assert done.returncode == 1, done
        assert f"no approved photos in {month}" in done.stderr.decode()
    assert not out.exists() and not out.with_suffix(".png").exists()
    # an archive whose month has photos, none approved
    archive.copy_to(data_dir)
    Editor(DataDir.at(data_dir)).withdraw(
        [archive.sha[n] for n in [*APPROVED, ROTATED]], by=DIRECTOR)
    done = run_cli("--data-dir", data_dir, "mural", "--month", MONTH, "--out", out)
    assert done.returncode == 1 and b"no approved photos in 2026-11" in done.stderr
    for bad in (["--month", "2026-13", "--out", out], ["--month", MONTH, "--out",
                                                       tmp_path / "x.png"]):
        assert run_cli("--data-dir", data_dir, "mural", *bad).returncode == 2


# -- the layout alone: hostile text, and months that do not fit ---------------------------------


def _content(activities: int, photos: int, caption: str = "", title: str = "",
             areas: int = 3) -> MuralContent:
    shapes = (1.5, 0.75, 1.333, 1.0, 2.4, 0.6)
    by_area: dict[str, list[MuralActivity]] = {}
    n = 0
    for a in range(activities):
        area = f"Área {a % areas}"
        items = []
        for _ in range(photos):
            items.append(MuralPhoto(
                sha256=f"{n:064x}", kind="photo", caption=clean(caption or f"Foto {n}"),
                credit="", aspect=shapes[n % len(shapes)], rating=0, pick=None,
                captured_at="", archive_path="", original_name=""))
            n += 1
        by_area.setdefault(area, []).append(MuralActivity(
            folder=f"2026/11/2026-11-{a % 28 + 1:02d}_a{a}", slug=f"a{a}",
            title=clean(title or f"Actividad {a}"), area=area, place="Palacio",
            when="martes 10 de noviembre de 2026, 9:00–12:00", photos=tuple(items)))
    return MuralContent(month=MONTH, month_label="Noviembre de 2026",
                        institution="H. Ayuntamiento — Comunicación Social",
                        title="Mural de actividades",
                        areas=tuple((k, tuple(v)) for k, v in by_area.items()),
                        credits=("Ana",))


def check_layout(result: Layout, fonts: Fonts) -> None:
    check_geometry(result.boxes, result.page.width, result.page.height, result.page.margin)
    check_text_fits(result.boxes, fonts)


def test_hostile_text_is_laid_out_safely() -> None:
    fonts = Fonts()
    hostile = ("\u202e\u2066<img src=x onerror=alert(1)>\u2069 " + "W" * 400 + " "
               + "\u200b\u200fتجربة עברית 漢字 😀 " * 30 + "\x00\x1b[31m fin")
    content = _content(6, 3, caption=hostile, title=hostile)
    for paper in PAPERS:
        result = layout(content, paper, 150, fonts=fonts)
        check_layout(result, fonts)
        assert result.pages == 1
        assert all(b.ellipsized for b in result.boxes if b.kind in ("caption", "activity"))
        for box in result.boxes:
            assert not any("\x00" in line or "\x1b" in line for line in box.lines)


def test_a_month_that_does_not_fit_shrinks_then_drops_then_adds_sheets() -> None:
    fonts = Fonts()
    roomy = layout(_content(3, 2), "A3", 150, fonts=fonts)
    full = layout(_content(6, 8), "A3", 150, fonts=fonts, photos_per_activity=8)
    crowded = layout(_content(10, 8), "A3", 150, fonts=fonts, photos_per_activity=8)
    assert roomy.pages == full.pages == crowded.pages == 1
    # smaller photos first: all 48 still there
    assert full.photo_height < roomy.photo_height
    assert full.photos_per_activity == 8 and not full.omitted and len(full.photos) == 48
    # then fewer per activity: each keeps its best (its first), the rest are reported
    assert crowded.photos_per_activity < 8 and crowded.omitted
    assert len(crowded.photos) + len(crowded.omitted) == 80
    kept = {b.sha256 for b in crowded.photos}
    for first in range(0, 80, 8):
        cap = crowded.photos_per_activity
        assert {f"{n:064x}" for n in range(first, first + cap)} <= kept
        assert not {f"{n:064x}" for n in range(first + cap, first + 8)} & kept
    huge = layout(_content(60, 3), "A3", 150, fonts=fonts)
    assert huge.pages > 1
    check_layout(huge, fonts)
    for page in range(huge.pages):
        kinds = [b.kind for b in huge.boxes if b.page == page]
        assert kinds.count("title") == 1 and kinds.count("footer") == 1
        footer = next(b for b in huge.boxes if b.page == page and b.kind == "footer")
        assert footer.lines[0].endswith(f"Hoja {page + 1} de {huge.pages}")
    assert {b.sha256 for b in huge.photos} >= {f"{n:064x}" for n in range(0, 180, 3)}
    # Every sheet names the area of each activity on it: a sheet that goes on with an area
    # begun on the one before repeats its heading, "… (continuación)", above its first
    # activity there (sheet 2 began with bare activities before).
    for page in range(huge.pages):
        on_sheet = sorted((b for b in huge.boxes if b.page == page
                           and b.kind in ("area", "activity")), key=lambda b: (b.x, b.y))
        seen_areas = {b.lines[0].removesuffix(" (continuación)") for b in on_sheet
                      if b.kind == "area"}
        for box in on_sheet:
            if box.kind == "activity":
                number = int(box.lines[0].rsplit(" ", 1)[1])
                assert f"Área {number % 3}" in seen_areas, (page, box.lines)
        if page > 0:
            assert any(b.kind == "area" and b.lines[0].endswith("(continuación)")
                       for b in on_sheet), page
    for result in (roomy, full, crowded):
        check_layout(result, fonts)


def test_an_unplaceable_photo_becomes_a_grey_box_and_exit_1(archive: Archive,
                                                            data_dir: Path,
                                                            tmp_path: Path) -> None:
    archive.copy_to(data_dir)
    sha = archive.sha["salud-1.jpg"]
    data = DataDir.at(data_dir)
    (data.derivatives / sha[:2] / sha / "preview.jpg").unlink()
    original = next(data.archive.rglob("salud-1.jpg"))
    original.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg any more")
    out = tmp_path / "gris.pdf"
    done = run_cli("--data-dir", data_dir, "mural", "--month", MONTH, "--size", "A3", "--out",
                   out, "--json")
    assert done.returncode == 1
    assert f"photo {sha} could not be drawn" in done.stderr.decode()
    manifest = json.loads(done.stdout)
    assert manifest["unavailable"] == [sha] and out.is_file()
    # once the worker has found it damaged (its preview a placeholder), it is left off
    folder = next(i["folder"] for i in json.loads(run_cli(
        "--data-dir", data_dir, "items", "--json").stdout) if i["sha256"] == sha)
    Catalog(data).add_problems(folder, sha, [{"code": "damaged", "detail": "cut short"}])
    done = run_cli("--data-dir", data_dir, "mural", "--month", MONTH, "--size", "A3", "--out",
                   out, "--json")
    assert done.returncode == 0, done.stderr.decode()
    manifest = json.loads(done.stdout)
    assert manifest["unavailable"] == [] and manifest["photos"] == len(APPROVED)
    assert sha not in {b["sha256"] for b in manifest["boxes"] if b["kind"] == "photo"}
    # and the activity whose only photo it was is left off
    assert "Feria de la salud" not in json.dumps(manifest["content"])


# -- the results report ------------------------------------------------------------------------


EXPECTED_AREAS = {
    "Cultura": {"activities": 1, "planned": 2, "items": 4, "photos": 3, "videos": 0,
                "audio": 1, "approved": 2},
    clean(HOSTILE_AREA): {"activities": 1, "planned": 1, "items": 1, "photos": 1,
                          "videos": 0, "audio": 0, "approved": 1},
    "Obras Públicas": {"activities": 2, "planned": 2, "items": 6, "photos": 5, "videos": 1,
                       "audio": 0, "approved": 5},
    "": {"activities": 0, "planned": 0, "items": 1, "photos": 1, "videos": 0, "audio": 0,
         "approved": 0},
}


def test_informe_figures_and_pdf(archive: Archive, tmp_path: Path) -> None:
    out = tmp_path / "informe.pdf"
    done = run_cli("--data-dir", archive.data_dir, "informe", "--month", MONTH, "--out", out,
                   "--json")
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout)
    got = {a["area"]: {k: a[k] for k in EXPECTED_AREAS["Cultura"]} for a in result["areas"]}
    assert got == EXPECTED_AREAS
    assert [a["area"] for a in result["areas"]] == list(EXPECTED_AREAS)
    assert result["totals"] == {"activities": 4, "planned": 5, "items": 12, "photos": 10,
                                "videos": 1, "audio": 1, "approved": 8}
    width_pt, height_pt = page_points(out)
    assert abs(width_pt - 595) <= 1 and abs(height_pt - 842) <= 1
    pages = pdftoppm(out)
    assert len(pages) >= 1
    with Image.open(pages[0]) as page:
        rgb = page.convert("RGB")
        assert abs(rgb.width - 210 / 25.4 * 150) <= 1.5
        # the bar charts' colours are on the page
        assert has_region(rgb, (122, 28, 58), 5) and has_region(rgb, (214, 126, 44), 5)
    text = run_cli("--data-dir", archive.data_dir, "informe", "--month", MONTH)
    assert text.returncode == 0 and "Obras Públicas" in text.stdout.decode()
    october = json.loads(run_cli("--data-dir", archive.data_dir, "informe", "--month",
                                 "2026-10", "--json").stdout)
    assert october["totals"]["photos"] == 1 and october["totals"]["approved"] == 1


# -- the web UI ---------------------------------------------------------------------------------


@pytest.fixture
def web(archive: Archive, data_dir: Path) -> Iterator[WebApp]:
    archive.copy_to(data_dir)
    with web_app(data_dir) as built:
        yield built


def test_web_results_page_with_svg_charts_and_pdf(web: WebApp) -> None:
    assistant = web.user_and_login("auxiliar", "assistant")
    page = assistant.get(f"/informes/resultados?month={MONTH}")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert body.count("<svg") == 2 and 'id="chart-media"' in body
    assert "<i onmouseover" not in body  # the hostile area name, escaped everywhere
    escaped = str(escape(clean(HOSTILE_AREA)))
    assert f"<td>{escaped}</td>" in body  # the table
    assert f"<title>{escaped}</title>" in body  # the chart's label, in full on hover
    svg = body[body.index("<svg"):body.rindex("</svg>")]
    assert "style=" not in svg and "<script" not in svg
    # one bar per area and series: 4 areas x 4 series, then 4 x 2
    assert svg.count("<rect") == 4 + 4 * 4 + 2 + 4 * 2
    summary = MESSAGES["es-MX"]["reports.results.summary"].format(
        activities=4, planned=5, photos=10, videos=1, audio=1, approved=8)
    assert f'<p id="results-summary">{escape(summary)}</p>' in body
    assert 'id="mural-link"' not in body  # the assistant cannot print the mural
    detail = body[body.index('id="results-detail"'):]
    rows = detail[:detail.index("</table>")].split("<tr>")[2:]
    # every row of the detail says its day: the unsorted ones of different days differ
    assert rows and all(re.search(r"<small>\d{1,2} [a-z]{3}\.? \d{4}</small>", r)
                        for r in rows), rows
    pdf = assistant.get(f"/informes/resultados?month={MONTH}&format=pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    assert pdf.get_data().startswith(b"%PDF")
    assert "informe-2026-11.pdf" in pdf.headers["Content-Disposition"]
    assert assistant.get("/informes/resultados").status_code == 200  # the newest month
    for bad in ("?month=2026-13", "?month=x", f"?month={MONTH}&format=png",
                f"?month={MONTH}&format=zip"):
        assert assistant.get("/informes/resultados" + bad).status_code == 400, bad


def test_web_mural_roles_render_once_and_downloads(web: WebApp, archive: Archive,
                                                   tmp_path: Path) -> None:
    designer = web.user_and_login("disenio", "designer")
    director = web.user_and_login(DIRECTOR, "director")
    for role in ("photographer", "social", "assistant"):
        other = web.user_and_login(f"u-{role}", role)
        assert other.get(f"/informes/mural?month={MONTH}&size=A3").status_code == 403
        assert other.get(f"/informes/mural?month={MONTH}&format=pdf").status_code == 403
    form = designer.get("/informes/mural")
    assert form.status_code == 200 and 'id="mural-form"' in form.get_data(as_text=True)
    results = director.get(f"/informes/resultados?month={MONTH}").get_data(as_text=True)
    assert 'id="mural-link"' in results

    page = designer.get(f"/informes/mural?month={MONTH}&size=A3")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert 'id="mural-pdf"' in body and 'id="mural-shortened"' in body
    assert "<script>alert" not in body
    assert "hoja(s)" not in body and re.search(r"en (1 hoja|\d+ hojas) A3 a", body)
    shortened = body[body.index('id="mural-shortened"'):]
    shortened = shortened[:shortened.index("</ul>")]
    assert shortened.count("<li>") == 2  # the long caption and the one endless word
    reports = DataDir.at(web.data_dir).state / "reports"
    made = sorted(p.name for p in reports.glob("mural-2026-11-A3-*"))
    assert [Path(n).suffix for n in made] == [".json", ".pdf", ".png"]
    stamp = (reports / made[1]).stat().st_mtime_ns

    pdf = designer.get(f"/informes/mural?month={MONTH}&size=A3&format=pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    assert "mural-2026-11-A3.pdf" in pdf.headers["Content-Disposition"]
    saved = tmp_path / "web.pdf"
    saved.write_bytes(pdf.get_data())
    width_pt, height_pt = page_points(saved)
    assert abs(width_pt - 842) <= 1 and abs(height_pt - 1191) <= 1
    png = director.get(f"/informes/mural?month={MONTH}&size=A3&format=png")
    assert png.status_code == 200 and png.mimetype == "image/png"
    assert "attachment" not in png.headers.get("Content-Disposition", "")
    download = director.get(f"/informes/mural?month={MONTH}&size=A3&format=png&download=1")
    assert "attachment" in download.headers["Content-Disposition"]
    # asked again with nothing changed: the same files, not made again
    assert (reports / made[1]).stat().st_mtime_ns == stamp
    assert sorted(p.name for p in reports.glob("mural-2026-11-A3-*")) == made

    # a new caption makes a new mural; the one before stays (a request may be sending
    # it), older ones go
    editor = Editor(DataDir.at(web.data_dir))
    versions = [made]
    for caption in ("Otro pie", "Un tercer pie"):
        editor.edit(archive.sha["obra-1.jpg"], {"caption": caption}, by=DIRECTOR)
        web.ctx.index.refresh(force=True)
        time.sleep(0.01)
        assert designer.get(f"/informes/mural?month={MONTH}&size=A3").status_code == 200
        now = sorted(p.name for p in reports.glob("mural-2026-11-A3-*"))
        versions.append(sorted(set(now) - {n for v in versions for n in v}))
        assert len(versions[-1]) == 3
        assert set(now) == set(versions[-1]) | set(versions[-2])

    empty = designer.get("/informes/mural?month=2026-12&size=A3")
    assert empty.status_code == 409 and 'id="mural-error"' in empty.get_data(as_text=True)
    assert designer.get("/informes/mural?month=2026-12&format=pdf").status_code == 409
    for bad in (f"?month={MONTH}&size=A0", "?month=2026-1", f"?month={MONTH}&format=gif",
                "?format=pdf"):
        assert designer.get("/informes/mural" + bad).status_code == 400, bad


def test_the_cache_key_takes_a_name_that_is_not_utf8() -> None:
    """A photo named in Latin-1 on its card (kept as surrogate escapes) made the printed
    mural's page a 500; two such names still get two keys."""
    from appliance import config as config_mod
    from appliance.mural.render import cache_key

    class Content:
        def __init__(self, name: str) -> None:
            self.name = name

        def as_dict(self) -> dict[str, Any]:
            return {"photos": [{"original_name": self.name}]}

    config = config_mod.load(None, environ={})
    one = cache_key(config, Content("Fotograf\udceda.jpg"), "A3")  # type: ignore[arg-type]
    other = cache_key(config, Content("Fotograf\udcf1a.jpg"), "A3")  # type: ignore[arg-type]
    assert re.fullmatch(r"[0-9a-f]{20}", one) and one != other


def test_characters_the_font_lacks_are_left_out_and_said() -> None:
    """An emoji in a caption printed as an empty box ("tofu"), and nothing said so."""
    fonts = Fonts()
    result = layout(_content(1, 1, caption="Cierre de la feria 🎉 con 漢字 y ñandú"), "A3",
                    150, fonts=fonts)
    [caption] = [b for b in result.boxes if b.kind == "caption"]
    assert caption.dropped == "🎉漢字" and not caption.ellipsized
    assert " ".join(caption.lines) == "Cierre de la feria con y ñandú"
    [said] = result.as_dict()["ellipsized"]
    assert said["dropped"] == "🎉漢字" and said["shortened"] is False
    check_layout(result, fonts)
