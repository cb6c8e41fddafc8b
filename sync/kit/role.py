"""The kit's sync role (`acopio sync`, and the `sync` role of `acopio run`).

One round, while the kit is paired (state/sync/credentials.json):

1. **connect**: the hub at `sync.hub_url`, else at the URL it was paired at; when that does
   not answer and `sync.hub_url` is empty, a hub found on the LAN with zeroconf (discover.py;
   browsing only where the box uses zeroconf: `web.zeroconf`, `web.zeroconf_interfaces`);
2. **metadata out**: the records whose revision the hub has not accepted
   (`POST /sync/records`, in batches), approved and picked items first (outbox.py);
3. **changes in**: `GET /sync/changes?since=CURSOR`: agenda changes into the kit's agenda,
   item changes merged field by field (sync.merge, hybrid logical clock); an item whose
   activity changed at the hub is re-filed on the kit (appliance.refile, by "hub"), so its
   file moves too; then the cursor is stored (durably). Records the merge changed go out
   again in the same round (the hub finds nothing new in them, which ends the exchange);
4. **originals out**: each original without a verified acknowledgement, in priority order,
   over tus (transport.py), held while a card or camera imports (`sync.pause_during_import`),
   then `GET /sync/objects/<sha>?verify=1` (asked while the next file uploads,
   sync.kit.verifier): only that verified answer marks it synced;
5. **space**: below `sync.evict_below_mb`, acknowledged originals are evicted (evict.py).

Errors: no answer or a 5xx is "offline", a refused token "error"; either way the role waits
with exponential backoff and jitter (up to `sync.retry_max_s`) and tries again, resuming an
interrupted upload from the hub's offset. With everything sent it waits `sync.poll_s`.

`--once` runs rounds until the hub has acknowledged everything (exit 0), or gives up: after
`ONCE_ATTEMPTS` failed attempts in a row (with the same backoff between them), on a refused
token, or when something cannot be sent (a missing original, a file the hub refuses), with a
message that says which (exit 1).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from appliance.agenda import Agenda
from appliance.catalog import Catalog
from appliance.config import Config
from appliance.datadir import DataDir
from appliance.storage import CorruptStateError, dump_json
from sync.kit import credentials
from sync.kit.audit import Audit
from sync.kit.client import (
    HubClient,
    HubCorrupt,
    HubRefused,
    HubUnreachable,
    HubUntrusted,
    SyncError,
)
from sync.kit.evict import Evictor
from sync.kit.lanes import Finished, Lanes
from sync.kit.outbox import TIERS, Original, Outbox, Pending
from sync.kit.pacing import Backoff, RateLimiter
from sync.kit.status import LinkMeter, StatusWriter
from sync.kit.store import SyncStore, now_iso
from sync.kit.transport import (
    Hooks,
    SourceChanged,
    Stopped,
    TooLarge,
    Transport,
    UploadGone,
)
from sync.kit.verifier import Asked, Verifier

log = logging.getLogger(__name__)

PAIRING_POLL_S = 2.0  # how often an unpaired kit looks for its pairing

ONCE_ATTEMPTS = 5
ONCE_ROUNDS = 20  # rounds that make progress, e.g. while imports keep adding items
RECORDS_BATCH = 200
RECORDS_BATCH_BYTES = 4 * 1024 * 1024  # the hub takes up to 500 records, 32 MiB, per request
PAUSE_POLL_S = 1.0
# A device stuck in "importing" this long without an update (a watcher killed mid-import)
# no longer holds uploads.
STALE_IMPORT_S = 15 * 60
BUSY_STATES = ("mounting", "importing")
ZERO_SHA = "0" * 64
# An original lost or cut short on this kit, not yet at the hub: its card restores it.
RESTORE_HINT = "import the card it came from again to restore it; `acopio check` lists these"


@dataclass
class Outcome:
    pending: Pending
    acked: int = 0  # originals and records acknowledged this round
    unsendable: list[str] = field(default_factory=list)  # why something cannot be sent

    @property
    def complete(self) -> bool:
        return self.pending.empty and not self.pending.damaged and not self.unsendable


def import_running(data: DataDir, now: float | None = None) -> str | None:
    """The name of a device importing now (a card mounting or importing, a camera
    importing), or None."""
    from ingest.devices.state import DeviceStates

    try:
        devices = DeviceStates(data.state).all()
    except CorruptStateError:
        return None
    now = time.time() if now is None else now
    for device in devices:
        if device.status not in BUSY_STATES:
            continue
        try:
            updated = datetime.fromisoformat(device.updated_at).timestamp()
        except (TypeError, ValueError):
            updated = now
        if now - updated <= STALE_IMPORT_S:
            return device.name or device.id
    return None


class SyncRole:
    def __init__(self, config: Config, *, data: DataDir | None = None,
                 rng: Any = None, find_hubs: Callable[..., Sequence[Any]] | None = None
                 ) -> None:
        self.config = config
        self.data = data or DataDir.at(config.data_dir)
        self.store = SyncStore(self.data)
        self.catalog = Catalog(self.data)
        self.outbox = Outbox(self.data, self.store, self.catalog)
        self.backoff = Backoff(config.sync.retry_max_s, rng=rng)
        self.limiter = RateLimiter.from_kbps(config.sync.bandwidth_kbps)
        self.find_hubs = find_hubs
        self.status: StatusWriter | None = None
        self._url: str | None = None  # a hub found by zeroconf, for the next rounds
        self._paired_with: credentials.Credentials | None = None
        self._damaged_pairing = ""  # the damage last logged
        self._meter = LinkMeter()
        self.stop = threading.Event()

    # -- the role --------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Until `stop`: rounds, `sync.poll_s` apart, with backoff after errors."""
        self.stop = stop
        status = self._status()
        while not stop.is_set():
            try:
                paired = self._paired()
            except SyncError as exc:
                self._failed(exc)
                stop.wait(self.backoff.next())
                continue
            if paired is None:  # waits for `acopio sync pair`; the status says so once
                if status.status.get("state") != "not_configured":
                    status.update(state="not_configured", hub=None, force=True)
                    log.info("not paired with a hub: waiting for `acopio sync pair URL CODE`")
                # A pairing is noticed within seconds (its status said "not paired" for up
                # to sync.poll_s after it): a stat of the credentials file is all it costs.
                stop.wait(min(self.config.sync.poll_s, PAIRING_POLL_S))
                continue
            try:
                outcome = self.round(paired)
            except Stopped:
                log.info("sync stopped; an upload cut short resumes from the hub's offset")
                break
            except SyncError as exc:
                self._failed(exc)
                self._evict_offline()
                delay = self.backoff.next()
                log.info("next attempt in %.1f s", delay)
                stop.wait(delay)
                continue
            except Exception as exc:  # a damaged state file, a full disk: not the service's end
                log.exception("sync round failed")
                with contextlib.suppress(OSError):
                    self._status().error(f"{type(exc).__name__}: {exc}", code="internal")
                stop.wait(self.backoff.next())
                continue
            self.backoff.reset()
            if not outcome.complete and outcome.acked and not outcome.unsendable:
                stop.wait(1.0)  # more arrived meanwhile: go on soon
            else:
                stop.wait(self.config.sync.poll_s)
        with contextlib.suppress(SyncError):
            status.update(current=None, force=True,
                          state="idle" if self._paired() else "not_configured")

    def run_once(self, stop: threading.Event | None = None) -> tuple[int, str]:
        """`acopio sync --once`: (exit code, message). 0 only when the hub has acknowledged
        everything."""
        self.stop = stop or threading.Event()
        self._status()
        try:
            paired = self._paired()
        except SyncError as exc:
            self._failed(exc)
            return 1, str(exc)
        if paired is None:
            return 2, "this kit is not paired with a hub: run `acopio sync pair URL CODE`"
        failures = 0
        for _ in range(ONCE_ROUNDS):
            try:
                outcome = self.round(paired)
            except Stopped:
                return 1, "stopped before the hub acknowledged everything"
            except HubRefused as exc:
                self._failed(exc)
                return 1, str(exc)
            except SyncError as exc:
                self._failed(exc)
                failures += 1
                pending = self.outbox.scan()
                if failures >= ONCE_ATTEMPTS:
                    self._evict_offline()
                    return 1, (f"{exc} (gave up after {failures} attempts); "
                               f"{pending.items} items pending")
                delay = self.backoff.next()
                log.warning("attempt %d failed; next in %.2f s", failures, delay)
                if self.stop.wait(delay):
                    return 1, "stopped before the hub acknowledged everything"
                continue
            if outcome.acked:
                failures = 0
                self.backoff.reset()
            if outcome.complete:
                return 0, "everything is acknowledged by the hub"
            if outcome.unsendable or not outcome.acked:
                reasons = outcome.unsendable or [
                    f"{outcome.pending.items} items not acknowledged"]
                if outcome.pending.damaged:
                    reasons.append("damaged catalog shards (run `acopio check --repair`): "
                                   + ", ".join(outcome.pending.damaged))
                return 1, "; ".join(reasons)
        return 1, (f"still not everything acknowledged after {ONCE_ROUNDS} rounds "
                   f"({self.outbox.scan().items} items pending); try again")

    # -- one round -------------------------------------------------------------------------

    def round(self, paired: credentials.Credentials) -> Outcome:
        if paired != self._paired_with:
            # Paired again meanwhile (`acopio sync pair`, maybe with another hub, which
            # forgets the acknowledgements): nothing the outbox remembers holds any more.
            self.outbox = Outbox(self.data, self.store, self.catalog)
            self._paired_with = paired
        pending = self.outbox.scan()
        self._report(pending, state="sending" if not pending.empty else "idle", force=True)
        client = self._connect(paired)
        outcome = Outcome(pending)
        try:
            again, lost = Audit(self.store, self.config.sync.audit_hours).run(client)
            if again:
                pending = self.outbox.scan()  # what the hub lost goes again, this round
                outcome = Outcome(pending)
            outcome.unsendable += [f"{sha}: lost at the hub after it was acknowledged, and "
                                   "evicted from this kit" for sha in lost]
            self.push_agenda(client)  # first: the activities the records are filed into
            outcome.acked += self.push_records(client, pending.records)
            if self.pull(client):
                pending = self.outbox.scan()
                outcome.acked += self.push_records(client, pending.records)
            lanes_n = self.config.sync.parallel_uploads
            # The lanes share the cut bound: a dropped link cuts them all (sync.kit.lanes).
            chunk = max(64 * 1024, self.config.sync.chunk_mb * 1024 * 1024 // lanes_n)
            lanes = Lanes([self._transport(HubClient(client.base_url, client.token,
                                                     ca_file=self.config.sync.ca_file), chunk)
                           for _ in range(lanes_n)])
            abort = threading.Event()  # a lane failed: the others stop between chunks
            # Records went first: what is left to acknowledge is the originals, each
            # verified by the hub while the next ones upload (sync.kit.verifier).
            left_bytes = pending.bytes
            verifier = Verifier(client.base_url, client.token, self.config.sync.ca_file,
                                on_verified=self._verified)
            # Copies the hub found corrupt, sent once more through the lanes (so a cut still
            # costs at most one chunk), and which were.
            again: deque[Original] = deque()
            resent: set[str] = set()

            def settle(answered: Asked) -> None:
                self._settle(answered, outcome, again, resent)

            def uploaded(finished: list[Finished]) -> None:
                """Ask the hub to verify what reached it; then raise what an upload raised
                (the others that ended with it are asked about all the same)."""
                failure: BaseException | None = None
                for original, future in finished:
                    if (exc := future.exception()) is not None:
                        failure = failure or exc
                        continue
                    if problem := future.result():
                        outcome.unsendable.append(problem)
                        continue
                    # the answers already in, and the oldest when the window is full
                    while (answered := verifier.take(wait=verifier.full)) is not None:
                        settle(answered)
                    verifier.start(original)
                if failure is not None:
                    raise failure

            def submit(original: Original, after: Original | None = None) -> None:
                """To a free lane (`after`: read ahead while it finishes)."""
                path = self._sendable(original)
                if isinstance(path, str):
                    outcome.unsendable.append(path)
                    return
                lanes.submit(original, functools.partial(
                    self._transfer, path=path, abort=abort,
                    next_original=(self.data.root / after.archive_path, after.size)
                    if after else None))

            try:
                for done, original in enumerate(pending.originals):
                    if self.stop.is_set():
                        raise Stopped()
                    self._status().update(state="sending", pending_bytes=left_bytes,
                                          pending_items=len(pending.originals) - done)
                    left_bytes -= original.size
                    if self._evicted(original) or self._verified_before(client, original):
                        outcome.acked += 1
                        continue
                    while not lanes.free:
                        uploaded(lanes.finished(wait=True))
                    # One lane: the next file is read while this one finishes. Several: which
                    # lane takes it is not known yet, and the lanes overlap reads anyway.
                    submit(original, pending.originals[done + 1]
                           if lanes_n == 1 and done + 1 < len(pending.originals) else None)
                    uploaded(lanes.finished(wait=False))
                # The uploads still going, the questions, and what the answers send again.
                while True:
                    while again and lanes.free:
                        submit(again.popleft())
                    if lanes.busy:
                        uploaded(lanes.finished(wait=True))
                    elif (answered := verifier.take()) is not None:
                        settle(answered)
                    elif not again:
                        break
            finally:
                abort.set()
                unasked = lanes.close()
                # questions not asked or not answered: asked first next round
                for original in [*verifier.close(), *unasked]:
                    self._note_sent(original)
                self.store.sync_acks()
            if outcome.acked and pending.originals:
                # The hub catalogues an upload with the record it was sent before: take what
                # that changed now, so the next round has nothing to exchange.
                self.pull(client)
                outcome.acked += self.push_records(client, self.outbox.scan().records)
            Evictor(self.config, self.data, self.store, self.catalog).run(client)
        finally:
            client.close()
        outcome.pending = self.outbox.scan()
        changes: dict[str, Any] = {}
        if outcome.complete:
            changes["last_success"] = now_iso()
        if outcome.unsendable:
            changes["last_error"] = {"at": now_iso(), "message": "; ".join(outcome.unsendable),
                                     "code": "originals"}
        self._report(outcome.pending, state="error" if outcome.unsendable else "idle",
                     current=None, force=True, **changes)
        return outcome

    def _connect(self, paired: credentials.Credentials) -> HubClient:
        configured = self.config.sync.hub_url
        url = configured or self._url or paired.hub_url
        client = HubClient(url, paired.token, ca_file=self.config.sync.ca_file)
        try:
            client.object_status(ZERO_SHA)  # answers 404 when the hub is there and knows us
        except HubUnreachable as exc:
            client.close()
            # zeroconf only when the hub is not set by URL, and only where the box may use
            # zeroconf at all (web.zeroconf is its switch, web.zeroconf_interfaces its
            # addresses): never a multicast onto a network that is not the box's.
            if configured or not self.config.web.zeroconf:
                raise
            found = self._discover(paired, exc)
            if found is None:
                raise
            return found
        if self._status().status.get("hub") != url:
            self._status().update(hub=url, force=True)
        return client

    def _discover(self, paired: credentials.Credentials, cause: Exception
                  ) -> HubClient | None:
        from sync.kit.discover import find_hubs

        finder = self.find_hubs or find_hubs
        scheme = urlsplit(paired.hub_url).scheme
        try:
            hubs = finder(interfaces=self.config.web.zeroconf_interfaces, first=True)
        except Exception as exc:  # no network at all, zeroconf errors: stay offline
            log.info("zeroconf browse failed: %s", exc)
            return None
        for hub in hubs:
            url = hub.url(scheme)
            client = HubClient(url, paired.token, ca_file=self.config.sync.ca_file)
            try:
                client.object_status(ZERO_SHA)
            except SyncError as exc:
                log.info("hub %s at %s not usable: %s", hub.name, url, exc)
                client.close()
                continue
            log.info("hub at %s did not answer (%s); using %s found by zeroconf",
                     paired.hub_url, cause, url)
            self._url = url
            self._status().update(hub=url, force=True)
            return client
        return None

    # -- metadata --------------------------------------------------------------------------

    def push_agenda(self, client: HubClient) -> bool:
        """The kit's agenda (activities added, changed or removed here, with their stamps)
        to the hub, which merges it per field as it merges records and sends it on to the
        other kits; only when it changed since the hub last took it. Whether it was sent."""
        records = Agenda(self.data.state).records()
        digest = hashlib.sha256(dump_json(sorted(records, key=lambda r: str(r.get("slug"))))
                                ).hexdigest()
        if not records or digest == self.store.agenda_sent():
            return False
        for start in range(0, len(records), RECORDS_BATCH):
            answer = client.send_records([], agenda=records[start:start + RECORDS_BATCH])
            if answer.get("agenda_changed"):
                log.info("the hub took agenda changes of %s",
                         ", ".join(map(str, answer["agenda_changed"])))
        self.store.set_agenda_sent(digest)
        return True

    def push_records(self, client: HubClient, records: list[dict[str, Any]]) -> int:
        acked = 0
        for batch in batches(records):
            if self.stop.is_set():
                raise Stopped()
            answer = client.send_records(batch)
            refused = _refused(answer)
            for sha, reason in refused.items():
                log.warning("the hub refused the record of %s: %s", sha, reason)
            accepted = [r for r in batch if r["sha256"] not in refused]
            self.store.ack_records(accepted)
            acked += len(accepted)
            log.info("sent metadata of %d items (%s first); the hub accepted %d",
                     len(batch), TIERS[_tier(batch[0])], len(accepted))
        return acked

    def pull(self, client: HubClient) -> int:
        """Changes from the hub since the stored cursor; how many items changed here."""
        from sync.kit import pull

        return pull.pull(self.config, self.data, self.catalog, self.store, client,
                         should_stop=self.stop.is_set)

    # -- originals -------------------------------------------------------------------------

    def _settle(self, taken: Asked, outcome: Outcome, again: deque[Original],
                resent: set[str]) -> None:
        """The answer to a verification started before (sync.kit.verifier, which recorded a
        verified one). A copy the hub found corrupt goes into `again`, once."""
        original, answer = taken
        try:
            verified = answer.result()
        except HubCorrupt as exc:
            # The hub hashed the bytes when the last one came: a copy failing its re-hash now
            # is the hub's disk. The hub set it aside and wants the original again.
            if original.sha256 in resent:
                log.warning("%s %s: %s again", original.sha256, original.shown, exc)
                outcome.unsendable.append(
                    f"{original.archive_path}: the hub's copy failed verification again "
                    "(check the hub's disk and log); it is sent again next round")
                return
            log.warning("%s %s: %s; sending it again", original.sha256, original.shown, exc)
            resent.add(original.sha256)
            again.append(original)
            return
        except HubUnreachable:
            self._note_sent(original)  # the question was lost with the link
            raise
        if verified is None:
            log.warning("the hub did not verify %s %s after its upload", original.sha256,
                        original.shown)
            outcome.unsendable.append(
                f"{original.archive_path}: the hub did not verify it (its SHA-256 on the kit "
                "may be damaged: run `acopio check --deep`)")
            return
        outcome.acked += 1  # (logged as acknowledged by _verified, when recorded)

    def _note_sent(self, original: Original) -> None:
        """Sent whole, its question to the hub unanswered: asked first next round."""
        if self.store.object_acked(original.sha256):  # answered after all
            return
        try:
            self.store.uploads.put(original.sha256, {"sent": now_iso()})
        except OSError as exc:  # then it is sent again, that is all
            log.warning("could not note %s as sent: %s", original.shown, exc)

    def _verified_before(self, client: HubClient, original: Original) -> bool:
        """Sent in an earlier round whose question about it went unanswered (a cut, a
        stop): the hub is asked first, and it is marked synced on a verified answer instead
        of being sent again."""
        entry = self.store.uploads.get(original.sha256)
        if not entry or "sent" not in entry:
            return False
        try:
            verified = client.object_status(original.sha256, verify=True, size=original.size)
        except HubCorrupt:
            verified = None  # set aside at the hub: sent again now
        if verified is None:
            self.store.uploads.remove(original.sha256)
            return False
        self._record_ack(original)
        log.info("acknowledged %s %s (sent before)", original.sha256, original.shown)
        return True

    def _evicted(self, original: Original) -> bool:
        """Acknowledged before and evicted since (nothing to send)."""
        path = self.data.root / original.archive_path
        return not os.path.lexists(path) and \
            self.store.evicted.get(original.sha256) is not None

    def _sendable(self, original: Original) -> Path | str:
        """Its path in the archive when it can be sent (after waiting while a card imports),
        else why not. Logs "uploading": the outbox's order."""
        path = self.data.root / original.archive_path
        if not os.path.lexists(path):
            log.warning("%s: original missing from the archive; cannot be sent (%s)",
                        original.archive_path, RESTORE_HINT)
            return f"{original.archive_path}: missing from the archive ({RESTORE_HINT})"
        try:
            size = os.lstat(path).st_size
        except OSError as exc:
            return f"{original.archive_path}: cannot be read ({exc.strerror})"
        if size != original.size:
            log.warning("%s: %d bytes on disk, %d catalogued; not sent (%s)",
                        original.archive_path, size, original.size, RESTORE_HINT)
            return (f"{original.archive_path}: {size} bytes on disk, {original.size} "
                    f"catalogued ({RESTORE_HINT})")
        # No question first: the upload's creation answers "complete" when the hub already
        # holds this content from this kit (an acknowledgement lost), and nothing is sent.
        self._hold_during_import()
        log.info("uploading %s %s (%d bytes, %s)", original.sha256, original.shown,
                 original.size, TIERS[original.tier])
        return path

    def _transfer(self, transport: Transport, original: Original, *, path: Path,
                  abort: threading.Event | None = None,
                  next_original: tuple[Path, int] | None = None) -> str | None:
        """The upload itself (on a lane's thread); None when the hub has every byte, else
        why not. `abort` stops it at the next chunk boundary; `next_original` (path, size)
        is read from the disk while this one finishes."""
        status = self._status()

        def progress(offset: int) -> None:
            status.update(state="sending", current={
                "sha256": original.sha256, "name": original.name, "offset": offset,
                "size": original.size, "rate_bps": self._meter.add(original.sha256, offset)})

        def between_chunks() -> None:
            if abort is not None and abort.is_set():
                raise Stopped()
            self._hold_during_import()

        hooks = Hooks(should_stop=self.stop.is_set, between_chunks=between_chunks,
                      progress=progress)
        try:
            sent = transport.send(path, sha256=original.sha256, name=original.name,
                                  kind=original.kind, hooks=hooks, next_original=next_original)
        except (TooLarge, SourceChanged) as exc:
            log.warning("%s", exc)
            return str(exc)
        except UploadGone as exc:
            # Dropped mid-way (the hub found the whole file's SHA-256 is not the one
            # announced, or expired the upload): the next round starts it again, unless
            # this kit's own copy is what is wrong, which sending again cannot mend.
            transport.urls.remove_item(original.sha256)
            log.warning("%s", exc)
            damaged = self._damaged_here(path, original)
            if damaged:
                return damaged
            return f"{original.archive_path}: {exc}; it is sent again next round"
        finally:
            self._meter.done(original.sha256)
        log.info("uploaded %s %s: %d bytes sent in %.2f s (%.0f KiB/s), from offset %d",
                 original.sha256, original.shown, sent.sent, sent.seconds,
                 sent.rate_bps / 1024, sent.resumed_from)
        return None

    def _damaged_here(self, path: Path, original: Original) -> str | None:
        """When this kit's copy no longer has its SHA-256 (bit rot on the card the archive
        lives on), it is set aside (ingest.copy.set_aside_damaged) and why is returned;
        else None. Otherwise it would go up again every round, and be refused every time."""
        from ingest.copy import ReadBack, set_aside_damaged

        try:
            actual, _ = ReadBack().sha256(path)
        except OSError as exc:
            return f"{original.archive_path}: cannot be read ({exc.strerror})"
        if actual == original.sha256:
            return None
        aside = set_aside_damaged(self.data.state, path, original.sha256)
        log.error("%s: this kit's copy is damaged (SHA-256 %s, catalogued %s); set aside as "
                  "%s, not sent again (%s)", original.archive_path, actual, original.sha256,
                  aside, RESTORE_HINT)
        return (f"{original.archive_path}: this kit's copy is damaged and was set aside "
                f"({RESTORE_HINT})")

    def _transport(self, client: HubClient, chunk_size: int) -> Transport:
        return Transport(client, self.store.uploads, chunk_size=chunk_size,
                         limiter=self.limiter)

    def _verified(self, original: Original) -> None:
        """The hub verified an upload (the verifier's thread): recorded and said at once. Said
        later, when the round took the answer, a round cut meanwhile recorded it unsaid."""
        self._record_ack(original)
        log.info("acknowledged %s %s", original.sha256, original.shown)

    def _record_ack(self, original: Original) -> None:
        """Synced: durable within a batch, and before anything relies on it (eviction; see
        sync.kit.store)."""
        self.store.ack_object(original.sha256, original.size)
        # An upload whose last answer was lost (the hub kept the file, then the link died)
        # left its URL behind (or a note that it was sent): nothing to resume any more.
        self.store.uploads.remove(original.sha256)

    def _hold_during_import(self) -> None:
        """Wait while a card or camera imports (sync.pause_during_import)."""
        if not self.config.sync.pause_during_import:
            return
        announced = False
        while (device := import_running(self.data)) is not None:
            if not announced:
                log.info("uploads held while %s imports", device)
                announced = True
            self._status().update(state="paused", current=None)
            if self.stop.wait(PAUSE_POLL_S):
                raise Stopped()
        if announced:
            log.info("import finished; uploads resume")
            self._status().update(state="sending", force=True)
        if self.stop.is_set():
            raise Stopped()

    # -- bookkeeping -----------------------------------------------------------------------

    def _paired(self) -> credentials.Credentials | None:
        """The pairing, None when there is none (or it is damaged: pair again). A file that
        cannot be read (its owner, a failing disk) raises SyncError: pairing again would not
        help, and the role must not die of it (that would restart the whole service)."""
        try:
            return credentials.load(self.data)
        except CorruptStateError as exc:
            if str(exc) != self._damaged_pairing:  # once, not at every look
                self._damaged_pairing = str(exc)
                log.error("sync credentials unreadable: %s; pair the kit again", exc)
            return None
        except OSError as exc:
            raise SyncError(f"cannot read the pairing, {credentials.path_of(self.data)}: "
                            f"{exc.strerror or exc}; it must be readable by the user this "
                            "runs as") from exc

    def _status(self) -> StatusWriter:
        if self.status is None:
            try:
                paired = self._paired()
            except SyncError:
                paired = None
            hub = self.config.sync.hub_url or (paired.hub_url if paired else None)
            self.status = StatusWriter(self.data, hub=hub)
        return self.status

    def _report(self, pending: Pending, *, force: bool = False, **changes: Any) -> None:
        self._status().update(pending_items=pending.items, pending_bytes=pending.bytes,
                              force=force, **changes)

    def _failed(self, exc: SyncError) -> None:
        state = "offline" if isinstance(exc, HubUnreachable) else "error"
        code = "unreachable" if isinstance(exc, HubUnreachable) else \
            "untrusted" if isinstance(exc, HubUntrusted) else \
            "refused" if isinstance(exc, HubRefused) else "hub"
        log.warning("sync: %s", exc)
        self._status().error(str(exc), state=state, code=code)

    def _evict_offline(self) -> None:
        """Space runs out at events, where there is no hub: the acknowledgements decide."""
        try:
            Evictor(self.config, self.data, self.store, self.catalog).run(None)
        except OSError as exc:
            log.warning("eviction failed: %s", exc)


def batches(records: list[dict[str, Any]], *, count: int = RECORDS_BATCH,
            size: int = RECORDS_BATCH_BYTES) -> Iterator[list[dict[str, Any]]]:
    """Records in requests of at most `count` records and about `size` bytes of JSON."""
    batch: list[dict[str, Any]] = []
    total = 0
    for record in records:
        length = len(dump_json(record))
        if batch and (len(batch) >= count or total + length > size):
            yield batch
            batch, total = [], 0
        batch.append(record)
        total += length
    if batch:
        yield batch


def _refused(answer: dict[str, Any]) -> dict[str, str]:
    """{sha256: reason} of the records the hub says it did not take: `results`, one entry
    per record (the answer's other keys, "refused": 1 and the like, are counts)."""
    out: dict[str, str] = {}
    results = answer.get("results")
    for entry in results if isinstance(results, list) else []:
        if isinstance(entry, dict) and entry.get("status") == "refused" \
                and isinstance(entry.get("sha256"), str):
            out[entry["sha256"]] = str(entry.get("message") or "")
    return out


def _tier(record: dict[str, Any]) -> int:
    from sync.kit.outbox import tier

    return tier(record)

