"""Benchmark the verified ingest against `rsync -a`, and its cost against the archive's size.

Why: design decision 4 makes every import hash while reading, fsync, rename, fsync the folder
and read the copy back past the page cache before cataloguing it. That must stay affordable on
a Raspberry Pi-class box, and must not slow down as the archive grows (decision 3: no state
file grows with the whole archive). The issue sets targets; this script measures them the way
the appliance really runs (`acopio ingest` as a child process, timed from outside) and prints
the figures with PASS/FAIL. It is not part of the test suite: `./scripts/bench ingest`.

1. Throughput. A card tree of at least 2 GB (real JPEGs of 6-12 MB and a few ~400 MB MP4
   videos) is ingested and, in the same run, copied with `rsync -a CARD/ DEST/`.
   Targets: ingest time <= 1.6 x rsync time; ingest peak RSS <= 120 MB (ru_maxrss from
   `os.wait4`: the largest of the ingest process and the helpers it waited for, ffprobe and
   exiftool). rsync leaves its writes in the page cache; the `sync` after it is timed apart
   and shown for information.
2. Scaling. The same 1,000 new small JPEGs go into an empty data folder and into one that
   already holds 100,000 items. Target: time into the seeded archive <= 1.2 x into the empty.
3. Flushes (for information; no target). On a Pi's SD card every fsync is a journal commit
   of several milliseconds, which this machine's disk does not show. The small card's import
   is counted under strace (fsync, fdatasync and syncfs calls per imported file), then timed
   with every flush delayed by `--flush-ms` (10 ms by default) by a small LD_PRELOAD library
   (`slowflush.c`, built here with the C compiler), against `rsync -a` and the `sync` after
   it under the same delay.

Fairness: when the kernel lets us (root), the page cache is dropped (`sync; echo 3 >
/proc/sys/vm/drop_caches`) before every measured run, so every run reads its source cold;
otherwise the source tree is read into the cache before every run, so every run reads it
warm. The output names the mode. The runs of the two sides alternate; medians are reported.

Inputs are built once and cached in the work folder (default `$BENCH_OUT/ingest`, that is
`bench-results/ingest`, git-ignored); `--rebuild` builds them again. Measured data folders
and rsync destinations are deleted after each run.

* Photos are real JPEGs made by Pillow (noise, 4000x3000 at quality 95 for the big card,
  400x300 to 720x540 at quality 90 for the small one) with EXIF make, model,
  DateTimeOriginal and OffsetTimeOriginal. A handful are encoded; the others are copies whose
  COM segment counter and DateTimeOriginal text are rewritten in place (same length), so each
  file stays a valid JPEG with its own capture time and its own SHA-256 (dedup would skip
  equal content).
* Videos: one real 5 s 1080p30 MPEG-4 + AAC clip from ffmpeg's testsrc2 with noise
  (about 75 Mbit/s), then each video is that clip looped with `-stream_loop N -c copy` and
  given its own creation_time: real, distinct MP4 files of the wanted size, made in seconds.
* The seeded archive is written through the project's own code: `Agenda.add` (one activity
  per folder), `records.make_record` and `Catalog.upsert` (the catalog shard and the sha256
  index entries), and `KeyIndex.put` for the source index (`pipeline.source_key`), in folders
  of 500 items, several folders at once (one process per CPU). Each item's archive file is
  written too, as a tiny stand-in whose size and SHA-256 are the ones its record holds, so
  the seed is a consistent data folder. Every measured run starts from a `cp -a` of it.

Exit status: 0 when the benchmark ran, whatever the PASS/FAIL words say; 2 when it could not
(a tool missing, an ingest that failed, not enough disk).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import pstats
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from _bench_common import (
    Launched,
    PageCache,
    file_sizes,
    launch,
    load_cached,
    log,
    pick,
    remove_tree,
    save_manifest,
    start_fresh,
    stopwatch,
)
from PIL import Image

from appliance import config as config_mod
from appliance.agenda import Activity, slugify
from appliance.datadir import DataDir
from ingest import filing, metadata, records
from ingest.pipeline import Importer, source_key
from ingest.walk import SourceFile

REPO = Path(__file__).resolve().parents[2]
INPUT_FORMAT = 1  # bump when the way inputs are built changes: cached inputs are rebuilt
TIMEZONE = "America/Mexico_City"
ZONE = ZoneInfo(TIMEZONE)
OFFSET = "-06:00"  # America/Mexico_City has had no summer time since 2022
MB = 1_000_000

PARTS = ("throughput", "scaling", "flushes")
FLUSH_CALLS = ("fsync", "fdatasync", "syncfs")
TARGET_RATIO = 1.6
TARGET_RSS_MB = 120.0
TARGET_SCALING = 1.2

VIDEO_SHARE = 0.6  # of the big card's bytes
ITEMS_PER_FOLDER = 500
BIG_PHOTO = (4000, 3000, 95)  # width, height, JPEG quality
BIG_NOISE = (0.04, 0.10, 0.20, 0.35, 0.55, 0.85)  # grain share of the templates: ~6-12 MB
SMALL_PHOTOS = ((400, 300, 0.12), (480, 360, 0.12), (560, 420, 0.12), (640, 480, 0.10),
                (640, 480, 0.14), (720, 540, 0.10))  # ~60-180 KB at quality 90
SMALL_QUALITY = 90
BIG_CARD_START = datetime(2026, 3, 14, 10, 0, tzinfo=ZONE)
SMALL_CARD_START = datetime(2026, 3, 15, 9, 0, tzinfo=ZONE)
SEED_FIRST_DAY = datetime(2016, 1, 4, 10, 0, tzinfo=ZONE)
SEED_SPAN_DAYS = 3650  # seeded activities spread over ten years before the cards' days
SEED_TITLES = ("Sesión de Cabildo", "Festival Cultural", "Entrega de Obra", "Feria del Libro",
               "Rueda de Prensa", "Jornada de Salud", "Informe de Gobierno", "Torneo Deportivo")

COM_PREFIX = b"acopio-bench variant "
COM_DIGITS = 12
EXIF_TIME = "%Y:%m:%d %H:%M:%S"


class BenchError(Exception):
    """The benchmark cannot run or a measured run did not do the work; nothing to report."""


# -- options ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    size_gb: float
    files: int
    seed_items: int
    repeat: int
    workdir: Path
    rebuild: bool
    profile: bool
    flush_ms: float
    parts: tuple[str, ...]
    argv: tuple[str, ...]


def parse_args(argv: Sequence[str]) -> Options:
    default_out = Path(os.environ.get("BENCH_OUT") or REPO / "bench-results") / "ingest"
    p = argparse.ArgumentParser(
        prog="scripts/bench ingest",
        description="Verified ingest vs rsync -a, and ingest cost vs archive size.")
    p.add_argument("--size-gb", type=float, help="card tree size in GB (default 2.0)")
    p.add_argument("--files", type=int, help="new files for the scaling test (default 1000)")
    p.add_argument("--seed-items", type=int,
                   help="items already in the seeded archive (default 100000)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 0.2 GB tree, 100 files, 5,000 seeded items, 2 repeats")
    p.add_argument("--repeat", type=int, help="measured runs of each side (default 3)")
    p.add_argument("--workdir", type=Path, default=default_out,
                   help=f"cached inputs and scratch space (default {default_out})")
    p.add_argument("--rebuild", action="store_true", help="build the cached inputs again")
    p.add_argument("--flush-ms", type=float, default=10.0,
                   help="delay added to every flush in part 3, ms (default 10)")
    p.add_argument("--only", help=f"comma-separated parts to run: {', '.join(PARTS)}")
    p.add_argument("--profile", action="store_true",
                   help="also run one ingest of the card under cProfile and list hot spots")
    args = p.parse_args(argv)
    quick = args.quick
    opts = Options(
        size_gb=pick(args.size_gb, 0.2 if quick else 2.0),
        files=pick(args.files, 100 if quick else 1000),
        seed_items=pick(args.seed_items, 5000 if quick else 100_000),
        repeat=pick(args.repeat, 2 if quick else 3),
        workdir=args.workdir.absolute(),
        rebuild=args.rebuild,
        profile=args.profile,
        flush_ms=args.flush_ms,
        parts=tuple(x.strip() for x in (args.only or ",".join(PARTS)).split(",") if x.strip()),
        argv=tuple(argv),
    )
    if unknown := set(opts.parts) - set(PARTS):
        p.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    if opts.flush_ms < 0:
        p.error("--flush-ms cannot be negative")
    if opts.size_gb <= 0 or opts.files < 1 or opts.seed_items < 1 or opts.repeat < 1:
        p.error("--size-gb, --files, --seed-items and --repeat must be positive")
    return opts


# -- small helpers ---------------------------------------------------------------------------


def require_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise BenchError(f"missing tools: {', '.join(missing)} (run ./scripts/setup as root)")


def write_file(path: Path, data: bytes, when: datetime) -> None:
    """Write a card file and give it the capture time as mtime, as a camera does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    ns = int(when.timestamp()) * 1_000_000_000
    os.utime(path, ns=(ns, ns))


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# -- cached inputs ---------------------------------------------------------------------------


@dataclass
class Card:
    """A card tree on disk and what is on it."""

    root: Path
    files: int
    total_bytes: int
    description: str


def card_from(root: Path, manifest: dict[str, Any]) -> Card:
    sizes = manifest["sizes"]
    return Card(root, len(sizes), sum(sizes.values()), manifest["info"]["description"])


# -- JPEGs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class JpegTemplate:
    """An encoded JPEG and where its variant counter and capture time sit in the bytes."""

    data: bytes
    counter_at: int
    time_at: int


def noise_image(width: int, height: int, grain: float, rng: random.Random) -> Image.Image:
    """Coarse colour blotches plus fine grain: compresses like a busy real photo."""
    coarse = Image.frombytes("RGB", (width // 8, height // 8),
                             rng.randbytes((width // 8) * (height // 8) * 3))
    coarse = coarse.resize((width, height), Image.Resampling.BILINEAR)
    fine = Image.frombytes("L", (width, height), rng.randbytes(width * height)).convert("RGB")
    return Image.blend(coarse, fine, grain)


def jpeg_template(width: int, height: int, grain: float, quality: int,
                  rng: random.Random) -> JpegTemplate:
    exif = Image.Exif()
    exif[271] = "Canon"
    exif[272] = "Canon EOS R6"
    placeholder_time = "1999:01:01 00:00:00"
    sub = exif.get_ifd(0x8769)
    sub[36867] = placeholder_time  # DateTimeOriginal
    sub[36881] = OFFSET  # OffsetTimeOriginal
    buf = io.BytesIO()
    noise_image(width, height, grain, rng).save(
        buf, "JPEG", quality=quality, exif=exif, comment=COM_PREFIX + b"0" * COM_DIGITS)
    data = buf.getvalue()
    return JpegTemplate(data, _only_offset(data, COM_PREFIX) + len(COM_PREFIX),
                        _only_offset(data, placeholder_time.encode()))


def _only_offset(data: bytes, needle: bytes) -> int:
    if data.count(needle) != 1:
        raise BenchError(f"JPEG template: {needle!r} is not found exactly once")
    return data.index(needle)


def jpeg_variant(template: JpegTemplate, counter: int, when: datetime) -> bytes:
    """The template with its own counter (COM) and DateTimeOriginal: new bytes, same size."""
    out = bytearray(template.data)
    out[template.counter_at:template.counter_at + COM_DIGITS] = b"%0*d" % (COM_DIGITS, counter)
    stamp = when.strftime(EXIF_TIME).encode()
    out[template.time_at:template.time_at + len(stamp)] = stamp
    return bytes(out)


def camera_name(folder: int, number: int) -> str:
    return f"DCIM/{100 + folder}CANON/IMG_{number:04d}.JPG"


def write_photos(root: Path, templates: Sequence[JpegTemplate], count: int, start: datetime,
                 step_s: int, first: int = 0) -> int:
    """Write `count` photo variants, cycling through the templates; returns bytes written."""
    written = 0
    for i in range(first, first + count):
        when = start + timedelta(seconds=step_s * i)
        data = jpeg_variant(templates[i % len(templates)], i, when)
        write_file(root / camera_name(i // 9999, i % 9999 + 1), data, when)
        written += len(data)
    return written


# -- videos ----------------------------------------------------------------------------------


def ffmpeg(*args: str) -> None:
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise BenchError(f"ffmpeg failed: {result.stderr.strip()[-500:]}")


def make_clip(path: Path) -> None:
    """A real 5 s 1080p30 MPEG-4 + AAC clip, busy enough for about 75 Mbit/s."""
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
           "-t", "5", "-vf", "noise=alls=16:allf=t+u", "-c:v", "mpeg4", "-q:v", "4",
           "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-f", "mp4", f"file:{path}")


def make_video(clip: Path, path: Path, target_bytes: int, when: datetime) -> None:
    """The clip looped (stream copy) to about `target_bytes`, with its own creation_time."""
    loops = max(0, round(target_bytes / clip.stat().st_size) - 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    ffmpeg("-stream_loop", str(loops), "-i", f"file:{clip}", "-map", "0", "-c", "copy",
           "-metadata", f"creation_time={stamp}", "-f", "mp4", f"file:{path}")
    ns = int(when.timestamp()) * 1_000_000_000
    os.utime(path, ns=(ns, ns))


# -- the big card ----------------------------------------------------------------------------


def big_card_plan(size_gb: float) -> list[int]:
    """The sizes of the card's videos: 3 (2 on a small card) of unequal length."""
    spread = (0.85, 1.0, 1.15) if size_gb >= 1.0 else (0.9, 1.1)
    return [int(size_gb * 1e9 * VIDEO_SHARE * f / len(spread)) for f in spread]


def write_videos(root: Path, size_gb: float) -> int:
    """The card's videos; returns their bytes."""
    sizes = big_card_plan(size_gb)
    clip = root.parent / f"{root.name}-clip.mp4"
    log(f"encoding the video clip, then {len(sizes)} videos of "
        f"{', '.join(f'{v / MB:.0f}' for v in sizes)} MB")
    make_clip(clip)
    total = 0
    for v, video_bytes in enumerate(sizes):
        when = BIG_CARD_START + timedelta(minutes=20 * v + 3)
        path = root / f"DCIM/100CANON/MVI_{v + 1:04d}.MP4"
        make_video(clip, path, video_bytes, when)
        total += path.stat().st_size
    clip.unlink()
    return total


def build_big_card(root: Path, size_gb: float) -> None:
    """Videos first, then photos until the tree holds at least `size_gb`."""
    start_fresh(root)
    photo_target = int(size_gb * 1e9) - write_videos(root, size_gb)
    width, height, quality = BIG_PHOTO
    log(f"encoding {len(BIG_NOISE)} {width}x{height} JPEG templates")
    rng = random.Random(20260314)
    templates = [jpeg_template(width, height, g, quality, rng) for g in BIG_NOISE]
    average = sum(len(t.data) for t in templates) / len(templates)
    count = max(len(templates), math.ceil(photo_target / average))
    log(f"writing {count} photos")
    write_photos(root, templates, count, BIG_CARD_START, step_s=7)


def describe_card(root: Path) -> str:
    photos = [p.stat().st_size for p in root.rglob("*.JPG")]
    videos = [p.stat().st_size for p in root.rglob("*.MP4")]
    text = f"{len(photos)} JPEG photos ({min(photos) / MB:.1f}-{max(photos) / MB:.1f} MB)"
    if videos:
        text += f", {len(videos)} MP4 videos ({min(videos) / MB:.0f}-{max(videos) / MB:.0f} MB)"
    return text


def big_card(opts: Options) -> Card:
    root = opts.workdir / "inputs" / f"card-{opts.size_gb:g}gb"
    params = {"size_gb": opts.size_gb, "grain": list(BIG_NOISE), "videos": "spread"}
    manifest = load_cached(root, params, opts.rebuild, fmt=INPUT_FORMAT)
    if manifest is None:
        require_tools("ffmpeg")
        log(f"building the {opts.size_gb:g} GB card tree in {root}")
        with stopwatch() as watch:
            build_big_card(root, opts.size_gb)
        info = {"description": describe_card(root), "build_seconds": round(watch.seconds, 1)}
        manifest = save_manifest(root, params, info, file_sizes(root), fmt=INPUT_FORMAT)
        log(f"card tree built in {watch.seconds:.1f} s")
    return card_from(root, manifest)


# -- the small card (scaling test) -----------------------------------------------------------


def small_card(opts: Options) -> Card:
    root = opts.workdir / "inputs" / f"small-card-{opts.files}"
    params = {"files": opts.files}
    manifest = load_cached(root, params, opts.rebuild, fmt=INPUT_FORMAT)
    if manifest is None:
        log(f"building a card of {opts.files} small JPEGs in {root}")
        with stopwatch() as watch:
            start_fresh(root)
            rng = random.Random(20260315)
            templates = [jpeg_template(w, h, g, SMALL_QUALITY, rng) for w, h, g in SMALL_PHOTOS]
            write_photos(root, templates, opts.files, SMALL_CARD_START, step_s=3)
        info = {"description": describe_card(root), "build_seconds": round(watch.seconds, 1)}
        manifest = save_manifest(root, params, info, file_sizes(root), fmt=INPUT_FORMAT)
    return card_from(root, manifest)


# -- the seeded archive ----------------------------------------------------------------------


@dataclass(frozen=True)
class SeedFolder:
    index: int
    title: str
    slug: str
    start: datetime
    count: int

    @property
    def key(self) -> str:
        return filing.folder_key(self.start, self.slug)


def seed_plan(items: int) -> list[SeedFolder]:
    """Folders of ITEMS_PER_FOLDER items, one agenda activity each, over ten years."""
    folders = math.ceil(items / ITEMS_PER_FOLDER)
    step = SEED_SPAN_DAYS / folders
    plan = []
    for i in range(folders):
        title = f"{SEED_TITLES[i % len(SEED_TITLES)]} {i + 1}"
        start = SEED_FIRST_DAY + timedelta(days=int(i * step))
        count = min(ITEMS_PER_FOLDER, items - i * ITEMS_PER_FOLDER)
        plan.append(SeedFolder(i, title, slugify(title), start, count))
    return plan


def seed_record(data: DataDir, folder: SeedFolder, number: int) -> tuple[dict[str, Any], bytes]:
    """One realistic catalog record and the stand-in bytes of its archive file."""
    name = f"IMG_{number:04d}.JPG"
    content = f"acopio bench seed {folder.key} {name}\n".encode()
    captured = folder.start + timedelta(seconds=10 * number)
    imported = (folder.start + timedelta(hours=6)).astimezone(UTC)
    info = metadata.MediaInfo(camera={"make": "Canon", "model": "Canon EOS R6"},
                              orientation=1, width=6000, height=4000)
    record = records.make_record(
        sha256=sha256(content).hexdigest(),
        size=len(content),
        kind="photo",
        original_name=name,
        source_path=f"DCIM/100CANON/{name}",
        archive_path=data.relative(data.archive / folder.key / name),
        folder=folder.key,
        activity=folder.slug,
        filed_by="agenda",
        description=records.Description(info, captured, "exif", []),
        imported_at=imported,
        import_id=f"{imported:%Y%m%dT%H%M%SZ}-{folder.index:06x}",
    )
    return record, content


def seed_importer(root: Path, config: Path) -> Importer:
    """The pipeline's own view of a data folder: its catalog, source index and agenda."""
    importer = Importer(config_mod.load(config, environ={}, data_dir=root))
    importer.data.ensure()
    return importer


def seed_folder(root: Path, config: Path, folder: SeedFolder) -> None:
    """Write one seeded folder: archive stand-ins, catalog shard, sha256 and source index."""
    importer = seed_importer(root, config)
    data = importer.data
    dest = data.archive / folder.key
    dest.mkdir(parents=True, exist_ok=True)
    batch = []
    for number in range(1, folder.count + 1):
        record, content = seed_record(data, folder, number)
        when = datetime.fromisoformat(record["captured_at"])
        write_file(dest / record["original_name"], content, when)
        batch.append(record)
        card_file = SourceFile(record["source_path"].encode(), record["size"],
                               int(when.timestamp()) * 1_000_000_000, "photo")
        importer.sources.put(source_key(card_file), {"sha256": record["sha256"]})
    importer.catalog.upsert(folder.key, batch)


def build_seed(root: Path, config: Path, items: int) -> None:
    start_fresh(root)
    plan = seed_plan(items)
    agenda = seed_importer(root, config).agenda
    for folder in plan:
        agenda.add(Activity(folder.slug, folder.title, folder.start,
                            folder.start + timedelta(hours=4), area="Cultura", place="Centro"))
    workers = os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=workers) as pool:
        jobs = pool.map(seed_folder, [root] * len(plan), [config] * len(plan), plan,
                        chunksize=1)
        for done, _ in enumerate(jobs, start=1):
            if done % 20 == 0:
                log(f"seeded {done}/{len(plan)} folders")


def seeded_archive(opts: Options, config: Path) -> tuple[Path, dict[str, Any]]:
    root = opts.workdir / "inputs" / f"seed-{opts.seed_items}"
    params = {"seed_items": opts.seed_items, "per_folder": ITEMS_PER_FOLDER}
    manifest = load_cached(root, params, opts.rebuild, fmt=INPUT_FORMAT)
    if manifest is None:
        log(f"seeding an archive of {opts.seed_items} items in {root}")
        with stopwatch() as watch:
            build_seed(root, config, opts.seed_items)
        folders = len(seed_plan(opts.seed_items))
        manifest = save_manifest(root, params, {"folders": folders,
                                                "build_seconds": round(watch.seconds, 1)},
                                 fmt=INPUT_FORMAT)
        log(f"seeded in {watch.seconds:.1f} s")
    return root, manifest


# -- measured runs ---------------------------------------------------------------------------


@dataclass
class Measured(Launched):
    """The launcher's figures and the command's output."""

    stdout: str
    stderr: str


def run_measured(cmd: Sequence[str], env: dict[str, str] | None = None) -> Measured:
    """Run `cmd` through the launcher (_bench_common); time and rusage are `cmd`'s alone."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        run = launch(cmd, env=env, stdout=out, stderr=err)
        out.seek(0)
        err.seek(0)
        return Measured(run.seconds, run.maxrss_kb, run.cpu_seconds, run.returncode,
                        out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def rss_floor_mb() -> float:
    """The peak RSS the launcher reports for a command that uses almost none."""
    return run_measured(["true"]).rss_mb


class Runner:
    """The two commands being compared, run as a user would run them."""

    def __init__(self, config: Path) -> None:
        self.config = config
        # Settings come from our file only, never from the caller's ACOPIO_* variables.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ACOPIO_")}

    @staticmethod
    def acopio() -> list[str]:
        """The installed console script, else `python -m appliance`."""
        script = Path(sys.executable).parent / "acopio"
        return [str(script)] if script.exists() else [sys.executable, "-m", "appliance"]

    def ingest_args(self, card: Path, data_dir: Path) -> list[str]:
        return ["--config", str(self.config), "--data-dir", str(data_dir), "ingest", str(card),
                "--json"]

    def ingest_cmd(self, card: Path, data_dir: Path) -> list[str]:
        return [*self.acopio(), *self.ingest_args(card, data_dir)]

    def ingest(self, card: Card, data_dir: Path) -> Measured:
        run = run_measured(self.ingest_cmd(card.root, data_dir), self.env)
        check_ingest(run, card)
        return run

    def rsync(self, card: Card, dest: Path, env: dict[str, str] | None = None) -> Measured:
        run = run_measured(["rsync", "-a", f"{card.root}/", f"{dest}/"], env or self.env)
        if run.returncode != 0:
            raise BenchError(f"rsync failed ({run.returncode}): {run.stderr.strip()[-500:]}")
        return run


def check_ingest(run: Measured, card: Card) -> None:
    """A measured ingest counts only if it imported every file of the card."""
    try:
        summary = json.loads(run.stdout)
    except json.JSONDecodeError:
        summary = {}
    if run.returncode != 0 or summary.get("imported") != card.files:
        raise BenchError(
            f"ingest of {card.root} did not import all {card.files} files "
            f"(exit {run.returncode}): {run.stdout.strip()[-800:]} {run.stderr.strip()[-800:]}")


# -- 1. throughput against rsync -------------------------------------------------------------


@dataclass
class Throughput:
    card: Card
    rsync: list[Measured] = field(default_factory=list)
    rsync_sync_s: list[float] = field(default_factory=list)
    ingest: list[Measured] = field(default_factory=list)

    @property
    def rsync_s(self) -> float:
        return median([m.seconds for m in self.rsync])

    @property
    def rsync_durable_s(self) -> float:
        return median([m.seconds + s for m, s in zip(self.rsync, self.rsync_sync_s, strict=True)])

    @property
    def ingest_s(self) -> float:
        return median([m.seconds for m in self.ingest])

    @property
    def ratio(self) -> float:
        return self.ingest_s / self.rsync_s

    @property
    def peak_rss_mb(self) -> float:
        return max(m.rss_mb for m in self.ingest)


def alternating(repeat: int, sides: tuple[str, str]) -> Iterator[tuple[int, str]]:
    """Run i does the sides in order, run i+1 in reverse: drift hits both alike."""
    for i in range(repeat):
        for side in sides if i % 2 == 0 else sides[::-1]:
            yield i, side


def bench_throughput(card: Card, opts: Options, cache: PageCache, runner: Runner) -> Throughput:
    result = Throughput(card)
    scratch = opts.workdir / "runs"
    scratch.mkdir(parents=True, exist_ok=True)
    for i, side in alternating(opts.repeat, ("rsync", "ingest")):
        dest = scratch / f"{side}-{i}"
        remove_tree(dest)
        cache.prepare(card.root)
        try:
            if side == "rsync":
                result.rsync.append(runner.rsync(card, dest))
                with stopwatch() as watch:
                    os.sync()
                result.rsync_sync_s.append(watch.seconds)
            else:
                result.ingest.append(runner.ingest(card, dest))
        finally:
            remove_tree(dest)
        last = (result.rsync if side == "rsync" else result.ingest)[-1]
        log(f"card run {i + 1}/{opts.repeat} {side}: {last.seconds:.2f} s")
    return result


# -- 2. cost against archive size ------------------------------------------------------------


@dataclass
class Scaling:
    card: Card
    seed_items: int
    seed_folders: int
    empty: list[Measured] = field(default_factory=list)
    seeded: list[Measured] = field(default_factory=list)
    copy_s: list[float] = field(default_factory=list)

    @property
    def empty_s(self) -> float:
        return median([m.seconds for m in self.empty])

    @property
    def seeded_s(self) -> float:
        return median([m.seconds for m in self.seeded])

    @property
    def ratio(self) -> float:
        return self.seeded_s / self.empty_s


def copy_seed(seed: Path, dest: Path) -> float:
    with stopwatch() as watch:
        subprocess.run(["cp", "-a", "--reflink=auto", str(seed), str(dest)], check=True)
    return watch.seconds


def bench_scaling(card: Card, seed: Path, seed_info: dict[str, Any], opts: Options,
                  cache: PageCache, runner: Runner) -> Scaling:
    result = Scaling(card, opts.seed_items, seed_info["folders"])
    scratch = opts.workdir / "runs"
    scratch.mkdir(parents=True, exist_ok=True)
    for i, side in alternating(opts.repeat, ("empty", "seeded")):
        dest = scratch / f"{side}-{i}"
        remove_tree(dest)
        try:
            if side == "seeded":
                result.copy_s.append(copy_seed(seed, dest))
            cache.prepare(card.root)
            (result.seeded if side == "seeded" else result.empty).append(
                runner.ingest(card, dest))
        finally:
            remove_tree(dest)
        last = (result.seeded if side == "seeded" else result.empty)[-1]
        log(f"scaling run {i + 1}/{opts.repeat} {side}: {last.seconds:.2f} s")
    return result


# -- 3. flushes on a card-like disk ----------------------------------------------------------


@dataclass
class Flushes:
    card: Card
    flush_ms: float
    calls: dict[str, int]
    ingest: list[Measured] = field(default_factory=list)
    rsync: list[Measured] = field(default_factory=list)
    sync: list[Measured] = field(default_factory=list)

    @property
    def per_file(self) -> float:
        return sum(self.calls.values()) / self.card.files

    @property
    def ingest_s(self) -> float:
        return median([m.seconds for m in self.ingest])

    @property
    def rsync_durable_s(self) -> float:
        return median([r.seconds + s.seconds for r, s in zip(self.rsync, self.sync,
                                                             strict=True)])


def slow_flush_library(workdir: Path) -> Path:
    """slowflush.c built into the work folder (again when the source is newer)."""
    source = Path(__file__).with_name("slowflush.c")
    built = workdir / "slowflush.so"
    if built.exists() and built.stat().st_mtime >= source.stat().st_mtime:
        return built
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise BenchError("part 3 builds a small C library and needs a C compiler "
                         "(apt-get install gcc), or run the other parts: --only "
                         "throughput,scaling")
    done = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(built), str(source),
                           "-ldl"], capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"could not build {source.name}: {done.stderr.strip()[-500:]}")
    return built


def count_flushes(card: Card, dest: Path, runner: Runner) -> dict[str, int]:
    """The import's flush calls, all threads and helpers, from `strace -c`."""
    out = dest.with_name(dest.name + ".strace")
    cmd = ["strace", "-f", "-c", "-o", str(out), "-e", "trace=" + ",".join(FLUSH_CALLS),
           *runner.ingest_cmd(card.root, dest)]
    try:
        check_ingest(run_measured(cmd, runner.env), card)
        calls = dict.fromkeys(FLUSH_CALLS, 0)
        for line in out.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 5 and fields[-1] in calls:  # % time, s, us/call, calls, ...
                calls[fields[-1]] = int(fields[3])
        return calls
    finally:
        out.unlink(missing_ok=True)
        remove_tree(dest)


def bench_flushes(card: Card, opts: Options, cache: PageCache, runner: Runner) -> Flushes:
    library = slow_flush_library(opts.workdir)
    scratch = opts.workdir / "runs"
    scratch.mkdir(parents=True, exist_ok=True)
    result = Flushes(card, opts.flush_ms, count_flushes(card, scratch / "count", runner))
    log(f"flushes: {result.calls} for {card.files} files")
    slow = {**runner.env, "LD_PRELOAD": str(library), "SLOW_FLUSH_MS": f"{opts.flush_ms:g}"}
    for i, side in alternating(opts.repeat, ("rsync", "ingest")):
        dest = scratch / f"flush-{side}-{i}"
        remove_tree(dest)
        cache.prepare(card.root)
        try:
            if side == "rsync":
                result.rsync.append(runner.rsync(card, dest, slow))
                result.sync.append(run_measured(["sync"], slow))
                seconds = result.rsync[-1].seconds + result.sync[-1].seconds
            else:
                run = run_measured(runner.ingest_cmd(card.root, dest), slow)
                check_ingest(run, card)
                result.ingest.append(run)
                seconds = run.seconds
        finally:
            remove_tree(dest)
        log(f"flush run {i + 1}/{opts.repeat} {side}: {seconds:.2f} s")
    return result


# -- optional profile ------------------------------------------------------------------------


def profile_ingest(card: Card, opts: Options, cache: PageCache, runner: Runner) -> list[str]:
    """One more ingest of the card, under cProfile; the top functions by own time."""
    dest = opts.workdir / "runs" / "profile"
    prof = opts.workdir / "ingest.prof"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "appliance",
           *runner.ingest_args(card.root, dest)]
    remove_tree(dest)
    cache.prepare(card.root)
    try:
        run = run_measured(cmd, runner.env)
        check_ingest(run, card)
    finally:
        remove_tree(dest)
    stats = pstats.Stats(str(prof))
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:15]  # type: ignore[attr-defined]
    lines = [f"cProfile of one ingest ({run.seconds:.2f} s wall, {run.cpu_seconds:.2f} s CPU "
             f"incl. helpers; profile kept at {prof}):",
             f"  {'own s':>7} {'cum s':>7} {'calls':>8}  function"]
    for (filename, line, func), (_cc, calls, own, cum, _callers) in rows:
        where = func if filename == "~" else f"{Path(filename).name}:{line} {func}"
        lines.append(f"  {own:7.2f} {cum:7.2f} {calls:8d}  {where}")
    return lines


# -- report ----------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def row(label: str, value: str, target: str = "", result: str = "") -> str:
    return f"  {label:<46} {value:>14}  {target:>9}  {result}"


def runs_text(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def throughput_lines(t: Throughput) -> list[str]:
    mb = t.card.total_bytes / MB
    rss_ok = t.peak_rss_mb <= TARGET_RSS_MB
    return [
        f"1. Verified ingest vs rsync -a: card tree {mb:,.0f} MB, {t.card.files} files "
        f"({t.card.description})",
        row("measure", "value", "target", "result"),
        row("rsync -a CARD/ DEST/ (median s)", f"{t.rsync_s:.2f}"),
        row("rsync throughput (MB/s)", f"{mb / t.rsync_s:,.0f}"),
        row("acopio ingest --json (median s)", f"{t.ingest_s:.2f}"),
        row("ingest throughput (MB/s)", f"{mb / t.ingest_s:,.0f}"),
        row("ingest time / rsync time", f"{t.ratio:.2f}", f"<= {TARGET_RATIO:.1f}",
            verdict(t.ratio <= TARGET_RATIO)),
        row("ingest peak RSS (MB, max of runs)", f"{t.peak_rss_mb:.1f}",
            f"<= {TARGET_RSS_MB:.0f}", verdict(rss_ok)),
        row("(info) rsync + the sync after it (median s)", f"{t.rsync_durable_s:.2f}"),
        row("(info) ingest / (rsync + sync)", f"{t.ingest_s / t.rsync_durable_s:.2f}"),
        row("(info) ingest CPU s incl. helpers (median)",
            f"{median([m.cpu_seconds for m in t.ingest]):.2f}"),
        row("(info) rsync peak RSS (MB)", f"{max(m.rss_mb for m in t.rsync):.1f}"),
        f"  runs, s: rsync [{runs_text([m.seconds for m in t.rsync])}]  sync after rsync "
        f"[{runs_text(t.rsync_sync_s)}]  ingest [{runs_text([m.seconds for m in t.ingest])}]",
    ]


def scaling_lines(s: Scaling) -> list[str]:
    mb = s.card.total_bytes / MB
    return [
        f"2. Ingest cost vs archive size: {s.card.files} new files ({mb:,.1f} MB, "
        f"{s.card.description})",
        row("measure", "value", "target", "result"),
        row("into an empty data folder (median s)", f"{s.empty_s:.2f}"),
        row(f"into an archive of {s.seed_items:,} items (median s)", f"{s.seeded_s:.2f}"),
        row("seeded / empty", f"{s.ratio:.2f}", f"<= {TARGET_SCALING:.1f}",
            verdict(s.ratio <= TARGET_SCALING)),
        row("(info) files per second, empty / seeded",
            f"{s.card.files / s.empty_s:.0f} / {s.card.files / s.seeded_s:.0f}"),
        row("(info) ingest peak RSS (MB), empty / seeded",
            f"{max(m.rss_mb for m in s.empty):.0f} / {max(m.rss_mb for m in s.seeded):.0f}"),
        f"  runs, s: empty [{runs_text([m.seconds for m in s.empty])}]  seeded "
        f"[{runs_text([m.seconds for m in s.seeded])}]  (cp -a of the seed before each, not "
        f"timed: [{runs_text(s.copy_s)}])",
        f"  seed: {s.seed_items:,} items in {s.seed_folders} activity folders + agenda, "
        f"written with Catalog.upsert / KeyIndex.put; new files all go to one new folder",
    ]


def flush_lines(f: Flushes) -> list[str]:
    calls = " + ".join(f"{n:,} {name}" for name, n in f.calls.items() if n)
    waited = sum(f.calls.values()) * f.flush_ms / 1000
    return [
        f"3. Flushes on a card-like disk: {f.card.files} new files, every flush delayed "
        f"{f.flush_ms:g} ms (LD_PRELOAD slowflush.c)",
        row("measure", "value"),
        row("flushes per imported file", f"{f.per_file:.2f}"),
        row("acopio ingest --json, delayed (median s)", f"{f.ingest_s:.2f}"),
        row("rsync -a + sync, delayed (median s)", f"{f.rsync_durable_s:.2f}"),
        row("ingest / (rsync + sync)", f"{f.ingest_s / f.rsync_durable_s:.2f}"),
        row("(info) delay the flushes alone add (s)", f"{waited:.2f}"),
        f"  flushes counted under strace -f -c: {calls or 'none'}",
        f"  runs, s: ingest [{runs_text([m.seconds for m in f.ingest])}]  rsync "
        f"[{runs_text([m.seconds for m in f.rsync])}]  sync after it "
        f"[{runs_text([m.seconds for m in f.sync])}]",
    ]


def host_line(workdir: Path) -> str:
    fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", str(workdir)],
                        capture_output=True, text=True).stdout.strip() or "?"
    return (f"host: {platform.node()}, {os.cpu_count()} CPUs {platform.machine()}, Linux "
            f"{platform.release()}, Python {platform.python_version()}, work folder on {fs} "
            f"({workdir})")


def reproduce_line(opts: Options) -> str:
    return " ".join(["reproduce: ./scripts/bench ingest", *map(shlex.quote, opts.argv)])


def report(opts: Options, cache: PageCache, t: Throughput | None, s: Scaling | None,
           f: Flushes | None, profile: list[str], wall: float) -> None:
    floor = rss_floor_mb()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "",
        f"Acopio ingest benchmark, {stamp}",
        host_line(opts.workdir),
        f"page cache: {cache.mode}",
        f"runs: {opts.repeat} of each side, alternating; medians shown; MB = 10^6 bytes",
        f"RSS: wait4 ru_maxrss, the largest of the process and the helpers it waited for "
        f"(ffprobe, exiftool); floor of the measuring launcher {floor:.1f} MB",
        "",
        *([*throughput_lines(t), ""] if t else []),
        *([*scaling_lines(s), ""] if s else []),
        *([*flush_lines(f), ""] if f else []),
        *([*profile, ""] if profile else []),
        f"benchmark wall time: {wall:.0f} s (cached inputs are reused; --rebuild rebuilds them)",
        reproduce_line(opts),
    ]
    print("\n".join(lines), flush=True)


def save_results(opts: Options, cache: PageCache, t: Throughput | None, s: Scaling | None,
                 f: Flushes | None) -> Path:
    def runs(ms: list[Measured]) -> list[dict[str, Any]]:
        return [{k: v for k, v in asdict(m).items() if k not in ("stdout", "stderr")}
                for m in ms]

    figures: dict[str, Any] = {"argv": list(opts.argv),
                               "cache_mode": "cold" if cache.cold else "warm"}
    if t:
        figures.update({
            "card": {"bytes": t.card.total_bytes, "files": t.card.files},
            "rsync": runs(t.rsync), "rsync_sync_s": t.rsync_sync_s, "ingest": runs(t.ingest),
            "ratio": t.ratio, "peak_rss_mb": t.peak_rss_mb})
    if s:
        figures["scaling"] = {"files": s.card.files, "seed_items": s.seed_items,
                              "empty": runs(s.empty), "seeded": runs(s.seeded),
                              "ratio": s.ratio}
    if f:
        figures["flushes"] = {"files": f.card.files, "flush_ms": f.flush_ms, "calls": f.calls,
                              "ingest": runs(f.ingest), "rsync": runs(f.rsync),
                              "sync": runs(f.sync)}
    out = opts.workdir / f"results-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(figures, indent=1))
    return out


# -- main ------------------------------------------------------------------------------------


def check_space(opts: Options) -> None:
    """Room for the card, one copy of it, the small card, the seed and two copies of it."""
    seed_bytes = opts.seed_items * 3 * 4096 * 3
    need = int(opts.size_gb * 1e9 * 2 + opts.files * 200_000 * 2 + seed_bytes + 1e9)
    opts.workdir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(opts.workdir).free
    if free < need:
        raise BenchError(f"not enough disk at {opts.workdir}: {free / 1e9:.1f} GB free, "
                         f"up to {need / 1e9:.1f} GB needed")


def write_config(workdir: Path) -> Path:
    """The settings every ingest and the seeding use (defaults, plus the kit's zone)."""
    path = workdir / "bench-acopio.toml"
    path.write_text(f'[kit]\nname = "bench"\ntimezone = "{TIMEZONE}"\n')
    return path


def run(opts: Options) -> None:
    started = time.perf_counter()
    require_tools("rsync", "cp", "ffprobe", *(["strace"] if "flushes" in opts.parts else []))
    check_space(opts)
    remove_tree(opts.workdir / "runs")
    big = "throughput" in opts.parts or opts.profile
    card = big_card(opts) if big else None
    small = small_card(opts)
    config = write_config(opts.workdir)
    cache = PageCache()
    log(f"page cache mode: {cache.mode}")
    runner = Runner(config)
    throughput = scaling = flushes = None
    if "throughput" in opts.parts:
        throughput = bench_throughput(card, opts, cache, runner)
    if "scaling" in opts.parts:
        seed, seed_manifest = seeded_archive(opts, config)
        scaling = bench_scaling(small, seed, seed_manifest["info"], opts, cache, runner)
    if "flushes" in opts.parts:
        flushes = bench_flushes(small, opts, cache, runner)
    profile = profile_ingest(card, opts, cache, runner) if card and opts.profile else []
    remove_tree(opts.workdir / "runs")
    results = save_results(opts, cache, throughput, scaling, flushes)
    report(opts, cache, throughput, scaling, flushes, profile, time.perf_counter() - started)
    print(f"figures saved to {results}")


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(opts)
    except BenchError as exc:
        log(f"error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
