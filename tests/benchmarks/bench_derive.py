"""Benchmark the derivatives against the bare tools that make the same thing.

Why: issue 4 sets the targets, and the box is a Raspberry Pi with 1-8 GB running several
workers: a grid thumbnail must cost no more than the reference tool's, and a worker must stay
small. Each part measures one kind of derivative and prints its figures with PASS/FAIL; run
one with ``--parts``. It is not part of the test suite: ``./scripts/bench derive``.

Photo part (``photo_part``): grid thumbnails of 24-megapixel JPEGs.

* Inputs: ``--count`` (20) different 6000x4000 JPEGs at quality 90, made here by Pillow in
  child processes (gradients at random angles, two noise layers, random shapes: 8-9 MB each,
  as a camera's), cached under ``$BENCH_OUT/derive/photos`` (``bench-results/derive``).
* Reference: ``vipsthumbnail --size 320 -o DIR/%s.jpg[Q=85,strip]`` (Debian libvips-tools),
  which also shrinks on load (libjpeg DCT scaling) and resizes with Lanczos 3. ``strip``
  because ours writes no metadata either. Ours: ``render_photo`` with only a "thumb" output
  (320 px, quality 85, progressive), in a separate ``python -c`` process.
* Like with like, both ways: (a) one process per image for both (process start-up included on
  both sides); (b) one process for all images for both (vipsthumbnail given every file;
  one Python process calling render_photo in a loop): wall time / images. Target for each:
  ours / vips <= 1.0, as the ratio of the medians over ``--repeat`` (5) runs (per file in (a)).
  The sides alternate run by run. vipsthumbnail does not fsync, so the compared side is
  ``render_photo(..., durable=False)`` (atomic rename, no fsync); the default (durable: fsync
  of the file and its folder per output) is shown beside it. CPU time (user + system, from
  wait4) is shown too: on a shared machine it is steadier than wall time.
* Python workers run without PYTHONDONTWRITEBYTECODE, so that the warm-up run leaves compiled
  modules in __pycache__ (git-ignored), as on an installed appliance.
* Page cache: warm for both. Every input is read once before timing and each side has an
  untimed warm-up run, so neither side reads the disk.
* Memory: peak RSS per worker <= 80 MB, for a worker making thumbnails only and one making
  thumbnail + preview (1600 px) of every image. It is the child's own VmHWM
  (/proc/self/status), read by the child at its end. ``wait4``'s ru_maxrss is shown beside
  it for information: Python starts children with vfork, and Linux folds the launcher's
  high-water mark into the child's ru_maxrss at exec, so that figure is never below the
  launcher's (shown). vipsthumbnail's RSS can only be had from wait4.
* Thumbnail + preview per image is shown for information, beside ``vipsthumbnail --size
  1600`` (which makes the preview alone).

Exit status: 0 when the benchmark ran, whatever the PASS/FAIL words say; 2 when it could not
(a tool missing, a render that failed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MB = 1e6
TARGET_RATIO = 1.0
TARGET_RSS_MB = 80.0
PHOTO_SIZE = (6000, 4000)
PHOTO_QUALITY = 90
THUMB = 320
PREVIEW = 1600


class BenchError(Exception):
    """The benchmark could not run; the message says why."""


def log(message: str) -> None:
    print(f"bench derive: {message}", file=sys.stderr, flush=True)


# -- measuring child processes ---------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    cpu_seconds: float  # user + system, from wait4
    wait4_rss_mb: float  # ru_maxrss (see the module docstring: includes the launcher's floor)
    stdout: str


def run_timed(args: Sequence[str], *, env: dict[str, str] | None = None) -> Run:
    """Run a program, timing it from outside; its ru_maxrss from wait4."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, env=env, cwd=REPO)
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        if proc.returncode != 0:
            err.seek(0)
            raise BenchError(f"{shlex.join(args)} exited {proc.returncode}: "
                             f"{err.read().decode(errors='replace')[-2000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return Run(elapsed, cpu, usage.ru_maxrss * 1024 / MB, out.decode())


def own_hwm_mb() -> float:
    """This process's peak RSS (the floor under every child's wait4 figure)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MB
    return 0.0


def python_env() -> dict[str, str]:
    """The workers' environment. Without PYTHONDONTWRITEBYTECODE: the warm-up run leaves the
    project's compiled modules in __pycache__, as an installed appliance has them; else every
    worker start would compile them again (vipsthumbnail is compiled too)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPATH": str(REPO)}


# -- photo part ------------------------------------------------------------------------------

# Made in a child process: the bench itself stays small (its RSS is the floor of wait4's).
MAKE_JPEG = """
import random, sys
from PIL import Image, ImageDraw
path, seed, w, h, quality = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:6])
rnd = random.Random(seed)
gx = Image.linear_gradient("L").rotate(rnd.uniform(0, 360)).resize((w, h), Image.BILINEAR)
gy = Image.radial_gradient("L").resize((w, h), Image.BILINEAR)
r = Image.blend(gx, Image.effect_noise((w, h), rnd.uniform(30, 45)), 0.5)
g = Image.blend(gy, Image.effect_noise((w, h), rnd.uniform(30, 45)), 0.5)
b = Image.blend(gx.transpose(Image.Transpose.ROTATE_180), gy, rnd.uniform(0.3, 0.7))
image = Image.merge("RGB", (r, g, b))
draw = ImageDraw.Draw(image)
for _ in range(40):
    x, y, s = rnd.randrange(w), rnd.randrange(h), rnd.randrange(w // 40, w // 6)
    draw.ellipse((x, y, x + s, y + s * 2 // 3), fill=tuple(rnd.randrange(256) for _ in "rgb"))
image.save(path + ".part", "JPEG", quality=quality)
import os
os.replace(path + ".part", path)
"""

# One worker: render_photo for every file given; prints per-image seconds and its VmHWM.
RENDER = """
import json, sys, time
from pathlib import Path
from ingest.derive.photo import PREVIEW_SIZE, THUMB_SIZE, render_photo
out, parts, durable = Path(sys.argv[1]), sys.argv[2].split(","), sys.argv[3] == "durable"
files = sys.argv[4:]
sizes = {"thumb": THUMB_SIZE, "preview": PREVIEW_SIZE}
times = []
for name in files:
    started = time.perf_counter()
    outputs = {p: (out / f"{Path(name).stem}.{p}.jpg", sizes[p]) for p in parts}
    problems = render_photo(Path(name), "photo", outputs, durable=durable)
    times.append(time.perf_counter() - started)
    if problems:
        sys.exit(f"{name}: {problems}")
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"times": times, "hwm_kb": hwm}))
"""


def make_photos(folder: Path, count: int) -> list[Path]:
    """The input JPEGs, made once (two at a time) and reused while they exist."""
    folder.mkdir(parents=True, exist_ok=True)
    width, height = PHOTO_SIZE
    paths = [folder / f"photo-{i:02d}-{width}x{height}-q{PHOTO_QUALITY}.jpg" for i in range(count)]
    missing = [(i, p) for i, p in enumerate(paths) if not p.exists()]
    if missing:
        log(f"making {len(missing)} JPEGs of {width}x{height} in {folder} (cached for later)")

        def make(item: tuple[int, Path]) -> None:
            index, path = item
            subprocess.run([sys.executable, "-c", MAKE_JPEG, str(path), str(index), str(width),
                            str(height), str(PHOTO_QUALITY)], check=True, env=python_env())

        with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
            list(pool.map(make, missing))
    return paths


def warm_page_cache(paths: Sequence[Path]) -> None:
    for path in paths:
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass


def vips_args(out: Path, size: int, files: Sequence[Path]) -> list[str]:
    return ["vipsthumbnail", "--size", str(size), "-o", f"{out}/%s.jpg[Q=85,strip]",
            *map(str, files)]


def ours_args(out: Path, parts: str, durable: bool, files: Sequence[Path]) -> list[str]:
    return [sys.executable, "-c", RENDER, str(out), parts, "durable" if durable else "no-fsync",
            *map(str, files)]


@dataclass
class Worker:
    """One run of our worker over some files."""
    run: Run
    times: list[float]
    hwm_mb: float


def run_ours(out: Path, parts: str, files: Sequence[Path], *, durable: bool = False) -> Worker:
    run = run_timed(ours_args(out, parts, durable, files), env=python_env())
    result = json.loads(run.stdout.splitlines()[-1])
    return Worker(run, result["times"], result["hwm_kb"] * 1024 / MB)


@dataclass
class PhotoFigures:
    files: int
    mean_mb: float
    per_file_vips: list[float] = field(default_factory=list)  # median s per file
    per_file_ours: list[float] = field(default_factory=list)
    per_file_durable: list[float] = field(default_factory=list)
    per_file_ours_hwm: float = 0.0
    batch_vips: list[float] = field(default_factory=list)  # s per image, per run
    batch_ours: list[float] = field(default_factory=list)
    batch_durable: list[float] = field(default_factory=list)
    batch_vips_cpu: list[float] = field(default_factory=list)  # CPU s per image, per run
    batch_ours_cpu: list[float] = field(default_factory=list)
    in_process_thumb: list[float] = field(default_factory=list)  # s per image, all runs
    thumb_hwm: float = 0.0
    thumb_wait4: float = 0.0
    both_per_image: list[float] = field(default_factory=list)
    both_hwm: float = 0.0
    both_wait4: float = 0.0
    vips_preview: list[float] = field(default_factory=list)
    vips_rss: float = 0.0
    floor: float = 0.0


def photo_measure(paths: list[Path], repeat: int, scratch: Path) -> PhotoFigures:
    sizes = [p.stat().st_size for p in paths]
    figures = PhotoFigures(len(paths), statistics.mean(sizes) / MB)
    vips_out, ours_out = scratch / "vips", scratch / "ours"
    for folder in (vips_out, ours_out):
        folder.mkdir(parents=True, exist_ok=True)
    warm_page_cache(paths)
    log("warm-up runs (untimed)")
    run_timed(vips_args(vips_out, THUMB, paths))
    run_ours(ours_out, "thumb", paths)

    # (a) one process per image, both sides.
    log(f"(a) one process per image: {len(paths)} files x {repeat} runs x 3 sides")
    vips_runs: dict[Path, list[float]] = {p: [] for p in paths}
    ours_runs: dict[Path, list[float]] = {p: [] for p in paths}
    durable_runs: dict[Path, list[float]] = {p: [] for p in paths}
    for _ in range(repeat):
        for path in paths:
            vips = run_timed(vips_args(vips_out, THUMB, [path]))
            ours = run_ours(ours_out, "thumb", [path])
            durable = run_ours(ours_out, "thumb", [path], durable=True)
            vips_runs[path].append(vips.seconds)
            ours_runs[path].append(ours.run.seconds)
            durable_runs[path].append(durable.run.seconds)
            figures.vips_rss = max(figures.vips_rss, vips.wait4_rss_mb)
            figures.per_file_ours_hwm = max(figures.per_file_ours_hwm, ours.hwm_mb)
    figures.per_file_vips = [statistics.median(vips_runs[p]) for p in paths]
    figures.per_file_ours = [statistics.median(ours_runs[p]) for p in paths]
    figures.per_file_durable = [statistics.median(durable_runs[p]) for p in paths]

    # (b) one process for all images, both sides; and thumb + preview for information.
    log(f"(b) one process for all {len(paths)} files: {repeat} runs x 2 sides, + previews")
    for _ in range(repeat):
        vips = run_timed(vips_args(vips_out, THUMB, paths))
        ours = run_ours(ours_out, "thumb", paths)
        durable = run_ours(ours_out, "thumb", paths, durable=True)
        figures.batch_vips.append(vips.seconds / len(paths))
        figures.batch_ours.append(ours.run.seconds / len(paths))
        figures.batch_durable.append(durable.run.seconds / len(paths))
        figures.batch_vips_cpu.append(vips.cpu_seconds / len(paths))
        figures.batch_ours_cpu.append(ours.run.cpu_seconds / len(paths))
        figures.in_process_thumb.extend(ours.times)
        figures.vips_rss = max(figures.vips_rss, vips.wait4_rss_mb)
        figures.thumb_hwm = max(figures.thumb_hwm, ours.hwm_mb)
        figures.thumb_wait4 = max(figures.thumb_wait4, ours.run.wait4_rss_mb)
        both = run_ours(ours_out, "preview,thumb", paths, durable=True)
        figures.both_per_image.extend(both.times)
        figures.both_hwm = max(figures.both_hwm, both.hwm_mb)
        figures.both_wait4 = max(figures.both_wait4, both.run.wait4_rss_mb)
        preview = run_timed(vips_args(vips_out, PREVIEW, paths))
        figures.vips_preview.append(preview.seconds / len(paths))
    figures.floor = own_hwm_mb()
    return figures


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def row(label: str, value: str, target: str = "", result: str = "") -> str:
    return f"  {label:<54} {value:>12}  {target:>8}  {result}"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def photo_lines(f: PhotoFigures, repeat: int) -> tuple[list[str], dict[str, Any]]:
    med = statistics.median
    per_file_ratio = med(f.per_file_ours) / med(f.per_file_vips)
    batch_ratio = med(f.batch_ours) / med(f.batch_vips)
    per_file_durable_ratio = med(f.per_file_durable) / med(f.per_file_vips)
    batch_durable_ratio = med(f.batch_durable) / med(f.batch_vips)
    cpu_ratio = med(f.batch_ours_cpu) / med(f.batch_vips_cpu)
    width, height = PHOTO_SIZE
    lines = [
        f"Photo: grid thumbnails ({THUMB} px, Q85) of {f.files} JPEGs {width}x{height} "
        f"q{PHOTO_QUALITY} ({f.mean_mb:.1f} MB mean); medians of {repeat} runs",
        row("measure", "value", "target", "result"),
        "  (a) one process per image, start-up included on both sides (a worker does not "
        "start per image)",
        row("vipsthumbnail, ms/image", ms(med(f.per_file_vips))),
        row("python -c render_photo (thumb), ms/image", ms(med(f.per_file_ours))),
        row("ours / vipsthumbnail", f"{per_file_ratio:.2f}", f"<= {TARGET_RATIO:.1f}",
            verdict(per_file_ratio <= TARGET_RATIO)),
        row("(info) same, durable (fsync file + folder), ms/image", ms(med(f.per_file_durable))),
        row("(info) durable / vipsthumbnail", f"{per_file_durable_ratio:.2f}"),
        "  (b) one process for all images, wall time / images (how a worker runs)",
        row("vipsthumbnail FILE..., ms/image", ms(med(f.batch_vips))),
        row("one Python worker, render_photo per file, ms/image", ms(med(f.batch_ours))),
        row("ours / vipsthumbnail", f"{batch_ratio:.2f}", f"<= {TARGET_RATIO:.1f}",
            verdict(batch_ratio <= TARGET_RATIO)),
        row("(info) same, durable (fsync file + folder), ms/image", ms(med(f.batch_durable))),
        row("(info) durable / vipsthumbnail", f"{batch_durable_ratio:.2f}"),
        row("(info) render_photo alone, in-process median, ms", ms(med(f.in_process_thumb))),
        row("(info) CPU (user+sys) per image, vips / ours, ms",
            f"{ms(med(f.batch_vips_cpu))} / {ms(med(f.batch_ours_cpu))}"),
        row("(info) CPU time ratio ours / vipsthumbnail", f"{cpu_ratio:.2f}"),
        "  (c) memory and previews",
        row("peak RSS per worker, thumbnails only (VmHWM, MB)", f"{f.thumb_hwm:.1f}",
            f"<= {TARGET_RSS_MB:.0f}", verdict(f.thumb_hwm <= TARGET_RSS_MB)),
        row("peak RSS per worker, thumbnail + preview (MB)", f"{f.both_hwm:.1f}",
            f"<= {TARGET_RSS_MB:.0f}", verdict(f.both_hwm <= TARGET_RSS_MB)),
        row("(info) same two, wait4 ru_maxrss (MB)", f"{f.thumb_wait4:.0f} / {f.both_wait4:.0f}"),
        row("(info) vipsthumbnail peak RSS, wait4 (MB)", f"{f.vips_rss:.1f}"),
        row("(info) launcher floor under wait4 figures (MB)", f"{f.floor:.1f}"),
        row("(info) thumb + preview (durable), in-process median, ms", ms(med(f.both_per_image))),
        row("(info) vipsthumbnail --size 1600 FILE..., ms/image", ms(med(f.vips_preview))),
    ]
    results = {
        "files": f.files, "mean_mb": f.mean_mb, "per_file_vips_s": f.per_file_vips,
        "per_file_ours_s": f.per_file_ours, "per_file_ratio": per_file_ratio,
        "per_file_durable_s": f.per_file_durable, "batch_durable_s": f.batch_durable,
        "batch_vips_cpu_s": f.batch_vips_cpu, "batch_ours_cpu_s": f.batch_ours_cpu,
        "batch_vips_s": f.batch_vips, "batch_ours_s": f.batch_ours, "batch_ratio": batch_ratio,
        "in_process_thumb_s": f.in_process_thumb, "thumb_hwm_mb": f.thumb_hwm,
        "both_per_image_s": f.both_per_image, "both_hwm_mb": f.both_hwm,
        "vips_rss_mb": f.vips_rss, "vips_preview_s": f.vips_preview,
    }
    return lines, results


def photo_part(opts: argparse.Namespace, workdir: Path) -> tuple[list[str], dict[str, Any]]:
    if shutil.which("vipsthumbnail") is None:
        raise BenchError("vipsthumbnail not found: apt-get install libvips-tools "
                         "(./scripts/setup installs it)")
    paths = make_photos(workdir / "photos", opts.count)
    scratch = workdir / "runs"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        figures = photo_measure(paths, opts.repeat, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return photo_lines(figures, opts.repeat)


# -- video proxy (tests/benchmarks/_bench_video.py) -------------------------------------------


def video_part(opts: argparse.Namespace, workdir: Path) -> tuple[list[str], dict[str, Any]]:
    sys.path.insert(0, str(Path(__file__).parent))
    from _bench_video import bench_video_proxy  # prints its own table

    ok = bench_video_proxy(workdir, runs=max(3, opts.repeat))
    return [], {"pass": ok}


# -- card to thumbnails --------------------------------------------------------------------------


def unique_copies(bases: Sequence[Path], folder: Path, count: int) -> list[Path]:
    """`count` distinct JPEGs from a few real ones: a COM segment after SOI makes each file's
    bytes (and SHA-256) its own while the image stays the same to decode."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        path = folder / f"IMG_{i:04d}.JPG"
        if not path.exists():
            data = bases[i % len(bases)].read_bytes()
            note = f"acopio bench {i}".encode()
            path.write_bytes(data[:2] + b"\xff\xfe" + (len(note) + 2).to_bytes(2, "big")
                             + note + data[2:])
        out.append(path)
    return out


def card_part(opts: argparse.Namespace, workdir: Path) -> tuple[list[str], dict[str, Any]]:
    """From "card imported" to "every grid thumbnail ready", with one worker per CPU."""
    count = opts.card_photos
    bases = make_photos(workdir / "photos", min(opts.count, 10))
    card = workdir / f"card-{count}"
    unique_copies(bases, card / "DCIM" / "100CANON", count)
    data = workdir / "runs" / "card-data"
    shutil.rmtree(data, ignore_errors=True)
    acopio = [sys.executable, "-m", "appliance", "--data-dir", str(data)]
    env = {k: v for k, v in python_env().items() if not k.startswith("ACOPIO_")}
    started = time.perf_counter()
    subprocess.run([*acopio, "ingest", str(card)], check=True, env=env, cwd=REPO,
                   stdout=subprocess.DEVNULL)
    imported = time.perf_counter() - started
    workers = [subprocess.Popen([*acopio, "worker"], env={**env, "ACOPIO_WORKER_POLL_S": "0.2"},
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(os.cpu_count() or 1)]
    try:
        while True:
            counts = json.loads(subprocess.run([*acopio, "jobs", "--json"], check=True, env=env,
                                               cwd=REPO, capture_output=True).stdout)["counts"]
            thumbs = counts.get("thumb", {})
            if thumbs.get("done", 0) + thumbs.get("parked", 0) >= count:
                break
            time.sleep(0.5)
        ready = time.perf_counter() - started - imported
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=60)
        shutil.rmtree(data, ignore_errors=True)
    mp = PHOTO_SIZE[0] * PHOTO_SIZE[1] / 1e6
    lines = [f"3. Card to thumbnails: {count} photos of {mp:.0f} MP, `acopio ingest`, then "
             f"{len(workers)} workers (one per CPU)",
             row("import (s)", f"{imported:.1f}"),
             row("then every grid thumbnail ready (s)", f"{ready:.1f}"),
             row("(info) per photo, thumbnails (ms)", f"{ready / count * 1000:.0f}"),
             row("card imported -> all thumbnails (s)", f"{imported + ready:.1f}", "report")]
    return lines, {"photos": count, "import_s": imported, "thumbs_ready_s": ready,
                   "workers": len(workers)}


# -- main ------------------------------------------------------------------------------------

# Each part: (options, work folder) -> (report lines, figures for the results file).
PARTS: dict[str, Callable[[argparse.Namespace, Path], tuple[list[str], dict[str, Any]]]] = {
    "photo": photo_part,
    "video": video_part,
    "card": card_part,
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts to run (default all: {', '.join(PARTS)})")
    parser.add_argument("--count", type=int, default=20, help="photos (default 20)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (default 5)")
    parser.add_argument("--card-photos", type=int, default=500,
                        help="photos on the card of part 3 (default 500)")
    opts = parser.parse_args(argv)
    opts.argv = list(argv)
    opts.parts = [p for p in opts.parts.split(",") if p]
    unknown = [p for p in opts.parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {unknown}; known: {list(PARTS)}")
    if opts.count < 1 or opts.repeat < 1:
        parser.error("--count and --repeat must be at least 1")
    return opts


def host_line() -> str:
    return (f"host: {platform.node()}, {os.cpu_count()} CPUs {platform.machine()}, Linux "
            f"{platform.release()}, Python {platform.python_version()}")


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    workdir = Path(os.environ.get("BENCH_OUT", REPO / "bench-results")) / "derive"
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stamp = datetime.now(UTC)
    load_before = os.getloadavg()[0]
    lines = ["", f"Acopio derive benchmark, {stamp:%Y-%m-%d %H:%M UTC}", host_line(),
             "page cache: warm (inputs read before timing; an untimed warm-up run per side); "
             "MB = 10^6 bytes", ""]
    results: dict[str, Any] = {"argv": opts.argv}
    try:
        for part in opts.parts:
            part_lines, results[part] = PARTS[part](opts, workdir)
            lines += [*part_lines, ""]
    except BenchError as exc:
        log(f"error: {exc}")
        return 2
    saved = workdir / f"results-{stamp:%Y%m%dT%H%M%SZ}.json"
    saved.write_text(json.dumps(results, indent=1))
    lines += [f"load average (1 min) before / after: {load_before:.1f} / "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other work on the machine "
              "makes the wall-clock ratios noisy; the CPU time ratio is steadier)",
              f"benchmark wall time: {time.perf_counter() - started:.0f} s (inputs are cached)",
              " ".join(["reproduce: ./scripts/bench derive", *map(shlex.quote, opts.argv)]),
              f"figures saved to {saved}"]
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
