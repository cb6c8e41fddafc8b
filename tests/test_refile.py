"""Re-filing items: the files move in the archive (same inode, no copy) and the catalog, the
content index and the edit log follow; errors change nothing; kill -9 at every system call
that makes it durable leaves a state that `acopio check` reports or repairs, nothing lost;
concurrent re-filings and imports keep exactly one copy.

Real files imported through the real ingest; the CLI runs as real separate processes, and the
crashes are real SIGKILLs injected by strace at the Nth system call (as in test_faults).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from appliance import config as config_mod
from appliance import storage
from appliance.accounts import Users
from appliance.agenda import Activity, Agenda, parse_time
from appliance.catalog import Catalog, ShardWrite
from appliance.check import check
from appliance.config import Config
from appliance.datadir import DataDir
from appliance.editorial import EditLog, Editor
from appliance.fsutil import TEMP_PREFIX
from appliance.query import ItemIndex, ItemQuery
from appliance.refile import RefileError, Refiler, load_journal
from appliance.service import Service
from ingest.pipeline import Importer
from tests.cards import exif_jpeg, sha256_file, tree_digest
from tests.conftest import REPO, TEST_ENV, require_tool, run_cli
from tests.test_query import index_tables

MAY = "2026/05/2026-05-10_sin-actividad"
FERIA = "2026/06/2026-06-01_feria"
INFORME = "2026/05/2026-05-20_informe"


def load_config(data: Path) -> Config:
    return config_mod.load(None, environ=TEST_ENV, data_dir=data)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A data folder with an agenda (feria, informe), three photos of 10 May filed in that
    day's sin-actividad, one of the feria named like the first, and two users."""
    root = tmp_path_factory.mktemp("refile")
    card = root / "card"
    for i in range(3):
        exif_jpeg(card / f"DCIM/100CANON/IMG_000{i + 1}.JPG", "2026:05:10 10:00:00",
                  color=(i * 70, 40, 90))
    exif_jpeg(card / "DCIM/101CANON/IMG_0001.JPG", "2026:06:01 12:00:00", color=(10, 200, 10))
    data = root / "data"
    config = load_config(data)
    agenda = Agenda(DataDir.at(data).state)
    zone = config.zone
    agenda.add(Activity("feria", "Feria del libro", parse_time("2026-06-01T09:00", zone),
                        parse_time("2026-06-03T20:00", zone)))
    agenda.add(Activity("informe", "Informe de gobierno", parse_time("2026-05-20T10:00", zone),
                        parse_time("2026-05-20T12:00", zone)))
    summary = Importer(config).run(card)
    assert summary.imported == 4 and summary.ok, summary.as_dict()
    users = Users(DataDir.at(data).state)
    users.add("ana", "assistant", "una-contraseña-larga")
    users.add("dis", "designer", "una-contraseña-larga")
    shas = {item["archive_path"].removeprefix("archive/"): item["sha256"]
            for item in Catalog(DataDir.at(data)).items()}
    assert set(shas) == {f"{MAY}/IMG_0001.JPG", f"{MAY}/IMG_0002.JPG", f"{MAY}/IMG_0003.JPG",
                         f"{FERIA}/IMG_0001.JPG"}
    return data, shas


@pytest.fixture
def data(template: tuple[Path, dict[str, str]], tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(template[0], copy, symlinks=True)
    return copy


@pytest.fixture
def shas(template: tuple[Path, dict[str, str]]) -> dict[str, str]:
    return template[1]


def archived(data: Path) -> dict[str, list[Path]]:
    """Every file of the archive by content hash."""
    found: dict[str, list[Path]] = {}
    for path in sorted((data / "archive").rglob("*")):
        if path.is_file() and ".incoming" not in path.parts:
            found.setdefault(sha256_file(path), []).append(path)
    return found


def catalogued(data: Path) -> Counter[str]:
    return Counter(item["sha256"] for item in Catalog(DataDir.at(data)).items())


def record_of(data: Path, sha256: str) -> dict:
    [record] = [r for r in Catalog(DataDir.at(data)).items() if r["sha256"] == sha256]
    return record


def assert_consistent(data: Path, expected: set[str]) -> None:
    """Each item once in the archive (one name), once in the catalog, its record naming its
    file, the index pointing there, nothing left over, and `check --deep` clean."""
    files = archived(data)
    assert set(files) == expected, "an item was lost or added"
    for sha256, paths in files.items():
        assert len(paths) == 1 and paths[0].stat().st_nlink == 1, (sha256, paths)
    counts = catalogued(data)
    assert set(counts) == expected and set(counts.values()) == {1}, counts
    catalog = Catalog(DataDir.at(data))
    for sha256, [path] in files.items():
        record = record_of(data, sha256)
        assert data / record["archive_path"] == path
        assert record["folder"] == path.parent.relative_to(data / "archive").as_posix()
        assert catalog.lookup(sha256) == {"folder": record["folder"],
                                          "archive_path": record["archive_path"]}
    assert not list((data / "state/refile").glob("*.json")), "journal left behind"
    assert not list(data.rglob(TEMP_PREFIX + "*")), "temp files left behind"
    report = check(load_config(data), deep=True)
    assert report.clean and not report.findings, [f.as_dict() for f in report.findings]


# -- moving ------------------------------------------------------------------------------


def test_refile_to_an_activity_and_back(data: Path, shas: dict[str, str]) -> None:
    sha = shas[f"{MAY}/IMG_0002.JPG"]
    old = data / "archive" / MAY / "IMG_0002.JPG"
    inode = old.stat().st_ino
    Editor(DataDir.at(data)).edit(sha, {"caption": "Entrega de libros"}, by="luis")
    revision = record_of(data, sha)["revision"]

    result = run_cli("--data-dir", data, "items", "refile", sha, "--activity", "feria",
                     "--as", "ana", "--json")
    assert result.returncode == 0, result.stderr.decode()
    [moved] = json.loads(result.stdout)
    new = data / "archive" / FERIA / "IMG_0002.JPG"
    assert moved["archive_path"] == f"archive/{FERIA}/IMG_0002.JPG"
    assert (moved["folder"], moved["activity"], moved["filed_by"]) == (FERIA, "feria", "manual")
    assert moved["caption"] == "Entrega de libros"  # what people wrote moves with it
    # The same file under its new name: no copy, bytes unchanged, the old name gone.
    assert new.stat().st_ino == inode and new.stat().st_nlink == 1
    assert sha256_file(new) == sha and not old.exists()
    # The shards, the history, the index and the edit log follow.
    catalog = Catalog(DataDir.at(data))
    assert sha not in {r["sha256"] for r in catalog.read_shard(MAY)}
    [stored] = [r for r in catalog.read_shard(FERIA) if r["sha256"] == sha]
    assert stored["revision"] == revision + 1
    entry = stored["history"][-1]
    assert (entry["action"], entry["by"]) == ("refile", "ana")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$", entry["at"])
    assert entry["changes"]["folder"] == [MAY, FERIA]
    assert entry["changes"]["archive_path"] == [f"archive/{MAY}/IMG_0002.JPG",
                                                f"archive/{FERIA}/IMG_0002.JPG"]
    assert catalog.lookup(sha) == {"folder": FERIA, "archive_path": moved["archive_path"]}
    logged = [e for e in EditLog(DataDir.at(data)).entries([sha]) if e["action"] == "refile"]
    assert len(logged) == 1 and logged[0]["changes"]["folder"] == [MAY, FERIA]
    listed = json.loads(run_cli("--data-dir", data, "items", "--json",
                                "--activity", "feria").stdout)
    assert {i["sha256"]: i["archive_path"] for i in listed}[sha] == moved["archive_path"]
    assert run_cli("--data-dir", data, "check", "--deep").returncode == 0

    # Back to the capture day's sin-actividad folder, under its original name.
    result = run_cli("--data-dir", data, "items", "refile", sha, "--unsorted", "--as", "ana")
    assert result.returncode == 0, result.stderr.decode()
    assert b"1 items re-filed" in result.stdout
    assert old.stat().st_ino == inode and not new.exists()
    back = record_of(data, sha)
    assert (back["folder"], back["activity"]) == (MAY, "sin-actividad")
    assert [h["changes"]["folder"] for h in back["history"] if h["action"] == "refile"] == \
        [[MAY, FERIA], [FERIA, MAY]]
    listed = json.loads(run_cli("--data-dir", data, "items", "--json").stdout)
    assert [i["archive_path"] for i in listed if i["sha256"] == sha] == \
        [f"archive/{MAY}/IMG_0002.JPG"]
    check_run = run_cli("--data-dir", data, "check", "--deep", "--json")
    assert check_run.returncode == 0, check_run.stdout.decode()
    assert_consistent(data, set(shas.values()))


def test_a_name_clash_takes_a_suffix_and_a_batch_writes_each_shard_once(
        data: Path, shas: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(data)
    existing = data / "archive" / FERIA / "IMG_0001.JPG"
    before = (existing.stat().st_ino, sha256_file(existing))
    writes: list[Path] = []
    real_write = storage.atomic_write

    def counting(path, *args, **kwargs):
        writes.append(Path(path))
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(storage, "atomic_write", counting)
    batch = [shas[f"{MAY}/IMG_0001.JPG"], shas[f"{MAY}/IMG_0002.JPG"]]
    records = Refiler(config).refile(batch, "feria", by="ana")
    assert [r["archive_path"] for r in records] == [f"archive/{FERIA}/IMG_0001_2.JPG",
                                                    f"archive/{FERIA}/IMG_0002.JPG"]
    shard_writes = Counter(p.name for p in writes if "catalog" in p.parts)
    assert shard_writes == {"2026-06-01_feria.json": 1, "2026-05-10_sin-actividad.json": 1}
    assert (existing.stat().st_ino, sha256_file(existing)) == before  # never overwritten
    assert sha256_file(data / records[0]["archive_path"]) == batch[0]
    assert_consistent(data, set(shas.values()))


def test_the_query_index_follows_a_refiling_from_the_records_written(
        data: Path, shas: dict[str, str]) -> None:
    """As the web UI re-files: both shards go into its query index from the records the
    re-filing wrote (Refiler's on_written), none read again, as a rebuild would have them."""
    config = load_config(data)
    index = ItemIndex(DataDir.at(data), config.zone, refresh_interval_s=3600)
    index.refresh(force=True)
    told: list[list[str]] = []

    def tell(writes: list[ShardWrite]) -> None:
        told.append([w.folder_key for w in writes])
        index.apply_changes(writes)

    batch = [shas[f"{MAY}/IMG_0001.JPG"], shas[f"{MAY}/IMG_0002.JPG"]]
    Refiler(config, on_written=tell).refile(batch, "feria", by="ana")
    assert told == [[FERIA, MAY]]  # the target written first, then the source
    assert index.refresh(force=True) == 0
    found = {r["sha256"]: (r["folder"], r["archive_path"])
             for r in index.search(ItemQuery(limit=100))[0]}
    assert found == {sha: (record_of(data, sha)["folder"], record_of(data, sha)["archive_path"])
                     for sha in shas.values()}
    assert {f["folder"]: f["count"] for m in ("2026-05", "2026-06")
            for f in index.folders(m)} == {MAY: 1, FERIA: 3}
    index.close()
    followed = index_tables(DataDir.at(data).state / "query.sqlite")
    (DataDir.at(data).state / "query.sqlite").unlink()
    with ItemIndex(DataDir.at(data), config.zone) as rebuilt:
        rebuilt.refresh(force=True)
    assert followed == index_tables(DataDir.at(data).state / "query.sqlite")


def test_an_edited_shard_rebuilt_from_the_archive_keeps_the_refile(
        data: Path, shas: dict[str, str]) -> None:
    """The edit log has the re-filing: a target shard lost and rebuilt by check --repair
    gets who moved the item back, with the item's captions."""
    config = load_config(data)
    sha = shas[f"{MAY}/IMG_0003.JPG"]
    Editor(DataDir.at(data)).edit(sha, {"caption": "Firma del convenio"}, by="luis")
    Refiler(config).refile([sha], "informe", by="ana")
    catalog = Catalog(DataDir.at(data))
    catalog.shard_path(INFORME).write_bytes(b"\0" * 64)
    report = check(config, repair=True)
    assert report.clean, [f.as_dict() for f in report.findings]
    rebuilt = record_of(data, sha)
    assert (rebuilt["folder"], rebuilt["activity"], rebuilt["caption"]) == \
        (INFORME, "informe", "Firma del convenio")
    assert rebuilt["filed_by"] == "manual"
    assert [h["action"] for h in rebuilt["history"]] == ["edit", "refile"]
    assert_consistent(data, set(shas.values()))


def test_when_the_kernel_refuses_the_hard_link_the_file_is_renamed(
        data: Path, shas: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """fs.protected_hardlinks: the web UI's user may not link a file the device watcher
    (root) imported. The file is renamed instead, never copied, never replacing a file."""
    sha = shas[f"{MAY}/IMG_0001.JPG"]
    inode = (data / "archive" / MAY / "IMG_0001.JPG").stat().st_ino
    real_link = os.link

    def refused(src, dst, **kwargs):
        if kwargs.get("dst_dir_fd") is not None:  # a state file's temp being named (O_TMPFILE)
            return real_link(src, dst, **kwargs)
        raise PermissionError(errno.EPERM, "Operation not permitted", str(src))

    monkeypatch.setattr(os, "link", refused)
    [record] = Refiler(load_config(data)).refile([sha], "feria", by="ana")
    assert record["archive_path"] == f"archive/{FERIA}/IMG_0001_2.JPG"
    assert (data / record["archive_path"]).stat().st_ino == inode
    assert sha256_file(data / "archive" / FERIA / "IMG_0001.JPG") == shas[f"{FERIA}/IMG_0001.JPG"]
    monkeypatch.undo()
    assert_consistent(data, set(shas.values()))


def test_a_name_taken_by_an_import_meanwhile_is_journalled_then_skipped(
        data: Path, shas: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    sha = shas[f"{MAY}/IMG_0002.JPG"]
    target = data / "archive" / FERIA / "IMG_0002.JPG"
    real_link = os.link
    journals = []

    def racing_import(src, dst, **kwargs):
        if kwargs.get("dst_dir_fd") is not None:  # a state file's temp being named (O_TMPFILE)
            return real_link(src, dst, **kwargs)
        if Path(dst) == target and not target.exists():
            target.write_bytes(b"someone else's photo")  # an import got there first
        journals.extend(load_journal(p) for p in (data / "state/refile").glob("*.json"))
        return real_link(src, dst, **kwargs)

    monkeypatch.setattr(os, "link", racing_import)
    [record] = Refiler(load_config(data)).refile([sha], "feria", by="ana")
    monkeypatch.undo()
    assert record["archive_path"] == f"archive/{FERIA}/IMG_0002_2.JPG"
    assert target.read_bytes() == b"someone else's photo"
    # The new name was in the journal before it was linked.
    assert [j.moves[0].target_name for j in journals] == ["IMG_0002.JPG", "IMG_0002_2.JPG"]
    target.unlink()
    assert_consistent(data, set(shas.values()))


# -- errors --------------------------------------------------------------------------------


def snapshot(data: Path) -> dict:
    return {part: tree_digest(data / part) for part in ("archive", "state/catalog",
                                                        "state/index", "state/edits")
            if (data / part).exists()}


@pytest.mark.parametrize(("items", "activity", "by", "message"), [
    (["ab" * 32], "feria", "ana", "no item abab"),
    (["xyz"], "feria", "ana", "not a content hash"),
    ([], "feria", "ana", "nothing to re-file"),
    (["@MAY1"], "nope", "ana", "no activity 'nope' in the agenda"),
    (["@MAY1"], "../../etc", "ana", "invalid activity slug '../../etc'"),
    (["@MAY1"], "Feria", "ana", "invalid activity slug"),
    (["@FERIA1"], "feria", "ana", f"already in {FERIA}"),
    (["@MAY1"], "sin-actividad", "ana", f"already in {MAY}"),
    (["@MAY1"], None, "ana", f"already in {MAY}"),
    (["@FERIA1", "@MAY1"], None, "ana", f"already in {MAY}"),  # all or nothing
    (["@MAY2", "ab" * 32], "feria", "ana", "no item"),
    (["@MAY1"], "feria", "", "invalid name of who re-files"),
], ids=["unknown-item", "not-a-hash", "empty", "unknown-activity", "hostile-slug",
        "bad-slug", "same-activity", "same-day", "same-day-none", "batch-same", "batch-unknown",
        "nobody"])
def test_errors_are_clear_and_change_nothing(data: Path, shas: dict[str, str], items: list,
                                             activity: str | None, by: str,
                                             message: str) -> None:
    names = {"@MAY1": shas[f"{MAY}/IMG_0001.JPG"], "@MAY2": shas[f"{MAY}/IMG_0002.JPG"],
             "@FERIA1": shas[f"{FERIA}/IMG_0001.JPG"]}
    before = snapshot(data)
    with pytest.raises(RefileError, match=re.escape(message)):
        Refiler(load_config(data)).refile([names.get(i, i) for i in items], activity, by=by)
    assert snapshot(data) == before
    assert not list((data / "state/refile").glob("*.json"))


def test_cli_errors(data: Path, shas: dict[str, str]) -> None:
    sha = shas[f"{MAY}/IMG_0001.JPG"]
    before = snapshot(data)
    for args, message in [
        (["--activity", "../../etc", "--as", "ana"], b"invalid activity slug"),
        (["--activity", "nope", "--as", "ana"], b"no activity 'nope'"),
        (["--unsorted", "--as", "ana"], b"already in"),
        (["--activity", "feria", "--as", "nadie"], b"no such user"),
        (["--activity", "feria", "--as", "dis"], b"may not re-file"),
    ]:
        result = run_cli("--data-dir", data, "items", "refile", sha, *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
    usage = run_cli("--data-dir", data, "items", "refile", sha, "--as", "ana")
    assert usage.returncode == 2 and b"--activity" in usage.stderr  # where to is required
    assert snapshot(data) == before


# -- crashes -------------------------------------------------------------------------------

DURABLE_CALLS = ("fsync", "rename", "renameat2", "link", "unlink", "syncfs")
# fs.protected_hardlinks refusing the web UI's user a hard link to a file root imported.
REFUSE_LINKS = "inject=link:error=EPERM"


def refile_under_strace(data: Path, args: list[str], *, inject: str | None = None,
                        when: int = 1, trace: Path | None = None,
                        also: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The CLI re-filing in a child process under strace: with `inject`, SIGKILLed at the
    `when`th call of that system call; with `trace`, its durable calls written there;
    `also`: more strace -e options (REFUSE_LINKS)."""
    strace = require_tool("strace")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACOPIO_")}
    env.update(TEST_ENV)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no bytecode written: the same calls every run
    cmd = [strace, "-f", "-qq", "-e", "signal=none", "-e", f"trace={','.join(DURABLE_CALLS)}",
           "-o", str(trace or os.devnull)]
    for option in also:
        cmd += ["-e", option]
    if inject:
        cmd += ["-e", f"inject={inject}:signal=SIGKILL:when={when}"]
    cmd += [sys.executable, "-m", "appliance", "--data-dir", str(data), "items", "refile",
            *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=60)


def assert_only_refile_interrupted(data: Path) -> None:
    report = check(load_config(data))
    codes = {f.code for f in report.findings}
    assert report.clean or codes == {"refile_interrupted"}, \
        [f.as_dict() for f in report.findings]


def test_kill_at_the_old_name_then_check_reports_and_service_start_recovers(
        data: Path, shas: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    sha = shas[f"{MAY}/IMG_0002.JPG"]
    killed = refile_under_strace(data, [sha, "--activity", "feria", "--as", "ana"],
                                 inject="unlink", when=1)
    assert killed.returncode != 0, killed.stderr.decode()
    old, new = data / "archive" / MAY / "IMG_0002.JPG", data / "archive" / FERIA / "IMG_0002.JPG"
    assert old.stat().st_ino == new.stat().st_ino  # killed just before the old name went
    report = check(load_config(data))
    assert [f.code for f in report.findings] == ["refile_interrupted"]
    assert "feria" in report.findings[0].detail and "ana" in report.findings[0].detail
    cli = run_cli("--data-dir", data, "check", "--json")
    assert cli.returncode == 1
    assert [f["code"] for f in json.loads(cli.stdout)["findings"]] == ["refile_interrupted"]
    with caplog.at_level(logging.INFO, logger="appliance.service"):
        assert Service(load_config(data), roles=()).run() == 0
    assert "finished interrupted re-filings of 1 items" in caplog.text
    assert not old.exists() and record_of(data, sha)["folder"] == FERIA
    assert Refiler(load_config(data)).recover() == []  # idempotent: nothing left
    assert_consistent(data, set(shas.values()))


@pytest.mark.slow
@pytest.mark.parametrize("links", ["linked", "renamed"])
def test_kill_9_at_every_durable_system_call(template: tuple[Path, dict[str, str]],
                                              tmp_path: Path, links: str) -> None:
    """A batch of two items (one taking a `_2` name) killed at each fsync, rename, link,
    unlink and syncfs it makes: `check` reports only `refile_interrupted`, and whichever
    way it is recovered (check --repair, recover(), the same re-filing again) each item is
    then exactly once in the archive, both in their old or both in their new folder.
    "renamed": the kernel refuses the hard links (EPERM), the files are renamed instead."""
    source, shas = template
    batch = [shas[f"{MAY}/IMG_0001.JPG"], shas[f"{MAY}/IMG_0002.JPG"]]
    args = [*batch, "--activity", "feria", "--as", "ana"]
    also = (REFUSE_LINKS,) if links == "renamed" else ()
    old = {batch[0]: f"{MAY}/IMG_0001.JPG", batch[1]: f"{MAY}/IMG_0002.JPG"}
    new = {batch[0]: f"{FERIA}/IMG_0001_2.JPG", batch[1]: f"{FERIA}/IMG_0002.JPG"}
    # A clean run under strace: every call the re-filing makes, so the sweep covers them.
    dry = tmp_path / "dry"
    shutil.copytree(source, dry, symlinks=True)
    trace = tmp_path / "trace.txt"
    assert refile_under_strace(dry, args, trace=trace, also=also).returncode == 0
    made = Counter(m.group(1) for line in trace.read_text().splitlines()
                   if (m := re.match(r"^\d+\s+(\w+)\(", line)))
    assert made["link"] == 2 and made["rename"] >= 4, made
    assert made["fsync"] >= 10 and made["syncfs"] >= 1, made
    if links == "renamed":
        assert made["renameat2"] == 2 and made["unlink"] == 1, made
        del made["link"]  # refused, changes nothing: not a crash point of its own
    else:
        assert made["renameat2"] == 0 and made["unlink"] == 3, made
    recoveries = ("check --repair", "recover", "again")
    points = 0
    outcomes = set()
    for call in DURABLE_CALLS:
        for when in range(1, made[call] + 1):
            data = tmp_path / f"{call}-{when}"
            shutil.copytree(source, data, symlinks=True)
            killed = refile_under_strace(data, args, inject=call, when=when, also=also)
            assert killed.returncode != 0, f"{call} #{when} was never reached"
            assert_only_refile_interrupted(data)
            how = recoveries[points % len(recoveries)]
            points += 1
            if how == "check --repair":
                repaired = run_cli("--data-dir", data, "check", "--repair", "--json")
                assert repaired.returncode == 0, (call, when, repaired.stdout.decode())
            elif how == "recover":
                Refiler(load_config(data)).recover()
            else:
                again = run_cli("--data-dir", data, "items", "refile", *args)
                assert again.returncode in (0, 2), (call, when, again.stderr.decode())
                if again.returncode == 2:
                    assert b"already in" in again.stderr
            where = {sha: record_of(data, sha)["archive_path"].removeprefix("archive/")
                     for sha in batch}
            assert where in (old, new), (call, when, how, where)
            if how == "again":
                assert where == new
            else:
                outcomes.add("new" if where == new else "old")
            assert_consistent(data, set(shas.values()))
            shutil.rmtree(data)
    assert points == sum(made[c] for c in DURABLE_CALLS) >= 20
    assert outcomes == {"old", "new"}  # both undone and finished re-filings were met


# -- concurrency ---------------------------------------------------------------------------


def start_cli(*args: str | os.PathLike[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACOPIO_")}
    env.update(TEST_ENV)
    return subprocess.Popen([sys.executable, "-m", "appliance", *map(os.fspath, args)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_processes_refiling_one_item_at_once(data: Path, shas: dict[str, str]) -> None:
    """One waits for the other (the re-filing lock), then re-files from the new place, or
    finds the item already where it asked."""
    sha = shas[f"{MAY}/IMG_0003.JPG"]
    done = 0
    for _ in range(2):
        procs = [start_cli("--data-dir", data, "items", "refile", sha, "--activity", slug,
                           "--as", "ana") for slug in ("feria", "informe")]
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0 or (proc.returncode == 2 and b"already in" in err), \
                err.decode()
            done += proc.returncode == 0
        record = record_of(data, sha)
        assert record["folder"] in (FERIA, INFORME)
        refiled = [h for h in record["history"] if h["action"] == "refile"]
        assert len(refiled) == done and refiled[-1]["changes"]["folder"][1] == record["folder"]
        assert_consistent(data, set(shas.values()))
    assert done >= 2


def test_an_import_of_the_same_photo_while_it_is_refiled(data: Path, shas: dict[str, str],
                                                          tmp_path: Path) -> None:
    """The same picture arriving from another card while it moves: still one copy."""
    sha = shas[f"{MAY}/IMG_0002.JPG"]
    card = tmp_path / "card2"
    (card / "DCIM/OTRA").mkdir(parents=True)
    shutil.copyfile(data / "archive" / MAY / "IMG_0002.JPG", card / "DCIM/OTRA/FOTO.JPG")
    for i in range(3):
        where = ["--activity", "feria"] if i % 2 == 0 else ["--unsorted"]
        refile = start_cli("--data-dir", data, "items", "refile", sha, *where, "--as", "ana")
        ingest = start_cli("--data-dir", data, "ingest", card, "--json")
        out, err = ingest.communicate(timeout=60)
        assert ingest.returncode == 0, err.decode()
        assert json.loads(out)["imported"] == 0
        assert refile.wait(timeout=60) == 0, refile.stderr.read().decode()
        assert_consistent(data, set(shas.values()))
