"""The verified import end to end: a real card tree through the real CLI process."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.fsutil import TEMP_PREFIX
from ingest.pipeline import Importer, Reporter
from tests.cards import (
    camera_card,
    exif_jpeg,
    ffmpeg_video,
    media_hashes,
    sample,
    sha256_file,
    tree_digest,
)
from tests.conftest import REPO, run_cli

FIELDS = {"sha256", "size", "kind", "original_name", "source_path", "archive_path",
          "captured_at", "date_source", "camera", "gps", "activity", "problems"}


def ingest(data: Path, source: Path, *extra: str) -> tuple[int, dict]:
    result = run_cli("--data-dir", data, "ingest", source, "--json", *extra)
    assert result.stdout, result.stderr.decode()
    return result.returncode, json.loads(result.stdout)


def items(data: Path, *extra: str) -> list[dict]:
    result = run_cli("--data-dir", data, "items", "--json", *extra)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def check_clean(data: Path, deep: bool = True) -> None:
    args = ["--data-dir", data, "check", "--json"] + (["--deep"] if deep else [])
    result = run_cli(*args)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["clean"], report["findings"]


def archive_files(data: Path) -> list[Path]:
    return sorted(p for p in (data / "archive").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return camera_card(tmp_path_factory.mktemp("card"))


def test_camera_card_is_archived_verified_and_catalogued(card: Path, data_dir: Path) -> None:
    before = tree_digest(card)
    code, summary = ingest(data_dir, card)
    assert code == 0, summary
    expected = media_hashes(card)
    assert summary["imported"] == len(expected) == 14
    assert summary["duplicates"] == 0 and summary["failed"] == []
    skipped = {s["path"]: s["reason"] for s in summary["skipped"]}
    assert skipped == {
        ".Trashes": "clutter", "DCIM/100CANON/._IMG_0001.JPG": "clutter",
        "MISC": "clutter", "System Volume Information": "clutter",
    }
    assert sorted(summary["unknown"]) == ["DCIM/100CANON/IMG_0001.THM", "LEEME.txt"]

    listed = items(data_dir)
    assert {i["sha256"] for i in listed} == expected
    for item in listed:
        assert item.keys() >= FIELDS
        path = data_dir / item["archive_path"]
        assert sha256_file(path) == item["sha256"] and path.stat().st_size == item["size"]
        assert item["archive_path"].startswith("archive/")
        assert (card / item["source_path"]).is_file()
    by_source = {i["source_path"]: i for i in listed}
    video = by_source["PRIVATE/M4ROOT/CLIP/C0001.MP4"]
    assert video["kind"] == "video" and video["date_source"] == "media_creation_time"
    assert video["captured_at"].startswith("2026-05-10T12:30:00-06:00")
    assert video["archive_path"] == "archive/2026/05/2026-05-10_sin-actividad/C0001.MP4"
    assert by_source["AUDIO/ENTREVISTA_01.WAV"]["kind"] == "audio"
    photo = by_source["DCIM/101CANON/IMG_0001.JPG"]
    assert photo["captured_at"] == "2026-05-10T11:15:00-06:00"
    assert photo["date_source"] == "exif"
    assert photo["camera"] == {"make": "Canon", "model": "Canon EOS R6"}
    assert photo["gps"]["lat"] == pytest.approx(19.4326, abs=1e-4)
    assert photo["gps"]["lon"] == pytest.approx(-99.1332, abs=1e-4)
    for broken in ("DCIM/100CANON/IMG_0003.JPG", "DCIM/101APPLE/IMG_1003.HEIC"):
        # archived byte for byte, and flagged
        assert [p["code"] for p in by_source[broken]["problems"]] == ["damaged"]
        assert sha256_file(data_dir / by_source[broken]["archive_path"]) == sha256_file(
            card / broken)
    assert by_source["DCIM/100CANON/IMG_0001.JPG"]["problems"] == []
    kinds = {i["source_path"].rsplit(".", 1)[1]: i["kind"] for i in listed}
    assert kinds == {"JPG": "photo", "MPO": "photo", "HEIC": "photo", "PNG": "photo",
                     "TIF": "photo", "DNG": "raw", "MP4": "video", "WAV": "audio"}
    raw = by_source["DCIM/101CANON/IMG_0002.DNG"]
    assert (raw["date_source"], raw["captured_at"]) == ("raw_exif", "2026-05-10T11:20:00-06:00")
    assert raw["camera"] == {"make": "Canon", "model": "Canon EOS R6"}
    # A name clash in one folder takes a suffix; nothing is overwritten.
    names = [p.name for p in archive_files(data_dir)]
    assert len(names) == len(expected)
    assert not [n for n in names if n.startswith(TEMP_PREFIX)]
    check_clean(data_dir)
    assert tree_digest(card) == before  # the source is untouched

    # The same card again imports nothing new.
    code, again = ingest(data_dir, card)
    assert code == 0
    assert again["imported"] == 0 and again["duplicates"] == len(expected)
    assert len(archive_files(data_dir)) == len(expected)
    assert len(items(data_dir)) == len(expected)


def test_clash_suffix_and_duplicates_within_one_card(tmp_path: Path, data_dir: Path) -> None:
    card = tmp_path / "card"
    exif_jpeg(card / "DCIM/100CANON/IMG_0001.JPG", "2026:03:02 10:00:00", color=(1, 2, 3))
    exif_jpeg(card / "DCIM/101CANON/IMG_0001.JPG", "2026:03:02 10:05:00", color=(9, 9, 9))
    sample("hopper.jpg", card / "DCIM/101CANON/IMG_0002.JPG")
    sample("hopper.jpg", card / "DCIM/102CANON/COPIA.JPG")
    code, summary = ingest(data_dir, card)
    assert code == 0
    assert (summary["imported"], summary["duplicates"]) == (3, 1)
    folder = data_dir / "archive/2026/03/2026-03-02_sin-actividad"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith("IMG_0001")) == [
        "IMG_0001.JPG", "IMG_0001_2.JPG"]
    by_source = {i["source_path"]: i["archive_path"] for i in items(data_dir)}
    assert by_source["DCIM/100CANON/IMG_0001.JPG"].endswith("/IMG_0001.JPG")
    assert by_source["DCIM/101CANON/IMG_0001.JPG"].endswith("/IMG_0001_2.JPG")
    # A different card holding one of the same photos: duplicate across the archive.
    other = tmp_path / "other"
    sample("hopper.jpg", other / "DCIM/100NIKON/DSC_0001.JPG")
    code, summary = ingest(data_dir, other)
    assert (summary["imported"], summary["duplicates"]) == (0, 1)


def test_filing_by_agenda_requested_current_and_unsorted(tmp_path: Path, data_dir: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        result = run_cli("--data-dir", data_dir, *args)
        assert result.returncode == 0, result.stderr.decode()
        return result

    slug = cli("agenda", "add", "Informe anual — Cabildo", "--start", "2026-06-01T09:00",
               "--end", "2026-06-02T20:00", "--area", "Presidencia").stdout.decode().strip()
    assert slug == "informe-anual-cabildo"
    listed = json.loads(cli("agenda", "list", "--json").stdout)
    assert listed[0]["start"] == "2026-06-01T09:00:00-06:00"

    card = tmp_path / "card"
    exif_jpeg(card / "a.jpg", "2026:06:02 18:00:00", color=(1, 1, 1))  # 2nd day of the activity
    exif_jpeg(card / "b.jpg", "2026:06:03 10:00:00", color=(2, 2, 2))  # after it
    exif_jpeg(card / "c.jpg", "1985:01:01 10:00:00", color=(3, 3, 3))  # implausible
    os.utime(card / "c.jpg", (1780000000, 1780000000))  # 2026-05-28 in Mexico City
    ffmpeg_video(card / "d.mp4", creation_time="2026-06-01T16:00:00Z")  # 10:00 local, in window
    ingest(data_dir, card)
    by_name = {i["original_name"]: i for i in items(data_dir)}
    assert by_name["a.jpg"]["archive_path"] == (
        "archive/2026/06/2026-06-01_informe-anual-cabildo/a.jpg")
    assert by_name["a.jpg"]["filed_by"] == "agenda"
    assert by_name["d.mp4"]["activity"] == "informe-anual-cabildo"
    assert by_name["b.jpg"]["archive_path"] == "archive/2026/06/2026-06-03_sin-actividad/b.jpg"
    c = by_name["c.jpg"]
    assert c["date_source"] == "file_mtime"
    assert c["archive_path"].startswith("archive/2026/05/2026-05-28_sin-actividad/")
    assert [p["code"] for p in c["problems"]] == ["implausible_date"]

    card2 = tmp_path / "card2"
    exif_jpeg(card2 / "e.jpg", "2026:06:05 10:00:00", color=(4, 4, 4))
    ingest(data_dir, card2, "--activity", "rueda-de-prensa")
    cli("agenda", "current", "informe-anual-cabildo")
    assert cli("agenda", "current").stdout.decode().strip() == "informe-anual-cabildo"
    card3 = tmp_path / "card3"
    exif_jpeg(card3 / "f.jpg", "2026:06:06 10:00:00", color=(5, 5, 5))
    ingest(data_dir, card3)
    by_name = {i["original_name"]: i for i in items(data_dir)}
    assert by_name["e.jpg"]["archive_path"] == "archive/2026/06/2026-06-05_rueda-de-prensa/e.jpg"
    assert by_name["e.jpg"]["filed_by"] == "requested"
    assert by_name["f.jpg"]["archive_path"] == (
        "archive/2026/06/2026-06-01_informe-anual-cabildo/f.jpg")
    assert by_name["f.jpg"]["filed_by"] == "current"
    # Removing an activity from the agenda leaves its items where they are.
    cli("agenda", "add", "Borrador", "--start", "2026-07-01T09:00", "--end", "2026-07-01T10:00")
    cli("agenda", "remove", "borrador")
    assert [a["slug"] for a in json.loads(cli("agenda", "list", "--json").stdout)] == [
        "informe-anual-cabildo"]
    missing = run_cli("--data-dir", data_dir, "agenda", "remove", "borrador")
    assert missing.returncode == 2 and b"no activity" in missing.stderr
    only = items(data_dir, "--activity", "informe-anual-cabildo")
    assert {i["original_name"] for i in only} == {"a.jpg", "d.mp4", "f.jpg"}
    assert {i["original_name"] for i in items(data_dir, "--month", "2026-05")} == {"c.jpg"}
    bad = run_cli("--data-dir", data_dir, "ingest", card, "--activity", "../etc")
    assert bad.returncode == 2 and b"invalid activity slug" in bad.stderr


def test_hostile_names_and_special_files(tmp_path: Path, data_dir: Path) -> None:
    card = tmp_path / "card"
    d = card / "DCIM"
    d.mkdir(parents=True)
    (d / "link.jpg").symlink_to("/etc/passwd")
    (d / "into-archive.jpg").symlink_to(data_dir)
    (d / "loop").symlink_to(card)
    (d / "dirlink").symlink_to("/etc")
    os.mkfifo(d / "fifo.jpg")
    if os.geteuid() == 0:
        os.mknod(d / "dev.jpg", 0o600 | 0o020000, os.makedev(1, 3))  # like /dev/null
    names = [
        b"new\nline.jpg", b"-rf.jpg", b"--help.jpg", b"bad\xff\xfename.jpg",
        "café.jpg".encode(), "cafe\u0301.jpg".encode(),  # NFC and NFD twins
        b"x" * 251 + b".jpg",
    ]
    for i, name in enumerate(names):
        exif_jpeg(Path(os.fsdecode(bytes(d) + b"/" + name)), "2026:04:01 10:00:00",
                  color=(i * 20, 0, 0))
    before = tree_digest(card)
    code, summary = ingest(data_dir, card)
    assert code == 0, summary
    assert summary["imported"] == len(names)
    reasons = {s["path"]: s["reason"] for s in summary["skipped"]}
    assert reasons["DCIM/link.jpg"] == "symlink"
    assert reasons["DCIM/into-archive.jpg"] == "symlink"
    assert reasons["DCIM/loop"] == "symlink"
    assert reasons["DCIM/fifo.jpg"] == "not_regular_file"
    if os.geteuid() == 0:
        assert reasons["DCIM/dev.jpg"] == "not_regular_file"
    archived = archive_files(data_dir)
    passwd = sha256_file(Path("/etc/passwd"))
    assert passwd not in {sha256_file(p) for p in archived}
    for path in archived:
        name = path.name
        assert name.encode("utf-8") and len(name.encode()) <= 255
        assert "\n" not in name and not name.startswith("-")
    folder = data_dir / "archive/2026/04/2026-04-01_sin-actividad"
    listed = sorted(p.name for p in folder.iterdir())
    assert "café.jpg" in listed and "café_2.jpg" in listed  # twins kept apart, NFC names
    assert "new_line.jpg" in listed and "_rf.jpg" in listed and "bad__name.jpg" in listed
    raw = {i["source_path"] for i in items(data_dir)}
    assert os.fsdecode(b"DCIM/bad\xff\xfename.jpg") in raw  # exact original kept
    assert tree_digest(card) == before
    check_clean(data_dir)


def test_refuses_a_source_inside_the_archive(data_dir: Path, tmp_path: Path) -> None:
    (data_dir / "archive").mkdir()
    result = run_cli("--data-dir", data_dir, "ingest", data_dir / "archive")
    assert result.returncode == 2 and b"overlaps the data folder" in result.stderr
    result = run_cli("--data-dir", data_dir, "ingest", tmp_path / "nope")
    assert result.returncode == 2 and b"not a folder" in result.stderr


def test_progress_bar_on_a_terminal(card: Path, data_dir: Path) -> None:
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACOPIO_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "--data-dir", str(data_dir), "ingest", str(card)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=follower,
    )
    os.close(follower)
    out, _ = proc.communicate(timeout=120)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    screen = b"".join(chunks).decode()
    assert proc.returncode == 0
    assert "\r[" in screen and "100%" in screen and "14/14 files" in screen
    assert b"Imported:   14" in out


def test_a_file_that_vanishes_is_reported_and_the_rest_imported(
        tmp_path: Path, config) -> None:
    card = tmp_path / "card"
    for i in range(3):
        exif_jpeg(card / f"IMG_{i}.JPG", "2026:02:01 10:00:00", color=(i, 50, 50))

    class DeleteOne(Reporter):
        def started(self, scan) -> None:
            (card / "IMG_1.JPG").unlink()


    summary = Importer(config, reporter=DeleteOne()).run(card)
    assert summary.imported == 2
    assert [(o.path, o.reason.split(":")[0]) for o in summary.failed] == [
        ("IMG_1.JPG", "vanished")]
    assert not summary.ok


def test_two_processes_importing_the_same_content_under_other_names_archive_it_once(
        tmp_path: Path, data_dir: Path) -> None:
    """On a box the device watcher and the inbox import in two processes (their claims are
    per process). The same photos arriving through both at once, under other names (a card,
    and its photos renamed into the inbox), end as one file and one record each, with the
    two imports' counts adding up; `acopio check` finds nothing wrong."""
    from concurrent.futures import ThreadPoolExecutor

    card, inbox = tmp_path / "card" / "DCIM", tmp_path / "inbox"
    card.mkdir(parents=True)
    inbox.mkdir()
    count = 120
    photo = exif_jpeg(tmp_path / "foto.jpg", "2026:11:20 10:00:00").read_bytes()
    for n in range(count):
        data = photo + os.urandom(150_000)  # after the JPEG's end: each one different
        (card / f"IMG_{n:04d}.JPG").write_bytes(data)
        (inbox / f"evento_{n:04d}.jpg").write_bytes(data)
    with ThreadPoolExecutor(2) as both:  # two real `acopio ingest` processes at once
        results = list(both.map(lambda source: ingest(data_dir, source), [card, inbox]))
    assert [code for code, _summary in results] == [0, 0], results
    assert sum(s["imported"] for _c, s in results) == count, results
    assert sum(s["duplicates"] for _c, s in results) == count, results
    files = [p for p in (data_dir / "archive").rglob("*") if p.is_file()]
    catalogued = items(data_dir)
    assert len(files) == len(catalogued) == len({r["sha256"] for r in catalogued}) == count
    assert {data_dir / r["archive_path"] for r in catalogued} == set(files)
    check = run_cli("--data-dir", data_dir, "check")
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


def test_one_card_imported_twice_at_once_is_counted_once(tmp_path: Path, config) -> None:
    """The device watcher and the inbox (two processes) importing the same card at once:
    the second found the first's files in place (same name, same content) and adopted them,
    and both summaries said "imported" for them. Now the one that records second counts
    them as duplicates; the archive and catalog were right all along."""
    from dataclasses import replace

    from ingest.pipeline import Claims, Importer

    card = tmp_path / "card"
    for n in range(6):
        exif_jpeg(card / f"DCIM/IMG_{n:04d}.JPG", "2026:11:20 10:00:00", color=(n * 40, 9, 9))
    cfg = replace(config, ingest=replace(config.ingest, catalog_batch=1000))
    summaries = []

    class TheOtherImportRunsMeanwhile(Reporter):
        """After the first import placed its last file and before it records any: the
        second import (its own claims, as another process has) runs whole."""

        def file_done(self, outcome) -> None:
            if outcome.path.endswith("IMG_0005.JPG") and not summaries:
                summaries.append(Importer(cfg, claims=Claims()).run(card))

    first = Importer(cfg, reporter=TheOtherImportRunsMeanwhile(), claims=Claims()).run(card)
    (second,) = summaries
    assert second.imported == 6 and second.duplicates == 0
    assert first.imported == 0 and first.duplicates == 6, first
    assert len(items(config.data_dir)) == 6
    assert len([p for p in (config.data_dir / "archive").rglob("*.JPG")]) == 6
    assert run_cli("--data-dir", config.data_dir, "check").returncode == 0


def test_damaged_state_files_get_the_advice_that_mends_them(tmp_path: Path,
                                                            data_dir: Path) -> None:
    """`check --repair` rebuilds the catalog and its indexes only: the agenda or the
    accounts are not derived from the archive, so their damage must not send the operator to
    a command that changes nothing; the job queue has a repair of its own."""
    card = tmp_path / "card"
    exif_jpeg(card / "a.jpg", "2026:06:02 18:00:00", color=(1, 1, 1))
    ingest(data_dir, card)
    state = data_dir / "state"
    agenda = state / "agenda.json"
    agenda.write_text('{"activities": {')
    listed = run_cli("--data-dir", data_dir, "agenda", "list")
    assert listed.returncode == 1
    assert b"check --repair" not in listed.stderr and b"not derived from the archive" in \
        listed.stderr and f"mv {agenda} {agenda}.damaged".encode() in listed.stderr
    agenda.unlink()
    shard = next((state / "jobs").rglob("*.thumb.*.json"))
    shard.write_text("{")
    jobs = run_cli("--data-dir", data_dir, "jobs")
    assert jobs.returncode == 1 and b"acopio jobs --repair" in jobs.stderr
    catalog = next((state / "catalog").rglob("*.json"))
    catalog.write_text("{")
    items = run_cli("--data-dir", data_dir, "items")
    assert items.returncode == 1 and b"acopio check --repair" in items.stderr


def test_an_activity_the_agenda_lacks_is_filed_with_a_warning(tmp_path: Path,
                                                              data_dir: Path) -> None:
    card = tmp_path / "card"
    exif_jpeg(card / "a.jpg", "2026:06:02 18:00:00", color=(1, 1, 1))
    done = run_cli("--data-dir", data_dir, "ingest", card, "--activity", "rueda-de-prnsa")
    assert done.returncode == 0 and b"'rueda-de-prnsa' is not in the agenda" in done.stderr
    current = run_cli("--data-dir", data_dir, "agenda", "current", "otra")
    assert current.returncode == 0 and b"'otra' is not in the agenda" in current.stderr


def test_a_lost_original_comes_back_where_its_record_says(tmp_path: Path,
                                                          data_dir: Path) -> None:
    """An original re-filed into an activity, then lost (deleted by hand, a bad sector):
    inserting its card again puts it back in that folder under that name, and its record,
    caption and filing stay the one record. Before, a second record went to the capture
    day's folder and the first stayed, pointing at nothing."""
    def cli(*args: str | Path) -> subprocess.CompletedProcess:
        result = run_cli("--data-dir", data_dir, *args)
        assert result.returncode == 0, result.stderr.decode()
        return result

    card = tmp_path / "card"
    exif_jpeg(card / "DSC_0001.JPG", "2026:06:02 18:00:00", color=(1, 1, 1))
    exif_jpeg(card / "DSC_0002.JPG", "2026:06:02 18:01:00", color=(2, 2, 2))
    ingest(data_dir, card)
    sha = next(i["sha256"] for i in items(data_dir) if i["original_name"] == "DSC_0001.JPG")
    assert run_cli("--data-dir", data_dir, "users", "add", "dora", "--role", "director",
                   "--password-stdin", input=b"una-clave-larga-123\n").returncode == 0
    cli("agenda", "add", "Feria", "--start", "2026-06-10T09:00", "--end", "2026-06-10T18:00")
    cli("items", "refile", sha, "--activity", "feria", "--as", "dora")
    cli("items", "set", sha, "--caption", "Inauguración", "--as", "dora")
    [before] = [i for i in items(data_dir) if i["sha256"] == sha]
    assert before["archive_path"] == "archive/2026/06/2026-06-10_feria/DSC_0001.JPG"
    (data_dir / before["archive_path"]).unlink()

    code, summary = ingest(data_dir, card)
    assert code == 0 and summary["imported"] == 1 and summary["duplicates"] == 1
    [after] = [i for i in items(data_dir) if i["sha256"] == sha]  # one record
    assert after["archive_path"] == before["archive_path"]
    assert (after["caption"], after["activity"], after["filed_by"]) == (
        "Inauguración", "feria", before["filed_by"])
    assert sha256_file(data_dir / after["archive_path"]) == sha
    assert not (data_dir / "archive/2026/06/2026-06-02_sin-actividad/DSC_0001.JPG").exists()
    checked = run_cli("--data-dir", data_dir, "check", "--json")
    assert checked.returncode == 0 and json.loads(checked.stdout)["clean"]


def test_check_never_makes_two_records_of_one_content(tmp_path: Path, data_dir: Path) -> None:
    """A copy of an archived photo dropped into the archive by hand is reported, not adopted
    as a second item; two records of one content (as an older import could leave) are
    reported, and the index names the one whose file is there."""
    card = tmp_path / "card"
    exif_jpeg(card / "a.jpg", "2026:06:02 18:00:00", color=(1, 1, 1))
    ingest(data_dir, card)
    [item] = items(data_dir)
    original = data_dir / item["archive_path"]
    copy_path = original.with_name("copia.jpg")
    copy_path.write_bytes(original.read_bytes())
    repaired = run_cli("--data-dir", data_dir, "check", "--repair", "--json")
    report = json.loads(repaired.stdout)
    [finding] = [f for f in report["findings"] if f["code"] == "uncatalogued"]
    assert finding["repaired"] is False and f"a copy of {item['archive_path']}" in \
        finding["detail"]
    assert [i["archive_path"] for i in items(data_dir)] == [item["archive_path"]]
    assert copy_path.exists()  # an original all the same: never deleted

    # two records: the second in another folder's shard, whose file is then lost
    from appliance.catalog import Catalog
    from appliance.datadir import DataDir

    catalog = Catalog(DataDir.at(data_dir))
    other = dict(item, folder="2026/06/2026-06-03_sin-actividad",
                 archive_path="archive/2026/06/2026-06-03_sin-actividad/a.jpg")
    catalog.upsert(other["folder"], [other])
    copy_path.unlink()
    checked = json.loads(run_cli("--data-dir", data_dir, "check", "--json").stdout)
    codes = {(f["code"], f["path"]) for f in checked["findings"]}
    assert ("duplicate_record", other["archive_path"]) in codes
    assert ("missing_file", other["archive_path"]) in codes and not checked["clean"]
    run_cli("--data-dir", data_dir, "check", "--repair")
    assert Catalog(DataDir.at(data_dir)).lookup(item["sha256"])["archive_path"] == \
        item["archive_path"]


def test_an_original_cut_short_comes_back_from_its_card(tmp_path: Path, data_dir: Path) -> None:
    """A failing disk cut an archived original short: `check` says how to mend it, and the
    card's next import does (the damaged file is kept in state/damaged/, never deleted);
    the record, with its caption, stays the one."""
    card = tmp_path / "card"
    exif_jpeg(card / "DSC_0001.JPG", "2026:06:02 18:00:00", color=(1, 1, 1), size=(640, 480))
    ingest(data_dir, card)
    [item] = items(data_dir)
    assert run_cli("--data-dir", data_dir, "users", "add", "dora", "--role", "director",
                   "--password-stdin", input=b"una-clave-larga-123\n").returncode == 0
    assert run_cli("--data-dir", data_dir, "items", "set", item["sha256"], "--caption",
                   "Entrega", "--as", "dora").returncode == 0
    original = data_dir / item["archive_path"]
    with open(original, "r+b") as f:
        f.truncate(1000)
    checked = json.loads(run_cli("--data-dir", data_dir, "check", "--json").stdout)
    [finding] = checked["findings"]
    assert finding["code"] == "size_mismatch" and "import the card" in finding["detail"]

    code, summary = ingest(data_dir, card)
    assert code == 0 and summary["imported"] == 1
    assert sha256_file(original) == item["sha256"]
    [after] = items(data_dir)
    assert after["archive_path"] == item["archive_path"] and after["caption"] == "Entrega"
    [kept] = (data_dir / "state" / "damaged").iterdir()
    assert kept.stat().st_size == 1000 and kept.name.endswith("-DSC_0001.JPG")
    assert json.loads(run_cli("--data-dir", data_dir, "check", "--deep", "--json").stdout
                      )["clean"]
    code, summary = ingest(data_dir, card)  # mended: a duplicate now
    assert code == 0 and summary["duplicates"] == 1 and summary["imported"] == 0


def test_only_the_cards_root_misc_folder_is_clutter(tmp_path: Path, data_dir: Path) -> None:
    """MISC at a card's root is a camera's DPOF print order; a folder named "Misc" anywhere
    else holds the user's photos (they were left out without a word)."""
    card = tmp_path / "card"
    (card / "MISC").mkdir(parents=True)
    (card / "MISC" / "AUTPRINT.MRK").write_bytes(b"[HDR]")
    exif_jpeg(card / "Fotos" / "Misc" / "FOTO_M1.JPG", "2026:06:02 18:00:00", color=(3, 1, 1))
    exif_jpeg(card / "Evento Misc" / "misc" / "FOTO_M2.JPG", "2026:06:02 18:01:00",
              color=(4, 1, 1))
    code, summary = ingest(data_dir, card)
    assert code == 0 and summary["imported"] == 2
    assert {s["path"]: s["reason"] for s in summary["skipped"]} == {"MISC": "clutter"}


def test_check_leaves_a_running_imports_files_alone(tmp_path: Path, data_dir: Path) -> None:
    """An import records its verified files a batch at a time; `check` during a long copy
    reported the batch waiting as problems (exit 1), and `--repair` adopted them under the
    import's feet."""
    from appliance.fsutil import file_lock
    from ingest.pipeline import IMPORTING_LOCK

    card = tmp_path / "card"
    exif_jpeg(card / "a.jpg", "2026:06:02 18:00:00", color=(1, 1, 1))
    ingest(data_dir, card)
    [item] = items(data_dir)
    waiting = (data_dir / item["archive_path"]).with_name("b.jpg")
    exif_jpeg(waiting, "2026:06:02 18:00:01", color=(2, 2, 2))  # verified, not yet recorded
    with file_lock(data_dir / "state" / IMPORTING_LOCK, shared=True):  # an import runs
        checked = run_cli("--data-dir", data_dir, "check", "--repair", "--json")
        assert checked.returncode == 0, checked.stdout.decode()
        [note] = json.loads(checked.stdout)["findings"]
        assert (note["code"], note["problem"]) == ("being_imported", False)
    assert len(items(data_dir)) == 1  # not adopted meanwhile
    after = run_cli("--data-dir", data_dir, "check")  # no import: a problem again
    assert after.returncode == 1 and b"uncatalogued" in after.stdout


def test_an_xmp_sidecar_is_filed_with_its_photo(tmp_path: Path, data_dir: Path) -> None:
    """A sidecar has no capture time of its own: filed by its file time, it went to another
    day's folder than the photo it describes."""
    card = tmp_path / "card" / "DCIM"
    exif_jpeg(card / "IMG_0001.JPG", "2026:05:10 10:00:00", color=(1, 1, 1))
    (card / "IMG_0001.XMP").write_text('<x:xmpmeta xmlns:x="adobe:ns:meta/"/>')
    os.utime(card / "IMG_0001.XMP", (1790000000, 1790000000))  # months later
    (card / "OTRA.XMP").write_text('<x:xmpmeta xmlns:x="adobe:ns:meta/"><!-- otra -->'
                                   '</x:xmpmeta>')  # a sidecar without its photo
    os.utime(card / "OTRA.XMP", (1790000000, 1790000000))
    code, summary = ingest(data_dir, tmp_path / "card")
    assert code == 0 and summary["imported"] == 3
    folders = {i["original_name"]: i["folder"] for i in items(data_dir)}
    assert folders["IMG_0001.XMP"] == folders["IMG_0001.JPG"]
    assert folders["IMG_0001.JPG"].endswith("2026-05-10_sin-actividad")
    assert folders["OTRA.XMP"] != folders["IMG_0001.JPG"]  # by its own time, as before
