from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from appliance import storage
from appliance.fsutil import TEMP_PREFIX, atomic_write, atomic_write_many
from appliance.storage import CorruptStateError
from tests.conftest import REPO, require_tool


def test_atomic_write_replaces_whole_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "state" / "x.json"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]


# A batch of 40 files over two folders, half of them existing: written by a child process
# so that strace sees (and can kill) it.
_MANY = textwrap.dedent("""
    import sys
    from pathlib import Path
    from appliance.fsutil import atomic_write_many
    root = Path(sys.argv[1])
    files = {root / f"d{i % 2}" / f"{i:02d}.json": b"new %02d " % i * 300 for i in range(40)}
    atomic_write_many(files, root / "tmp")
""")


def _old_batch(root: Path) -> None:
    for i in range(0, 40, 2):
        atomic_write(root / f"d{i % 2}" / f"{i:02d}.json", b"old %02d " % i * 300)


def test_atomic_write_many_flushes_every_file_before_any_rename(tmp_path: Path) -> None:
    """The order that makes a batch as safe as one `atomic_write` per file across a power
    cut: all the data durable (one syncfs), then the renames, then each folder once."""
    strace = require_tool("strace")
    _old_batch(tmp_path)
    log = tmp_path / "strace.log"
    subprocess.run([strace, "-f", "-qq", "-o", str(log), "-e",
                    "trace=fsync,fdatasync,syncfs,rename,renameat,renameat2",
                    sys.executable, "-c", _MANY, str(tmp_path)], cwd=REPO, check=True)
    calls = [line.split(None, 1)[1].split("(")[0] for line in log.read_text().splitlines()
             if "(" in line and "resumed" not in line]
    calls = ["rename" if c.startswith("rename") else c for c in calls]
    assert calls == ["syncfs"] + ["rename"] * 40 + ["fsync"] * 2, calls
    for i in range(40):
        assert (tmp_path / f"d{i % 2}" / f"{i:02d}.json").read_bytes() == b"new %02d " % i * 300
    assert not list(tmp_path.rglob(TEMP_PREFIX + "*"))


@pytest.mark.parametrize("when", [1, 17, 40])
def test_atomic_write_many_killed_mid_batch_leaves_each_file_old_or_new(tmp_path: Path,
                                                                       when: int) -> None:
    strace = require_tool("strace")
    _old_batch(tmp_path)
    killed = subprocess.run(
        [strace, "-f", "-qq", "-o", "/dev/null", "-e", "trace=rename,renameat,renameat2",
         "-e", f"inject=rename,renameat,renameat2:signal=SIGKILL:when={when}",
         sys.executable, "-c", _MANY, str(tmp_path)], cwd=REPO)
    assert killed.returncode != 0
    renamed = 0
    for i in range(40):
        path = tmp_path / f"d{i % 2}" / f"{i:02d}.json"
        content = path.read_bytes() if path.exists() else None
        assert content in (b"new %02d " % i * 300, b"old %02d " % i * 300 if i % 2 == 0
                           else None), (path, content)
        renamed += content == b"new %02d " % i * 300
    assert renamed == when - 1  # killed at the when-th rename, before it ran


def test_atomic_write_many_of_one_file_is_atomic_write(tmp_path: Path) -> None:
    target = tmp_path / "a" / "x.json"
    atomic_write_many({target: b"one"}, tmp_path / "tmp")
    atomic_write_many({}, tmp_path / "tmp")
    assert target.read_bytes() == b"one"


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


def test_a_sweep_never_takes_a_live_temp_file(tmp_path: Path) -> None:
    """Every import sweeps state/tmp for a dead writer's temp files while other threads and
    processes write through it (devices.json, catalog shards, the job queue). A temp file
    was unlocked just before its rename, and between its creation and its flock: a sweep
    there removed it, and the write failed (FileNotFoundError, or EAGAIN on the flock)."""
    import threading

    from appliance.fsutil import remove_debris

    tmp_dir = tmp_path / "tmp"
    tmp_dir.mkdir()
    stop = threading.Event()
    errors: list[BaseException] = []

    def sweep() -> None:
        while not stop.is_set():
            remove_debris(tmp_dir)

    sweepers = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in sweepers:
        thread.start()
    try:
        for i in range(2000):
            try:
                atomic_write(tmp_path / f"f{i % 7}.json", b"%d" % i, tmp_dir, durable=False)
                if i % 100 == 0:
                    atomic_write_many({tmp_path / f"m{j}.json": b"%d" % i for j in range(5)},
                                      tmp_dir)
            except OSError as exc:
                errors.append(exc)
    finally:
        stop.set()
        for thread in sweepers:
            thread.join()
    assert not errors, f"{len(errors)} writes failed, first: {errors[0]!r}"
    assert (tmp_path / f"f{1999 % 7}.json").read_bytes() == b"1999"
    assert not list(tmp_dir.iterdir())


def test_a_key_index_is_read_on_from_where_a_pass_stopped(tmp_path: Path) -> None:
    """The kit's audit asks the hub about a thousand acknowledgements a round, going on in
    order from the last one asked: only the folders still ahead are read."""
    import hashlib

    from appliance.keyindex import KeyIndex

    index = KeyIndex(tmp_path / "index", tmp_path)
    keys = sorted(hashlib.sha256(str(i).encode()).hexdigest() for i in range(300))
    index.put_many({k: {"n": 1} for k in keys})
    assert list(index.keys()) == keys
    assert list(index.keys_after(keys[99])) == keys[100:]
    assert list(index.keys_after(keys[-1])) == []
    halfway = keys[150][:2] + "0" * 62  # a key that is not in the index
    assert list(index.keys_after(halfway)) == [k for k in keys if k > halfway]
