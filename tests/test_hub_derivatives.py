"""The hub queues the derivatives of kept files in batches (sync.hub.derivatives): many
files, few durable writes; nothing lost when the job queue refuses a batch for a while."""

from __future__ import annotations

import errno
import hashlib
import time
from pathlib import Path
from typing import Any

import pytest

from appliance.datadir import DataDir
from appliance.jobs import JobQueue
from ingest.derive import plan
from sync.hub import derivatives
from sync.hub.derivatives import DerivativeBatcher


def photo(n: int) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(str(n).encode()).hexdigest(), "kind": "photo",
            "captured_at": f"2026-11-10T10:{n % 60:02d}:00-06:00", "size": 1}


def queued(data: DataDir) -> set[tuple[str, str]]:
    return {(job.item, job.kind) for job in JobQueue(data).jobs()}


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def data(data_dir: Path) -> DataDir:
    data = DataDir.at(data_dir)
    data.ensure()
    return data


def test_many_files_few_writes(data: DataDir, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = plan.enqueue
    monkeypatch.setattr(plan, "enqueue", lambda d, items: (calls.append(len(items)),
                                                            real(d, items))[1])
    batcher = DerivativeBatcher(data, gather_s=0.3)
    records = [photo(n) for n in range(60)]
    for record in records:
        batcher.add(record)
    want = {(r["sha256"], kind) for r in records for kind in ("thumb", "preview")}
    wait_for(lambda: queued(data) == want)
    assert sum(calls) == 60 and len(calls) <= 3, calls  # batches, not one write per file
    batcher.add(records[0])  # already queued: not queued twice
    batcher.close()
    assert len(JobQueue(data).jobs()) == 120


def test_a_refused_batch_is_tried_again(data: DataDir, monkeypatch: pytest.MonkeyPatch,
                                        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(derivatives, "RETRY_S", 0.2)
    real = plan.enqueue
    refusals = {"left": 2}

    def full_disk(d: DataDir, items: list[dict[str, Any]]) -> None:
        if refusals["left"]:
            refusals["left"] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        real(d, items)

    monkeypatch.setattr(plan, "enqueue", full_disk)
    batcher = DerivativeBatcher(data, gather_s=0.05)
    records = [photo(n) for n in range(5)]
    for record in records:
        batcher.add(record)
    wait_for(lambda: len(queued(data)) == 10)
    assert refusals["left"] == 0
    assert "could not queue the derivatives of 5 kept files" in caplog.text
    batcher.close()


def test_close_queues_what_was_gathered(data: DataDir) -> None:
    batcher = DerivativeBatcher(data, gather_s=30)  # would wait long: close does not
    batcher.add(photo(1))
    started = time.monotonic()
    batcher.close()
    assert time.monotonic() - started < 5
    assert queued(data) == {(photo(1)["sha256"], "thumb"), (photo(1)["sha256"], "preview")}
    batcher.add(photo(2))  # after close: queued at once
    assert len(queued(data)) == 4
