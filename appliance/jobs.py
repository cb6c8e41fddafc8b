"""The job queue: heavy work (thumbnails, previews, transcodes) as durable, leased jobs.

Why (design decision 6): derivatives are made in the background by one or more workers
(threads of `acopio run`, or `acopio worker` processes under systemd) that may be killed at
any moment, by the OOM killer as much as by a power cut. So every job is on disk before it is
promised, a worker holds a job only through a lease with an expiry (a crashed worker's job
comes back by itself), a job that keeps failing is parked with its error instead of looping,
and no two workers ever hold one job at once. Delivery is at least once: the run of a worker
that died is repeated, so job work must be idempotent (derivatives are: written to a temp
file, renamed into place, regenerable).

Why this layout (design decision 3: no TinyDB file grows with the whole archive): a rebuild
queues a job per item and kind, 100,000 and more; one TinyDB file would be rewritten whole,
20 MB, on every claim. So the jobs live in small shards, each one crash-safe TinyDB file
written through `storage.transaction` (exclusive flock, one durable write):

    state/jobs/<pp>/<day>.<kind>.<part>.json   queued and running jobs (table "jobs")
    state/jobs/keys/<xx>.json                  which (kind, item) has a live job; done counts
    state/jobs/parked.json                     jobs that gave up (small by nature)

`pp` is the priority (lower runs first), `day` the UTC day (YYYYMMDD) of the job's `order`
key (the item's capture or import time), and `part` numbers the shards of one day and kind,
each holding at most SHARD_CAP jobs. A claim walks the priorities in order and, within one,
the days newest first and the parts highest first (a batch fills parts oldest first), locks
ONE shard and takes its newest ready job: the newest items' thumbnails come first, exactly
across days and within a shard, approximately among the parts of one very busy day. Done
jobs leave their shard (an emptied shard is deleted) and are counted in their key file.
Days rather than hours: five years of a press office are about a thousand event days but
several thousand hours with pictures, so days give fewer, fuller files for nearly the same
order. A job costs three durable writes: its claim (one shard), its completion (the shard,
then its key file); `enqueue_many` costs one per shard and key file touched.

`keys/<xx>.json` (by the item's first two hex digits; 256 files at most, each small) makes
enqueue idempotent per (kind, item) without scanning the queue: it names the id and the shard
of the live job. It is written durably BEFORE the shard (the shard is chosen first), and an
entry whose job is not in its shard any more is simply stale: a crash leaves at worst a stale
entry, never a duplicate job. Its lock serialises concurrent enqueues of one item.

Leases. `claim` marks a job running with a random lease token and an expiry; `renew`,
`progress`, `complete` and `fail` only act while the token still matches, so a worker whose
lease ran out and whose job was taken by another (a "zombie") gets `LeaseLost` and never
records a result twice. A lease that expires is not the job's fault: it does not count as an
attempt, but as a lost lease, and after MAX_LOST_LEASES lost leases (a job that always kills
its worker, by memory for example) the job is parked with "worker died N times".

Failures. `fail` counts an attempt and retries after 2**attempts seconds; after max_attempts
the job is parked with its last error and the last three errors. `retry` unparks.

Lock order (never the reverse, so never a deadlock): key files (sorted) -> the priority
folder's gate -> one shard -> parked.json. A shard's lock is a sidecar file that must outlive
every waiter; the gate (`<pp>/.gate`, shared by every shard transaction) lets the queue delete
the sidecars of deleted shards safely, when it can take the gate exclusively.

Damage: a shard, key file or parked.json that cannot be trusted raises `CorruptStateError`
naming it (never read as empty); `repair()` moves it aside. Jobs are derived data: the caller
re-enqueues from the catalog, and enqueue skips what is still queued.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

from tinydb import TinyDB
from tinydb.table import Document, Table

from appliance import boxclock, storage
from appliance.datadir import DataDir
from appliance.fsutil import atomic_write, atomic_write_many, file_lock, fsync_dir, try_lock
from appliance.storage import CorruptStateError

State = Literal["queued", "running", "done", "parked"]
STATES: tuple[State, ...] = ("queued", "running", "done", "parked")
LIVE_STATES = frozenset({"queued", "running"})

JOBS = "jobs"  # the TinyDB table of every shard and of parked.json
SHARD_CAP = 200  # jobs per shard: about 80 KB, the most one claim rewrites
MAX_LOST_LEASES = 5  # a job whose worker died this many times is parked
MAX_BACKOFF_S = 3600.0
PROGRESS_INTERVAL_S = 1.0  # at most one progress write per job per interval
ERROR_HISTORY = 3
MAX_ERROR_CHARS = 2000  # ffmpeg can print megabytes; the end says what went wrong
LAST_ORDER = 253402300799.0  # 9999-12-31T23:59:59Z: day names stay 8 digits and sortable

GATE = ".gate"
KEYS = "keys"
PARKED = "parked.json"

_KIND = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_ITEM = re.compile(r"^[0-9a-f]{64}$")
_PRIORITY_DIR = re.compile(r"^\d{2}$")
_SHARD = re.compile(
    r"^(?P<priority>\d{2})/(?P<day>\d{8})\.(?P<kind>[a-z][a-z0-9_]{0,31})\.(?P<part>\d{1,6})"
    r"\.json$"
)
_KEY_FILE = re.compile(r"^[0-9a-f]{2}\.json$")


class LeaseLost(RuntimeError):
    """The worker no longer holds the job: its lease expired and someone else took it, or
    the job is gone. It must drop its result."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.id} ({job.kind} of {job.item}): lease lost")
        self.job = job


class JobNotFound(LookupError):
    """No such job (for `retry`: no parked job with that id)."""


# -- records ------------------------------------------------------------------------------


@dataclass
class Job:
    id: str
    kind: str
    item: str  # the item's SHA-256 (hex)
    priority: int  # lower runs first
    order: float  # newest first within a priority: the item's capture/import time
    created_at: float
    max_attempts: int = 3
    state: State = "queued"
    not_before: float = 0.0  # retry backoff: not claimed before this (epoch s)
    attempts: int = 0  # failed runs (`fail`)
    lost_leases: int = 0  # runs whose worker vanished (lease expired); not attempts
    lease_owner: str | None = None
    lease_token: str | None = None
    lease_expires: float | None = None
    # The boot the lease was taken in (appliance.boxclock.boot_id): a lease of an earlier
    # boot is over, whatever its expiry says (a Pi's clock may come back from a power cut
    # behind the time it was taken at). Absent in records written before it was kept.
    lease_boot: str | None = field(default=None, metadata={"optional": True})
    progress: float | None = None  # 0-100 while running, when the worker reports it
    error: str | None = None  # the last error
    errors: list[dict[str, Any]] = field(default_factory=list)  # the last three: {at, error}
    # Not stored: where the job lives (relative to state/jobs), and progress throttling.
    shard: str = field(default="", compare=False, metadata={"local": True})
    progress_written_at: float | None = field(
        default=None, compare=False, repr=False, metadata={"local": True})

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.item}"

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        for name in _LOCAL_FIELDS:
            del record[name]
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any], shard: str = "") -> Job:
        values = {name: record[name] for name in RECORD_FIELDS if name in record}
        values["errors"] = [dict(e) for e in values["errors"]]
        return cls(**values, shard=shard)


RECORD_FIELDS = tuple(f.name for f in fields(Job) if not f.metadata.get("local"))
_LOCAL_FIELDS = tuple(f.name for f in fields(Job) if f.metadata.get("local"))
_REQUIRED = frozenset(f.name for f in fields(Job)
                      if not f.metadata.get("local") and not f.metadata.get("optional"))


@dataclass(frozen=True)
class JobRequest:
    """One job to enqueue (for `enqueue_many`)."""

    kind: str
    item: str
    priority: int
    order: float | None = None  # default: the time of the enqueue
    max_attempts: int = 3


class Moved(NamedTuple):
    """A damaged state file `repair()` moved aside."""

    path: Path
    aside: Path


class ShardName(NamedTuple):
    priority: int
    day: str
    kind: str
    part: int

    @classmethod
    def parse(cls, rel: str) -> ShardName:
        match = _SHARD.match(rel)
        if match is None:
            raise ValueError(f"not a job shard: {rel!r}")
        return cls(int(match["priority"]), match["day"], match["kind"], int(match["part"]))

    @property
    def rel(self) -> str:
        return f"{self.priority:02d}/{self.day}.{self.kind}.{self.part}.json"


def day_of(order: float) -> str:
    """The UTC day of an order key, as the shard names it (clamped to years 1970-9999)."""
    moment = datetime.fromtimestamp(min(max(order, 0.0), LAST_ORDER), UTC)
    return moment.strftime("%Y%m%d")


def backoff_s(attempts: int) -> float:
    return min(2.0 ** attempts, MAX_BACKOFF_S)


def _clip_error(error: str) -> str:
    if len(error) <= MAX_ERROR_CHARS:
        return error
    return "…" + error[-(MAX_ERROR_CHARS - 1):]


def _is_ready(record: dict[str, Any], now: float) -> bool:
    """Claimable now: queued past its backoff, or running with an expired lease (or one
    taken before this boot: its worker is gone)."""
    if record["state"] == "queued":
        return record["not_before"] <= now
    return record["state"] == "running" and (record["lease_expires"] <= now
                                             or _earlier_boot(record))


def _earlier_boot(record: dict[str, Any]) -> bool:
    boot = boxclock.boot_id()
    return boot is not None and record.get("lease_boot") not in (None, boot)


def _newest_first(record: dict[str, Any]) -> tuple[float, float, str]:
    return (-record["order"], record["created_at"], record["id"])


def _oldest_first(job: Job) -> tuple[float, float, str]:
    return (job.order, job.created_at, job.id)


def _check_table(raw: dict[str, Any] | None, path: Path) -> list[dict[str, Any]]:
    """The job records of a TinyDB file as read from disk; a malformed one raises."""
    if raw is None:
        return []
    table = raw.get(JOBS, {})
    if not isinstance(table, dict):
        raise CorruptStateError(path, f"table {JOBS!r} is not an object")
    records = list(table.values())
    for record in records:
        if not isinstance(record, dict) or not record.keys() >= _REQUIRED:
            raise CorruptStateError(path, "holds a job record with missing fields")
    return records


def _find(table: Table, job_id: str) -> Document | None:
    return next((doc for doc in table if doc["id"] == job_id), None)


def _holds(doc: Document | None, job: Job) -> bool:
    return doc is not None and doc["state"] == "running" and doc["lease_token"] == job.lease_token


def _remove_docs(db: TinyDB, path: Path, doc_ids: list[int]) -> bool:
    """Remove documents from a shard inside its transaction; True when that emptied it.

    An emptied shard is deleted while still locked, and nothing is written (the transaction
    writes only when its data changed), so a waiting writer finds no file and starts afresh.
    Call it last in a transaction: an earlier change would be written back after the delete.
    """
    table = db.table(JOBS)
    if len(table) > len(doc_ids):
        table.remove(doc_ids=doc_ids)
        return False
    path.unlink()
    fsync_dir(path.parent)
    return True


def _validate(kind: str, item: str, priority: int, max_attempts: int) -> None:
    if not _KIND.match(kind):
        raise ValueError(f"invalid job kind {kind!r}: lower-case letters, digits, underscores")
    if not _ITEM.match(item):
        raise ValueError(f"not a hex SHA-256: {item!r}")
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 99:
        raise ValueError(f"priority must be an integer from 0 to 99, not {priority!r}")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"max_attempts must be a positive integer, not {max_attempts!r}")


# -- key files ----------------------------------------------------------------------------


@dataclass
class _KeyFile:
    """One `keys/<xx>.json`, loaded under its lock: live (kind, item) keys and done counts."""

    path: Path
    active: dict[str, dict[str, str]]  # "kind:item" -> {"id": job id, "shard": its shard}
    done: dict[str, int]  # kind -> jobs completed
    dirty: bool = False

    @classmethod
    def load(cls, path: Path, *, entries: bool = True) -> _KeyFile:
        """Damage raises; `entries=False` skips checking the entries (for the counts)."""
        raw = storage.read_json_file(path) or {}
        active, done = raw.get("active", {}), raw.get("done", {})
        if not isinstance(active, dict) or not isinstance(done, dict):
            raise CorruptStateError(path, "not a job key file")
        for entry in active.values() if entries else ():
            if not (isinstance(entry, dict) and isinstance(entry.get("id"), str)
                    and _SHARD.match(str(entry.get("shard")))):
                raise CorruptStateError(path, "holds a malformed key entry")
        if not all(isinstance(n, int) for n in done.values()):
            raise CorruptStateError(path, "holds a malformed done count")
        return cls(path, active, done)

    def dump(self) -> bytes:
        return storage.dump_json({"active": self.active, "done": self.done})

    def save(self, tmp_dir: Path) -> None:
        atomic_write(self.path, self.dump(), tmp_dir)
        self.dirty = False


def _save_all(keyfiles: list[_KeyFile], tmp_dir: Path) -> None:
    """Save a batch's key files with one flush (`atomic_write_many`), not two fsyncs each."""
    atomic_write_many({k.path: k.dump() for k in keyfiles}, tmp_dir)
    for keyfile in keyfiles:
        keyfile.dirty = False


class _ShardView:
    """The shards as they are now, read without locks and cached for one batch: finds the
    live job a key entry names, and chooses the shard of a new job, so that a batch of
    100,000 enqueues reads every shard at most once."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self.parts: dict[int, dict[tuple[str, str], list[int]]] = {}  # priority -> parts
        self.records: dict[str, dict[str, dict[str, Any]]] = {}  # shard -> id -> record
        self.slots: dict[tuple[int, str, str], list[int]] = {}  # group -> [part, jobs]

    def find(self, entry: dict[str, str] | None) -> Job | None:
        if entry is None:
            return None
        record = self._records(entry["shard"]).get(entry["id"])
        if record is None or record["state"] not in LIVE_STATES:
            return None  # a stale entry: the job is done, parked or lost
        return Job.from_record(record, entry["shard"])

    def place(self, job: Job) -> str:
        """The shard for a new job: the last part of its (priority, day, kind) group while it
        has room, then a new part. Call in order of `order` so that parts fill oldest first.
        Concurrent batches may overfill a part a little: the cap bounds the cost of a write,
        it is not a rule."""
        group = (job.priority, day_of(job.order), job.kind)
        slot = self.slots.get(group)
        if slot is None:
            part = max(self._parts(job.priority).get(group[1:], []), default=0)
            size = len(self._records(ShardName(*group, part).rel))
            slot = self.slots[group] = [part, size]
        if slot[1] >= SHARD_CAP:
            slot[0], slot[1] = slot[0] + 1, 0
        slot[1] += 1
        return ShardName(*group, slot[0]).rel

    def _parts(self, priority: int) -> dict[tuple[str, str], list[int]]:
        if priority not in self.parts:
            parts: dict[tuple[str, str], list[int]] = {}
            for name in self.queue._listing(priority):
                parts.setdefault((name.day, name.kind), []).append(name.part)
            self.parts[priority] = parts
        return self.parts[priority]

    def _records(self, rel: str) -> dict[str, dict[str, Any]]:
        if rel not in self.records:
            records = self.queue._read(self.queue.root / rel)
            self.records[rel] = {r["id"]: r for r in records}
        return self.records[rel]


# -- the queue ----------------------------------------------------------------------------


class JobQueue:
    """The durable job queue in `state/jobs`. Safe across threads and processes."""

    def __init__(self, data: DataDir, *, clock: Callable[[], float] = time.time) -> None:
        self.data = data
        self.root = data.jobs
        self.clock = clock

    # -- adding jobs ----------------------------------------------------------------------

    def enqueue(self, kind: str, item: str, priority: int, *, order: float | None = None,
                max_attempts: int = 3) -> Job:
        """Queue a job, or return the live (queued or running) job for (kind, item)."""
        request = JobRequest(kind, item, priority, order, max_attempts)
        return self.enqueue_many([request])[0]

    def enqueue_many(self, requests: Iterable[JobRequest]) -> list[Job]:
        """Queue many jobs with one durable write per shard and per key file touched.

        Returns one job per request, in order: the new job, or the live job already queued
        or running for that (kind, item). A parked job of that (kind, item) is replaced.
        """
        now = self.clock()
        jobs = [self._new_job(request, now) for request in requests]
        return self._add(jobs)

    def _new_job(self, request: JobRequest, now: float) -> Job:
        _validate(request.kind, request.item, request.priority, request.max_attempts)
        order = now if request.order is None else float(request.order)
        if not math.isfinite(order):
            raise ValueError(f"order must be a finite number, not {request.order!r}")
        return Job(id=uuid.uuid4().hex, kind=request.kind, item=request.item,
                   priority=request.priority, order=order, created_at=now,
                   max_attempts=request.max_attempts)

    def _add(self, jobs: list[Job]) -> list[Job]:
        """Put jobs whose key has no live job into shards; the live job for the others."""
        wanted: dict[str, Job] = {}
        for job in jobs:
            wanted.setdefault(job.key, job)
        placed: dict[str, Job] = {}
        with contextlib.ExitStack() as stack:
            keyfiles = {prefix: stack.enter_context(self._keyfile(prefix))
                        for prefix in sorted({job.item[:2] for job in wanted.values()})}
            view = _ShardView(self)
            fresh: list[Job] = []
            for key, job in sorted(wanted.items(), key=lambda kv: _oldest_first(kv[1])):
                keyfile = keyfiles[job.item[:2]]
                live = view.find(keyfile.active.get(key))
                if live is not None:
                    placed[key] = live
                    continue
                job.shard = view.place(job)
                keyfile.active[key] = {"id": job.id, "shard": job.shard}
                keyfile.dirty = True
                fresh.append(job)
                placed[key] = job
            # Key entries first: a crash before the shard write leaves a stale entry (the
            # next enqueue of that key sees no job and queues one), never a duplicate job.
            _save_all([k for k in keyfiles.values() if k.dirty], self.data.tmp)
            self._insert(fresh)
            self._drop_parked_keys({job.key for job in fresh})
        return [placed[job.key] for job in jobs]

    def _insert(self, jobs: list[Job]) -> None:
        """Write new jobs into the shards `_ShardView.place` chose: one write per shard."""
        by_shard: dict[str, list[Job]] = {}
        for job in jobs:
            by_shard.setdefault(job.shard, []).append(job)
        for rel, members in by_shard.items():
            with self._shard_transaction(ShardName.parse(rel)) as db:
                db.table(JOBS).insert_multiple(job.to_record() for job in members)

    # -- claiming and running -------------------------------------------------------------

    def claim(self, owner: str, lease_s: float,
              kinds: Collection[str] | None = None) -> Job | None:
        """Take the most urgent ready job for `lease_s` seconds, or None when there is none.

        Ready: queued and past its backoff, or running with an expired lease (its worker
        died; that counts as a lost lease, not an attempt).
        """
        if not lease_s > 0:
            raise ValueError(f"lease_s must be positive, not {lease_s!r}")
        if isinstance(kinds, str):
            raise TypeError("kinds is a collection of kinds, not one string")
        for name in self._claim_order(kinds):
            now = self.clock()
            if not any(_is_ready(r, now) for r in self._read(self.root / name.rel)):
                continue  # looked at without a lock: most shards are skipped this way
            job = self._claim_in(name, owner, lease_s)
            if job is not None:
                return job
        return None

    def _claim_in(self, name: ShardName, owner: str, lease_s: float) -> Job | None:
        path = self.root / name.rel
        chosen: Job | None = None
        dead: list[Job] = []
        emptied = False
        with self._shard_transaction(name) as db:
            table = db.table(JOBS)
            now = self.clock()
            dead_docs: list[Document] = []
            for doc in sorted((d for d in table if _is_ready(d, now)), key=_newest_first):
                # A worker gone with its boot (a power cut) is not the job's fault.
                lost = doc["lost_leases"] + int(doc["state"] == "running"
                                                and not _earlier_boot(doc))
                if lost >= MAX_LOST_LEASES:
                    dead_docs.append(doc)
                    dead.append(self._died(doc, lost, now))
                    continue
                chosen = self._lease(table, doc, owner, lease_s, lost, now)
                chosen.shard = name.rel
                break
            if dead:
                self._park(dead)
                emptied = _remove_docs(db, path, [doc.doc_id for doc in dead_docs])
        for job in dead:
            self._forget_key(job, done=False)
        if emptied:
            self._sweep_locks(name.priority, wait=False)
        return chosen

    @staticmethod
    def _lease(table: Table, doc: Document, owner: str, lease_s: float, lost: int,
               now: float) -> Job:
        changes = {"state": "running", "lease_owner": owner, "lease_token": uuid.uuid4().hex,
                   "lease_expires": now + lease_s, "lease_boot": boxclock.boot_id(),
                   "lost_leases": lost, "progress": None}
        table.update(changes, doc_ids=[doc.doc_id])
        return Job.from_record({**doc, **changes})

    @staticmethod
    def _died(doc: Document, lost: int, now: float) -> Job:
        error = (f"worker died {lost} times while running this job (lease expired each "
                 "time); parked so that it cannot take down another")
        job = Job.from_record(dict(doc))
        job.lost_leases = lost
        return _with_error(job, error, now, state="parked")

    def renew(self, job: Job, lease_s: float) -> bool:
        """Extend the lease (a heartbeat). False when the lease was lost to someone else or
        the job is gone: the worker must stop and drop its result. A lease that ran out but
        that nobody took yet is still this worker's, and is renewed."""
        if not lease_s > 0:
            raise ValueError(f"lease_s must be positive, not {lease_s!r}")
        with self._shard_transaction(self._shard_of(job)) as db:
            table = db.table(JOBS)
            doc = _find(table, job.id)
            if not _holds(doc, job):
                return False
            expires = self.clock() + lease_s
            table.update({"lease_expires": expires}, doc_ids=[doc.doc_id])
        job.lease_expires = expires
        return True

    def release(self, job: Job) -> bool:
        """Give a claimed job back untried, queued again at once with its attempts as they
        were (its worker is stopping: a stop must not wait out a long transcode, nor count
        as a failure). False when the lease was no longer this worker's."""
        with self._shard_transaction(self._shard_of(job)) as db:
            table = db.table(JOBS)
            doc = _find(table, job.id)
            if not _holds(doc, job):
                return False
            table.update({"state": "queued", "lease_owner": None, "lease_token": None,
                          "lease_expires": None, "progress": None}, doc_ids=[doc.doc_id])
        job.state = "queued"
        return True

    def progress(self, job: Job, percent: float) -> bool:
        """Record progress (0-100), writing at most once per PROGRESS_INTERVAL_S per job.

        False when a write found the lease lost (the worker should stop); a throttled call
        only updates `job.progress` and returns True.
        """
        if not 0.0 <= percent <= 100.0:
            raise ValueError(f"progress must be from 0 to 100, not {percent!r}")
        job.progress = float(percent)
        now = self.clock()
        last = job.progress_written_at
        if last is not None and now - last < PROGRESS_INTERVAL_S:
            return True
        with self._shard_transaction(self._shard_of(job)) as db:
            table = db.table(JOBS)
            doc = _find(table, job.id)
            if not _holds(doc, job):
                return False
            table.update({"progress": job.progress}, doc_ids=[doc.doc_id])
        job.progress_written_at = now
        return True

    def complete(self, job: Job) -> None:
        """Record the job done (it leaves the queue and is counted). Raises LeaseLost when
        this worker no longer holds it: its result must not be recorded."""
        name = self._shard_of(job)
        with self._shard_transaction(name) as db:
            doc = _find(db.table(JOBS), job.id)
            if not _holds(doc, job):
                raise LeaseLost(job)
            emptied = _remove_docs(db, self.root / name.rel, [doc.doc_id])
        job.state = "done"
        self._forget_key(job, done=True)
        if emptied:
            self._sweep_locks(name.priority, wait=False)

    def fail(self, job: Job, error: str) -> Job:
        """Record a failed run: retried after 2**attempts s, parked after max_attempts.

        Returns the job as now stored (queued or parked). Raises LeaseLost like `complete`.
        """
        name = self._shard_of(job)
        emptied = False
        with self._shard_transaction(name) as db:
            table = db.table(JOBS)
            doc = _find(table, job.id)
            if not _holds(doc, job):
                raise LeaseLost(job)
            now = self.clock()
            stored = Job.from_record(dict(doc), name.rel)
            stored.attempts += 1
            if stored.attempts >= stored.max_attempts:
                failed = _with_error(stored, error, now, state="parked")
                self._park([failed])
                emptied = _remove_docs(db, self.root / name.rel, [doc.doc_id])
            else:
                failed = _with_error(stored, error, now, state="queued")
                failed.not_before = now + backoff_s(failed.attempts)
                table.update(failed.to_record(), doc_ids=[doc.doc_id])
        if failed.state == "parked":
            self._forget_key(failed, done=False)
        if emptied:
            self._sweep_locks(name.priority, wait=False)
        return failed

    # -- parked jobs ----------------------------------------------------------------------

    def parked(self) -> list[Job]:
        records = _check_table(storage.read_json_file(self._parked_path), self._parked_path)
        jobs = [Job.from_record(r) for r in records]
        return sorted(jobs, key=lambda j: (j.priority, -j.order, j.id))

    def retry(self, job_id: str | None = None) -> list[Job]:
        """Queue parked jobs again (one, or all with None), attempts and lost leases reset.
        `job_id` may be the id's first characters, as `acopio jobs` lists it.

        Returns the queued jobs (the live job instead, where one was queued meanwhile).
        """
        parked = self.parked()
        chosen = parked if job_id is None else [j for j in parked if j.id == job_id] or \
            [j for j in parked if job_id and j.id.startswith(job_id)]  # as `acopio jobs` shows
        if job_id is not None and not chosen:
            raise JobNotFound(f"no parked job {job_id} (see `acopio jobs`)")
        if job_id is not None and len(chosen) > 1:
            raise JobNotFound(f"{len(chosen)} parked jobs start with {job_id}: give more of "
                              "the id (`acopio jobs --json`)")
        fresh = [replace(j, state="queued", attempts=0, lost_leases=0, not_before=0.0,
                         lease_owner=None, lease_token=None, lease_expires=None,
                         progress=None, errors=list(j.errors)) for j in chosen]
        queued = self._add(fresh)
        self._unpark({j.id for j in chosen})
        return queued

    def _park(self, jobs: list[Job]) -> None:
        """Write jobs into parked.json (by id: parking twice after a crash is harmless)."""
        with storage.transaction(self._parked_path, self.data.tmp) as db:
            table = db.table(JOBS)
            by_id = {doc["id"]: doc.doc_id for doc in table}
            for job in jobs:
                doc_id = by_id.get(job.id)
                if doc_id is None:
                    table.insert(job.to_record())
                else:
                    table.update(job.to_record(), doc_ids=[doc_id])

    def _unpark(self, job_ids: set[str]) -> list[Job]:
        if not job_ids:
            return []
        with storage.transaction(self._parked_path, self.data.tmp) as db:
            table = db.table(JOBS)
            gone = [doc for doc in table if doc["id"] in job_ids]
            if gone:
                table.remove(doc_ids=[doc.doc_id for doc in gone])
        return [Job.from_record(dict(doc)) for doc in gone]

    def _drop_parked_keys(self, keys: set[str]) -> None:
        """A new job for a (kind, item) replaces its parked one."""
        if not keys:
            return
        parked = {j.id for j in self.parked() if j.key in keys}
        self._unpark(parked)

    # -- looking -------------------------------------------------------------------------

    def counts(self) -> dict[str, dict[str, int]]:
        """Jobs per kind and state: {"thumb": {"queued": 3, "running": 1, "done": 40,
        "parked": 0}, ...}. Reads every shard (without locks): about 0.4 s with 100,000
        jobs queued on the development machine, so a UI should not poll it every second. A
        job whose worker died counts as running until its lease expires and it is claimed."""
        counts: dict[str, dict[str, int]] = {}

        def add(kind: str, state: str, n: int = 1) -> None:
            counts.setdefault(kind, dict.fromkeys(STATES, 0))[state] += n

        for name in self._claim_order(None):
            for record in self._read(self.root / name.rel):
                add(record["kind"], record["state"])
        for job in self.parked():
            add(job.kind, "parked")
        for path in self._key_paths():
            for kind, n in _KeyFile.load(path, entries=False).done.items():
                add(kind, "done", n)
        return dict(sorted(counts.items()))

    def jobs(self, state: State | None = None) -> list[Job]:
        """Queued, running and parked jobs (or those of one state), in claim order, parked
        last. Done jobs are not kept (see `counts`), so asking for them is an error."""
        if state not in (None, "queued", "running", "parked"):
            raise ValueError(f"no list of {state!r} jobs: done jobs are only counted"
                             if state == "done" else f"unknown job state {state!r}")
        found: list[Job] = []
        if state != "parked":
            for name in self._claim_order(None):
                records = sorted(self._read(self.root / name.rel), key=_newest_first)
                found.extend(Job.from_record(r, name.rel) for r in records
                             if state is None or r["state"] == state)
        if state in (None, "parked"):
            found.extend(self.parked())
        return found

    # -- removing ------------------------------------------------------------------------

    def cancel_for(self, item: str) -> list[Job]:
        """Drop the queued and parked jobs of an item (deleted from the archive, say).

        Running jobs are left to finish or fail. Returns the dropped jobs.
        """
        if not _ITEM.match(item):
            raise ValueError(f"not a hex SHA-256: {item!r}")
        dropped: list[Job] = []
        with self._keyfile(item[:2]) as keyfile:
            view = _ShardView(self)
            for key in [k for k in keyfile.active if k.endswith(":" + item)]:
                live = view.find(keyfile.active[key])
                gone = live is None or (live.state == "queued" and self._drop_queued(live))
                if live is not None and gone:
                    dropped.append(live)
                if gone:
                    del keyfile.active[key]
                    keyfile.dirty = True
            if keyfile.dirty:
                keyfile.save(self.data.tmp)
        dropped.extend(self._unpark({j.id for j in self.parked() if j.item == item}))
        return dropped

    def _drop_queued(self, job: Job) -> bool:
        name = self._shard_of(job)
        with self._shard_transaction(name) as db:
            doc = _find(db.table(JOBS), job.id)
            if doc is None or doc["state"] != "queued":
                return False
            emptied = _remove_docs(db, self.root / name.rel, [doc.doc_id])
        if emptied:
            self._sweep_locks(name.priority, wait=False)
        return True

    # -- damage ---------------------------------------------------------------------------

    def repair(self) -> list[Moved]:
        """Move damaged shards, key files and parked.json aside (as `<name>.damaged-<UTC>`).

        The jobs of a damaged shard are lost; the caller re-enqueues from the catalog
        (derivatives are regenerable) and enqueue skips what is still queued. A damaged key
        file is rebuilt from the shards (its done counts restart at zero). Also deletes the
        lock files of deleted shards. Returns what was moved.
        """
        moved = [m for name in self._claim_order(None) if (m := self._repair_shard(name))]
        for path in self._key_paths():
            with file_lock(storage.lock_path_for(path)):
                aside = self._move_if_damaged(path, _KeyFile.load)
                if aside is not None:
                    moved.append(Moved(path, aside))
                    self._rebuild_keyfile(path)
        with file_lock(storage.lock_path_for(self._parked_path)):
            aside = self._move_if_damaged(self._parked_path, self._read)
            if aside is not None:
                moved.append(Moved(self._parked_path, aside))
        for priority in self._priorities():
            self._sweep_locks(priority, wait=True)
        return moved

    def _repair_shard(self, name: ShardName) -> Moved | None:
        path = self.root / name.rel
        with file_lock(self._gate(name.priority), shared=True), \
                file_lock(storage.lock_path_for(path)):
            aside = self._move_if_damaged(path, self._read)
        return None if aside is None else Moved(path, aside)

    def _move_if_damaged(self, path: Path, read: Callable[[Path], object]) -> Path | None:
        """Called with the file's lock held."""
        try:
            read(path)
        except CorruptStateError:
            stamp = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y%m%dT%H%M%SZ")
            aside = path.with_name(f"{path.name}.damaged-{stamp}")
            os.replace(path, aside)
            fsync_dir(path.parent)
            return aside
        return None

    def _rebuild_keyfile(self, path: Path) -> None:
        """Key entries for the live jobs in the shards (with the key file's lock held)."""
        prefix = path.name[:2]
        keyfile = _KeyFile(path, {}, {})
        for name in self._claim_order(None):
            for record in self._read(self.root / name.rel):
                if record["item"].startswith(prefix):
                    key = f"{record['kind']}:{record['item']}"
                    keyfile.active[key] = {"id": record["id"], "shard": name.rel}
        keyfile.save(self.data.tmp)

    # -- files and locks ------------------------------------------------------------------

    @property
    def _parked_path(self) -> Path:
        return self.root / PARKED

    def _gate(self, priority: int) -> Path:
        return self.root / f"{priority:02d}" / GATE

    def _read(self, path: Path) -> list[dict[str, Any]]:
        """The job records of a shard as they are now (no lock); damage raises."""
        return _check_table(storage.read_json_file(path), path)

    def _shard_of(self, job: Job) -> ShardName:
        if not job.shard:
            raise ValueError(f"job {job.id} has no shard: use a job returned by claim()")
        return ShardName.parse(job.shard)

    @contextlib.contextmanager
    def _shard_transaction(self, name: ShardName) -> Iterator[TinyDB]:
        with file_lock(self._gate(name.priority), shared=True), \
                storage.transaction(self.root / name.rel, self.data.tmp) as db:
            yield db

    @contextlib.contextmanager
    def _keyfile(self, prefix: str) -> Iterator[_KeyFile]:
        """A key file loaded under its lock; the caller saves it (before shard writes)."""
        path = self.root / KEYS / f"{prefix}.json"
        with file_lock(storage.lock_path_for(path)):
            yield _KeyFile.load(path)

    def _forget_key(self, job: Job, *, done: bool) -> None:
        """After a job left its shard: drop its key entry (if still its own), count it."""
        with self._keyfile(job.item[:2]) as keyfile:
            entry = keyfile.active.get(job.key)
            if entry is not None and entry["id"] == job.id:
                del keyfile.active[job.key]
                keyfile.dirty = True
            if done:
                keyfile.done[job.kind] = keyfile.done.get(job.kind, 0) + 1
                keyfile.dirty = True
            if keyfile.dirty:
                keyfile.save(self.data.tmp)

    def _sweep_locks(self, priority: int, *, wait: bool) -> None:
        """Delete lock files of deleted shards. Safe only while nobody is inside a shard
        transaction of this priority: every one holds the gate shared."""
        folder = self.root / f"{priority:02d}"
        with try_lock(self._gate(priority), wait=wait) as locked:
            if not locked:
                return  # busy: a later sweep catches these
            for lock in folder.glob("*.json.lock"):
                if not lock.with_suffix("").exists():
                    lock.unlink()

    def _priorities(self) -> list[int]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(int(n) for n in names if _PRIORITY_DIR.match(n))

    def _listing(self, priority: int) -> list[ShardName]:
        folder = f"{priority:02d}"
        try:
            names = os.listdir(self.root / folder)
        except FileNotFoundError:
            return []
        found = []
        for entry in names:
            if entry.endswith(".json") and (match := _SHARD.match(f"{folder}/{entry}")):
                found.append(ShardName(priority, match["day"], match["kind"],
                                       int(match["part"])))
        return found

    def _claim_order(self, kinds: Collection[str] | None) -> Iterator[ShardName]:
        """Every shard: priorities ascending, then days newest first, highest part first."""
        for priority in self._priorities():
            names = [n for n in self._listing(priority) if kinds is None or n.kind in kinds]
            yield from sorted(names, key=lambda n: (n.day, n.part, n.kind), reverse=True)

    def _key_paths(self) -> list[Path]:
        folder = self.root / KEYS
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        return [folder / n for n in sorted(names) if _KEY_FILE.match(n)]


def _with_error(job: Job, error: str, now: float, *, state: State) -> Job:
    """The job after a failed or lost run, its lease cleared."""
    text = _clip_error(error)
    history = [*job.errors, {"at": now, "error": text}][-ERROR_HISTORY:]
    return replace(job, state=state, error=text, errors=history, lease_owner=None,
                   lease_token=None, lease_expires=None, progress=None,
                   shard="" if state == "parked" else job.shard)
