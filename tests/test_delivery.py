"""Delivery (appliance.delivery): web-size JPEGs read back with the real exiftool, and ZIPs
streamed to the end, read back with zipfile and unzip, or dropped halfway.

Memory of the 2,000-item ZIP is measured in a child process (as tests/test_derive_photo.py
does): its VmHWM, reset to the current RSS just before streaming (``5`` to
/proc/self/clear_refs), against its RSS then; and, in a second run, tracemalloc's peak of
Python allocations.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from PIL import Image, ImageChops, ImageOps, ImageStat

from appliance import config as config_mod
from appliance import fields
from appliance.datadir import DataDir
from appliance.delivery import (
    ERRORS_ENTRY,
    NotAPhoto,
    TooManyItems,
    Undecodable,
    WatermarkError,
    entry_names,
    safe_component,
    web_copy,
    webcopy,
    zip_name,
    zip_stream,
)
from appliance.fsutil import TEMP_PREFIX
from tests.conftest import REPO, SAMPLES, TEST_ENV, require_tool
from tests.test_derive_photo import fake_raw

FOLDER = "2024/05/2024-05-14_sesion-de-cabildo"
OTHER_FOLDER = "2024/05/2024-05-15_feria-del-libro"
CAPTURED = "2024-05-14T11:30:06-06:00"
MB = 1024 * 1024

CAPTION = "¿Qué se aprobó? La señora Núñez presentó el plan de niñez. Ñandú, acción."
CREDIT = "Comunicación Social / José Peña Núñez"  # 42 bytes; the 32nd is inside "ñ"
RIGHTS = "© Ayuntamiento de Xalapa. Prohibida su reproducción sin autorización."
TAGS = ["cabildo", "niñez", "Educación", "¿preguntas?"]
PEOPLE = ["Ana Núñez", "José Peña"]
PLACE = "Sala de Cabildo, Palacio Municipal"


# --- helpers --------------------------------------------------------------------------------


@pytest.fixture
def data(data_dir: Path) -> DataDir:
    d = DataDir.at(data_dir)
    d.ensure()
    return d


def make_config(data_dir: Path, **env: str) -> config_mod.Config:
    return config_mod.load(None, environ={**TEST_ENV, **env}, data_dir=data_dir)


def put(data: DataDir, content: bytes | Path, original_name: str, *, folder: str = FOLDER,
        kind: str = "photo", **values: Any) -> dict[str, Any]:
    """Archive ``content`` as the import would (under a name of its own) and return its
    catalog record, with ``original_name`` as the card called it."""
    if isinstance(content, Path):
        content = content.read_bytes()
    sha = hashlib.sha256(content).hexdigest()
    ext = Path(original_name.encode("utf-8", "surrogateescape").decode("ascii", "ignore")
               ).suffix.lower()[:6]
    target = data.archive / folder / f"{sha[:16]}{ext}"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    record = {
        "sha256": sha, "size": len(content), "kind": kind, "original_name": original_name,
        "source_path": original_name, "archive_path": data.relative(target), "folder": folder,
        "activity": folder.rsplit("_", 1)[-1], "captured_at": CAPTURED,
        **fields.defaults(),
    }  # fmt: skip
    record.update(values)
    return record


def exif_tags(path: Path) -> dict[str, Any]:
    require_tool("exiftool")
    out = subprocess.run(["exiftool", "-j", "-a", "-G1", "-struct", str(path)],
                         capture_output=True, check=True)
    return json.loads(out.stdout)[0]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def jpeg_bytes(image: Image.Image, **save: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", **save)
    return out.getvalue()


def textured(width: int, height: int) -> Image.Image:
    """A photo-like picture (smooth colour fields) that JPEG compresses as it does photos."""
    small = Image.merge("RGB", [
        Image.effect_noise((width // 10, height // 10), 60),
        Image.linear_gradient("L").resize((width // 10, height // 10)),
        Image.effect_noise((width // 10, height // 10), 30).transpose(Image.Transpose.ROTATE_180),
    ])  # fmt: skip
    return small.resize((width, height), Image.Resampling.BICUBIC)


def diff(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean) / 3


def web_files(data: DataDir, record: dict[str, Any]) -> list[str]:
    folder = data.derivatives / record["sha256"][:2] / record["sha256"]
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(TEMP_PREFIX)
            or "_exiftool_tmp" in p.name]  # fmt: skip


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def read_zip(chunks: list[bytes] | bytes) -> zipfile.ZipFile:
    blob = chunks if isinstance(chunks, bytes) else b"".join(chunks)
    archive = zipfile.ZipFile(io.BytesIO(blob))
    assert archive.testzip() is None
    return archive


# --- web copy: size, orientation, privacy ---------------------------------------------------


def test_web_copy_of_a_24_megapixel_jpeg(data: DataDir, config: config_mod.Config) -> None:
    warm = put(data, SAMPLES / "hopper.jpg", "warm.jpg")
    web_copy(config, data, warm)  # imports and exiftool's first start out of the timing
    record = put(data, jpeg_bytes(textured(6000, 4000), quality=92), "DSC_0001.JPG",
                 caption=CAPTION)
    started = time.perf_counter()
    path = web_copy(config, data, record)
    elapsed = time.perf_counter() - started
    print(f"24 MP JPEG -> {config.editorial.web_long_side} px web copy: {elapsed:.3f} s")
    assert elapsed < 2.0
    assert path.parent == data.derivatives / record["sha256"][:2] / record["sha256"]
    assert path.name.startswith("web-") and path.suffix == ".jpg"
    with Image.open(path) as image:
        assert image.size == (2048, 1365)
        assert image.mode == "RGB"
        assert image.info.get("progressive") or image.info.get("progression")
    tags = exif_tags(path)
    assert tags["IPTC:Caption-Abstract"] == CAPTION


def test_long_side_is_a_setting_and_small_pictures_are_not_enlarged(
        data: DataDir, data_dir: Path) -> None:
    config = make_config(data_dir, ACOPIO_EDITORIAL_WEB_LONG_SIDE="1200",
                         ACOPIO_EDITORIAL_WEB_QUALITY="70")
    record = put(data, jpeg_bytes(textured(3000, 2000)), "a.jpg")
    with Image.open(web_copy(config, data, record)) as image:
        assert image.size == (1200, 800)
    small = put(data, SAMPLES / "flower.jpg", "flower.jpg")  # 480x360
    with Image.open(web_copy(config, data, small)) as image:
        assert image.size == (480, 360)


def test_orientation_is_applied_to_the_pixels(data: DataDir, config: config_mod.Config) -> None:
    # The sample: 128x128 stored, EXIF orientation 8; the copy is what a viewer shows.
    record = put(data, SAMPLES / "hopper_orientation_8.jpg", "hopper.jpg")
    with Image.open(SAMPLES / "hopper_orientation_8.jpg") as original:
        upright = ImageOps.exif_transpose(original).convert("RGB")
        stored = original.convert("RGB")
    with Image.open(web_copy(config, data, record)) as copy:
        assert diff(copy, upright) < 4
        assert diff(copy, stored) > 20
    # A 24 MP JPEG stored landscape with orientation 6 (turn 90° clockwise): portrait, and
    # what was the stored left half (red) is now the top.
    big = Image.new("RGB", (6000, 4000), (0, 0, 220))
    big.paste((220, 0, 0), (0, 0, 3000, 4000))
    exif = Image.Exif()
    exif[0x0112] = 6
    record = put(data, jpeg_bytes(big, exif=exif), "vertical.jpg")
    with Image.open(web_copy(config, data, record)) as copy:
        assert copy.size == (1365, 2048)
        assert copy.getpixel((680, 300))[0] > 180  # top: red
        assert copy.getpixel((680, 1700))[2] > 180  # bottom: blue
    assert "Orientation" not in " ".join(exif_tags(web_copy(config, data, record)))


def test_heic_is_converted_and_turned(data: DataDir, config: config_mod.Config) -> None:
    pug = put(data, SAMPLES / "pug.heic", "IMG_0001.HEIC")  # 4032x3024
    with Image.open(web_copy(config, data, pug)) as image:
        assert image.size == (2048, 1536)
        assert image.format == "JPEG"
    arrow = put(data, SAMPLES / "arrow.heic", "IMG_0002.HEIC")  # 4032x3024, orientation 6
    with Image.open(web_copy(config, data, arrow)) as image:
        assert image.size == (1536, 2048)


def test_raw_uses_its_embedded_preview(data: DataDir, config: config_mod.Config) -> None:
    preview = jpeg_bytes(textured(3000, 2000))
    record = put(data, fake_raw(preview, orientation=6), "DSC_0002.NEF", kind="raw",
                 caption="RAW")
    with Image.open(web_copy(config, data, record)) as image:
        assert image.size == (1365, 2048)
    tags = exif_tags(web_copy(config, data, record))
    assert not any(key.startswith(("IFD0:", "ExifIFD:", "SubIFD")) for key in tags)
    assert "IFD0:Make" not in tags


def test_no_gps_and_nothing_of_the_camera_survives(
        data: DataDir, config: config_mod.Config) -> None:
    original = exif_tags(SAMPLES / "pug.heic")
    assert any("GPS" in key for key in original)  # the sample has a position
    assert any("MakerNotes" in key or key.startswith("Apple:") for key in original)
    record = put(data, SAMPLES / "pug.heic", "IMG_0001.HEIC", caption="Pug")
    path = web_copy(config, data, record)
    tags = exif_tags(path)
    assert [k for k in tags if "GPS" in k] == []
    gps = subprocess.run(["exiftool", "-s", "-a", "-GPS*", str(path)], capture_output=True,
                         text=True, check=True)
    assert gps.stdout.strip() == ""
    groups = {key.split(":", 1)[0] for key in tags if key != "SourceFile"}
    assert groups <= {"ExifTool", "System", "File", "JFIF", "IPTC", "XMP-x", "XMP-dc",
                      "XMP-photoshop", "XMP-iptcCore", "XMP-iptcExt", "Composite"}, groups
    for needle in ("Apple", "Make", "Model", "Serial", "Lens", "DateTimeOriginal"):
        assert not [k for k in tags if needle in k.split(":", 1)[-1]], needle


# --- web copy: embedded metadata ------------------------------------------------------------


def test_caption_credit_rights_tags_place_are_embedded_as_iptc_and_xmp(
        data: DataDir, data_dir: Path) -> None:
    config = make_config(data_dir, ACOPIO_EDITORIAL_RIGHTS=RIGHTS)
    record = put(data, SAMPLES / "flower.jpg", "flower.jpg", caption=CAPTION, credit=CREDIT,
                 tags=TAGS, people=PEOPLE, place=PLACE)
    tags = exif_tags(web_copy(config, data, record))
    assert tags["IPTC:CodedCharacterSet"] == "UTF8"
    assert tags["IPTC:Caption-Abstract"] == CAPTION
    assert tags["XMP-dc:Description"] == CAPTION
    assert as_list(tags["IPTC:Keywords"]) == TAGS
    assert as_list(tags["XMP-dc:Subject"]) == TAGS
    assert tags["IPTC:CopyrightNotice"] == RIGHTS
    assert tags["XMP-dc:Rights"] == RIGHTS
    # IPTC By-line and Credit hold 32 bytes: cut on a character, never inside "ñ"; XMP whole.
    assert tags["IPTC:By-line"] == "Comunicación Social / José Pe"
    assert tags["IPTC:Credit"] == tags["IPTC:By-line"]
    assert as_list(tags["XMP-dc:Creator"]) == [CREDIT]
    assert tags["XMP-photoshop:Credit"] == CREDIT
    assert tags["IPTC:Sub-location"] == "Sala de Cabildo, Palacio Municip"
    assert tags["XMP-iptcCore:Location"] == PLACE
    assert as_list(tags["XMP-iptcExt:PersonInImage"]) == PEOPLE
    assert tags["XMP-dc:Identifier"] == record["sha256"]
    assert "IPTC:City" not in tags


def test_credit_defaults_to_the_first_preset_and_empty_fields_are_left_out(
        data: DataDir, data_dir: Path) -> None:
    config = make_config(data_dir, ACOPIO_EDITORIAL_RIGHTS="",
                         ACOPIO_EDITORIAL_CREDIT_PRESETS="Comunicación Social,Otro")
    record = put(data, SAMPLES / "hopper.jpg", "hopper.jpg")
    tags = exif_tags(web_copy(config, data, record))
    assert tags["IPTC:By-line"] == "Comunicación Social"
    assert as_list(tags["XMP-dc:Creator"]) == ["Comunicación Social"]
    for absent in ("IPTC:Caption-Abstract", "XMP-dc:Description", "IPTC:Keywords",
                   "IPTC:CopyrightNotice", "XMP-dc:Rights", "XMP-iptcCore:Location"):
        assert absent not in tags


def test_hostile_values_are_embedded_verbatim_and_nothing_else_happens(
        data: DataDir, config: config_mod.Config, tmp_path: Path) -> None:
    trap = tmp_path / "x"
    caption = (f"-o {trap}\n"
               'Línea 2 con "comillas" y \'apóstrofos\'\n'
               "<script>alert('¡hola!')</script> & $HOME `id` $(id) ${HOME}\n"
               "-TagsFromFile /etc/passwd -all:all")
    hostile_tags = ["-o", "-w txt", "<=/etc/passwd", "-@", "=x", "a=b", "-P"]
    record = put(data, SAMPLES / "hopper.jpg", "hopper.jpg", caption=caption,
                 credit="-ver", tags=hostile_tags, place="<=/etc/hostname")
    path = web_copy(config, data, record)
    assert not trap.exists()
    assert not list(tmp_path.glob("x*"))
    tags = exif_tags(path)
    assert tags["IPTC:Caption-Abstract"] == caption
    assert tags["XMP-dc:Description"] == caption
    assert as_list(tags["IPTC:Keywords"]) == hostile_tags
    assert as_list(tags["XMP-dc:Subject"]) == hostile_tags
    assert tags["IPTC:By-line"] == "-ver"
    assert tags["XMP-iptcCore:Location"] == "<=/etc/hostname"
    assert "root:" not in json.dumps(tags)
    # The argument list: one argument per value, after "=", the JPEG on stdin.
    args = webcopy.exiftool_args(webcopy.embedded_metadata(config, record))
    assert f"-IPTC:Caption-Abstract={caption}" in args
    assert args[-3:] == ["-o", "-", "-"]
    # Control characters are dropped; newline and tab stay.
    record = put(data, SAMPLES / "flower.jpg", "flower.jpg", caption="a\x00b\x1bc\td\ne\u202e")
    assert exif_tags(web_copy(config, data, record))["IPTC:Caption-Abstract"] == "abc\td\ne"


# --- web copy: watermark --------------------------------------------------------------------


def watermark_png(path: Path) -> Path:
    """400x200: the left half fully transparent, the right half opaque red."""
    mark = Image.new("RGBA", (400, 200), (0, 255, 0, 0))
    mark.paste((255, 0, 0, 255), (200, 0, 400, 200))
    mark.save(path)
    return path


def test_watermark_is_stamped_bottom_right_with_its_alpha(
        data: DataDir, data_dir: Path, tmp_path: Path) -> None:
    record = put(data, jpeg_bytes(Image.new("RGB", (3000, 2000), (128, 128, 128)),
                                  quality=95), "grey.jpg")
    plain = make_config(data_dir)
    marked = make_config(data_dir, ACOPIO_EDITORIAL_WATERMARK=str(watermark_png(
        tmp_path / "logo.png")))
    with Image.open(web_copy(plain, data, record)) as image:
        without = image.convert("RGB")
    with_path = web_copy(marked, data, record)
    with Image.open(with_path) as image:
        stamped = image.convert("RGB")
    assert stamped.size == without.size == (2048, 1365)
    # Where they differ: the opaque right half of the mark, 15% of the width, bottom right.
    changed = ImageChops.difference(stamped, without).convert("L").point(
        lambda v: 255 if v > 40 else 0).getbbox()
    assert changed is not None
    width = round(2048 * 0.15)
    height = round(200 * width / 400)
    margin = round(1365 * webcopy.WATERMARK_MARGIN)
    x0, y0 = 2048 - margin - width, 1365 - margin - height
    expected = (x0 + width // 2, y0, 2048 - margin, 1365 - margin)
    assert all(abs(a - b) <= 10 for a, b in zip(changed, expected, strict=True)), (changed,
                                                                                   expected)
    red = stamped.getpixel((x0 + 3 * width // 4, y0 + height // 2))
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    # The transparent half shows the picture underneath, unchanged.
    assert diff(stamped.crop((x0 + 10, y0 + 10, x0 + width // 2 - 10, y0 + height - 10)),
                without.crop((x0 + 10, y0 + 10, x0 + width // 2 - 10, y0 + height - 10))) < 3
    # A different watermark file is a different copy.
    other = tmp_path / "logo2.png"
    Image.new("RGBA", (100, 100), (0, 0, 255, 255)).save(other)
    again = web_copy(make_config(data_dir, ACOPIO_EDITORIAL_WATERMARK=str(other)), data, record)
    assert again != with_path


@pytest.mark.parametrize("problem", ["missing", "not_png", "empty", "huge"])
def test_an_unusable_watermark_is_an_error_naming_the_setting(
        data: DataDir, data_dir: Path, tmp_path: Path, problem: str) -> None:
    path = tmp_path / "logo.png"
    if problem == "not_png":
        path.write_bytes((SAMPLES / "hopper.jpg").read_bytes())
    elif problem == "empty":
        path.write_bytes(b"")
    elif problem == "huge":  # 25 MP: far too big for a logo, refused before it is decoded
        Image.new("1", (5000, 5000)).save(path)
    config = make_config(data_dir, ACOPIO_EDITORIAL_WATERMARK=str(path))
    record = put(data, SAMPLES / "hopper.jpg", "hopper.jpg")
    with pytest.raises(WatermarkError, match=r"editorial\.watermark: .*logo\.png"):
        web_copy(config, data, record)
    assert isinstance(WatermarkError("x"), config_mod.ConfigError)
    assert web_files(data, record) == []
    with pytest.raises(WatermarkError):
        zip_stream(data, [record], variant="web", config=config)


# --- web copy: cache ------------------------------------------------------------------------


def test_a_second_request_reuses_the_file_and_an_edit_replaces_it(
        data: DataDir, config: config_mod.Config, monkeypatch: pytest.MonkeyPatch) -> None:
    record = put(data, SAMPLES / "flower.jpg", "flower.jpg", caption="Primera versión")
    first = web_copy(config, data, record)
    before = first.stat()

    def must_not_render(*args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("a cached web copy was made again")

    with monkeypatch.context() as patch:
        patch.setattr(webcopy, "render", must_not_render)
        second = web_copy(config, data, record)
    assert second == first
    after = second.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    record["caption"] = "Segunda versión"
    third = web_copy(config, data, record)
    assert third != first
    assert not first.exists()
    assert web_files(data, record) == [third.name]
    assert exif_tags(third)["IPTC:Caption-Abstract"] == "Segunda versión"
    # A setting that changes the pixels makes a new one too.
    fourth = web_copy(make_config(Path(config.data_dir), ACOPIO_EDITORIAL_WEB_QUALITY="60"),
                      data, record)
    assert fourth != third
    assert web_files(data, record) == [fourth.name]
    assert temp_files(data.root) == []


def test_concurrent_requests_make_it_once(
        data: DataDir, config: config_mod.Config, monkeypatch: pytest.MonkeyPatch) -> None:
    record = put(data, jpeg_bytes(textured(3000, 2000)), "a.jpg", caption="x")
    calls = []
    real_render = webcopy.render

    def counting(*args: Any, **kwargs: Any) -> bytes:
        calls.append(1)
        return real_render(*args, **kwargs)

    monkeypatch.setattr(webcopy, "render", counting)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(web_copy(config, data, record)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert len(calls) == 1
    assert web_files(data, record) == [results[0].name]
    assert temp_files(data.root) == []


# --- web copy: what it refuses --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["video", "audio", "other"])
def test_web_copy_of_a_video_or_audio_is_refused(
        data: DataDir, config: config_mod.Config, kind: str) -> None:
    record = put(data, b"\x00\x00\x00\x18ftypmp42", "clip.mp4", kind=kind)
    with pytest.raises(NotAPhoto, match="photos only") as caught:
        web_copy(config, data, record)
    assert isinstance(caught.value, ValueError)
    assert web_files(data, record) == []


def test_damaged_and_missing_originals(data: DataDir, config: config_mod.Config) -> None:
    record = put(data, SAMPLES / "truncated.heic", "IMG_9.HEIC")
    with pytest.raises(Undecodable, match=r"IMG_9\.HEIC: cannot make a web copy"):
        web_copy(config, data, record)
    gone = put(data, SAMPLES / "hopper.jpg", "hopper.jpg")
    (data.root / gone["archive_path"]).unlink()
    with pytest.raises(FileNotFoundError):
        web_copy(config, data, gone)
    outside = dict(gone, archive_path="archive/../state/x.jpg")
    with pytest.raises(ValueError, match="outside the archive"):
        web_copy(config, data, outside)
    assert temp_files(data.root) == []


# --- ZIP: content and names -----------------------------------------------------------------


def test_zip_of_real_files(data: DataDir, config: config_mod.Config, tmp_path: Path) -> None:
    records = [
        put(data, SAMPLES / "flower.jpg", "IMG_0001.JPG"),
        put(data, SAMPLES / "pug.heic", "IMG_0002.HEIC"),
        put(data, SAMPLES / "hopper.jpg", "IMG_0001.JPG", folder=OTHER_FOLDER,
            captured_at="2024-05-15T20:15:00+00:00"),
        put(data, SAMPLES / "iptc.jpg", "img_0001.jpg"),  # clashes with the first, by case
    ]
    chunks = list(zip_stream(data, records, config=config, chunk_size=64 * 1024))
    assert all(len(c) > 0 for c in chunks)
    assert max(len(c) for c in chunks[:-1]) < 2 * 64 * 1024
    archive = read_zip(chunks)
    names = archive.namelist()
    assert names == [
        "2024-05-14_sesion-de-cabildo/IMG_0001.JPG",
        "2024-05-14_sesion-de-cabildo/IMG_0002.HEIC",
        "2024-05-15_feria-del-libro/IMG_0001.JPG",
        "2024-05-14_sesion-de-cabildo/img_0001 (2).jpg",
    ]
    for name, record in zip(names, records, strict=True):
        content = archive.read(name)
        assert hashlib.sha256(content).hexdigest() == record["sha256"]
        info = archive.getinfo(name)
        assert info.compress_type == zipfile.ZIP_STORED
        assert info.external_attr >> 16 == 0o100644
    # Capture time in the kit's zone (America/Mexico_City, UTC-6 in May 2024).
    assert archive.getinfo(names[0]).date_time == (2024, 5, 14, 11, 30, 6)
    assert archive.getinfo(names[2]).date_time == (2024, 5, 15, 14, 15, 0)
    assert ERRORS_ENTRY not in names
    # Another reader than Python's.
    out = tmp_path / "sel.zip"
    out.write_bytes(b"".join(chunks))
    require_tool("unzip")
    check = subprocess.run(["unzip", "-t", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No errors detected" in check.stdout


HOSTILE_NAMES = [
    "../../etc/passwd", "/etc/shadow", "a\\b\\c.jpg", "línea\nnueva.jpg", "tab\there.jpg",
    "..", ".", "", "CON.jpg", "aux", "what?.jpg", 'co:lo"n*.jpg', "trailing. . .",
    "Fotograf\udceda.jpg", "bad\udc81byte.jpg", "\u202egpj.exe", "x" * 300 + ".jpg",
    ".hidden.jpg",
]


def test_hostile_names_are_made_safe_and_unique(
        data: DataDir, config: config_mod.Config, tmp_path: Path) -> None:
    records = [put(data, f"content {i}".encode(), name)
               for i, name in enumerate(HOSTILE_NAMES)]
    records.append(put(data, b"folder", "x.jpg", folder="2024/05/..\\evil\nfolder"))
    archive = read_zip(list(zip_stream(data, records, config=config)))
    names = archive.namelist()
    assert len(names) == len(set(n.casefold() for n in names)) == len(records)
    for name in names:
        parts = name.split("/")
        assert len(parts) == 2, name
        assert not name.startswith("/") and "\\" not in name
        assert ".." not in parts and "." not in parts and "" not in parts
        assert all(ord(c) >= 32 and c != "\x7f" for c in name), repr(name)
        assert not any(c in '<>:"|?*' for c in name), name
        assert "\u202e" not in name
        assert all(len(p) <= 160 for p in parts)
        name.encode("utf-8")  # no surrogates left
    folder = "2024-05-14_sesion-de-cabildo"
    assert f"{folder}/etc_passwd" not in names  # slashes are not nesting either
    assert f"{folder}/.._.._etc_passwd" not in names
    assert f"{folder}/_.._etc_passwd" in names or f"{folder}/_etc_passwd" in names
    assert f"{folder}/a_b_c.jpg" in names
    assert f"{folder}/línea nueva.jpg" in names
    assert f"{folder}/Fotografía.jpg" in names  # Windows-1252 0xED read as í
    assert f"{folder}/_CON.jpg" in names
    assert "_evil folder/x.jpg" in names
    assert f"{folder}/what_.jpg" in names
    assert any(n.endswith(".jpg") and "xxxx" in n for n in names)  # cut, extension kept
    # Extracting it puts every file inside the target folder.
    target = tmp_path / "out"
    archive.extractall(target)
    for path in target.rglob("*"):
        assert path.resolve().is_relative_to(target.resolve())
    assert len([p for p in target.rglob("*") if p.is_file()]) == len(records)


def test_safe_component_and_entry_names() -> None:
    assert safe_component("../x") == "_x"
    assert safe_component("..") == "archivo"
    assert safe_component("  informe final .pdf. ") == "informe final .pdf"
    assert safe_component("nul.txt") == "_nul.txt"
    records = [{"folder": FOLDER, "original_name": "IMG.JPG", "sha256": str(i)}
               for i in range(4)]
    records.append({"folder": FOLDER, "original_name": "IMG (2).JPG", "sha256": "x"})
    assert entry_names(records) == [
        "2024-05-14_sesion-de-cabildo/IMG.JPG", "2024-05-14_sesion-de-cabildo/IMG (2).JPG",
        "2024-05-14_sesion-de-cabildo/IMG (3).JPG", "2024-05-14_sesion-de-cabildo/IMG (4).JPG",
        "2024-05-14_sesion-de-cabildo/IMG (2) (2).JPG",
    ]
    assert entry_names([{"folder": FOLDER, "original_name": "IMG_1.HEIC"}], "web") == [
        "2024-05-14_sesion-de-cabildo/IMG_1.jpg"]


def test_missing_originals_are_listed_at_the_end(
        data: DataDir, config: config_mod.Config) -> None:
    present = put(data, SAMPLES / "flower.jpg", "flower.jpg")
    gone = put(data, SAMPLES / "hopper.jpg", "hopper.jpg")
    (data.root / gone["archive_path"]).unlink()
    fifo = put(data, b"fifo", "fifo.jpg")
    path = data.root / fifo["archive_path"]
    path.unlink()
    os.mkfifo(path)  # a FIFO in the archive must not hang the stream
    link = put(data, b"link", "link.jpg")
    path = data.root / link["archive_path"]
    path.unlink()
    path.symlink_to(data.root / present["archive_path"])
    archive = read_zip(list(zip_stream(data, [gone, present, fifo, link], config=config)))
    assert archive.namelist() == ["2024-05-14_sesion-de-cabildo/flower.jpg", ERRORS_ENTRY]
    report = archive.read(ERRORS_ENTRY).decode("utf-8-sig")
    assert "3 elementos" in report
    for record in (gone, fifo, link):
        assert record["sha256"] in report
    assert "2024-05-14_sesion-de-cabildo/hopper.jpg" in report
    assert "falta el original" in report


def test_web_zip_has_web_copies_and_lists_what_has_none(
        data: DataDir, config: config_mod.Config) -> None:
    photo = put(data, jpeg_bytes(textured(3000, 2000)), "DSC_1.JPG", caption="Cabildo ñ")
    heic = put(data, SAMPLES / "pug.heic", "IMG_2.HEIC")
    video = put(data, b"\x00\x00\x00\x18ftypmp42", "clip.mp4", kind="video")
    archive = read_zip(list(zip_stream(data, [photo, heic, video], variant="web",
                                       config=config)))
    folder = "2024-05-14_sesion-de-cabildo"
    assert archive.namelist() == [f"{folder}/DSC_1.jpg", f"{folder}/IMG_2.jpg", ERRORS_ENTRY]
    with Image.open(io.BytesIO(archive.read(f"{folder}/DSC_1.jpg"))) as image:
        assert image.size == (2048, 1365)
    assert archive.read(f"{folder}/DSC_1.jpg") == web_copy(config, data, photo).read_bytes()
    assert "clip.mp4" in archive.read(ERRORS_ENTRY).decode("utf-8-sig")
    assert temp_files(data.root) == []


def test_zip_limits_and_bad_arguments(data: DataDir, data_dir: Path) -> None:
    config = make_config(data_dir, ACOPIO_EDITORIAL_ZIP_MAX_ITEMS="2")
    records = [put(data, f"{i}".encode(), f"{i}.jpg") for i in range(3)]
    with pytest.raises(TooManyItems, match=r"editorial\.zip_max_items"):
        zip_stream(data, records, config=config)  # raised before the first byte
    archive = read_zip(list(zip_stream(data, records[:2] + records[:1], config=config)))
    assert len(archive.namelist()) == 2  # an item listed twice is included once
    with pytest.raises(ValueError, match="variant"):
        zip_stream(data, records[:1], variant="thumb", config=config)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_size"):
        zip_stream(data, records[:1], config=config, chunk_size=0)
    assert read_zip(list(zip_stream(data, [], config=config))).namelist() == []


def test_zip_name(config: config_mod.Config) -> None:
    one_folder = [{"sha256": str(i), "folder": FOLDER} for i in range(12)]
    assert zip_name(one_folder) == "2024-05-14_sesion-de-cabildo-12-elementos.zip"
    assert zip_name(one_folder[:1], variant="web") == \
        "2024-05-14_sesion-de-cabildo-1-elemento-web.zip"
    mixed = [*one_folder, {"sha256": "z", "folder": OTHER_FOLDER}]
    # 03:00 UTC on the 2nd is still the 1st in Mexico City.
    now = datetime(2025, 3, 2, 3, 0, tzinfo=ZoneInfo("UTC"))
    assert zip_name(mixed, config=config, now=now) == "acopio-2025-03-01-13-elementos.zip"


# --- ZIP: ZIP64 and many entries ------------------------------------------------------------


def test_forced_zip64_reads_back(data: DataDir, config: config_mod.Config,
                                 tmp_path: Path) -> None:
    records = [put(data, SAMPLES / "flower.jpg", "a.jpg"), put(data, b"small", "b.txt")]
    blob = b"".join(zip_stream(data, records, config=config, force_zip64=True))
    archive = read_zip(blob)
    assert [archive.read(n) for n in archive.namelist()] == [
        (SAMPLES / "flower.jpg").read_bytes(), b"small"]
    for info in archive.infolist():
        local = blob[info.header_offset:info.header_offset + 30]
        name_len, extra_len = int.from_bytes(local[26:28], "little"), \
            int.from_bytes(local[28:30], "little")
        extra = blob[info.header_offset + 30 + name_len:
                     info.header_offset + 30 + name_len + extra_len]
        assert extra[:2] == b"\x01\x00"  # the ZIP64 extended information field
        assert int.from_bytes(local[4:6], "little") >= 45  # version needed: ZIP64
    out = tmp_path / "z64.zip"
    out.write_bytes(blob)
    require_tool("unzip")
    check = subprocess.run(["unzip", "-t", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.slow
def test_more_than_65535_entries(data: DataDir, data_dir: Path, tmp_path: Path) -> None:
    config = make_config(data_dir, ACOPIO_EDITORIAL_ZIP_MAX_ITEMS="70000")
    shared = put(data, b"x", "x.txt")  # one tiny file behind every record: cheap to set up
    count = 65_600
    records = [dict(shared, sha256=f"{i:064x}", original_name=f"{i}.txt")
               for i in range(count)]
    out = tmp_path / "many.zip"
    with open(out, "wb") as fh:
        for chunk in zip_stream(data, records, config=config):
            fh.write(chunk)
    with zipfile.ZipFile(out) as archive:
        infos = archive.infolist()
        assert len(infos) == count
        assert archive.read(infos[-1]) == b"x"
    # The end of central directory says 0xFFFF entries and a ZIP64 record holds the count.
    tail = out.read_bytes()[-200:]
    assert b"PK\x06\x06" in tail and b"PK\x06\x07" in tail
    require_tool("unzip")
    listing = subprocess.run(["unzip", "-l", str(out)], capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    assert f"{count} files" in listing.stdout.splitlines()[-1]


# --- ZIP: memory and a client that goes away -----------------------------------------------


STREAM_IN_CHILD = """
    import json, os, sys, tracemalloc
    from pathlib import Path
    from appliance import config as config_mod
    from appliance.datadir import DataDir
    from appliance.delivery import zip_stream

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    records = json.loads(Path({records!r}).read_text())
    config = config_mod.load(None, environ={{"ACOPIO_WEB_ZEROCONF": "false"}},
                             data_dir={data_dir!r})
    data = DataDir.at({data_dir!r})
    RESULT = {{}}
    # Warm up (imports, first allocations), then measure from the current RSS.
    for _ in zip_stream(data, records[:5], config=config):
        pass
    Path("/proc/self/clear_refs").write_text("5\\n")
    rss0 = status("VmRSS")
    largest = total = 0
    with open({out!r}, "wb") as fh:
        for chunk in zip_stream(data, records, config=config):
            largest = max(largest, len(chunk))
            total += len(chunk)
            fh.write(chunk)
    RESULT.update(rss0=rss0, hwm_stream=status("VmHWM"), total=total, largest=largest)
    tracemalloc.start()
    for chunk in zip_stream(data, records, config=config):
        pass
    RESULT["traced_peak"] = tracemalloc.get_traced_memory()[1]
"""


def many_small_files(data: DataDir, count: int, size: int) -> list[dict[str, Any]]:
    records = []
    for i in range(count):
        folder = FOLDER if i % 2 else OTHER_FOLDER
        records.append(put(data, os.urandom(size), f"IMG_{i % 1000:04d}.JPG", folder=folder))
    return records


def test_zip_of_2000_items_streams_in_bounded_memory(
        data: DataDir, data_dir: Path, tmp_path: Path) -> None:
    records = many_small_files(data, 2000, 48 * 1024)  # 94 MB of originals
    records_file = tmp_path / "records.json"
    records_file.write_text(json.dumps(records))
    out = tmp_path / "all.zip"
    script = textwrap.dedent(STREAM_IN_CHILD.format(records=str(records_file),
                                                    data_dir=str(data_dir), out=str(out)))
    script += "\nprint(json.dumps(RESULT))\n"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    growth = result["hwm_stream"] - result["rss0"]
    print(f"2,000-item ZIP ({result['total'] / MB:.0f} MB): peak RSS growth "
          f"{growth / MB:.1f} MB, Python peak {result['traced_peak'] / MB:.1f} MB, "
          f"largest chunk {result['largest'] / MB:.2f} MB")
    assert result["total"] > 2000 * 48 * 1024
    assert growth < 30 * MB
    assert result["traced_peak"] < 8 * MB
    assert result["largest"] < 2 * MB + 512 * 1024  # a chunk, plus the central directory
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        assert len(names) == 2000 == len(set(names))
        assert archive.testzip() is None
        for name, record in zip(names[:50], records[:50], strict=True):
            assert hashlib.sha256(archive.read(name)).hexdigest() == record["sha256"]
    assert temp_files(data.root) == []


def listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*")
                  if p.is_file())


@pytest.mark.parametrize("variant", ["original", "web"])
def test_a_client_that_goes_away_leaves_nothing_behind(
        data: DataDir, config: config_mod.Config, variant: str) -> None:
    if variant == "original":
        records = [put(data, os.urandom(3 * MB), f"V{i}.MOV", kind="video") for i in range(4)]
    else:
        records = [put(data, jpeg_bytes(textured(1500 + i, 1000)), f"P{i}.JPG")
                   for i in range(6)]
    before_files = listing(data.root)
    before_fds = open_fds()
    stream = zip_stream(data, records, variant=variant, config=config,  # type: ignore[arg-type]
                        chunk_size=256 * 1024)
    received = [next(stream), next(stream)]
    assert sum(len(c) for c in received) >= 256 * 1024
    if variant == "original":
        assert len(open_fds() - before_fds) == 1  # in the middle of the first file
    stream.close()
    assert open_fds() == before_fds
    assert temp_files(data.root) == []
    after = listing(data.root)
    if variant == "original":
        assert after == before_files
    else:  # web copies made so far stay, as derivatives; nothing else
        new = [name for name, size in after if (name, size) not in before_files]
        assert new and all(n.startswith("derivatives/") and "/web-" in n for n in new)
    # What was received is the start of a good ZIP: a new stream gives the same bytes.
    again = b"".join(zip_stream(data, records, variant=variant, config=config,
                                chunk_size=256 * 1024))
    assert again.startswith(b"".join(received))
    read_zip(again)


def test_a_reader_that_raises_mid_stream_closes_its_file(
        data: DataDir, config: config_mod.Config) -> None:
    records = [put(data, os.urandom(2 * MB), "a.mov", kind="video"),
               put(data, os.urandom(2 * MB), "b.mov", kind="video")]
    before = open_fds()
    stream = zip_stream(data, records, config=config, chunk_size=256 * 1024)
    next(stream)
    with pytest.raises(KeyboardInterrupt):
        stream.throw(KeyboardInterrupt())
    assert open_fds() == before
