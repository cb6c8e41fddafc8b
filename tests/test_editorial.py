"""Editing items: validation, per-field conflicts, merges, approval, history, the edit log.

Real catalog shards on disk; concurrency with real separate processes.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from appliance import fields
from appliance.catalog import Catalog, ShardWrite, shard_stat
from appliance.config import Config
from appliance.datadir import DataDir
from appliance.editorial import EditConflict, EditError, EditLog, Editor, NotFound, validate
from tests.cards import exif_jpeg
from tests.conftest import REPO, run_cli

FOLDER = "2026/05/2026-05-10_informe"
OTHER = "2026/06/2026-06-01_feria"


def record(n: int, folder: str = FOLDER) -> dict:
    return {"sha256": f"{n:064x}", "size": n, "kind": "photo",
            "archive_path": f"archive/{folder}/{n}.jpg", "folder": folder,
            "activity": folder.split("_", 1)[1], "captured_at": "2026-05-10T10:00:00+00:00",
            **fields.defaults()}


def sha(n: int) -> str:
    return f"{n:064x}"


@pytest.fixture
def editor(tmp_path: Path) -> Editor:
    data = DataDir.at(tmp_path)
    data.ensure()
    catalog = Catalog(data)
    catalog.upsert(FOLDER, [record(1), record(2)])
    catalog.upsert(OTHER, [record(3, OTHER)])
    return Editor(data, catalog)


def test_values_are_checked_and_normalised() -> None:
    assert validate({"caption": "  Cabildo\u0000 abierto \n"}) == {"caption": "Cabildo abierto"}
    assert validate({"tags": ["Feria", "feria ", "  ", "Niñez"]}) == {"tags": ["Feria", "Niñez"]}
    assert validate({"pick": None, "rating": 5}) == {"pick": None, "rating": 5}
    for bad, field in [({"rating": 6}, "rating"), ({"rating": True}, "rating"),
                       ({"pick": "maybe"}, "pick"), ({"caption": 3}, "caption"),
                       ({"caption": "x" * 2001}, "caption"), ({"tags": "feria"}, "tags"),
                       ({"tags": ["x" * 65]}, "tags"), ({"tags": [str(i) for i in range(51)]},
                                                         "tags"),
                       ({"approved": True}, "approved"), ({"sha256": "0"}, "sha256")]:
        with pytest.raises(EditError, match=field):
            validate(bad)


def test_an_edit_is_recorded_with_who_when_and_history(editor: Editor) -> None:
    after = editor.edit(sha(1), {"caption": "Sesión de cabildo", "rating": 4}, by="ana")
    assert (after["caption"], after["rating"], after["revision"]) == ("Sesión de cabildo", 4, 1)
    assert after["edited"]["caption"]["by"] == "ana"
    [entry] = after["history"]
    assert entry["by"] == "ana" and entry["action"] == "edit"
    assert entry["changes"] == {"caption": ["", "Sesión de cabildo"], "rating": [0, 4]}
    stored = {r["sha256"]: r for r in editor.catalog.read_shard(FOLDER)}[sha(1)]
    assert stored["caption"] == "Sesión de cabildo" and stored["revision"] == 1
    # The same values again change nothing: no new revision, no history entry.
    again = editor.edit(sha(1), {"caption": "Sesión de cabildo"}, by="luis")
    assert again["revision"] == 1 and len(again["history"]) == 1


def test_a_stale_edit_of_the_same_field_is_a_conflict_not_a_loss(editor: Editor) -> None:
    base = editor.edit(sha(1), {"caption": "Primera"}, by="ana")["revision"]
    editor.edit(sha(1), {"caption": "De Luis"}, by="luis", base_revision=base)
    with pytest.raises(EditConflict) as caught:
        editor.edit(sha(1), {"caption": "De Ana"}, by="ana", base_revision=base)
    assert caught.value.fields["caption"]["value"] == "De Luis"
    assert caught.value.fields["caption"]["by"] == "luis"
    stored = {r["sha256"]: r for r in editor.catalog.read_shard(FOLDER)}[sha(1)]
    assert stored["caption"] == "De Luis"
    # Different fields from the same stale base merge; adding tags always merges.
    merged = editor.edit(sha(1), {"rating": 3, "add_tags": ["prensa"]}, by="ana",
                         base_revision=base)
    assert (merged["caption"], merged["rating"], merged["tags"]) == ("De Luis", 3, ["prensa"])
    merged = editor.edit(sha(1), {"add_tags": ["Prensa", "cabildo"], "remove_tags": []},
                         by="luis", base_revision=base)
    assert merged["tags"] == ["prensa", "cabildo"]
    assert editor.edit(sha(1), {"remove_tags": ["PRENSA"]}, by="ana")["tags"] == ["cabildo"]


def test_a_selection_is_edited_with_one_write_per_shard(editor: Editor) -> None:
    before = {p: p.stat().st_ino for p in editor.data.catalog.rglob("*.json")}
    done = editor.edit_many([sha(1), sha(2), sha(3)], {"credit": "Comunicación Social"},
                            by="ana")
    assert [r["credit"] for r in done] == ["Comunicación Social"] * 3
    after = {p: p.stat().st_ino for p in editor.data.catalog.rglob("*.json")}
    assert all(before[p] != after[p] for p in before)  # each shard rewritten (once)
    with pytest.raises(NotFound):
        editor.edit_many([sha(1), sha(99)], {"credit": "x"}, by="ana")


def test_each_shard_write_is_told_with_its_records_and_file_versions(editor: Editor) -> None:
    """What the web's query index follows edits by (appliance/query, apply_changes)."""
    told: list[ShardWrite] = []
    listening = Editor(editor.data, editor.catalog, on_written=told.append)
    paths = {key: editor.catalog.shard_path(key) for key in (FOLDER, OTHER)}
    before = {key: shard_stat(path.stat()) for key, path in paths.items()}
    done = listening.edit_many([sha(1), sha(3)], {"caption": "Cabildo"}, by="ana")
    [writes] = told  # one report per call, after every shard was written
    assert [w.folder_key for w in writes] == [FOLDER, OTHER]
    for write in writes:
        assert write.before == before[write.folder_key]
        assert write.after == shard_stat(paths[write.folder_key].stat())
        # only the changed records, as the shard now holds them (not the whole shard: a
        # batch over many folders would hold them all at once)
        assert write.records is None
        on_disk = {r["sha256"]: r for r in editor.catalog.read_shard(write.folder_key)}
        assert write.changed and all(on_disk[r["sha256"]] == r for r in write.changed)
    assert writes[0].changed == [done[0]] and writes[1].changed == [done[1]]

    told.clear()
    listening.approve([sha(2)], by="directora")
    listening.approve([sha(2)], by="directora")  # already approved: no write, nothing told
    assert len(told) == 1 and [r["sha256"] for r in told[0][0].changed] == [sha(2)]

    # an item not found in a later shard: what was written before is still told
    told.clear()
    editor.catalog.by_hash.put_many({sha(9): {"folder": OTHER, "archive_path": "x"}})
    with pytest.raises(NotFound):
        listening.edit_many([sha(1), sha(9)], {"caption": "Sesión"}, by="ana")
    assert [[w.folder_key for w in writes] for writes in told] == [[FOLDER]]


def test_approval_records_who_and_when_and_withdrawal_too(editor: Editor) -> None:
    [approved] = editor.approve([sha(1)], by="directora")
    assert approved["approved"] is True and approved["approved_by"] == "directora"
    assert approved["approved_at"]
    [same] = editor.approve([sha(1)], by="otro")  # already approved: nothing changes
    assert same["approved_by"] == "directora" and same["revision"] == approved["revision"]
    [withdrawn] = editor.withdraw([sha(1)], by="directora")
    assert withdrawn["approved"] is False
    assert [h["action"] for h in withdrawn["history"]] == ["approve", "withdraw"]


def test_old_records_read_with_editorial_defaults(tmp_path: Path) -> None:
    data = DataDir.at(tmp_path)
    old = Catalog(data, schema_version=1, migrations={})
    bare = {k: v for k, v in record(1).items() if k not in fields.ALL}
    old.upsert(FOLDER, [bare])
    [read] = Catalog(data).read_shard(FOLDER)
    assert read["caption"] == "" and read["tags"] == [] and read["approved"] is False
    Editor(data).edit(sha(1), {"caption": "x"}, by="ana")
    [edited] = Catalog(data).read_shard(FOLDER)
    assert edited["caption"] == "x" and edited["revision"] == 1 and edited["people"] == []


def test_an_import_meeting_an_item_again_keeps_its_edits(editor: Editor) -> None:
    editor.edit(sha(1), {"caption": "Escrito por Ana", "pick": "picked"}, by="ana")
    editor.catalog.upsert(FOLDER, [record(1)])  # a re-adopted copy, fresh defaults
    stored = {r["sha256"]: r for r in editor.catalog.read_shard(FOLDER)}[sha(1)]
    assert (stored["caption"], stored["pick"]) == ("Escrito por Ana", "picked")


EDITING_CHILD = textwrap.dedent("""
    import sys
    from appliance.datadir import DataDir
    from appliance.editorial import Editor
    editor = Editor(DataDir.at(sys.argv[1]))
    who, count = sys.argv[2], int(sys.argv[3])
    for i in range(count):
        editor.edit(sys.argv[4], {"add_tags": [f"{who}-{i}"]}, by=who)
""")


def test_two_processes_editing_one_item_lose_nothing(editor: Editor) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", EDITING_CHILD, str(editor.data.root),
                               who, "25", sha(1)], cwd=REPO) for who in ("ana", "luis")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    stored = {r["sha256"]: r for r in editor.catalog.read_shard(FOLDER)}[sha(1)]
    assert len(stored["tags"]) == 50 and stored["revision"] == 50
    logged = [e for e in EditLog(editor.data).entries([sha(1)])]
    assert len(logged) == 50


@pytest.mark.slow
def test_a_rebuilt_shard_gets_its_edits_back_from_the_log(config: Config,
                                                          tmp_path: Path) -> None:
    card = tmp_path / "card"
    card.mkdir()
    for i in range(3):
        exif_jpeg(card / f"IMG_{i}.JPG", "2026:05:10 10:00:00", color=(i * 60, 30, 30))
    assert run_cli("--data-dir", config.data_dir, "ingest", card).returncode == 0
    data = DataDir.at(config.data_dir)
    catalog = Catalog(data)
    [key] = catalog.folder_keys()
    items = catalog.read_shard(key)
    editor = Editor(data, catalog)
    editor.edit(items[0]["sha256"], {"caption": "Entrega de becas", "rating": 5}, by="ana")
    editor.edit(items[0]["sha256"], {"caption": "Entrega de becas 2026"}, by="luis")
    editor.approve([items[1]["sha256"]], by="directora")
    catalog.shard_path(key).write_bytes(b"\x00" * 100)  # the shard is lost
    repaired = run_cli("--data-dir", config.data_dir, "check", "--repair", "--json")
    assert repaired.returncode == 0, repaired.stderr.decode()
    rebuilt = {r["sha256"]: r for r in catalog.read_shard(key)}
    first, second = rebuilt[items[0]["sha256"]], rebuilt[items[1]["sha256"]]
    assert (first["caption"], first["rating"]) == ("Entrega de becas 2026", 5)
    assert [h["by"] for h in first["history"]] == ["ana", "luis"]
    assert second["approved"] is True and second["approved_by"] == "directora"
    listed = json.loads(run_cli("--data-dir", config.data_dir, "items", "--json").stdout)
    assert {i["sha256"]: i["caption"] for i in listed}[items[0]["sha256"]] == \
        "Entrega de becas 2026"


def test_a_shard_file_lost_whole_gets_its_edits_back_too(config: Config,
                                                         tmp_path: Path) -> None:
    """A shard file deleted (not damaged): `check --repair` adopted its folder's files as
    new items, and their captions and approvals, in the edit log all along, were lost."""
    card = tmp_path / "card"
    exif_jpeg(card / "IMG_0.JPG", "2026:05:10 10:00:00")
    assert run_cli("--data-dir", config.data_dir, "ingest", card).returncode == 0
    data = DataDir.at(config.data_dir)
    catalog = Catalog(data)
    [key] = catalog.folder_keys()
    [item] = catalog.read_shard(key)
    editor = Editor(data, catalog)
    editor.edit(item["sha256"], {"caption": "Entrega de becas"}, by="ana")
    editor.approve([item["sha256"]], by="directora")
    catalog.shard_path(key).unlink()
    repaired = run_cli("--data-dir", config.data_dir, "check", "--repair", "--json")
    assert repaired.returncode == 0, repaired.stdout.decode()
    [back] = catalog.read_shard(key)
    assert back["caption"] == "Entrega de becas" and back["approved"] is True, back


def test_an_entry_after_a_torn_line_is_kept(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A line cut short (a crash, a full disk mid-write) had the next edit glued to it, and
    replaying the log skipped both: a rebuilt shard lost an edit that had succeeded."""
    from appliance.datadir import DataDir

    data = DataDir.at(tmp_path / "data")
    data.ensure()
    log = EditLog(data)

    def entry(n: int) -> dict[str, object]:
        return {"at": "2026-11-27T01:00:00+00:00", "sha256": sha(n), "by": "dir1",
                "action": "edit", "changes": {"caption": [None, f"pie {n}"]}}

    log.append([entry(1)])
    with open(data.state / "edits" / "2026-11.jsonl", "ab") as fh:
        fh.write(b'{"at": "2026-11-27T01:00:00+00:00", "sha2')  # torn
    log.append([entry(2)])
    assert [e["sha256"] for e in log.entries()] == [sha(1), sha(2)]

    # A write the disk cut short leaves no half entry behind.
    real_write = os.write
    calls = []

    def short_then_full(fd: int, data_: bytes) -> int:
        calls.append(len(data_))
        if len(calls) == 1:
            return real_write(fd, bytes(data_[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(OSError):
        log.append([entry(3)])
    monkeypatch.undo()
    log.append([entry(4)])
    assert [e["sha256"] for e in log.entries()] == [sha(1), sha(2), sha(4)]
    text = (data.state / "edits" / "2026-11.jsonl").read_text()
    assert len(text.splitlines()) == 4 and text.endswith("\n")  # 1, the torn one, 2, 4


def test_a_record_keeps_its_newest_history_entries(editor: Editor) -> None:
    """Edited more than MAX_HISTORY times, a record's history kept every entry, and the hub
    refused the record (it takes at most MAX_HISTORY)."""
    from appliance import editorial

    original = editorial.MAX_HISTORY
    editorial.MAX_HISTORY = 5
    try:
        for n in range(8):
            editor.edit(sha(1), {"caption": f"pie {n}"}, by="dir1")
        record = editor.catalog.read_shard(editor.catalog.lookup(sha(1))["folder"])
        [mine] = [r for r in record if r["sha256"] == sha(1)]
        assert len(mine["history"]) == 5
        assert mine["history"][-1]["changes"]["caption"][1] == "pie 7"
    finally:
        editorial.MAX_HISTORY = original
