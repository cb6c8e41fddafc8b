"""Photo derivatives (ingest.derive.photo) on real files: the samples, JPEGs made here with
Pillow (up to 24 MP and 200 MP, made in child processes), and fake RAW files whose TIFF
structure is written here (exiftool cannot add a PreviewImage to a file that has none).

Memory is measured in a child process as its VmHWM (/proc/self/status): the peak RSS of that
process's own address space. ``wait4``'s ru_maxrss would not do from pytest: Python starts
children with vfork, and Linux folds the parent's high-water mark into the child's ru_maxrss
at exec (measured: a child of a 500 MB parent reports 500 MB), so it would measure pytest.
"""

from __future__ import annotations

import errno
import io
import json
import os
import random
import struct
import subprocess
import sys
import textwrap
import zlib
from contextlib import nullcontext
from pathlib import Path

import pytest
from PIL import (
    Image,
    ImageChops,
    ImageCms,
    ImageFilter,
    ImageOps,
    ImageStat,
    JpegImagePlugin,
)

from ingest.derive import photo
from ingest.derive.photo import PREVIEW_SIZE, THUMB_SIZE, render_photo
from tests.conftest import REPO, require_tool

SAMPLES = Path(__file__).parent / "fixtures" / "samples"
GS_CMYK = Path("/usr/share/color/icc/ghostscript/ps_cmyk.icc")  # Debian libgs-common
MB = 1024 * 1024
RSS_LIMIT = 80 * MB
DEFAULT_LIMIT = 89_478_485  # Pillow's Image.MAX_IMAGE_PIXELS


# --- helpers --------------------------------------------------------------------------------


def render(source: Path, folder: Path, kind: str = "photo", *, thumb: bool = True,
           preview: bool = True) -> tuple[list[dict], dict[str, Image.Image]]:
    """render_photo into ``folder``; the problems and each output, opened and loaded."""
    outputs = {}
    if preview:
        outputs["preview"] = (folder / "preview.jpg", PREVIEW_SIZE)
    if thumb:
        outputs["thumb"] = (folder / "thumb.jpg", THUMB_SIZE)
    problems = render_photo(source, kind, outputs)
    images = {}
    for name, (path, _) in outputs.items():
        with Image.open(path) as image:
            image.load()
            images[name] = image
    return problems, images


def diff(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel, 0-255."""
    a, b = a.convert("RGB"), b.convert("RGB")
    if a.size != b.size:
        b = b.resize(a.size, Image.Resampling.LANCZOS)
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def mean_rgb(image: Image.Image) -> list[float]:
    return ImageStat.Stat(image.convert("RGB")).mean


def loaded(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image


def jpeg_markers(data: bytes) -> list[int]:
    """The markers of a JPEG's header segments, up to the start of scan."""
    assert data[:2] == b"\xff\xd8"
    markers, pos = [], 2
    while pos < len(data):
        assert data[pos] == 0xFF, f"no marker at {pos}"
        marker = data[pos + 1]
        markers.append(marker)
        if marker == 0xDA:  # start of scan: pixel data follows
            return markers
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        pos += 2 + length
    return markers


def run_isolated(code: str, timeout: float = 300) -> dict:
    """Run ``code`` in a fresh interpreter (this checkout importable); the JSON it prints last,
    with "hwm" added: the child's own peak RSS in bytes (VmHWM)."""
    script = textwrap.dedent(code) + textwrap.dedent("""
        import json as _json
        for _line in open("/proc/self/status"):
            if _line.startswith("VmHWM:"):
                RESULT["hwm"] = int(_line.split()[1]) * 1024
        print(_json.dumps(RESULT))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def make_big_jpeg(path: Path, width: int, height: int, **save: object) -> Path:
    """A textured JPEG (gradients and tiled noise) made in a child process: a 200 MP image
    takes over 1 GB while Pillow encodes it, which must not stay in pytest."""
    run_isolated(f"""
        from PIL import Image
        w, h = {width}, {height}
        tile = Image.effect_noise((1024, 1024), 14)
        noise = Image.new("L", (w, h))
        for y in range(0, h, 1024):
            for x in range(0, w, 1024):
                noise.paste(tile, (x, y))
        grad = Image.linear_gradient("L").resize((w, h), Image.Resampling.BILINEAR)
        image = Image.merge("RGB", (grad, noise, grad.transpose(Image.Transpose.ROTATE_180)))
        del noise, grad
        image.save({str(path)!r}, "JPEG", **{save!r})
        RESULT = {{}}
    """)
    return path


RENDER_IN_CHILD = """
    from pathlib import Path
    from ingest.derive.photo import render_photo
    folder = Path({folder!r})
    problems = render_photo(Path({source!r}), "photo", {{
        "preview": (folder / "preview.jpg", {preview}),
        "thumb": (folder / "thumb.jpg", {thumb}),
    }})
    from PIL import Image
    RESULT = {{"problems": problems, "limit": Image.MAX_IMAGE_PIXELS}}
"""


def render_in_child(source: Path, folder: Path) -> dict:
    return run_isolated(RENDER_IN_CHILD.format(
        folder=str(folder), source=str(source), preview=PREVIEW_SIZE, thumb=THUMB_SIZE))


def tiff_file(ifds: list[tuple[list[tuple], int | None]]) -> bytes:
    """A little-endian TIFF from IFDs given as (entries, index of the next IFD or None).

    An entry is (tag, type, value): value is a tuple of ints, bytes (ASCII/BYTE), ("data",
    bytes) for a LONG offset to those bytes, or ("ifd", index) for a LONG offset to that IFD.
    """
    formats = {1: "B", 3: "H", 4: "I"}
    blobs: list[bytes] = []
    for entries, _ in ifds:
        blobs.extend(v[1] for _, _, v in entries if isinstance(v, tuple) and v[:1] == ("data",))
    blob_at, pos = {}, 8
    for blob in blobs:
        blob_at[id(blob)] = pos
        pos += len(blob) + len(blob) % 2

    def raw_value(typ: int, value: object) -> tuple[bytes, int]:
        if isinstance(value, bytes):
            return value, len(value)
        return b"".join(struct.pack("<" + formats[typ], v) for v in value), len(value)

    # IFD sizes do not depend on offsets: lay them out, then fill the offsets in.
    sizes = []
    for entries, _ in ifds:
        extra = 0
        for _, typ, value in entries:
            if not (isinstance(value, tuple) and value[:1] in (("data",), ("ifd",))):
                data, _ = raw_value(typ, value)
                extra += len(data) + len(data) % 2 if len(data) > 4 else 0
        sizes.append(2 + 12 * len(entries) + 4 + extra)
    ifd_at = []
    for size in sizes:
        ifd_at.append(pos)
        pos += size
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_at[0]))
    for blob in blobs:
        out += blob + b"\x00" * (len(blob) % 2)
    for index, (entries, next_index) in enumerate(ifds):
        entries = sorted(entries, key=lambda entry: entry[0])
        body, extra = struct.pack("<H", len(entries)), b""
        extra_at = ifd_at[index] + 2 + 12 * len(entries) + 4
        for tag, typ, value in entries:
            if isinstance(value, tuple) and value[:1] == ("data",):
                data, count = struct.pack("<I", blob_at[id(value[1])]), 1
            elif isinstance(value, tuple) and value[:1] == ("ifd",):
                data, count = struct.pack("<I", ifd_at[value[1]]), 1
            else:
                data, count = raw_value(typ, value)
            if len(data) <= 4:
                body += struct.pack("<HHI", tag, typ, count) + data.ljust(4, b"\x00")
            else:
                body += struct.pack("<HHII", tag, typ, count, extra_at + len(extra))
                extra += data + b"\x00" * (len(data) % 2)
        body += struct.pack("<I", 0 if next_index is None else ifd_at[next_index])
        assert len(out) == ifd_at[index]
        out += body + extra
    return bytes(out)


def _jpeg_size(jpeg: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(jpeg)) as image:
        return image.size


def fake_raw(preview: bytes | None, orientation: int = 1, thumbnail: bytes | None = None) -> bytes:
    """A DNG-like TIFF: IFD0 holds 64x48 "sensor" pixels, Orientation, Make/Model and
    DNGVersion; a SubIFD holds ``preview`` as a JPEG (exiftool: PreviewImage); IFD1 holds
    ``thumbnail`` (exiftool: ThumbnailImage)."""
    sensor = bytes([90, 90, 90]) * 64 * 48
    ifd0 = [
        (254, 4, (0,)), (256, 4, (64,)), (257, 4, (48,)), (258, 3, (8, 8, 8)), (259, 3, (1,)),
        (262, 3, (2,)), (271, 2, b"Acopio\x00"), (272, 2, b"Test RAW\x00"),
        (273, 4, ("data", sensor)), (274, 3, (orientation,)), (277, 3, (3,)), (278, 4, (48,)),
        (279, 4, (len(sensor),)), (50706, 1, bytes([1, 4, 0, 0])),
    ]
    ifds: list[tuple[list[tuple], int | None]] = [(ifd0, None)]
    if thumbnail is not None:
        ifds[0] = (ifd0, 1)
        ifds.append(([(259, 3, (6,)), (513, 4, ("data", thumbnail)),
                      (514, 4, (len(thumbnail),))], None))
    if preview is not None:
        width, height = _jpeg_size(preview)
        ifd0.append((330, 4, ("ifd", len(ifds))))
        ifds.append(([
            (254, 4, (1,)), (256, 4, (width,)), (257, 4, (height,)), (258, 3, (8, 8, 8)),
            (259, 3, (7,)), (262, 3, (6,)), (273, 4, ("data", preview)), (277, 3, (3,)),
            (278, 4, (height,)), (279, 4, (len(preview),)),
        ], None))
    return tiff_file(ifds)


def rgb16_tiff(image: Image.Image) -> bytes:
    """An uncompressed 48-bit RGB TIFF of an 8-bit RGB image (each value v as v * 257)."""
    values = image.tobytes()
    pixels = struct.pack(f"<{len(values)}H", *(v * 257 for v in values))
    width, height = image.size
    return tiff_file([([
        (256, 4, (width,)), (257, 4, (height,)), (258, 3, (16, 16, 16)), (259, 3, (1,)),
        (262, 3, (2,)), (273, 4, ("data", pixels)), (277, 3, (3,)), (278, 4, (height,)),
        (279, 4, (len(pixels),)),
    ], None)])


def patch_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """A JPEG whose frame header (SOF0/SOF2) claims another size; the scan stays as it was."""
    pos = 2
    while True:
        marker = data[pos + 1]
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in (0xC0, 0xC2):
            return data[: pos + 5] + struct.pack(">HH", height, width) + data[pos + 9 :]
        pos += 2 + length


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (CRC fixed)."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(out, "PNG")
    data = out.getvalue()
    ihdr = struct.pack(">II", width, height) + data[24:29]
    return data[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + data[33:]


def is_placeholder(image: Image.Image) -> bool:
    """Mostly the placeholder grey (the mark covers a small part)."""
    rgb = image.convert("RGB")
    away = ImageChops.difference(rgb, Image.new("RGB", rgb.size, photo.PLACEHOLDER_GREY))
    close = sum(away.convert("L").histogram()[:7])
    return close > 0.7 * rgb.width * rgb.height


@pytest.fixture(scope="module")
def flower() -> Image.Image:
    return loaded(SAMPLES / "flower.jpg")


# --- sizes, shrink-on-load, one decode ------------------------------------------------------


def test_preview_and_thumbnail_of_a_large_jpeg(tmp_path: Path) -> None:
    source = tmp_path / "photo.jpg"
    Image.linear_gradient("L").resize((3000, 2000)).convert("RGB").save(source, quality=90)
    problems, out = render(source, tmp_path)
    assert problems == []
    assert out["preview"].size == (1600, 1067)
    assert out["thumb"].size == (320, 213)
    for image in out.values():
        assert image.format == "JPEG" and image.mode == "RGB"
        assert image.info.get("progressive") == 1
    assert diff(out["thumb"], loaded(source)) < 3


def test_small_sources_are_not_enlarged(tmp_path: Path, flower: Image.Image) -> None:
    problems, out = render(SAMPLES / "flower.jpg", tmp_path)
    assert problems == []
    assert out["preview"].size == flower.size == (480, 360)
    assert out["thumb"].size == (320, 240)
    assert diff(out["preview"], flower) < 3


@pytest.mark.parametrize(("outputs", "decoded"), [
    ({"preview": 1600, "thumb": 320}, (2000, 1500)),  # 1/2: 1/4 would be under 1600
    ({"thumb": 320}, (500, 375)),  # 1/8
    ({"preview": 4000}, (4000, 3000)),  # a full decode only when the output is that big
])
def test_jpeg_is_opened_and_decoded_once_scaled_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outputs: dict, decoded: tuple
) -> None:
    source = tmp_path / "photo.jpg"
    Image.radial_gradient("L").resize((4000, 3000)).convert("RGB").save(source, quality=90)
    opened, loads = [], []
    real_factory, real_load = JpegImagePlugin.jpeg_factory, JpegImagePlugin.JpegImageFile.load

    def factory(*args, **kwargs):
        opened.append(1)
        return real_factory(*args, **kwargs)

    def load(self):
        if self.tile:  # the decode itself (later calls return the pixels already there)
            loads.append(self.size)
        return real_load(self)

    monkeypatch.setattr(JpegImagePlugin, "jpeg_factory", factory)
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", load)
    problems = render_photo(source, "photo", {
        name: (tmp_path / f"{name}.jpg", size) for name, size in outputs.items()})
    assert problems == []
    assert opened == [1]
    assert loads == [decoded]
    for name, size in outputs.items():
        assert max(loaded(tmp_path / f"{name}.jpg").size) == size


# --- orientation ----------------------------------------------------------------------------

# The transposition that stores an upright picture so that orientation N shows it upright.
_STORE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied(
    tmp_path: Path, flower: Image.Image, orientation: int
) -> None:
    stored = flower if orientation == 1 else flower.transpose(_STORE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    source = tmp_path / "oriented.jpg"
    stored.save(source, quality=95, exif=exif)
    # Pillow's own reading of the tag agrees that this shows the upright flower.
    assert diff(ImageOps.exif_transpose(loaded(source)), flower) < 4
    problems, out = render(source, tmp_path)
    assert problems == []
    assert out["preview"].size == (480, 360)
    assert out["thumb"].size == (320, 240)
    assert diff(out["preview"], flower) < 4
    if orientation != 1:
        assert diff(stored, flower) > 15  # the check above can tell a wrong orientation


@pytest.mark.parametrize("name", ["hopper_orientation_3.jpg", "hopper_orientation_8.jpg"])
def test_orientation_samples_come_out_upright(tmp_path: Path, name: str) -> None:
    upright = loaded(SAMPLES / "hopper.jpg")
    stored = loaded(SAMPLES / name)
    assert diff(stored, upright) > 20
    problems, out = render(SAMPLES / name, tmp_path)
    assert problems == []
    assert diff(out["preview"], upright) < 8


def _arrow_points_up(image: Image.Image) -> bool:
    """arrow.heic is a hand-drawn arrow: the top of its ink is the narrow tip, the bottom the
    wide end of the shaft. Specks of dark paper are eroded away first."""
    ink = image.convert("L").point(lambda v: 255 if v < 90 else 0)
    ink = ink.filter(ImageFilter.MinFilter(5))
    _, top, _, bottom = ink.getbbox()
    band = (bottom - top) // 20
    tip = ink.crop((0, top, image.width, top + band)).getbbox()
    end = ink.crop((0, bottom - band, image.width, bottom)).getbbox()
    return (tip[2] - tip[0]) * 3 < end[2] - end[0]


def test_heic_orientation_applied_once(tmp_path: Path) -> None:
    """arrow.heic: 4032x3024 stored, orientation 6, shown portrait by the iPhone. libheif turns
    it while decoding; turning it again by the EXIF tag would show it on its side."""
    problems, out = render(SAMPLES / "arrow.heic", tmp_path)
    assert problems == []
    assert out["preview"].size == (1200, 1600)
    assert out["thumb"].size == (240, 320)
    assert _arrow_points_up(out["preview"])
    assert not _arrow_points_up(out["preview"].transpose(Image.Transpose.ROTATE_180))
    # A thumbnail alone comes from the thumbnail the iPhone stored, the same way up.
    problems, alone = render(SAMPLES / "arrow.heic", tmp_path / "alone", preview=False)
    assert problems == []
    assert alone["thumb"].size == (240, 320)
    assert diff(alone["thumb"], out["thumb"]) < 12


def test_raw_orientation_applies_to_a_preview_without_its_own(
    tmp_path: Path, flower: Image.Image
) -> None:
    require_tool("exiftool")
    bare = io.BytesIO()
    flower.save(bare, "JPEG", quality=95)  # no EXIF: as most embedded previews
    source = tmp_path / "IMG_0001.dng"
    source.write_bytes(fake_raw(bare.getvalue(), orientation=6))
    problems, out = render(source, tmp_path, "raw")
    assert problems == []
    assert out["preview"].size == (360, 480)
    assert diff(out["preview"], flower.transpose(Image.Transpose.ROTATE_270)) < 4


def test_raw_preview_with_its_own_orientation_keeps_it(tmp_path: Path, flower: Image.Image) -> None:
    require_tool("exiftool")
    exif = Image.Exif()
    exif[0x0112] = 3
    tagged = io.BytesIO()
    flower.transpose(Image.Transpose.ROTATE_180).save(tagged, "JPEG", quality=95, exif=exif)
    source = tmp_path / "IMG_0002.dng"
    source.write_bytes(fake_raw(tagged.getvalue(), orientation=6))
    problems, out = render(source, tmp_path, "raw")
    assert problems == []
    assert out["preview"].size == (480, 360)
    assert diff(out["preview"], flower) < 4


# --- formats --------------------------------------------------------------------------------


def test_mpo_uses_its_first_frame(tmp_path: Path) -> None:
    with Image.open(SAMPLES / "frozenpond.mpo") as mpo:
        assert mpo.n_frames == 2
        first = mpo.convert("RGB")
        mpo.seek(1)
        second = mpo.convert("RGB")
    problems, out = render(SAMPLES / "frozenpond.mpo", tmp_path)
    assert problems == []
    assert out["preview"].size == (640, 480)
    assert diff(out["preview"], first) < 3
    assert diff(out["preview"], second) > diff(out["preview"], first) + 5


def test_raw_uses_its_largest_embedded_jpeg(tmp_path: Path, flower: Image.Image) -> None:
    require_tool("exiftool")
    big = io.BytesIO()
    flower.save(big, "JPEG", quality=95)
    small = io.BytesIO()
    Image.new("RGB", (160, 120), (0, 0, 255)).save(small, "JPEG")
    source = tmp_path / "DSC_0001.NEF"
    source.write_bytes(fake_raw(big.getvalue(), thumbnail=small.getvalue()))
    with source.open("rb") as stdin:  # what exiftool finds, read the way render_photo reads
        listing = subprocess.run(photo.raw_preview_args(), stdin=stdin, capture_output=True,
                                 text=True, check=True)
    assert {"EXIF:PreviewImage", "EXIF:ThumbnailImage"} <= set(json.loads(listing.stdout)[0])
    problems, out = render(source, tmp_path, "raw")
    assert problems == []
    assert out["preview"].size == (480, 360)
    assert diff(out["preview"], flower) < 4


def test_raw_without_any_preview_gets_a_placeholder(tmp_path: Path) -> None:
    require_tool("exiftool")
    source = tmp_path / "IMG_0003.dng"
    source.write_bytes(fake_raw(None))
    problems, out = render(source, tmp_path, "raw")
    assert [p["code"] for p in problems] == ["no_preview"]
    assert is_placeholder(out["preview"]) and is_placeholder(out["thumb"])


def test_not_a_raw_at_all_is_damaged(tmp_path: Path) -> None:
    require_tool("exiftool")
    source = tmp_path / "-not-a-raw.cr2"  # a name that looks like an option: never passed
    # Bytes of no format, the same every run: os.urandom starts with an MP3 frame sync
    # (0xFF 0xE0-0xFF) about once in 2,000 runs, and exiftool then reads a file with no
    # preview (a CI run failed so)
    source.write_bytes(b"ACOPIO no es un RAW\n" + random.Random(3).randbytes(4096))
    problems, out = render(source, tmp_path, "raw")
    assert [p["code"] for p in problems] == ["damaged"]
    assert is_placeholder(out["thumb"])


def test_raw_exiftool_reads_stdin_only() -> None:
    args = photo.raw_preview_args()
    assert args[0] == "exiftool" and args[-1] == "-"
    assert all(arg.startswith("-") for arg in args[1:])


def test_png_transparency_is_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (400, 200), (0, 0, 0, 0))
    image.paste((200, 0, 0, 255), (0, 0, 200, 200))
    image.paste((0, 0, 200, 128), (200, 0, 400, 200))
    source = tmp_path / "logo.png"
    image.save(source)
    problems, out = render(source, tmp_path)
    assert problems == []
    preview = out["preview"]
    assert preview.mode == "RGB" and preview.size == (400, 200)
    red = preview.getpixel((100, 100))
    half_blue = preview.getpixel((300, 100))
    assert red[0] > 190 and red[1] < 15
    assert all(abs(a - b) <= 6 for a, b in zip(half_blue, (127, 127, 227), strict=True))
    transparent = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    transparent.save(tmp_path / "clear.png")
    problems, out = render(tmp_path / "clear.png", tmp_path / "clear")
    assert problems == []
    assert min(min(band) for band in out["thumb"].getextrema()) > 245  # white, not black


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (100, 100), 0)
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    image.paste(1, (50, 0, 100, 100))
    image.save(tmp_path / "pal.png", transparency=0)
    problems, out = render(tmp_path / "pal.png", tmp_path)
    assert problems == []
    assert out["preview"].getpixel((20, 50)) == pytest.approx((255, 255, 255), abs=4)
    assert out["preview"].getpixel((80, 50)) == pytest.approx((0, 255, 0), abs=8)


def test_grayscale_jpeg_and_16bit_grey(tmp_path: Path) -> None:
    grey = Image.linear_gradient("L").resize((512, 256))
    grey.save(tmp_path / "grey.jpg", quality=95)
    problems, out = render(tmp_path / "grey.jpg", tmp_path / "a")
    assert problems == []
    assert diff(out["preview"], grey) < 3
    wide = Image.new("I;16", (256, 128))
    wide.putdata([x * 257 for _ in range(128) for x in range(256)])
    wide.save(tmp_path / "grey16.png")
    assert loaded(tmp_path / "grey16.png").mode.startswith("I")
    problems, out = render(tmp_path / "grey16.png", tmp_path / "b")
    assert problems == []
    row = [out["preview"].convert("L").getpixel((x, 64)) for x in range(0, 256, 32)]
    assert row == pytest.approx(list(range(0, 256, 32)), abs=3)  # scaled, not clipped to 255


def test_16bit_rgb_tiff(tmp_path: Path) -> None:
    colours = Image.new("RGB", (60, 40), (250, 128, 10))
    colours.paste((20, 40, 220), (30, 0, 60, 40))
    source = tmp_path / "scan.tif"
    source.write_bytes(rgb16_tiff(colours))
    problems, out = render(source, tmp_path)
    assert problems == []
    assert out["preview"].size == (60, 40)
    assert diff(out["preview"], colours) < 4


def test_webp_and_oriented_tiff(tmp_path: Path, flower: Image.Image) -> None:
    flower.save(tmp_path / "web.webp", quality=95)
    problems, out = render(tmp_path / "web.webp", tmp_path / "webp")
    assert problems == []
    assert diff(out["preview"], flower) < 5
    exif = Image.Exif()
    exif[0x0112] = 6
    flower.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "scan.tif", exif=exif)
    problems, out = render(tmp_path / "scan.tif", tmp_path / "tiff")
    assert problems == []
    assert out["preview"].size == (480, 360)
    assert diff(out["preview"], flower) < 4


# --- colour ---------------------------------------------------------------------------------


def test_cmyk_jpeg_colours(tmp_path: Path) -> None:
    """pil_sample_cmyk.jpg: Adobe (inverted) CMYK without a profile."""
    source = SAMPLES / "pil_sample_cmyk.jpg"
    cmyk = loaded(source)
    assert cmyk.mode == "CMYK" and "icc_profile" not in cmyk.info
    problems, out = render(source, tmp_path)
    assert problems == []
    assert out["preview"].mode == "RGB"
    fallback = next((Path(p) for p in photo.CMYK_FALLBACK_PROFILES if Path(p).exists()), None)
    if fallback is not None:
        reference = ImageCms.profileToProfile(
            cmyk, ImageCms.getOpenProfile(str(fallback)), ImageCms.createProfile("sRGB"),
            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC, outputMode="RGB",
            flags=ImageCms.Flags.BLACKPOINTCOMPENSATION)
    else:
        reference = cmyk.convert("RGB")
    assert mean_rgb(out["preview"]) == pytest.approx(mean_rgb(reference), abs=3)
    assert diff(out["preview"], reference) < 6  # sharp red text: JPEG's own loss
    # Read without the Adobe inversion, the colours would be far off: the check can tell.
    wrong = ImageChops.invert(cmyk).convert("RGB")
    assert diff(out["preview"], wrong) > 40


def test_cmyk_jpeg_with_its_own_profile(tmp_path: Path) -> None:
    """The embedded profile is the one used (Ghostscript's PS CMYK profile: its colours differ
    from the generic fallback's and from Pillow's naive formula)."""
    if not GS_CMYK.exists():
        pytest.fail(f"{GS_CMYK} is missing; run ./scripts/setup (Debian libgs-common)")
    rgb = Image.new("RGB", (200, 100), (230, 40, 40))
    rgb.paste((40, 160, 220), (100, 0, 200, 100))
    cmyk = rgb.convert("CMYK")
    source = tmp_path / "press.jpg"
    cmyk.save(source, quality=95, icc_profile=GS_CMYK.read_bytes())
    problems, out = render(source, tmp_path)
    assert problems == []
    decoded = loaded(source)
    assert decoded.mode == "CMYK"

    def converted(profile: Path) -> Image.Image:
        return ImageCms.profileToProfile(
            decoded, ImageCms.getOpenProfile(str(profile)), ImageCms.createProfile("sRGB"),
            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC, outputMode="RGB",
            flags=ImageCms.Flags.BLACKPOINTCOMPENSATION)

    assert diff(out["preview"], converted(GS_CMYK)) < 3
    assert diff(out["preview"], decoded.convert("RGB")) > 15
    fallback = Path(photo.CMYK_FALLBACK_PROFILES[0])
    if fallback.exists():
        assert diff(out["preview"], converted(fallback)) > 15


def _p3_profile() -> bytes:
    """Display P3, as iPhones embed it (taken from arrow.heic)."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    with Image.open(SAMPLES / "arrow.heic") as image:
        return image.info["icc_profile"]


@pytest.mark.parametrize("profile_from", ["xmp_test.jpg", "arrow.heic"])
def test_wide_gamut_profiles_are_converted_to_srgb(tmp_path: Path, profile_from: str) -> None:
    """Adobe RGB (xmp_test.jpg's profile) and Display P3 (iPhone): saturated colours move."""
    icc = loaded(SAMPLES / profile_from).info["icc_profile"] if profile_from.endswith(
        ".jpg") else _p3_profile()
    colours = Image.new("RGB", (300, 100), (200, 60, 60))
    colours.paste((60, 180, 60), (100, 0, 200, 100))
    colours.paste((60, 60, 200), (200, 0, 300, 100))
    source = tmp_path / "wide.jpg"
    colours.save(source, quality=95, icc_profile=icc)
    problems, out = render(source, tmp_path)
    assert problems == []
    assert "icc_profile" not in out["preview"].info  # untagged: sRGB for every browser
    reference = ImageCms.profileToProfile(
        loaded(source), ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"),
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC, outputMode="RGB",
        flags=ImageCms.Flags.BLACKPOINTCOMPENSATION)
    assert diff(out["preview"], reference) < 2
    assert diff(out["preview"], colours) > 6  # untouched pixels would be visibly wrong


def test_iphone_heic_is_converted_from_display_p3(tmp_path: Path) -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()
    full = loaded(SAMPLES / "pug.heic")
    icc = full.info["icc_profile"]
    assert "P3" in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    problems, out = render(SAMPLES / "pug.heic", tmp_path)
    assert problems == []
    assert out["preview"].size == (1600, 1200)
    srgb = ImageCms.profileToProfile(
        full.resize((1600, 1200), Image.Resampling.LANCZOS),
        ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"),
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC, outputMode="RGB",
        flags=ImageCms.Flags.BLACKPOINTCOMPENSATION)
    assert diff(out["preview"], srgb) < 2


def test_a_broken_profile_is_reported_and_ignored(tmp_path: Path, flower: Image.Image) -> None:
    source = tmp_path / "bad-icc.jpg"
    flower.save(source, quality=95, icc_profile=b"not an ICC profile at all" * 8)
    problems, out = render(source, tmp_path)
    assert [p["code"] for p in problems] == ["unreadable_metadata"]
    assert diff(out["preview"], flower) < 4


# --- metadata stripped ----------------------------------------------------------------------


def test_outputs_carry_no_metadata(tmp_path: Path, flower: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "EOS R6"
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (19.0, 25.0, 57.0), 3: "W", 4: (99.0, 7.0, 59.0)})
    source = tmp_path / "gps.jpg"
    flower.save(source, quality=95, exif=exif, comment=b"shot at Calle Secreta 12",
                icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes(),
                xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/">Calle Secreta</x:xmpmeta>')
    assert loaded(source).getexif().get_ifd(0x8825)  # the source has GPS
    problems, _ = render(source, tmp_path)
    assert problems == []
    for name in ("preview.jpg", "thumb.jpg"):
        data = (tmp_path / name).read_bytes()
        markers = jpeg_markers(data)
        assert not [m for m in markers if 0xE1 <= m <= 0xEF or m == 0xFE], markers  # APPn, COM
        assert b"Exif" not in data and b"Secreta" not in data and b"Canon" not in data
        assert not loaded(tmp_path / name).getexif()


def test_heic_gps_does_not_leak(tmp_path: Path) -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()
    with Image.open(SAMPLES / "pug.heic") as heic:
        assert heic.getexif()  # iPhone EXIF present in the source
    render(SAMPLES / "pug.heic", tmp_path)
    for name in ("preview.jpg", "thumb.jpg"):
        data = (tmp_path / name).read_bytes()
        assert not [m for m in jpeg_markers(data) if 0xE1 <= m <= 0xEF or m == 0xFE]
        assert b"Apple" not in data and b"Exif" not in data


# --- bombs and huge photos ------------------------------------------------------------------


def test_true_bombs_are_refused_with_a_placeholder(tmp_path: Path) -> None:
    small = io.BytesIO()
    Image.new("RGB", (16, 16), (5, 5, 5)).save(small, "JPEG")
    cases = {  # name: (content, placeholder size)
        # 2.5 gigapixels in 600 bytes: refused from the header, in its shape
        "bomb.jpg": (patch_jpeg_size(small.getvalue(), 50_000, 50_000), (1600, 1600)),
        # 100 MP: Image.open only warns, the PNG is refused here
        "big.png": (png_claiming(10_000, 10_000), (1600, 1600)),
        # Image.open itself refuses: the shape is not known, so 4:3
        "huge.png": (png_claiming(50_000, 50_000), (1600, 1200)),
    }
    for name, (data, shape) in cases.items():
        source = tmp_path / name
        source.write_bytes(data)
        bomb_warning = name == "big.png"
        with pytest.warns(Image.DecompressionBombWarning) if bomb_warning else nullcontext():
            problems, out = render(source, tmp_path / name.replace(".", "-"))
        assert [p["code"] for p in problems] == ["too_large"], (name, problems)
        assert out["preview"].size == shape
        assert is_placeholder(out["preview"]) and is_placeholder(out["thumb"])
    assert DEFAULT_LIMIT == Image.MAX_IMAGE_PIXELS  # never changed, not even for a while


def test_a_png_too_large_to_decode_whole_on_a_small_box_is_refused(tmp_path: Path) -> None:
    """Under Pillow's limit, an 88 MP PNG or TIFF still took the worker to 505 MB (a 1 GB Pi
    runs the web UI, an import and Chromium beside it): formats decoded whole stop at
    FULL_DECODE_MAX_PIXELS, a placeholder of their shape and a clear reason instead."""
    assert Image.MAX_IMAGE_PIXELS > 8000 * 6000
    source = tmp_path / "escaneo.png"
    source.write_bytes(png_claiming(8000, 6000))
    problems, out = render(source, tmp_path)
    assert [p["code"] for p in problems] == ["too_large"]
    assert "decoded whole on this box" in problems[0]["detail"], problems
    assert out["preview"].size == (1600, 1200) and is_placeholder(out["preview"])


def test_tiff_over_the_limit_is_refused(tmp_path: Path) -> None:
    strip = bytes(3 * 10_000)
    source = tmp_path / "scan.tif"
    source.write_bytes(tiff_file([([
        (256, 4, (10_000,)), (257, 4, (10_000,)), (258, 3, (8, 8, 8)), (259, 3, (1,)),
        (262, 3, (2,)), (273, 4, ("data", strip)), (277, 3, (3,)), (278, 4, (1,)),
        (279, 4, (len(strip),)),
    ], None)]))
    with pytest.warns(Image.DecompressionBombWarning):
        problems, out = render(source, tmp_path)
    assert [p["code"] for p in problems] == ["too_large"]
    assert is_placeholder(out["thumb"])


def test_jpeg_bomb_policy() -> None:
    refusal = photo.jpeg_bomb_refusal
    assert refusal((6000, 4000), (6000, 4000), progressive=True) is None  # Pillow's rule
    assert refusal((16320, 12240), (2040, 1530), progressive=False) is None  # 200 MP phone
    assert "progressive" in refusal((16320, 12240), (2040, 1530), progressive=True)
    assert "allowed" in refusal((30000, 20000), (3750, 2500), progressive=False)  # 600 MP
    assert "scaled decode" in refusal((16320, 12240), (8160, 6120), progressive=False)


def test_progressive_jpeg_over_the_limit_is_refused(tmp_path: Path) -> None:
    small = io.BytesIO()
    Image.new("RGB", (64, 64), (5, 5, 5)).save(small, "JPEG", progressive=True)
    source = tmp_path / "prog.jpg"
    source.write_bytes(patch_jpeg_size(small.getvalue(), 12_000, 9_000))
    problems, out = render(source, tmp_path)
    assert [p["code"] for p in problems] == ["too_large"]
    assert "progressive" in problems[0]["detail"]
    assert out["preview"].size == (1600, 1200)


@pytest.mark.slow
def test_200_megapixel_jpeg_within_the_memory_bound(tmp_path: Path) -> None:
    """A real 16320x12240 baseline JPEG (over Pillow's limit): decoded at 1/8, under 80 MB."""
    source = make_big_jpeg(tmp_path / "200mp.jpg", 16320, 12240, quality=85)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(source)  # Pillow alone refuses it
    result = render_in_child(source, tmp_path)
    assert result["problems"] == []
    assert result["limit"] == DEFAULT_LIMIT
    assert loaded(tmp_path / "preview.jpg").size == (1600, 1200)
    assert loaded(tmp_path / "thumb.jpg").size == (320, 240)
    assert result["hwm"] < RSS_LIMIT, f"peak RSS {result['hwm'] / MB:.1f} MB"


@pytest.mark.slow
def test_24_megapixel_jpeg_peak_rss(tmp_path: Path) -> None:
    source = make_big_jpeg(tmp_path / "24mp.jpg", 6000, 4000, quality=92)
    result = render_in_child(source, tmp_path)
    assert result["problems"] == []
    assert loaded(tmp_path / "preview.jpg").size == (1600, 1067)
    assert result["hwm"] < RSS_LIMIT, f"peak RSS {result['hwm'] / MB:.1f} MB"


# --- damage ---------------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0.02, 0.3, 0.7, 0.97])
def test_truncated_jpeg_gets_a_placeholder(tmp_path: Path, keep: float) -> None:
    data = (SAMPLES / "flower.jpg").read_bytes()
    source = tmp_path / "cut.jpg"
    source.write_bytes(data[: int(len(data) * keep)])
    problems, out = render(source, tmp_path)
    assert [p["code"] for p in problems] == ["damaged"]
    assert "truncated" in problems[0]["detail"].lower()
    assert is_placeholder(out["preview"]) and is_placeholder(out["thumb"])
    assert max(out["preview"].size) == PREVIEW_SIZE and max(out["thumb"].size) == THUMB_SIZE
    assert not any(p.name.startswith(".acopio-tmp-") for p in tmp_path.iterdir())


@pytest.mark.parametrize("case", ["truncated.heic", "cut pug.heic", "empty", "garbage"])
def test_other_damage_gets_a_placeholder(tmp_path: Path, case: str) -> None:
    if case == "truncated.heic":
        source = SAMPLES / case
    else:
        source = tmp_path / "broken.heic"
        data = (SAMPLES / "pug.heic").read_bytes()
        source.write_bytes({"cut pug.heic": data[: len(data) // 2], "empty": b"",
                            "garbage": os.urandom(5000)}[case])
    problems, out = render(source, tmp_path)
    assert [p["code"] for p in problems] == ["damaged"], problems
    assert is_placeholder(out["thumb"])


def test_bad_exif_alone_does_not_make_a_placeholder(tmp_path: Path) -> None:
    """hopper_bad_exif.jpg: corrupt EXIF (the import flags it) over whole pixel data."""
    with pytest.warns(UserWarning, match="Corrupt EXIF"):
        problems, out = render(SAMPLES / "hopper_bad_exif.jpg", tmp_path)
    assert problems == []
    assert out["preview"].size == (500, 500)
    assert diff(out["preview"], loaded(SAMPLES / "hopper_bad_exif.jpg")) < 3


def test_placeholder_shape() -> None:
    assert photo.placeholder((4000, 3000), 320).size == (320, 240)
    assert photo.placeholder((3000, 4000), 1600).size == (1200, 1600)
    assert photo.placeholder(None, 320).size == (320, 240)
    assert is_placeholder(photo.placeholder(None, 320))
    mark = photo.placeholder(None, 320).convert("L").getextrema()
    assert mark[0] < 120  # the broken-image mark is drawn


# --- atomic writes --------------------------------------------------------------------------


def test_failing_encoder_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "derivatives"
    folder.mkdir()
    (folder / "thumb.jpg").write_bytes(b"old thumbnail")
    real_save = JpegImagePlugin._save

    def save_then_fail(im, fp, filename):
        real_save(im, io.BytesIO(), filename)
        fp.write(b"\xff\xd8\xff\xe0 half a JPEG")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(Image.SAVE, "JPEG", save_then_fail)
    with pytest.raises(OSError, match="No space"):
        render_photo(SAMPLES / "flower.jpg", "photo", {
            "preview": (folder / "preview.jpg", PREVIEW_SIZE),
            "thumb": (folder / "thumb.jpg", THUMB_SIZE)})
    assert sorted(p.name for p in folder.iterdir()) == ["thumb.jpg"]
    assert (folder / "thumb.jpg").read_bytes() == b"old thumbnail"


def test_a_write_cut_short_leaves_no_half_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills up in the middle of writing the preview: no preview.jpg appears, the
    temp file is removed, and the old thumbnail is still whole."""
    from appliance import fsutil

    folder = tmp_path / "derivatives"
    folder.mkdir()
    (folder / "thumb.jpg").write_bytes(b"old thumbnail")
    real_write = os.write
    writes = []

    def write(fd: int, data) -> int:
        if writes:
            raise OSError(errno.ENOSPC, "No space left on device")
        writes.append(fd)
        return real_write(fd, bytes(data)[:1000])  # a short write: the rest fails

    monkeypatch.setattr(fsutil.os, "write", write)
    with pytest.raises(OSError, match="No space"):
        render_photo(SAMPLES / "xmp_test.jpg", "photo", {
            "preview": (folder / "preview.jpg", PREVIEW_SIZE),
            "thumb": (folder / "thumb.jpg", THUMB_SIZE)})
    assert writes
    assert sorted(p.name for p in folder.iterdir()) == ["thumb.jpg"]
    assert (folder / "thumb.jpg").read_bytes() == b"old thumbnail"


def test_outputs_are_written_in_new_folders(tmp_path: Path) -> None:
    problems = render_photo(SAMPLES / "flower.jpg", "photo", {
        "thumb": (tmp_path / "ab" / "cd" / "abcd.thumb.jpg", THUMB_SIZE)})
    assert problems == []
    assert loaded(tmp_path / "ab" / "cd" / "abcd.thumb.jpg").size == (320, 240)


# --- API ------------------------------------------------------------------------------------


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind"):
        render_photo(SAMPLES / "flower.jpg", "video", {"thumb": (tmp_path / "t.jpg", 320)})
    with pytest.raises(ValueError, match="size"):
        render_photo(SAMPLES / "flower.jpg", "photo", {"thumb": (tmp_path / "t.jpg", 0)})
    assert render_photo(SAMPLES / "flower.jpg", "photo", {}) == []
    with pytest.raises(FileNotFoundError):
        render_photo(tmp_path / "missing.jpg", "photo", {"thumb": (tmp_path / "t.jpg", 320)})
    assert not (tmp_path / "t.jpg").exists()


def test_default_sizes() -> None:
    assert (THUMB_SIZE, PREVIEW_SIZE) == (320, 1600)
