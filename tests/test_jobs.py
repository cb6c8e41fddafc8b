"""The durable job queue: order, leases, retries, parking, damage, and real concurrency."""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest

from appliance import jobs as jobs_mod
from appliance import storage
from appliance.datadir import DataDir
from appliance.jobs import Job, JobNotFound, JobQueue, JobRequest, LeaseLost
from appliance.storage import CorruptStateError
from tests.conftest import REPO, run_cli

T0 = datetime(2024, 6, 15, 12, 0, tzinfo=UTC).timestamp()
DAY = 86400.0
WAIT_S = 20.0  # the longest any test waits for a process or a condition
T = TypeVar("T")


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def sha(n: int | str) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def data(data_dir: Path) -> DataDir:
    return DataDir.at(data_dir)


@pytest.fixture
def queue(data: DataDir, clock: FakeClock) -> JobQueue:
    return JobQueue(data, clock=clock)


def jobs_root(data: DataDir) -> Path:
    return data.state / "jobs"


def drain(queue: JobQueue, owner: str = "w", **kwargs: object) -> list[Job]:
    """Claim and complete until nothing is ready; the jobs in the order they were claimed."""
    done = []
    for _ in range(10_000):
        job = queue.claim(owner, 60, **kwargs)  # type: ignore[arg-type]
        if job is None:
            return done
        queue.complete(job)
        done.append(job)
    raise AssertionError("the queue never ran dry")


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Counter[Path]:
    """Counts durable writes per file (shards, parked.json and key files)."""
    counter: Counter[Path] = Counter()

    def counting(real: Callable[..., None]) -> Callable[..., None]:
        def write(path: os.PathLike[str], *args: object, **kwargs: object) -> None:
            counter[Path(path)] += 1
            real(path, *args, **kwargs)
        return write

    def counting_many(files: dict[Path, bytes], tmp_dir: os.PathLike[str]) -> None:
        counter.update(Path(path) for path in files)
        real_many(files, tmp_dir)

    real_many = jobs_mod.atomic_write_many
    monkeypatch.setattr(storage, "atomic_write", counting(storage.atomic_write))
    monkeypatch.setattr(jobs_mod, "atomic_write", counting(jobs_mod.atomic_write))
    monkeypatch.setattr(jobs_mod, "atomic_write_many", counting_many)
    return counter


def poll(produce: Callable[[], T | None], what: str, timeout: float = WAIT_S) -> T:
    """The first result of `produce` that is not None, tried every 10 ms until `timeout`."""
    deadline = time.monotonic() + timeout
    while (result := produce()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return result


def wait_for(condition: Callable[[], bool], what: str) -> None:
    poll(lambda: True if condition() else None, what)


# -- enqueue ------------------------------------------------------------------------------


def test_enqueue_stores_a_job_in_its_priority_day_and_kind_shard(queue: JobQueue,
                                                                  data: DataDir) -> None:
    job = queue.enqueue("thumb", sha(1), 10, order=T0)
    assert (job.kind, job.item, job.priority, job.order) == ("thumb", sha(1), 10, T0)
    assert (job.state, job.attempts, job.max_attempts, job.lease_owner) == ("queued", 0, 3, None)
    assert len(job.id) == 32 and job.created_at == T0
    assert job.shard == "10/20240615.thumb.0.json"
    shard = jobs_root(data) / job.shard
    rows = storage.snapshot(shard).table("jobs").all()  # a plain TinyDB file
    assert [Job.from_record(r) for r in rows] == [job]
    assert job.to_record()["id"] == job.id and "shard" not in job.to_record()


def test_enqueue_is_idempotent_while_queued_or_running(queue: JobQueue) -> None:
    first = queue.enqueue("thumb", sha(1), 10, order=T0)
    assert queue.enqueue("thumb", sha(1), 10, order=T0).id == first.id
    assert queue.enqueue("thumb", sha(1), 20, order=T0 + DAY).id == first.id  # wherever it is
    assert queue.enqueue("preview", sha(1), 20).id != first.id
    running = queue.claim("w", 60, kinds={"thumb"})
    assert running is not None and running.id == first.id
    again = queue.enqueue("thumb", sha(1), 10, order=T0)
    assert (again.id, again.state) == (first.id, "running")
    queue.complete(running)
    assert queue.enqueue("thumb", sha(1), 10, order=T0).id != first.id  # done: a new job


@pytest.fixture
def small_shards(monkeypatch: pytest.MonkeyPatch) -> int:
    """Fifty jobs per shard: the parts of a busy day without thousands of jobs."""
    monkeypatch.setattr(jobs_mod, "SHARD_CAP", 50)
    return 50


def test_enqueue_many_dedupes_and_writes_each_shard_once(queue: JobQueue, data: DataDir,
                                                         writes: Counter[Path],
                                                         small_shards: int) -> None:
    requests = [JobRequest("thumb", sha(i), 10, order=T0 + i) for i in range(110)]
    requests.append(JobRequest("thumb", sha(7), 10, order=T0))  # twice in one batch
    made = queue.enqueue_many(requests)
    assert len(made) == 111 and made[-1] is made[7]
    root = jobs_root(data)
    shards = sorted(p for p in writes if p.parent.name == "10")
    assert [p.name for p in shards] == [f"20240615.thumb.{n}.json" for n in range(3)]
    assert all(writes[p] == 1 for p in writes), "a file was written more than once"
    assert {p.parent for p in writes} == {root / "10", root / "keys"}
    sizes = [len(storage.snapshot(p).table("jobs")) for p in shards]
    assert sizes == [50, 50, 10]
    assert [j.shard for j in made[:110:50]] == [p.relative_to(root).as_posix() for p in shards]
    writes.clear()
    assert [j.id for j in queue.enqueue_many(requests)] == [j.id for j in made]
    assert not writes, "a repeated batch must write nothing"


def test_a_crash_between_key_file_and_shard_leaves_no_duplicate(
        queue: JobQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(jobs: list[Job]) -> None:
        raise OSError("power cut")

    with monkeypatch.context() as patch:
        patch.setattr(queue, "_insert", crash)
        with pytest.raises(OSError, match="power cut"):
            queue.enqueue("thumb", sha(1), 10, order=T0)
    assert queue.jobs() == []  # the key entry alone is stale, not a job
    job = queue.enqueue("thumb", sha(1), 10, order=T0)
    assert queue.enqueue("thumb", sha(1), 10, order=T0).id == job.id
    assert [j.id for j in queue.jobs()] == [job.id]


@pytest.mark.parametrize(
    ("kind", "item", "priority", "match"),
    [("Thumb", sha(1), 10, "kind"), ("a/b", sha(1), 10, "kind"), ("thumb", "abc", 10, "SHA"),
     ("thumb", sha(1).upper(), 10, "SHA"), ("thumb", sha(1), 100, "priority"),
     ("thumb", sha(1), True, "priority")],
)
def test_enqueue_refuses_bad_values(queue: JobQueue, kind: str, item: str, priority: int,
                                    match: str) -> None:
    with pytest.raises(ValueError, match=match):
        queue.enqueue(kind, item, priority)


# -- order --------------------------------------------------------------------------------


def test_claim_order_is_priority_then_newest_first(queue: JobQueue, clock: FakeClock) -> None:
    queue.enqueue("proxy", sha("v"), 50, order=T0 + 5 * DAY)
    queue.enqueue("preview", sha("p"), 20, order=T0 + 4 * DAY)
    queue.enqueue("thumb", sha("old"), 10, order=T0 - 300 * DAY)
    queue.enqueue("thumb", sha("morning"), 10, order=T0 - 3600)
    queue.enqueue("thumb", sha("noon"), 10, order=T0)
    queue.enqueue("thumb", sha("tomorrow"), 10, order=T0 + DAY)
    clock.advance(10)
    queue.enqueue("thumb", sha("no-order"), 10)  # order = the enqueue time, T0 + 10 s
    queue.enqueue("waveform", sha("a"), 40, order=T0)
    claimed = [(j.kind, j.item) for j in drain(queue)]
    assert claimed == [
        ("thumb", sha("tomorrow")), ("thumb", sha("no-order")), ("thumb", sha("noon")),
        ("thumb", sha("morning")), ("thumb", sha("old")), ("preview", sha("p")),
        ("waveform", sha("a")), ("proxy", sha("v")),
    ]


def test_newest_first_across_the_parts_of_a_busy_day(queue: JobQueue,
                                                      small_shards: int) -> None:
    queue.enqueue_many(JobRequest("thumb", sha(i), 10, order=T0 + i) for i in range(120))
    queue.enqueue("thumb", sha("late"), 10, order=T0 + 500)  # into the last part
    first = [queue.claim("w", 60) for _ in range(3)]
    assert [j.order - T0 for j in first if j is not None] == [500, 119, 118]


def test_claim_by_kinds(queue: JobQueue) -> None:
    queue.enqueue("thumb", sha(1), 10)
    queue.enqueue("proxy", sha(1), 50)
    queue.enqueue("waveform", sha(2), 40)
    assert queue.claim("w", 60, kinds=set()) is None
    job = queue.claim("w", 60, kinds={"proxy", "waveform"})
    assert job is not None and job.kind == "waveform"
    with pytest.raises(TypeError):
        queue.claim("w", 60, kinds="thumb")


# -- leases -------------------------------------------------------------------------------


def test_a_claimed_job_is_leased_and_not_claimed_again(queue: JobQueue,
                                                       clock: FakeClock) -> None:
    queue.enqueue("thumb", sha(1), 10)
    job = queue.claim("worker-a", 30)
    assert job is not None
    assert (job.state, job.lease_owner, job.lease_expires) == ("running", "worker-a", T0 + 30)
    assert job.lease_token
    assert queue.claim("worker-b", 30) is None
    clock.advance(20)
    assert queue.renew(job, 30)
    clock.advance(20)  # 40 s after the claim, 20 after the renewal
    assert queue.claim("worker-b", 30) is None
    assert queue.jobs("running")[0].lease_expires == T0 + 50


def test_an_expired_lease_comes_back_and_the_zombie_records_nothing(
        queue: JobQueue, clock: FakeClock) -> None:
    queue.enqueue("thumb", sha(1), 10)
    zombie = queue.claim("worker-a", 30)
    assert zombie is not None
    clock.advance(31)
    taker = queue.claim("worker-b", 30)
    assert taker is not None and taker.id == zombie.id
    assert (taker.lost_leases, taker.attempts, taker.lease_owner) == (1, 0, "worker-b")
    assert not queue.renew(zombie, 30)
    assert not queue.progress(zombie, 50)
    with pytest.raises(LeaseLost):
        queue.complete(zombie)
    with pytest.raises(LeaseLost):
        queue.fail(zombie, "boom")
    queue.complete(taker)
    assert queue.counts()["thumb"] == {"queued": 0, "running": 0, "done": 1, "parked": 0}


def test_the_same_owner_name_after_a_restart_is_still_a_new_lease(queue: JobQueue,
                                                                   clock: FakeClock) -> None:
    queue.enqueue("thumb", sha(1), 10)
    before = queue.claim("worker-1", 30)
    clock.advance(31)
    after = queue.claim("worker-1", 30)
    assert before is not None and after is not None and before.lease_token != after.lease_token
    with pytest.raises(LeaseLost):
        queue.complete(before)


def test_a_job_that_keeps_killing_its_worker_is_parked(queue: JobQueue,
                                                       clock: FakeClock) -> None:
    queue.enqueue("proxy", sha(1), 50)
    for lost in range(jobs_mod.MAX_LOST_LEASES):
        job = queue.claim("w", 10)
        assert job is not None and job.lost_leases == lost and job.attempts == 0
        clock.advance(11)  # the worker died: its lease runs out
    assert queue.claim("w", 10) is None
    [parked] = queue.parked()
    assert parked.state == "parked" and parked.lost_leases == jobs_mod.MAX_LOST_LEASES
    assert parked.error is not None and "worker died 5 times" in parked.error
    assert queue.counts()["proxy"]["parked"] == 1
    assert queue.enqueue("proxy", sha(1), 50).id != parked.id  # a new job replaces it
    assert queue.parked() == []


def test_progress_writes_at_most_once_a_second(queue: JobQueue, clock: FakeClock,
                                               writes: Counter[Path]) -> None:
    queue.enqueue("proxy", sha(1), 50)
    job = queue.claim("w", 60)
    assert job is not None
    writes.clear()
    for step in range(4):  # four reports in 0.75 s
        assert queue.progress(job, step * 5.0)
        clock.advance(0.25)
    assert sum(writes.values()) == 1
    assert queue.progress(job, 60.0)
    assert sum(writes.values()) == 2
    assert queue.jobs("running")[0].progress == 60.0
    with pytest.raises(ValueError):
        queue.progress(job, 101)
    with pytest.raises(ValueError):
        queue.progress(job, float("nan"))


# -- failures -----------------------------------------------------------------------------


def test_failures_back_off_then_park_with_the_last_errors(queue: JobQueue,
                                                         clock: FakeClock) -> None:
    queue.enqueue("preview", sha(1), 20, max_attempts=4)
    for attempt in range(1, 4):
        job = queue.claim("w", 60)
        assert job is not None and job.attempts == attempt - 1
        failed = queue.fail(job, f"error {attempt}")
        assert (failed.state, failed.attempts) == ("queued", attempt)
        assert failed.not_before == clock.now + 2 ** attempt
        clock.advance(2 ** attempt - 0.5)
        assert queue.claim("w", 60) is None  # still backing off
        clock.advance(0.5)
    job = queue.claim("w", 60)
    assert job is not None
    parked = queue.fail(job, "x" * 10_000)
    assert parked.state == "parked" and parked.attempts == 4
    assert [p.id for p in queue.parked()] == [job.id]
    stored = queue.parked()[0]
    assert stored.error is not None and len(stored.error) == jobs_mod.MAX_ERROR_CHARS
    assert [e["error"] for e in stored.errors][:2] == ["error 2", "error 3"]
    assert len(stored.errors) == 3
    assert queue.jobs("queued") == [] and queue.claim("w", 60) is None
    assert queue.enqueue("preview", sha(2), 20).id  # other jobs are not held up


def test_retry_unparks_one_or_all(queue: JobQueue) -> None:
    for n in range(3):
        queue.enqueue("thumb", sha(n), 10, max_attempts=1)
    for _ in range(3):
        job = queue.claim("w", 60)
        assert job is not None
        queue.fail(job, "decoder crashed")
    parked = queue.parked()
    assert len(parked) == 3 and queue.counts()["thumb"]["parked"] == 3
    with pytest.raises(JobNotFound):
        queue.retry("0" * 32)
    [one] = queue.retry(parked[0].id)
    assert (one.id, one.state, one.attempts, one.error) == (
        parked[0].id, "queued", 0, "decoder crashed")
    assert len(queue.parked()) == 2
    assert {j.id for j in queue.retry()} == {j.id for j in parked[1:]}
    assert queue.parked() == []
    assert {j.id for j in drain(queue)} == {j.id for j in parked}



def test_cli_retries_a_parked_job_by_the_id_it_lists(queue: JobQueue, data: DataDir) -> None:
    """`acopio jobs` shows 8 characters of an id: `--retry` takes them; an unknown or
    ambiguous id is a usage error with a message, never a traceback."""
    for n in range(2):
        queue.enqueue("thumb", sha(n), 10, max_attempts=1)
        job = queue.claim("w", 60)
        assert job is not None
        queue.fail(job, "decoder crashed")
    first, second = queue.parked()
    listed = run_cli("--data-dir", data.root, "jobs").stdout.decode()
    assert f"{first.id[:8]}  thumb" in listed
    retried = run_cli("--data-dir", data.root, "jobs", "--retry", first.id[:8])
    assert retried.returncode == 0 and b"1 jobs back in the queue" in retried.stdout
    assert [j.id for j in queue.parked()] == [second.id]
    for wrong, message in (("zzzz", b"no parked job zzzz"), (first.id, b"no parked job")):
        refused = run_cli("--data-dir", data.root, "jobs", "--retry", wrong)
        assert refused.returncode == 2 and message in refused.stderr
        assert b"Traceback" not in refused.stderr


# -- completion, listing, cancelling ------------------------------------------------------


def test_done_jobs_leave_the_queue_and_their_empty_shard_and_lock(queue: JobQueue,
                                                                   data: DataDir) -> None:
    queue.enqueue("thumb", sha(1), 10, order=T0)
    queue.enqueue("thumb", sha(2), 10, order=T0 - DAY)
    assert len(drain(queue)) == 2
    folder = jobs_root(data) / "10"
    assert sorted(p.name for p in folder.iterdir()) == [".gate"]
    assert queue.counts() == {"thumb": {"queued": 0, "running": 0, "done": 2, "parked": 0}}
    assert queue.jobs() == []


def test_counts_and_jobs_by_state(queue: JobQueue) -> None:
    queue.enqueue("thumb", sha(1), 10)
    queue.enqueue("thumb", sha(2), 10)
    queue.enqueue("proxy", sha(1), 50, max_attempts=1)
    running = queue.claim("w", 60)
    assert running is not None
    proxy = queue.claim("w", 60, kinds={"proxy"})
    assert proxy is not None
    queue.fail(proxy, "no moov atom")
    assert queue.counts() == {
        "proxy": {"queued": 0, "running": 0, "done": 0, "parked": 1},
        "thumb": {"queued": 1, "running": 1, "done": 0, "parked": 0},
    }
    assert [j.id for j in queue.jobs("running")] == [running.id]
    assert [j.kind for j in queue.jobs()] == ["thumb", "thumb", "proxy"]
    assert [j.state for j in queue.jobs()][-1] == "parked"
    assert json.dumps([j.to_record() for j in queue.jobs()])
    with pytest.raises(ValueError, match="only counted"):
        queue.jobs("done")


def test_cancel_for_drops_queued_and_parked_jobs_of_an_item(queue: JobQueue) -> None:
    item, other = sha(1), sha(2)
    queue.enqueue("proxy", item, 50, max_attempts=1)
    failing = queue.claim("w", 60)
    assert failing is not None
    queue.fail(failing, "broken")
    queue.enqueue("preview", item, 20)
    running = queue.claim("w", 60)
    assert running is not None and running.kind == "preview"
    thumb = queue.enqueue("thumb", item, 10)
    kept = queue.enqueue("thumb", other, 10)
    dropped = queue.cancel_for(item)
    assert sorted(j.kind for j in dropped) == ["proxy", "thumb"]
    assert {j.id for j in queue.jobs()} == {running.id, kept.id}
    assert queue.enqueue("preview", item, 20).id == running.id  # still running, still known
    assert queue.enqueue("thumb", item, 10).id != thumb.id


# -- damage -------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"\x00" * 512, b'{"jobs": {"1": ', b'{"jobs": [1]}',
                                     b'{"jobs": {"1": {"id": "x"}}}'])
def test_a_damaged_shard_is_an_error_until_repaired(queue: JobQueue, data: DataDir,
                                                    content: bytes) -> None:
    lost = queue.enqueue("thumb", sha(1), 10, order=T0)
    kept = queue.enqueue("thumb", sha(2), 10, order=T0 - DAY)
    shard = jobs_root(data) / lost.shard
    shard.write_bytes(content)
    for attempt in (lambda: queue.claim("w", 60), queue.jobs, queue.counts,
                    lambda: queue.enqueue("thumb", sha(1), 10)):
        with pytest.raises(CorruptStateError) as caught:
            attempt()
        assert caught.value.path == shard
    assert shard.read_bytes() == content  # never overwritten
    [moved] = queue.repair()
    assert moved.path == shard and moved.aside.read_bytes() == content
    assert not shard.exists() and not Path(f"{shard}.lock").exists()
    assert queue.repair() == []
    again = queue.enqueue("thumb", sha(1), 10, order=T0)  # the caller re-creates lost jobs
    assert again.id != lost.id
    assert queue.enqueue("thumb", sha(2), 10).id == kept.id
    assert [j.id for j in drain(queue)] == [again.id, kept.id]


def test_a_damaged_key_file_is_rebuilt_from_the_shards(queue: JobQueue, data: DataDir) -> None:
    job = queue.enqueue("thumb", sha(1), 10)
    key_file = jobs_root(data) / "keys" / f"{sha(1)[:2]}.json"
    key_file.write_bytes(b"\x00" * 100)
    with pytest.raises(CorruptStateError):
        queue.enqueue("thumb", sha(1), 10)
    [moved] = queue.repair()
    assert moved.path == key_file
    assert queue.enqueue("thumb", sha(1), 10).id == job.id


def test_a_damaged_parked_file_is_moved_aside(queue: JobQueue, data: DataDir) -> None:
    parked_file = jobs_root(data) / "parked.json"
    parked_file.parent.mkdir(parents=True)
    parked_file.write_bytes(b"not json")
    with pytest.raises(CorruptStateError):
        queue.parked()
    [moved] = queue.repair()
    assert moved.path == parked_file and queue.parked() == []


# -- concurrency --------------------------------------------------------------------------

WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from appliance.datadir import DataDir
    from appliance.jobs import JobQueue

    root, owner, out, go = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    queue = JobQueue(DataDir.at(root))
    out.write_text("")
    deadline = time.monotonic() + 20
    while not go.exists():
        if time.monotonic() > deadline:
            sys.exit("no go signal")
        time.sleep(0.005)
    with out.open("a") as done:
        while time.monotonic() < deadline:
            job = queue.claim(owner, 30)
            if job is None:
                break
            queue.complete(job)
            done.write(job.id + "\\n")
            done.flush()
""")


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def start_workers(script: str, count: int, data: DataDir, tmp_path: Path,
                  go: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    for n in range(count):
        out = tmp_path / f"worker-{n}.done"
        proc = subprocess.Popen([sys.executable, "-c", script, str(data.root), f"worker-{n}",
                                 str(out), str(go)], env=child_env())
        yield proc, out


def test_worker_processes_do_every_job_exactly_once(data: DataDir, tmp_path: Path) -> None:
    queue = JobQueue(data)
    requests = [JobRequest(kind, sha(i), priority, order=T0 + (i % 3) * DAY + i)
                for i in range(150) for kind, priority in (("thumb", 10), ("preview", 20))]
    wanted = {j.id for j in queue.enqueue_many(requests)}
    assert len(wanted) == 300
    go = tmp_path / "go"
    workers = list(start_workers(WORKER, 4, data, tmp_path, go))
    try:
        wait_for(lambda: all(out.exists() for _, out in workers), "the workers to start")
        go.touch()
        assert [proc.wait(timeout=WAIT_S) for proc, _ in workers] == [0, 0, 0, 0]
    finally:
        for proc, _ in workers:
            proc.kill()
    done = [line for _, out in workers for line in out.read_text().split()]
    assert len(done) == len(set(done)), "a job was done twice"
    assert set(done) == wanted
    assert sum(1 for _, out in workers if out.read_text()) >= 2, "no concurrency happened"
    assert queue.jobs() == []
    assert queue.counts() == {k: {"queued": 0, "running": 0, "done": 150, "parked": 0}
                              for k in ("preview", "thumb")}


ENQUEUER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from appliance.datadir import DataDir
    from appliance.jobs import JobQueue, JobRequest

    root, owner, out, go = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    queue = JobQueue(DataDir.at(root))
    out.write_text("")
    deadline = time.monotonic() + 20
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    items = [str(n).rjust(64, "0") for n in range(60)]
    if owner.endswith("0"):  # one by one, the others in batches
        made = [queue.enqueue("thumb", item, 10) for item in items]
    else:
        made = queue.enqueue_many(JobRequest("thumb", item, 10) for item in items)
    out.write_text("\\n".join(job.id for job in made))
""")


def test_concurrent_enqueues_of_the_same_items_make_one_job_each(data: DataDir,
                                                                 tmp_path: Path) -> None:
    go = tmp_path / "go"
    workers = list(start_workers(ENQUEUER, 3, data, tmp_path, go))
    try:
        wait_for(lambda: all(out.exists() for _, out in workers), "the enqueuers to start")
        go.touch()
        assert [proc.wait(timeout=WAIT_S) for proc, _ in workers] == [0, 0, 0]
    finally:
        for proc, _ in workers:
            proc.kill()
    seen = [out.read_text().split() for _, out in workers]
    assert seen[0] == seen[1] == seen[2] and len(set(seen[0])) == 60
    assert len(JobQueue(data).jobs()) == 60


def test_worker_threads_do_every_job_exactly_once(data: DataDir) -> None:
    queue = JobQueue(data)
    wanted = {j.id for j in queue.enqueue_many(
        JobRequest("thumb", sha(i), 10, order=T0 + i) for i in range(120))}
    done: list[list[str]] = [[] for _ in range(4)]

    def work(n: int) -> None:
        while (job := queue.claim(f"thread-{n}", 30)) is not None:
            queue.complete(job)
            done[n].append(job.id)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT_S)
    assert not any(t.is_alive() for t in threads)
    every = [job_id for ids in done for job_id in ids]
    assert len(every) == len(set(every)) and set(every) == wanted


HOLDER = textwrap.dedent("""
    import json, sys, time
    from appliance.datadir import DataDir
    from appliance.jobs import JobQueue

    queue = JobQueue(DataDir.at(sys.argv[1]))
    job = queue.claim("doomed", float(sys.argv[2]))
    record = {**job.to_record(), "shard": job.shard}
    print(json.dumps(record), flush=True)
    time.sleep(60)  # "transcoding": killed before it ends
""")


def test_kill_9_of_a_worker_holding_a_lease(data: DataDir) -> None:
    queue = JobQueue(data)
    queued = queue.enqueue("proxy", sha(1), 50)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(data.root), "2.0"],
                              env=child_env(), stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        readable, _, _ = select.select([holder.stdout], [], [], WAIT_S)
        assert readable, "the worker never claimed its job"
        record = json.loads(holder.stdout.readline())
        assert record["id"] == queued.id and record["lease_owner"] == "doomed"
        os.kill(holder.pid, signal.SIGKILL)
        assert holder.wait(timeout=WAIT_S) == -signal.SIGKILL
    finally:
        holder.kill()
        if holder.stdout is not None:
            holder.stdout.close()
    zombie = Job.from_record(record, record["shard"])
    if time.time() < record["lease_expires"] - 1.0:
        assert queue.claim("survivor", 30) is None  # the lease still runs
    job = poll(lambda: queue.claim("survivor", 30), "the lease to expire", timeout=10)
    assert job.id == queued.id and job.lease_owner == "survivor"
    assert (job.lost_leases, job.attempts) == (1, 0)  # not the job's fault
    with pytest.raises(LeaseLost):
        queue.complete(zombie)
    queue.complete(job)
    assert queue.counts()["proxy"]["done"] == 1
