"""How fast the web UI answers with 100,000 items in the archive, and what it holds in memory.

Why: the web UI is what the office sees of the box. The issue sets the targets: with a catalog
of 100,000 items in 200 activities, the server time of "Lo más reciente", an activity page
and a search must have a median <= 50 ms and a 95th percentile <= 150 ms on this machine; the
web process must stay within 150 MB RSS; 20 clients browsing at once for 60 s must see no
errors (requests per second and p95 are reported). Issue 6 adds the editorial targets: a
caption edit and an approval on that catalog <= 100 ms server time each, a caption on a
selection of 500 items <= 2 s (phase 6). This measures the real thing: `python -m
appliance serve` as its own process, over HTTP on loopback. It is not part of the test suite:
`./scripts/bench web`.

1. Data. 200 agenda activities (`Agenda.add`, Spanish titles, 8 municipal areas, over 12
   months) and 100,000 catalog records (500 per activity folder) built by
   `records.make_record` and written by `Catalog.upsert` (one call per folder, several
   folders at once), with realistic names (DSC_xxxx.JPG, VID_xxxx.MP4, ...), mostly photos,
   six cameras, some GPS, some problems, no captions (the records carry the editorial
   fields, schema 2, as `make_record` writes them). The newest 2,000 items get real grid
   images (one tiny JPEG/PNG written at `plan.path(data, sha, ...)`), so grid pages check
   files the way they do on the box. The newest --zip-items (2,000) items also get an
   original at their `archive_path` for the ZIP of phase 6: one 1600x1200 JPEG of noise
   (~1.3 MB, stored as-is by the ZIP like any photo), hard-linked under every name so the
   cache costs 1.3 MB of disk (the server reads them like any file; they sit in the page
   cache, as a just-copied event does). No other archive file is written (no page reads
   them). The data folder is cached (default /tmp/acopio-bench-web, or --keep DIR) and
   reused when the generator's parameters match; the output says so. A pristine copy of the
   catalog shards is kept beside it: each run first puts back every shard the previous
   run's edits changed (and drops the edit log), so every run edits the same catalog. The
   query index's first build (`ItemIndex.refresh(force=True)`) is timed in this process
   before the server starts.
2. Server. `acopio users add bench --role director --password-stdin`, then `python -m
   appliance --data-dir D serve --host 127.0.0.1 --port P` with ACOPIO_WEB_ZEROCONF=false
   (nothing is advertised) and no other ACOPIO_* variable; every client logs in through
   `POST /api/login` and sends its `acopio_session` cookie.
3. Latency. One keep-alive connection (http.client, TCP_NODELAY), routes interleaved, 20
   warm-ups then --samples timed requests per route, a new random folder, word or item each
   time. The time is the client's round trip on loopback (the server's time plus about
   0.2 ms); nothing is added to the app. Beside it, the server process's CPU time per request
   (sum of its threads' /proc schedstat, read before and after each request). Baseline in
   the same run: GET /static/app.css, which passes the same WSGI stack (Host check, session
   load, after-request headers); each route's median is shown as a ratio to it.
4. Memory. VmHWM and VmRSS of the server process (/proc/PID/status) after the latency phase,
   after the 20 clients' logins (run at once: each is an scrypt of 16 MiB) and after the
   concurrency phase; VmHWM is reset after the logins (`5` > /proc/PID/clear_refs) so the
   browsing's own peak shows apart.
5. Concurrency. 20 client threads, each logged in with its own session (20 sessions, like 20
   phones) on its own keep-alive connection, loop without think time for
   BENCH_WEB_SECONDS (default 60) over a browse mix: "Lo más reciente" (first and later
   pages), activity pages, item pages, searches, a few of the grid images each grid page
   shows, and /api/status every 2 s per client. Any answer other than 2xx/304, or any
   exception, is an error. The clients are threads of this process (2 CPUs here: they
   compete with the server for CPU, so requests/s is a floor).

6. Editorial (issue 6), after the concurrency phase, one keep-alive connection logged in as
   the director, writes carrying the login body's CSRF token in X-CSRF-Token:
   - caption edit: `PATCH /api/items/<sha>` {"caption", "base_revision"} on a random item
     of a random folder each time (its revision read just before, untimed), --edits
     samples after 5 warm-ups; target p95 <= 100 ms;
   - approval: `POST /api/items/<sha>/approve`, then `/withdraw` of the same item, on a
     random item each time, --edits samples in all; target p95 <= 100 ms;
   - batch caption: `POST /api/items/batch` {"sha256": [500], "changes": {"caption"}},
     (a) the 500 items of one folder, (b) 10 items from each of 50 folders; --batches
     samples each after one warm-up, a new folder (or folders) each time; target <= 2 s;
   - the index follows edits: right after a caption edit with a word no other item has,
     `GET /api/items?q=WORD` is polled until the item is found (5 probes, target <= 1 s);
     the last batch's word must find all its items;
   - ZIP: `POST /api/zip` {"sha256": [the --zip-items items with originals], "variant":
     "original"} streamed and thrown away by the client: time to the response headers and to
     the first body byte, MB/s, the ZIP's central directory checked (every item in it, no
     ERRORES.txt), and the server's memory: VmHWM reset just before, VmRSS sampled every
     50 ms meanwhile, VmHWM after (bounded: the growth must not depend on the ZIP's size).
   Each time is also shown as a ratio to the static-file baseline of phase 3. VmHWM is reset
   at the start of the phase and again before the ZIP, so each peak is that part's own.

`--profile` also runs each measured route in this process through `app.test_client()` under
cProfile and lists the hot spots. `--server-env NAME=VALUE` gives the server process extra
environment, to try a setting (MALLOC_ARENA_MAX, GLIBC_TUNABLES, ACOPIO_WEB_THREADS). The
output names the commit and a digest of the web and query sources it measured; figures are
also saved as JSON under $BENCH_OUT/web.

Run: ./scripts/bench web [--samples N] [--clients N] [--seconds S] [--edits N] [--batches N]
[--zip-items N] [--keep DIR] [--rebuild] [--profile] [--server-env NAME=VALUE]; quick try:
BENCH_WEB_SECONDS=5 ./scripts/bench web --items 5000 --activities 10 --samples 30 --edits 40
--batches 2 --zip-items 200 --keep /tmp/acopio-bench-web-quick

Exit status: 0 when the benchmark ran, whatever the PASS/FAIL words say; 2 when it could not.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import hashlib
import http.client
import io
import itertools
import json
import math
import os
import platform
import pstats
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

# Run as a script, sys.path[0] is this folder: import this checkout, not an installed one.
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from appliance.agenda import Activity, Agenda, slugify  # noqa: E402
from appliance.catalog import Catalog  # noqa: E402
from appliance.datadir import DataDir  # noqa: E402
from appliance.query import ItemIndex  # noqa: E402
from ingest import filing, metadata, records  # noqa: E402
from ingest.derive import plan as derive_plan  # noqa: E402

GENERATOR_FORMAT = 3  # bump when the generated data changes: cached data folders are rebuilt
# 3: records of catalog schema 2 (editorial fields), originals for the ZIP, pristine catalog
TIMEZONE = "America/Mexico_City"
ZONE = ZoneInfo(TIMEZONE)
FIRST_DAY = datetime(2025, 5, 5, 9, 0, tzinfo=ZONE)
SPAN_DAYS = 365
USER = "bench"

TARGET_MEDIAN_MS = 50.0
TARGET_P95_MS = 150.0
TARGET_RSS_MB = 150.0
WARMUPS = 20
STATUS_EVERY_S = 2.0
THUMBS_PER_GRID = 4  # grid images a concurrent client fetches after each grid page

TARGET_EDIT_MS = 100.0  # a caption edit, an approval (issue 6)
TARGET_BATCH_S = 2.0  # a caption on 500 items
TARGET_FOLLOW_S = 1.0  # a search finds an edit
BATCH_SIZE = 500
BATCH_FOLDERS = 50  # the spread batch: BATCH_SIZE / BATCH_FOLDERS items from each
EDIT_WARMUPS = 5
FOLLOW_PROBES = 5
ORIGINAL_SIZE = (1600, 1200)  # the noise JPEG every ZIP original is (~1.3 MB)
ZIP_GROWTH_MB = 32.0  # the ZIP's own peak over the RSS before it: bounded, whatever its size

AREAS = ("Presidencia", "Comunicación Social", "Cultura", "Obras Públicas", "Salud",
         "Deporte", "Desarrollo Social", "Protección Civil")
EVENTS = {
    "Presidencia": ("Sesión Ordinaria de Cabildo", "Sesión Extraordinaria de Cabildo",
                    "Informe de Gobierno", "Reunión con Comisariados Ejidales",
                    "Audiencia Pública"),
    "Comunicación Social": ("Rueda de Prensa", "Entrevista Radiofónica",
                            "Conferencia de Prensa Semanal", "Presentación de Programa"),
    "Cultura": ("Festival Cultural", "Feria del Libro", "Concierto de la Banda Municipal",
                "Noche de Leyendas", "Festival de Día de Muertos", "Exposición de Pintura"),
    "Obras Públicas": ("Entrega de Obra de Pavimentación", "Arranque de Obra",
                       "Rehabilitación de la Red de Agua Potable", "Inauguración de Alumbrado",
                       "Recorrido de Supervisión"),
    "Salud": ("Jornada de Vacunación", "Feria de la Salud", "Campaña de Esterilización",
              "Jornada de Salud Visual"),
    "Deporte": ("Torneo de Fútbol Infantil", "Carrera Atlética", "Inauguración de Cancha",
                "Torneo de Básquetbol", "Clausura de la Liga Municipal"),
    "Desarrollo Social": ("Entrega de Apoyos Alimentarios", "Entrega de Becas",
                          "Programa Mujeres Emprendedoras", "Entrega de Calentadores Solares"),
    "Protección Civil": ("Simulacro de Evacuación", "Capacitación de Brigadistas",
                         "Operativo de Temporada de Lluvias", "Revisión de Albergues"),
}
PLACES = ("Colonia Centro", "San Miguel", "Santa Cruz", "El Mirador", "La Estación",
          "Barrio de Guadalupe", "Los Pinos", "San Juan", "Tierra Blanca", "Las Flores",
          "el Auditorio Municipal", "la Plaza Principal", "el Mercado Hidalgo",
          "la Unidad Deportiva", "Tres Cruces", "Lomas del Valle")
# (make, model, name prefix of its photos, source folder); the last one records audio.
CAMERAS = (
    ("NIKON CORPORATION", "NIKON D750", "DSC", "100NIKON"),
    ("Canon", "Canon EOS R6", "IMG", "100CANON"),
    ("SONY", "ILCE-7M3", "DSC", "100MSDCF"),
    ("Apple", "iPhone 13", "IMG", "100APPLE"),
    ("samsung", "SM-A525M", "IMG", "Camera"),
    ("DJI", "FC3170", "DJI", "100MEDIA"),
)
PHONES_AND_DRONES = {"iPhone 13", "SM-A525M", "FC3170"}  # these tag GPS
RECORDER = ("ZOOM", "H5")
KINDS = (("photo", 0.84), ("raw", 0.03), ("video", 0.10), ("audio", 0.03))
STOPWORDS = {"de", "del", "la", "las", "los", "el", "en", "y", "con", "a"}


class BenchError(Exception):
    """The benchmark cannot run; nothing to report."""


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- options ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    items: int
    activities: int
    thumbs: int
    samples: int
    clients: int
    seconds: float
    edits: int
    batches: int
    zip_items: int
    keep: Path
    rebuild: bool
    profile: bool
    server_env: tuple[tuple[str, str], ...]
    argv: tuple[str, ...]

    @property
    def params(self) -> dict[str, Any]:
        return {"format": GENERATOR_FORMAT, "items": self.items,
                "activities": self.activities, "thumbs": self.thumbs,
                "originals": self.zip_items, "original_size": list(ORIGINAL_SIZE)}


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(
        prog="scripts/bench web",
        description="Web UI latency, memory and concurrency with 100,000 catalog items.")
    p.add_argument("--items", type=int, default=100_000, help="catalog items (default 100000)")
    p.add_argument("--activities", type=int, default=200,
                   help="agenda activities, one archive folder each (default 200)")
    p.add_argument("--thumbs", type=int, default=2000,
                   help="newest items that get a grid image file (default 2000)")
    p.add_argument("--samples", type=int, default=200,
                   help="timed requests per route after 20 warm-ups (default 200)")
    p.add_argument("--clients", type=int, default=20, help="concurrent clients (default 20)")
    p.add_argument("--seconds", type=float,
                   default=float(os.environ.get("BENCH_WEB_SECONDS") or 60),
                   help="concurrency phase length (default $BENCH_WEB_SECONDS or 60)")
    p.add_argument("--edits", type=int, default=200,
                   help="caption edits, and approvals, timed (default 200; the issue wants "
                        ">= 100)")
    p.add_argument("--batches", type=int, default=5,
                   help="500-item batch captions timed per layout (default 5)")
    p.add_argument("--zip-items", type=int, default=2000,
                   help="newest items that get an original, all in the ZIP (default 2000)")
    p.add_argument("--keep", type=Path, default=Path("/tmp/acopio-bench-web"),
                   help="where the generated data folder is kept and reused "
                        "(default /tmp/acopio-bench-web)")
    p.add_argument("--rebuild", action="store_true", help="generate the data folder again")
    p.add_argument("--profile", action="store_true",
                   help="also profile each route in-process (app.test_client + cProfile)")
    p.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment of the server process, to try a setting "
                        "(e.g. MALLOC_ARENA_MAX=2 or ACOPIO_WEB_THREADS=4); repeatable")
    args = p.parse_args(argv)
    server_env = []
    for item in args.server_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            p.error(f"--server-env wants NAME=VALUE, not {item!r}")
        server_env.append((name, value))
    if min(args.items, args.activities, args.samples, args.clients, args.edits, args.batches,
           args.zip_items) < 1 or args.seconds <= 0 or args.thumbs < 0 \
            or args.items < args.activities or args.zip_items > args.items:
        p.error("counts must be positive (and items >= activities, items >= zip-items)")
    if args.zip_items > 5000:
        p.error("--zip-items: a ZIP holds at most editorial.zip_max_items = 5000 items")
    return Options(args.items, args.activities, args.thumbs, args.samples, args.clients,
                   args.seconds, args.edits, args.batches, args.zip_items, args.keep.absolute(),
                   args.rebuild, args.profile, tuple(server_env), tuple(argv))


# -- statistics ------------------------------------------------------------------------------


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest rank: the smallest value with at least `share` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1))]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# -- the generated data folder ---------------------------------------------------------------


@dataclass(frozen=True)
class PlannedFolder:
    index: int
    slug: str
    title: str
    area: str
    place: str
    start: datetime
    count: int

    @property
    def key(self) -> str:
        return filing.folder_key(self.start, self.slug)


def folder_plan(items: int, activities: int) -> list[PlannedFolder]:
    """One activity per folder, spread over SPAN_DAYS; items shared out evenly."""
    rng = random.Random(f"acopio-bench-web-plan-{activities}")
    step = SPAN_DAYS / activities
    seen: set[str] = set()
    out = []
    for i in range(activities):
        area = AREAS[rng.randrange(len(AREAS))]
        place = rng.choice(PLACES)
        title = f"{rng.choice(EVENTS[area])} en {place}"
        slug = slugify(title)
        if slug in seen:
            title = f"{title} {i + 1}"
            slug = slugify(title)
        seen.add(slug)
        start = FIRST_DAY + timedelta(days=int(i * step), hours=rng.randint(0, 8),
                                      minutes=rng.choice((0, 15, 30, 45)))
        count = items // activities + (1 if i < items % activities else 0)
        out.append(PlannedFolder(i, slug, title, area, place, start, count))
    return out


def item_sha(key: str, n: int) -> str:
    return hashlib.sha256(f"acopio bench web {key} {n}".encode()).hexdigest()


def folder_records(data: DataDir, folder: PlannedFolder) -> list[dict[str, Any]]:
    """The folder's catalog records, deterministic for a plan."""
    rng = random.Random(f"acopio-bench-web-{folder.index}")
    cameras = rng.sample(CAMERAS, k=rng.randint(2, 3))
    first_number = rng.randint(1, 8000)
    imported = (folder.start + timedelta(hours=5, minutes=rng.randint(0, 90))).astimezone(UTC)
    import_id = f"{imported:%Y%m%dT%H%M%SZ}-{folder.index:06x}"
    span_s = 4 * 3600
    out = []
    for n in range(folder.count):
        kind = rng.choices([k for k, _ in KINDS], [w for _, w in KINDS])[0]
        make, model, prefix, source_dir = rng.choice(cameras)
        number = (first_number + n) % 10000
        duration = None
        width, height = (6000, 4000)
        if kind == "photo":
            name, size = f"{prefix}_{number:04d}.JPG", rng.randint(4_000_000, 14_000_000)
        elif kind == "raw":
            name, size = f"{prefix}_{number:04d}.NEF", rng.randint(24_000_000, 45_000_000)
        elif kind == "video":
            name, size = f"VID_{number:04d}.MP4", rng.randint(20_000_000, 900_000_000)
            width, height, duration = 1920, 1080, round(rng.uniform(8, 600), 2)
        else:
            make, model, source_dir = (*RECORDER, "STEREO")
            name, size = f"ZOOM{number:04d}.WAV", rng.randint(5_000_000, 120_000_000)
            width = height = None
            duration = round(rng.uniform(30, 3600), 2)
        gps = None
        if model in PHONES_AND_DRONES and rng.random() < 0.8:
            gps = {"lat": round(19.4326 + rng.uniform(-0.05, 0.05), 6),
                   "lon": round(-99.1332 + rng.uniform(-0.05, 0.05), 6),
                   "alt": round(rng.uniform(2200, 2300), 1)}
        problems = []
        if rng.random() < 0.015:
            problems.append({"code": "unreadable_metadata", "detail": "EXIF: truncated IFD"})
        if rng.random() < 0.004:
            problems.append({"code": "damaged", "detail": "image file is truncated"})
        captured = folder.start + timedelta(seconds=n * span_s / folder.count
                                            + rng.uniform(0, 5))
        source = {"photo": "exif", "raw": "raw_exif", "video": "media_creation_time"}
        date_source = source.get(kind, "file_mtime")
        date_problems = []
        if rng.random() < 0.01:
            date_source = "file_mtime"
            date_problems.append({"code": "implausible_date",
                                  "detail": "exif: 2000-01-01T00:00:00"})
        info = metadata.MediaInfo(
            camera={"make": make, "model": model}, gps=gps,
            orientation=1 if kind in ("photo", "raw") else None,
            rotation=0 if kind == "video" else None,
            width=width, height=height, duration=duration, problems=problems)
        data_path = data.archive / folder.key / name
        out.append(records.make_record(
            sha256=item_sha(folder.key, n), size=size, kind=kind, original_name=name,
            source_path=f"DCIM/{source_dir}/{name}", archive_path=data.relative(data_path),
            folder=folder.key, activity=folder.slug, filed_by="agenda",
            description=records.Description(info, captured, date_source, date_problems),
            imported_at=imported + timedelta(seconds=n * 0.7), import_id=import_id))
    return out


def write_folder(root: Path, folder: PlannedFolder) -> list[tuple[str, str, str, str]]:
    """Write one folder's shard (and sha256 index entries); (imported_at, sha256, kind,
    archive_path) of its items."""
    data = DataDir.at(root)
    batch = folder_records(data, folder)
    Catalog(data).upsert(folder.key, batch)
    return [(r["imported_at"], r["sha256"], r["kind"], r["archive_path"]) for r in batch]


def grid_images() -> dict[str, bytes]:
    """Derivative name -> small file contents (made once, copied for every item)."""
    rng = random.Random(3)
    image = Image.new("RGB", (320, 240))
    image.putdata([(rng.randrange(256), 90 + y // 4, 120) for y in range(240)
                   for _ in range(320)])
    jpeg = io.BytesIO()
    image.save(jpeg, "JPEG", quality=75)
    wave = io.BytesIO()
    Image.new("RGB", (320, 80), (240, 240, 240)).save(wave, "PNG")
    return {"thumb": jpeg.getvalue(), "poster": jpeg.getvalue(), "waveform": wave.getvalue()}


def original_image() -> bytes:
    """The bytes every ZIP original has: a JPEG of noise (what a ZIP stores is the file as
    it is; noise keeps it photo-sized for its pixels)."""
    width, height = ORIGINAL_SIZE
    image = Image.frombytes("RGB", ORIGINAL_SIZE, random.Random(7).randbytes(width * height * 3))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


def write_originals(data: DataDir, archive_paths: Sequence[str]) -> int:
    """One original written, hard-linked at every other archive path; its size."""
    content = original_image()
    first: Path | None = None
    for rel in archive_paths:
        path = data.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        if first is None:
            path.write_bytes(content)
            first = path
        else:
            os.link(first, path)
    return len(content)


def pristine_catalog(cache: Path) -> Path:
    """The catalog shards as generated, before any run's edits."""
    return cache / "catalog-pristine"


GRID_DERIVATIVE = {"photo": "thumb", "raw": "thumb", "video": "poster", "audio": "waveform"}


@dataclass
class Generated:
    root: Path  # the data folder
    folders: list[PlannedFolder]
    thumbs: list[tuple[str, str]]  # (sha256, derivative) of the grid images, newest first
    originals: list[str]  # sha256 of the items with an original in the archive, newest first
    original_bytes: int  # each one's size
    build_s: float
    reused: bool
    built_at: str


def generate(opts: Options) -> Generated:
    cache = opts.keep
    root = cache / "data"
    manifest_path = cache / "bench-web.json"
    folders = folder_plan(opts.items, opts.activities)
    pristine = pristine_catalog(cache)
    if not opts.rebuild and manifest_path.exists() and (root / "state" / "catalog").is_dir() \
            and pristine.is_dir():
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError:
            manifest = {}
        if manifest.get("params") == opts.params:
            return Generated(root, folders, [tuple(t) for t in manifest["thumbs"]],
                             manifest["originals"], manifest["original_bytes"],
                             manifest["build_s"], True, manifest["built_at"])
    log(f"generating {opts.items:,} items in {opts.activities} activities under {root}")
    manifest_path.unlink(missing_ok=True)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(pristine, ignore_errors=True)
    started = time.perf_counter()
    data = DataDir.at(root)
    data.ensure()
    agenda = Agenda(data.state)
    for folder in folders:
        agenda.add(Activity(folder.slug, folder.title, folder.start,
                            folder.start + timedelta(hours=4), area=folder.area,
                            place=folder.place))
    agenda_s = time.perf_counter() - started
    items: list[tuple[str, str, str, str]] = []
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for done, written in enumerate(
                pool.map(write_folder, [root] * len(folders), folders, chunksize=1), start=1):
            items.extend(written)
            if done % 25 == 0:
                log(f"wrote {done}/{len(folders)} catalog shards")
    catalog_s = time.perf_counter() - started - agenda_s
    items.sort(reverse=True)
    images = grid_images()
    newest = items[:opts.thumbs]
    for _, sha, kind, _ in newest:
        name = GRID_DERIVATIVE[kind]
        path = derive_plan.path(data, sha, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(images[name])
    files_s = time.perf_counter() - started - agenda_s - catalog_s
    with_original = items[:opts.zip_items]
    original_bytes = write_originals(data, [rel for *_, rel in with_original])
    shutil.copytree(data.catalog, pristine, copy_function=shutil.copy2)
    build_s = time.perf_counter() - started
    log(f"generated in {build_s:.1f} s (agenda {agenda_s:.1f} s, catalog {catalog_s:.1f} s, "
        f"grid images {files_s:.1f} s, originals and the catalog's pristine copy "
        f"{build_s - agenda_s - catalog_s - files_s:.1f} s)")
    built_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    thumbs = [(sha, GRID_DERIVATIVE[kind]) for _, sha, kind, _ in newest]
    originals = [sha for _, sha, _, _ in with_original]
    manifest_path.write_text(json.dumps({"params": opts.params, "build_s": round(build_s, 1),
                                         "built_at": built_at, "thumbs": thumbs,
                                         "originals": originals,
                                         "original_bytes": original_bytes}))
    return Generated(root, folders, thumbs, originals, original_bytes, build_s, False,
                     built_at)


RUN_STATE = ("users.json", "sessions.json", "setup.json", "query.sqlite",
             "query.sqlite-wal", "query.sqlite-shm", "query.sqlite-journal")


def reset_run_state(data: DataDir, pristine: Path) -> int:
    """What a previous run left in the reused data folder: accounts, sessions, the index,
    the edit log, and its edits in the catalog (every shard that differs from its pristine
    copy is put back). The number of shards put back."""
    for name in RUN_STATE:
        (data.state / name).unlink(missing_ok=True)
    shutil.rmtree(data.state / "edits", ignore_errors=True)
    shutil.rmtree(data.state / "running", ignore_errors=True)  # the roles' startup flags
    restored = 0
    for source in pristine.glob("*/*/*.json"):
        target = data.catalog / source.relative_to(pristine)
        want, have = source.stat(), None
        with contextlib.suppress(FileNotFoundError):
            have = target.stat()
        if have is None or (have.st_size, have.st_mtime_ns) != (want.st_size,
                                                                want.st_mtime_ns):
            shutil.copy2(source, target)
            restored += 1
    return restored


@dataclass
class IndexBuild:
    first_s: float
    noop_ms: float
    size_mb: float
    cameras: list[str]
    areas: list[str]


def build_index(data: DataDir) -> IndexBuild:
    index = ItemIndex(data, ZONE)
    try:
        started = time.perf_counter()
        index.refresh(force=True)
        first_s = time.perf_counter() - started
        noops = []
        for _ in range(20):
            started = time.perf_counter()
            index.refresh(force=True)
            noops.append((time.perf_counter() - started) * 1000)
        cameras, areas = index.cameras(), index.areas()
    finally:
        index.close()
    size = sum(p.stat().st_size for p in data.state.glob("query.sqlite*"))
    return IndexBuild(first_s, statistics.median(noops), size / 1e6, cameras, areas)


# -- the server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(extra: Sequence[tuple[str, str]] = ()) -> dict[str, str]:
    """This environment without ACOPIO_* settings, zeroconf off, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACOPIO_")}
    env["ACOPIO_WEB_ZEROCONF"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def write_config(cache: Path) -> Path:
    path = cache / "bench-web.toml"
    path.write_text(f'[kit]\nname = "bench"\ntimezone = "{TIMEZONE}"\n')
    return path


def acopio(config: Path, data: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "appliance", "--config", str(config), "--data-dir",
            str(data), *args]


def add_user(config: Path, data: Path, password: str) -> None:
    result = subprocess.run(acopio(config, data, "users", "add", USER, "--role", "director",
                                   "--password-stdin"),
                            input=password + "\n", text=True, capture_output=True,
                            env=server_env(), cwd=REPO)
    if result.returncode != 0:
        raise BenchError(f"acopio users add failed: {result.stderr.strip()}")


class Server:
    def __init__(self, config: Path, data: Path, log_path: Path,
                 extra_env: Sequence[tuple[str, str]] = ()) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            acopio(config, data, "serve", "--host", "127.0.0.1", "--port", str(self.port)),
            stdout=self._log, stderr=subprocess.STDOUT, env=server_env(extra_env), cwd=REPO)
        self.pid = self.proc.pid
        started = time.perf_counter()
        deadline = started + 60
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"the server exited ({self.proc.returncode}): "
                                 f"{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.perf_counter() > deadline:
                    self.stop()
                    raise BenchError("the server did not listen within 60 s") from None
                time.sleep(0.05)
        self.start_s = time.perf_counter() - started

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def memory_mb(self) -> tuple[float, float]:
        """(VmHWM, VmRSS) in MB (2^20 bytes, as /proc counts kB)."""
        fields = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                fields[name] = int(value.split()[0]) / 1024
        return fields["VmHWM"], fields["VmRSS"]

    def reset_peak(self) -> bool:
        """Start VmHWM again from the current RSS (`5` to /proc/PID/clear_refs), so the
        peak of the next phase is its own; False where the kernel refuses."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5\n")
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log_problems(self) -> tuple[list[str], int]:
        """(error and warning lines, waitress "Task queue depth" warnings: requests that
        waited for a free thread)."""
        problems, queued = [], 0
        for line in self.log_path.read_text(errors="replace").splitlines():
            if "Task queue depth" in line:
                queued += 1
            elif " ERROR " in line or " WARNING " in line or line.startswith("Traceback"):
                problems.append(line)
        return problems, queued


class HostLoad:
    """What other processes on the host take of its CPUs while a phase runs: the busy time
    of /proc/stat minus the server's and this process's own (/proc/PID/stat), in cores.
    Figures measured while something else keeps the CPUs busy are noisy: the output says so."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.tick_s = 1 / os.sysconf("SC_CLK_TCK")
        self.phases: list[tuple[str, float]] = []  # (phase, cores busy elsewhere)

    @staticmethod
    def _process_ticks(pid: int | str) -> int:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])
        return 0

    def snapshot(self) -> tuple[float, int, int]:
        cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, cpu[:8])
        busy = user + nice + system + irq + softirq + steal
        ours = self._process_ticks(self.server_pid) + self._process_ticks("self")
        return time.perf_counter(), busy, ours

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = self.snapshot()
        try:
            yield
        finally:
            end = self.snapshot()
            others = ((end[1] - start[1]) - (end[2] - start[2])) * self.tick_s
            self.phases.append((name, max(0.0, others) / max(end[0] - start[0], 1e-9)))

    def line(self) -> str:
        text = ", ".join(f"{name} {cores:.2f}" for name, cores in self.phases)
        busy = any(cores > 0.25 for _, cores in self.phases)
        return (f"other processes on the host, cores busy on average: {text}"
                + (f" (of {os.cpu_count()}: figures of those phases are noisy)" if busy else
                   " (a quiet host)"))


class CpuClock:
    """The server process's CPU time in ns: its threads' /proc schedstat (ns resolution),
    else utime + stime from /proc/PID/stat (clock ticks)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.tick_ns = 1e9 / os.sysconf("SC_CLK_TCK")
        self.schedstat = Path(f"/proc/{pid}/task/{pid}/schedstat").exists()

    def __call__(self) -> float:
        if self.schedstat:
            total = 0
            for task in os.scandir(f"/proc/{self.pid}/task"):
                with contextlib.suppress(OSError), open(f"{task.path}/schedstat") as f:
                    total += int(f.read().split()[0])
            return float(total)
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * self.tick_ns

    @property
    def source(self) -> str:
        return ("sum of /proc/PID/task/*/schedstat" if self.schedstat
                else "utime+stime of /proc/PID/stat (10 ms ticks)")


# -- HTTP ------------------------------------------------------------------------------------


class Client:
    """One keep-alive connection with its own session cookie."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie = ""
        self.csrf = ""
        self.conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            conn.connect()
            assert conn.sock is not None
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conn = conn
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        sent = {"Host": f"127.0.0.1:{self.port}", "Accept-Encoding": "identity",
                **(extra or {})}
        if self.cookie:
            sent["Cookie"] = self.cookie
        return sent

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None
                ) -> tuple[int, bytes, float, http.client.HTTPResponse]:
        """(status, body, round trip in ms, response). A failure closes the connection."""
        sent = self.headers(headers)
        conn = self._connection()
        try:
            started = time.perf_counter()
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            data = response.read()
            elapsed = (time.perf_counter() - started) * 1000
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, data, elapsed, response

    def get(self, path: str) -> tuple[int, bytes, float]:
        status, data, elapsed, _ = self.request("GET", path)
        return status, data, elapsed

    def write(self, method: str, path: str, payload: Any = None) -> tuple[int, bytes, float]:
        """A write as the page's script sends it: JSON (if any) and the CSRF token."""
        headers = {"X-CSRF-Token": self.csrf}
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        status, data, elapsed, _ = self.request(method, path, body, headers)
        return status, data, elapsed

    def login(self, password: str) -> None:
        body = json.dumps({"username": USER, "password": password}).encode()
        status, data, _, response = self.request(
            "POST", "/api/login", body, {"Content-Type": "application/json"})
        if status != 200:
            raise BenchError(f"login failed: {status} {data[:200]!r}")
        jar: SimpleCookie = SimpleCookie()
        for header in response.headers.get_all("Set-Cookie") or []:
            jar.load(header)
        if "acopio_session" not in jar:
            raise BenchError("login set no acopio_session cookie")
        self.cookie = f"acopio_session={jar['acopio_session'].value}"
        self.csrf = json.loads(data).get("csrf_token") or ""


# -- what the clients ask for ----------------------------------------------------------------


class Paths:
    """Random URLs over the generated archive."""

    def __init__(self, gen: Generated, index: IndexBuild, page_size: int = 60) -> None:
        self.folders = gen.folders
        self.thumbs = gen.thumbs
        self.cameras = index.cameras
        self.areas = index.areas
        words: set[str] = set()
        for folder in gen.folders:
            words.update(w for w in re.findall(r"\w+", folder.title)
                         if len(w) >= 4 and not w.isdigit() and w.lower() not in STOPWORDS)
        self.title_words = sorted(words)
        self.pages = max(1, math.ceil(sum(f.count for f in gen.folders) / page_size))

    def folder(self, rng: random.Random) -> str:
        key = rng.choice(self.folders).key
        return f"/archivo/{key[:7].replace('/', '-')}/{key.split('/')[-1]}"

    def item(self, rng: random.Random) -> str:
        folder = rng.choice(self.folders)
        return f"/item/{item_sha(folder.key, rng.randrange(folder.count))}"

    def word(self, rng: random.Random) -> str:
        """What someone types: a title word, a file name (or its start), a camera word."""
        pick = rng.random()
        if pick < 0.6:
            word = rng.choice(self.title_words)
            return word.lower() if rng.random() < 0.5 else word
        if pick < 0.85:
            prefix = rng.choice(("DSC", "IMG", "VID", "ZOOM", "dsc", "img"))
            digits = f"{rng.randrange(10000):04d}"[:rng.choice((2, 3, 4))]
            return f"{prefix}{'' if prefix.lower() == 'zoom' else '_'}{digits}"
        return rng.choice(("nikon", "canon", "iphone", "sony", "dji", "samsung"))

    def search(self, rng: random.Random) -> str:
        return "/buscar?" + urlencode({"q": self.word(rng)})

    def search_filtered(self, rng: random.Random) -> str:
        choice = rng.randrange(4)
        if choice == 0:
            args = {"kind": "video", "camera": rng.choice(self.cameras)}
        elif choice == 1:
            args = {"q": self.word(rng), "kind": "photo", "status": "ok"}
        elif choice == 2:
            day = FIRST_DAY + timedelta(days=rng.randrange(SPAN_DAYS - 30))
            args = {"area": rng.choice(self.areas), "from": f"{day:%Y-%m-%d}",
                    "to": f"{day + timedelta(days=30):%Y-%m-%d}"}
        else:
            args = {"status": "problems", "kind": "photo"}
        return "/buscar?" + urlencode(args)

    def api_items(self, rng: random.Random) -> str:
        return "/api/items?" + urlencode({"limit": 60, "q": self.word(rng)})

    def recent_deep(self, rng: random.Random) -> str:
        return "/?page=500" if self.pages >= 500 else f"/?page={self.pages}"

    def thumb(self, rng: random.Random) -> str:
        if not self.thumbs:
            return "/static/app.css"
        sha, name = rng.choice(self.thumbs)
        return f"/media/{sha}/{name}"


BASELINE = "static /static/app.css"


def latency_routes(paths: Paths) -> list[tuple[str, Callable[[random.Random], str], bool]]:
    """(label, URL maker, named in the issue's target)."""
    return [
        (BASELINE, lambda rng: "/static/app.css", False),
        ("Lo más reciente /", lambda rng: "/", True),
        (f"Lo más reciente {paths.recent_deep(random.Random())}", paths.recent_deep, False),
        ("activity page /archivo/M/F", paths.folder, True),
        ("search /buscar?q=WORD", paths.search, True),
        ("search with filters", paths.search_filtered, False),
        ("/api/items?limit=60&q=WORD", paths.api_items, False),
        ("/api/status", lambda rng: "/api/status", False),
        ("item page /item/SHA", paths.item, False),
        ("grid image /media/SHA/thumb", paths.thumb, False),
    ]


# -- phase 1: latency ------------------------------------------------------------------------


@dataclass
class RouteFigures:
    label: str
    named: bool
    ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    bytes: list[int] = field(default_factory=list)
    errors: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.ms)

    @property
    def p95(self) -> float:
        return percentile(self.ms, 0.95)

    @property
    def ok(self) -> bool:
        return self.median <= TARGET_MEDIAN_MS and self.p95 <= TARGET_P95_MS


def measure_latency(server: Server, password: str, paths: Paths, samples: int,
                    cpu: CpuClock) -> list[RouteFigures]:
    client = Client(server.port)
    client.login(password)
    routes = latency_routes(paths)
    figures = [RouteFigures(label, named) for label, _, named in routes]
    rng = random.Random(11)
    for _ in range(WARMUPS):
        for label, make, _ in routes:
            status, _, _ = client.get(make(rng))
            if status not in (200, 304):
                raise BenchError(f"warm-up {label}: HTTP {status}")
    order = list(range(len(routes)))
    for n in range(samples):
        rng.shuffle(order)
        for i in order:
            path = routes[i][1](rng)
            before = cpu()
            status, data, ms = client.get(path)
            after = cpu()
            if status not in (200, 304):
                figures[i].errors += 1
                log(f"{path}: HTTP {status}")
                continue
            figures[i].ms.append(ms)
            figures[i].cpu_ms.append((after - before) / 1e6)
            figures[i].bytes.append(len(data))
        if (n + 1) % 50 == 0:
            log(f"latency: {n + 1}/{samples} rounds of {len(routes)} routes")
    client.close()
    return figures


# -- phase 2: concurrency --------------------------------------------------------------------


@dataclass
class ClientLog:
    samples: list[tuple[str, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


GRID_SRC = re.compile(rb'<img src="(/media/[0-9a-f]{64}/(?:thumb|poster|waveform))"')
MIX = (("recent", 0.25), ("recent later page", 0.10), ("activity page", 0.25),
       ("item page", 0.20), ("search", 0.20))


def browse(port: int, password: str, paths: Paths, seed: int, ready: threading.Barrier,
           deadline: list[float], out: ClientLog) -> None:
    rng = random.Random(seed)
    client = Client(port)
    try:
        client.login(password)
    except Exception as exc:
        out.errors.append(f"login: {exc!r}")
        ready.abort()
        return
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        return
    next_status = time.perf_counter() + rng.uniform(0, STATUS_EVERY_S)

    def fetch(kind: str, path: str) -> bytes | None:
        try:
            status, data, ms = client.get(path)
        except Exception as exc:
            out.errors.append(f"{path}: {exc!r}")
            return None
        if not (200 <= status < 300 or status == 304):
            out.errors.append(f"{path}: HTTP {status}")
            return None
        out.samples.append((kind, ms))
        return data

    while time.perf_counter() < deadline[0]:
        if time.perf_counter() >= next_status:
            fetch("api/status", "/api/status")
            next_status += STATUS_EVERY_S
            continue
        kind = rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
        if kind == "recent":
            path = "/"
        elif kind == "recent later page":
            path = f"/?page={rng.randint(2, min(paths.pages, 50))}"
        elif kind == "activity page":
            path = paths.folder(rng)
        elif kind == "item page":
            path = paths.item(rng)
        else:
            path = paths.search(rng) if rng.random() < 0.7 else paths.search_filtered(rng)
        data = fetch(kind, path)
        if data and kind != "item page":
            images = GRID_SRC.findall(data)
            for src in rng.sample(images, min(THUMBS_PER_GRID, len(images))):
                fetch("grid image", src.decode())
    client.close()


@dataclass
class Concurrency:
    clients: int
    seconds: float
    samples: list[tuple[str, float]]
    errors: list[str]
    cpu_s: float
    max_rss_mb: float
    after_logins: tuple[float, float]  # (VmHWM, VmRSS) once every client had logged in
    peak_reset: bool  # VmHWM was reset after the logins: the final VmHWM is browsing's own


def measure_concurrency(server: Server, password: str, paths: Paths, clients: int,
                        seconds: float, cpu: CpuClock) -> Concurrency:
    logs = [ClientLog() for _ in range(clients)]
    ready = threading.Barrier(clients + 1)
    deadline = [math.inf]
    threads = [threading.Thread(target=browse, name=f"client-{n}",
                                args=(server.port, password, paths, 1000 + n, ready, deadline,
                                      logs[n]))
               for n in range(clients)]
    for thread in threads:
        thread.start()
    try:
        ready.wait(timeout=120)
    except threading.BrokenBarrierError:
        for thread in threads:
            thread.join()
        raise BenchError("a client could not log in: "
                         + "; ".join(e for entry in logs for e in entry.errors)) from None
    # The logins ran at once (scrypt, 16 MiB each): their peak is noted apart.
    after_logins = server.memory_mb()
    peak_reset = server.reset_peak()
    cpu_before = cpu()
    started = time.perf_counter()
    deadline[0] = started + seconds
    max_rss = 0.0
    log(f"concurrency: {clients} clients for {seconds:.0f} s")
    while any(t.is_alive() for t in threads):
        max_rss = max(max_rss, server.memory_mb()[1])
        time.sleep(0.5)
    elapsed = time.perf_counter() - started
    cpu_s = (cpu() - cpu_before) / 1e9
    return Concurrency(clients, elapsed, [s for entry in logs for s in entry.samples],
                       [e for entry in logs for e in entry.errors], cpu_s, max_rss,
                       after_logins, peak_reset)


# -- phase 3: editorial (issue 6) ------------------------------------------------------------


@dataclass
class WriteFigures:
    """One kind of write: client round trips, the server's CPU per request, answer sizes."""
    label: str
    target_ms: float
    ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    bytes: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # items written per request (batches)

    @property
    def median(self) -> float:
        return statistics.median(self.ms)

    @property
    def p95(self) -> float:
        return percentile(self.ms, 0.95)

    @property
    def ok(self) -> bool:
        return bool(self.ms) and not self.errors and self.p95 <= self.target_ms

    def as_json(self) -> dict[str, Any]:
        if not self.ms:
            return {"n": 0, "errors": len(self.errors)}
        return {"n": len(self.ms), "median_ms": self.median, "p95_ms": self.p95,
                "max_ms": max(self.ms), "cpu_ms": statistics.mean(self.cpu_ms),
                "target_ms": self.target_ms, "ok": self.ok, "errors": len(self.errors),
                **({"items_per_request": sorted(set(self.sizes))} if self.sizes else {})}


@dataclass
class ZipFigures:
    items: int
    status: int = 0
    bytes: int = 0
    headers_ms: float = 0.0  # the response's status line and headers
    first_byte_ms: float = 0.0  # the first bytes of the ZIP itself
    seconds: float = 0.0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    before: tuple[float, float] = (0.0, 0.0)  # (VmHWM, VmRSS) before the ZIP
    peak_reset: bool = False
    hwm_after: float = 0.0  # VmHWM after it (reset just before: the ZIP's own peak)
    rss_after: float = 0.0
    rss_max_sampled: float = 0.0
    entries: int | None = None  # in the central directory
    errors_entry: bool = False  # ERRORES.txt in it: some item was skipped
    problems: list[str] = field(default_factory=list)

    @property
    def mb_s(self) -> float:
        return self.bytes / 2**20 / self.seconds if self.seconds else 0.0

    @property
    def growth_mb(self) -> float:
        return self.hwm_after - self.before[1]

    @property
    def memory_ok(self) -> bool:
        return self.growth_mb <= ZIP_GROWTH_MB and self.hwm_after <= TARGET_RSS_MB

    @property
    def complete(self) -> bool:
        return (self.status == 200 and self.entries == self.items and not self.errors_entry
                and not self.problems)


@dataclass
class Editorial:
    caption: WriteFigures
    approval: WriteFigures  # approve and withdraw together
    approve: WriteFigures
    withdraw: WriteFigures
    batch_folder: WriteFigures
    batch_spread: WriteFigures
    follow_s: list[float]  # a caption edit's answer -> the search finds it
    follow_polls: list[int]
    follow_missed: int
    batch_search: tuple[int, int]  # (items the last batch's word finds, items in the batch)
    memory_start: tuple[float, float]
    memory_edits: tuple[float, float]  # after the edits (VmHWM reset at the start)
    edits_peak_reset: bool
    zip: ZipFigures


def random_item(rng: random.Random, folders: Sequence[PlannedFolder]) -> str:
    folder = rng.choice(folders)
    return item_sha(folder.key, rng.randrange(folder.count))


def unique_word(rng: random.Random, prefix: str) -> str:
    """A word no generated item has: one token (letters and digits) the search finds."""
    return prefix + "".join(rng.choice("bcdfghjkmnpqrstvwxz") for _ in range(8))


class Writer:
    """The director's client: timed writes, with the server's CPU around each."""

    def __init__(self, client: Client, cpu: CpuClock) -> None:
        self.client = client
        self.cpu = cpu

    def revision(self, sha: str) -> int:
        status, data, _ = self.client.get(f"/api/items/{sha}")
        if status != 200:
            raise BenchError(f"GET /api/items/{sha[:12]}...: HTTP {status}")
        return int(json.loads(data)["revision"])

    def send(self, fig: WriteFigures | None, method: str, path: str,
             payload: Any = None) -> Any:
        """The JSON answer, or None (the error noted in `fig`); `fig` None: untimed."""
        before = self.cpu()
        try:
            status, data, ms = self.client.write(method, path, payload)
        except Exception as exc:  # a failed sample is reported
            if fig is not None:
                fig.errors.append(f"{method} {path[:60]}: {exc!r}")
            return None
        after = self.cpu()
        if status != 200:
            message = f"{method} {path[:60]}: HTTP {status} {data[:200]!r}"
            if fig is None:
                raise BenchError(message)
            fig.errors.append(message)
            return None
        if fig is not None:
            fig.ms.append(ms)
            fig.cpu_ms.append((after - before) / 1e6)
            fig.bytes.append(len(data))
        return json.loads(data)


def measure_captions(writer: Writer, folders: Sequence[PlannedFolder], samples: int,
                     rng: random.Random) -> WriteFigures:
    fig = WriteFigures("caption edit PATCH /api/items/SHA", TARGET_EDIT_MS)
    for n in range(EDIT_WARMUPS + samples):
        folder = rng.choice(folders)
        sha = item_sha(folder.key, rng.randrange(folder.count))
        revision = writer.revision(sha)
        caption = (f"{folder.title}: toma {n + 1} para la galería de prensa "
                   f"(revisión {revision + 1})")
        timed = fig if n >= EDIT_WARMUPS else None
        got = writer.send(timed, "PATCH", f"/api/items/{sha}",
                          {"caption": caption, "base_revision": revision})
        if got is not None and (got.get("caption") != caption
                                or got.get("revision") != revision + 1):
            fig.errors.append(f"PATCH {sha[:12]}...: answered caption {got.get('caption')!r},"
                              f" revision {got.get('revision')} (sent {revision})")
        if (n + 1 - EDIT_WARMUPS) % 100 == 0 and n >= EDIT_WARMUPS:
            log(f"editorial: {n + 1 - EDIT_WARMUPS}/{samples} caption edits")
    return fig


def measure_approvals(writer: Writer, folders: Sequence[PlannedFolder], samples: int,
                      rng: random.Random) -> tuple[WriteFigures, WriteFigures, WriteFigures]:
    both = WriteFigures("approve / withdraw POST /api/items/SHA/...", TARGET_EDIT_MS)
    approve = WriteFigures("  approve only", TARGET_EDIT_MS)
    withdraw = WriteFigures("  withdraw only", TARGET_EDIT_MS)
    pairs = math.ceil(samples / 2)
    for n in range(EDIT_WARMUPS + pairs):
        sha = random_item(rng, folders)
        warm = n < EDIT_WARMUPS
        for action, fig, approved in (("approve", approve, True),
                                      ("withdraw", withdraw, False)):
            count = len(fig.ms)
            got = writer.send(None if warm else fig, "POST", f"/api/items/{sha}/{action}")
            if got is not None and got.get("approved") is not approved:
                fig.errors.append(f"{action} {sha[:12]}...: approved={got.get('approved')!r}")
            if not warm and len(fig.ms) > count:
                both.ms.append(fig.ms[-1])
                both.cpu_ms.append(fig.cpu_ms[-1])
                both.bytes.append(fig.bytes[-1])
    both.errors = approve.errors + withdraw.errors
    return both, approve, withdraw


def measure_batches(writer: Writer, folders: Sequence[PlannedFolder], batches: int,
                    rng: random.Random) -> tuple[WriteFigures, WriteFigures, tuple[int, int]]:
    spread_over = min(BATCH_FOLDERS, len(folders))
    one = WriteFigures(f"batch caption, {BATCH_SIZE} items, 1 folder", TARGET_BATCH_S * 1000)
    spread = WriteFigures(f"batch caption, {BATCH_SIZE} items, {spread_over} folders",
                          TARGET_BATCH_S * 1000)
    per_folder = math.ceil(BATCH_SIZE / spread_over)
    order = rng.sample(folders, len(folders))
    last: tuple[str, list[str]] = ("", [])
    for n in range(1 + batches):  # one warm-up of each layout
        for fig in (one, spread):
            if fig is one:
                folder = order[n % len(order)]
                shas = [item_sha(folder.key, i) for i in range(min(folder.count, BATCH_SIZE))]
            else:
                shas = []
                for folder in rng.sample(folders, spread_over):
                    picks = rng.sample(range(folder.count), min(per_folder, folder.count))
                    shas.extend(item_sha(folder.key, i) for i in picks)
                shas = shas[:BATCH_SIZE]
            word = unique_word(rng, "zlote")
            caption = f"Lote {n + 1} de la cobertura del mes, selección para prensa {word}"
            got = writer.send(fig if n else None, "POST", "/api/items/batch",
                              {"sha256": shas, "changes": {"caption": caption}})
            if n:
                fig.sizes.append(len(shas))
            if got is not None:
                answered = got.get("items") or []
                if len(answered) != len(shas) or any(i.get("caption") != caption
                                                     for i in answered):
                    fig.errors.append(f"batch of {len(shas)}: {len(answered)} items answered, "
                                      "not all with the new caption")
                last = (word, shas)
    found = 0
    if last[0]:
        status, data, _ = writer.client.get("/api/items?" + urlencode({"limit": 1,
                                                                       "q": last[0]}))
        found = json.loads(data)["total"] if status == 200 else -1
    return one, spread, (found, len(last[1]))


def measure_follow(writer: Writer, folders: Sequence[PlannedFolder], rng: random.Random,
                   probes: int = FOLLOW_PROBES, limit_s: float = 5.0
                   ) -> tuple[list[float], list[int], int]:
    """For each probe: a caption with a new word, then the search polled until it finds
    the item; (seconds from the edit's answer to the finding, polls, probes never found)."""
    times, polls, missed = [], [], 0
    for _ in range(probes):
        sha = random_item(rng, folders)
        word = unique_word(rng, "zsigue")
        writer.send(None, "PATCH", f"/api/items/{sha}",
                    {"caption": f"Prueba de búsqueda {word}",
                     "base_revision": writer.revision(sha)})
        answered = time.perf_counter()
        url = "/api/items?" + urlencode({"limit": 5, "q": word})
        for n in itertools.count(1):
            status, data, _ = writer.client.get(url)
            if status == 200 and any(i["sha256"] == sha for i in json.loads(data)["items"]):
                times.append(time.perf_counter() - answered)
                polls.append(n)
                break
            if time.perf_counter() - answered > limit_s:
                missed += 1
                break
            time.sleep(0.02)
    return times, polls, missed


def zip_central_directory(tail: bytes, total: int) -> tuple[int | None, list[str]]:
    """(entries, names) from the end of a ZIP (`tail`, the last bytes of `total`)."""
    end = tail.rfind(b"PK\x05\x06")
    if end < 0 or end + 22 > len(tail):
        return None, []
    entries = int.from_bytes(tail[end + 10:end + 12], "little")
    offset = int.from_bytes(tail[end + 16:end + 20], "little")
    if entries == 0xFFFF or offset == 0xFFFFFFFF:  # ZIP64: its end record says
        end64 = tail.rfind(b"PK\x06\x06", 0, end)
        if end64 < 0:
            return None, []
        entries = int.from_bytes(tail[end64 + 32:end64 + 40], "little")
        offset = int.from_bytes(tail[end64 + 48:end64 + 56], "little")
    start = offset - (total - len(tail))
    if start < 0:
        return entries, []  # the directory began before the tail kept
    names, at = [], start
    while tail[at:at + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = (int.from_bytes(tail[at + k:at + k + 2], "little")
                                            for k in (28, 30, 32))
        names.append(tail[at + 46:at + 46 + name_len].decode("utf-8", "replace"))
        at += 46 + name_len + extra_len + comment_len
    return entries, names


def measure_zip(server: Server, client: Client, shas: Sequence[str], cpu: CpuClock
                ) -> ZipFigures:
    """POST /api/zip, the body read and thrown away; memory watched all along."""
    figures = ZipFigures(len(shas))
    figures.before = server.memory_mb()
    figures.peak_reset = server.reset_peak()
    sampled = [0.0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError, KeyError):
                sampled[0] = max(sampled[0], server.memory_mb()[1])
            done.wait(0.05)

    watcher = threading.Thread(target=watch, name="zip-memory", daemon=True)
    watcher.start()
    body = json.dumps({"sha256": list(shas), "variant": "original"}).encode()
    headers = client.headers({"X-CSRF-Token": client.csrf, "Content-Type": "application/json"})
    tail: list[bytes] = []
    tail_len, keep = 0, 8 * 2**20
    conn = client._connection()
    cpu_before, client_cpu = cpu(), time.thread_time()
    try:
        started = time.perf_counter()
        conn.request("POST", "/api/zip", body=body, headers=headers)
        response = conn.getresponse()
        figures.headers_ms = (time.perf_counter() - started) * 1000
        figures.status = response.status
        if response.status != 200:
            figures.problems.append(f"HTTP {response.status} {response.read()[:200]!r}")
        else:
            first = response.read1(2**16)
            figures.first_byte_ms = (time.perf_counter() - started) * 1000
            total = len(first)
            tail.append(first)
            tail_len = total
            buffer = memoryview(bytearray(2**20))
            while n := response.readinto(buffer):
                total += n
                tail.append(bytes(buffer[:n]))
                tail_len += n
                while tail_len - len(tail[0]) >= keep:
                    tail_len -= len(tail.pop(0))
            figures.seconds = time.perf_counter() - started
            figures.bytes = total
        if response.will_close:
            client.close()
    except Exception as exc:
        client.close()
        figures.problems.append(f"{exc!r}")
    finally:
        figures.client_cpu_s = time.thread_time() - client_cpu
        figures.server_cpu_s = (cpu() - cpu_before) / 1e9
        done.set()
        watcher.join()
    figures.hwm_after, figures.rss_after = server.memory_mb()
    figures.rss_max_sampled = sampled[0]
    if figures.bytes:
        entries, names = zip_central_directory(b"".join(tail), figures.bytes)
        figures.entries = entries
        figures.errors_entry = "ERRORES.txt" in names
        if entries is None:
            figures.problems.append("no end of central directory: the ZIP is cut short")
        elif names and len(names) != entries:
            figures.problems.append(f"central directory lists {len(names)} names, its end "
                                    f"record says {entries}")
    return figures


def measure_editorial(server: Server, password: str, gen: Generated, opts: Options,
                      cpu: CpuClock) -> Editorial:
    client = Client(server.port)
    client.login(password)
    if not client.csrf:
        raise BenchError("the login answer carried no csrf_token")
    writer = Writer(client, cpu)
    rng = random.Random(61)
    memory_start = server.memory_mb()
    peak_reset = server.reset_peak()
    log(f"editorial: {opts.edits} caption edits")
    caption = measure_captions(writer, gen.folders, opts.edits, rng)
    log(f"editorial: {opts.edits} approvals and withdrawals")
    approval, approve, withdraw = measure_approvals(writer, gen.folders, opts.edits, rng)
    log(f"editorial: batch captions of {BATCH_SIZE} items, {opts.batches} of each layout")
    one, spread, batch_search = measure_batches(writer, gen.folders, opts.batches, rng)
    follow_s, follow_polls, missed = measure_follow(writer, gen.folders, rng)
    memory_edits = server.memory_mb()
    mb = len(gen.originals) * gen.original_bytes / 2**20
    log(f"editorial: a ZIP of {len(gen.originals):,} originals ({mb:,.0f} MB)")
    zipped = measure_zip(server, client, gen.originals, cpu)
    client.close()
    return Editorial(caption, approval, approve, withdraw, one, spread, follow_s, follow_polls,
                     missed, batch_search, memory_start, memory_edits, peak_reset, zipped)


# -- profile ---------------------------------------------------------------------------------


def profile_routes(config_path: Path, root: Path, password: str, paths: Paths,
                   count: int = 60) -> list[str]:
    """Each named route `count` times through app.test_client() under cProfile."""
    from appliance import config as config_mod
    from appliance.web import create_app
    from appliance.web.context import EXTENSION

    config = config_mod.load(config_path, environ={}, data_dir=root)
    app = create_app(config)
    lines = ["Profile (in-process, app.test_client(), cProfile; cumulative ms per request):"]
    try:
        client = app.test_client()
        response = client.post("/api/login", json={"username": USER, "password": password})
        if response.status_code != 200:
            raise BenchError(f"in-process login failed: {response.status_code}")
        rng = random.Random(5)
        for label, make, _ in latency_routes(paths)[1:]:
            urls = [make(rng) for _ in range(count)]
            for url in urls[:5]:
                client.get(url)
            profiler = cProfile.Profile()
            started = time.perf_counter()
            profiler.enable()
            for url in urls:
                client.get(url)
            profiler.disable()
            per_ms = (time.perf_counter() - started) * 1000 / count
            stats = pstats.Stats(profiler)
            rows = []  # (cumulative s, own s, calls, where, in this checkout)
            for (file, line, func), (_, calls, own, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
                ours = file.startswith(str(REPO)) and "/.venv/" not in file \
                    and func != "wrapper"
                where = f"{os.path.relpath(file, REPO) if ours else Path(file).name}:{line}" \
                    f"({func})" if line else func
                rows.append((cum, own, calls, where, ours))
            lines.append(f"  {label}: {per_ms:.1f} ms per request under the profiler; "
                         "this checkout's functions by cumulative time:")
            for cum, own, calls, where, _ in sorted((r for r in rows if r[4]), reverse=True)[:8]:
                if cum * 1000 / count < 0.2:
                    break
                lines.append(f"      {cum * 1000 / count:7.2f} ms cum {own * 1000 / count:6.2f} own"
                             f" {calls / count:7.1f} calls  {where}")
            own = sorted(rows, key=lambda r: r[1], reverse=True)[:6]
            lines.append("      most own time, anywhere: " + "; ".join(
                f"{r[3]} {r[1] * 1000 / count:.2f}" for r in own))
    finally:
        app.extensions[EXTENSION].close()
    return lines


# -- report ----------------------------------------------------------------------------------


def row(label: str, value: str, target: str = "", result: str = "") -> str:
    return f"  {label:<46} {value:>16}  {target:>10}  {result}"


def code_line() -> str:
    """Which code was measured: the commit, how many files differ from it, and a digest of
    the web UI's, the query index's and the editorial write path's sources as they are now
    (two runs with the same digest measured the same code)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True,
                              text=True).stdout.strip()

    digest = hashlib.sha256()
    sources = [*sorted((REPO / "appliance" / "query").glob("*.py")),
               REPO / "ingest" / "derive" / "plan.py",
               *sorted((REPO / "appliance" / "web").rglob("*.py")),
               *sorted((REPO / "appliance" / "web" / "templates").glob("*.html")),
               *(REPO / "appliance" / f"{name}.py" for name in
                 ("editorial", "catalog", "storage", "fsutil", "fields", "keyindex")),
               *sorted((REPO / "appliance" / "delivery").glob("*.py"))]
    for path in sources:
        digest.update(path.read_bytes())
    changed = len(git("status", "--porcelain", "--untracked-files=no").splitlines())
    return (f"code: commit {git('rev-parse', '--short', 'HEAD') or '?'}, {changed} tracked "
            f"files changed; web + query + editorial sources digest {digest.hexdigest()[:12]}")


def host_line(path: Path) -> str:
    fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", str(path)],
                        capture_output=True, text=True).stdout.strip() or "?"
    return (f"host: {platform.node()}, {os.cpu_count()} CPUs {platform.machine()}, Linux "
            f"{platform.release()}, Python {platform.python_version()}, data folder on {fs}")


def latency_lines(figures: list[RouteFigures]) -> list[str]:
    base = next(f for f in figures if f.label == BASELINE)
    lines = [f"  {'route':<38} {'median':>7} {'p95':>7} {'p99':>7} {'max':>7} "
             f"{'srv CPU':>8} {'x base':>7} {'KB':>6}  target",
             f"  {'':<38} {'ms':>7} {'ms':>7} {'ms':>7} {'ms':>7} {'ms/req':>8}"]
    for f in figures:
        if not f.ms:
            lines.append(f"  {f.label:<38} no successful sample ({f.errors} errors)")
            continue
        target = (f"{verdict(f.ok)}" if f.named else f"(info: {verdict(f.ok).lower()})") \
            if f.label != BASELINE else "baseline"
        lines.append(
            f"  {f.label:<38} {f.median:7.2f} {f.p95:7.2f} {percentile(f.ms, 0.99):7.2f} "
            f"{max(f.ms):7.1f} {statistics.mean(f.cpu_ms):8.2f} "
            f"{f.median / base.median:7.1f} {statistics.mean(f.bytes) / 1000:6.1f}  {target}"
            + (f"  ({f.errors} errors)" if f.errors else ""))
    return lines


def concurrency_lines(c: Concurrency) -> list[str]:
    all_ms = [ms for _, ms in c.samples]
    lines = [row("requests (all kinds)", f"{len(all_ms):,}"),
             row("requests per second", f"{len(all_ms) / c.seconds:,.1f}"),
             row("latency p50 / p95 / p99 (ms)",
                 f"{percentile(all_ms, 0.5):.0f} / {percentile(all_ms, 0.95):.0f} / "
                 f"{percentile(all_ms, 0.99):.0f}" if all_ms else "-"),
             row("errors (non-2xx/304 or exception)", f"{len(c.errors)}", "0",
                 verdict(not c.errors)),
             row("server CPU (cores busy on average)", f"{c.cpu_s / c.seconds:.2f}"),
             "  by kind:                          count     p50 ms   p95 ms   p99 ms"]
    kinds: dict[str, list[float]] = {}
    for kind, ms in c.samples:
        kinds.setdefault(kind, []).append(ms)
    for kind, values in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"    {kind:<30} {len(values):7,}  {percentile(values, 0.5):8.1f} "
                     f"{percentile(values, 0.95):8.1f} {percentile(values, 0.99):8.1f}")
    for error in c.errors[:5]:
        lines.append(f"    error: {error}")
    return lines


def editorial_lines(e: Editorial, base_ms: float, opts: Options) -> list[str]:
    lines = [f"  {'write':<46} {'n':>4} {'median':>7} {'p95':>7} {'max':>7} {'srv CPU':>8} "
             f"{'x base':>7}  target",
             f"  {'':<46} {'':>4} {'ms':>7} {'ms':>7} {'ms':>7} {'ms/req':>8}"]
    for fig in (e.caption, e.approval, e.approve, e.withdraw, e.batch_folder, e.batch_spread):
        if not fig.ms:
            lines.append(f"  {fig.label:<46} no successful sample ({len(fig.errors)} errors)")
            continue
        target = f"p95 <= {fig.target_ms:.0f} ms: {verdict(fig.ok)}"
        if fig.label.startswith("  "):
            target = f"(info: {verdict(fig.ok).lower()})"
        lines.append(f"  {fig.label:<46} {len(fig.ms):>4} {fig.median:7.1f} {fig.p95:7.1f} "
                     f"{max(fig.ms):7.1f} {statistics.mean(fig.cpu_ms):8.1f} "
                     f"{fig.median / base_ms:7.0f}  {target}"
                     + (f"  ({len(fig.errors)} errors)" if fig.errors else ""))
    for fig in (e.caption, e.approve, e.withdraw, e.batch_folder, e.batch_spread):
        for error in fig.errors[:3]:
            lines.append(f"    error: {error}")
    sizes = sorted({*e.batch_folder.sizes, *e.batch_spread.sizes})
    if sizes and sizes != [BATCH_SIZE]:
        lines.append(f"  (batches held {', '.join(map(str, sizes))} items: folders of this "
                     "plan are smaller than 500)")
    follow = (f"max {max(e.follow_s) * 1000:.0f} ms, median "
              f"{statistics.median(e.follow_s) * 1000:.0f} ms, found at poll "
              f"{'/'.join(map(str, e.follow_polls))}" if e.follow_s else "never found")
    lines += [
        f"  the index follows a caption edit ({len(e.follow_s) + e.follow_missed} probes: "
        f"edit's answer -> GET /api/items?q=WORD finds it): {follow}"
        + (f"; {e.follow_missed} not found within 5 s" if e.follow_missed else "")
        + f"  target <= {TARGET_FOLLOW_S:.0f} s: {verdict(follow_ok(e))}",
        f"  the last batch's caption word finds {e.batch_search[0]} of its "
        f"{e.batch_search[1]} items: {verdict(e.batch_search[0] == e.batch_search[1])}",
        "  server memory (VmHWM / VmRSS MB): at the phase's start "
        f"{e.memory_start[0]:.0f} / {e.memory_start[1]:.0f}; after the edits "
        f"{e.memory_edits[0]:.0f} / {e.memory_edits[1]:.0f}"
        + (" (VmHWM reset at the start: the edits' own peak)" if e.edits_peak_reset else ""),
    ]
    z = e.zip
    lines.append(f"  ZIP of {z.items:,} originals (variant original, "
                 f"POST /api/zip, read and thrown away by the client):")
    if z.status != 200 or not z.bytes:
        lines.append(f"    failed: {'; '.join(z.problems) or f'HTTP {z.status}'}")
        return lines
    lines += [
        row("  size / time", f"{z.bytes / 2**20:,.0f} MB / {z.seconds:.1f} s"),
        row("  throughput (MB/s, MB = 2^20 bytes)", f"{z.mb_s:,.0f}"),
        row("  response headers / first ZIP byte (ms)",
            f"{z.headers_ms:.0f} / {z.first_byte_ms:.0f}"),
        row("  first byte, x base", f"{z.first_byte_ms / base_ms:,.0f}"),
        row("  whole ZIP, x base", f"{z.seconds * 1000 / base_ms:,.0f}"),
        row("  server CPU (s; s per GB)", f"{z.server_cpu_s:.1f}; "
            f"{z.server_cpu_s / (z.bytes / 2**30):.2f}"),
        row("  client CPU (s): the reader's own share", f"{z.client_cpu_s:.1f}"),
        row("  VmHWM / VmRSS before (MB)", f"{z.before[0]:.0f} / {z.before[1]:.0f}"),
        row("  VmHWM after (reset before the ZIP)" if z.peak_reset else "  VmHWM after",
            f"{z.hwm_after:.0f}", f"<= {TARGET_RSS_MB:.0f}",
            verdict(z.hwm_after <= TARGET_RSS_MB)),
        row("  peak growth over VmRSS before (MB)", f"{z.growth_mb:+.1f}",
            f"<= {ZIP_GROWTH_MB:.0f}", verdict(z.growth_mb <= ZIP_GROWTH_MB)),
        row("  VmRSS sampled every 50 ms: max / after", f"{z.rss_max_sampled:.0f} / "
            f"{z.rss_after:.0f}"),
        row("  central directory: entries, ERRORES.txt",
            f"{z.entries}, {'yes' if z.errors_entry else 'no'}", f"{z.items}, no",
            verdict(z.complete)),
        *[f"    problem: {p}" for p in z.problems],
        f"  (each original is the same {ORIGINAL_SIZE[0]}x{ORIGINAL_SIZE[1]} JPEG of "
        "~1.3 MB, hard-linked: read from the page cache, not the disk)",
    ]
    return lines


def follow_ok(e: Editorial) -> bool:
    return bool(e.follow_s) and not e.follow_missed and max(e.follow_s) <= TARGET_FOLLOW_S


def editorial_summary(e: Editorial) -> list[str]:
    out = []
    labels = ("caption edit", "approve / withdraw", "batch 500, 1 folder",
              f"batch 500, {e.batch_spread.label.split(', ')[-1]}")
    for label, fig in zip(labels, (e.caption, e.approval, e.batch_folder, e.batch_spread),
                          strict=True):
        if fig.target_ms >= 1000:
            value = (f"{fig.median / 1000:.2f} / {max(fig.ms) / 1000:.2f}" if fig.ms else "-")
            out.append(row(f"{label} median / max (s)", value,
                           f"<= {fig.target_ms / 1000:.0f}", verdict(fig.ok)))
        else:
            value = f"{fig.median:.1f} / {fig.p95:.1f}" if fig.ms else "-"
            out.append(row(f"{label} median / p95 (ms)", value, f"p95 <= {fig.target_ms:.0f}",
                           verdict(fig.ok)))
    out.append(row("search finds an edit (max, s)",
                   f"{max(e.follow_s):.3f}" if e.follow_s else "never",
                   f"<= {TARGET_FOLLOW_S:.0f}", verdict(follow_ok(e))))
    z = e.zip
    out += [row(f"ZIP of {z.items:,}: MB/s, first byte (ms)",
                f"{z.mb_s:,.0f}, {z.first_byte_ms:.0f}" if z.bytes else "failed", "complete",
                verdict(z.complete)),
            row("ZIP: server VmHWM after / growth (MB)",
                f"{z.hwm_after:.0f} / {z.growth_mb:+.0f}",
                f"{TARGET_RSS_MB:.0f} / {ZIP_GROWTH_MB:.0f}", verdict(z.memory_ok))]
    return out


def editorial_json(e: Editorial, base_ms: float) -> dict[str, Any]:
    def figures(fig: WriteFigures) -> dict[str, Any]:
        out = fig.as_json()
        if fig.ms:
            out["x_base"] = fig.median / base_ms
        return out

    z = e.zip
    return {
        "caption_edit": figures(e.caption), "approval": figures(e.approval),
        "approve": figures(e.approve), "withdraw": figures(e.withdraw),
        "batch_one_folder": figures(e.batch_folder),
        "batch_spread": figures(e.batch_spread),
        "follow_s": e.follow_s, "follow_polls": e.follow_polls,
        "follow_missed": e.follow_missed, "follow_ok": follow_ok(e),
        "batch_search_found": list(e.batch_search),
        "rss_mb": {"start": e.memory_start, "after_edits": e.memory_edits,
                   "peak_reset": e.edits_peak_reset},
        "zip": {"items": z.items, "status": z.status, "bytes": z.bytes, "seconds": z.seconds,
                "mb_s": z.mb_s, "headers_ms": z.headers_ms, "first_byte_ms": z.first_byte_ms,
                "first_byte_x_base": z.first_byte_ms / base_ms,
                "seconds_x_base": z.seconds * 1000 / base_ms,
                "server_cpu_s": z.server_cpu_s, "client_cpu_s": z.client_cpu_s,
                "rss_before_mb": z.before, "hwm_after_mb": z.hwm_after,
                "rss_after_mb": z.rss_after, "rss_max_sampled_mb": z.rss_max_sampled,
                "growth_mb": z.growth_mb, "memory_ok": z.memory_ok, "entries": z.entries,
                "errors_entry": z.errors_entry, "complete": z.complete,
                "problems": z.problems},
    }


# -- main ------------------------------------------------------------------------------------


def run(opts: Options) -> None:
    started = time.perf_counter()
    opts.keep.mkdir(parents=True, exist_ok=True)
    gen = generate(opts)
    data = DataDir.at(gen.root)
    if gen.reused:
        log(f"reusing the data folder generated {gen.built_at} in {gen.build_s:.0f} s "
            f"({gen.root}; same parameters; --rebuild to generate again)")
    restored = reset_run_state(data, pristine_catalog(opts.keep))
    if restored:
        log(f"put back {restored} catalog shards a previous run had edited")
    log("building the query index")
    index = build_index(data)
    log(f"query index built in {index.first_s:.1f} s ({index.size_mb:.0f} MB)")
    config = write_config(opts.keep)
    code = code_line()  # what the server is about to import
    password = secrets.token_urlsafe(18)
    add_user(config, gen.root, password)
    paths = Paths(gen, index)
    server = Server(config, gen.root, opts.keep / "server.log", opts.server_env)
    cpu = CpuClock(server.pid)
    host = HostLoad(server.pid)
    try:
        log(f"server pid {server.pid} on 127.0.0.1:{server.port}, listening after "
            f"{server.start_s:.1f} s")
        memory_start = server.memory_mb()
        with host.phase("latency"):
            figures = measure_latency(server, password, paths, opts.samples, cpu)
        memory_latency = server.memory_mb()
        with host.phase("concurrency"):
            conc = measure_concurrency(server, password, paths, opts.clients, opts.seconds,
                                       cpu)
        memory_conc = server.memory_mb()
        with host.phase("editorial"):
            editorial = measure_editorial(server, password, gen, opts, cpu)
    finally:
        server.stop()
    problems, queued = server.log_problems()
    profile = profile_routes(config, gen.root, password, paths) if opts.profile else []

    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    peak_rss = max(memory_latency[0], memory_conc[0], conc.after_logins[0], conc.max_rss_mb,
                   editorial.memory_edits[0], editorial.zip.hwm_after,
                   editorial.zip.rss_max_sampled)
    base_ms = next(f for f in figures if f.label == BASELINE).median
    rss_ok = peak_rss <= TARGET_RSS_MB
    named = [f for f in figures if f.named]
    all_ms = [ms for _, ms in conc.samples]
    generated = (f"reused (generated {gen.built_at} in {gen.build_s:.0f} s; same parameters)"
                 if gen.reused else f"generated in {gen.build_s:.1f} s")
    lines = [
        "",
        f"Acopio web benchmark, {stamp}",
        host_line(gen.root),
        host.line(),
        code,
        f"data: {opts.items:,} items in {opts.activities} activities "
        f"({opts.items // opts.activities} per folder), grid images for the newest "
        f"{len(gen.thumbs):,}, originals for the newest {len(gen.originals):,} "
        f"({gen.original_bytes / 1e6:.1f} MB each, hard-linked); {gen.root}: {generated}",
        f"query index first build (ItemIndex.refresh(force=True)): {index.first_s:.1f} s, "
        f"{index.size_mb:.0f} MB; a refresh with nothing new: {index.noop_ms:.1f} ms",
        f"server: python -m appliance serve (pid {server.pid}, 8 waitress threads by default),"
        f" listening {server.start_s:.1f} s after start"
        + (f"; extra environment: {' '.join(f'{k}={v}' for k, v in opts.server_env)}"
           if opts.server_env else ""),
        "",
        f"1. Latency: one keep-alive loopback connection, {WARMUPS} warm-ups then "
        f"{opts.samples} requests per route, routes interleaved",
        "   times are client round trips (server time + ~0.2 ms); srv CPU = the server "
        f"process's CPU per request ({cpu.source}); x base = median / baseline median",
        f"   target for the named routes: median <= {TARGET_MEDIAN_MS:.0f} ms and p95 <= "
        f"{TARGET_P95_MS:.0f} ms",
        *latency_lines(figures),
        "",
        "2. Memory of the server process (MB = 2^20 bytes)",
        row("measure", "value", "target", "result"),
        row("at start (VmHWM / VmRSS)", f"{memory_start[0]:.0f} / {memory_start[1]:.0f}"),
        row("after the latency phase (VmHWM / VmRSS)",
            f"{memory_latency[0]:.0f} / {memory_latency[1]:.0f}", f"<= {TARGET_RSS_MB:.0f}",
            verdict(memory_latency[0] <= TARGET_RSS_MB)),
        row(f"after {conc.clients} concurrent logins (VmHWM / VmRSS)",
            f"{conc.after_logins[0]:.0f} / {conc.after_logins[1]:.0f}",
            f"<= {TARGET_RSS_MB:.0f}", verdict(conc.after_logins[0] <= TARGET_RSS_MB)),
        row("after the concurrency phase (VmHWM / VmRSS)",
            f"{memory_conc[0]:.0f} / {memory_conc[1]:.0f}", f"<= {TARGET_RSS_MB:.0f}",
            verdict(memory_conc[0] <= TARGET_RSS_MB)),
        "  (VmHWM was reset after the logins, so the last peak is the browsing's, on top of "
        "whatever the logins left resident: compare VmRSS after the logins)"
        if conc.peak_reset else
        "  (VmHWM could not be reset after the logins: the last line's peak includes them)",
        "",
        f"3. Concurrency: {conc.clients} client threads, {conc.clients} sessions, one "
        f"keep-alive connection each, no think time, {conc.seconds:.0f} s",
        "   mix: recent 25% (page 1), recent later pages 10%, activity pages 25%, item pages"
        f" 20%, searches 20% (30% with filters); up to {THUMBS_PER_GRID} grid images after each"
        f" grid page; /api/status every {STATUS_EVERY_S:.0f} s per client",
        *concurrency_lines(conc),
        f"  server log: {len(problems)} error/warning lines" + (
            "" if not problems else ": " + " | ".join(problems[:3]))
        + f"; {queued:,} waitress 'Task queue depth' warnings (a request waited for one of "
        "the 8 threads)",
        "",
        f"4. Editorial (issue 6): one keep-alive connection as the director ({USER}), "
        "writes with X-CSRF-Token; times are client round trips; x base = median / the "
        "static baseline's median of phase 1",
        *editorial_lines(editorial, base_ms, opts),
        "",
        *([*profile, ""] if profile else []),
        "Summary",
        row("measure", "value", "target", "result"),
        *[row(f"{f.label} median / p95 (ms)", f"{f.median:.1f} / {f.p95:.1f}",
              f"{TARGET_MEDIAN_MS:.0f} / {TARGET_P95_MS:.0f}", verdict(f.ok))
          for f in named if f.ms],
        row("server peak RSS, VmHWM (MB), whole run", f"{peak_rss:.0f}",
            f"<= {TARGET_RSS_MB:.0f}", verdict(rss_ok)),
        row("  peak while browsing (VmHWM reset after logins)" if conc.peak_reset
            else "  after the concurrency phase", f"{memory_conc[0]:.0f}",
            f"<= {TARGET_RSS_MB:.0f}", verdict(memory_conc[0] <= TARGET_RSS_MB)),
        row(f"{conc.clients} clients: errors", f"{len(conc.errors)}", "0",
            verdict(not conc.errors)),
        row(f"{conc.clients} clients: requests/s", f"{len(all_ms) / conc.seconds:,.1f}"),
        row(f"{conc.clients} clients: p95 (ms)",
            f"{percentile(all_ms, 0.95):.0f}" if all_ms else "-"),
        *editorial_summary(editorial),
        "",
        f"benchmark wall time: {time.perf_counter() - started:.0f} s",
        "reproduce: " + " ".join(["./scripts/bench web", *map(shlex.quote, opts.argv)])
        + (f"  (BENCH_WEB_SECONDS={os.environ['BENCH_WEB_SECONDS']})"
           if os.environ.get("BENCH_WEB_SECONDS") else ""),
    ]
    print("\n".join(lines), flush=True)
    save_results(opts, gen, index, figures, memory_latency, memory_conc, conc, editorial,
                 base_ms, host)


def save_results(opts: Options, gen: Generated, index: IndexBuild,
                 figures: list[RouteFigures], memory_latency: tuple[float, float],
                 memory_conc: tuple[float, float], conc: Concurrency, editorial: Editorial,
                 base_ms: float, host: HostLoad) -> None:
    out_dir = Path(os.environ.get("BENCH_OUT") or REPO / "bench-results") / "web"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"results-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    all_ms = [ms for _, ms in conc.samples]
    out.write_text(json.dumps({
        "argv": list(opts.argv), "params": opts.params, "reused_data": gen.reused,
        "generate_s": gen.build_s, "index_first_build_s": index.first_s,
        "routes": {f.label: {"median_ms": f.median, "p95_ms": f.p95,
                             "cpu_ms": statistics.mean(f.cpu_ms), "n": len(f.ms),
                             "errors": f.errors} for f in figures if f.ms},
        "rss_mb": {"after_latency": memory_latency, "after_logins": conc.after_logins,
                   "after_concurrency": memory_conc, "peak_reset": conc.peak_reset},
        "concurrency": {"clients": conc.clients, "seconds": conc.seconds,
                        "requests": len(all_ms), "errors": len(conc.errors),
                        "rps": len(all_ms) / conc.seconds,
                        "p95_ms": percentile(all_ms, 0.95) if all_ms else None},
        "baseline_median_ms": base_ms,
        "host_other_cores": dict(host.phases),
        "editorial": editorial_json(editorial, base_ms),
    }, indent=1))
    print(f"figures saved to {out}")


@contextlib.contextmanager
def _no_sigint_traceback() -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        log("interrupted")
        raise SystemExit(130) from None


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    with _no_sigint_traceback():
        try:
            run(opts)
        except BenchError as exc:
            log(f"error: {exc}")
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
