"""Benchmark the device watcher: how soon a card's first file is safe in the archive, and
whether two cards at once take no longer than one after the other.

Why: issue 3 (Performance) sets two targets for `acopio devices watch`:

1. From the uevent to the first file verified in the archive: <= 1 s on this machine.
2. Two cards at once: together no slower than one after the other (ratio <= 1.0).

Everything runs for real, as tests/test_devices.py does it: a real `acopio devices watch`
child process sees a umockdev test bed (tests/udevbed.py) through the preload; a card is a
real FAT32 image (mkfs.vfat + mtools, tests/cards.py) written to the mocked /dev node and
mounted by the watcher itself with fusefat through `devices.mount_command`. Nothing in the
product is instrumented: the figures come from outside.

How a card goes in: its partition is added with no filesystem yet (a reader with an empty
slot: the watcher ignores it), the image is copied to the mocked node and ID_FS_TYPE set,
the page cache is dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`), and only then is the
"change" uevent that announces the filesystem sent. Every time below starts just before
that uevent (time.monotonic() taken in the umockdev helper; CLOCK_MONOTONIC is system-wide),
so copying the image never counts and every card is read cold.

1. Latency. Per repetition a fresh test bed, watcher and data folder; one card (20 noise
   JPEGs of about 5 MB with EXIF, and one 200 MB "video" of random bytes). The main thread
   polls every POLL_FAST_S, without touching the product:
   * the device state file (`DeviceStates(...).get("sdb1").verified >= 1`): what the box
     itself tells `acopio devices list` and the web UI;
   * the archive folder: the first non-hidden file under data/archive/<year>/... (the
     staging folder archive/.incoming is hidden). A file appears there when it is linked into
     place, just before its read-back verification, so the true "verified" moment lies
     between the two. The file's ctime (set by the unlink of its temp name right after the
     link) is shown too: it does not depend on the poll interval.
   The watcher's own log (log_level debug; millisecond timestamps) gives the breakdown:
   "udev add card sdb1" (event received and classified), "card sdb1: mounting" (job
   started), "card sdb1: importing" (fusefat mount done). Medians and maxima are reported.
2. Two cards. Two different cards (different photos, similar size: 100 noise JPEGs of ~5 MB
   and a ~110 MB file each, ~600 MB a card) staged as sdb1 and sdc1 in a fresh test bed.
   Sequential: card A announced, wait for "safe_to_remove", then card B, wait. Concurrent:
   both announced back to back, wait for both. Time from the first uevent to the last
   "safe_to_remove" (polled every POLL_SLOW_S). A fresh data folder (fresh test bed and
   watcher) and a dropped page cache before each run; the order of the modes alternates
   between repetitions; medians reported. Target: concurrent / sequential <= 1.0.
3. Context (information, no target): raw cold reads of card A's files with `cat` through
   fusefat (plain, and under the umockdev preload as the watcher runs it; fusefat kept in
   the foreground so its CPU time is known), through the kernel's vfat driver (when the
   kernel has one) and through an ext4 loop mount holding the same files; both cards read
   at once through two fusefat mounts; and `acopio ingest` of card A from a fusefat mount,
   from a kernel vfat mount (when possible) and from the ext4 loop mount. These say where
   the time goes.

Inputs are built once and cached under the work folder (default `$BENCH_OUT/devices`, that
is bench-results/devices, git-ignored): cards/*.img and a manifest per card; `--rebuild`
builds them again. Data folders, test beds and mounts are removed after every run; the
watcher logs of the last run of each kind are kept under logs/. No mount is ever left
behind (every mount made here, or by a watcher started here, is lazily unmounted in a
`finally`). Needs root (drop_caches, loop mounts).

Not part of the test suite: `./scripts/bench devices [--quick] [--repeat N]`.
Exit status: 0 when the benchmark ran, whatever the PASS/FAIL words say; 2 when it could not.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import random
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: `tests` is not an installed package
    sys.path.insert(0, str(REPO))

from appliance.datadir import DataDir  # noqa: E402
from ingest.devices.mounts import is_mountpoint  # noqa: E402
from ingest.devices.state import Device, DeviceStates  # noqa: E402
from tests import udevbed  # noqa: E402
from tests.cards import fat_image  # noqa: E402

INPUT_FORMAT = 1  # bump when the way cards are built changes: cached images are rebuilt
MB = 1_000_000
MIB = 1024 * 1024
TARGET_LATENCY_S = 1.0
TARGET_PAIR_RATIO = 1.0
POLL_FAST_S = 0.005  # while waiting for the first verified file
POLL_SLOW_S = 0.01  # while waiting for "safe_to_remove"
IMPORT_TIMEOUT_S = 900.0
DROP = Path("/proc/sys/vm/drop_caches")
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+: (.*)$")


class BenchError(Exception):
    """The benchmark cannot run, or a measured run did not do the work."""


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- options ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CardSpec:
    """What goes on one card image."""

    name: str  # cache file name
    label: str
    uuid: str  # ID_FS_UUID as udev would announce it
    photos: int
    side: int  # noise JPEG of side x side pixels (2048: about 5 MB at quality 95)
    big_mb: int  # one "video" of random bytes, MiB
    seed: int
    day: str  # EXIF date of the photos, YYYY:MM:DD

    def params(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Options:
    quick: bool
    latency_repeat: int
    pair_repeat: int
    latency_card: CardSpec
    pair_cards: tuple[CardSpec, CardSpec]
    workdir: Path
    rebuild: bool
    context: bool
    argv: tuple[str, ...]


def parse_args(argv: Sequence[str]) -> Options:
    default_out = Path(os.environ.get("BENCH_OUT") or REPO / "bench-results") / "devices"
    p = argparse.ArgumentParser(
        prog="scripts/bench devices",
        description="Device watcher: uevent to first verified file; two cards at once vs "
                    "one after the other.")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: small cards (a few MB of photos, 20-30 MB files), 2 "
                        "repetitions")
    p.add_argument("--repeat", type=int,
                   help="repetitions of each measurement (default 5 for the latency, 3 for "
                        "each two-card mode; --quick 2)")
    p.add_argument("--workdir", type=Path, default=default_out,
                   help=f"cached card images and scratch space (default {default_out})")
    p.add_argument("--rebuild", action="store_true", help="build the card images again")
    p.add_argument("--no-context", dest="context", action="store_false",
                   help="skip section 3 (raw read speeds, plain `acopio ingest`)")
    args = p.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        p.error("--repeat must be positive")
    if args.quick:
        latency = CardSpec("quick-L", "EOS_DIGITAL", "1111-0001", 5, 1024, 20, 11, "2026:03:14")
        pair = (CardSpec("quick-A", "EOS_DIGITAL", "AAAA-0001", 10, 1024, 30, 21, "2026:03:15"),
                CardSpec("quick-B", "NIKON_D750", "BBBB-0002", 10, 1024, 30, 31, "2026:03:16"))
    else:
        latency = CardSpec("L", "EOS_DIGITAL", "1111-0001", 20, 2048, 200, 11, "2026:03:14")
        pair = (CardSpec("A", "EOS_DIGITAL", "AAAA-0001", 100, 2048, 110, 21, "2026:03:15"),
                CardSpec("B", "NIKON_D750", "BBBB-0002", 100, 2048, 110, 31, "2026:03:16"))
    default_latency, default_pair = (2, 2) if args.quick else (5, 3)
    return Options(
        quick=args.quick,
        latency_repeat=args.repeat or default_latency,
        pair_repeat=args.repeat or default_pair,
        latency_card=latency,
        pair_cards=pair,
        workdir=args.workdir.absolute(),
        rebuild=args.rebuild,
        context=args.context,
        argv=tuple(argv),
    )


# -- small helpers ---------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def drop_caches() -> None:
    os.sync()
    DROP.write_text("3\n")


def remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def mounts_under(root: Path) -> list[Path]:
    """Every mount point at or below `root` (deepest first), dead FUSE mounts included."""
    prefix = os.fspath(root.absolute())
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) > 4:
                target = fields[4].encode().decode("unicode_escape")
                if target == prefix or target.startswith(prefix + "/"):
                    found.append(Path(target))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def umount_all(root: Path) -> None:
    for mount in mounts_under(root):
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


def wall_offset() -> float:
    """time.time() - time.monotonic(), to put wall-clock stamps (logs, ctime) on the
    monotonic time line."""
    samples = []
    for _ in range(5):
        a = time.monotonic()
        w = time.time()
        b = time.monotonic()
        samples.append((b - a, w - (a + b) / 2))
    return min(samples)[1]


class CpuSample:
    """Whole-machine CPU use between two moments, from /proc/stat."""

    def __init__(self) -> None:
        self.start = self._read()

    @staticmethod
    def _read() -> list[int]:
        with open("/proc/stat") as fh:
            return [int(x) for x in fh.readline().split()[1:]]

    def shares(self) -> tuple[float, float]:
        """(busy share, iowait share) of all CPUs since construction, 0..1."""
        now = self._read()
        delta = [b - a for a, b in zip(self.start, now, strict=False)]
        total = sum(delta) or 1
        idle, iowait = delta[3], delta[4]
        return (total - idle - iowait) / total, iowait / total


def process_cpu_s(pid: int) -> float:
    """utime + stime of a live process (its own threads, not its children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- cards -----------------------------------------------------------------------------------


@dataclass
class Card:
    spec: CardSpec
    image: Path
    files: dict[str, list[Any]]  # path on the card -> [size, sha256]

    @property
    def count(self) -> int:
        return len(self.files)

    @property
    def total_bytes(self) -> int:
        return sum(size for size, _ in self.files.values())

    @property
    def description(self) -> str:
        photos = sum(1 for rel in self.files if rel.endswith(".JPG"))
        photo_bytes = sum(s for rel, (s, _) in self.files.items() if rel.endswith(".JPG"))
        return (f"{photos} JPEGs of ~{photo_bytes / max(photos, 1) / MB:.1f} MB + one "
                f"{self.spec.big_mb} MiB file, {self.total_bytes / MB:,.0f} MB")


def _make_photo(job: tuple[str, int, int, int, str]) -> tuple[str, str]:
    """One noise JPEG with EXIF (runs in a worker process)."""
    folder, index, side, seed, day = job
    rng = random.Random(seed * 1_000_003 + index)
    img = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    exif = Image.Exif()
    exif[271] = "Canon"
    exif[272] = "Canon EOS R6"
    when = f"{day} 10:{index // 60 % 60:02d}:{index % 60:02d}"
    sub = exif.get_ifd(0x8769)
    sub[36867] = when  # DateTimeOriginal
    sub[36881] = "-06:00"  # OffsetTimeOriginal
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, exif=exif)
    rel = f"DCIM/100CANON/IMG_{index + 1:04d}.JPG"
    path = Path(folder) / f"p{index:04d}.jpg"
    path.write_bytes(buf.getvalue())
    stamp = datetime.strptime(when, "%Y:%m:%d %H:%M:%S").timestamp()
    os.utime(path, (stamp, stamp))  # mcopy -m keeps it, as a camera's clock would set it
    return rel, str(path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def build_card(spec: CardSpec, cards_dir: Path, rebuild: bool) -> Card:
    """The card image for `spec`, from the cache when it was built with the same spec."""
    image = cards_dir / f"{spec.name}.img"
    manifest_path = cards_dir / f"{spec.name}.json"
    params = {"format": INPUT_FORMAT, **spec.params()}
    if not rebuild:
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest["params"] == params and image.stat().st_size == manifest["image_bytes"]:
                return Card(spec, image, manifest["files"])
        except (FileNotFoundError, KeyError, ValueError):
            pass
    log(f"building card image {image.name} ({spec.photos} photos, {spec.big_mb} MiB file)")
    manifest_path.unlink(missing_ok=True)
    build = cards_dir / f"build-{spec.name}"
    remove_tree(build)
    build.mkdir(parents=True)
    try:
        jobs = [(str(build), i, spec.side, spec.seed, spec.day) for i in range(spec.photos)]
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            local = {rel: Path(path) for rel, path in pool.map(_make_photo, jobs)}
        big = build / "big.mp4"
        rng = random.Random(spec.seed)
        with open(big, "wb") as fh:
            for _ in range(spec.big_mb):
                fh.write(rng.randbytes(MIB))
        local["PRIVATE/M4ROOT/CLIP/C0001.MP4"] = big
        image.unlink(missing_ok=True)
        fat_image(image, local, label=spec.label)
        files = {rel: [path.stat().st_size, sha256_of(path)] for rel, path in local.items()}
    finally:
        remove_tree(build)
    os.sync()
    manifest_path.write_text(json.dumps(
        {"params": params, "image_bytes": image.stat().st_size, "files": files}, indent=1))
    return Card(spec, image, files)


def ext4_twin(card: Card, cards_dir: Path, scratch: Path, rebuild: bool) -> Path:
    """An ext4 image holding the same files as the card, cached next to it: the files are
    copied out of the FAT image with mtools, then `mkfs.ext4 -d` (which hangs when its source
    is a fusefat mount: a read stuck in D state) builds the image from them."""
    image = cards_dir / f"{card.spec.name}.ext4.img"
    stamp = cards_dir / f"{card.spec.name}.ext4.json"
    key = {"vfat_image_bytes": card.image.stat().st_size, "files": len(card.files),
           "sha": hashlib.sha256(json.dumps(card.files, sort_keys=True).encode()).hexdigest()}
    if not rebuild and image.exists():
        with contextlib.suppress(FileNotFoundError, ValueError):
            if json.loads(stamp.read_text()) == key:
                return image
    log(f"building {image.name} (same files on ext4)")
    stamp.unlink(missing_ok=True)
    tree = scratch / "ext4-src"
    remove_tree(tree)
    tree.mkdir(parents=True)
    try:
        subprocess.run(["mcopy", "-s", "-m", "-n", "-i", str(card.image), "::/*", f"{tree}/"],
                       check=True, capture_output=True, timeout=600)
        image.unlink(missing_ok=True)
        with open(image, "wb") as fh:
            fh.truncate(int(card.total_bytes * 1.15) + 64 * MIB)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(image)], check=True,
                       capture_output=True, timeout=600)
    finally:
        remove_tree(tree)
    os.sync()
    stamp.write_text(json.dumps(key))
    return image


# -- mounts made by the benchmark itself (section 3) -----------------------------------------


def kernel_has(fstype: str) -> bool:
    with open("/proc/filesystems") as fh:
        return any(line.split()[-1] == fstype for line in fh if line.strip())


@contextlib.contextmanager
def kernel_mount(image: Path, mnt: Path, fstype: str) -> Iterator[Path]:
    mnt.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", fstype, "-o", "loop,ro,nosuid,nodev,noexec", str(image),
                    str(mnt)], check=True, capture_output=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, check=False)
        if is_mountpoint(mnt):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


@dataclass
class FuseMount:
    """fusefat kept in the foreground (our child), so its CPU time is known at the end."""

    mnt: Path
    proc: subprocess.Popen[bytes]
    cpu_s: float = float("nan")


@contextlib.contextmanager
def fusefat_mount(device: str, mnt: Path, env: dict[str, str] | None = None
                  ) -> Iterator[FuseMount]:
    """fusefat in the foreground as our child. Its stderr goes to a file, never a pipe:
    fusefat writes to stderr while serving reads, and a full pipe hangs every reader."""
    mnt.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(["fusefat", "-f", "-o", "ro", device, str(mnt)], env=env,
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        fuse = FuseMount(mnt, proc)
        try:
            deadline = time.monotonic() + 10
            while not is_mountpoint(mnt):
                if proc.poll() is not None or time.monotonic() > deadline:
                    err.seek(0)
                    text = err.read().decode(errors="replace").strip()[-300:]
                    raise BenchError(f"fusefat could not mount {device}: {text}")
                time.sleep(0.01)
            yield fuse
        finally:
            subprocess.run(["fusermount", "-u", str(mnt)], capture_output=True, check=False)
            if is_mountpoint(mnt):
                subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
            if proc.returncode is None:
                fuse.cpu_s = reap(proc)


def reap(proc: subprocess.Popen[bytes], timeout: float = 10) -> float:
    """Wait for a child (killing it after `timeout` s); its CPU seconds (wait4 rusage)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:
            return float("nan")
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            proc.kill()
            deadline = float("inf")
        time.sleep(0.01)


# -- the watcher in its own test bed ---------------------------------------------------------


class Session:
    """A fresh umockdev test bed, a fresh data folder, and a real `acopio devices watch`
    child that sees the test bed (the mechanics of tests/test_devices.py's Watcher and
    insert()). Always torn down completely: watcher stopped, mounts gone, folders deleted."""

    def __init__(self, run_dir: Path, keep_log: Path | None = None) -> None:
        remove_tree(run_dir)
        run_dir.mkdir(parents=True)
        self.run_dir = run_dir
        self.keep_log = keep_log
        self.data = run_dir / "data"
        self.media = run_dir / "media"
        self.config = run_dir / "acopio.toml"
        self.log = run_dir / "watcher.log"
        self.config.write_text(
            f'data_dir = "{self.data}"\nlog_level = "debug"\n[devices]\n'
            f'mount_command = "fusefat -o ro {{device}} {{mountpoint}}"\n'
            f'unmount_command = "fusermount -u {{mountpoint}}"\n'
            f'mount_root = "{self.media}"\n')
        self.datadir = DataDir.at(self.data)
        self.states = DeviceStates(self.datadir.state)
        self.testbed = udevbed.UdevTestbed()
        self.proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle

    def start(self) -> None:
        env = {k: v for k, v in self.testbed.child_env().items()
               if not k.startswith("ACOPIO_")}
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "appliance", "--config", str(self.config), "devices",
                 "watch"], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=err)
        self.wait_for(lambda: (self.datadir.state / "running.json").exists(),
                      "the watcher to start", 60)
        # running.json is written before the udev monitor listens. A microphone plugged in
        # now is seen either by coldplug or by the monitor, and either way only once the
        # monitor is up: when it shows as "ready", a uevent cannot be missed any more.
        self.testbed.add_microphone(1)
        self.wait_for(lambda: any(d.kind == "microphone" for d in self.all_devices()),
                      "the watcher's udev monitor to be listening", 60)

    def close(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            umount_all(self.run_dir)
            try:
                self.testbed.close()
            finally:
                if self.keep_log is not None and self.log.exists():
                    self.keep_log.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(self.log, self.keep_log)
                remove_tree(self.run_dir)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- cards

    def stage(self, card: Card, dev: str) -> str:
        """The card's partition appears without a filesystem (the watcher ignores it) and
        its content is written to the mocked node; `announce` then plugs it in for real."""
        devnode = f"/dev/{dev}"
        syspath = self.testbed.add_card(id=dev, label=card.spec.label, uuid=card.spec.uuid,
                                        fstype="", devnode=devnode)
        shutil.copyfile(card.image, self.testbed.node_path(devnode))
        self.testbed.set_property(syspath, "ID_FS_TYPE", "vfat")
        return syspath

    def announce(self, syspath: str) -> float:
        """udev's probe tells the filesystem: the "change" uevent. Returns time.monotonic()
        just before it was sent."""
        return self.testbed.uevent(syspath, "change")

    # -- watching

    def all_devices(self) -> list[Device]:
        try:
            return self.states.all()
        except Exception:  # a read racing the writer's rename: try again next poll
            return []

    def device(self, device_id: str) -> Device | None:
        try:
            return self.states.get(device_id)
        except Exception:
            return None

    def alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"the watcher died (exit {self.proc.returncode}):\n{self.tail()}")

    def tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-3000:]

    def wait_for(self, condition: Callable[[], object], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            self.alive()
            if time.monotonic() > deadline:
                states = [d.to_record() for d in self.all_devices()]
                raise BenchError(f"timed out waiting for {what}; states: {states}\nlog:\n"
                                 f"{self.tail()}")
            time.sleep(POLL_SLOW_S)

    def settle(self, device_id: str, card: Card, what: str) -> Device:
        """Wait for a card to be safe to remove, and check it imported every file."""
        self.wait_for(lambda: (d := self.device(device_id)) is not None and d.status in (
            "safe_to_remove", "error", "removed_early"), f"{device_id} to finish",
            IMPORT_TIMEOUT_S)
        device = self.device(device_id)
        assert device is not None
        if device.status != "safe_to_remove" or device.verified != card.count \
                or device.failed:
            raise BenchError(
                f"{what}: {device_id} ended {device.status} ({device.reason}) with "
                f"{device.verified} of {card.count} verified, {device.failed} failed, "
                f"{device.duplicates} duplicates\nlog:\n{self.tail()}")
        return device

    def log_times(self, offset: float) -> dict[str, float]:
        """Monotonic times of the watcher's log lines we care about (first of each)."""
        times: dict[str, float] = {}
        for line in self.log.read_text(errors="replace").splitlines():
            m = LOG_LINE.match(line)
            if m is None:
                continue
            wall = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            times.setdefault(m.group(2), wall - offset)
        return times


def first_archived(archive: Path) -> Path | None:
    """The first regular file under archive/<not hidden>/..., hidden names skipped."""
    stack = [archive]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                return Path(entry.path)
    return None


# -- 1. latency ------------------------------------------------------------------------------


@dataclass
class LatencyRun:
    """Seconds after the "change" uevent (None: not seen)."""

    udev_add: float | None
    mounting: float | None
    importing: float | None
    archive_ctime: float | None  # first archived file's ctime (linked into place)
    archive_seen: float  # first archived file seen by the poll
    state_verified: float  # state file first shows verified >= 1
    state_verified_count: int  # the `verified` it showed then
    safe_to_remove: float
    card_bytes: int
    poll_checks: int


def measure_latency(card: Card, index: int, opts: Options) -> LatencyRun:
    run_dir = opts.workdir / "runs" / f"latency-{index}"
    with Session(run_dir, keep_log=opts.workdir / "logs" / "latency-last.log") as s:
        s.start()
        syspath = s.stage(card, "sdb1")
        drop_caches()
        time.sleep(0.5)
        offset = wall_offset()
        archive = s.datadir.archive
        t_archive = t_state = None
        archived: Path | None = None
        verified_then = 0
        checks = 0
        t0 = s.announce(syspath)
        deadline = t0 + IMPORT_TIMEOUT_S
        while t_archive is None or t_state is None:
            now = time.monotonic()
            if now > deadline:
                raise BenchError(f"no verified file within {IMPORT_TIMEOUT_S:.0f} s\n"
                                 f"{s.tail()}")
            checks += 1
            if t_archive is None:
                archived = first_archived(archive)
                if archived is not None:
                    t_archive = time.monotonic()
            if t_state is None:
                device = s.device("sdb1")
                if device is not None and device.verified >= 1:
                    t_state = time.monotonic()
                    verified_then = device.verified
            if checks % 200 == 0:
                s.alive()
            time.sleep(POLL_FAST_S)
        ctime = None
        if archived is not None:
            with contextlib.suppress(OSError):
                ctime = archived.stat().st_ctime_ns / 1e9 - offset - t0
        s.settle("sdb1", card, "latency run")
        t_safe = time.monotonic()
        marks = s.log_times(offset)

    def mark(message: str) -> float | None:
        t = marks.get(message)
        return None if t is None else t - t0

    assert t_archive is not None and t_state is not None
    return LatencyRun(
        udev_add=mark("udev add card sdb1"), mounting=mark("card sdb1: mounting"),
        importing=mark("card sdb1: importing"), archive_ctime=ctime,
        archive_seen=t_archive - t0, state_verified=t_state - t0,
        state_verified_count=verified_then, safe_to_remove=t_safe - t0,
        card_bytes=card.total_bytes, poll_checks=checks)


# -- 2. two cards ----------------------------------------------------------------------------


@dataclass
class PairRun:
    mode: str  # "sequential" or "concurrent"
    total: float  # first uevent -> last safe_to_remove
    card_a: float  # its own uevent -> its safe_to_remove
    card_b: float
    watcher_cpu_s: float
    cpu_busy: float  # share of all CPUs, 0..1
    cpu_iowait: float


def wait_safe(s: Session, ids: Sequence[str], cards: dict[str, Card], what: str
              ) -> dict[str, float]:
    """Poll until every id is safe to remove; the monotonic time each was first seen so."""
    done: dict[str, float] = {}
    deadline = time.monotonic() + IMPORT_TIMEOUT_S
    checks = 0
    while len(done) < len(ids):
        for device_id in ids:
            if device_id in done:
                continue
            device = s.device(device_id)
            if device is not None and device.status in ("safe_to_remove", "error",
                                                         "removed_early"):
                done[device_id] = time.monotonic()
        checks += 1
        if checks % 100 == 0:
            s.alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not all of {ids} finished within "
                             f"{IMPORT_TIMEOUT_S:.0f} s\n{s.tail()}")
        time.sleep(POLL_SLOW_S)
    for device_id in ids:
        s.settle(device_id, cards[device_id], what)  # checks the counts
    return done


def measure_pair(mode: str, cards: tuple[Card, Card], index: int, opts: Options) -> PairRun:
    run_dir = opts.workdir / "runs" / f"pair-{mode}-{index}"
    a, b = cards
    by_id = {"sdb1": a, "sdc1": b}
    with Session(run_dir, keep_log=opts.workdir / "logs" / f"pair-{mode}-last.log") as s:
        s.start()
        path_a = s.stage(a, "sdb1")
        path_b = s.stage(b, "sdc1")
        drop_caches()
        time.sleep(0.5)
        assert s.proc is not None
        cpu_before = process_cpu_s(s.proc.pid)
        cpu = CpuSample()
        if mode == "sequential":
            t0 = t_a0 = s.announce(path_a)
            end_a = wait_safe(s, ["sdb1"], by_id, "sequential, card A")["sdb1"]
            t_b0 = s.announce(path_b)
            end_b = wait_safe(s, ["sdc1"], by_id, "sequential, card B")["sdc1"]
        else:
            t0 = t_a0 = s.announce(path_a)
            t_b0 = s.announce(path_b)
            ends = wait_safe(s, ["sdb1", "sdc1"], by_id, "concurrent")
            end_a, end_b = ends["sdb1"], ends["sdc1"]
        busy, iowait = cpu.shares()
        watcher_cpu = process_cpu_s(s.proc.pid) - cpu_before
    return PairRun(mode, max(end_a, end_b) - t0, end_a - t_a0, end_b - t_b0, watcher_cpu,
                   busy, iowait)


def alternating(repeat: int, sides: tuple[str, str]) -> Iterator[tuple[int, str]]:
    """Repetition i runs the sides in order, i+1 in reverse: drift hits both alike."""
    for i in range(repeat):
        for side in sides if i % 2 == 0 else sides[::-1]:
            yield i, side


# -- 3. context ------------------------------------------------------------------------------


@dataclass
class Read:
    what: str
    mbytes: float
    runs: list[float] = field(default_factory=list)  # seconds
    cpu: list[float] = field(default_factory=list)  # fusefat's own CPU seconds, when known

    @property
    def seconds(self) -> float:
        return median(self.runs)

    @property
    def rate(self) -> float:
        return self.mbytes / self.seconds

    @property
    def cpu_s(self) -> float:
        known = [c for c in self.cpu if c == c]  # NaN: not known
        return median(known) if known else float("nan")


def cold_cat(root: Path, card: Card) -> float:
    """Seconds to `cat` every file of the card under `root`, page cache dropped first."""
    paths = [str(root / rel) for rel in sorted(card.files)]
    drop_caches()
    started = time.perf_counter()
    subprocess.run(["cat", *paths], stdout=subprocess.DEVNULL, check=True, timeout=900)
    return time.perf_counter() - started


def acopio_ingest(source: Path, run_dir: Path, card: Card,
                  base_env: dict[str, str] | None = None) -> float:
    """Seconds for a plain `acopio ingest SOURCE` into a fresh data folder, cold cache."""
    remove_tree(run_dir)
    run_dir.mkdir(parents=True)
    env = {k: v for k, v in (base_env or os.environ).items() if not k.startswith("ACOPIO_")}
    config = run_dir / "acopio.toml"
    config.write_text(f'data_dir = "{run_dir / "data"}"\n')
    try:
        drop_caches()
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "appliance", "--config", str(config),
                                 "ingest", str(source), "--json"], cwd=REPO, env=env,
                                capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        try:
            summary = json.loads(result.stdout)
        except ValueError:
            summary = {}
        imported = summary.get("imported")
        if result.returncode != 0 or imported != card.count:
            raise BenchError(f"acopio ingest {source} imported {imported} of {card.count} "
                             f"(exit {result.returncode}): {result.stderr.strip()[-800:]}")
        # The import's own time (its --json "seconds"), without the interpreter's start-up.
        return float(summary.get("seconds") or seconds)
    finally:
        remove_tree(run_dir)


@dataclass
class Context:
    repeat: int = 0
    reads: list[Read] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def cat_both(a: FuseMount, card_a: Card, b: FuseMount, card_b: Card) -> float:
    """Seconds to `cat` both cards' files at once (two cat processes), cold cache."""
    drop_caches()
    started = time.perf_counter()
    procs = [subprocess.Popen(["cat", *[str(m.mnt / rel) for rel in sorted(c.files)]],
                              stdout=subprocess.DEVNULL) for m, c in ((a, card_a), (b, card_b))]
    try:
        for proc in procs:
            proc.wait(timeout=900)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return time.perf_counter() - started


def measure_context(cards: tuple[Card, Card], opts: Options) -> Context:
    """Section 3: every measurement `repeat` times, in reverse order every other time."""
    a, b = cards
    scratch = opts.workdir / "runs" / "context"
    remove_tree(scratch)
    scratch.mkdir(parents=True)
    mb_a, mb_ab = a.total_bytes / MB, (a.total_bytes + b.total_bytes) / MB
    vfat = kernel_has("vfat")
    ctx = Context(repeat=min(opts.pair_repeat, 3))
    rows = {key: Read(label, mb) for key, label, mb in [
        ("fuse", "fusefat, plain", mb_a),
        ("fuse-preload", "fusefat under the umockdev preload (as the watcher runs it)", mb_a),
        *([("vfat", "kernel vfat, loop mount of the same image", mb_a)] if vfat else []),
        ("ext4", "kernel ext4, loop mount, same files", mb_a),
        ("fuse-seq", "fusefat, card A then card B", mb_ab),
        ("fuse-both", "fusefat, cards A and B at once (fusefat CPU: both)", mb_ab),
        ("ingest-fuse", "acopio ingest from a fusefat mount", mb_a),
        ("ingest-preload", "acopio ingest, both it and fusefat under the preload", mb_a),
        *([("ingest-vfat", "acopio ingest from a kernel vfat mount", mb_a)] if vfat else []),
        ("ingest-ext4", "acopio ingest from an ext4 loop mount (same files)", mb_a),
    ]}
    if not vfat:
        ctx.notes.append("this kernel has no vfat driver: no kernel vfat figures")
    ctx.notes.append("`acopio ingest` rows: the import's own time (the `seconds` of its --json "
                     "summary), without the interpreter's start-up")
    ingest_run = scratch / "ingest-run"
    try:
        ext4 = ext4_twin(a, opts.workdir / "cards", scratch, opts.rebuild)
        with udevbed.UdevTestbed() as testbed:
            testbed.add_card(id="sdb1", fstype="vfat")
            shutil.copyfile(a.image, testbed.node_path("/dev/sdb1"))
            preload_env = testbed.child_env()

            def fuse_read() -> None:
                with fusefat_mount(str(a.image), scratch / "fuse") as fuse:
                    rows["fuse"].runs.append(cold_cat(fuse.mnt, a))
                rows["fuse"].cpu.append(fuse.cpu_s)

            def fuse_preload_read() -> None:
                with fusefat_mount("/dev/sdb1", scratch / "fuse", env=preload_env) as fuse:
                    rows["fuse-preload"].runs.append(cold_cat(fuse.mnt, a))
                rows["fuse-preload"].cpu.append(fuse.cpu_s)

            def kernel_read(key: str, image: Path, fstype: str) -> None:
                with kernel_mount(image, scratch / "kernel", fstype) as mnt:
                    rows[key].runs.append(cold_cat(mnt, a))

            def two_cards() -> None:
                with fusefat_mount(str(a.image), scratch / "fa") as fa, \
                        fusefat_mount(str(b.image), scratch / "fb") as fb:
                    rows["fuse-seq"].runs.append(cold_cat(fa.mnt, a) + cold_cat(fb.mnt, b))
                with fusefat_mount(str(a.image), scratch / "fa") as fa, \
                        fusefat_mount(str(b.image), scratch / "fb") as fb:
                    rows["fuse-both"].runs.append(cat_both(fa, a, fb, b))
                rows["fuse-both"].cpu.append(fa.cpu_s + fb.cpu_s)

            def ingest_fuse(key: str, device: str, env: dict[str, str] | None) -> None:
                with fusefat_mount(device, scratch / "fuse", env=env) as fuse:
                    rows[key].runs.append(acopio_ingest(fuse.mnt, ingest_run, a, env))
                rows[key].cpu.append(fuse.cpu_s)

            def ingest_kernel(key: str, image: Path, fstype: str) -> None:
                with kernel_mount(image, scratch / "kernel", fstype) as mnt:
                    rows[key].runs.append(acopio_ingest(mnt, ingest_run, a))

            steps: list[Callable[[], None]] = [
                fuse_read, fuse_preload_read,
                *([lambda: kernel_read("vfat", a.image, "vfat")] if vfat else []),
                lambda: kernel_read("ext4", ext4, "ext4"),
                two_cards,
                lambda: ingest_fuse("ingest-fuse", str(a.image), None),
                lambda: ingest_fuse("ingest-preload", "/dev/sdb1", preload_env),
                *([lambda: ingest_kernel("ingest-vfat", a.image, "vfat")] if vfat else []),
                lambda: ingest_kernel("ingest-ext4", ext4, "ext4"),
            ]
            for i in range(ctx.repeat):
                for step in steps if i % 2 == 0 else steps[::-1]:
                    step()
                log(f"context run {i + 1}/{ctx.repeat} done")
    finally:
        umount_all(scratch)
        remove_tree(scratch)
    ctx.reads = list(rows.values())
    return ctx


# -- report ----------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def row(label: str, value: str, target: str = "", result: str = "") -> str:
    return f"  {label:<60} {value:>13}  {target:>9}  {result}"


def secs(values: Sequence[float | None]) -> str:
    return ", ".join("-" if v is None else f"{v:.3f}" for v in values)


def opt_median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return median(known) if len(known) == len(values) and known else None


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def latency_lines(card: Card, runs: list[LatencyRun]) -> list[str]:
    state = [r.state_verified for r in runs]
    seen = [r.archive_seen for r in runs]

    def step(later: Callable[[LatencyRun], float | None],
             earlier: Callable[[LatencyRun], float | None]) -> float | None:
        values = []
        for r in runs:
            a, b = later(r), earlier(r)
            if a is None or b is None:
                return None
            values.append(a - b)
        return median(values)

    safe = [r.safe_to_remove for r in runs]
    return [
        f"1. uevent -> first file verified in the archive: one card, {card.description}; "
        f"{len(runs)} runs",
        row("measure (s after the \"change\" uevent)", "median", "target", "result"),
        row("state file shows verified >= 1 (devices list)", f"{median(state):.3f}",
            f"<= {TARGET_LATENCY_S:.1f}", verdict(median(state) <= TARGET_LATENCY_S)),
        row("  same, max of runs", f"{max(state):.3f}", f"<= {TARGET_LATENCY_S:.1f}",
            verdict(max(state) <= TARGET_LATENCY_S)),
        row("first file appears under archive/YYYY/ (poll)", f"{median(seen):.3f}",
            f"<= {TARGET_LATENCY_S:.1f}", verdict(median(seen) <= TARGET_LATENCY_S)),
        row("  same, max of runs", f"{max(seen):.3f}", f"<= {TARGET_LATENCY_S:.1f}",
            verdict(max(seen) <= TARGET_LATENCY_S)),
        row("(info) first file's ctime (linked into place)",
            fmt(opt_median([r.archive_ctime for r in runs]))),
        "  breakdown from the watcher's log (ms stamps; medians of the step durations):",
        row("  uevent -> \"udev add card\" (received, classified)",
            fmt(opt_median([r.udev_add for r in runs]))),
        row("  -> \"mounting\" (job thread started, state written)",
            fmt(step(lambda r: r.mounting, lambda r: r.udev_add))),
        row("  -> \"importing\" (fusefat mount command done)",
            fmt(step(lambda r: r.importing, lambda r: r.mounting))),
        row("  -> first file in the archive (scan, copy, metadata, link)",
            fmt(step(lambda r: r.archive_seen, lambda r: r.importing))),
        row("  -> state file shows it verified",
            fmt(step(lambda r: r.state_verified, lambda r: r.archive_seen))),
        row("(info) `verified` the state file showed at that moment",
            "/".join(str(r.state_verified_count) for r in runs)),
        row("(info) whole card safe to remove (median s)", f"{median(safe):.2f}"),
        row("(info) whole card, MB/s", f"{card.total_bytes / MB / median(safe):,.1f}"),
        f"  runs, s: state [{secs(state)}]  archive poll [{secs(seen)}]  ctime "
        f"[{secs([r.archive_ctime for r in runs])}]",
        f"           udev add [{secs([r.udev_add for r in runs])}]  mounting "
        f"[{secs([r.mounting for r in runs])}]  importing [{secs([r.importing for r in runs])}]"
        f"  safe [{secs(safe)}]",
        f"  poll every {POLL_FAST_S * 1000:.0f} ms (state file and archive folder); log "
        f"stamps have 1 ms resolution",
    ]


def pair_lines(cards: tuple[Card, Card], runs: list[PairRun]) -> list[str]:
    seq = [r for r in runs if r.mode == "sequential"]
    con = [r for r in runs if r.mode == "concurrent"]
    seq_s, con_s = median([r.total for r in seq]), median([r.total for r in con])
    ratio = con_s / seq_s
    mb = (cards[0].total_bytes + cards[1].total_bytes) / MB
    lines = [
        f"2. Two cards: A ({cards[0].description}) and B ({cards[1].description}); "
        f"{len(seq)} runs of each mode, alternating",
        row("measure", "median", "target", "result"),
        row("one after the other: A in, safe, B in, safe (s)", f"{seq_s:.2f}"),
        row("both at once (s)", f"{con_s:.2f}"),
        row("both at once / one after the other", f"{ratio:.3f}",
            f"<= {TARGET_PAIR_RATIO:.1f}", verdict(ratio <= TARGET_PAIR_RATIO)),
        row("(info) MB/s, sequential / concurrent",
            f"{mb / seq_s:,.1f} / {mb / con_s:,.1f}"),
        row("(info) sequential: card A / card B alone (s)",
            f"{median([r.card_a for r in seq]):.2f} / {median([r.card_b for r in seq]):.2f}"),
        row("(info) concurrent: card A / card B each (s)",
            f"{median([r.card_a for r in con]):.2f} / {median([r.card_b for r in con]):.2f}"),
        row("(info) watcher CPU s (own threads), seq / conc",
            f"{median([r.watcher_cpu_s for r in seq]):.1f} / "
            f"{median([r.watcher_cpu_s for r in con]):.1f}"),
        row("(info) all CPUs busy %, seq / conc",
            f"{100 * median([r.cpu_busy for r in seq]):.0f} / "
            f"{100 * median([r.cpu_busy for r in con]):.0f}"),
        row("(info) iowait %, seq / conc",
            f"{100 * median([r.cpu_iowait for r in seq]):.0f} / "
            f"{100 * median([r.cpu_iowait for r in con]):.0f}"),
        "  runs in order, s: " + ", ".join(f"{r.mode[:3]} {r.total:.2f}" for r in runs),
    ]
    if ratio > TARGET_PAIR_RATIO:
        lines.append(f"  NOT MET: both at once took {100 * (ratio - 1):.1f}% longer "
                     f"({con_s - seq_s:+.2f} s) than one after the other")
    else:
        lines.append(f"  met: both at once took {100 * (1 - ratio):.1f}% less time "
                     f"({con_s - seq_s:+.2f} s) than one after the other")
    return lines


def context_lines(ctx: Context) -> list[str]:
    lines = ["3. Context: cold reads of card A's files (`cat`), and plain `acopio ingest` of "
             f"card A; medians of {ctx.repeat} runs",
             row("read path", "MB/s", "s", "fusefat CPU s")]
    for r in ctx.reads:
        cpu = "" if r.cpu_s != r.cpu_s else f"{r.cpu_s:.2f}"  # NaN: not known
        lines.append(row(r.what, f"{r.rate:,.1f}", f"{r.seconds:.2f}", f"{cpu:>6}"))
        if len(r.runs) > 1:
            lines[-1] += f"  [{secs(r.runs)}]"
    return lines + [f"  note: {n}" for n in ctx.notes]


def host_line(workdir: Path) -> str:
    fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", str(workdir)],
                        capture_output=True, text=True, check=False).stdout.strip() or "?"
    fuse = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "fusefat"],
                          capture_output=True, text=True, check=False).stdout.strip() or "?"
    return (f"host: {platform.node()}, {os.cpu_count()} CPUs {platform.machine()}, Linux "
            f"{platform.release()}, Python {platform.python_version()}, fusefat {fuse}; "
            f"work folder on {fs} ({workdir})")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def reproduce_line(opts: Options) -> str:
    return " ".join(["reproduce: ./scripts/bench devices", *map(shlex.quote, opts.argv)])


# -- main ------------------------------------------------------------------------------------


def check_ready(opts: Options) -> None:
    if os.geteuid() != 0:
        raise BenchError("run as root: it drops the page cache and makes loop mounts")
    missing = [t for t in ("fusefat", "fusermount", "mkfs.vfat", "mcopy", "mmd", "mkfs.ext4",
                           "mount", "umount", "cat") if shutil.which(t) is None]
    if missing:
        raise BenchError(f"missing tools: {', '.join(missing)} (run ./scripts/setup as root)")
    try:
        udevbed.library_path(udevbed.PRELOAD)
    except udevbed.UmockdevMissing as exc:
        raise BenchError(str(exc)) from exc
    cards = [opts.latency_card, *opts.pair_cards]
    need = sum((c.photos * c.side * c.side * 1.3 + c.big_mb * MIB) * 1.3 for c in cards)
    need = need * 4 + 1e9  # images + ext4 twin + a test bed copy + imported data, twice
    opts.workdir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(opts.workdir).free
    if free < need:
        raise BenchError(f"not enough disk at {opts.workdir}: {free / 1e9:.1f} GB free, "
                         f"about {need / 1e9:.1f} GB needed")


def run(opts: Options) -> None:
    started = time.perf_counter()
    load_before = load_average()
    check_ready(opts)
    runs_dir = opts.workdir / "runs"
    umount_all(runs_dir)
    remove_tree(runs_dir)
    cards_dir = opts.workdir / "cards"
    cards_dir.mkdir(parents=True, exist_ok=True)
    latency_card = build_card(opts.latency_card, cards_dir, opts.rebuild)
    pair = (build_card(opts.pair_cards[0], cards_dir, opts.rebuild),
            build_card(opts.pair_cards[1], cards_dir, opts.rebuild))
    try:
        latency: list[LatencyRun] = []
        for i in range(opts.latency_repeat):
            latency.append(measure_latency(latency_card, i, opts))
            r = latency[-1]
            log(f"latency run {i + 1}/{opts.latency_repeat}: state {r.state_verified:.3f} s, "
                f"archive {r.archive_seen:.3f} s, safe {r.safe_to_remove:.2f} s")
        pairs: list[PairRun] = []
        for i, mode in alternating(opts.pair_repeat, ("sequential", "concurrent")):
            pairs.append(measure_pair(mode, pair, i, opts))
            log(f"two-card run {i + 1}/{opts.pair_repeat} {mode}: {pairs[-1].total:.2f} s")
        ctx = measure_context(pair, opts) if opts.context else None
    finally:
        umount_all(runs_dir)
        remove_tree(runs_dir)
    wall = time.perf_counter() - started
    stamp = datetime.now(UTC)
    lines = [
        "",
        f"Acopio device watcher benchmark, {stamp:%Y-%m-%d %H:%M UTC}",
        host_line(opts.workdir),
        f"load average (1/5/15 min) at start {load_before}, at end {load_average()}: other "
        f"work on the machine skews every figure",
        "setup: real `acopio devices watch` child under the umockdev preload; cards are FAT32 "
        "images mounted by the watcher with fusefat (mount template)",
        "page cache: dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) after staging each "
        "card and before its uevent (every run reads its card cold); MB = 10^6 bytes",
        "",
        *latency_lines(latency_card, latency),
        "",
        *pair_lines(pair, pairs),
        "",
        *([*context_lines(ctx), ""] if ctx else []),
        f"benchmark wall time: {wall:.0f} s (card images cached in {cards_dir}; --rebuild "
        f"rebuilds them)",
        reproduce_line(opts),
    ]
    print("\n".join(lines), flush=True)
    out = opts.workdir / f"results-{stamp:%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({
        "argv": list(opts.argv), "wall_s": wall,
        "latency_card": {"bytes": latency_card.total_bytes, "files": latency_card.count},
        "latency": [asdict(r) for r in latency],
        "pair_cards": [{"bytes": c.total_bytes, "files": c.count} for c in pair],
        "pairs": [asdict(r) for r in pairs],
        "context": asdict(ctx) if ctx else None,
        "peak_rss_mb_bench": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }, indent=1))
    print(f"figures saved to {out}")


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    # Stopped with SIGTERM: unwind through every `finally`, so no mount is left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        run(opts)
    except BenchError as exc:
        log(f"error: {exc}")
        return 2
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        err = getattr(exc, "stderr", None) or b""
        text = err.decode(errors="replace") if isinstance(err, bytes) else str(err)
        log(f"error: {exc} {text.strip()[-500:]}")
        return 2
    finally:
        leftover = mounts_under(opts.workdir)
        if leftover:
            umount_all(opts.workdir)
            log(f"lazily unmounted leftovers: {', '.join(map(str, leftover))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
