"""A box without a battery-backed clock: it boots at the time fake-hwclock saved (days behind)
or at 1970, and NTP steps it when a network appears, if one does. Cameras have wrong clocks
too. The wrong clocks are real: libfaketime (Debian's faketime) under the CLI processes."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path

import pytest

from appliance import boxclock
from sync.hlc import known_time
from tests.cards import exif_jpeg
from tests.conftest import run_cli
from tests.test_sync_kit import Media, RealHub, hub, make_kit, media, paired, sync_once

__all__ = ["hub", "media"]  # fixtures, shared with the sync tests

DAY = 86400.0


def faketime(spec: str, **env: str) -> dict[str, str]:
    """Env that runs a CLI process with a wrong wall clock (monotonic clocks untouched)."""
    found = [p for p in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                         "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1")
             if os.path.exists(p)]
    if not found:
        pytest.fail("libfaketime missing: scripts/setup installs Debian's faketime")
    return {"LD_PRELOAD": found[0], "FAKETIME": spec, "DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_DONT_RESET": "1", **env}


def items(root: Path) -> list[dict]:
    result = run_cli("--data-dir", root, "items", "--json")
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


# -- importing with a box clock that is behind ------------------------------------------------


@pytest.mark.parametrize("box_clock", ["@2026-03-01 09:00:00", "@1970-01-01 00:05:00"])
def test_right_camera_times_are_believed_while_the_box_clock_is_behind(
        tmp_path: Path, box_clock: str) -> None:
    """The box booted with a stale clock, no NTP at the event: a camera time after it was
    called "in the future" and the photo filed by the box's date (a whole event in the wrong
    month, outside its activity, or under 1969)."""
    data = tmp_path / "data"
    data.mkdir()
    add = run_cli("--data-dir", data, "agenda", "add", "Informe de gobierno", "--start",
                  "2026-03-10T09:00", "--end", "2026-03-10T13:00", "--slug", "informe")
    assert add.returncode == 0, add.stderr.decode()
    card = tmp_path / "card"
    exif_jpeg(card / "DCIM/100CANON/IMG_0001.JPG", "2026:03:10 10:15:00", "-06:00")
    result = run_cli("--data-dir", data, "ingest", card,
                     env=faketime(box_clock, ACOPIO_KIT_CLOCK="untrusted"))
    assert result.returncode == 0, result.stderr.decode()
    (item,) = items(data)
    assert item["archive_path"] == "archive/2026/03/2026-03-10_informe/IMG_0001.JPG", item
    assert item["date_source"] == "exif" and not item["problems"], item


def test_a_trusted_clock_still_flags_a_camera_time_in_the_future(tmp_path: Path) -> None:
    """Set right by NTP (or a battery clock, `kit.clock = "trusted"`), the box's clock judges:
    a camera a week ahead is flagged and not believed; an unsynchronised one would not
    judge a week, but still judges more than a year."""
    data = tmp_path / "data"
    card = tmp_path / "card"
    exif_jpeg(card / "DCIM/IMG_0001.JPG", "2026:03:17 10:15:00", "-06:00")
    exif_jpeg(card / "DCIM/IMG_0002.JPG", "2027:06:01 10:15:00", "-06:00", color=(9, 9, 9))
    for photo in (card / "DCIM").iterdir():  # the card's own file times: the morning's
        stamp = datetime.fromisoformat("2026-03-10T10:00:00-06:00").timestamp()
        os.utime(photo, (stamp, stamp))
    box = "@2026-03-10 12:00:00"
    result = run_cli("--data-dir", data, "ingest", card,
                     env=faketime(box, ACOPIO_KIT_CLOCK="trusted"))
    assert result.returncode == 0, result.stderr.decode()
    assert {i["date_source"] for i in items(data)} == {"file_mtime"}
    other = tmp_path / "other"
    result = run_cli("--data-dir", other, "ingest", card,
                     env=faketime(box, ACOPIO_KIT_CLOCK="untrusted"))
    assert result.returncode == 0, result.stderr.decode()
    by_name = {i["original_name"]: i for i in items(other)}
    assert by_name["IMG_0001.JPG"]["date_source"] == "exif"
    assert by_name["IMG_0002.JPG"]["date_source"] == "file_mtime"
    assert [p["code"] for p in by_name["IMG_0002.JPG"]["problems"]] == ["implausible_date"]


def test_the_clock_floor_raises_an_untrusted_now(tmp_path: Path) -> None:
    """A box that booted at 1970 still knows the latest time it saw (the sync clock's
    durable floor): a card with no usable time is filed by that, not by 1970."""
    data = tmp_path / "data"
    assert run_cli("--data-dir", data, "agenda", "add", "Rueda de prensa", "--start",
                   "2026-03-10T09:00", "--end", "2026-03-10T10:00").returncode == 0
    floor = known_time(Path(data) / "state")
    assert floor is not None and abs(floor.timestamp() - time.time()) < 60
    card = tmp_path / "card"
    exif_jpeg(card / "DCIM/IMG_0001.JPG", "", None)
    os.utime(card / "DCIM/IMG_0001.JPG", (0, 0))  # the card's file time: 1970 as well
    result = run_cli("--data-dir", data, "ingest", card,
                     env=faketime("@1970-01-01 00:05:00", ACOPIO_KIT_CLOCK="untrusted"))
    assert result.returncode == 0, result.stderr.decode()
    (item,) = items(data)
    assert item["date_source"] == "import_time"
    assert item["captured_at"][:4] == str(floor.year), item


def test_the_kernel_is_asked_whether_the_clock_is_synchronised(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = boxclock.synchronized()  # adjtimex, for real: this machine's answer
    assert asked in (True, False)
    assert boxclock.trusted("trusted") and not boxclock.trusted("untrusted")
    assert boxclock.trusted("auto") is asked
    flag = tmp_path / "synchronized"
    flag.touch()  # what systemd-timesyncd leaves once it has set the clock
    monkeypatch.setattr(boxclock, "TIMESYNC_FLAG", flag)
    assert boxclock.synchronized() is True and boxclock.trusted("auto")


# -- a kit whose clock is behind the hub's --------------------------------------------------


@pytest.mark.slow
def test_headquarters_decisions_reach_a_kit_that_booted_days_behind(
        hub: RealHub, tmp_path: Path, media: Media) -> None:
    """A kit booted with Friday's time on Monday (fake-hwclock), before NTP: every record
    the hub approved or captioned since was refused as "more than a day in the future", and
    the change cursor moved past it, so those decisions never arrived, silently.

    Now the hub's `Date` vouches for the time while the kit's clock is not known right; a
    kit sure of its clock (`kit.clock = "trusted"`) keeps its cursor on such records until the
    clocks agree."""
    from appliance.editorial import Editor

    for name, photo, kit_clock in (("kit-confiado", "photo1", "trusted"),
                                   ("kit-sin-ntp", "photo2", "untrusted")):
        kit = make_kit(tmp_path, name, {"DCIM/IMG_0001.JPG": media[photo]})
        paired(kit, hub)
        assert sync_once(kit)[0] == 0
        (sha,) = kit.items()
        Editor(hub.data, node="hub").approve([sha], by="directora")
        Editor(hub.data, node="hub").edit(sha, {"caption": "Desde la central"}, by="editor")

        behind = faketime("-3d", ACOPIO_KIT_CLOCK=kit_clock)
        code, output = sync_once(kit, env=behind)
        assert code == 0, output
        got = kit.items()[sha]
        if kit_clock == "untrusted":
            assert got["approved"] is True and got["caption"] == "Desde la central", output
            continue
        assert not got.get("approved") and "changes from the hub wait" in output, output
        code, output = sync_once(kit)  # NTP has set the clock
        assert code == 0, output
        got = kit.items()[sha]
        assert got["approved"] is True and got["caption"] == "Desde la central", output


def test_the_mural_just_made_survives_its_own_pruning_after_a_clock_step_back(
        tmp_path: Path) -> None:
    """Pruning kept the two newest versions by file time: after the clock stepped back the
    file just made was the "oldest" and went, and every request made it again (minutes on a
    Pi for an A1 sheet)."""
    from appliance.mural.render import prune

    stem, now = "mural-2026-03-A2-", time.time()
    for i, key in enumerate(("aaaa", "bbbb")):  # made while the clock ran 2 h ahead
        for ext in (".pdf", ".png", ".json"):
            path = tmp_path / f"{stem}{key}{ext}"
            path.write_bytes(b"x")
            os.utime(path, (now + 7200 + i, now + 7200 + i))
    for ext in (".pdf", ".png", ".json"):
        (tmp_path / f"{stem}cccc{ext}").write_bytes(b"x")
    prune(tmp_path, stem, made="cccc")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{stem}{key}{ext}" for key in ("bbbb", "cccc") for ext in (".json", ".pdf", ".png")]


def test_a_job_whose_worker_died_in_a_power_cut_comes_back_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job leased just before a power cut stayed leased to the dead worker until its
    expiry, which a clock come back 50 minutes behind put 50 minutes away (and at a 1970
    boot, until NTP, at an event perhaps never): no thumbnail meanwhile. A lease of an
    earlier boot is over; and a power cut is not counted against the job."""
    from appliance.datadir import DataDir
    from appliance.jobs import JobQueue

    data = DataDir.at(tmp_path / "data")
    before = time.time()
    queue = JobQueue(data, clock=lambda: before)
    queue.enqueue("thumb", "a" * 64, 0)
    assert queue.claim("worker-1", 60) is not None
    assert JobQueue(data, clock=lambda: before + 30).claim("worker-2", 60) is None  # alive
    monkeypatch.setattr(boxclock, "boot_id", lambda: "the-next-boot")
    rewound = JobQueue(data, clock=lambda: before - 50 * 60 + 120)
    job = rewound.claim("worker-2", 60)
    assert job is not None and job.lost_leases == 0
    assert rewound.claim("worker-3", 60) is None  # this boot's lease holds


def test_a_rebuilt_shard_keeps_the_latest_edit_though_made_with_a_1970_clock(
        tmp_path: Path) -> None:
    """The edit log is one file per month of the wall clock, replayed in name order: an edit
    made while the box's clock read 1970 was replayed first, and `check --repair` of a
    damaged shard brought the older caption back."""
    from appliance.catalog import Catalog
    from appliance.datadir import DataDir
    from appliance.editorial import Editor

    data = tmp_path / "data"
    card = tmp_path / "card"
    exif_jpeg(card / "DCIM/IMG_0001.JPG", "2026:03:10 10:15:00", "-06:00")
    assert run_cli("--data-dir", data, "ingest", card).returncode == 0
    (item,) = items(data)
    folder = DataDir.at(data)
    Editor(folder, clock=lambda: "2026-03-10T18:00:00+00:00").edit(
        item["sha256"], {"caption": "borrador"}, by="ana")
    Editor(folder, clock=lambda: "1970-01-01T00:10:00+00:00").edit(
        item["sha256"], {"caption": "Pie de foto final"}, by="ana")
    shard = next((folder.state / "catalog").rglob("*.json"))
    shard.write_bytes(b'{"items": {"1": {')  # damaged: --repair rebuilds it, replays the log
    repaired = run_cli("--data-dir", data, "check", "--repair")
    assert repaired.returncode in (0, 1), repaired.stderr.decode()
    (record,) = Catalog(folder).items()
    assert record["caption"] == "Pie de foto final"


def test_the_card_just_imported_comes_first_after_a_power_cut_rewound_the_clock(
        tmp_path: Path) -> None:
    """A power cut at the event, the clock back 50 minutes (fake-hwclock's last save), no
    NTP: the card imported after it sorted below the morning's in "Lo más reciente", and
    the grid's live refresh, waiting for a newer import time, never came."""
    from zoneinfo import ZoneInfo

    from appliance.datadir import DataDir
    from appliance.query.index import ItemIndex
    from appliance.query.search import ItemQuery

    data = tmp_path / "data"
    untrusted = {"ACOPIO_KIT_CLOCK": "untrusted"}
    morning = tmp_path / "card1"
    exif_jpeg(morning / "DCIM/IMG_0001.JPG", "2026:03:10 09:00:00", "-06:00")
    assert run_cli("--data-dir", data, "ingest", morning, env=untrusted).returncode == 0
    noon = tmp_path / "card2"
    exif_jpeg(noon / "DCIM/IMG_0002.JPG", "2026:03:10 08:00:00", "-06:00", color=(1, 2, 3))
    after_the_cut = run_cli("--data-dir", data, "ingest", noon,
                            env=faketime("-50m", **untrusted))
    assert after_the_cut.returncode == 0, after_the_cut.stderr.decode()
    index = ItemIndex(DataDir.at(data), ZoneInfo("America/Mexico_City"))
    index.refresh(force=True)
    rows, _ = index.search(ItemQuery())
    assert [r["original_name"] for r in rows] == ["IMG_0002.JPG", "IMG_0001.JPG"]
    assert index.latest_import() == rows[0]["imported_at"] > rows[1]["imported_at"]
