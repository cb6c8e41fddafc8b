"""The catalog: shards per archive folder, schema migrations, concurrent writers, repair."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from appliance import storage
from appliance.catalog import Catalog, SchemaTooNewError
from appliance.datadir import DataDir
from appliance.fsutil import TEMP_PREFIX
from tests.cards import exif_jpeg, sample, sha256_file
from tests.conftest import REPO, run_cli

FOLDER = "2026/05/2026-05-10_informe"


def record(n: int, folder: str = FOLDER) -> dict:
    sha = f"{n:064x}"
    return {"sha256": sha, "size": n, "kind": "photo", "archive_path": f"archive/{folder}/{n}.jpg",
            "folder": folder, "activity": folder.split("_", 1)[1], "captured_at": "x"}


def test_one_shard_per_folder_and_the_index(tmp_path: Path) -> None:
    catalog = Catalog(DataDir.at(tmp_path))
    catalog.upsert(FOLDER, [record(1), record(2)])
    catalog.upsert("2026/06/2026-06-01_otra", [record(3, "2026/06/2026-06-01_otra")])
    catalog.upsert(FOLDER, [{**record(2), "size": 99}])  # replaced, not duplicated
    assert catalog.folder_keys() == ["2026/05/2026-05-10_informe", "2026/06/2026-06-01_otra"]
    assert sorted(r["size"] for r in catalog.read_shard(FOLDER)) == [1, 99]
    assert [r["sha256"] for r in catalog.items(month="2026-06")] == [f"{3:064x}"]
    assert catalog.lookup(f"{2:064x}") == {"folder": FOLDER,
                                           "archive_path": f"archive/{FOLDER}/2.jpg"}
    with pytest.raises(ValueError):
        catalog.shard_path("../../etc/passwd")


def test_migrations_run_in_order_when_read_and_when_written(tmp_path: Path) -> None:
    data = DataDir.at(tmp_path)
    old = Catalog(data, schema_version=1, migrations={})
    old.upsert(FOLDER, [record(1)])
    steps: list[int] = []

    def to_2(r: dict) -> dict:
        steps.append(2)
        return {**r, "camera": r.get("camera") or {"make": None, "model": None}}

    def to_3(r: dict) -> dict:
        steps.append(3)
        assert "camera" in r  # runs after to_2
        renamed = {k: v for k, v in r.items() if k != "captured_at"}  # fields may go
        return {**renamed, "taken_at": r["captured_at"], "tags": []}

    new = Catalog(data, schema_version=3, migrations={1: to_2, 2: to_3})
    assert new.read_shard(FOLDER)[0]["tags"] == []  # read through the migrations
    raw = json.loads(new.shard_path(FOLDER).read_text())
    assert raw["_meta"]["1"]["schema_version"] == 1  # reading never rewrites
    new.upsert(FOLDER, [{**record(2), "tags": ["nuevo"]}])
    raw = json.loads(new.shard_path(FOLDER).read_text())
    assert raw["_meta"]["1"]["schema_version"] == 3
    migrated = raw["items"]["1"]
    assert migrated["tags"] == [] and "camera" in migrated
    assert "captured_at" not in migrated and migrated["taken_at"] == "x"
    assert raw["items"]["2"]["tags"] == ["nuevo"]
    assert steps[:2] == [2, 3]
    with pytest.raises(SchemaTooNewError):
        old.read_shard(FOLDER)
    with pytest.raises(SchemaTooNewError):
        old.upsert(FOLDER, [record(5)])


WRITER = textwrap.dedent("""
    import sys
    from appliance.catalog import Catalog
    from appliance.datadir import DataDir
    root, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    catalog = Catalog(DataDir.at(root))
    folder = "2026/05/2026-05-10_informe"
    for n in range(first, first + count):
        sha = f"{n:064x}"
        catalog.upsert(folder, [{"sha256": sha, "size": n, "folder": folder,
                                 "archive_path": f"archive/{folder}/{n}.jpg"}])
""")


def test_two_processes_upserting_one_shard_lose_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(first), "120"],
                              env=env) for first in (1, 1001)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    catalog = Catalog(DataDir.at(tmp_path))
    sizes = sorted(r["size"] for r in catalog.read_shard(FOLDER))
    assert sizes == [*range(1, 121), *range(1001, 1121)]
    assert all(catalog.lookup(f"{n:064x}") for n in sizes)


def test_check_adopts_uncatalogued_files_and_removes_crash_debris(tmp_path: Path) -> None:
    card = tmp_path / "card"
    exif_jpeg(card / "a.jpg", "2026:05:10 10:00:00")
    data = tmp_path / "data"
    assert run_cli("--data-dir", data, "ingest", card).returncode == 0
    folder = data / "archive/2026/05/2026-05-10_sin-actividad"
    sample("flower.jpg", folder / "puesto-a-mano.jpg")  # someone copied a file in by hand
    (folder / f"{TEMP_PREFIX}123-abc").write_bytes(b"half a copy")  # a crashed copy
    (data / "state/tmp" / f"{TEMP_PREFIX}9-x").write_bytes(b"{")  # a crashed state write
    report = json.loads(run_cli("--data-dir", data, "check", "--json").stdout)
    codes = sorted((f["code"], f["path"].rsplit("/", 1)[-1]) for f in report["findings"])
    assert codes == [("stray_temp", f"{TEMP_PREFIX}123-abc"), ("stray_temp", f"{TEMP_PREFIX}9-x"),
                     ("uncatalogued", "puesto-a-mano.jpg")]
    repaired = run_cli("--data-dir", data, "check", "--repair", "--json")
    assert repaired.returncode == 0, repaired.stdout.decode()
    assert (folder / "puesto-a-mano.jpg").exists()  # adopted, never deleted
    assert not list(data.rglob(TEMP_PREFIX + "*"))
    items = json.loads(run_cli("--data-dir", data, "items", "--json").stdout)
    adopted = [i for i in items if i["original_name"] == "puesto-a-mano.jpg"]
    assert adopted and adopted[0]["filed_by"] == "repair"
    assert adopted[0]["date_source"] == "exif"
    assert run_cli("--data-dir", data, "check", "--deep").returncode == 0
    # A file changed behind the catalog's back is reported, never "repaired" away.
    original = next(folder.glob("a.jpg"))
    original.write_bytes(original.read_bytes()[:-10] + b"0123456789")
    deep = json.loads(run_cli("--data-dir", data, "check", "--deep", "--json").stdout)
    assert [f["code"] for f in deep["findings"]] == ["hash_mismatch"]
    assert "import the card it came from again" in deep["findings"][0]["detail"]
    # --repair sets the spoilt bytes aside (kept, never deleted): left in place, the card's
    # next import counted the file a duplicate of itself and nothing ever restored it.
    repaired = run_cli("--data-dir", data, "check", "--deep", "--repair", "--json")
    assert repaired.returncode == 1  # the content is still missing: not clean yet
    [finding] = json.loads(repaired.stdout)["findings"]
    assert "set aside as state/damaged/" in finding["detail"], finding
    [kept] = (data / "state" / "damaged").iterdir()
    assert kept.read_bytes().endswith(b"0123456789") and not original.exists()
    missing = json.loads(run_cli("--data-dir", data, "check", "--json").stdout)
    assert [f["code"] for f in missing["findings"]] == ["missing_file"]
    assert run_cli("--data-dir", data, "ingest", card).returncode == 0  # the card again
    assert sha256_file(original) == next(i["sha256"] for i in json.loads(run_cli(
        "--data-dir", data, "items", "--json").stdout) if i["original_name"] == "a.jpg")
    assert run_cli("--data-dir", data, "check", "--deep").returncode == 0


def test_bit_rot_of_an_original_the_hub_holds_is_fetched_back_not_lost(
        tmp_path: Path) -> None:
    """When the hub acknowledged the content, --repair leaves the item "en la central": the
    web UI's fetch-back restores it byte for byte, and check is clean meanwhile."""
    from appliance.datadir import DataDir
    from sync.kit.evict import is_evicted
    from sync.kit.store import SyncStore

    card = tmp_path / "card"
    exif_jpeg(card / "b.jpg", "2026:05:10 10:00:00")
    data = tmp_path / "data"
    assert run_cli("--data-dir", data, "ingest", card).returncode == 0
    [item] = json.loads(run_cli("--data-dir", data, "items", "--json").stdout)
    store = SyncStore(DataDir.at(data))
    store.ack_object(item["sha256"], item["size"])
    store.sync_acks()
    original = data / item["archive_path"]
    original.write_bytes(original.read_bytes()[:-4] + b"rot!")
    repaired = run_cli("--data-dir", data, "check", "--deep", "--repair", "--json")
    assert repaired.returncode == 0, repaired.stdout.decode()
    assert "the hub holds it: fetch it back" in repaired.stdout.decode()
    assert is_evicted(DataDir.at(data), item["sha256"]) and not original.exists()
    assert run_cli("--data-dir", data, "check", "--deep").returncode == 0


def test_storage_never_reads_a_damaged_shard_as_empty(tmp_path: Path) -> None:
    catalog = Catalog(DataDir.at(tmp_path))
    catalog.upsert(FOLDER, [record(1)])
    catalog.shard_path(FOLDER).write_bytes(b"\0" * 100)
    with pytest.raises(storage.CorruptStateError, match="NUL"):
        catalog.read_shard(FOLDER)
    with pytest.raises(storage.CorruptStateError):
        catalog.upsert(FOLDER, [record(2)])


def test_the_size_shown_is_the_size_seen() -> None:
    """A portrait phone photo (EXIF orientation 6) showed "4032 × 3024" under its portrait
    preview; a portrait phone video (rotation 90) "640 × 360"."""
    from appliance.fields import shown_size

    assert shown_size({"width": 4032, "height": 3024, "orientation": 6}) == (3024, 4032)
    assert shown_size({"width": 4032, "height": 3024, "orientation": 1}) == (4032, 3024)
    assert shown_size({"width": 640, "height": 360, "rotation": 90}) == (360, 640)
    assert shown_size({"width": 640, "height": 360, "rotation": 180}) == (640, 360)
    assert shown_size({"width": None, "height": 360}) is None


def test_a_mistyped_data_folder_is_said_not_listed_empty(tmp_path: Path) -> None:
    for command in (("items",), ("check",)):
        done = run_cli("--data-dir", tmp_path / "dato", *command)
        assert done.returncode == 2, (command, done.stdout)
        assert b"no Acopio data folder at" in done.stderr and not done.stdout
