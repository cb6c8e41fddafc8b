"""Faults the import must survive, done for real: kill -9 at exact system calls, a full disk,
a card pulled out mid-copy, a damaged catalog shard."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests

from appliance.datadir import DataDir
from appliance.fsutil import TEMP_PREFIX
from appliance.query import ItemIndex
from appliance.web.security import SESSION_COOKIE
from tests.cards import (
    exif_jpeg,
    fat_image,
    ffmpeg_audio,
    media_hashes,
    noise_jpeg,
    sample,
    sha256_file,
    tree_digest,
)
from tests.conftest import REPO, require_tool, run_cli
from tests.webclient import free_port, port_open, web_app

pytestmark = pytest.mark.slow


def small_card(root: Path) -> Path:
    sample("flower.jpg", root / "DCIM/100CANON/IMG_0001.JPG")
    sample("hopper.jpg", root / "DCIM/100CANON/IMG_0002.JPG")
    sample("iptc.jpg", root / "DCIM/100CANON/IMG_0003.JPG")
    sample("hopper.jpg", root / "DCIM/101CANON/IMG_0002.JPG")  # same name, same bytes
    exif_jpeg(root / "DCIM/101CANON/IMG_0003.JPG", "2026:05:10 10:00:00")  # clash, new bytes
    ffmpeg_audio(root / "AUDIO/NOTA.WAV")
    return root


def assert_archived_exactly_once(data: Path, card: Path) -> None:
    """Every media file of the card is in the archive once, verified and catalogued, and
    nothing else is left behind."""
    expected = media_hashes(card)
    files = [p for p in (data / "archive").rglob("*") if p.is_file()]
    assert not [p for p in data.rglob(TEMP_PREFIX + "*")], "temp files left behind"
    counts = Counter(sha256_file(p) for p in files)
    assert set(counts) == expected
    assert all(n == 1 for n in counts.values()), counts
    listed = json.loads(run_cli("--data-dir", data, "items", "--json").stdout)
    assert sorted(i["sha256"] for i in listed) == sorted(expected)
    result = run_cli("--data-dir", data, "check", "--deep", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["clean"], report["findings"]


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_card(tmp_path_factory.mktemp("card"))


# Each crash point: the Nth call of a system call the import uses to make data durable, in
# any of its threads (strace counts per thread). With this card a clean import makes six
# copies (one is a duplicate). The verifying thread makes 5 fsyncs (the copies), 5 links and
# 5 unlinks; the importing thread fsyncs the 4 archive folders, then writes the catalog and
# the job queue, with 6 syncfs (content index, job key files) and renames.
CRASH_POINTS = (
    [("fsync", n) for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)]
    + [("syncfs", n) for n in (1, 2, 3)]
    + [("link,linkat", n) for n in (1, 2, 3)]
    + [("rename,renameat,renameat2", n) for n in (1, 2, 4, 6, 8)]
    + [("unlink,unlinkat", n) for n in (1, 2, 3)]
)


@pytest.mark.parametrize(("syscalls", "when"), CRASH_POINTS,
                         ids=[f"{s.split(',')[0]}-{n}" for s, n in CRASH_POINTS])
def test_kill_9_at_a_system_call_then_rerun(card: Path, tmp_path: Path, syscalls: str,
                                             when: int) -> None:
    strace = require_tool("strace")
    data = tmp_path / "data"
    before = tree_digest(card)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACOPIO_")}
    crashed = subprocess.run(
        [strace, "-f", "-qq", "-o", "/dev/null", "-e", f"trace={syscalls}",
         "-e", f"inject={syscalls}:signal=SIGKILL:when={when}",
         sys.executable, "-m", "appliance", "--data-dir", str(data), "ingest", str(card)],
        cwd=REPO, env=env, capture_output=True, timeout=120,
    )
    assert crashed.returncode != 0, "the crash point was never reached"
    result = run_cli("--data-dir", data, "ingest", card, "--json")
    assert result.returncode == 0, result.stderr.decode()
    assert_archived_exactly_once(data, card)
    assert tree_digest(card) == before


def test_kill_9_at_random_moments_then_rerun(tmp_path: Path) -> None:
    card = tmp_path / "card"
    for i in range(40):
        exif_jpeg(card / f"DCIM/100CANON/IMG_{i:04d}.JPG", "2026:05:10 10:00:00",
                  size=(800, 600), color=(i * 6, 100, 200 - i * 4))
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACOPIO_")}
    rng = random.Random(7)
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "--data-dir", str(data), "ingest", str(card)],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    result = run_cli("--data-dir", data, "ingest", card, "--json")
    assert result.returncode == 0, result.stderr.decode()
    assert_archived_exactly_once(data, card)



def test_each_archive_folder_is_fsynced_once_per_batch_before_its_record(
        tmp_path: Path) -> None:
    """A record never reaches the disk before the name of its file (a power cut would leave
    it pointing at nothing); and the folder is fsynced once per catalog batch, not once per
    file, which on an SD card is the difference between one and twelve journal commits."""
    strace = require_tool("strace")
    card = tmp_path / "card"
    for i in range(12):
        exif_jpeg(card / f"DCIM/100CANON/IMG_{i:04d}.JPG",
                  f"2026:05:{10 + i % 2} 10:00:{i:02d}", size=(64, 48), color=(i * 9, 40, 90))
    data = tmp_path / "data"
    log = tmp_path / "strace.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACOPIO_")}
    subprocess.run([strace, "-f", "-qq", "-y", "-o", str(log), "-e",
                    "trace=fsync,rename,renameat,renameat2",
                    sys.executable, "-m", "appliance", "--data-dir", str(data), "ingest",
                    str(card)], cwd=REPO, env=env, check=True, capture_output=True)
    events = []  # ("fsync", folder) or ("record", folder), in the order they ran
    for line in log.read_text().splitlines():
        if " fsync(" in line and f"<{data}/archive/2026/05/" in line:
            events.append(("fsync", line.split("<", 1)[1].split(">", 1)[0].rsplit("/", 1)[1]))
        elif "rename" in line and f"{data}/state/catalog/2026/05/" in line:
            events.append(("record", line.rsplit("/", 1)[1].split(".json", 1)[0]))
    folders = {"2026-05-10_sin-actividad", "2026-05-11_sin-actividad"}
    assert sorted(f for kind, f in events if kind == "fsync") == sorted(folders), events
    for kind, folder in events:
        if kind == "record":
            assert ("fsync", folder) in events[:events.index((kind, folder))], events
    assert len(list((data / "archive/2026/05").rglob("*.JPG"))) == 12

@pytest.fixture
def small_disk(tmp_path: Path):
    """A size-limited tmpfs as the data folder: a disk that really fills up."""
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs and needs root (CI runs as root)")
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mountpoint)],
                   check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


@pytest.mark.root
def test_disk_fills_during_copy(tmp_path: Path, small_disk: Path, config) -> None:
    """Another writer fills the disk while a card imports: the copy meets a real ENOSPC."""
    from dataclasses import replace

    from ingest.pipeline import Importer, Reporter

    card = tmp_path / "card"
    noise_jpeg(card / "DCIM/A_01.JPG", seed=1)
    noise_jpeg(card / "DCIM/A_02.JPG", seed=2)
    (card / "DCIM/B_03.MP4").write_bytes(random.Random(3).randbytes(12 * 1024 * 1024))
    noise_jpeg(card / "DCIM/C_04.JPG", seed=4)
    noise_jpeg(card / "DCIM/C_05.JPG", seed=5)
    data = small_disk / "data"
    cfg = replace(config, data_dir=data, ingest=replace(config.ingest, min_free_mb=0))

    first_two = sum((card / "DCIM" / n).stat().st_size for n in ("A_01.JPG", "A_02.JPG"))

    class FillTheDiskDuringTheThirdFile(Reporter):
        copied = 0
        filled = False

        def advanced(self, nbytes: int) -> None:
            self.copied += nbytes
            if self.copied > first_two and not self.filled:  # the big file's first chunk
                self.filled = True
                filler = small_disk / "filler"
                with open(filler, "wb") as fh:
                    try:
                        while True:
                            fh.write(b"\0" * 65536)
                            fh.flush()
                    except OSError:
                        pass
                os.truncate(filler, filler.stat().st_size - 300 * 1024)  # room for state

    summary = Importer(cfg, reporter=FillTheDiskDuringTheThirdFile()).run(card)
    assert "disk is full" in summary.stopped
    assert summary.imported == 2
    assert [o.path for o in summary.failed] == ["DCIM/B_03.MP4"]
    assert summary.not_attempted == 2
    # What was imported is whole, verified and catalogued; no partial file anywhere.
    assert not list(data.rglob(TEMP_PREFIX + "*"))
    listed = json.loads(run_cli("--data-dir", data, "items", "--json").stdout)
    assert len(listed) == 2
    for item in listed:
        assert sha256_file(data / item["archive_path"]) == item["sha256"]
    check = run_cli("--data-dir", data, "check", "--deep", "--json")
    assert check.returncode == 0, check.stdout.decode()
    # The CLI says so clearly and exits non-zero.
    result = run_cli("--data-dir", data, "ingest", card, env={"ACOPIO_INGEST_MIN_FREE_MB": "0"})
    assert result.returncode == 1 and b"import stopped" in result.stderr
    # Space freed, same card: the import completes.
    (small_disk / "filler").unlink()
    subprocess.run(["mount", "-o", "remount,size=40m", str(small_disk)], check=True)
    result = run_cli("--data-dir", data, "ingest", card, "--json",
                     env={"ACOPIO_INGEST_MIN_FREE_MB": "0"})
    assert result.returncode == 0, result.stdout.decode()
    assert_archived_exactly_once(data, card)


@pytest.mark.root
def test_reserve_stops_before_the_disk_is_full(tmp_path: Path, small_disk: Path) -> None:
    card = tmp_path / "card"
    for i in range(6):  # about 1.2 MB each
        noise_jpeg(card / f"DCIM/IMG_{i:02d}.JPG", seed=100 + i)
    data = small_disk / "data"
    result = run_cli("--data-dir", data, "ingest", card, "--json",
                     env={"ACOPIO_INGEST_MIN_FREE_MB": "20"})
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert "nearly full" in summary["stopped"] and "ingest.min_free_mb" in summary["stopped"]
    free = os.statvfs(small_disk)
    assert 0 < summary["imported"] < 6
    assert free.f_bavail * free.f_frsize >= 19 * 1024 * 1024
    assert run_cli("--data-dir", data, "check", "--json").returncode == 0


def mount_fusefat(image: Path, mountpoint: Path) -> subprocess.Popen:
    fusefat = require_tool("fusefat")
    mountpoint.mkdir(exist_ok=True)
    proc = subprocess.Popen([fusefat, "-f", "-o", "ro", str(image), str(mountpoint)])
    deadline = time.monotonic() + 10
    while not os.path.ismount(mountpoint):
        assert proc.poll() is None and time.monotonic() < deadline, "fusefat did not mount"
        time.sleep(0.05)
    return proc


@pytest.mark.root
def test_card_pulled_mid_copy(tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.mkdir()
    big = local / "C0001.MP4"
    with open(big, "wb") as fh:  # not a decodable video: still archived, flagged
        fh.write(random.Random(1).randbytes(120 * 1024 * 1024))
    files = {f"DCIM/100CANON/IMG_{i:04d}.JPG": noise_jpeg(local / f"{i}.jpg", seed=200 + i)
             for i in range(3)}
    files["PRIVATE/M4ROOT/CLIP/C0001.MP4"] = big
    image = fat_image(tmp_path / "card.img", files)
    mountpoint = tmp_path / "mnt"
    fuse = mount_fusefat(image, mountpoint)
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACOPIO_")}
    ingest = subprocess.Popen(
        [sys.executable, "-m", "appliance", "--data-dir", str(data), "ingest",
         str(mountpoint), "--json"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Pull the card once the big file's copy is under way.
        deadline = time.monotonic() + 60
        while True:
            temps = [p for p in data.rglob(TEMP_PREFIX + "*")] if data.exists() else []
            if any(p.stat().st_size > 8 * 1024 * 1024 for p in temps if p.exists()):
                break
            assert ingest.poll() is None, "the import ended before the card was pulled"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        fuse.send_signal(signal.SIGKILL)
        fuse.wait()
        out, err = ingest.communicate(timeout=60)
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True)
    assert ingest.returncode == 1, err.decode()
    summary = json.loads(out)
    assert "source disappeared" in summary["stopped"]
    assert summary["imported"] == 3
    assert [f["path"] for f in summary["failed"]] == ["PRIVATE/M4ROOT/CLIP/C0001.MP4"]
    assert not list(data.rglob(TEMP_PREFIX + "*")), "partial copy left behind"
    listed = json.loads(run_cli("--data-dir", data, "items", "--json").stdout)
    assert len(listed) == 3 and not [i for i in listed if i["kind"] == "video"]
    assert run_cli("--data-dir", data, "check", "--deep").returncode == 0
    # The card goes back in: the re-run completes.
    fuse = mount_fusefat(image, mountpoint)
    try:
        result = run_cli("--data-dir", data, "ingest", mountpoint, "--json")
        assert result.returncode == 0, result.stdout.decode()
        assert json.loads(result.stdout)["imported"] == 1
        assert_archived_exactly_once(data, mountpoint)
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)
        fuse.wait(timeout=10)


# "no_sha", "null_path", "bad_size": valid JSON with a garbled record (a flipped bit in a
# key): check, items, the worker and sync crashed on it (KeyError, TypeError), repair too.
@pytest.mark.parametrize("damage", ["truncate", "nul", "half", "no_sha", "null_path",
                                    "bad_size"])
def test_damaged_shard_is_detected_and_repaired(card: Path, tmp_path: Path, damage: str) -> None:
    data = tmp_path / "data"
    assert run_cli("--data-dir", data, "ingest", card).returncode == 0
    good = json.loads(run_cli("--data-dir", data, "items", "--json").stdout)
    shard = next((data / "state/catalog").rglob("*.json"))
    if damage in ("no_sha", "null_path", "bad_size"):
        doc = json.loads(shard.read_bytes())
        record = next(iter(doc["items"].values()))
        if damage == "no_sha":
            record["sha265"] = record.pop("sha256")
        elif damage == "null_path":
            record["archive_path"] = None
        else:
            record["size"] = "abc"
        shard.write_text(json.dumps(doc))
    size = shard.stat().st_size
    if damage == "truncate":
        shard.write_bytes(b"")
    elif damage == "nul":
        shard.write_bytes(b"\0" * size)
    elif damage == "half":
        shard.write_bytes(shard.read_bytes()[: size // 2])
    listing = run_cli("--data-dir", data, "items", "--json")
    assert listing.returncode == 1
    assert str(shard).encode() in listing.stderr and b"check --repair" in listing.stderr
    assert shard.stat().st_size in (0, size, size // 2)  # never replaced by an empty catalog
    # An import into the damaged folder refuses to write over it.
    again = run_cli("--data-dir", data, "ingest", card, "--json")
    assert shard.read_bytes() != b"{}" and json.loads(again.stdout)["imported"] == 0
    check = run_cli("--data-dir", data, "check", "--json")
    assert check.returncode == 1
    codes = {f["code"] for f in json.loads(check.stdout)["findings"]}
    assert "damaged_shard" in codes
    repair = run_cli("--data-dir", data, "check", "--repair", "--json")
    assert repair.returncode == 0, repair.stdout.decode()
    assert list(shard.parent.glob(shard.name + ".damaged-*")), "damaged shard not kept aside"
    assert_archived_exactly_once(data, card)
    repaired = {i["sha256"]: i for i in
                json.loads(run_cli("--data-dir", data, "items", "--json").stdout)}
    for item in good:
        again_item = repaired[item["sha256"]]
        assert again_item["archive_path"] == item["archive_path"]
        assert again_item["captured_at"] == item["captured_at"]
        assert again_item["kind"] == item["kind"]


def start_run(data: Path, roles: str, **env: str) -> tuple[subprocess.Popen[bytes], int]:
    """`acopio run --roles ROLES` on `data`, its web UI on a free port of 127.0.0.1 (no
    zeroconf), stderr piped; the process and the port."""
    port = free_port()
    full_env = {**{k: v for k, v in os.environ.items() if not k.startswith("ACOPIO_")},
                "ACOPIO_WEB_PORT": str(port), "ACOPIO_WEB_HOST": "127.0.0.1",
                "ACOPIO_WEB_ZEROCONF": "false", **env}
    service = subprocess.Popen(
        [sys.executable, "-m", "appliance", "--data-dir", str(data), "run", "--roles", roles],
        cwd=REPO, env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    return service, port


@pytest.mark.root
def test_a_full_disk_stops_no_role_and_parks_no_derivative(tmp_path: Path,
                                                          small_disk: Path) -> None:
    """On a full data disk no role started (each died writing its startup flag), so neither
    the web UI nor sync's eviction could help; and the worker, with no reserve of its own,
    ate the disk to its last byte, then parked every job with "No space left on device",
    where they stayed once space was freed."""
    card = tmp_path / "card"
    for i in range(5):
        noise_jpeg(card / f"DCIM/IMG_{i:02d}.JPG", seed=300 + i)
    data = small_disk / "data"
    no_reserve = {"ACOPIO_INGEST_MIN_FREE_MB": "0"}
    assert run_cli("--data-dir", data, "ingest", card, env=no_reserve).returncode == 0
    free_mb = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize >> 20
    # Below the reserve: the worker waits, and says so; nothing is failed or parked.
    waited = run_cli("--data-dir", data, "worker", "--once",
                     env={"ACOPIO_INGEST_MIN_FREE_MB": str(free_mb + 1)})
    assert waited.returncode == 0 and b"derivatives wait for space" in waited.stderr
    state = json.loads(run_cli("--data-dir", data, "jobs", "--json").stdout)
    assert state["counts"]["preview"]["queued"] == 5, state["counts"]
    made = run_cli("--data-dir", data, "users", "add", "direccion", "--role", "director",
                   "--password-stdin", input=b"clave-de-prueba-1\n")
    assert made.returncode == 0, made.stderr.decode()
    with ItemIndex(DataDir.at(data), ZoneInfo("America/Mexico_City")) as index:
        assert index.refresh(force=True) > 0  # the web UI's index, as a running box has it
    with web_app(data) as web:  # someone logged in before the disk filled up
        session = web.login("direccion", "clave-de-prueba-1").cookie(SESSION_COOKIE)
    # The disk full to its last byte: every role still starts.
    fd = os.open(small_disk / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    with contextlib.suppress(OSError):
        while True:
            os.write(fd, b"\0" * 65536)
    with contextlib.suppress(OSError):
        while True:
            os.write(fd, b"\0" * 512)
    os.close(fd)
    for shard in (data / "state" / "catalog").rglob("*.json"):
        os.utime(shard, ns=(time.time_ns(), time.time_ns()))  # changed: the index must write
    service, port = start_run(data, "web,worker,inbox",
                              **no_reserve, ACOPIO_WORKER_POLL_S="0.2")
    try:
        deadline = time.monotonic() + 30
        while not port_open(port):
            assert service.poll() is None, service.communicate()[1].decode()
            assert time.monotonic() < deadline, "the web UI never answered on a full disk"
            time.sleep(0.2)
        time.sleep(2)  # the worker's turn: it must not fail the jobs
        login = requests.get(f"http://127.0.0.1:{port}/login", timeout=10)
        assert login.status_code == 200 and "Entrar" in login.text
        # Reading pages answer from the index as last written (every one was a 500), and
        # the status says how full the disk is.
        browser = requests.Session()
        browser.cookies.set(SESSION_COOKIE, session)
        # A new login cannot be kept: said plainly, not a 500.
        refused = requests.post(f"http://127.0.0.1:{port}/api/login", timeout=10, json={
            "username": "direccion", "password": "clave-de-prueba-1"})
        assert refused.status_code == 507 and refused.json()["error"] == "disk_full", \
            refused.text
        for page in ("/", "/api/items", "/buscar?q=IMG", "/estado"):
            answer = browser.get(f"http://127.0.0.1:{port}{page}", timeout=10)
            assert answer.status_code == 200, (page, answer.status_code, answer.text[:300])
        status = browser.get(f"http://127.0.0.1:{port}/api/status", timeout=10).json()
        assert status["disk"]["free"] < 1024 * 1024, status["disk"]
    finally:
        service.terminate()
        _, stderr = service.communicate(timeout=30)
    log = stderr.decode()
    assert service.returncode == 0, log
    assert "could not write" in log and "derivatives wait for space" in log, log
    state = json.loads(run_cli("--data-dir", data, "jobs", "--json").stdout)
    assert not any(c["parked"] for c in state["counts"].values()), state["counts"]
    # Space back: everything is made.
    (small_disk / "filler").unlink()
    assert run_cli("--data-dir", data, "worker", "--once", env=no_reserve).returncode == 0
    listed = json.loads(run_cli("--data-dir", data, "items", "--json").stdout)
    assert all(set(i["derivatives"]) == {"thumb", "preview"} for i in listed), listed


def test_check_repair_beside_an_import_keeps_the_imports_index_entries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`check --repair` read the shards, then listed the content index: an import that
    recorded a batch in between had its new entries taken for stale and removed, its items
    then unknown to edits ("no item") and to the worker (jobs done with nothing made)."""
    from appliance import check as check_mod
    from appliance import config as config_mod
    from appliance.keyindex import KeyIndex

    first, second = tmp_path / "first", tmp_path / "second"
    for i in range(2):
        noise_jpeg(first / f"DCIM/A_{i}.JPG", seed=500 + i)
        noise_jpeg(second / f"DCIM/B_{i}.JPG", seed=600 + i)
    data = tmp_path / "data"
    assert run_cli("--data-dir", data, "ingest", first).returncode == 0
    listing = KeyIndex.keys
    raced: list[int] = []

    def import_meanwhile(self: KeyIndex):
        if not raced and self.root.name == "sha256":
            # A real import in another process, given its chance to commit right here.
            importer = subprocess.Popen(
                [sys.executable, "-m", "appliance", "--data-dir", str(data), "ingest",
                 str(second)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                importer.wait(timeout=5)  # held at the commit lock: it cannot, and waits
            raced.append(importer.pid)
        return listing(self)

    monkeypatch.setattr(KeyIndex, "keys", import_meanwhile)
    report = check_mod.check(config_mod.load(environ={}, data_dir=data), repair=True)
    monkeypatch.undo()
    assert raced
    assert not [f for f in report.findings if f.code == "index_entry_stale"], report.findings
    deadline = time.monotonic() + 30
    while len(json.loads(run_cli("--data-dir", data, "items", "--json").stdout)) < 4:
        assert time.monotonic() < deadline, "the import beside the check never finished"
        time.sleep(0.2)
    again = run_cli("--data-dir", data, "check", "--json")
    assert again.returncode == 0, again.stdout.decode()


def test_a_damaged_accounts_file_stops_neither_the_imports_nor_the_pages(
        tmp_path: Path) -> None:
    """A damaged state/users.json made the web role fail at its start, and with it every
    role of `acopio run`: files dropped in the inbox stayed there. Now the other roles go on,
    and the web UI answers what needs the accounts with a 503 that says what is wrong."""
    data = tmp_path / "data"
    made = run_cli("--data-dir", data, "users", "add", "direccion", "--role", "director",
                   "--password-stdin", input=b"clave-de-prueba-1\n")
    assert made.returncode == 0, made.stderr.decode()
    users = data / "state" / "users.json"
    users.write_bytes(users.read_bytes()[:40])  # torn
    inbox = data / "inbox"
    inbox.mkdir()
    noise_jpeg(inbox / "IMG_0001.JPG", seed=900)
    service, port = start_run(data, "web,inbox", ACOPIO_DEVICES_INBOX_SETTLE_S="0.5")
    try:
        deadline = time.monotonic() + 60
        while not port_open(port) or (inbox / "IMG_0001.JPG").exists():
            assert service.poll() is None, service.communicate()[1].decode()
            assert time.monotonic() < deadline, "the inbox was not imported"
            time.sleep(0.2)
        answer = requests.post(f"http://127.0.0.1:{port}/api/login", timeout=10, json={
            "username": "direccion", "password": "clave-de-prueba-1"})
        assert answer.status_code == 503 and answer.json()["error"] == "damaged_state"
        assert "acopio check" in answer.json()["message"], answer.text
    finally:
        service.terminate()
        _, stderr = service.communicate(timeout=30)
    log = stderr.decode()
    assert service.returncode == 0, log
    assert f"mv {users} {users}.damaged" in log, log
    listed = json.loads(run_cli("--data-dir", data, "items", "--json").stdout)
    assert [i["original_name"] for i in listed] == ["IMG_0001.JPG"]


@pytest.mark.root
def test_a_read_only_data_disk_is_checked_and_said_plainly(tmp_path: Path) -> None:
    """ext4 remounts itself read-only after an I/O error (errors=remount-ro): `acopio check`,
    which only reads, failed creating its lock folder, and every command that writes ended
    in an EROFS traceback."""
    if os.geteuid() != 0:
        pytest.fail("this test mounts an ext4 image and needs root (CI runs as root)")
    image, disk = tmp_path / "disk.img", tmp_path / "disk"
    subprocess.run(["truncate", "-s", "32M", str(image)], check=True)
    subprocess.run([require_tool("mkfs.ext4"), "-q", "-F", str(image)], check=True)
    disk.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(disk)], check=True)
    try:
        card = tmp_path / "card"
        noise_jpeg(card / "DCIM/IMG_0001.JPG", seed=700)
        noise_jpeg(card / "DCIM/IMG_0002.JPG", seed=701)
        data = disk / "data"
        no_reserve = {"ACOPIO_INGEST_MIN_FREE_MB": "0"}
        assert run_cli("--data-dir", data, "ingest", card, env=no_reserve).returncode == 0
        fresh = disk / "fresh"  # a data folder where no import ever ran (a hub's, say)
        assert run_cli("--data-dir", fresh, "agenda", "add", "Informe", "--start",
                       "2026-11-10T10:00", "--end", "2026-11-10T12:00").returncode == 0
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        for folder in (data, fresh):
            checked = run_cli("--data-dir", folder, "check", "--deep")
            assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()
        noise_jpeg(card / "DCIM/IMG_0003.JPG", seed=702)
        refused = run_cli("--data-dir", data, "ingest", card, env=no_reserve)
        said = (refused.stdout + refused.stderr).decode()
        assert refused.returncode == 1 and "Traceback" not in said, said
        assert "the archive disk takes no writes" in said and "read_error" not in said, said
        listed = run_cli("--data-dir", data, "items", "--json")
        assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 2
        added = run_cli("--data-dir", data, "agenda", "add", "Sesión de Cabildo", "--start",
                        "2026-11-10T10:00", "--end", "2026-11-10T12:00")
        said = added.stderr.decode()
        assert added.returncode == 1 and "Traceback" not in said, said
        assert "Read-only file system (the data disk takes no writes" in said, said
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_an_archive_disk_failing_with_eio_stops_the_import(
        tmp_path: Path, config, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing archive disk (EIO on a flush or a write) was reported per file as a card
    read error, and the import went on failing every file. It now stops at once, saying it
    is the archive disk; the card is untouched and imports whole once the disk is sound.
    (No device here can fail for real: no device-mapper, and a loop device on a full disk
    answers ENOSPC. EIO is raised where the kernel would: the copy's fsync, or its write.)"""
    from dataclasses import replace

    from ingest import copy
    from ingest.pipeline import Importer

    card = tmp_path / "card"
    for i in range(4):
        noise_jpeg(card / f"DCIM/IMG_{i:02d}.JPG", seed=900 + i)
    (card / "DCIM/MVI_0005.MP4").write_bytes(random.Random(905).randbytes(9 * 1024 * 1024))
    before = {p: sha256_file(p) for p in card.rglob("*") if p.is_file()}
    data = tmp_path / "data"
    cfg = replace(config, data_dir=data, ingest=replace(config.ingest, min_free_mb=0))
    real_fsync, real_write = os.fsync, copy._write_all

    def in_staging(fd: int) -> bool:
        return "/archive/.incoming/" in os.readlink(f"/proc/self/fd/{fd}")

    def failing_fsync(fd: int) -> None:
        if in_staging(fd):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    def failing_write(fd: int, chunk: memoryview) -> None:
        if in_staging(fd):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_write(fd, chunk)

    for name, fault in (("fsync", failing_fsync), ("write", failing_write)):
        with monkeypatch.context() as patch:
            if name == "fsync":
                patch.setattr(copy.os, "fsync", fault)
            else:
                patch.setattr(copy, "_write_all", fault)
            summary = Importer(cfg).run(card)
        assert "the archive disk failed" in summary.stopped, (name, summary.stopped)
        assert summary.imported == 0 and len(summary.failed) <= 2, (name, summary.failed)
        assert not any("read_error" in o.reason for o in summary.failed), summary.failed
        assert summary.not_attempted >= 3, name
        assert not list(data.rglob(TEMP_PREFIX + "*")), name  # no partial copy left
    assert {p: sha256_file(p) for p in card.rglob("*") if p.is_file()} == before
    result = run_cli("--data-dir", data, "ingest", card, "--json",
                     env={"ACOPIO_INGEST_MIN_FREE_MB": "0"})
    assert result.returncode == 0, result.stdout.decode()
    assert_archived_exactly_once(data, card)
