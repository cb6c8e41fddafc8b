"""Build real camera cards for tests: sample photos, photos with chosen EXIF, and video and
audio made by ffmpeg's test sources, in the folder layout cameras use."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
from pathlib import Path

from PIL import Image

from tests.conftest import SAMPLES, require_tool


def exif_jpeg(path: Path, when: str | None = None, offset: str | None = None,
              make: str = "Canon", model: str = "Canon EOS R6", size: tuple[int, int] = (64, 48),
              color: tuple[int, int, int] = (200, 30, 30), gps: tuple[float, float] | None = None
              ) -> Path:
    """A small real JPEG with EXIF DateTimeOriginal ("YYYY:MM:DD HH:MM:SS") and friends."""
    img = Image.new("RGB", size, color)
    exif = Image.Exif()
    exif[271] = make
    exif[272] = model
    if when:
        ifd = exif.get_ifd(0x8769)
        ifd[36867] = when
        if offset:
            ifd[36881] = offset
    if gps:
        lat, lon = gps
        g = exif.get_ifd(0x8825)
        g[1] = "N" if lat >= 0 else "S"
        g[2] = _dms(abs(lat))
        g[3] = "E" if lon >= 0 else "W"
        g[4] = _dms(abs(lon))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", exif=exif, quality=85)
    return path


def _dms(value: float) -> tuple[float, float, float]:
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = round(((value - degrees) * 60 - minutes) * 60, 4)
    return (float(degrees), float(minutes), seconds)


def ffmpeg_video(path: Path, creation_time: str = "2026-05-10T18:30:00Z", seconds: float = 1,
                 size: str = "320x240") -> Path:
    ffmpeg = require_tool("ffmpeg")
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [ffmpeg, "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"testsrc=size={size}:rate=10", "-f", "lavfi", "-i", "sine=frequency=440",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-metadata", f"creation_time={creation_time}", "-f", "mp4",
         f"file:{path}"],
        check=True, timeout=60,
    )
    return path


def ffmpeg_audio(path: Path, creation_time: str = "2026-05-10T18:45:00Z",
                 seconds: float = 1) -> Path:
    ffmpeg = require_tool("ffmpeg")
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".wav": "wav", ".flac": "flac", ".mp3": "mp3", ".m4a": "ipod"}[path.suffix.lower()]
    subprocess.run(
        [ffmpeg, "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"sine=frequency=440:duration={seconds}", "-metadata",
         f"creation_time={creation_time}", "-f", fmt, f"file:{path}"],
        check=True, timeout=60,
    )
    return path


def noise_jpeg(path: Path, seed: int, side: int = 1000) -> Path:
    """A JPEG that does not compress (about 1.2 MB at 1000 px): real bytes, unique per seed."""
    rng = random.Random(seed)
    img = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=95)
    return path


def fat_image(image: Path, files: dict[str, Path], label: str = "EOS_DIGITAL",
              min_bytes: int = 64 * 1024 * 1024) -> Path:
    """A real FAT32 image holding `files` (path on the card -> local file), made with
    mkfs.vfat and mtools, as a camera formats and fills a card."""
    for tool in ("mkfs.vfat", "mcopy", "mmd"):
        require_tool(tool)
    total = sum(p.stat().st_size for p in files.values())
    image.parent.mkdir(parents=True, exist_ok=True)
    with open(image, "wb") as fh:
        fh.truncate(max(min_bytes, int(total * 1.3)))
    subprocess.run(["mkfs.vfat", "-F", "32", "-n", label, str(image)], check=True,
                   capture_output=True)
    made: set[str] = set()
    for name, local in files.items():
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            folder = "/".join(parts[:i])
            if folder not in made:
                subprocess.run(["mmd", "-i", str(image), f"::/{folder}"], check=True)
                made.add(folder)
        subprocess.run(["mcopy", "-m", "-i", str(image), str(local), f"::/{name}"], check=True)
    return image


def sample(name: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SAMPLES / name, dest)
    return dest


def camera_card(root: Path) -> Path:
    """A card as a camera, a phone and a recorder leave it, with clutter and unknown files."""
    dcim = root / "DCIM" / "100CANON"
    sample("flower.jpg", dcim / "IMG_0001.JPG")
    sample("hopper_orientation_3.jpg", dcim / "IMG_0002.JPG")
    broken = (SAMPLES / "flower.jpg").read_bytes()
    (dcim / "IMG_0003.JPG").write_bytes(broken[: len(broken) * 6 // 10])  # card pulled mid-write
    sample("pil_sample_cmyk.jpg", dcim / "IMG_0004.JPG")
    sample("frozenpond.mpo", dcim / "IMG_0005.MPO")
    sample("pug.heic", root / "DCIM" / "101APPLE" / "IMG_1001.HEIC")
    sample("arrow.heic", root / "DCIM" / "101APPLE" / "IMG_1002.HEIC")
    sample("truncated.heic", root / "DCIM" / "101APPLE" / "IMG_1003.HEIC")
    exif_jpeg(root / "DCIM" / "101CANON" / "IMG_0001.JPG", "2026:05:10 11:15:00", "-06:00",
              gps=(19.4326, -99.1332))
    Image.new("RGB", (40, 30), (0, 90, 200)).save(root / "DCIM" / "101CANON" / "CAPTURA.PNG")
    # A DNG is a TIFF: this one stands in for the RAW families (CR2, NEF, ARW, DNG, ...).
    raw = root / "DCIM" / "101CANON" / "IMG_0002.DNG"
    Image.new("RGB", (60, 40), (90, 90, 20)).save(raw, "TIFF")
    subprocess.run([require_tool("exiftool"), "-q", "-overwrite_original", "-Make=Canon",
                    "-Model=Canon EOS R6", "-DateTimeOriginal=2026:05:10 11:20:00", str(raw)],
                   check=True, timeout=60)
    Image.new("RGB", (40, 30), (0, 200, 90)).save(root / "DCIM" / "101CANON" / "ESCANEO.TIF")
    ffmpeg_video(root / "PRIVATE" / "M4ROOT" / "CLIP" / "C0001.MP4")
    ffmpeg_audio(root / "AUDIO" / "ENTREVISTA_01.WAV")
    # clutter and unknown files
    (root / "DCIM" / "100CANON" / "._IMG_0001.JPG").write_bytes(b"\0\5\26\7AppleDouble")
    (root / ".Trashes").mkdir()
    (root / ".Trashes" / "501").write_bytes(b"x")
    (root / "System Volume Information").mkdir()
    (root / "System Volume Information" / "IndexerVolumeGuid").write_bytes(b"{guid}")
    (root / "MISC").mkdir()
    (root / "MISC" / "AUTPRINT.MRK").write_bytes(b"[HDR]")
    (root / "DCIM" / "100CANON" / "IMG_0001.THM").write_bytes(b"\xff\xd8thumb")
    (root / "LEEME.txt").write_text("tarjeta de prensa")
    return root


def tree_digest(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every entry under `root` (without following links): content hash, mode and mtime."""
    out: dict[str, tuple[str, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if path.is_symlink():
                digest = "link:" + os.readlink(path)
            elif path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                digest = ""
            out[str(path.relative_to(root))] = (digest, st.st_mode, st.st_mtime_ns)
    return out


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def media_hashes(root: Path) -> set[str]:
    """SHA-256 of every regular media file under a folder (what an import must archive)."""
    from ingest.kinds import is_clutter, kind_of

    hashes = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not is_clutter(d)]
        for name in filenames:
            path = Path(dirpath) / name
            if not is_clutter(name) and kind_of(name) and path.is_file() \
                    and not path.is_symlink():
                hashes.add(sha256_file(path))
    return hashes
