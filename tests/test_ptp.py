"""PTP cameras through the real libgphoto2, with its "Directory Browse" camera on `disk:DIR`.

Directory Browse has no partial reads, so these tests exercise the streamed whole-file
fallback for real; the partial-read loop (what PTP cameras use) is exercised against a
stand-in camera object at the end.
"""

from __future__ import annotations

import ast
import errno
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gphoto2 as gp
import pytest

from appliance.catalog import Catalog
from appliance.datadir import DataDir
from ingest import ptp
from ingest.pipeline import Importer, Reporter
from ingest.ptp import CameraSource
from ingest.sources import CHUNK
from ingest.walk import SourceFile
from tests.cards import exif_jpeg, ffmpeg_audio, ffmpeg_video, sample, sha256_file, tree_digest
from tests.conftest import REPO

# Handing libgphoto2 our own (pipe-backed) CameraFile is deprecated in python-gphoto2, and
# is how ptp.py streams a whole-file download; see the comment there.
pytestmark = pytest.mark.filterwarnings(
    "ignore:In function .* a CameraFile object should not be passed:DeprecationWarning")

MEDIA = {
    "AUDIO/ENTREVISTA_01.WAV": "audio",
    "DCIM/100CANON/IMG_0001.JPG": "photo",
    "DCIM/100CANON/IMG_0002.JPG": "photo",
    "DCIM/100CANON/IMG_0003.JPG": "photo",
    "DCIM/100CANON/MVI_0004.MP4": "video",
    "DCIM/101CANON/IMG_0101.JPG": "photo",
}
BIG = "DCIM/101CANON/IMG_0101.JPG"  # a real JPEG with ~10 MB of trailing data


@pytest.fixture(scope="module")
def camera_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("camera")
    dcim = root / "DCIM" / "100CANON"
    sample("flower.jpg", dcim / "IMG_0001.JPG")  # Canon PowerShot S40, EXIF 2003:12:14
    exif_jpeg(dcim / "IMG_0002.JPG", "2026:05:10 11:15:00", "-06:00")
    exif_jpeg(dcim / "IMG_0003.JPG", "2026:05:10 11:16:00", "-06:00", color=(20, 200, 40))
    ffmpeg_video(dcim / "MVI_0004.MP4", creation_time="2026-05-10T18:30:00Z")
    big = exif_jpeg(root / BIG, "2026:05:11 09:00:00", "-06:00", color=(1, 2, 3))
    with big.open("ab") as f:
        f.write(os.urandom(10 * 1024 * 1024 + 12345))
    ffmpeg_audio(root / "AUDIO" / "ENTREVISTA_01.WAV")
    # what is not media: a thumbnail the camera shows but Acopio does not know (listed by
    # libgphoto2, so reported as unknown), a DPOF folder (clutter), hidden AppleDouble
    # files (libgphoto2's Directory Browse does not even list dot files)
    (dcim / "IMG_0001.THM").write_bytes(b"\xff\xd8\xff\xe0thumb")
    (root / "MISC").mkdir()
    sample("hopper.jpg", root / "MISC" / "AUTPRINT.JPG")
    (dcim / "._IMG_0001.JPG").write_bytes(b"\0\5\26\7AppleDouble")
    (root / "LEEME.txt").write_text("no listado: libgphoto2 no conoce .txt")
    return root


@pytest.fixture
def camera_dir(camera_template: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "camera"
    shutil.copytree(camera_template, dest, copy_function=shutil.copy2)
    return dest


def port(root: Path) -> str:
    return f"disk:{root}"


def items_of(config) -> list[dict]:
    return list(Catalog(DataDir.at(config.data_dir)).items())


# -- listing --------------------------------------------------------------------------------

def test_scan_lists_exactly_the_media_with_sizes_kinds_and_times(camera_dir: Path) -> None:
    with CameraSource(port(camera_dir)) as source:
        assert source.description == f"Directory Browse (disk:{camera_dir})"
        found = source.scan()
        with_thm_as_clutter = source.scan(("*.thm",))
    assert [f.rel for f in found.files] == sorted(k.encode() for k in MEDIA)
    for f in found.files:
        st = (camera_dir / f.rel.decode()).stat()
        assert f.kind == MEDIA[f.rel.decode()]
        assert f.size == st.st_size
        assert f.mtime_ns == int(st.st_mtime) * 10**9  # PTP gives whole seconds
    assert found.unknown == [b"DCIM/100CANON/IMG_0001.THM"]
    assert found.skipped == [(b"MISC", "clutter")]
    assert found.errors == []
    assert with_thm_as_clutter.unknown == []
    assert (b"DCIM/100CANON/IMG_0001.THM", "clutter") in with_thm_as_clutter.skipped


def test_unsafe_names_from_a_camera_are_refused() -> None:
    for bad in ("", ".", "..", "a/b", "a\0b"):
        assert not ptp.safe_component(bad)
    assert ptp.safe_component("100CANON") and ptp.safe_component("ÑANDÚ.JPG")
    for rel in (b"DCIM/../etc/passwd", b"/DCIM/a.jpg", b"DCIM//a.jpg", b"\xff.jpg"):
        with pytest.raises(OSError) as raised:
            ptp._locate(rel)
        assert raised.value.errno == errno.EINVAL


def test_a_missing_camera_is_enodev(tmp_path: Path) -> None:
    with pytest.raises(OSError) as raised:
        CameraSource(port(tmp_path / "nothing-here"))
    assert raised.value.errno == errno.ENODEV
    with pytest.raises(OSError) as raised:
        CameraSource(port(tmp_path), model="Cámara que no existe")
    assert raised.value.errno == errno.ENODEV


# -- reading --------------------------------------------------------------------------------

def test_read_streams_the_exact_bytes_in_chunks(camera_dir: Path) -> None:
    with CameraSource(port(camera_dir)) as source:
        files = {f.rel.decode(): f for f in source.scan().files}
        for rel, entry in files.items():
            digest = hashlib.sha256()
            chunks: list[int] = []

            def sink(chunk: memoryview, digest=digest, chunks=chunks) -> None:
                digest.update(chunk)
                chunks.append(len(chunk))

            assert source.read(entry, sink) == entry.size
            assert digest.hexdigest() == sha256_file(camera_dir / rel), rel
            assert max(chunks) <= CHUNK
            if rel == BIG:
                assert entry.size > 2 * CHUNK and len(chunks) >= 3
    with pytest.raises(OSError) as raised:
        source.read(files[BIG], lambda chunk: None)
    assert raised.value.errno == errno.EBADF  # closed


def test_a_file_that_changed_size_is_an_io_error(camera_dir: Path) -> None:
    with CameraSource(port(camera_dir)) as source:
        entry = next(f for f in source.scan().files if f.rel.endswith(b"IMG_0002.JPG"))
        with (camera_dir / entry.rel.decode()).open("ab") as f:
            f.write(b"appended after the listing")
        with pytest.raises(OSError) as raised:
            source.read(entry, lambda chunk: None)
    assert raised.value.errno == errno.EIO


def test_a_failing_sink_stops_the_read_and_leaves_the_source_usable(camera_dir: Path) -> None:
    with CameraSource(port(camera_dir)) as source:
        files = {f.rel.decode(): f for f in source.scan().files}

        def full_disk(chunk: memoryview) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        with pytest.raises(OSError) as raised:
            source.read(files[BIG], full_disk)
        assert raised.value.errno == errno.ENOSPC
        digest = hashlib.sha256()
        assert source.read(files[BIG], digest.update) == files[BIG].size
        assert digest.hexdigest() == sha256_file(camera_dir / BIG)


MEMORY_PROBE = r"""
import hashlib, os, resource, sys
from ingest.ptp import CameraSource

root = sys.argv[1]
with CameraSource("disk:" + root) as source:
    files = {f.rel: f for f in source.scan().files}
    source.read(files[b"small.jpg"], lambda chunk: None)  # warm up: thread, pipe, buffers
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    digest = hashlib.sha256()
    count = source.read(files[b"huge.mp4"], digest.update)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(count, digest.hexdigest(), (after - before) * 1024)
"""


def test_reading_100_mb_does_not_hold_the_file_in_memory(tmp_path: Path) -> None:
    size = 100 * 1024 * 1024
    root = tmp_path / "camera"
    root.mkdir()
    shutil.copyfile(REPO / "tests" / "fixtures" / "samples" / "hopper.jpg", root / "small.jpg")
    with (root / "huge.mp4").open("wb") as f:
        f.truncate(size)  # sparse: 100 MB of zeros that cost no disk
    zeros = hashlib.sha256()
    block = bytes(1024 * 1024)
    for _ in range(100):
        zeros.update(block)
    result = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(root)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    count, digest, grown = result.stdout.split()
    assert int(count) == size and digest == zeros.hexdigest()
    assert int(grown) < 20 * 1024 * 1024, f"peak RSS grew by {int(grown) >> 20} MiB"


# -- importing ------------------------------------------------------------------------------

def test_import_from_camera_archives_verifies_and_never_touches_the_camera(
        camera_dir: Path, config) -> None:
    before = tree_digest(camera_dir)
    with CameraSource(port(camera_dir)) as source:
        summary = Importer(config).run_source(source)
    assert summary.ok, summary.as_dict()
    assert summary.source == f"Directory Browse (disk:{camera_dir})"
    assert summary.imported == len(MEDIA) and summary.duplicates == 0
    assert summary.unknown == [b"DCIM/100CANON/IMG_0001.THM"]
    items = items_of(config)
    by_source = {i["source_path"]: i for i in items}
    assert set(by_source) == set(MEDIA)
    for rel, item in by_source.items():
        archived = Path(config.data_dir) / item["archive_path"]
        assert item["sha256"] == sha256_file(archived) == sha256_file(camera_dir / rel)
        assert item["kind"] == MEDIA[rel] and item["size"] == archived.stat().st_size
    # filed by the EXIF capture time, not the camera's file time (today)
    flower = by_source["DCIM/100CANON/IMG_0001.JPG"]
    assert flower["date_source"] == "exif"
    assert flower["archive_path"] == "archive/2003/12/2003-12-14_sin-actividad/IMG_0001.JPG"
    assert by_source["DCIM/100CANON/IMG_0002.JPG"]["captured_at"] == "2026-05-10T11:15:00-06:00"
    assert by_source["DCIM/100CANON/IMG_0002.JPG"]["archive_path"].startswith(
        "archive/2026/05/2026-05-10_")
    assert by_source["DCIM/100CANON/MVI_0004.MP4"]["date_source"] == "media_creation_time"

    with CameraSource(port(camera_dir)) as source:
        again = Importer(config).run_source(source)
    assert again.ok and again.imported == 0 and again.duplicates == len(MEDIA)
    assert len(items_of(config)) == len(MEDIA)
    assert tree_digest(camera_dir) == before  # every file's bytes, mode and mtime


def test_the_code_never_asks_a_camera_to_change_anything() -> None:
    tree = ast.parse((REPO / "ingest" / "ptp.py").read_text())
    called = {node.func.attr if isinstance(node.func, ast.Attribute) else
              getattr(node.func, "id", "") for node in ast.walk(tree)
              if isinstance(node, ast.Call)}
    writes = {"file_delete", "gp_camera_file_delete", "folder_put_file", "folder_delete_all",
              "folder_make_dir", "folder_remove_dir", "file_set_info", "set_config",
              "set_single_config", "capture", "trigger_capture", "capture_preview",
              "gp_camera_folder_put_file", "gp_camera_file_set_info", "gp_camera_set_config"}
    assert not called & writes
    assert called >= {"folder_list_files", "folder_list_folders", "file_get_info", "file_read",
                      "file_get", "init", "exit"}


def test_a_file_gone_between_scan_and_read_fails_alone(camera_dir: Path, config) -> None:
    victim = camera_dir / "DCIM" / "100CANON" / "IMG_0002.JPG"

    class DeletedOnCamera(CameraSource):
        def scan(self, extra_clutter: tuple[str, ...] = ()):
            found = super().scan(extra_clutter)
            victim.unlink()  # deleted on the camera after the listing
            return found

    with DeletedOnCamera(port(camera_dir)) as source:
        summary = Importer(config).run_source(source)
    assert not summary.stopped
    assert [(o.rel, o.reason.split(":")[0]) for o in summary.failed] == [
        (b"DCIM/100CANON/IMG_0002.JPG", "vanished")]
    assert summary.imported == len(MEDIA) - 1
    assert {i["source_path"] for i in items_of(config)} == set(MEDIA) - {
        "DCIM/100CANON/IMG_0002.JPG"}


def test_a_camera_unplugged_mid_import_stops_it_and_the_next_import_resumes(
        camera_dir: Path, tmp_path: Path, config) -> None:
    away = tmp_path / "unplugged"

    first = (camera_dir / min(MEDIA)).stat().st_size

    class Unplug(Reporter):
        copied = 0

        def advanced(self, nbytes: int) -> None:
            self.copied += nbytes
            if self.copied >= first and not away.exists():
                camera_dir.rename(away)  # the camera vanishes once the first file is read

    with CameraSource(port(camera_dir)) as source:
        summary = Importer(config, reporter=Unplug()).run_source(source)
    assert summary.stopped.startswith("the source disappeared"), summary.as_dict()
    assert "the camera is gone" in summary.stopped
    assert summary.imported == 1 and summary.not_attempted == len(MEDIA) - 2
    assert len(items_of(config)) == 1

    away.rename(camera_dir)  # plugged in again
    with CameraSource(port(camera_dir)) as source:
        resumed = Importer(config).run_source(source)
    assert resumed.ok and resumed.imported == len(MEDIA) - 1 and resumed.duplicates == 1
    assert {i["source_path"] for i in items_of(config)} == set(MEDIA)


# -- partial reads (PTP cameras), against a stand-in for the libgphoto2 camera ---------------

class PartialReadCamera:
    """Answers `file_read` like a PTP camera with GetPartialObject, from bytes in memory;
    fails with `error` once `fail_at` bytes have been read."""

    def __init__(self, data: bytes, fail_at: int | None = None, error: int = 0) -> None:
        self.data, self.fail_at, self.error = data, fail_at, error
        self.reads: list[tuple[str, str, int, int]] = []

    def file_read(self, folder, name, kind, offset, view, context) -> int:
        assert kind == gp.GP_FILE_TYPE_NORMAL
        if self.fail_at is not None and offset >= self.fail_at:
            raise gp.GPhoto2Error(self.error)
        piece = self.data[offset:offset + len(view)]
        view[:len(piece)] = piece
        self.reads.append((folder, name, offset, len(view)))
        return len(piece)

    def exit(self, context) -> None:
        pass


def with_camera(tmp_path: Path, camera: PartialReadCamera) -> CameraSource:
    source = CameraSource(port(tmp_path), chunk_size=1024 * 1024)
    source.close()
    source._camera = camera  # type: ignore[assignment]
    return source


def test_partial_reads_stream_in_chunks(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    camera = PartialReadCamera(data)
    source = with_camera(tmp_path, camera)
    entry = SourceFile(b"store_00010001/DCIM/100CANON/MVI_0001.MP4", len(data), 0, "video")
    digest = hashlib.sha256()
    assert source.read(entry, digest.update) == len(data)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert [r[2] for r in camera.reads] == [0, 1 << 20, 2 << 20, 3 << 20]
    assert camera.reads[0][:2] == ("/store_00010001/DCIM/100CANON", "MVI_0001.MP4")
    short = SourceFile(entry.rel, len(data) + 10, 0, "video")  # the camera listed more
    with pytest.raises(OSError) as raised:
        source.read(short, lambda chunk: None)
    assert raised.value.errno == errno.EIO


@pytest.mark.parametrize("code", [gp.GP_ERROR_IO_USB_FIND, gp.GP_ERROR_MODEL_NOT_FOUND])
def test_a_camera_gone_mid_file_is_enodev(tmp_path: Path, code: int) -> None:
    data = os.urandom(3 * 1024 * 1024)
    source = with_camera(tmp_path, PartialReadCamera(data, fail_at=1 << 20, error=code))
    entry = SourceFile(b"DCIM/100CANON/IMG_0001.JPG", len(data), 0, "photo")
    got: list[int] = []
    with pytest.raises(OSError) as raised:
        source.read(entry, lambda chunk: got.append(len(chunk)))
    assert raised.value.errno == errno.ENODEV and got == [1 << 20]


def test_io_errors_are_enodev_only_when_the_port_is_gone(tmp_path: Path) -> None:
    root = tmp_path / "camera"
    data = os.urandom(1024)
    entry = SourceFile(b"DCIM/100CANON/IMG_0001.JPG", len(data), 0, "photo")
    (root / "DCIM" / "100CANON").mkdir(parents=True)
    (root / entry.rel.decode()).write_bytes(data)
    source = with_camera(root, PartialReadCamera(data, fail_at=0, error=gp.GP_ERROR_IO))
    errnos = []
    for _ in range(ptp.MAX_IO_FAILURES):
        with pytest.raises(OSError) as raised:
            source.read(entry, lambda chunk: None)
        errnos.append(raised.value.errno)
    # one transfer failing is that file's problem; the same again and again is the camera's
    assert errnos == [errno.EIO] * (ptp.MAX_IO_FAILURES - 1) + [errno.ENODEV]

    busy = with_camera(root, PartialReadCamera(data, fail_at=0, error=gp.GP_ERROR_CAMERA_BUSY))
    with pytest.raises(OSError) as raised:
        busy.read(entry, lambda chunk: None)
    assert raised.value.errno == errno.EBUSY

    gone = with_camera(root, PartialReadCamera(data, fail_at=0, error=gp.GP_ERROR_IO))
    root.rename(tmp_path / "unplugged")  # the port's folder is not there any more
    with pytest.raises(OSError) as raised:
        gone.read(entry, lambda chunk: None)
    assert raised.value.errno == errno.ENODEV
