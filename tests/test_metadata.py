"""Tests for ingest.metadata: real camera and phone samples, media made with ffmpeg at test time,
damaged and hostile files, and the capture-time policy."""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import socket
import stat
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pillow_heif
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops, ImageFile, ImageStat

from ingest.metadata import MediaInfo, TimeCandidate, ffprobe_args, probe, resolve_capture_time
from ingest.metadata.av import fill_from_ffprobe, stream_rotation
from ingest.metadata.gps import parse_iso6709
from ingest.metadata.heif import check_heif
from ingest.metadata.jpeg import check_jpeg, read_headers
from ingest.metadata.raw import exiftool_args
from ingest.metadata.reading import Damaged, ReadAt

SAMPLES = Path(__file__).parent / "fixtures" / "samples"
MEXICO = ZoneInfo("America/Mexico_City")
PLUS3 = timezone(timedelta(hours=3))
MINUS6 = timezone(timedelta(hours=-6))

needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None, reason="needs ffmpeg"
)
needs_exiftool = pytest.mark.skipif(shutil.which("exiftool") is None, reason="needs exiftool")


# ---------------------------------------------------------------------------------------------
# Helpers


def probe_path(path: Path, kind: str, **kwargs: float) -> MediaInfo:
    """Open like the pipeline does, probe, and check the caller's fd is left open and usable."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        info = probe(fd, kind, **kwargs)
        assert os.pread(fd, 4, 0) == path.read_bytes()[:4]
    finally:
        os.close(fd)
    return info


def codes(info: MediaInfo) -> list[str]:
    return [p["code"] for p in info.problems]


def run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=60)


def exiftool_write(path: Path, *assignments: str) -> None:
    run("exiftool", "-q", "-overwrite_original", *assignments, str(path))


def ffmpeg_frame(path: Path) -> Image.Image:
    """The first frame as a player shows it (ffmpeg applies the display rotation)."""
    args = ["ffmpeg", "-v", "error", "-i", str(path), "-frames:v", "1"]
    args += ["-f", "image2pipe", "-c:v", "png", "-"]
    png = subprocess.run(args, check=True, capture_output=True, timeout=60).stdout
    return Image.open(io.BytesIO(png)).convert("RGB")


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fake_program(directory: Path, name: str, pidfile: Path) -> None:
    """A stand-in that never finishes; it starts a child too, to check the group is killed."""
    script = directory / name
    script.write_text(f'#!/bin/sh\n/bin/sleep 60 &\necho $! > "{pidfile}"\nwait\n')
    script.chmod(0o755)


def process_gone(pid: int, wait: float = 5.0) -> bool:
    """True once ``pid`` has exited. SIGKILL is delivered asynchronously: on a loaded machine the
    process may still show as running for a moment after killpg returned."""
    deadline = time.monotonic() + wait
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":  # killed, waiting for its new parent to reap it
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------
# Generated media, built once per module


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg")
    d = tmp_path_factory.mktemp("media")
    video = ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=10", "-t", "1"]
    x264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p"]
    sine = ["-f", "lavfi", "-i", "sine=frequency=440:duration=1"]
    utc = ["-metadata", "creation_time=2026-05-10T18:30:00Z"]
    out = {name: d / name for name in ("clip.mp4", "rotated.mp4", "iphone.mov")}
    run("ffmpeg", "-v", "error", *video, *utc, "-metadata", "location=+19.4326-099.1332+2240/",
        *x264, str(out["clip.mp4"]))  # fmt: skip
    # ffmpeg 5.1 has no -display_rotation; its muxer turns the legacy tag into a display matrix.
    run("ffmpeg", "-v", "error", "-i", str(out["clip.mp4"]), "-c", "copy",
        "-metadata:s:v", "rotate=90", str(out["rotated.mp4"]))  # fmt: skip
    run("ffmpeg", "-v", "error", *video, *utc, "-movflags", "use_metadata_tags",
        "-metadata", "com.apple.quicktime.creationdate=2026-05-10T12:30:00-0600",
        "-metadata", "com.apple.quicktime.make=Apple",
        "-metadata", "com.apple.quicktime.model=iPhone 13 Pro",
        "-metadata", "com.apple.quicktime.location.ISO6709=+19.4326-099.1332+2240.000/",
        *x264, str(out["iphone.mov"]))  # fmt: skip
    out["faststart.mp4"] = d / "faststart.mp4"  # the index first, as phones write them
    run("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=10", "-t",
        "6", *x264, "-movflags", "+faststart", str(out["faststart.mp4"]))  # fmt: skip
    for ext in ("flac", "mp3"):
        out[f"tone.{ext}"] = d / f"tone.{ext}"
        run("ffmpeg", "-v", "error", *sine, *utc, str(out[f"tone.{ext}"]))
    # Broadcast WAV, as field recorders write it: bext origination date and local time.
    out["tone.wav"] = d / "tone.wav"
    run("ffmpeg", "-v", "error", *sine, "-write_bext", "1",
        "-metadata", "origination_date=2026-05-10", "-metadata", "origination_time=12:30:00",
        str(out["tone.wav"]))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def fake_dng(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DNG: a TIFF with camera EXIF written by Pillow, DNG tags added by exiftool."""
    if shutil.which("exiftool") is None:
        pytest.skip("needs exiftool")
    path = tmp_path_factory.mktemp("raw") / "IMG_0001.DNG"
    exif = Image.Exif()
    exif[271], exif[272], exif[274] = "Canon", "Canon EOS R6", 6
    Image.new("RGB", (64, 48), "red").save(path, format="TIFF", exif=exif)
    exiftool_write(
        path,
        "-DNGVersion=1.4.0.0",
        "-DateTimeOriginal=2025:11:02 09:15:30",
        "-OffsetTimeOriginal=-06:00",
        "-GPSLatitude=19.4326",
        "-GPSLatitudeRef=N",
        "-GPSLongitude=99.1332",
        "-GPSLongitudeRef=W",
        "-GPSAltitude=2240",
        "-GPSAltitudeRef=0",
    )
    return path


def truncated_copy(tmp_path: Path, source: Path, keep: int, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(source.read_bytes()[:keep])
    return path


# ---------------------------------------------------------------------------------------------
# Photos: real samples


def test_canon_jpeg_times_camera_size() -> None:
    info = probe_path(SAMPLES / "flower.jpg", "photo")
    taken = datetime(2003, 12, 14, 12, 1, 44)  # naive: the S40 wrote no offset
    assert info.time_candidates == [
        TimeCandidate(taken, "exif"),
        TimeCandidate(taken, "exif_digitized"),
        TimeCandidate(taken, "exif_datetime"),
    ]
    assert info.camera == {"make": "Canon", "model": "Canon PowerShot S40"}
    assert (info.orientation, info.width, info.height) == (1, 480, 360)
    assert info.gps is None and info.rotation is None and info.duration is None
    assert info.problems == []


def test_iphone_heic_offset_subseconds_and_gps() -> None:
    info = probe_path(SAMPLES / "pug.heic", "photo")
    assert info.time_candidates[0] == TimeCandidate(
        datetime(2023, 2, 21, 14, 33, 8, 302000, tzinfo=PLUS3), "exif"
    )
    assert [c.source for c in info.time_candidates] == ["exif", "exif_digitized", "exif_datetime"]
    assert info.camera == {"make": "Apple", "model": "iPhone 13 Pro"}
    # exiftool: 44 deg 51' 1.72" N, 34 deg 58' 35.93" E, 29.13553239 m
    assert info.gps == {
        "lat": pytest.approx(44 + 51 / 60 + 1.72 / 3600, abs=1e-6),
        "lon": pytest.approx(34 + 58 / 60 + 35.93 / 3600, abs=1e-6),
        "alt": pytest.approx(29.14, abs=0.01),
    }
    assert (info.orientation, info.width, info.height) == (1, 4032, 3024)
    assert info.problems == []


def test_heic_orientation_6_reports_stored_size() -> None:
    # pillow-heif rotates while decoding and rewrites the EXIF tag to 1; the original tag and
    # the stored 4032x3024 (what exiftool reports) are what the catalog gets.
    info = probe_path(SAMPLES / "arrow.heic", "photo")
    assert (info.orientation, info.width, info.height) == (6, 4032, 3024)
    assert info.camera == {"make": "Apple", "model": "iPhone 8 Plus"}
    assert info.time_candidates[0] == TimeCandidate(
        datetime(2018, 7, 31, 14, 52, 7, 557000), "exif"
    )
    assert info.problems == []


@pytest.mark.parametrize("orientation", [3, 8])
def test_jpeg_orientation(orientation: int) -> None:
    info = probe_path(SAMPLES / f"hopper_orientation_{orientation}.jpg", "photo")
    assert (info.orientation, info.width, info.height) == (orientation, 128, 128)
    assert info.time_candidates == [] and info.camera is None and info.problems == []


def test_mpo_first_frame_and_all_frames_checked() -> None:
    info = probe_path(SAMPLES / "frozenpond.mpo", "photo")
    assert (info.width, info.height) == (640, 480)
    assert info.camera == {"make": "Nintendo", "model": "Nintendo 3DS"}
    assert info.time_candidates[0] == TimeCandidate(datetime(2014, 3, 2, 13, 30), "exif")
    assert info.problems == []


@pytest.mark.parametrize(
    ("name", "make", "model", "first"),
    [
        ("iptc.jpg", "Nokia", "N70-1", TimeCandidate(datetime(2006, 7, 8, 21, 14, 45), "exif")),
        (
            "xmp_test.jpg",
            "Canon",
            "Canon EOS Rebel T6",
            TimeCandidate(datetime(2018, 10, 27, 13, 27, 23, 530000), "exif"),  # SubSec "53"
        ),
    ],
)
def test_other_cameras(name: str, make: str, model: str, first: TimeCandidate) -> None:
    info = probe_path(SAMPLES / name, "photo")
    assert info.camera == {"make": make, "model": model}
    assert info.time_candidates[0] == first
    assert info.problems == []


def test_edited_file_keeps_original_time_first() -> None:
    # xmp_test.jpg was edited in Lightroom: IFD0 DateTime is the edit, three hours later.
    sources = {
        c.source: c.value for c in probe_path(SAMPLES / "xmp_test.jpg", "photo").time_candidates
    }
    assert sources["exif_datetime"] == datetime(2018, 10, 27, 16, 20, 29)
    assert sources["exif"] < sources["exif_datetime"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("exif-72dpi-int.jpg", datetime(2012, 8, 18, 15, 32, 58)),
        ("pil_sample_cmyk.jpg", datetime(2009, 3, 6, 22, 15)),
    ],
)
def test_only_ifd0_datetime(name: str, expected: datetime) -> None:
    info = probe_path(SAMPLES / name, "photo")
    assert info.time_candidates == [TimeCandidate(expected, "exif_datetime")]
    assert info.problems == []


def test_cmyk_jpeg_is_fine() -> None:
    info = probe_path(SAMPLES / "pil_sample_cmyk.jpg", "photo")
    assert (info.width, info.height, info.orientation) == (100, 100, 1)
    assert info.problems == []


def test_no_exif_at_all() -> None:
    info = probe_path(SAMPLES / "hopper.jpg", "photo")
    assert info == MediaInfo(width=128, height=128)


def test_broken_exif_is_unreadable_metadata_not_damage() -> None:
    info = probe_path(SAMPLES / "hopper_bad_exif.jpg", "photo")
    assert codes(info) == ["unreadable_metadata"]
    assert "Corrupt EXIF" in info.problems[0]["detail"]
    assert (info.width, info.height, info.orientation) == (500, 500, 1)


def test_truncated_app14_sample_is_not_pixel_damage() -> None:
    # Despite its name, only the Adobe APP14 marker segment is short (Pillow's test for
    # "adobe_transform" missing); the scan data is complete and decodes in full.
    with Image.open(SAMPLES / "truncated_app14.jpg") as img:
        img.load()
    info = probe_path(SAMPLES / "truncated_app14.jpg", "photo")
    assert "damaged" not in codes(info)
    assert info.time_candidates == [
        TimeCandidate(datetime(2009, 3, 6, 22, 15, 29), "exif_datetime")
    ]


def test_truncated_heic_is_damaged() -> None:
    # Its primary image is intact; the second image's data lies past the end of the file.
    info = probe_path(SAMPLES / "truncated.heic", "photo")
    assert codes(info) == ["damaged"]
    assert "end of file" in info.problems[0]["detail"]


# ---------------------------------------------------------------------------------------------
# Photos: damage, bombs, garbage, GPS written by exiftool


def test_truncated_jpeg_is_damaged_metadata_still_read(tmp_path: Path) -> None:
    path = truncated_copy(tmp_path, SAMPLES / "flower.jpg", 20000, "IMG_0001.JPG")
    info = probe_path(path, "photo")
    assert codes(info) == ["damaged"]
    assert "truncated" in info.problems[0]["detail"]
    assert info.camera == {"make": "Canon", "model": "Canon PowerShot S40"}
    assert (info.width, info.height) == (480, 360)


def test_truncated_mpo_second_frame_is_damaged(tmp_path: Path) -> None:
    path = truncated_copy(tmp_path, SAMPLES / "frozenpond.mpo", 120000, "DSCN0001.MPO")
    info = probe_path(path, "photo")
    assert codes(info) == ["damaged"]
    assert (info.width, info.height) == (640, 480)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_png_and_tiff_whole_and_truncated(tmp_path: Path, fmt: str) -> None:
    whole = tmp_path / f"scan.{fmt.lower()}"
    with Image.open(SAMPLES / "hopper.jpg") as img:
        img.save(whole, format=fmt)
    assert probe_path(whole, "photo") == MediaInfo(width=128, height=128)
    cut = truncated_copy(tmp_path, whole, whole.stat().st_size - 3000, f"cut.{fmt.lower()}")
    info = probe_path(cut, "photo")
    assert codes(info) == ["damaged"]
    assert (info.width, info.height) == (128, 128)


def test_text_file_named_jpg_is_damaged(tmp_path: Path) -> None:
    path = tmp_path / "IMG_0002.JPG"
    path.write_text("this is not a picture\n")
    info = probe_path(path, "photo")
    assert codes(info) == ["damaged"]
    # in words, not Pillow's "cannot identify image file <_io.BufferedReader name=...>"
    assert info.problems[0]["detail"] == (
        "not an image Pillow can read (unknown format or damaged header)")


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything decodes pixels."""

    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("decoded an image that is over the pixel limit")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def test_over_pixel_limit_is_too_large_not_decoded(
    monkeypatch: pytest.MonkeyPatch, no_decoding: None
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 8_000_000)  # pug.heic has 12,192,768
    info = probe_path(SAMPLES / "pug.heic", "photo")
    assert codes(info) == ["too_large"]
    assert (info.width, info.height) == (4032, 3024)
    assert info.camera is not None and info.camera["make"] == "Apple"


@needs_exiftool
def test_far_over_pixel_limit_still_reports_header_size(
    monkeypatch: pytest.MonkeyPatch, no_decoding: None
) -> None:
    # Over twice the limit Pillow refuses to open at all (DecompressionBombError).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2_000_000)
    info = probe_path(SAMPLES / "pug.heic", "photo")
    assert codes(info) == ["too_large"]
    assert (info.width, info.height) == (4032, 3024)


@pytest.mark.parametrize("limit", [100_000, 50_000], ids=["over", "far-over"])
def test_a_jpeg_over_the_pixel_limit_is_read_and_left_to_the_thumbnail_job(
    monkeypatch: pytest.MonkeyPatch, no_decoding: None, limit: int
) -> None:
    """200 MP phone photos are real, and the thumbnail job decodes them shrunk on load
    (ingest.derive.photo.jpeg_bomb_refusal): the import reads their EXIF like any photo's and
    flags nothing; the job records "too_large" itself if it refuses. Before, a JPEG twice
    over Pillow's limit lost its EXIF (capture time from the card's file time) and every one
    over it kept a false "too_large" that took it off the kiosk and the printed mural."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)  # flower.jpg has 172,800
    info = probe_path(SAMPLES / "flower.jpg", "photo")
    assert codes(info) == []
    assert (info.width, info.height) == (480, 360)
    assert info.camera == {"make": "Canon", "model": "Canon PowerShot S40"}
    assert [c.source for c in info.time_candidates][:1] == ["exif"]


def test_garbage_exif_values_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "garbage.jpg"
    exif = Image.Exif()
    exif[271] = "  Canon\x00\x00 "
    exif[272] = "EOS R6\x00   "
    exif[274] = 9  # no such orientation
    exif[306] = "2024:05:01 10:00:00\x00"
    exif_ifd = exif.get_ifd(0x8769)
    exif_ifd[36867] = "0000:00:00 00:00:00"  # unset clock: unknown, not an error
    exif_ifd[36868] = "2024:13:45 99:00:00"  # garbage
    exif_ifd[36880] = "+99:00"  # nonsense offset: the time stays naive
    Image.new("RGB", (32, 24), "blue").save(path, exif=exif)
    info = probe_path(path, "photo")
    assert info.time_candidates == [TimeCandidate(datetime(2024, 5, 1, 10, 0), "exif_datetime")]
    assert info.camera == {"make": "Canon", "model": "EOS R6"}
    assert info.orientation is None
    assert sorted(codes(info)) == ["unreadable_metadata", "unreadable_metadata"]
    details = " ".join(p["detail"] for p in info.problems)
    assert "exif_digitized" in details and "orientation" in details


@needs_exiftool
@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (
            ["-GPSLatitude=19.4326", "-GPSLatitudeRef=N", "-GPSLongitude=99.1332",
             "-GPSLongitudeRef=W", "-GPSAltitude=2240", "-GPSAltitudeRef=0"],
            {"lat": 19.4326, "lon": -99.1332, "alt": 2240.0},
        ),
        (
            ["-GPSLatitude=33.4489", "-GPSLatitudeRef=S", "-GPSLongitude=70.6693",
             "-GPSLongitudeRef=W", "-GPSAltitude=5", "-GPSAltitudeRef#=1"],
            {"lat": -33.4489, "lon": -70.6693, "alt": -5.0},
        ),
        (["-GPSLatitude=0", "-GPSLatitudeRef=N", "-GPSLongitude=0", "-GPSLongitudeRef=E"], None),
        (
            ["-GPSLatitude=19.4326", "-GPSLatitudeRef=N", "-GPSLongitude=99.1332",
             "-GPSLongitudeRef=W", "-GPSStatus#=V"],
            None,
        ),
    ],
    ids=["mexico-city", "below-sea-level-south-west", "null-island", "no-fix"],
)  # fmt: skip
def test_gps_written_by_exiftool(tmp_path: Path, tags: list[str], expected: dict | None) -> None:
    path = tmp_path / "gps.jpg"
    shutil.copyfile(SAMPLES / "flower.jpg", path)
    exiftool_write(path, *tags)
    gps = probe_path(path, "photo").gps
    if expected is None:
        assert gps is None
    else:
        assert gps == {k: pytest.approx(v, abs=1e-5) for k, v in expected.items()}


@pytest.mark.parametrize(
    ("name", "good"),
    [
        ("flower.jpg", 0),
        ("flower.jpg", 20000),
        ("flower.jpg", 32000),  # only the structural check reads there (the end of the file)
        ("frozenpond.mpo", 100000),  # only the MPO frame check reads there (the second frame)
        ("pug.heic", 0),
        ("pug.heic", 100000),
    ],
)
def test_io_error_surfaces_as_oserror(
    monkeypatch: pytest.MonkeyPatch, name: str, good: int
) -> None:
    """A card pulled after `good` bytes: reads past that point fail with EIO."""
    real_preadv = os.preadv

    def pulled(fd: int, buffers: list, offset: int) -> int:
        if offset >= good:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_preadv(fd, [memoryview(buffers[0])[: good - offset]], offset)

    monkeypatch.setattr(os, "preadv", pulled)
    # pillow-heif turns read errors into SyntaxError; probe must still raise the EIO.
    with pytest.raises(OSError) as caught:
        probe_path(SAMPLES / name, "photo")
    assert caught.value.errno == errno.EIO


def test_concurrent_probes_each_record_their_warnings() -> None:
    results: list[MediaInfo] = []

    def work() -> None:
        results.append(probe_path(SAMPLES / "hopper_bad_exif.jpg", "photo"))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [codes(info) for info in results] == [["unreadable_metadata"]] * 8


# ---------------------------------------------------------------------------------------------
# Photos: structural damage checks (nothing is decoded at import)

INTACT_PHOTOS = [
    "flower.jpg",
    "iptc.jpg",
    "xmp_test.jpg",
    "hopper.jpg",
    "hopper_orientation_3.jpg",
    "hopper_orientation_8.jpg",
    "hopper_bad_exif.jpg",
    "exif-72dpi-int.jpg",
    "pil_sample_cmyk.jpg",
    "truncated_app14.jpg",  # only its APP14 segment is short; libjpeg reads it in full
    "frozenpond.mpo",
    "pug.heic",
    "arrow.heic",
]
JPEG_SAMPLES = [name for name in INTACT_PHOTOS if not name.endswith(".heic")]


def reader(data: bytes) -> ReadAt:
    """Positioned reads over bytes in memory, as the structural checks read a file."""
    return lambda offset, count: data[offset : offset + count]


def cut_points(size: int) -> list[int]:
    """Every 1% of a file, and its last two bytes."""
    return sorted({size * i // 100 for i in range(1, 100)} | {size - 2, size - 1})


def cuts_not_flagged(tmp_path: Path, source: Path, keeps: list[int]) -> list[int]:
    """The lengths at which a cut copy of ``source`` is NOT reported as damaged."""
    path = tmp_path / f"cut{source.suffix}"
    data = source.read_bytes()
    missed = []
    for keep in keeps:
        path.write_bytes(data[:keep])
        if "damaged" not in codes(probe_path(path, "photo")):
            missed.append(keep)
    return missed


@pytest.fixture
def no_pixel_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any pixel decoder starts: Pillow's (all go through _getdecoder), or
    libheif's (pillow-heif decodes in its own load())."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image, "_getdecoder", refuse)
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    monkeypatch.setattr(pillow_heif.as_plugin._LibHeifImageFile, "load", refuse)


@pytest.fixture(scope="module")
def made_photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """PNG, TIFF and WEBP as Pillow writes them, and a JPEG with an MP index that Pillow keeps
    as JPEG (an Ultra HDR photo: its gain map is the second image)."""
    d = tmp_path_factory.mktemp("made")
    out = {}
    with Image.open(SAMPLES / "hopper.jpg") as img:
        img.load()
        for fmt in ("PNG", "TIFF", "WEBP"):
            out[fmt] = d / f"hopper.{fmt.lower()}"
            img.save(out[fmt], format=fmt)
        out["ultrahdr"] = d / "ultrahdr.jpg"
        xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:hdrgm="http://ns.adobe.com/hdr-gain-map/1.0/" hdrgm:Version="1.0"/></rdf:RDF></x:xmpmeta>'  # noqa: E501
        gain_map = img.convert("L").resize((64, 64))
        img.save(out["ultrahdr"], "MPO", save_all=True, append_images=[gain_map], xmp=xmp)
    with Image.open(out["ultrahdr"]) as img:
        assert img.format == "JPEG" and "mp" in img.info  # Pillow does not open it as MPO
    return out


@pytest.mark.parametrize("name", INTACT_PHOTOS)
def test_intact_samples_are_not_damaged_and_not_decoded(name: str, no_pixel_decoding: None) -> None:
    info = probe_path(SAMPLES / name, "photo")
    assert "damaged" not in codes(info)
    assert info.width and info.height


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP", "ultrahdr"])
def test_made_photos_are_not_damaged_and_not_decoded(
    made_photos: dict[str, Path], fmt: str, no_pixel_decoding: None
) -> None:
    assert probe_path(made_photos[fmt], "photo").problems == []


@pytest.mark.parametrize("name", INTACT_PHOTOS)
def test_cut_at_every_percent_is_damaged(tmp_path: Path, name: str) -> None:
    source = SAMPLES / name
    assert cuts_not_flagged(tmp_path, source, cut_points(source.stat().st_size)) == []


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP", "ultrahdr"])
def test_made_photo_cut_at_every_percent_is_damaged(
    tmp_path: Path, made_photos: dict[str, Path], fmt: str
) -> None:
    source = made_photos[fmt]
    keeps = cut_points(source.stat().st_size)
    if fmt == "PNG":
        # A cut inside the CRC of IEND, the last chunk, is not seen: verify() stops at IEND's
        # type, and decoders do not need the CRC either.
        keeps = keeps[:-2]
    assert cuts_not_flagged(tmp_path, source, keeps) == []


@pytest.mark.parametrize("name", JPEG_SAMPLES)
def test_jpeg_cut_anywhere_in_the_headers_is_damaged(name: str) -> None:
    """Pillow's open already fails on most cuts in the headers; the walk must catch them alone."""
    data = (SAMPLES / name).read_bytes()
    check_jpeg(reader(data), len(data))
    scan_start = read_headers(reader(data), 0, len(data), "the image").scan_start
    missed = []
    for keep in range(1, scan_start + 3):
        try:
            check_jpeg(reader(data[:keep]), keep)
        except Damaged:
            continue
        missed.append(keep)
    assert missed == []


def test_jpeg_cut_in_a_segment_says_so(tmp_path: Path) -> None:
    data = (SAMPLES / "flower.jpg").read_bytes()
    with pytest.raises(Damaged, match="truncated in the headers: the FFE1 segment at byte 20"):
        check_jpeg(reader(data[:5000]), 5000)


# Data some phones append after the EOI: more than the 64 KiB tail that is read first, without
# an FFD9 of its own, so the scan data has to be searched for the EOI.
PHONE_TRAILER = b"SEFH" + bytes(range(256)) * 400


@pytest.mark.parametrize(
    "tail",
    [b"\x00" * 5000, b"\xff" * 100, b"\xff\xd9\x00\x00", PHONE_TRAILER],
    ids=["zero-padding", "ff-padding", "second-eoi", "phone-trailer"],
)
def test_jpeg_padding_and_data_after_the_eoi_are_not_damage(tmp_path: Path, tail: bytes) -> None:
    path = tmp_path / "IMG_0001.JPG"
    path.write_bytes((SAMPLES / "flower.jpg").read_bytes() + tail)
    info = probe_path(path, "photo")
    assert info.problems == []
    assert info.camera == {"make": "Canon", "model": "Canon PowerShot S40"}


def test_jpeg_marker_walk_skips_stray_bytes_like_libjpeg() -> None:
    data = (SAMPLES / "flower.jpg").read_bytes()
    # After APP0 (bytes 2-19): stray bytes, a stuffed FF00 and FF fill bytes before APP1.
    patched = data[:20] + b"\x01\x02\xff\x00\xff\xff" + data[20:]
    assert check_jpeg(reader(patched), len(patched)) == [(480, 360)]


SOI, EOI = b"\xff\xd8", b"\xff\xd9"
SOF0 = b"\xff\xc0\x00\x11\x08\x00\x10\x00\x10\x03" + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
SOS = b"\xff\xda\x00\x0c\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00" + SOF0 + SOS + b"\x12" + EOI, "does not start with a JPEG start-of-image"),
        (SOI + EOI, "before any image data"),
        (SOI + SOS + b"\x12" + EOI, "scan data before its frame header"),
        (SOI + b"\xff\xe0\x00\x01" + SOF0 + SOS + EOI, "length 1"),
        (SOI + SOF0 + SOI + SOS + EOI, "second start-of-image"),
        (SOI + SOF0 + SOS + b"\x12\x34\xff\x00\x56", "scan data of the image has no end-of-image"),
        (SOI + SOF0 + b"\x00\x00\x00", "no marker after byte 21"),
    ],
    ids=["no-soi", "eoi-first", "sos-before-sof", "short-length", "two-soi", "no-eoi", "no-sos"],
)
def test_jpeg_structure_errors(data: bytes, message: str) -> None:
    whole = SOI + SOF0 + SOS + b"\x12\x34" + EOI
    assert check_jpeg(reader(whole), len(whole)) == [(16, 16)]
    with pytest.raises(Damaged, match=message):
        check_jpeg(reader(data), len(data))


def test_mpo_second_frame_without_soi_is_damaged(tmp_path: Path) -> None:
    data = bytearray((SAMPLES / "frozenpond.mpo").read_bytes())
    data[82452:82454] = b"\x00\x00"  # where the MP index says frame 1 starts
    path = tmp_path / "DSCN0002.MPO"
    path.write_bytes(data)
    info = probe_path(path, "photo")
    assert codes(info) == ["damaged"]
    assert "frame 1 does not start with a JPEG start-of-image marker" in info.problems[0]["detail"]


def test_over_pixel_limit_and_cut_is_reported_as_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_pixel_decoding: None
) -> None:
    # Nothing is decoded, so the structural check also runs on an image over the pixel limit.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 8_000_000)  # pug.heic has 12,192,768
    path = truncated_copy(tmp_path, SAMPLES / "pug.heic", 200_000, "IMG_0003.HEIC")
    assert codes(probe_path(path, "photo")) == ["too_large", "damaged"]


def box(kind: bytes, payload: bytes) -> bytes:
    return (8 + len(payload)).to_bytes(4, "big") + kind + payload


def heif(items: list[tuple[int, int, int]], *, idat: bytes = b"", mdat: bytes = b"") -> bytes:
    """A minimal HEIF layout: ftyp, meta (iloc version 1, idat), mdat. ``items`` are (item id,
    construction method, offset), each 4 bytes long; method 0 offsets are from mdat's data."""
    ftyp = box(b"ftyp", b"heic\x00\x00\x00\x00mif1heic")

    def meta(mdat_data: int) -> bytes:
        iloc = b"\x01\x00\x00\x00" + b"\x44\x00" + len(items).to_bytes(2, "big")
        for item_id, method, offset in items:
            start = offset + (mdat_data if method == 0 else 0)
            iloc += item_id.to_bytes(2, "big") + method.to_bytes(2, "big") + b"\x00\x00"
            iloc += b"\x00\x01" + start.to_bytes(4, "big") + (4).to_bytes(4, "big")
        children = box(b"iloc", iloc) + (box(b"idat", idat) if idat else b"")
        return box(b"meta", b"\x00\x00\x00\x00" + children)

    mdat_data = len(ftyp) + len(meta(0)) + 8  # the fields have fixed sizes
    return ftyp + meta(mdat_data) + box(b"mdat", mdat)


def test_heif_items_in_mdat_and_idat_are_checked() -> None:
    whole = heif([(1, 0, 0), (2, 0, 4), (3, 1, 0)], idat=b"gridgrid", mdat=b"tile" * 2)
    check_heif(reader(whole), len(whole))
    with pytest.raises(Damaged, match=r"item 2 needs bytes .*past the end of file"):
        check_heif(reader(whole[:-1]), len(whole) - 1)
    past_idat = heif([(7, 1, 6)], idat=b"grid1234", mdat=b"")
    with pytest.raises(Damaged, match=r"item 7 .* past the end of its 'idat' box"):
        check_heif(reader(past_idat), len(past_idat))
    no_idat = heif([(8, 1, 0)], mdat=b"tile")
    with pytest.raises(Damaged, match="no 'idat' box"):
        check_heif(reader(no_idat), len(no_idat))


def test_heif_without_meta_or_with_a_box_past_the_end_is_damaged() -> None:
    ftyp = box(b"ftyp", b"heic\x00\x00\x00\x00mif1heic")
    with pytest.raises(Damaged, match="no 'meta' box"):
        check_heif(reader(ftyp), len(ftyp))
    mdat_first = ftyp + box(b"mdat", b"x" * 100)  # meta after mdat, and the file cut in mdat
    with pytest.raises(Damaged, match="'mdat' box at byte 24 needs 108 bytes, past the end"):
        check_heif(reader(mdat_first[:80]), 80)


def test_heif_hostile_iloc_is_damage_not_a_crash() -> None:
    ftyp = box(b"ftyp", b"heic\x00\x00\x00\x00mif1heic")
    many = b"\x01\x00\x00\x00\x00\x00\xff\xff" + b"\x00\x01\x00\x00\x00\x00\xff\xff" * 3
    for iloc, message in [
        (b"\x03\x00\x00\x00", "unknown version 3"),
        (b"\x01\x00\x00\x00\x33\x00\x00\x00", "impossible sizes"),
        (many, "shorter than its list of items"),  # 65535 items, 65535 empty extents each
    ]:
        data = ftyp + box(b"meta", b"\x00\x00\x00\x00" + box(b"iloc", iloc))
        with pytest.raises(Damaged, match=message):
            check_heif(reader(data), len(data))


# ---------------------------------------------------------------------------------------------
# RAW (exiftool)


@needs_exiftool
def test_raw_via_exiftool(fake_dng: Path) -> None:
    info = probe_path(fake_dng, "raw")
    assert info.time_candidates == [
        TimeCandidate(datetime(2025, 11, 2, 9, 15, 30, tzinfo=MINUS6), "raw_exif")
    ]
    assert info.camera == {"make": "Canon", "model": "Canon EOS R6"}
    assert (info.orientation, info.width, info.height) == (6, 64, 48)
    assert info.gps == {
        "lat": pytest.approx(19.4326),
        "lon": pytest.approx(-99.1332),
        "alt": 2240.0,
    }
    assert info.problems == []


@needs_exiftool
def test_raw_that_is_text_is_damaged(tmp_path: Path) -> None:
    path = tmp_path / "IMG_0003.CR2"
    path.write_text("not a raw file\n")
    info = probe_path(path, "raw")
    assert codes(info) == ["damaged"]
    assert info.time_candidates == [] and info.camera is None


@needs_exiftool
def test_truncated_raw_reports_what_exiftool_read(tmp_path: Path, fake_dng: Path) -> None:
    path = truncated_copy(tmp_path, fake_dng, 300, "cut.dng")
    info = probe_path(path, "raw")
    assert info.camera == {"make": "Canon", "model": "Canon EOS R6"}
    assert codes(info) == ["unreadable_metadata"]


# ---------------------------------------------------------------------------------------------
# Video and audio (ffprobe)


@needs_ffmpeg
def test_a_cut_video_with_its_index_first_is_damaged(media: dict[str, Path],
                                                     tmp_path: Path) -> None:
    """A phone's video (index first) that a pulled card cut in half probed whole: 6 s from
    its index, no problem, while its proxy came out 3 s long."""
    whole = probe_path(media["faststart.mp4"], "video")
    assert whole.problems == [] and whole.duration == pytest.approx(6, abs=0.2)
    size = media["faststart.mp4"].stat().st_size
    cut = probe_path(truncated_copy(tmp_path, media["faststart.mp4"], size // 2, "cut.mp4"),
                     "video")
    assert codes(cut) == ["damaged"]
    assert re.search(r"cut short: its 'mdat' box ends at byte \d+, the file at "
                     rf"{size // 2} \(\d+% of it is there\)", cut.problems[0]["detail"])
    assert probe_path(media["clip.mp4"], "video").problems == []  # index last: whole too


def test_trailers_after_a_videos_boxes_are_no_cut(tmp_path: Path) -> None:
    """Dashcams append a RIFF trailer and Samsung phones an SEF one after the last box; ffmpeg
    plays those files, and they are whole: only the media data or the index running past
    the end is a cut."""
    from ingest.metadata.av import iso_bmff_cut

    def mp4_box(kind: bytes, payload: bytes) -> bytes:
        return (8 + len(payload)).to_bytes(4, "big") + kind + payload

    whole = (mp4_box(b"ftyp", b"isom\0\0\0\0isom") + mp4_box(b"moov", b"x" * 50)
             + mp4_box(b"mdat", b"y" * 1000))
    cases = {
        "riff": whole + b"RIFF" + (100).to_bytes(4, "little") + b"AVI " * 20,
        "sef": whole + b"\x00\x10\x00\x00SEFH" + b"z" * 40,
        "junk": whole + b"abc",
        "zeros": whole + b"\0" * 12,
        "free past the end": whole + mp4_box(b"free", b"\0" * 100)[:-50],
        "cut": whole[:-500],
    }
    found = {}
    for name, data in cases.items():
        path = tmp_path / f"{name}.mp4"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            found[name] = iso_bmff_cut(fd)
        finally:
            os.close(fd)
    assert {name for name, cut in found.items() if cut} == {"cut"}, found


@needs_ffmpeg
def test_mp4_creation_time_duration_size(media: dict[str, Path]) -> None:
    info = probe_path(media["clip.mp4"], "video")
    assert info.time_candidates == [
        TimeCandidate(datetime(2026, 5, 10, 18, 30, tzinfo=UTC), "media_creation_time")
    ]
    assert info.duration == pytest.approx(1.0, abs=0.05)
    assert (info.width, info.height, info.rotation) == (320, 240, 0)
    assert info.gps == {"lat": 19.4326, "lon": -99.1332, "alt": 2240.0}
    assert info.camera is None and info.orientation is None
    assert info.problems == []


@needs_ffmpeg
def test_rotation_is_what_a_player_does(media: dict[str, Path]) -> None:
    info = probe_path(media["rotated.mp4"], "video")
    assert (info.width, info.height) == (320, 240)  # stored size, before rotation
    assert info.rotation in (90, 270)
    # Rotating the plain frame clockwise by `rotation` must give what ffmpeg displays.
    shown = ffmpeg_frame(media["rotated.mp4"])
    plain = ffmpeg_frame(media["clip.mp4"])
    ours = plain.rotate(-info.rotation, expand=True)  # PIL rotates counterclockwise
    other = plain.rotate(info.rotation, expand=True)
    assert mean_difference(shown, ours) < 2 < mean_difference(shown, other)


@needs_ffmpeg
def test_iphone_mov_prefers_local_creationdate(media: dict[str, Path]) -> None:
    info = probe_path(media["iphone.mov"], "video")
    # The UTC creation_time is the same instant, so it is not repeated.
    assert info.time_candidates == [
        TimeCandidate(datetime(2026, 5, 10, 12, 30, tzinfo=MINUS6), "media_creation_time")
    ]
    assert info.time_candidates[0].value.utcoffset() == timedelta(hours=-6)
    assert info.camera == {"make": "Apple", "model": "iPhone 13 Pro"}
    assert info.gps == {"lat": 19.4326, "lon": -99.1332, "alt": 2240.0}


@needs_ffmpeg
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("tone.flac", datetime(2026, 5, 10, 18, 30, tzinfo=UTC)),
        ("tone.mp3", datetime(2026, 5, 10, 18, 30, tzinfo=UTC)),
        ("tone.wav", datetime(2026, 5, 10, 12, 30)),  # bext: local wall-clock time
    ],
)
def test_audio(media: dict[str, Path], name: str, expected: datetime) -> None:
    info = probe_path(media[name], "audio")
    assert info.time_candidates == [TimeCandidate(expected, "media_creation_time")]
    assert info.duration == pytest.approx(1.0, abs=0.1)
    assert (info.width, info.height, info.rotation, info.camera) == (None, None, None, None)
    assert info.problems == []


@needs_ffmpeg
def test_text_file_named_mp4(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_text("hello, I am not a video\n")
    info = probe_path(path, "video")
    assert codes(info) == ["probe_failed"]
    assert info.duration is None and info.time_candidates == []


@needs_ffmpeg
def test_crafted_playlist_reaches_nothing(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        path = tmp_path / "clip.mp4"
        path.write_text(
            "#EXTM3U\n#EXT-X-TARGETDURATION:10\n"
            f"#EXTINF:10,\nhttp://127.0.0.1:{port}/x.ts\n"
            "#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"
        )
        info = probe_path(path, "video")
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing connected while ffprobe ran
    assert codes(info) == ["probe_failed"]
    assert info.duration is None and info.time_candidates == []


@pytest.mark.parametrize(("kind", "program"), [("video", "ffprobe"), ("raw", "exiftool")])
def test_hung_program_is_killed_at_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, program: str
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pidfile = tmp_path / "child.pid"
    fake_program(bin_dir, program, pidfile)
    monkeypatch.setenv("PATH", str(bin_dir))
    path = tmp_path / "item"
    path.write_bytes(b"\x00" * 1024)
    started = time.monotonic()
    info = probe_path(path, kind, timeout=1)
    assert time.monotonic() - started < 5
    assert info.problems == [{"code": "probe_failed", "detail": f"{program} timed out"}]
    assert process_gone(int(pidfile.read_text()))  # the whole process group was killed


@pytest.mark.parametrize(("kind", "program"), [("video", "ffprobe"), ("raw", "exiftool")])
def test_missing_program_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, program: str
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    path = tmp_path / "item"
    path.write_bytes(b"\x00" * 16)
    with pytest.raises(RuntimeError, match=program):
        probe_path(path, kind)


def test_exiftool_reads_stdin_only() -> None:
    args = exiftool_args(["-Make"])
    assert args[0] == "exiftool" and args[-1] == "-"
    assert {"-j", "-n", "-G0", "-Make"} <= set(args)


def test_ffprobe_args_are_fixed_and_safe() -> None:
    url = "file:/proc/self/fd/7"
    args = ffprobe_args(url)
    assert args == ffprobe_args(url)  # pure
    assert args[0] == "ffprobe" and args[-2:] == ["-i", url]
    pairs = dict(zip(args[1:-2:2], args[2:-2:2], strict=True))
    assert pairs["-protocol_whitelist"] == "file"
    assert pairs["-v"] == "error" and pairs["-print_format"] == "json"
    demuxers = pairs["-format_whitelist"].split(",")
    assert "mov" in demuxers and "hls" not in demuxers and "concat" not in demuxers
    assert "-show_format" in args and "-show_streams" in args
    hostile = ffprobe_args("-f lavfi")
    assert hostile[-1] == "-f lavfi" and hostile.count("-f lavfi") == 1


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        ({"side_data_list": [{"side_data_type": "Display Matrix", "rotation": -90}]}, 90),
        ({"side_data_list": [{"side_data_type": "Display Matrix", "rotation": 90}]}, 270),
        ({"side_data_list": [{"side_data_type": "Display Matrix", "rotation": 180}]}, 180),
        ({"tags": {"rotate": "90"}}, 90),  # legacy tag, already clockwise
        ({"side_data_list": [{"rotation": "garbage"}]}, 0),
        ({}, 0),
    ],
)
def test_stream_rotation(stream: dict, expected: int) -> None:
    assert stream_rotation(stream) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+19.4326-099.1332+2240.000/", {"lat": 19.4326, "lon": -99.1332, "alt": 2240.0}),
        ("+19.4326-099.1332/", {"lat": 19.4326, "lon": -99.1332, "alt": None}),
        ("+1925.956-09907.992/", {"lat": 19.4326, "lon": -99.1332, "alt": None}),  # DDMM.M
        ("-334026-0704009/", {"lat": -33.6738889, "lon": -70.6691667, "alt": None}),  # DDMMSS
        ("+00.0000+000.0000/", None),
        ("+95.0000+010.0000/", None),
        ("garbage", None),
    ],
)
def test_iso6709_locations(text: str, expected: dict | None) -> None:
    gps = parse_iso6709(text)
    if expected is None:
        assert gps is None
    else:
        assert gps == {
            k: v if v is None else pytest.approx(v, abs=1e-6) for k, v in expected.items()
        }


def test_hostile_ffprobe_output_is_survived() -> None:
    info = MediaInfo()
    fill_from_ffprobe(
        {
            "format": {
                "duration": "N/A",
                "tags": {"creation_time": "0000-00-00 nonsense", "location": "+999+999/"},
            },
            "streams": [
                "not a dict",
                {"codec_type": "video", "disposition": {"attached_pic": 1}, "width": 600},
                {"codec_type": "video", "width": "wide", "height": -5, "tags": ["x"]},
            ],
        },
        info,
    )
    assert (info.duration, info.width, info.height, info.rotation) == (None, None, None, 0)
    assert info.time_candidates == [] and info.gps is None
    assert codes(info) == ["unreadable_metadata"]


# ---------------------------------------------------------------------------------------------
# Every kind: empty files, "other", bad arguments, no leaked descriptors


@pytest.mark.parametrize("kind", ["photo", "raw", "video", "audio"])
def test_zero_byte_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "empty"
    path.touch()
    assert probe_path(path, kind) == MediaInfo(
        problems=[{"code": "damaged", "detail": "file is empty"}]
    )


@pytest.mark.parametrize("size", [0, 100])
def test_other_kind_is_empty(tmp_path: Path, size: int) -> None:
    path = tmp_path / "notes.xmp"
    path.write_bytes(b"x" * size)
    assert probe_path(path, "other") == MediaInfo()


def test_unknown_kind_and_non_regular_fd_are_programming_errors() -> None:
    fd = os.open(SAMPLES / "hopper.jpg", os.O_RDONLY)
    try:
        with pytest.raises(ValueError, match="kind"):
            probe(fd, "document")
    finally:
        os.close(fd)
    read_end, write_end = os.pipe()
    try:
        assert stat.S_ISFIFO(os.fstat(read_end).st_mode)
        with pytest.raises(ValueError, match="regular file"):
            probe(read_end, "video")
    finally:
        os.close(read_end)
        os.close(write_end)


@needs_ffmpeg
@needs_exiftool
def test_no_descriptor_leaks(media: dict[str, Path], fake_dng: Path) -> None:
    items = [
        (SAMPLES / "pug.heic", "photo"),
        (SAMPLES / "frozenpond.mpo", "photo"),
        (SAMPLES / "truncated.heic", "photo"),
        (fake_dng, "raw"),
        (media["clip.mp4"], "video"),
        (media["tone.wav"], "audio"),
    ]
    before = open_fds()
    for path, kind in items:
        probe_path(path, kind)
    assert open_fds() == before


# ---------------------------------------------------------------------------------------------
# resolve_capture_time

NOW = datetime(2026, 5, 10, 20, 0, tzinfo=MEXICO)
MTIME = datetime(2026, 5, 9, 8, 0, tzinfo=MEXICO).timestamp()


def resolve(*candidates: TimeCandidate, mtime: float = MTIME, **kwargs: object):
    info = MediaInfo(time_candidates=list(candidates))
    return resolve_capture_time(info, mtime, tz=MEXICO, now=NOW, **kwargs)  # type: ignore[arg-type]


def test_exif_offset_is_kept() -> None:
    taken = datetime(2023, 2, 21, 14, 33, 8, tzinfo=PLUS3)
    value, source, problems = resolve(TimeCandidate(taken, "exif"))
    assert (value, source, problems) == (taken, "exif", [])
    assert value.utcoffset() == timedelta(hours=3)


def test_naive_is_wall_clock_in_tz() -> None:
    value, source, _ = resolve(TimeCandidate(datetime(2026, 5, 10, 12, 30), "exif"))
    assert source == "exif"
    assert value.tzinfo is MEXICO and value.utcoffset() == timedelta(hours=-6)
    assert value.replace(tzinfo=None) == datetime(2026, 5, 10, 12, 30)


def test_naive_uses_tz_offset_of_that_instant() -> None:
    # Mexico City kept daylight saving time until 2022: UTC-5 in July 2021.
    value, _, _ = resolve(TimeCandidate(datetime(2021, 7, 1, 12, 0), "exif"))
    assert value.utcoffset() == timedelta(hours=-5)


def test_utc_container_time_is_shown_in_tz() -> None:
    utc = datetime(2026, 5, 10, 1, 30, tzinfo=UTC)
    value, source, _ = resolve(TimeCandidate(utc, "media_creation_time"))
    assert source == "media_creation_time" and value == utc
    assert (value.date(), value.hour, value.utcoffset()) == (
        datetime(2026, 5, 9).date(), 19, timedelta(hours=-6)
    )  # fmt: skip


def test_future_date_is_flagged_and_skipped() -> None:
    future = TimeCandidate(NOW.replace(tzinfo=None) + timedelta(days=3), "exif")
    digitized = TimeCandidate(datetime(2026, 5, 10, 9, 0), "exif_digitized")
    value, source, problems = resolve(future, digitized)
    assert source == "exif_digitized" and value.hour == 9
    assert problems == [{"code": "implausible_date", "detail": f"exif: {future.value.isoformat()}"}]


def test_within_future_tolerance_is_accepted() -> None:
    soon = TimeCandidate(NOW + timedelta(hours=12), "exif")
    assert resolve(soon)[1] == "exif"
    assert resolve(soon, future_tolerance=timedelta(hours=1))[1] == "file_mtime"


def test_before_1990_is_flagged_and_skipped() -> None:
    old = TimeCandidate(datetime(1980, 1, 1), "exif")
    value, source, problems = resolve(
        old, TimeCandidate(datetime(1989, 12, 31, 12), "exif_datetime")
    )
    assert source == "file_mtime"
    assert value == datetime.fromtimestamp(MTIME, MEXICO) and value.tzinfo is not None
    assert [p["detail"] for p in problems] == [
        "exif: 1980-01-01T00:00:00",
        "exif_datetime: 1989-12-31T12:00:00",
    ]
    assert resolve(old, earliest_year=1970)[1] == "exif"


def test_no_candidates_uses_file_time() -> None:
    value, source, problems = resolve()
    assert (value, source, problems) == (datetime.fromtimestamp(MTIME, MEXICO), "file_mtime", [])


@pytest.mark.parametrize("mtime", [0.0, float("nan"), 1e20, NOW.timestamp() + 7 * 86400])
def test_implausible_file_time_falls_back_to_import_time(mtime: float) -> None:
    value, source, problems = resolve(mtime=mtime)
    assert (value, source) == (NOW, "import_time")
    assert codes(MediaInfo(problems=problems)) == ["implausible_date"]
    assert problems[0]["detail"].startswith("file_mtime: ")


def test_times_at_the_edge_of_the_calendar_are_implausible_not_errors() -> None:
    edge = [
        TimeCandidate(datetime(1, 1, 1, tzinfo=UTC), "media_creation_time"),
        TimeCandidate(datetime(9999, 12, 31, 23, 59, tzinfo=UTC), "media_creation_time"),
        TimeCandidate(datetime(1, 1, 1), "exif"),
    ]
    _, source, problems = resolve(*edge)
    assert source == "file_mtime" and len(problems) == 3


def test_naive_now_is_taken_in_tz() -> None:
    info = MediaInfo()
    value, source, _ = resolve_capture_time(
        info, float("nan"), tz=MEXICO, now=datetime(2026, 5, 10, 20, 0)
    )
    assert source == "import_time" and value == NOW and value.tzinfo is not None


@settings(max_examples=150, deadline=None, database=None)
@given(
    values=st.lists(
        st.datetimes() | st.datetimes(timezones=st.sampled_from([UTC, PLUS3, MINUS6])),
        max_size=4,
    ),
    source=st.sampled_from(["exif", "media_creation_time"]),
    mtime=st.floats(min_value=-1e12, max_value=1e12) | st.just(float("nan")),
)
def test_always_aware_and_plausible_or_flagged(
    values: list[datetime], mtime: float, source: str
) -> None:
    candidates = [TimeCandidate(v, source) for v in values]
    value, chosen, problems = resolve(*candidates, mtime=mtime)
    assert value.tzinfo is not None and value.utcoffset() is not None
    assert chosen in (source, "file_mtime", "import_time")
    if chosen != "import_time":
        assert datetime(1990, 1, 1, tzinfo=MEXICO) <= value <= NOW + timedelta(days=1)
    assert {p["code"] for p in problems} <= {"implausible_date"}
    if chosen == source:  # only the candidates before the chosen one were flagged
        assert len(problems) < len(candidates)
    else:
        assert len(problems) == len(candidates) + (chosen == "import_time")


def test_a_probe_records_at_most_so_many_problems() -> None:
    """A photo whose EXIF had a hundred bad tags gave a hundred problems, and its record was
    refused by the hub (which takes at most 64): its edits never reached headquarters."""
    from ingest.metadata.info import MAX_PROBLEMS, MORE, MediaInfo

    info = MediaInfo()
    for n in range(100):
        info.add_problem("unreadable_metadata", f"tag {n}: data larger than the file")
    assert len(info.problems) == MAX_PROBLEMS <= 64
    assert info.problems[-1]["detail"].endswith(MORE)
    assert sum(p["detail"].endswith(MORE) for p in info.problems) == 1
