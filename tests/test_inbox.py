"""The hot folder for real: files land in `<data>/inbox/` (copied, written slowly, dropped as
folders), watchdog (inotify) and rescans see them, the real pipeline imports them, and they
leave the inbox only once the catalog holds them."""

from __future__ import annotations

import hashlib
import logging
import os
import select
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from appliance.catalog import Catalog
from appliance.datadir import DataDir
from ingest.inbox import Inbox
from ingest.pipeline import Importer, Summary
from tests.cards import exif_jpeg, ffmpeg_video, sha256_file, tree_digest

SETTLE = 0.5
# Holds a write lease on a file: any other open of it fails at once with EAGAIN (the
# importer opens with O_NONBLOCK), a real read failure on a regular file, even as root.
LEASE_HOLDER = """
import fcntl, os, signal, sys
signal.signal(signal.SIGIO, signal.SIG_IGN)  # the lease-break notice
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
print("ready", flush=True)
sys.stdin.read()
"""

INBOX_LOCKER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def inbox(config, caplog: pytest.LogCaptureFixture) -> Inbox:
    caplog.set_level(logging.INFO, logger="ingest.inbox")
    return Inbox(config, settle_s=SETTLE)


def start_helper(script: str, path: Path) -> subprocess.Popen:
    """A helper process that holds something on `path` until its stdin closes."""
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if not select.select([proc.stdout], [], [], 10)[0] or proc.stdout.readline() != "ready\n":
        proc.kill()
        proc.wait(10)
        pytest.fail(f"helper process did not get ready on {path}")
    return proc


def catalog_items(config) -> list[dict]:
    return list(Catalog(DataDir.at(config.data_dir)).items())


def pump(inbox: Inbox, until: Callable[[], bool], timeout: float = 10.0) -> list[Summary]:
    """Run passes, as the service loop would, until `until()`; the summaries of imports."""
    summaries = []
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, f"timed out; inbox status {inbox.status()}"
        summary = inbox.process_once()
        if summary is not None:
            summaries.append(summary)
        time.sleep(0.05)
    return summaries


def wait_for(until: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class CatalogAtRemoval(logging.Handler):
    """At the moment the inbox reports a file removed, does the catalog hold its content?"""

    def __init__(self, config) -> None:
        super().__init__()
        self.data = DataDir.at(config.data_dir)
        self.seen: list[tuple[str, bool]] = []

    def emit(self, record: logging.LogRecord) -> None:
        name = getattr(record, "inbox_removed", None)
        if name is not None:
            entry = Catalog(self.data).lookup(record.sha256)
            self.seen.append((name, bool(entry) and (self.data.root / entry["archive_path"])
                              .is_file()))


@pytest.fixture
def removals(config, inbox: Inbox) -> Iterator[CatalogAtRemoval]:
    handler = CatalogAtRemoval(config)
    logger = logging.getLogger("ingest.inbox")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def test_a_copied_photo_is_imported_and_leaves_the_inbox_once_catalogued(
        tmp_path: Path, config, inbox: Inbox, removals: CatalogAtRemoval) -> None:
    assert stat.S_IMODE(inbox.root.stat().st_mode) == 0o775
    photo = exif_jpeg(tmp_path / "laptop" / "IMG_0001.JPG", "2026:05:10 11:15:00", "-06:00")
    dest = inbox.root / "IMG_0001.JPG"
    copied = time.monotonic()
    shutil.copyfile(photo, dest)
    if inbox.process_once() is None:  # just arrived: settling, not imported
        assert dest.exists() and inbox.status()["pending"] == 1
    summaries = pump(inbox, lambda: not dest.exists())
    assert time.monotonic() - copied >= SETTLE
    assert [(s.imported, s.duplicates, s.failed) for s in summaries] == [(1, 0, [])]
    [item] = catalog_items(config)
    assert item["source_path"] == "IMG_0001.JPG"
    assert (config.data_dir / item["archive_path"]).read_bytes() == photo.read_bytes()
    assert removals.seen == [("IMG_0001.JPG", True)]
    assert inbox.root.is_dir() and list(inbox.root.iterdir()) == []
    status = inbox.status()
    assert (status["pending"], status["complete"], status["failed"]) == (0, 0, 0)
    assert status["last_import"]["imported"] == 1


def test_a_file_still_being_written_waits_until_it_is_whole_and_closed(
        tmp_path: Path, config, inbox: Inbox) -> None:
    content = exif_jpeg(tmp_path / "src.jpg", "2026:05:10 12:00:00", size=(640, 480),
                        color=(10, 120, 200)).read_bytes()
    chunks = [content[i * len(content) // 10:(i + 1) * len(content) // 10] for i in range(10)]
    dest = inbox.root / "EN_CURSO.JPG"
    gate = threading.Lock()  # the writer closes only between two passes
    opened, closed = threading.Event(), threading.Event()
    times: dict[str, float] = {}

    def writer() -> None:
        fh = open(dest, "wb")  # noqa: SIM115 - closed below, under the gate
        opened.set()
        for chunk in chunks:  # 2 s of appending, every 0.2 s
            fh.write(chunk)
            fh.flush()
            time.sleep(0.2)
        times["last_write"] = time.monotonic()
        time.sleep(2 * SETTLE)  # unchanged but still open: only /proc shows the writer
        with gate:
            fh.close()
            closed.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    assert opened.wait(5)
    passes = []
    deadline = time.monotonic() + 10
    while True:
        assert time.monotonic() < deadline
        with gate:
            if closed.is_set():
                break
            assert inbox.process_once() is None
            passes.append(time.monotonic())
            assert inbox.status()["pending"] == 1 and inbox.status()["complete"] == 0
        time.sleep(0.05)
    thread.join(5)
    assert catalog_items(config) == []
    assert any(t - times["last_write"] > SETTLE + 0.1 for t in passes)  # /proc kept it back
    summaries = pump(inbox, lambda: not dest.exists())
    assert sum(s.imported for s in summaries) == 1
    [item] = catalog_items(config)
    whole = hashlib.sha256(content).hexdigest()
    assert item["sha256"] == whole and item["size"] == len(content)
    assert sha256_file(config.data_dir / item["archive_path"]) == whole


def test_a_dropped_folder_is_imported_and_its_empty_folders_removed(
        tmp_path: Path, config, inbox: Inbox) -> None:
    drop = tmp_path / "Evento"
    exif_jpeg(drop / "A.JPG", "2026:05:10 10:00:00", color=(1, 2, 3))
    exif_jpeg(drop / "fotos" / "B.JPG", "2026:05:10 10:05:00", color=(4, 5, 6))
    ffmpeg_video(drop / "fotos" / "video" / "C.MP4")
    hashes = {p.relative_to(tmp_path).as_posix(): sha256_file(p)
              for p in drop.rglob("*") if p.is_file()}
    shutil.copytree(drop, inbox.root / "Evento")
    summaries = pump(inbox, lambda: not (inbox.root / "Evento").exists())
    assert sum(s.imported for s in summaries) == 3 and not any(s.failed for s in summaries)
    assert {i["source_path"]: i["sha256"] for i in catalog_items(config)} == hashes
    assert inbox.root.is_dir() and list(inbox.root.iterdir()) == []


def test_a_duplicate_leaves_the_inbox_and_the_archive_is_unchanged(
        tmp_path: Path, config, inbox: Inbox, removals: CatalogAtRemoval,
        caplog: pytest.LogCaptureFixture) -> None:
    photo = exif_jpeg(tmp_path / "card" / "IMG_0001.JPG", "2026:05:10 11:15:00")
    assert Importer(config).run(tmp_path / "card").imported == 1

    def archive() -> dict:
        return {k: v for k, v in tree_digest(config.data_dir / "archive").items()
                if not k.startswith(".incoming")}

    before = archive()
    dest = inbox.root / "copia.jpg"
    shutil.copyfile(photo, dest)
    summaries = pump(inbox, lambda: not dest.exists())
    assert [(s.imported, s.duplicates, s.failed) for s in summaries] == [(0, 1, [])]
    assert archive() == before
    assert len(catalog_items(config)) == 1
    assert removals.seen == [("copia.jpg", True)]
    assert any("copia.jpg duplicate" in r.getMessage() for r in caplog.records)


def test_a_file_that_fails_stays_is_reported_and_is_retried_only_when_it_changes(
        tmp_path: Path, config, inbox: Inbox, caplog: pytest.LogCaptureFixture) -> None:
    dest = exif_jpeg(inbox.root / "BLOQUEADA.JPG", "2026:05:10 13:00:00")
    time.sleep(SETTLE + 0.1)
    holder = start_helper(LEASE_HOLDER, dest)
    try:
        summary = inbox.process_once()
        assert summary is not None and summary.imported == 0
        [failure] = summary.failed
        assert failure.path == "BLOQUEADA.JPG" and failure.reason.startswith("read_error")
    finally:
        holder.stdin.close()
        holder.wait(10)
    assert dest.exists() and catalog_items(config) == []
    status = inbox.status()
    assert status["failed"] == 1 and status["pending"] == 0
    assert status["failed_files"][0]["path"] == "BLOQUEADA.JPG"
    assert status["failed_files"][0]["reason"] == failure.reason
    warned = [r for r in caplog.records if getattr(r, "inbox_failed", None) == "BLOQUEADA.JPG"]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert failure.reason in warned[0].getMessage()

    time.sleep(SETTLE + 0.1)  # unchanged: not tried again
    assert inbox.process_once() is None and inbox.process_once() is None
    assert dest.exists() and inbox.status()["failed"] == 1

    exif_jpeg(dest, "2026:05:10 13:00:00", color=(0, 0, 255))  # rewritten: changed
    new = sha256_file(dest)
    summaries = pump(inbox, lambda: not dest.exists())
    assert [(s.imported, s.failed) for s in summaries] == [(1, [])]
    assert [i["sha256"] for i in catalog_items(config)] == [new]
    assert inbox.status()["failed"] == 0


def test_unknown_files_clutter_links_and_fifos_stay_and_are_reported_once(
        tmp_path: Path, config, inbox: Inbox, caplog: pytest.LogCaptureFixture) -> None:
    outside = exif_jpeg(tmp_path / "outside" / "privada.jpg", "2026:05:10 09:00:00")
    outside_before = tree_digest(outside.parent)
    (inbox.root / "notes.txt").write_text("orden del día")
    (inbox.root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (inbox.root / "enlace.jpg").symlink_to(outside)
    os.mkfifo(inbox.root / "tubo.jpg")
    photo = exif_jpeg(inbox.root / "IMG.JPG", "2026:05:10 09:30:00", color=(9, 9, 9))
    pump(inbox, lambda: not photo.exists())
    for _ in range(3):
        assert inbox.process_once() is None
    left = sorted(p.name for p in inbox.root.iterdir())
    assert left == [".DS_Store", "enlace.jpg", "notes.txt", "tubo.jpg"]
    assert [i["source_path"] for i in catalog_items(config)] == ["IMG.JPG"]
    assert tree_digest(outside.parent) == outside_before
    assert {d["path"]: d["reason"] for d in inbox.status()["left"]} == {
        ".DS_Store": "clutter", "enlace.jpg": "symlink", "notes.txt": "unknown",
        "tubo.jpg": "not_regular_file"}
    reports = [getattr(r, "inbox_left", None) for r in caplog.records]
    assert reports.count("notes.txt") == 1 and reports.count("tubo.jpg") == 1


def test_files_dropped_while_the_service_was_down_are_imported_at_start_by_one_process(
        config, caplog: pytest.LogCaptureFixture) -> None:
    root = config.data_dir / "inbox"
    exif_jpeg(root / "A.JPG", "2026:05:10 08:00:00", color=(1, 1, 1))
    exif_jpeg(root / "sub" / "B.JPG", "2026:05:10 08:01:00", color=(2, 2, 2))
    time.sleep(SETTLE + 0.1)  # dropped while nobody watched
    inbox = Inbox(config, settle_s=SETTLE)
    assert Inbox.from_config(config).settle_s > 0
    other = start_helper(INBOX_LOCKER, root)
    try:  # another process (say `acopio run` beside a one-shot command) is importing
        assert inbox.process_once() is None and len(list(root.iterdir())) == 2
    finally:
        other.stdin.close()
        other.wait(10)
    summary = inbox.process_once()  # first pass of its own, no events: imports at once
    assert summary is not None and summary.imported == 2
    assert sorted(i["source_path"] for i in catalog_items(config)) == ["A.JPG", "sub/B.JPG"]
    assert list(root.iterdir()) == []


def test_the_run_loop_imports_within_the_settle_time_and_stops_promptly(
        tmp_path: Path, config, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ingest.inbox")
    # Rescans are 30 s apart: importing within SETTLE + 2 s takes the inotify events.
    inbox = Inbox(config, settle_s=SETTLE, rescan_s=30)
    before = exif_jpeg(inbox.root / "antes.jpg", "2026:05:10 07:00:00", color=(5, 5, 5))
    photo = exif_jpeg(tmp_path / "nuevo.jpg", "2026:05:10 07:30:00", color=(6, 6, 6))
    stop = threading.Event()
    thread = threading.Thread(target=inbox.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: not before.exists(), SETTLE + 2)
        wait_for(lambda: inbox.status()["watching"], 2)
        dest = inbox.root / "nuevo.jpg"
        copied = time.monotonic()
        shutil.copyfile(photo, dest)
        wait_for(lambda: not dest.exists(), SETTLE + 2)
        assert time.monotonic() - copied <= SETTLE + 2
        assert len(catalog_items(config)) == 2
        # Someone deletes the inbox folder itself: it comes back, watched again.
        shutil.rmtree(inbox.root)
        wait_for(lambda: inbox.root.is_dir() and inbox.status()["watching"], 3)
        again = exif_jpeg(inbox.root / "otra.jpg", "2026:05:10 07:45:00", color=(7, 7, 7))
        wait_for(lambda: not again.exists(), SETTLE + 2)
        assert len(catalog_items(config)) == 3
    finally:
        stop.set()
        asked = time.monotonic()
        thread.join(5)
    assert not thread.is_alive() and time.monotonic() - asked < 1.5
    assert inbox.status()["watching"] is False
