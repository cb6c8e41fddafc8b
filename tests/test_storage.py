from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from appliance import storage
from appliance.fsutil import TEMP_PREFIX, atomic_write
from appliance.storage import CorruptStateError
from tests.conftest import REPO


def test_atomic_write_replaces_whole_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "state" / "x.json"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty"), (b"\x00" * 4096, "NUL"), (b'{"items": {"1": ', "not valid JSON"),
     (b"[1, 2]", "JSON object"), (b"\xff\xfe{}", "not valid JSON")],
)
def test_damage_is_an_error_never_an_empty_database(tmp_path: Path, content: bytes,
                                                     reason: str) -> None:
    path = tmp_path / "shard.json"
    path.write_bytes(content)
    with pytest.raises(CorruptStateError, match=reason):
        storage.snapshot(path).table("items").all()
    with pytest.raises(CorruptStateError), storage.transaction(path) as db:
        db.table("items").insert({"a": 1})
    assert path.read_bytes() == content  # never overwritten


def test_transaction_writes_once_and_rolls_back_on_error(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    with storage.transaction(path) as db:
        for i in range(50):
            db.table("items").insert({"n": i})
    assert len(storage.snapshot(path).table("items")) == 50
    with pytest.raises(RuntimeError), storage.transaction(path) as db:
        db.table("items").truncate()
        raise RuntimeError("boom")
    assert len(storage.snapshot(path).table("items")) == 50


def test_snapshot_is_read_only(tmp_path: Path) -> None:
    db = storage.snapshot(tmp_path / "s.json")
    with pytest.raises(RuntimeError, match="read-only"):
        db.table("items").insert({"a": 1})


WRITER = textwrap.dedent("""
    import sys
    from appliance import storage
    path, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for i in range(count):
        with storage.transaction(path) as db:
            table = db.table("items")
            table.insert({"writer": tag, "n": i})
            counter = db.table("counter")
            row = counter.get(doc_id=1)
            if row is None:
                counter.insert({"value": 1})
            else:
                counter.update({"value": row["value"] + 1}, doc_ids=[1])
""")


def test_two_real_processes_writing_one_shard_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "shard.json"
    count = 150
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag, str(count)], env=env)
        for tag in ("a", "b")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    db = storage.snapshot(path)
    rows = db.table("items").all()
    assert len(rows) == 2 * count
    assert {(r["writer"], r["n"]) for r in rows} == {
        (t, i) for t in ("a", "b") for i in range(count)
    }
    assert db.table("counter").get(doc_id=1)["value"] == 2 * count
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]
