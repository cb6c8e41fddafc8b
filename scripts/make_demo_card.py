#!/usr/bin/env python3
"""Build a folder that looks like a camera card, for trying Acopio by hand and for benchmarks.

    scripts/make_demo_card.py DIR [--force] [--when 2025-03-21T16:30:00Z]

What the card holds (everything an ingest has to get right):
  DCIM/100CANON/IMG_0001.JPG ...  real photos from tests/fixtures/samples, renamed as a camera
                                  would: EXIF, IPTC, XMP, orientation, CMYK, MPO, HEIC, and the
                                  damaged truncated_app14.jpg and truncated.heic
  DCIM/100CANON/IMG_0001.THM      a file whose kind Acopio does not know
  DCIM/100CANON/._IMG_0001.JPG    macOS AppleDouble clutter
  DCIM/101CANON/IMG_0001.JPG      same name as in 100CANON, different bytes
  DCIM/101CANON/IMG_0112.JPG      same bytes as DCIM/100CANON/IMG_0002.JPG (a duplicate)
  PRIVATE/M4ROOT/CLIP/C0001.MP4   3 s H.264/AAC clip with creation_time (ffmpeg)
  AUDIO/ENTREVISTA_01.WAV         5 s interview stand-in, BWF bext date (ffmpeg)
  .Trashes/, System Volume Information/, MISC/   clutter folders (with files inside)

File times are set as a camera would leave them (from --when), so the card is the same on every
build except for the encoder's output. The card is built in a temporary folder beside DIR and
renamed into place, so DIR never holds half a card.

Standard library only, and it does not import the project.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tests" / "fixtures" / "samples"

# (path on the card, sample file) in shooting order.
PHOTOS = [
    ("DCIM/100CANON/IMG_0001.JPG", "xmp_test.jpg"),
    ("DCIM/100CANON/IMG_0002.JPG", "exif-72dpi-int.jpg"),
    ("DCIM/100CANON/IMG_0003.JPG", "hopper_orientation_3.jpg"),
    ("DCIM/100CANON/IMG_0004.JPG", "hopper_orientation_8.jpg"),
    ("DCIM/100CANON/IMG_0005.JPG", "iptc.jpg"),
    ("DCIM/100CANON/IMG_0006.JPG", "pil_sample_cmyk.jpg"),
    ("DCIM/100CANON/IMG_0007.JPG", "hopper_bad_exif.jpg"),
    ("DCIM/100CANON/IMG_0008.JPG", "truncated_app14.jpg"),
    ("DCIM/100CANON/IMG_0009.MPO", "frozenpond.mpo"),
    ("DCIM/100CANON/IMG_0010.HEIC", "pug.heic"),
    ("DCIM/100CANON/IMG_0011.HEIC", "arrow.heic"),
    ("DCIM/100CANON/IMG_0012.HEIC", "truncated.heic"),
    # The camera's counter was reset: a second IMG_0001.JPG with other bytes.
    ("DCIM/101CANON/IMG_0001.JPG", "flower.jpg"),
]
# Same bytes under another name (copied on the card by hand, say).
DUPLICATE = ("DCIM/101CANON/IMG_0112.JPG", "DCIM/100CANON/IMG_0002.JPG")
# Canon writes a JPEG thumbnail beside each movie as .THM: Acopio does not know the kind.
UNKNOWN = ("DCIM/100CANON/IMG_0001.THM", "hopper.jpg")
VIDEO = "PRIVATE/M4ROOT/CLIP/C0001.MP4"
AUDIO = "AUDIO/ENTREVISTA_01.WAV"

# What may be at the top of DIR for --force to replace it.
CARD_TOP_LEVEL = {"DCIM", "PRIVATE", "AUDIO", "MISC", ".Trashes", "System Volume Information"}

FFMPEG_TIMEOUT_S = 120


class CardError(Exception):
    """A problem the user can fix; printed without a traceback."""


def parse_when(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date and time: {text!r}") from exc
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a UTC offset or Z: {text!r}")
    return when.astimezone(UTC)


def ffmpeg_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def run_ffmpeg(ffmpeg: str, args: list[str], out: Path) -> None:
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args, str(out)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=FFMPEG_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise CardError(f"ffmpeg took more than {FFMPEG_TIMEOUT_S} s making {out.name}") from exc
    if proc.returncode != 0:
        raise CardError(
            f"ffmpeg failed making {out.name} (exit {proc.returncode}):\n{proc.stderr.strip()}"
        )


def put(card: Path, rel: str, data: bytes) -> Path:
    path = card / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def copy_sample(card: Path, rel: str, sample: str) -> Path:
    path = card / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    # copyfile, not copy2: the samples are read-only, files on a card are not.
    shutil.copyfile(SAMPLES / sample, path)
    return path


def apple_double() -> bytes:
    """A minimal AppleDouble file like the ones macOS leaves as ._NAME on FAT cards."""
    header = bytes.fromhex("0005160700020000") + b"Mac OS X        "
    entries = (2).to_bytes(2, "big")
    finder_info = (9).to_bytes(4, "big") + (50).to_bytes(4, "big") + (32).to_bytes(4, "big")
    rsrc = (2).to_bytes(4, "big") + (82).to_bytes(4, "big") + (0).to_bytes(4, "big")
    body = header + entries + finder_info + rsrc
    return body + bytes(4096 - len(body))


def build(card: Path, when: datetime, ffmpeg: str) -> list[Path]:
    """Write the card's files into the empty folder `card`; return them in shooting order."""
    files: list[Path] = []
    t = when

    def stamp(path: Path, at: datetime) -> None:
        ts = at.timestamp()
        os.utime(path, (ts, ts))

    for rel, sample in PHOTOS:
        path = copy_sample(card, rel, sample)
        stamp(path, t)
        files.append(path)
        t += timedelta(seconds=47)

    dup_rel, dup_of = DUPLICATE
    path = put(card, dup_rel, (card / dup_of).read_bytes())
    stamp(path, t)
    files.append(path)

    path = copy_sample(card, UNKNOWN[0], UNKNOWN[1])
    stamp(path, when)
    files.append(path)

    video_at = when + timedelta(minutes=20)
    video = card / VIDEO
    video.parent.mkdir(parents=True, exist_ok=True)
    run_ffmpeg(
        ffmpeg,
        [
            "-f", "lavfi", "-i", "testsrc=size=640x360:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440",
            "-t", "3",
            "-c:v", "libx264", "-pix_fmt", "yuv420p",
            "-c:a", "aac",
            "-metadata", f"creation_time={ffmpeg_time(video_at)}",
        ],
        video,
    )  # fmt: skip
    stamp(video, video_at + timedelta(seconds=3))
    files.append(video)

    audio_at = when + timedelta(minutes=35)
    audio = card / AUDIO
    audio.parent.mkdir(parents=True, exist_ok=True)
    run_ffmpeg(
        ffmpeg,
        [
            "-f", "lavfi", "-i", "sine=frequency=220:sample_rate=48000:duration=5",
            "-ac", "1", "-c:a", "pcm_s16le",
            # A field recorder's BWF "bext" chunk: date and time, no zone. ffprobe shows them
            # as date=YYYY-MM-DD and creation_time=HH:MM:SS.
            "-write_bext", "1",
            "-metadata", f"origination_date={audio_at:%Y-%m-%d}",
            "-metadata", f"origination_time={audio_at:%H:%M:%S}",
            "-metadata", "description=Entrevista de prueba (tono de 220 Hz)",
        ],
        audio,
    )  # fmt: skip
    stamp(audio, audio_at + timedelta(seconds=5))
    files.append(audio)

    # Clutter an ingest must leave alone.
    clutter = [
        put(card, "DCIM/100CANON/._IMG_0001.JPG", apple_double()),
        copy_sample(card, ".Trashes/501/IMG_0000.JPG", "hopper.jpg"),
        put(
            card,
            "System Volume Information/IndexerVolumeGuid",
            "{8F1C2A4E-3B6D-4E7F-9A0B-1C2D3E4F5A6B}".encode("utf-16-le"),
        ),
        put(card, "System Volume Information/WPSettings.dat", bytes.fromhex("0c00000000000000")),
        put(
            card,
            "MISC/AUTPRINT.MRK",
            b'[HDR]\r\nGEN REV = 01.10\r\nGEN CRT = "CANON" -01.00\r\n'
            b"[JOB]\r\nPRT PID = 001\r\nPRT TYP = STD\r\nPRT QTY = 001\r\n"
            b'<IMG SRC = "../DCIM/100CANON/IMG_0001.JPG">\r\n',
        ),
    ]
    for path in clutter:
        stamp(path, when)

    # Folder times last: writing into a folder moves its mtime.
    for dirpath, _dirnames, _filenames in os.walk(card, topdown=False):
        stamp(Path(dirpath), when)
    return files


def check_target(target: Path, force: bool) -> None:
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise CardError(f"{target} exists and is not a folder")
    if not target.is_dir():
        return
    entries = {p.name for p in target.iterdir()}
    if not entries:
        return
    if not force:
        raise CardError(f"{target} is not empty; pass --force to rebuild the demo card there")
    strangers = sorted(entries - CARD_TOP_LEVEL)
    if strangers:
        raise CardError(
            f"{target} holds things a demo card does not ({', '.join(strangers)}); "
            "refusing to delete it even with --force"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build a realistic camera card folder (photos, video, audio, clutter)."
    )
    parser.add_argument("dir", type=Path, help="folder to create (must be absent or empty)")
    parser.add_argument("--force", action="store_true", help="replace an existing demo card in DIR")
    parser.add_argument(
        "--when",
        type=parse_when,
        default=parse_when("2025-03-21T16:30:00Z"),
        help="time of the first shot, ISO 8601 with offset (default 2025-03-21T16:30:00Z)",
    )
    args = parser.parse_args(argv)
    target: Path = args.dir.absolute()

    try:
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise CardError("ffmpeg not found: install Debian's ffmpeg (scripts/setup does)")
        needed = {s for _, s in PHOTOS} | {UNKNOWN[1]}
        absent = sorted(s for s in needed if not (SAMPLES / s).is_file())
        if absent:
            raise CardError(f"sample photos missing from {SAMPLES}: {', '.join(absent)}")
        check_target(target, args.force)

        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            tmp.chmod(0o755)
            files = build(tmp, args.when, ffmpeg)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except CardError as exc:
        print(f"make_demo_card: error: {exc}", file=sys.stderr)
        return 1

    total = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    print(
        f"demo card ready: {target} ({len(files)} media and unknown files, "
        f"{total / 1e6:.1f} MB with clutter)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
