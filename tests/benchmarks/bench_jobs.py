"""How long the job queue's enqueue and claim take with 100,000 jobs queued.

Why: a rebuild (`acopio derive --rebuild`) queues a job per item and kind, and design
decision 3 says no state file may grow with the archive: a claim must cost the same with
100,000 jobs queued as with ten. This fills a fresh queue through `JobQueue.enqueue_many`, then
times, with the queue full, single enqueues (new and already queued keys), claims, completes,
claims filtered by kind, and the listing calls the UI makes (`counts`, `jobs`). Two layouts:

* spread: order keys like a real archive's capture times, 1,000 event days over three years
  with the items of a day within a few hours (a rebuild that passes the item's time);
* one-day: every job with the same day (a rebuild that passes no order: the default order is
  the enqueue time), the worst case for the parts of one day.

Every write is the real durable one (temp, fsync, rename, fsync folder), so the figures depend
on the disk: an SD card is slower than the machine this runs on. `--no-fsync` turns fsync into
a no-op to show what is left (CPU, page cache): the cost on another disk is about that plus
the disk's fsync time times the fsyncs per call (two per durable write: claim 1 write,
complete 2, enqueue of a new item 2). It prints medians and the 95th percentile in
milliseconds, the files written and the largest shard.

Run: ./scripts/bench jobs [--jobs N] [--samples N] [--shard-cap N] [--no-fsync]
(work files under $BENCH_OUT/jobs, deleted afterwards)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

# Run as a script, sys.path[0] is this folder: import this checkout, not an installed one.
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from appliance import jobs as jobs_mod  # noqa: E402
from appliance.datadir import DataDir  # noqa: E402
from appliance.jobs import JobQueue, JobRequest  # noqa: E402

T = TypeVar("T")
START = 1_640_995_200.0  # 2022-01-01T00:00:00Z
DAY = 86400.0


def item(n: int) -> str:
    return hashlib.sha256(f"bench-{n}".encode()).hexdigest()


def spread_orders(count: int, seed: int = 7) -> Iterator[float]:
    """Capture times: 1,000 event days in three years, each day's items within 4 hours."""
    rng = random.Random(seed)
    days = sorted(rng.sample(range(3 * 365), 1000))
    per_day = -(-count // len(days))
    for n in range(count):
        day = days[n // per_day]
        yield START + day * DAY + 9 * 3600 + rng.uniform(0, 4 * 3600)


def timed(action: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = action()
    return (time.perf_counter() - started) * 1000, result


def summary(samples_ms: list[float]) -> str:
    ordered = sorted(samples_ms)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"median {statistics.median(ordered):7.2f} ms   p95 {p95:7.2f} ms   (n={len(ordered)})"


def files_under(root: Path) -> tuple[int, int, int]:
    """(shard files, lock files, largest shard in bytes)."""
    shards = [p for p in root.glob("[0-9][0-9]/*.json")]
    locks = list(root.glob("[0-9][0-9]/*.lock"))
    return len(shards), len(locks), max((p.stat().st_size for p in shards), default=0)


def run_layout(name: str, work: Path, count: int, samples: int, orders: list[float]) -> None:
    folder = work / name
    shutil.rmtree(folder, ignore_errors=True)
    data = DataDir.at(folder)
    data.ensure()
    queue = JobQueue(data)
    print(f"\n== {name}: {count:,} thumbnail jobs queued ==")
    requests = [JobRequest("thumb", item(n), 10, order=order) for n, order in enumerate(orders)]
    fill_ms, _ = timed(lambda: queue.enqueue_many(requests))
    print(f"enqueue_many of {count:,}: {fill_ms / 1000:.2f} s "
          f"({fill_ms * 1000 / count:.0f} us per job)")
    # A second kind at a later priority, so that a filtered claim has something to find.
    queue.enqueue_many(JobRequest("proxy", item(n), 50, order=orders[n]) for n in range(50))
    shards, locks, largest = files_under(queue.root)
    print(f"files: {shards} shards, {locks} lock files, largest shard {largest / 1000:.0f} KB")

    fresh = [timed(lambda n=n: queue.enqueue("thumb", item(count + n), 10))[0]
             for n in range(samples)]
    print(f"enqueue, new item:       {summary(fresh)}")
    again = [timed(lambda n=n: queue.enqueue("thumb", item(n * 37 % count), 10))[0]
             for n in range(samples)]
    print(f"enqueue, already queued: {summary(again)}")

    claims, completes = [], []
    for n in range(samples):
        claim_ms, job = timed(lambda n=n: queue.claim(f"worker-{n % 4}", 60))
        assert job is not None
        complete_ms, _ = timed(lambda job=job: queue.complete(job))
        claims.append(claim_ms)
        completes.append(complete_ms)
    print(f"claim:                   {summary(claims)}")
    print(f"complete:                {summary(completes)}")
    filtered = []
    for _ in range(min(samples, 50)):
        claim_ms, job = timed(lambda: queue.claim("proxy-worker", 60, kinds={"proxy"}))
        assert job is not None and job.kind == "proxy"
        filtered.append(claim_ms)
        queue.complete(job)
    print(f"claim, kinds={{'proxy'}}:  {summary(filtered)}")
    counts_ms, counts = timed(queue.counts)
    jobs_ms, listed = timed(queue.jobs)
    print(f"counts(): {counts_ms:.0f} ms   jobs(): {jobs_ms:.0f} ms for {len(listed):,} jobs"
          f"   (thumb: {counts['thumb']})")
    shutil.rmtree(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=200, help="timed calls per operation")
    parser.add_argument("--shard-cap", type=int, default=jobs_mod.SHARD_CAP,
                        help=f"jobs per shard (the module's is {jobs_mod.SHARD_CAP})")
    parser.add_argument("--no-fsync", action="store_true",
                        help="make fsync a no-op: the queue's cost without the disk's")
    args = parser.parse_args()
    jobs_mod.SHARD_CAP = args.shard_cap
    if args.no_fsync:
        os.fsync = lambda fd: None
    work = Path(os.environ.get("BENCH_OUT", REPO / "bench-results")) / "jobs"
    work.mkdir(parents=True, exist_ok=True)
    print(f"job queue benchmark: {args.jobs:,} jobs, shard cap {args.shard_cap}, "
          f"fsync {'OFF' if args.no_fsync else 'on'}, data under {work}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    try:
        run_layout("spread", work, args.jobs, args.samples, list(spread_orders(args.jobs)))
        same_day = START + 1000 * DAY
        run_layout("one-day", work, args.jobs, args.samples,
                   [same_day + n * 0.01 for n in range(args.jobs)])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process: {peak:.0f} MB")


if __name__ == "__main__":
    main()
