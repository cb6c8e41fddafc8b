"""How long ``metadata.probe`` takes per file, and what its damage check costs.

Why: the import must stay close to copy speed on a Raspberry Pi-class box, and the damage check
used to decode pixels (JPEG at 1/8 scale, HEIF in full). This prints, per sample, the whole
probe and the damage check alone, next to the old decode-based check measured in the same run
(kept here only, as the yardstick), so a regression shows as a ratio.

Run: ./scripts/bench metadata [--repeat N]   (samples are made under $BENCH_OUT)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

# Run as a script, sys.path[0] is this folder: import this checkout's ingest, not an installed one.
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import pillow_heif  # noqa: E402
from PIL import Image  # noqa: E402

from ingest import metadata  # noqa: E402
from ingest.metadata.damage import check_structure  # noqa: E402
from ingest.metadata.reading import fd_reader  # noqa: E402

SAMPLES = REPO / "tests" / "fixtures" / "samples"


def make_samples(out: Path) -> list[tuple[str, Path, str]]:
    """The files to time: (label, path, kind). Made once; reused while they exist."""
    out.mkdir(parents=True, exist_ok=True)
    jpeg = out / "noise-4000x3000-q95.jpg"
    png = out / "noise-1920x1080.png"
    if not jpeg.exists() or not png.exists():
        bands = [Image.effect_noise((4000, 3000), 30) for _ in range(3)]
        noise = Image.merge("RGB", bands)
        exif = Image.Exif()
        exif[271], exif[272], exif[274], exif[306] = "Canon", "EOS R6", 1, "2026:05:10 12:30:00"
        noise.save(jpeg, format="JPEG", quality=95, exif=exif)
        noise.resize((1920, 1080)).save(png, format="PNG")
    trailer = out / "noise-4000x3000-q95-trailer.jpg"
    if not trailer.exists():
        # Data after the EOI, as some phones append: the EOI is not at the end, so the check
        # searches the whole scan data for it (the slowest JPEG case).
        trailer.write_bytes(jpeg.read_bytes() + b"SEFH" + bytes(range(256)) * 400)
    samples = [
        ("JPEG 4000x3000 q95 (noise)", jpeg, "photo"),
        ("same + 100 KB trailer", trailer, "photo"),
        ("HEIC pug.heic (iPhone)", SAMPLES / "pug.heic", "photo"),
        ("MPO frozenpond.mpo", SAMPLES / "frozenpond.mpo", "photo"),
        ("PNG 1920x1080 (noise)", png, "photo"),
    ]
    mp4 = out / "clip-1080p-10s.mp4"
    if not mp4.exists() and shutil.which("ffmpeg"):
        subprocess.run(
            ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=1920x1080:rate=30",
             "-t", "10", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
             str(mp4)],
            check=True,
        )  # fmt: skip
    if mp4.exists():
        samples.append(("MP4 1080p 10 s", mp4, "video"))
    return samples


def old_decode_check(fp: IO[bytes], img: Image.Image) -> None:
    """The damage check as it was before the structural checks: it decoded pixels."""
    if img.format in ("JPEG", "MPO"):
        for index in sorted({0, getattr(img, "n_frames", 1) - 1}):
            fp.seek(0)
            with Image.open(fp) as frame:
                frame.seek(index)
                frame.draft("RGB", (max(1, frame.width // 8), max(1, frame.height // 8)))
                frame.load()
    elif img.format == "PNG":
        fp.seek(0)
        with Image.open(fp) as fresh:
            fresh.verify()
    else:  # HEIF: decoded in full
        for index in range(min(getattr(img, "n_frames", 1), 16)):
            img.seek(index)
            img.load()


def check_timer(path: Path, old: bool) -> Callable[[], None]:
    """One damage check on an already opened image, the old way or the current one."""
    pillow_heif.register_heif_opener()

    def run() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            with fd_reader(fd) as fp, Image.open(fp) as img:
                if old:
                    old_decode_check(fp, img)
                else:
                    info = metadata.MediaInfo()
                    check_structure(fp, img, os.fstat(fd).st_size, info)
                    assert info.problems == [], info.problems
        finally:
            os.close(fd)

    return run


def probe_timer(path: Path, kind: str) -> Callable[[], None]:
    def run() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            info = metadata.probe(fd, kind)
            assert info.problems == [], info.problems
        finally:
            os.close(fd)

    return run


def open_only_timer(path: Path) -> Callable[[], None]:
    """Image.open and nothing else: the floor a check is measured against."""
    pillow_heif.register_heif_opener()

    def run() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            with fd_reader(fd) as fp, Image.open(fp):
                pass
        finally:
            os.close(fd)

    return run


def median_ms(func: Callable[[], None], repeat: int) -> float:
    func()  # warm the page cache and the imports
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="runs per figure (median shown)")
    args = parser.parse_args()
    out = Path(os.environ.get("BENCH_OUT", REPO / "bench-results")) / "metadata"
    samples = make_samples(out)
    print(f"median of {args.repeat} runs, ms per file (page cache warm)")
    header = (
        f"{'file':28} {'MB':>6} {'probe':>8} {'open':>7} {'check':>7} {'old chk':>8} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for label, path, kind in samples:
        size_mb = path.stat().st_size / 1e6
        probe_ms = median_ms(probe_timer(path, kind), args.repeat)
        if kind != "photo":
            print(f"{label:28} {size_mb:6.1f} {probe_ms:8.2f} {'':>7} {'-':>7} {'-':>8}")
            continue
        open_ms = median_ms(open_only_timer(path), args.repeat)
        new_ms = median_ms(check_timer(path, old=False), args.repeat) - open_ms
        old_ms = median_ms(check_timer(path, old=True), args.repeat) - open_ms
        ratio = old_ms / new_ms if new_ms > 0.005 else float("inf")
        print(
            f"{label:28} {size_mb:6.1f} {probe_ms:8.2f} {open_ms:7.2f} {new_ms:7.2f} "
            f"{old_ms:8.2f} {ratio:5.0f}x"
        )
    print("check and old chk exclude Image.open (the open column); probe is the whole call.")


if __name__ == "__main__":
    main()
