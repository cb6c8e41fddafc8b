"""Benchmark sync to headquarters: throughput against rsync, the bandwidth cap, resends.

Why: issue 7 sets three targets for `acopio sync`, measured the way a kit really syncs (a
real `acopio hub` process, a kit paired with it, `acopio sync --once` as a child process timed
from outside until it exits 0, that is until the hub has verified and acknowledged everything).
It is not part of the test suite: `./scripts/bench sync`.

1. Throughput. About 1 GB of media (10 videos of 60 MB and 400 photos of 1 MB by default),
   imported into a kit with `acopio ingest`, goes to a fresh hub on 127.0.0.1; in the same
   run the same archive goes to an rsync daemon on 127.0.0.1 (`rsync -a --whole-file` and
   `rsync -a`, the delta algorithm, to `rsync://127.0.0.1:PORT/bench/`). Target: acopio's
   throughput >= 0.8 of rsync's (of the faster of the two rsync variants). The page cache is
   dropped before every measured run (as bench_ingest does; when the kernel refuses, the
   archive is read into the cache instead and the output says so); runs alternate; medians.
   The hub hashes every file as it arrives, fsyncs it before keeping it, and reads it back
   from its disk (past the page cache) for the kit's `?verify=1`: where the time goes is
   measured inside both processes (see "probes") and shown with its share of the wall
   time. `sync.chunk_mb` is tried at 8 (the default, judged) and 32. A third side, the
   "floor", times the least a receiver needs that does the same per file before it
   acknowledges it (design decision 8): hash while copying, fsync, read back past the page
   cache, hash again; one process, three threads overlapping disk and CPUs, no network (see
   `floor_main`). Its ratio to rsync is the most of the target such an acknowledgement
   leaves on this machine.
2. Bandwidth cap. About 30 MB (a 10 MB video and 20 photos of 1 MB) at `sync.bandwidth_kbps`
   = 2048 (KiB/s) through a counting TCP relay. Target: the achieved rate, the media bytes
   over the time from the kit's first byte on the wire to its last, >= 90% of the cap.
3. Interruptions. About 300 MB (3 videos and 120 photos of the same card) through a relay
   that cuts the connection (RST to the kit, close to the hub) 20 times, each when the bytes
   forwarded from the kit reach a random count; `acopio sync --once` is run again after it
   fails until it exits 0. Reported: the bytes the kit put on the wire over those of a clean
   run of the same data through the same relay, per interruption, against the chunk size
   (an upload resumes from the hub's offset: at most the chunk in flight goes again).
4. The same over a paced link. Part 1's card, rsync sides and acopio (at the first of
   `--chunks`, with `sync.parallel_uploads` 2, the default, judged, and 1), but the hub and
   the rsync daemon run in a network namespace of the benchmark's own, reached through a veth
   pair whose two ends `tc tbf` shapes to `--link-rate` (1 Gbit/s by default, an office
   LAN's best; _bench_link). Loopback has no rate, so part 1 measures CPU only; here the link
   sets rsync's pace, as it does at headquarters. The issue's target is judged in part 1;
   this part reports the same ratio. Needs root.

Inputs are incompressible media: random bytes in real containers, so nothing on the way can
shrink them and every file is valid media that ingest files by its capture time.

* Photos: a small JPEG from Pillow with EXIF make, model, DateTimeOriginal and
  OffsetTimeOriginal, grown to the wanted size with COM segments of random bytes placed after
  the APPn segments (a valid JPEG; the import's structure check walks over them).
* Videos: one real 2 s MPEG-4 + AAC clip from ffmpeg, remuxed per video with its own
  creation_time (moov first), then a top-level ISO BMFF `free` box of random bytes appended
  up to the wanted size (parsers skip it; ffprobe reads the clip).

Inputs and the kits' data folders (one `acopio ingest` each) are built once and cached in the
work folder (default `$BENCH_OUT/sync`, that is `bench-results/sync`, git-ignored); `--rebuild`
builds them again. Each measured run gets a fresh kit (the cached one, its archive hard-linked,
its state copied), a fresh hub data folder and a fresh pairing; both are deleted afterwards.

Probes: the hub and `acopio sync --once` run through this script (`--probe hub|kit OUT --
ARGS`), which wraps a few functions with timers before calling the CLI, and writes the totals
(calls, seconds, nested under the probe they ran in) to OUT at exit. The wrappers cost a
few microseconds per call (a few thousand calls per GB). The kit's log also gives each
original's time from "uploading" to "acknowledged", per kind of file, and whether the last
photos of a folder take longer than the first (a cost that grows with the folder).
`--hub-prelude FILE` / `--kit-prelude FILE` run a Python file inside the hub / every kit
process first, to measure a change (a monkeypatch) before making it; the report then says
it is not the stock code.

Output: the summary on stdout, the figures (every run, with its probe totals) in
`results-<UTC time>.json` and the kits' logs of the last run in `logs/`, in the work folder.

Exit status: 0 when the benchmark ran, whatever the PASS/FAIL words say; 2 when it could not
(a tool missing, an ingest or a sync that failed, not enough disk).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

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
    tree_files,
)
from _bench_link import LinkError, PacedLink

REPO = Path(__file__).resolve().parents[2]
SELF = Path(__file__).resolve()
INPUT_FORMAT = 1  # bump when the way inputs are built changes: cached inputs are rebuilt
MB = 1_000_000
MIB = 1024 * 1024
TIMEZONE = "America/Mexico_City"
ZONE = timezone(timedelta(hours=-6))  # no summer time since 2022
KIT = "kit-bench"

TARGET_RATIO = 0.8
TARGET_CAP_SHARE = 0.9

CARD_START = datetime(2026, 3, 14, 10, 0, tzinfo=ZONE)
COM_MAX = 65533  # payload of one JPEG COM segment (its length field counts itself: 65535)
BLOCK = 4 * MIB


class BenchError(Exception):
    """The benchmark cannot run or a measured run did not do the work; nothing to report."""


# -- options ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    videos: int
    video_mb: float
    photos: int
    photo_mb: float
    chunks: tuple[int, ...]
    repeat: int
    cap_kbps: int
    cap_mb: float
    cuts: int
    cut_mb: float
    cut_chunk_mb: int
    seed: int
    parts: tuple[str, ...]
    workdir: Path
    rebuild: bool
    hub_prelude: str
    kit_prelude: str
    link_rate: str
    argv: tuple[str, ...]

    @property
    def card_mb(self) -> float:
        return self.videos * self.video_mb + self.photos * self.photo_mb


PARTS = ("throughput", "cap", "cuts", "lan")


def parse_args(argv: Sequence[str]) -> Options:
    default_out = Path(os.environ.get("BENCH_OUT") or REPO / "bench-results") / "sync"
    p = argparse.ArgumentParser(
        prog="scripts/bench sync",
        description="acopio sync vs rsync to a daemon on loopback, the bandwidth cap, and "
                    "bytes sent again across forced interruptions. MB = 10^6 bytes.")
    p.add_argument("--videos", type=int, help="videos on the card (default 10)")
    p.add_argument("--video-mb", type=float, help="size of each video, MB (default 60)")
    p.add_argument("--photos", type=int, help="photos on the card (default 400)")
    p.add_argument("--photo-mb", type=float, help="size of each photo, MB (default 1)")
    p.add_argument("--chunks", help="sync.chunk_mb values to time, comma-separated; the "
                   "first is judged (default 8,32)")
    p.add_argument("--repeat", type=int, help="measured runs of each side (default 3)")
    p.add_argument("--cap-kbps", type=int, help="sync.bandwidth_kbps of the cap test "
                   "(KiB/s, default 2048)")
    p.add_argument("--cap-mb", type=float, help="media sent under the cap, MB (default 30)")
    p.add_argument("--cuts", type=int, help="forced interruptions (default 20)")
    p.add_argument("--cut-mb", type=float, help="media sent across the interruptions, MB "
                   "(default 300; a share of the card's videos and photos)")
    p.add_argument("--cut-chunk-mb", type=int, help="sync.chunk_mb of the interruption test "
                   "(default the first of --chunks)")
    p.add_argument("--seed", type=int, default=20260314, help="random seed of the cut points")
    p.add_argument("--link-rate", default="1gbit",
                   help="rate of the paced link of the lan part, tc syntax (default 1gbit)")
    p.add_argument("--only", help=f"comma-separated parts to run: {', '.join(PARTS)}")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 x 20 MB videos + 40 photos, 1 repeat, chunk 8 only, "
                        "6 MB under the cap, 5 cuts over 40 MB")
    p.add_argument("--workdir", type=Path, default=default_out,
                   help=f"cached inputs and scratch space (default {default_out})")
    p.add_argument("--rebuild", action="store_true", help="build the cached inputs again")
    p.add_argument("--hub-prelude", type=Path, metavar="FILE",
                   help="a Python file run inside the hub before it starts: try a change "
                        "(a monkeypatch) without editing the code; the report says so")
    p.add_argument("--kit-prelude", type=Path, metavar="FILE",
                   help="the same inside every `acopio sync --once`")
    args = p.parse_args(argv)
    q = args.quick
    chunks = tuple(int(c) for c in (args.chunks or ("8" if q else "8,32")).split(",") if c)
    parts = tuple(x.strip() for x in (args.only or ",".join(PARTS)).split(",") if x.strip())
    opts = Options(
        videos=pick(args.videos, 2 if q else 10),
        video_mb=pick(args.video_mb, 20.0 if q else 60.0),
        photos=pick(args.photos, 40 if q else 400),
        photo_mb=pick(args.photo_mb, 1.0),
        chunks=chunks,
        repeat=pick(args.repeat, 1 if q else 3),
        cap_kbps=pick(args.cap_kbps, 2048),
        cap_mb=pick(args.cap_mb, 6.0 if q else 30.0),
        cuts=pick(args.cuts, 5 if q else 20),
        cut_mb=pick(args.cut_mb, 40.0 if q else 300.0),
        cut_chunk_mb=pick(args.cut_chunk_mb, chunks[0] if chunks else 8),
        seed=args.seed,
        parts=parts,
        workdir=args.workdir.absolute(),
        rebuild=args.rebuild,
        hub_prelude=str(args.hub_prelude.absolute()) if args.hub_prelude else "",
        kit_prelude=str(args.kit_prelude.absolute()) if args.kit_prelude else "",
        link_rate=args.link_rate,
        argv=tuple(argv),
    )
    if not chunks or min(chunks) < 1 or opts.cut_chunk_mb < 1:
        p.error("--chunks and --cut-chunk-mb take whole MiB values >= 1")
    if opts.videos < 0 or opts.photos < 0 or opts.videos + opts.photos < 1 \
            or opts.video_mb <= 0 or opts.photo_mb <= 0:
        p.error("the card needs at least one file, and sizes must be positive")
    if opts.repeat < 1 or opts.cap_kbps < 1 or opts.cap_mb <= 0 or opts.cuts < 0 \
            or opts.cut_mb <= 0:
        p.error("--repeat, --cap-kbps, --cap-mb, --cut-mb must be positive, --cuts >= 0")
    unknown = set(parts) - set(PARTS)
    if unknown or not parts:
        p.error(f"--only takes {', '.join(PARTS)}")
    return opts


# -- small helpers ---------------------------------------------------------------------------


def require_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise BenchError(f"missing tools: {', '.join(missing)} (run ./scripts/setup as root)")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """Our settings only, never the caller's ACOPIO_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACOPIO_")}
    env.update({"ACOPIO_WEB_ZEROCONF": "false", "ACOPIO_HUB_ZEROCONF": "false",
                "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def acopio_cmd(config: Path, data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "appliance", "--config", str(config), "--data-dir",
            str(data_dir), *args]


def run_acopio(config: Path, data_dir: Path, *args: str, env: dict[str, str] | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(acopio_cmd(config, data_dir, *args), cwd=REPO, env=env or clean_env(),
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


# -- probes (run inside the hub and the kit) -------------------------------------------------


class Probes:
    """Time spent in wrapped functions, keyed by name and by the probe they ran inside."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.local = threading.local()
        self.totals: dict[str, list[float]] = {}  # key -> [calls, seconds, bytes]

    def add(self, key: str, seconds: float, nbytes: int = 0) -> None:
        with self.lock:
            entry = self.totals.setdefault(key, [0, 0.0, 0])
            entry[0] += 1
            entry[1] += seconds
            entry[2] += nbytes

    def wrap(self, owner: Any, attr: str, name: str, *,
             variant: Callable[..., str] | None = None, leaf: bool = False,
             nbytes: Callable[[Any], int] | None = None) -> None:
        fn = getattr(owner, attr)
        probes = self

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            key = name + (variant(*args, **kwargs) if variant else "")
            stack = probes.local.__dict__.setdefault("stack", [])
            if leaf and stack:
                key = f"{key} < {stack[-1]}"
            if not leaf:
                stack.append(key)
            started = time.perf_counter()
            result = None
            try:
                result = fn(*args, **kwargs)
                return result
            finally:
                elapsed = time.perf_counter() - started
                if not leaf:
                    stack.pop()
                probes.add(key, elapsed, nbytes(result) if nbytes and result else 0)

        setattr(owner, attr, timed)

    def dump(self, path: str) -> None:
        with self.lock:
            data = {k: {"calls": int(v[0]), "seconds": v[1], "bytes": int(v[2])}
                    for k, v in sorted(self.totals.items())}
        Path(path).write_text(json.dumps(data, indent=1))


def install_hub_probes(probes: Probes) -> None:
    import flask

    from ingest import copy
    from sync.hub import ledger, uploads

    probes.wrap(flask.Flask, "wsgi_app", "request",
                variant=lambda _self, environ, _sr: f"[{environ.get('REQUEST_METHOD')}]")
    probes.wrap(uploads.Uploads, "append", "Uploads.append (PATCH body to .bin)")
    probes.wrap(uploads.Uploads, "_save", "Uploads._save (offset JSON)")
    probes.wrap(uploads.Uploads, "mark_done", "Uploads.mark_done")
    probes.wrap(ledger.Hub, "finish", "Hub.finish (last chunk: hash checked, keep queued)")
    probes.wrap(ledger.Hub, "_keep_uploads", "Hub._keep_uploads (fsync, place, catalogue)")
    probes.wrap(uploads.Uploads, "sync_data", "Uploads.sync_data (the bytes' fsync)")
    probes.wrap(ledger.Hub, "object_status", "Hub.object_status",
                variant=lambda *a, **k: "[verify]" if k.get("verify") else "[plain]")
    probes.wrap(ledger.Hub, "create_upload", "Hub.create_upload")
    probes.wrap(ledger.Hub, "receive_records", "Hub.receive_records")
    probes.wrap(ledger.Hub, "changes", "Hub.changes")
    probes.wrap(copy.ReadBack, "sha256", "re-hash from disk", leaf=True,
                nbytes=lambda r: int(r[1]))
    probes.wrap(os, "fsync", "fsync", leaf=True)


CHUNK_PROBE = "chunk request (read, checksum, send, answer)"  # a PATCH, or a creation with
# the file (creation-with-upload)


def install_kit_probes(probes: Probes) -> None:
    import requests

    from sync.kit import client, evict, outbox, role, store, transport

    probes.wrap(role.SyncRole, "run_once", "SyncRole.run_once")
    probes.wrap(role.SyncRole, "push_records", "metadata out (POST /sync/records)")
    probes.wrap(role.SyncRole, "pull", "changes in (GET /sync/changes)")
    probes.wrap(outbox.Outbox, "scan", "Outbox.scan")
    probes.wrap(client.HubClient, "object_status", "GET /sync/objects",
                variant=lambda *a, **k: "?verify=1" if k.get("verify") else "")
    probes.wrap(transport.Transport, "send", "Transport.send (one original)")
    probes.wrap(transport.KitUploader, "create_url", "POST /sync/files/ (create)")
    probes.wrap(transport.KitUploader, "get_offset", "HEAD (offset)")
    probes.wrap(transport.KitRequest, "perform", CHUNK_PROBE)
    probes.wrap(transport.KitRequest, "add_checksum", "chunk SHA-256 (Upload-Checksum)",
                leaf=True)
    probes.wrap(requests.Session, "patch", "PATCH on the wire (send, hub answers)", leaf=True)
    probes.wrap(requests.Session, "post", "POST on the wire (send, hub answers)", leaf=True)
    probes.wrap(store.SyncStore, "ack_object", "SyncStore.ack_object")
    probes.wrap(evict.Evictor, "run", "Evictor.run")
    probes.wrap(os, "fsync", "fsync", leaf=True)


PRELUDE_ENV = {"hub": "BENCH_SYNC_PRELUDE_HUB", "kit": "BENCH_SYNC_PRELUDE_KIT"}


def floor_main(argv: list[str]) -> int:
    """`bench_sync.py --floor SRC DEST`: the least time a receiver needs that hashes each file
    as it arrives, makes it durable (fsync) and reads it back past the page cache (ingest's
    ReadBack, O_DIRECT) to compare SHA-256s before it acknowledges it, as the hub does, with
    no network, HTTP, tus, catalog or per-chunk checksum. Pipelined as well as Python allows
    on this machine: one thread reads the sources, one hashes and writes (fsync at each
    file's end), one reads back and hashes again, so the disk and both CPUs overlap (hashlib
    and file I/O release the GIL). Timed from outside like rsync; its ratio to rsync is the
    most of the target such an acknowledgement leaves on this machine."""
    import hashlib
    import queue
    import threading

    from ingest.copy import ReadBack

    source, dest = Path(argv[0]), Path(argv[1])
    blocks: queue.Queue[tuple[int, bytes | None] | None] = queue.Queue(maxsize=4)
    written: queue.Queue[tuple[Path, str] | None] = queue.Queue()
    failed: list[str] = []

    def read() -> None:
        for n, path in enumerate(sorted(tree_files(source))):
            with open(path, "rb") as f:
                while block := f.read(8 * 1024 * 1024):
                    blocks.put((n, block))
            blocks.put((n, None))
        blocks.put(None)

    def read_back() -> None:
        reader = ReadBack()
        while (item := written.get()) is not None:
            if reader.sha256(item[0])[0] != item[1]:
                failed.append(str(item[0]))

    threads = [threading.Thread(target=read), threading.Thread(target=read_back)]
    for thread in threads:
        thread.start()
    fd, digest, target = -1, hashlib.sha256(), dest
    while (item := blocks.get()) is not None:
        n, block = item
        if fd < 0:
            target = dest / f"{n:06d}"
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            digest = hashlib.sha256()
        if block is None:
            os.fsync(fd)
            os.close(fd)
            fd = -1
            written.put((target, digest.hexdigest()))
            continue
        digest.update(block)
        view = memoryview(block)
        while view:
            view = view[os.write(fd, view):]
    written.put(None)
    for thread in threads:
        thread.join()
    if failed:
        print(f"floor: {failed[0]}: the copy reads back different", file=sys.stderr)
        return 1
    return 0


def probe_main(argv: list[str]) -> int:
    """`bench_sync.py --probe hub|kit OUT -- ACOPIO ARGS`: acopio with timers, totals to OUT."""
    which, out = argv[0], argv[1]
    args = argv[3:] if argv[2:3] == ["--"] else argv[2:]
    probes = Probes()
    (install_hub_probes if which == "hub" else install_kit_probes)(probes)
    atexit.register(probes.dump, out)
    prelude = os.environ.get(PRELUDE_ENV[which])  # --hub-prelude / --kit-prelude
    if prelude:
        exec(compile(Path(prelude).read_text(), prelude, "exec"), {})
    from appliance.cli import main

    return main(args)


# -- inputs: incompressible media in real containers ------------------------------------------


@dataclass
class Card:
    root: Path
    files: int
    total_bytes: int
    description: str


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def photo_bytes(when: datetime, size: int, rng: random.Random) -> bytes:
    """A valid JPEG of about `size` bytes: a small real picture, EXIF with the capture time,
    and COM segments of random bytes after the APPn segments."""
    import io

    from PIL import Image

    img = Image.new("RGB", (160, 120), tuple(rng.randrange(256) for _ in range(3)))
    exif = Image.Exif()
    exif[271] = "Canon"
    exif[272] = "Canon EOS R6"
    sub = exif.get_ifd(0x8769)
    sub[36867] = when.strftime("%Y:%m:%d %H:%M:%S")
    sub[36881] = "-06:00"
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85, exif=exif)
    base = buf.getvalue()
    at = 2  # after SOI, past every APPn segment
    while base[at] == 0xFF and 0xE0 <= base[at + 1] <= 0xEF:
        at += 2 + int.from_bytes(base[at + 2:at + 4], "big")
    need = max(0, size - len(base))
    segments = []
    while need > 4:
        payload = min(COM_MAX, need - 4)
        segments.append(b"\xff\xfe" + (payload + 2).to_bytes(2, "big") + random_bytes(payload))
        need -= payload + 4
    return base[:at] + b"".join(segments) + base[at:]


def ffmpeg(*args: str) -> None:
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise BenchError(f"ffmpeg failed: {result.stderr.strip()[-500:]}")


def write_video(clip: Path, path: Path, when: datetime, size: int) -> None:
    """The clip with its own creation_time, then a `free` box of random bytes up to `size`."""
    stamp = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    ffmpeg("-i", f"file:{clip}", "-map", "0", "-c", "copy", "-metadata",
           f"creation_time={stamp}", "-movflags", "+faststart", "-f", "mp4", f"file:{path}")
    pad = size - path.stat().st_size - 8
    if pad <= 0:
        return
    with open(path, "ab") as fh:
        fh.write((pad + 8).to_bytes(4, "big") + b"free")
        while pad > 0:
            n = min(BLOCK, pad)
            fh.write(random_bytes(n))
            pad -= n


def set_mtime(path: Path, when: datetime) -> None:
    ns = int(when.timestamp()) * 1_000_000_000
    os.utime(path, ns=(ns, ns))


def build_card(root: Path, videos: int, video_bytes: int, photos: int, photo_size: int,
               start: datetime, rng: random.Random) -> None:
    start_fresh(root)
    if videos:
        clip = root.parent / f"{root.name}-clip.mp4"
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i",
               "sine=frequency=440:sample_rate=48000", "-t", "2", "-c:v", "mpeg4", "-q:v", "5",
               "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", "-f", "mp4",
               f"file:{clip}")
        for v in range(videos):
            when = start + timedelta(minutes=11 * v + 1)
            path = root / f"DCIM/100CANON/MVI_{v + 1:04d}.MP4"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_video(clip, path, when, video_bytes)
            set_mtime(path, when)
        clip.unlink()
    for i in range(photos):
        when = start + timedelta(seconds=7 * i)
        path = root / f"DCIM/{101 + i // 9999}CANON/IMG_{i % 9999 + 1:04d}.JPG"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(photo_bytes(when, photo_size, rng))
        set_mtime(path, when)


def describe_card(root: Path) -> str:
    photos = [p.stat().st_size for p in root.rglob("*.JPG")]
    videos = [p.stat().st_size for p in root.rglob("*.MP4")]
    parts = []
    if videos:
        parts.append(f"{len(videos)} MP4 video{'s' * (len(videos) != 1)} of "
                     f"{median(videos) / MB:.0f} MB")
    if photos:
        parts.append(f"{len(photos)} JPEG{'s' * (len(photos) != 1)} of "
                     f"{median(photos) / MB:.1f} MB")
    return " + ".join(parts) + " (random payloads in real containers)"


def card_from(root: Path, manifest: dict[str, Any]) -> Card:
    sizes = manifest["sizes"]
    return Card(root, len(sizes), sum(sizes.values()), describe_card(root))


def make_card(workdir: Path, name: str, params: dict[str, Any], rebuild: bool,
              build: Callable[[Path], None]) -> Card:
    root = workdir / "inputs" / name
    manifest = load_cached(root, params, rebuild, fmt=INPUT_FORMAT)
    if manifest is None:
        log(f"building {name} in {root}")
        with stopwatch() as watch:
            build(root)
        manifest = save_manifest(root, params, {"description": describe_card(root),
                                                "build_seconds": round(watch.seconds, 1)},
                                 file_sizes(root), fmt=INPUT_FORMAT)
        log(f"{name} built in {watch.seconds:.1f} s")
    return card_from(root, manifest)


def main_card(opts: Options) -> Card:
    params = {"videos": opts.videos, "video_mb": opts.video_mb, "photos": opts.photos,
              "photo_mb": opts.photo_mb}
    name = f"card-{opts.videos}x{opts.video_mb:g}mb-{opts.photos}x{opts.photo_mb:g}mb"
    return make_card(opts.workdir, name, params, opts.rebuild, lambda root: build_card(
        root, opts.videos, int(opts.video_mb * MB), opts.photos, int(opts.photo_mb * MB),
        CARD_START, random.Random(1)))


def cut_card(opts: Options, card: Card) -> Card:
    """A share of the main card's videos and photos (hard links), about --cut-mb."""
    share = min(1.0, opts.cut_mb / (card.total_bytes / MB))
    videos = sorted(card.root.rglob("*.MP4"))
    photos = sorted(card.root.rglob("*.JPG"))
    picked = videos[:max(1 if videos else 0, round(len(videos) * share))] + \
        photos[:round(len(photos) * share)]
    params = {"from": {"videos": opts.videos, "video_mb": opts.video_mb,
                       "photos": opts.photos, "photo_mb": opts.photo_mb},
              "files": [p.relative_to(card.root).as_posix() for p in picked]}

    def build(root: Path) -> None:
        start_fresh(root)
        for src in picked:
            dest = root / src.relative_to(card.root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.link(src, dest)

    return make_card(opts.workdir, f"{card.root.name}-cuts-{opts.cut_mb:g}mb", params,
                     opts.rebuild, build)


def cap_card(opts: Options) -> Card:
    """About --cap-mb: a video of a third of it, the rest in photos of --photo-mb."""
    video = int(opts.cap_mb * MB / 3)
    photo = int(opts.photo_mb * MB)
    photos = max(1, round((opts.cap_mb * MB - video) / photo))
    params = {"cap_mb": opts.cap_mb, "photo_mb": opts.photo_mb}
    name = f"card-cap-{opts.cap_mb:g}mb-{opts.photo_mb:g}mb"
    return make_card(opts.workdir, name, params, opts.rebuild, lambda root: build_card(
        root, 1, video, photos, photo, CARD_START + timedelta(days=1), random.Random(2)))


# -- kits: one ingest each, cached; a fresh copy per measured run -----------------------------


@dataclass
class KitTemplate:
    root: Path
    card: Card
    items: int


def kit_template(opts: Options, config: Path, card: Card) -> KitTemplate:
    root = opts.workdir / "inputs" / f"kit-{card.root.name}"
    params = {"card": card.root.name, "bytes": card.total_bytes, "files": card.files}
    manifest = load_cached(root, params, opts.rebuild, fmt=INPUT_FORMAT)
    if manifest is None:
        log(f"importing {card.root.name} into {root} with acopio ingest")
        start_fresh(root)
        root.rmdir()
        with stopwatch() as watch:
            result = run_acopio(config, root, "ingest", str(card.root), "--json",
                                env=clean_env(ACOPIO_KIT_NAME=KIT), timeout=3600)
        try:
            summary = json.loads(result.stdout)
        except json.JSONDecodeError:
            summary = {}
        if result.returncode != 0 or summary.get("imported") != card.files:
            raise BenchError(f"ingest of {card.root} did not import all {card.files} files "
                             f"(exit {result.returncode}): {result.stdout[-800:]} "
                             f"{result.stderr[-800:]}")
        manifest = save_manifest(root, params, {"description": card.description,
                                                "ingest_seconds": round(watch.seconds, 1)},
                                 fmt=INPUT_FORMAT)
        log(f"imported in {watch.seconds:.1f} s")
    return KitTemplate(root, card, card.files)


def fresh_kit(template: KitTemplate, dest: Path) -> Path:
    """A kit to sync once: the template's archive hard-linked (the originals are only read),
    everything else copied (the sync writes its state and may rewrite catalog shards)."""
    remove_tree(dest)
    dest.mkdir(parents=True)
    for entry in template.root.iterdir():
        flag = "-al" if entry.name == "archive" else "-a"
        subprocess.run(["cp", flag, str(entry), str(dest / entry.name)], check=True)
    return dest


# -- measured child processes ----------------------------------------------------------------


@dataclass
class Measured(Launched):
    """The launcher's figures and the command's output (stdout and stderr together)."""

    output: str = ""


def run_measured(cmd: Sequence[str], env: dict[str, str], log_path: Path | None = None,
                 timeout: float = 3600) -> Measured:
    """Run `cmd` through the launcher (_bench_common), its output appended to `log_path`."""
    with tempfile.TemporaryFile() as out:
        run = launch(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                     timeout=timeout)
        out.seek(0)
        text = out.read().decode(errors="replace")
    if log_path is not None:
        with open(log_path, "a") as fh:
            fh.write(text)
    return Measured(run.seconds, run.maxrss_kb, run.cpu_seconds, run.returncode, text)


# -- the hub ---------------------------------------------------------------------------------


class Hub:
    """A real `acopio hub` on 127.0.0.1 (through the probes), on a fresh data folder; in the
    namespace at the far end of `link` when given."""

    def __init__(self, root: Path, config: Path, link: PacedLink | None = None) -> None:
        self.root = root
        self.config = config
        remove_tree(root)
        root.mkdir(parents=True)
        self.log = root.parent / f"{root.name}.log"
        self.probe_out = root.parent / f"{root.name}-probe.json"
        self.probe_out.unlink(missing_ok=True)
        self.env = clean_env(ACOPIO_KIT_NAME="central")
        host = link.peer_ip if link else "127.0.0.1"
        cmd = [*(link.prefix if link else []), sys.executable, str(SELF), "--probe", "hub",
               str(self.probe_out), "--", "--config", str(config), "--data-dir",
               str(root / "data"), "hub", "--host", host, "--port", "0"]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            m = re.search(rf"hub on http://{re.escape(host)}:(\d+)/", self.log.read_text(
                errors="replace"))
            if m:
                self.port = int(m[1])
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise BenchError(f"the hub did not start:\n{self.tail()}")
            time.sleep(0.05)
        self.url = f"http://{host}:{self.port}"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def pair_code(self) -> str:
        result = run_acopio(self.config, self.data, "hub", "pair", env=self.env)
        code = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        if result.returncode != 0 or not re.fullmatch(r"\d{4}-\d{4}-\d{4}", code):
            raise BenchError(f"acopio hub pair failed: {result.stdout} {result.stderr}")
        return code

    def cpu_seconds(self) -> float:
        """User + system CPU time the hub has used so far."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return float("nan")
        m = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(m[1]) * 1024 / MB if m else float("nan")

    def stop(self) -> dict[str, Any]:
        """Stop it (SIGTERM); its probe totals."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        try:
            return json.loads(self.probe_out.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def close(self) -> None:
        self.stop()
        remove_tree(self.root)
        self.log.unlink(missing_ok=True)
        self.probe_out.unlink(missing_ok=True)


def pair(config: Path, kit: Path, url: str, code: str) -> None:
    result = run_acopio(config, kit, "sync", "pair", url, code,
                        env=clean_env(ACOPIO_KIT_NAME=KIT))
    if result.returncode != 0:
        raise BenchError(f"acopio sync pair failed: {result.stdout} {result.stderr}")


@dataclass
class SyncRun:
    """One `acopio sync --once` to exit 0 (or several, with interruptions)."""

    side: str
    chunk_mb: int
    seconds: float
    rss_mb: float
    cpu_seconds: float
    runs: int = 1
    sync_after_s: float = 0.0
    hub_rss_mb: float = float("nan")
    hub_cpu_s: float = float("nan")
    kit_probe: dict[str, Any] = field(default_factory=dict)
    hub_probe: dict[str, Any] = field(default_factory=dict)
    # per file extension: [files, bytes, seconds from "uploading" to "acknowledged",
    # median ms of the first tenth of those files sent, of the last tenth]
    per_kind: dict[str, list[float]] = field(default_factory=dict)


LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO sync\.kit\.role: "
                      r"(uploading|acknowledged) ([0-9a-f]{64}) (.*?)(?: \((\d+) bytes|$)",
                      re.MULTILINE)


def per_kind(output: str) -> dict[str, list[float]]:
    """From the kit's log: each original's time from "uploading" to "acknowledged" (its
    upload, the hub's checks, the verified answer), summed per file extension."""
    started: dict[str, tuple[float, int, str]] = {}
    files: dict[str, list[tuple[int, float]]] = {}
    for m in LOG_LINE.finditer(output):
        at = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if m[2] == "uploading":
            started[m[3]] = (at, int(m[5] or 0), m[4].rsplit(".", 1)[-1].upper())
        elif m[3] in started:
            began, size, kind = started.pop(m[3])
            files.setdefault(kind, []).append((size, at - began))
    out = {}
    for kind, done in files.items():
        tenth = max(1, len(done) // 10)
        out[kind] = [len(done), sum(s for s, _ in done), sum(d for _, d in done),
                     median([d for _, d in done[:tenth]]) * 1000,
                     median([d for _, d in done[-tenth:]]) * 1000]
    return out


def sync_once(config: Path, kit: Path, env_extra: dict[str, str], log_path: Path,
              probe_out: Path) -> Measured:
    probe_out.unlink(missing_ok=True)
    cmd = [sys.executable, str(SELF), "--probe", "kit", str(probe_out), "--",
           "--config", str(config), "--data-dir", str(kit), "sync", "--once"]
    return run_measured(cmd, clean_env(ACOPIO_KIT_NAME=KIT, **env_extra), log_path)


def read_probe(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def merge_probes(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) for k, v in a.items()}
    for k, v in b.items():
        if k in out:
            for f in ("calls", "seconds", "bytes"):
                out[k][f] += v[f]
        else:
            out[k] = dict(v)
    return out


# -- the rsync daemon ------------------------------------------------------------------------


class RsyncDaemon:
    """`rsync --daemon --no-detach` on 127.0.0.1 with one writable module, `bench`; in the
    namespace at the far end of `link` when given."""

    def __init__(self, folder: Path, link: PacedLink | None = None) -> None:
        self.host = link.peer_ip if link else "127.0.0.1"
        self.folder = folder
        self.target = folder / "target"
        remove_tree(folder)
        self.target.mkdir(parents=True)
        self.port = free_port()
        conf = folder / "rsyncd.conf"
        conf.write_text(
            "use chroot = no\n"
            f"pid file = {folder / 'rsyncd.pid'}\n"
            f"log file = {folder / 'rsyncd.log'}\n"
            "max connections = 4\n"
            "[bench]\n"
            f"    path = {self.target}\n"
            "    read only = no\n"
            f"    uid = {os.getuid()}\n"
            f"    gid = {os.getgid()}\n")
        self.proc = subprocess.Popen(
            [*(link.prefix if link else []), "rsync", "--daemon", "--no-detach",
             f"--port={self.port}", f"--address={self.host}", f"--config={conf}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), \
                    socket.create_connection((self.host, self.port), timeout=1):
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError("the rsync daemon did not start: "
                                 + (folder / "rsyncd.log").read_text(errors="replace")[-800:]
                                 if (folder / "rsyncd.log").exists() else "no log")
            time.sleep(0.05)

    def url(self, name: str) -> str:
        return f"rsync://{self.host}:{self.port}/bench/{name}/"

    def close(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()
        remove_tree(self.folder)


# -- a TCP relay that counts the kit's bytes and can cut the connection ------------------------


class Relay:
    """127.0.0.1:<port> -> the hub. Counts (and timestamps) the bytes the kit sends; when
    `cuts` are armed, the connection carrying the byte at each cut point is cut right there:
    RST to the kit, and the hub sees the request end early."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.upstream = 0
        self.events: list[tuple[float, int]] = []
        self.cuts: list[int] = []
        self.cut_done: list[tuple[int, float]] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self, cuts: Sequence[int] = ()) -> None:
        with self.lock:
            self.upstream = 0
            self.events = []
            self.cuts = sorted(cuts)
            self.cut_done = []

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            threading.Thread(target=self._pump, args=(client, upstream, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_kit: bool) -> None:
        cut = False
        try:
            while block := src.recv(256 * 1024):
                if from_kit:
                    with self.lock:
                        if self.cuts and self.upstream + len(block) >= self.cuts[0]:
                            # (two cut points in one block: the second cuts the next
                            # connection at its first bytes)
                            block = block[:max(0, self.cuts[0] - self.upstream)]
                            self.cut_done.append((self.cuts.pop(0), time.monotonic()))
                            cut = True
                        self.upstream += len(block)
                        self.events.append((time.monotonic(), len(block)))
                if block:
                    dst.sendall(block)
                if cut:
                    break
        except OSError:
            pass
        finally:
            if cut:  # an abrupt end for the kit, as a dropped link looks
                with contextlib.suppress(OSError):
                    src.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                   b"\x01\x00\x00\x00\x00\x00\x00\x00")
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()

    def span(self) -> tuple[float, float, int]:
        """(first, last) time of the kit's bytes and how many."""
        with self.lock:
            events = list(self.events)
        if not events:
            return 0.0, 0.0, 0
        return events[0][0], events[-1][0], sum(n for _, n in events)

    def rate_between(self, low: float, high: float) -> float:
        """Bytes per second between the `low` and `high` fractions of the kit's bytes."""
        with self.lock:
            events = list(self.events)
        total = sum(n for _, n in events)
        seen, start, end, counted = 0, None, None, 0
        for at, n in events:
            seen += n
            if start is None and seen >= low * total:
                start, counted = at, 0
            elif start is not None:
                counted += n
            if seen >= high * total:
                end = at
                break
        if start is None or end is None or end <= start:
            return float("nan")
        return counted / (end - start)

    def close(self) -> None:
        self.closed = True
        self.server.close()


# -- one acopio sync, set up and torn down ---------------------------------------------------


class Bench:
    def __init__(self, opts: Options, config: Path, cache: PageCache) -> None:
        self.opts = opts
        self.config = config
        self.cache = cache
        self.scratch = opts.workdir / "runs"
        self.logs = opts.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def paired(self, template: KitTemplate, name: str, relay: bool = False,
               link: PacedLink | None = None) -> Iterator[tuple[Path, Hub, Relay | None]]:
        """A fresh kit paired with a fresh hub (through a relay when asked; at the far end
        of `link` when given)."""
        kit = fresh_kit(template, self.scratch / f"kit-{name}")
        hub = Hub(self.scratch / f"hub-{name}", self.config, link)
        proxy = Relay(hub.port) if relay else None
        try:
            pair(self.config, kit, proxy.url if proxy else hub.url, hub.pair_code())
            yield kit, hub, proxy
        except BaseException:
            log(f"hub log tail:\n{hub.tail()}")
            raise
        finally:
            if proxy is not None:
                proxy.close()
            hub.close()
            remove_tree(kit)

    def sync(self, template: KitTemplate, name: str, chunk_mb: int,
             env: dict[str, str] | None = None, link: PacedLink | None = None) -> SyncRun:
        """One timed `acopio sync --once` of the whole kit, cache cold, to a fresh hub."""
        log_path = self.logs / f"{name}.log"
        log_path.unlink(missing_ok=True)
        with self.paired(template, name, link=link) as (kit, hub, _):
            self.cache.prepare(template.root / "archive")
            hub_cpu = hub.cpu_seconds()
            run = sync_once(self.config, kit, {"ACOPIO_SYNC_CHUNK_MB": str(chunk_mb),
                                               **(env or {})}, log_path,
                            self.scratch / f"{name}-kit-probe.json")
            with stopwatch() as after:
                os.sync()
            if run.returncode != 0:
                raise BenchError(f"acopio sync --once exited {run.returncode}: "
                                 f"{run.output[-1500:]}")
            hub_rss = hub.peak_rss_mb()
            hub_cpu = hub.cpu_seconds() - hub_cpu
            hub_probe = hub.stop()
            kit_probe = read_probe(self.scratch / f"{name}-kit-probe.json")
        return SyncRun(f"acopio@{chunk_mb}", chunk_mb, run.seconds, run.rss_mb,
                       run.cpu_seconds, sync_after_s=after.seconds, hub_rss_mb=hub_rss,
                       hub_cpu_s=hub_cpu,
                       kit_probe=kit_probe, hub_probe=hub_probe, per_kind=per_kind(run.output))


# -- 1. throughput against rsync -------------------------------------------------------------


@dataclass
class RsyncRun:
    side: str
    seconds: float
    rss_mb: float
    cpu_seconds: float
    sync_after_s: float


@dataclass
class Throughput:
    template: KitTemplate
    chunks: tuple[int, ...]
    acopio: dict[int, list[SyncRun]] = field(default_factory=dict)
    rsync: dict[str, list[RsyncRun]] = field(default_factory=dict)
    file_sizes: list[int] = field(default_factory=list)
    sha256_mb_s: float = float("nan")  # one CPU, in memory

    @property
    def bytes(self) -> int:
        return self.template.card.total_bytes

    def acopio_s(self, chunk: int) -> float:
        return median([r.seconds for r in self.acopio[chunk]])

    def rsync_s(self, side: str) -> float:
        return median([r.seconds for r in self.rsync[side]])

    @property
    def best_rsync(self) -> str:
        return min(RSYNC_SIDES, key=self.rsync_s)

    def ratio_of(self, side: str) -> float:
        """`side`'s throughput over the best rsync's."""
        return self.rsync_s(self.best_rsync) / self.rsync_s(side)

    def ratio(self, chunk: int, side: str | None = None) -> float:
        """acopio's throughput over rsync's (rsync time / acopio time)."""
        return self.rsync_s(side or self.best_rsync) / self.acopio_s(chunk)


RSYNC_SIDES = {"rsync-whole": ["-a", "--whole-file"], "rsync-delta": ["-a"]}
FLOOR = "floor"  # floor_main: hash while copying, fsync, read back and hash; pipelined


def sha256_speed() -> float:
    """MB/s of hashlib's SHA-256 on one CPU of this machine, in memory (best of 3)."""
    import hashlib

    block = os.urandom(64 * MIB)
    best = float("inf")
    for _ in range(3):
        with stopwatch() as took:
            digest = hashlib.sha256()
            for _ in range(4):
                digest.update(block)
        best = min(best, took.seconds)
    return 4 * len(block) / MB / best


def copy_once(bench: Bench, daemon: RsyncDaemon, source: Path, side: str, dest: Path
              ) -> Measured:
    """One timed copy of `source`, cache cold: rsync to the daemon's `dest`, or the floor."""
    remove_tree(dest)
    bench.cache.prepare(source)
    if side == FLOOR:
        dest.mkdir(parents=True)
        cmd = [sys.executable, str(SELF), "--floor", str(source), str(dest)]
    else:
        cmd = ["rsync", *RSYNC_SIDES[side], f"{source}/", daemon.url(dest.name)]
    run = run_measured(cmd, clean_env())
    if run.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} exited {run.returncode}: {run.output[-800:]}")
    return run


def bench_throughput(bench: Bench, template: KitTemplate, opts: Options) -> Throughput:
    result = Throughput(template, opts.chunks, {c: [] for c in opts.chunks},
                        {s: [] for s in RSYNC_SIDES})
    sides = [f"acopio@{c}" for c in opts.chunks[:1]] + list(RSYNC_SIDES) + [FLOOR] + \
        [f"acopio@{c}" for c in opts.chunks[1:]]
    result.rsync[FLOOR] = []
    daemon = RsyncDaemon(bench.scratch / "rsyncd")
    source = template.root / "archive"
    result.file_sizes = [path.stat().st_size for path in tree_files(source)]
    result.sha256_mb_s = sha256_speed()
    try:
        for i in range(opts.repeat):
            order = sides[i % len(sides):] + sides[:i % len(sides)]  # rotate: drift hits all
            for side in order:
                if side.startswith("acopio@"):
                    chunk = int(side.split("@")[1])
                    run = bench.sync(template, f"throughput-{side}-{i}", chunk)
                    result.acopio[chunk].append(run)
                    seconds = run.seconds
                else:
                    dest = daemon.target / f"run-{i}"
                    run_r = copy_once(bench, daemon, source, side, dest)
                    with stopwatch() as after:
                        os.sync()
                    remove_tree(dest)
                    result.rsync[side].append(RsyncRun(side, run_r.seconds, run_r.rss_mb,
                                                       run_r.cpu_seconds, after.seconds))
                    seconds = run_r.seconds
                log(f"throughput run {i + 1}/{opts.repeat} {side}: {seconds:.2f} s "
                    f"({template.card.total_bytes / MB / seconds:,.0f} MB/s)")
    finally:
        daemon.close()
    return result


# -- 2. the bandwidth cap --------------------------------------------------------------------


@dataclass
class Cap:
    template: KitTemplate
    cap_kbps: int
    wall_s: float
    wire_first_to_last_s: float
    wire_bytes: int
    steady_bps: float
    kit_send_s: float

    @property
    def cap_bps(self) -> float:
        return self.cap_kbps * 1024

    @property
    def achieved_bps(self) -> float:
        return self.template.card.total_bytes / self.wire_first_to_last_s

    @property
    def share(self) -> float:
        return self.achieved_bps / self.cap_bps


def bench_cap(bench: Bench, template: KitTemplate, opts: Options) -> Cap:
    name = "cap"
    log_path = bench.logs / f"{name}.log"
    log_path.unlink(missing_ok=True)
    with bench.paired(template, name, relay=True) as (kit, _hub, relay):
        assert relay is not None
        bench.cache.prepare(template.root / "archive")
        relay.reset()
        run = sync_once(bench.config, kit, {"ACOPIO_SYNC_BANDWIDTH_KBPS": str(opts.cap_kbps)},
                        log_path, bench.scratch / f"{name}-kit-probe.json")
        if run.returncode != 0:
            raise BenchError(f"acopio sync --once (capped) exited {run.returncode}: "
                             f"{run.output[-1500:]}")
        first, last, wire = relay.span()
        steady = relay.rate_between(0.1, 0.9)
    probe = read_probe(bench.scratch / f"{name}-kit-probe.json")
    send = probe.get("Transport.send (one original)", {}).get("seconds", float("nan"))
    cap = Cap(template, opts.cap_kbps, run.seconds, last - first, wire, steady, send)
    log(f"cap {opts.cap_kbps} KiB/s: {cap.achieved_bps / 1024:,.0f} KiB/s achieved "
        f"({cap.share:.1%})")
    return cap


# -- 3. bytes sent again across interruptions -------------------------------------------------


@dataclass
class Cuts:
    template: KitTemplate
    chunk_mb: int
    cuts_planned: int
    clean_bytes: int
    clean_s: float
    cut_bytes: int
    cut_s: float
    runs: int
    cuts_done: int
    cut_points: list[int]
    failures: dict[str, int]  # what the kit was doing when cut: a video's PATCH, ...

    @property
    def extra(self) -> int:
        return self.cut_bytes - self.clean_bytes

    @property
    def per_cut(self) -> float:
        return self.extra / self.cuts_done if self.cuts_done else float("nan")


def bench_cuts(bench: Bench, template: KitTemplate, opts: Options) -> Cuts:
    chunk = opts.cut_chunk_mb
    env = {"ACOPIO_SYNC_CHUNK_MB": str(chunk), "ACOPIO_SYNC_RETRY_MAX_S": "1"}
    # A clean run through the same relay: the bytes a sync of this data puts on the wire.
    with bench.paired(template, "cuts-clean", relay=True) as (kit, _hub, relay):
        assert relay is not None
        relay.reset()
        with stopwatch() as clean_watch:
            run = sync_once(bench.config, kit, env, bench.logs / "cuts-clean.log",
                            bench.scratch / "cuts-clean-probe.json")
        if run.returncode != 0:
            raise BenchError(f"clean sync exited {run.returncode}: {run.output[-1500:]}")
        clean = relay.span()[2]
    log(f"clean run through the relay: {clean:,} bytes from the kit in "
        f"{clean_watch.seconds:.1f} s")
    rng = random.Random(opts.seed)
    points = sorted(rng.randrange(int(clean * 0.01), int(clean * 0.97))
                    for _ in range(opts.cuts))
    runs = 0
    failures: dict[str, int] = {}
    log_path = bench.logs / "cuts.log"
    log_path.unlink(missing_ok=True)
    with bench.paired(template, "cuts", relay=True) as (kit, _hub, relay):
        assert relay is not None
        relay.reset(points)
        with stopwatch() as watch:
            while True:
                runs += 1
                run = sync_once(bench.config, kit, env, log_path,
                                bench.scratch / "cuts-probe.json")
                for line in re.findall(r"WARNING sync\.kit\.role: sync: (.*)", run.output):
                    m = re.match(r"upload of .*\.(\w+) cut at about", line)
                    what = f"the upload of a .{m[1].upper()}" if m else "another request"
                    failures[what] = failures.get(what, 0) + 1
                if run.returncode == 0:
                    break
                if runs >= 4 * opts.cuts + 10:
                    raise BenchError(f"no end after {runs} runs of acopio sync --once: "
                                     f"{run.output[-1500:]}")
        total = relay.span()[2]
        done = len(relay.cut_done)
    log(f"{done} cuts: {total:,} bytes from the kit over {runs} runs in {watch.seconds:.1f} s")
    return Cuts(template, chunk, opts.cuts, clean, clean_watch.seconds, total, watch.seconds,
                runs, done, points, failures)


# -- report ----------------------------------------------------------------------------------


# -- 4. the same over a paced link ------------------------------------------------------------


LANES = (2, 1)  # sync.parallel_uploads of the acopio sides: the default, judged, then one


@dataclass
class Lan:
    template: KitTemplate
    rate: str
    chunk_mb: int
    seconds: dict[str, list[float]] = field(default_factory=dict)  # side -> runs
    runs: dict[str, list[SyncRun]] = field(default_factory=dict)  # the acopio sides

    def median_s(self, side: str) -> float:
        return median(self.seconds[side])

    @property
    def best_rsync(self) -> str:
        return min(RSYNC_SIDES, key=self.median_s)

    def ratio(self, side: str) -> float:
        return self.median_s(self.best_rsync) / self.median_s(side)


def bench_lan(bench: Bench, template: KitTemplate, opts: Options) -> Lan:
    """Part 1's card and sides, kit and rsync client here, hub and rsync daemon in a network
    namespace behind a veth pair paced at `--link-rate` (_bench_link)."""
    chunk = opts.chunks[0]
    acopio = [f"acopio@{chunk}, {n} lane{'s' if n > 1 else ''}" for n in LANES]
    sides = [acopio[0], *RSYNC_SIDES, *acopio[1:]]
    result = Lan(template, opts.link_rate, chunk, {side: [] for side in sides},
                 {side: [] for side in acopio})
    source = template.root / "archive"
    try:
        link = PacedLink(opts.link_rate)
    except LinkError as exc:
        raise BenchError(f"lan: {exc}") from exc
    with link:
        daemon = RsyncDaemon(bench.scratch / "rsyncd-lan", link)
        try:
            for i in range(opts.repeat):
                order = sides[i % len(sides):] + sides[:i % len(sides)]
                for side in order:
                    if side in acopio:
                        lanes = LANES[acopio.index(side)]
                        run = bench.sync(template, f"lan-{lanes}-{i}", chunk,
                                         {"ACOPIO_SYNC_PARALLEL_UPLOADS": str(lanes)}, link)
                        seconds = run.seconds
                        result.runs[side].append(run)
                    else:
                        dest = daemon.target / f"run-{i}"
                        seconds = copy_once(bench, daemon, source, side, dest).seconds
                        remove_tree(dest)
                    result.seconds[side].append(seconds)
                    log(f"lan run {i + 1}/{opts.repeat} {side}: {seconds:.2f} s "
                        f"({template.card.total_bytes / MB / seconds:,.0f} MB/s)")
        finally:
            daemon.close()
    return result


def lan_lines(lan: Lan) -> list[str]:
    mb = lan.template.card.total_bytes / MB
    judged, *others = [side for side in lan.seconds if side.startswith("acopio@")]
    lines = [
        f"4. The same over a paced link: {mb:,.0f} MB, {lan.template.items} files; the hub "
        f"and the rsync daemon in a network namespace behind a veth pair, each end shaped "
        f"with tc tbf at {lan.rate} (an office LAN's rate; loopback has none)",
        row("side (median s, MB/s)", "value"),
    ]
    for side in lan.seconds:
        lines.append(row(f"{side}", f"{lan.median_s(side):.2f} "
                                    f"{mb / lan.median_s(side):,.0f}"))
    lines.append(row(f"{judged} / {lan.best_rsync} (throughput)", f"{lan.ratio(judged):.2f}",
                     f">= {TARGET_RATIO}", verdict(lan.ratio(judged) >= TARGET_RATIO)))
    for side in others:
        lines.append(row(f"(info) {side} / {lan.best_rsync}", f"{lan.ratio(side):.2f}"))
    for side, runs in lan.runs.items():
        lines.append(row(f"(info) CPU s kit / hub, {side}",
                         f"{median([r.cpu_seconds for r in runs]):.1f} / "
                         f"{median([r.hub_cpu_s for r in runs]):.1f}"))
    lines.append("  (the issue's target is judged on loopback, part 1; this part shows the "
                 "same ratio where the link, not the CPU, sets rsync's pace)")
    lines += breakdown_lines(median_breakdown(lan.runs[judged]), f"{lan.chunk_mb}, "
                             f"{judged.split(', ')[1]}, over the link")
    return lines


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def row(label: str, value: str, target: str = "", result: str = "") -> str:
    return f"  {label:<58} {value:>14}  {target:>9}  {result}"


def runs_text(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def probe_s(probe: dict[str, Any], key: str) -> float:
    return float(probe.get(key, {}).get("seconds", 0.0))


def probe_sum(probe: dict[str, Any], prefix: str) -> tuple[float, int]:
    """Seconds and calls of every key starting with `prefix` (all contexts)."""
    seconds, calls = 0.0, 0
    for k, v in probe.items():
        if k == prefix or k.startswith(prefix + " <") or k.startswith(prefix + "["):
            seconds += v["seconds"]
            calls += v["calls"]
    return seconds, calls


@dataclass
class Breakdown:
    """Where one acopio run's wall time went (seconds)."""

    wall: float
    startup: float  # process start, imports, settings: wall - run_once
    metadata: float  # records out, changes in
    uploads: float  # Transport.send: POST, HEAD, every PATCH to its answer
    patch_wire: float  # chunk requests (PATCH, or POST with the file) to the hub's answer
    kit_checksum: float  # SHA-256 of each chunk (Upload-Checksum)
    kit_read: float  # PATCH perform - wire - checksum: reading chunks from the kit's disk
    verify: float  # GET ?verify=1, waiting for the hub
    hub_patch_app: float  # the hub app on PATCH and POST (after waitress has the body)
    hub_append: float  # of which: body into .bin, offset JSON
    hub_finish: float  # of which: last chunk, whole-file hash checked, keep queued
    hub_hash: float  # all re-hashing from disk (?verify=1; finish after a restart)
    hub_hash_bytes: int
    hub_fsync: float  # every fsync in the hub
    hub_fsync_calls: int
    hub_keep: float  # the keeper's thread: fsync the bytes, place, catalogue
    hub_keep_fsync: float  # of which: the bytes' fsync
    kit_create: float  # POST /sync/files/
    kit_ack: float  # marking originals synced on the hub's answers


def breakdown(run: SyncRun) -> Breakdown:
    k, h = run.kit_probe, run.hub_probe
    hash_s, _ = probe_sum(h, "re-hash from disk")
    hash_bytes = sum(v["bytes"] for key, v in h.items() if key.startswith("re-hash from disk"))
    fsync_s, fsync_n = probe_sum(h, "fsync")
    wire = probe_sum(k, "PATCH on the wire (send, hub answers)")[0] + \
        probe_s(k, f"POST on the wire (send, hub answers) < {CHUNK_PROBE}")
    checksum = probe_sum(k, "chunk SHA-256 (Upload-Checksum)")[0]
    return Breakdown(
        wall=run.seconds,
        startup=run.seconds - probe_s(k, "SyncRole.run_once"),
        metadata=probe_s(k, "metadata out (POST /sync/records)")
        + probe_s(k, "changes in (GET /sync/changes)"),
        uploads=probe_s(k, "Transport.send (one original)"),
        patch_wire=wire,
        kit_checksum=checksum,
        kit_read=probe_s(k, CHUNK_PROBE) - wire - checksum,
        verify=probe_s(k, "GET /sync/objects?verify=1"),
        hub_patch_app=probe_s(h, "request[PATCH]") + probe_s(h, "request[POST]"),
        hub_append=probe_s(h, "Uploads.append (PATCH body to .bin)"),
        hub_finish=probe_s(h, "Hub.finish (last chunk: hash checked, keep queued)"),
        hub_hash=hash_s, hub_hash_bytes=hash_bytes,
        hub_fsync=fsync_s, hub_fsync_calls=fsync_n,
        hub_keep=probe_s(h, "Hub._keep_uploads (fsync, place, catalogue)"),
        hub_keep_fsync=probe_s(h, "Uploads.sync_data (the bytes' fsync)"),
        kit_create=probe_s(k, "POST /sync/files/ (create)"),
        kit_ack=probe_s(k, "SyncStore.ack_object"),
    )


def median_breakdown(runs: Sequence[SyncRun]) -> Breakdown:
    parts = [breakdown(r) for r in runs]
    values = {f: median([getattr(p, f) for p in parts]) for f in Breakdown.__dataclass_fields__}
    values["hub_fsync_calls"] = int(values["hub_fsync_calls"])
    values["hub_hash_bytes"] = int(values["hub_hash_bytes"])
    return Breakdown(**values)


def breakdown_lines(b: Breakdown, chunk: int | str) -> list[str]:
    def line(label: str, seconds: float) -> str:
        return f"    {label:<66} {seconds:7.2f} s {seconds / b.wall:6.1%}"

    verify_fsync = b.hub_hash + b.hub_fsync
    return [
        f"  where the time goes, acopio@{chunk} (medians; seconds and share of the wall time):",
        line("wall time of acopio sync --once", b.wall),
        line("kit: process start, imports, settings", b.startup),
        line("kit: metadata out + changes in", b.metadata),
        line("kit: uploads (create, every PATCH to its answer)", b.uploads),
        line("  kit: reading chunks from its disk", b.kit_read),
        line("  kit: chunk SHA-256 for Upload-Checksum", b.kit_checksum),
        line("  kit: POST /sync/files/ without the bytes (larger files)", b.kit_create),
        line("  chunks (PATCH, or POST with a one-chunk file) to the hub's answer",
             b.patch_wire),
        line("    hub app on PATCH and POST (after waitress spooled the body)",
             b.hub_patch_app),
        line("      body into .bin + offset JSON", b.hub_append),
        line("      last chunk: whole-file hash checked, keep queued", b.hub_finish),
        line("kit: marking originals synced on the hub's answers", b.kit_ack),
        line("kit: GET ?verify=1, in the background (waits for the keep, reads back)",
             b.verify),
        line("  hub keeper thread: fsync, place, catalogue (batches)", b.hub_keep),
        line("    of which the bytes' fsync", b.hub_keep_fsync),
        line(f"hub: all re-hashing from disk ({b.hub_hash_bytes / MB:,.0f} MB read)",
             b.hub_hash),
        line(f"hub: all fsyncs ({b.hub_fsync_calls} calls)", b.hub_fsync),
        line("hub verification + fsync (re-hash + fsync, the two above)", verify_fsync),
    ]


def throughput_lines(t: Throughput) -> list[str]:
    mb = t.bytes / MB
    primary = t.chunks[0]
    best = t.best_rsync
    ratio = t.ratio(primary)
    lines = [
        f"1. acopio sync --once vs rsync to a daemon on loopback: {mb:,.0f} MB, "
        f"{t.template.items} files ({t.template.card.description})",
        row("measure", "value", "target", "result"),
    ]
    for side in RSYNC_SIDES:
        lines.append(row(f"{side}: {' '.join(RSYNC_SIDES[side])} (median s, MB/s)",
                         f"{t.rsync_s(side):.2f} {mb / t.rsync_s(side):,.0f}"))
    for chunk in t.chunks:
        lines.append(row(f"acopio sync --once, sync.chunk_mb={chunk} (median s, MB/s)",
                         f"{t.acopio_s(chunk):.2f} {mb / t.acopio_s(chunk):,.0f}"))
    lines.append(row(f"acopio@{primary} throughput / {best} throughput", f"{ratio:.2f}",
                     f">= {TARGET_RATIO}", verdict(ratio >= TARGET_RATIO)))
    for side in RSYNC_SIDES:
        if side != best:
            lines.append(row(f"(info) acopio@{primary} / {side}", f"{t.ratio(primary, side):.2f}"))
    for chunk in t.chunks[1:]:
        lines.append(row(f"(info) acopio@{chunk} / {best}", f"{t.ratio(chunk):.2f}"))
    if t.rsync.get(FLOOR):
        floor = t.rsync_s(FLOOR)
        lines.append(row("(info) floor: hash+copy, fsync, read back+hash (s, MB/s)",
                         f"{floor:.2f} {mb / floor:,.0f}"))
        lines.append(row(f"(info) floor throughput / {best} throughput",
                         f"{t.ratio_of(FLOOR):.2f}"))
        lines.append(row(f"(info) acopio@{primary} throughput / floor throughput",
                         f"{floor / t.acopio_s(primary):.2f}"))
    for chunk in t.chunks:
        moving = median([r.seconds - breakdown(r).startup for r in t.acopio[chunk]])
        lines.append(row(f"(info) acopio@{chunk} without process start (MB/s)",
                         f"{mb / moving:,.0f}"))
    durable = {s: median([r.seconds + r.sync_after_s for r in t.rsync[s]]) for s in RSYNC_SIDES}
    lines.append(row(f"(info) {best} + the `sync` after it (median s)", f"{durable[best]:.2f}"))
    lines.append(row(f"(info) acopio@{primary} / ({best} + sync)",
                     f"{durable[best] / t.acopio_s(primary):.2f}"))
    for kind in sorted(t.acopio[primary][0].per_kind):
        runs = [r.per_kind[kind] for r in t.acopio[primary] if kind in r.per_kind]
        files = int(runs[0][0])
        rate = median([r[1] / MB / r[2] for r in runs if r[2] > 0])
        each = median([r[2] / r[0] * 1000 for r in runs if r[0]])
        lines.append(row(f"(info) acopio@{primary}, {files} .{kind}: MB/s, ms per file "
                         "(upload to ack)", f"{rate:,.0f} {each:,.0f}"))
        if files >= 20:
            lines.append(row(f"(info)   ms per .{kind}, first tenth sent / last tenth",
                             f"{median([r[3] for r in runs]):,.0f} / "
                             f"{median([r[4] for r in runs]):,.0f}"))
    lines.append(row(f"(info) peak RSS kit / hub, acopio@{primary} (MB)",
                     f"{max(r.rss_mb for r in t.acopio[primary]):.0f} / "
                     f"{max(r.hub_rss_mb for r in t.acopio[primary]):.0f}"))
    lines.append(row("(info) CPU s: kit acopio / hub / rsync client (median)",
                     f"{median([r.cpu_seconds for r in t.acopio[primary]]):.1f} / "
                     f"{median([r.hub_cpu_s for r in t.acopio[primary]]):.1f} / "
                     f"{median([r.cpu_seconds for r in t.rsync[best]]):.1f}"))
    # SHA-256 passes over each byte: the kit's chunk checksum, the hub's check of it, the
    # hub's whole-file hash (the chunk's own digest for a file sent in one chunk), the
    # hub's read back for ?verify=1.
    multi = sum(size for size in t.file_sizes if size > primary * MIB)
    passes = 3 + multi / t.bytes
    hash_cpu = passes * t.bytes / MB / t.sha256_mb_s
    lines.append(row("(info) SHA-256 on one CPU here (MB/s); passes over each byte",
                     f"{t.sha256_mb_s:,.0f}; {passes:.1f}"))
    lines.append(row("(info) that hashing alone: CPU s; on both CPUs, ratio at best",
                     f"{hash_cpu:.2f}; {t.rsync_s(best) / (hash_cpu / (os.cpu_count() or 1)):.2f}"))
    runs_line = "  runs, s: " + "  ".join(
        [f"{s} [{runs_text([r.seconds for r in t.rsync[s]])}]" for s in RSYNC_SIDES]
        + [f"acopio@{c} [{runs_text([r.seconds for r in t.acopio[c]])}]" for c in t.chunks])
    lines.append(runs_line)
    lines.append("")
    for chunk in t.chunks:
        lines += breakdown_lines(median_breakdown(t.acopio[chunk]), chunk)
    return lines


def cap_lines(c: Cap) -> list[str]:
    mb = c.template.card.total_bytes / MB
    return [
        f"2. Bandwidth cap: sync.bandwidth_kbps={c.cap_kbps} ({c.cap_bps / MB:.3f} MB/s), "
        f"{mb:,.1f} MB, {c.template.items} files ({c.template.card.description}), through a "
        "counting relay",
        row("measure", "value", "target", "result"),
        row("media bytes / kit's first to last byte on the wire (KiB/s)",
            f"{c.achieved_bps / 1024:,.0f}"),
        row("achieved / cap", f"{c.share:.1%}", f">= {TARGET_CAP_SHARE:.0%}",
            verdict(c.share >= TARGET_CAP_SHARE)),
        row("(info) wire rate between 10% and 90% of the bytes / cap",
            f"{c.steady_bps / c.cap_bps:.1%}"),
        row("(info) media bytes / wall time of acopio sync --once / cap",
            f"{c.template.card.total_bytes / c.wall_s / c.cap_bps:.1%}"),
        row("(info) wall time, first to last byte, in uploads (s)",
            f"{c.wall_s:.1f} {c.wire_first_to_last_s:.1f} {c.kit_send_s:.1f}"),
        row("(info) bytes on the wire / media bytes",
            f"{c.wire_bytes / c.template.card.total_bytes:.4f}"),
    ]


def cuts_lines(c: Cuts) -> list[str]:
    mb = c.template.card.total_bytes / MB
    chunk = c.chunk_mb * MIB
    return [
        f"3. Interruptions: {c.cuts_done} cuts at random byte counts of a {mb:,.0f} MB sync "
        f"({c.template.items} files, {c.template.card.description}), sync.chunk_mb="
        f"{c.chunk_mb}",
        row("measure", "value"),
        row("bytes from the kit, clean run", f"{c.clean_bytes:,}"),
        row("bytes from the kit, with the cuts", f"{c.cut_bytes:,}"),
        row("sent again, in all (MB)", f"{c.extra / MB:,.1f}"),
        row("sent again per interruption (MB)", f"{c.per_cut / MB:,.2f}"),
        row("per interruption / chunk size", f"{c.per_cut / chunk:.2f}"),
        row("(info) bound: one chunk per cut (MB)", f"{c.cuts_done * chunk / MB:,.1f}"),
        "  where the cuts fell (the kit's errors): "
        + ", ".join(f"{n} during {what}" for what, n in sorted(c.failures.items())),
        row("(info) acopio sync --once runs to finish / wall time (s)",
            f"{c.runs} / {c.cut_s:.1f}"),
        row("(info) clean run's wall time (s)", f"{c.clean_s:.1f}"),
        "  (bound: at most one chunk per cut goes again; a cut inside a photo smaller than a "
        "chunk loses less)",
    ]


def host_line(workdir: Path) -> str:
    fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", str(workdir)],
                        capture_output=True, text=True).stdout.strip() or "?"
    rsync_version = subprocess.run(["rsync", "--version"], capture_output=True,
                                   text=True).stdout.splitlines()[0]
    return (f"host: {platform.node()}, {os.cpu_count()} CPUs {platform.machine()}, Linux "
            f"{platform.release()}, Python {platform.python_version()}, {rsync_version}, work "
            f"folder on {fs} ({workdir})")


def reproduce_line(opts: Options) -> str:
    return " ".join(["reproduce: ./scripts/bench sync", *map(shlex.quote, opts.argv)])


def report(opts: Options, cache: PageCache, t: Throughput | None, c: Cap | None,
           cuts: Cuts | None, lan: Lan | None, wall: float) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["", f"Acopio sync benchmark, {stamp}", host_line(opts.workdir),
             f"page cache: {cache.mode}",
             f"runs: {opts.repeat} of each side, alternating; medians shown; MB = 10^6 bytes, "
             "MiB = 2^20", "kit and hub on this machine, talking over 127.0.0.1; a fresh hub, "
             "kit copy and pairing per run (not timed)"]
    for which, prelude in (("hub", opts.hub_prelude), ("kit", opts.kit_prelude)):
        if prelude:
            lines.append(f"NOT THE STOCK CODE: every {which} ran {prelude} first")
    lines.append("")
    if t:
        lines += [*throughput_lines(t), ""]
    if c:
        lines += [*cap_lines(c), ""]
    if cuts:
        lines += [*cuts_lines(cuts), ""]
    if lan:
        lines += [*lan_lines(lan), ""]
    lines += [f"benchmark wall time: {wall:.0f} s (cached inputs are reused; --rebuild "
              "rebuilds them)", reproduce_line(opts)]
    print("\n".join(lines), flush=True)


def save_results(opts: Options, cache: PageCache, t: Throughput | None, c: Cap | None,
                 cuts: Cuts | None, lan: Lan | None, wall: float) -> Path:
    out: dict[str, Any] = {"argv": list(opts.argv), "cache_mode": "cold" if cache.cold else
                           "warm", "wall_s": wall, "options": {
                               k: v for k, v in asdict(opts).items()
                               if k not in ("workdir", "argv")}}
    if t:
        out["throughput"] = {
            "bytes": t.bytes, "files": t.template.items,
            "rsync": {s: [asdict(r) for r in runs] for s, runs in t.rsync.items()},
            "acopio": {str(c): [asdict(r) for r in runs] for c, runs in t.acopio.items()},
            "ratio": {str(c): t.ratio(c) for c in t.chunks}, "best_rsync": t.best_rsync,
            "breakdown": {str(c): asdict(median_breakdown(t.acopio[c])) for c in t.chunks},
        }
    if c:
        out["cap"] = {"bytes": c.template.card.total_bytes, "files": c.template.items,
                      "cap_kbps": c.cap_kbps, "achieved_bps": c.achieved_bps,
                      "share": c.share, "steady_bps": c.steady_bps, "wall_s": c.wall_s,
                      "wire_s": c.wire_first_to_last_s, "wire_bytes": c.wire_bytes}
    if cuts:
        out["cuts"] = {k: v for k, v in asdict(cuts).items() if k != "template"} | {
            "bytes": cuts.template.card.total_bytes, "files": cuts.template.items,
            "extra": cuts.extra, "per_cut": cuts.per_cut}
    if lan:
        out["lan"] = {"bytes": lan.template.card.total_bytes, "rate": lan.rate,
                      "chunk_mb": lan.chunk_mb, "seconds": lan.seconds,
                      "acopio": {side: [asdict(r) for r in runs]
                                 for side, runs in lan.runs.items()},
                      "ratio": {side: lan.ratio(side) for side in lan.seconds}}
    path = opts.workdir / f"results-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(out, indent=1, default=str))
    return path


# -- main ------------------------------------------------------------------------------------


def check_space(opts: Options) -> None:
    """Room for the cards, the kits' archives, a hub's copy and an rsync copy."""
    need = int((opts.card_mb * 2 + opts.cut_mb + opts.cap_mb * 2) * MB + opts.card_mb * MB * 2
               + 2e9)
    opts.workdir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(opts.workdir).free
    if free < need:
        raise BenchError(f"not enough disk at {opts.workdir}: {free / 1e9:.1f} GB free, "
                         f"up to {need / 1e9:.1f} GB needed")


def write_config(workdir: Path) -> Path:
    path = workdir / "bench-acopio.toml"
    path.write_text(f'[kit]\nname = "{KIT}"\ntimezone = "{TIMEZONE}"\n')
    return path


def run(opts: Options) -> None:
    started = time.perf_counter()
    require_tools("rsync", "ffmpeg", "ffprobe", "cp")
    check_space(opts)
    remove_tree(opts.workdir / "runs")
    (opts.workdir / "runs").mkdir(parents=True)
    config = write_config(opts.workdir)
    for which, prelude in (("hub", opts.hub_prelude), ("kit", opts.kit_prelude)):
        os.environ.pop(PRELUDE_ENV[which], None)
        if prelude:
            if not Path(prelude).is_file():
                raise BenchError(f"no such prelude: {prelude}")
            os.environ[PRELUDE_ENV[which]] = prelude  # children inherit it (clean_env)
    card = main_card(opts)
    cache = PageCache("the kit's archive")
    log(f"page cache mode: {cache.mode}")
    bench = Bench(opts, config, cache)
    t = c = cuts = lan = None
    if "throughput" in opts.parts:
        t = bench_throughput(bench, kit_template(opts, config, card), opts)
    if "cap" in opts.parts:
        c = bench_cap(bench, kit_template(opts, config, cap_card(opts)), opts)
    if "cuts" in opts.parts:
        cuts = bench_cuts(bench, kit_template(opts, config, cut_card(opts, card)), opts)
    if "lan" in opts.parts:
        lan = bench_lan(bench, kit_template(opts, config, card), opts)
    remove_tree(opts.workdir / "runs")
    wall = time.perf_counter() - started
    results = save_results(opts, cache, t, c, cuts, lan, wall)
    report(opts, cache, t, c, cuts, lan, wall)
    print(f"figures saved to {results}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--probe"]:
        return probe_main(argv[1:])
    if argv[:1] == ["--floor"]:
        return floor_main(argv[1:])
    opts = parse_args(argv)
    try:
        run(opts)
    except BenchError as exc:
        log(f"error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
