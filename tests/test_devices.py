"""The device watcher end to end: udev events from umockdev into a real pyudev Monitor in a
real `acopio devices watch` process, cards as real FAT images mounted with fusefat through
the mount template, imported, verified, unmounted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from appliance.datadir import DataDir
from ingest.devices.history import CardHistory
from ingest.devices.mounts import is_mountpoint
from ingest.devices.state import Device, DeviceStates
from tests import udevbed
from tests.cards import exif_jpeg, fat_image, ffmpeg_audio, noise_jpeg, sha256_file
from tests.conftest import REPO, require_tool, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.root]
udev_testbed = udevbed.udev_testbed


class Watcher:
    """`acopio devices watch` as a real child process that sees the umockdev test bed."""

    def __init__(self, testbed: udevbed.UdevTestbed, tmp: Path) -> None:
        require_tool("fusefat")
        require_tool("fusermount")
        self.testbed = testbed
        self.data = tmp / "data"
        self.media = tmp / "media"
        self.cameras = tmp / "cameras"  # libgphoto2's Directory Browse camera, per USB address
        self.config = tmp / "acopio.toml"
        self.config.write_text(
            f'data_dir = "{self.data}"\nlog_level = "debug"\n[devices]\n'
            f'mount_command = "fusefat -o ro {{device}} {{mountpoint}}"\n'
            f'unmount_command = "fusermount -u {{mountpoint}}"\n'
            f'mount_root = "{self.media}"\n'
            f'gphoto2_port = "disk:{self.cameras}/{{busnum}}-{{devnum}}"\n'
            # Stand-ins for ALSA and V4L2 capture, through the same input templates.
            'audio_input = "-re -f lavfi -i sine=frequency=440:sample_rate=48000"\n'
            'video_input = "-re -f lavfi -i testsrc=size=320x240:rate=10"\n'
        )
        self.states = DeviceStates(DataDir.at(self.data).state)
        self.log = tmp / "watcher.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {k: v for k, v in self.testbed.child_env().items() if not k.startswith("ACOPIO_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "--config", str(self.config), "devices",
             "watch"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"))  # noqa: SIM115 (the child owns it)
        self.wait_for(lambda: (DataDir.at(self.data).state / "running" / "devices.json").exists(),
                      "the watcher to start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)

    def wait_for(self, condition: Callable[[], object], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            assert self.proc is None or self.proc.poll() is None, self.failure("watcher died")
            time.sleep(0.05)
        pytest.fail(self.failure(f"timed out waiting for {what}"))

    def failure(self, message: str) -> str:
        states = [d.to_record() for d in self.states.all()]
        return f"{message}\nstates: {json.dumps(states, indent=1)}\nlog:\n" + (
            self.log.read_text(errors="replace")[-4000:] if self.log.exists() else "")

    def device(self, device_id: str) -> Device | None:
        try:
            return self.states.get(device_id)
        except Exception:  # a read racing the writer's rename is retried by the caller
            return None

    def wait_status(self, device_id: str, *statuses: str, timeout: float = 60) -> Device:
        self.wait_for(lambda: (d := self.device(device_id)) and d.status in statuses,
                      f"{device_id} to be {'/'.join(statuses)}", timeout)
        device = self.device(device_id)
        assert device is not None
        return device

    def items(self) -> list[dict]:
        return json.loads(run_cli("--config", self.config, "items", "--json").stdout)

    def mounts(self) -> list[Path]:
        if not self.media.exists():
            return []
        return [p for p in self.media.iterdir() if is_mountpoint(p)]


@pytest.fixture
def watcher(udev_testbed: udevbed.UdevTestbed, tmp_path: Path) -> Iterator[Watcher]:
    w = Watcher(udev_testbed, tmp_path)
    try:
        yield w
    finally:
        w.stop(signal.SIGKILL)
        for mount in w.mounts():
            subprocess.run(["umount", "-l", str(mount)], check=False)


def card_files(tmp: Path, seed: int, photos: int = 3, big_mb: int = 0) -> dict[str, Path]:
    local = tmp / f"local-{seed}"
    files = {}
    for i in range(photos):
        files[f"DCIM/100CANON/IMG_{i:04d}.JPG"] = exif_jpeg(
            local / f"p{i}.jpg", f"2026:05:{10 + seed % 10:02d} 10:{i:02d}:00",
            color=(seed * 7 % 256, i * 40 % 256, 99))
    if big_mb:
        big = local / "big.mp4"
        with open(big, "wb") as fh:
            fh.write(os.urandom(big_mb * 1024 * 1024))
        files["PRIVATE/M4ROOT/CLIP/C0001.MP4"] = big
    return files


def insert(testbed: udevbed.UdevTestbed, tmp: Path, files: dict[str, Path], *,
           dev: str = "sdb1", label: str = "EOS_DIGITAL", uuid: str = "1234-ABCD",
           fstype: str = "vfat", image: Path | None = None) -> str:
    """Plug in a card: the partition appears (no filesystem known yet), its content is
    written to the mocked /dev node, then udev's probe announces the filesystem with a
    "change" event, as when a card goes into a reader."""
    devnode = f"/dev/{dev}"
    if image is None:
        image = fat_image(tmp / f"{dev}-{uuid}.img", files, label=label)
    syspath = testbed.add_card(id=dev, label=label, uuid=uuid, fstype="", devnode=devnode)
    shutil.copyfile(image, testbed.node_path(devnode))
    testbed.set_property(syspath, "ID_FS_TYPE", fstype)
    testbed.uevent(syspath, "change")
    return syspath


def test_card_inserted_is_mounted_imported_verified_unmounted(
        watcher: Watcher, udev_testbed: udevbed.UdevTestbed, tmp_path: Path) -> None:
    watcher.start()
    files = card_files(tmp_path, seed=1)
    ffmpeg_audio(tmp_path / "nota.wav")
    files["AUDIO/NOTA.WAV"] = tmp_path / "nota.wav"
    syspath = insert(udev_testbed, tmp_path, files)
    device = watcher.wait_status("sdb1", "safe_to_remove")
    assert (device.kind, device.total, device.verified, device.failed) == ("card", 4, 4, 0)
    assert device.name.startswith("EOS_DIGITAL")
    assert not watcher.mounts(), "the card is still mounted"
    items = watcher.items()
    assert {i["sha256"] for i in items} == {sha256_file(p) for p in files.values()}
    assert {i["source_path"] for i in items} == set(files)
    listed = json.loads(run_cli("--config", watcher.config, "devices", "list", "--json").stdout)
    assert [(d["id"], d["status"]) for d in listed] == [("sdb1", "safe_to_remove")]
    cards = CardHistory(DataDir.at(watcher.data).state).cards()
    assert len(cards) == 1 and cards[0]["label"] == "EOS_DIGITAL"
    assert [(i["status"], i["verified"]) for i in cards[0]["imports"]] == [
        ("safe_to_remove", 4)]
    # Taken out after it was safe: it leaves the list.
    udev_testbed.unplug(syspath)
    watcher.wait_for(lambda: watcher.device("sdb1") is None, "the card to leave the list")
    # The same card again (the kernel names it anew: umockdev cannot reuse a node name):
    # recognised, nothing imported twice.
    insert(udev_testbed, tmp_path, files, dev="sdc1")
    again = watcher.wait_status("sdc1", "safe_to_remove")
    assert (again.verified, again.duplicates) == (0, 4)
    assert again.card_id == device.card_id
    assert len(watcher.items()) == 4
    history = CardHistory(DataDir.at(watcher.data).state).cards()
    assert len(history) == 1 and len(history[0]["imports"]) == 2


def test_two_cards_at_once_and_twins_with_the_same_uuid_and_label(
        watcher: Watcher, udev_testbed: udevbed.UdevTestbed, tmp_path: Path) -> None:
    watcher.start()
    first = card_files(tmp_path, seed=2, photos=4)
    second = card_files(tmp_path, seed=3, photos=4)
    insert(udev_testbed, tmp_path, first, dev="sdb1")
    insert(udev_testbed, tmp_path, second, dev="sdc1")  # same UUID and label, other photos
    a = watcher.wait_status("sdb1", "safe_to_remove")
    b = watcher.wait_status("sdc1", "safe_to_remove")
    assert a.verified == b.verified == 4
    assert a.card_id != b.card_id, "two different cards taken for one"
    assert len(watcher.items()) == 8
    assert not watcher.mounts()


def test_card_without_dcim_unsupported_filesystem_and_vanishing_device(
        watcher: Watcher, udev_testbed: udevbed.UdevTestbed, tmp_path: Path) -> None:
    watcher.start()
    recorder = {"VOICE/REC001.WAV": ffmpeg_audio(tmp_path / "rec.wav")}
    insert(udev_testbed, tmp_path, recorder, dev="sdb1", label="ZOOM_H1", uuid="AAAA-0001")
    assert watcher.wait_status("sdb1", "safe_to_remove").verified == 1
    # A filesystem the box does not mount: a clear error, nothing mounted.
    garbage = tmp_path / "garbage.img"
    garbage.write_bytes(os.urandom(1024 * 1024))
    insert(udev_testbed, tmp_path, {}, dev="sdc1", fstype="jfs", uuid="BBBB", image=garbage)
    failed = watcher.wait_status("sdc1", "error")
    assert failed.reason == "unsupported filesystem 'jfs' (devices.filesystems)"
    # A card whose filesystem is damaged beyond mounting: the mount command fails.
    (tmp_path / "empty.img").write_bytes(b"")
    insert(udev_testbed, tmp_path, {}, dev="sde1", uuid="DDDD", image=tmp_path / "empty.img")
    broken = watcher.wait_status("sde1", "error")
    assert broken.reason.startswith("could not mount")
    # Plugged and pulled within a moment: it ends in a clear state, nothing stays mounted.
    syspath = insert(udev_testbed, tmp_path, card_files(tmp_path, seed=4), dev="sdd1",
                     uuid="CCCC-0002")
    udev_testbed.unplug(syspath)
    watcher.wait_for(
        lambda: (d := watcher.device("sdd1")) is None or d.status in (
            "removed_early", "safe_to_remove"),
        "the vanished card to settle")
    time.sleep(1)
    assert not watcher.mounts()
    assert [m for m in watcher.media.iterdir() if m.name == "sdd1"] == []


def test_card_removed_mid_import_then_reinserted(
        watcher: Watcher, udev_testbed: udevbed.UdevTestbed, tmp_path: Path) -> None:
    watcher.start()
    files = card_files(tmp_path, seed=5, photos=3, big_mb=300)
    syspath = insert(udev_testbed, tmp_path, files)
    staging = watcher.data / "archive" / ".incoming"

    def big_file_half_copied() -> bool:
        temps = list(staging.glob(".acopio-tmp-*")) if staging.exists() else []
        return any(p.stat().st_size > 32 * 1024 * 1024 for p in temps if p.exists())

    watcher.wait_for(big_file_half_copied, "the big file's copy to be under way")
    # Pull the card: the FUSE mount dies (reads fail) and udev says it is gone.
    subprocess.run(["pkill", "-KILL", "-f", f"fusefat.*{watcher.media / 'sdb1'}"], check=True)
    udev_testbed.unplug(syspath)
    device = watcher.wait_status("sdb1", "removed_early")
    assert device.reason == f"3 of {len(files)} verified"
    watcher.wait_for(lambda: not watcher.mounts(), "the dead mount to be cleared")
    items = watcher.items()
    assert len(items) == 3 and all(i["kind"] == "photo" for i in items)
    # Back in (as sdc1): the import resumes without duplicates.
    insert(udev_testbed, tmp_path, files, dev="sdc1")
    again = watcher.wait_status("sdc1", "safe_to_remove", timeout=120)
    assert again.card_id == device.card_id
    assert (again.verified, again.duplicates) == (1, 3)
    archived = [p for p in (watcher.data / "archive").rglob("*") if p.is_file()
                and ".incoming" not in p.parts]
    assert sorted(sha256_file(p) for p in archived) == sorted(
        sha256_file(p) for p in files.values())
    assert run_cli("--config", watcher.config, "check", "--deep").returncode == 0


def test_watcher_killed_mid_import_finishes_after_restart(
        watcher: Watcher, udev_testbed: udevbed.UdevTestbed, tmp_path: Path) -> None:
    watcher.start()
    files = card_files(tmp_path, seed=6, photos=3, big_mb=150)
    insert(udev_testbed, tmp_path, files)
    watcher.wait_for(lambda: (d := watcher.device("sdb1")) and d.verified >= 2,
                     "the import to be under way")
    watcher.stop(signal.SIGKILL)
    watcher.start()  # coldplug finds the card still inserted; the stale mount is cleared
    device = watcher.wait_status("sdb1", "safe_to_remove", timeout=120)
    assert device.verified + device.duplicates == len(files)
    assert len(watcher.items()) == len(files)
    assert not watcher.mounts()
    assert run_cli("--config", watcher.config, "check", "--deep").returncode == 0


def test_a_storm_of_add_and_remove_events(
        watcher: Watcher, udev_testbed: udevbed.UdevTestbed, tmp_path: Path) -> None:
    watcher.start()
    files = card_files(tmp_path, seed=7, photos=2)
    image = fat_image(tmp_path / "storm.img", files)
    started = time.monotonic()
    for dev in ("sdb1", "sdc1", "sdd1", "sde1"):  # plug-pull cycles within about a second
        syspath = insert(udev_testbed, tmp_path, files, dev=dev, image=image)
        udev_testbed.unplug(syspath)
    assert time.monotonic() - started < 3
    insert(udev_testbed, tmp_path, files, dev="sdf1", image=image)  # and finally left in
    device = watcher.wait_status("sdf1", "safe_to_remove", timeout=90)
    assert device.verified + device.duplicates == 2
    assert len(watcher.items()) == 2
    for dev in ("sdb1", "sdc1", "sdd1", "sde1"):
        watcher.wait_for(lambda dev=dev: (d := watcher.device(dev)) is None or d.status in (
            "removed_early", "safe_to_remove", "error"), f"{dev} to settle")
    time.sleep(0.5)
    assert not watcher.mounts()


def test_ptp_camera_is_imported_through_libgphoto2(
        watcher: Watcher, udev_testbed: udevbed.UdevTestbed, tmp_path: Path) -> None:
    camera = watcher.cameras / "001-011"
    photos = [exif_jpeg(camera / "DCIM" / "100CANON" / f"IMG_{i:04d}.JPG",
                        "2026:05:12 12:00:00", color=(i * 50, 10, 10)) for i in range(3)]
    before = {p: (sha256_file(p), p.stat().st_mtime_ns) for p in photos}
    watcher.start()
    udev_testbed.add_camera(busnum=1, devnum=11, vendor="Canon Inc.", model="Canon EOS 90D")
    device = watcher.wait_status("usb-001-011", "done", timeout=90)
    assert (device.kind, device.total, device.verified) == ("camera", 3, 3)
    assert {i["sha256"] for i in watcher.items()} == {h for h, _ in before.values()}
    assert {p: (sha256_file(p), p.stat().st_mtime_ns) for p in photos} == before  # untouched


def test_microphone_records_into_the_archive(
        watcher: Watcher, udev_testbed: udevbed.UdevTestbed, tmp_path: Path) -> None:
    watcher.start()
    udev_testbed.add_microphone(card_number=1)
    mic = watcher.wait_status("card1", "ready")
    assert mic.kind == "microphone"
    started = run_cli("--config", watcher.config, "record", "start", "--device", "card1",
                      "--activity", "rueda-de-prensa")
    assert started.returncode == 0, started.stderr.decode()
    assert b"'rueda-de-prensa' is not in the agenda" in started.stderr  # filed, with a word
    listed = json.loads(run_cli("--config", watcher.config, "devices", "list", "--json").stdout)
    assert [(d["id"], d["status"]) for d in listed] == [("card1", "recording")]
    time.sleep(2)
    stopped = run_cli("--config", watcher.config, "record", "stop", "--device", "card1",
                      "--json")
    assert stopped.returncode == 0, stopped.stderr.decode()
    items = watcher.items()
    assert len(items) == 1 and items[0]["kind"] == "audio"
    assert 1.0 < items[0]["duration"] < 4.0
    assert items[0]["activity"] == "rueda-de-prensa"


def test_noise_card_helper_makes_distinct_files(tmp_path: Path) -> None:
    a = noise_jpeg(tmp_path / "a.jpg", seed=1, side=64)
    b = noise_jpeg(tmp_path / "b.jpg", seed=2, side=64)
    assert sha256_file(a) != sha256_file(b)


def test_a_card_in_use_for_years_keeps_its_last_hundred_imports(tmp_path: Path) -> None:
    """cards.json, rewritten whole at every import, kept every import of every card."""
    from ingest.devices.history import IMPORTS_KEPT

    state = tmp_path / "state"
    (state / "tmp").mkdir(parents=True)
    history = CardHistory(state)
    card = history.identify("1234-ABCD", "EOS_DIGITAL", "vfat", ["a" * 64]).card_id
    other = history.identify("9999-0000", "NIKON", "vfat", ["b" * 64]).card_id
    history.record_import({"card_id": other, "started_at": "2026-01-01T00:00:00+00:00"})
    for day in range(IMPORTS_KEPT + 20):
        history.record_import({"card_id": card, "started_at": f"2026-{1 + day // 28:02d}-"
                               f"{1 + day % 28:02d}T10:00:00+00:00", "n": day})
    cards = {c["card_id"]: c for c in history.cards()}
    kept = cards[card]["imports"]
    assert len(kept) == IMPORTS_KEPT and kept[0]["n"] == IMPORTS_KEPT + 19 and kept[-1]["n"] == 20
    assert len(cards[other]["imports"]) == 1
