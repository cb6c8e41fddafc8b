"""The hub keeps uploads after the final PATCH's answer, several at a time (sync.hub.keeper):
every file kept once, verified, durable; files that arrive meanwhile share one shard write;
two kits sending one content in the same batch make one file with both kits; a question
about a file waits for its keep; a stop keeps what was submitted; a keep that fails is tried
again when the kit asks."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from appliance.catalog import Catalog
from appliance.config import Config
from sync.hub.keeper import Keeper
from sync.hub.ledger import Hub
from sync.hub.uploads import Upload, UploadError


class Body:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        n = len(self.data) - self.pos if n < 0 else n
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out


def create(hub: Hub, kit: str, data: bytes, name: str) -> Upload:
    return hub.create_upload(kit, len(data), {"sha256": hashlib.sha256(data).hexdigest(),
                                              "filename": name, "kind": "other"})


def send(hub: Hub, upload: Upload, data: bytes) -> None:
    """The upload's one PATCH, answered: as the PATCH handler does it."""
    with hub.uploads.locked(upload.kit, upload.id) as current:
        current = hub.uploads.append(current, 0, Body(data), len(data), None)
        hub.finish(current, wait=False)


def arrive(hub: Hub, kit: str, data: bytes, name: str) -> Upload:
    upload = create(hub, kit, data, name)
    send(hub, upload, data)
    return upload


def test_files_arriving_meanwhile_are_kept_together(config: Config,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    hub = Hub(config)
    writes: list[tuple[str, int]] = []
    real = Catalog.upsert

    def counted(self: Catalog, folder: str, records: Any, **kw: Any) -> None:
        records = list(records)
        writes.append((folder, len(records)))
        real(self, folder, records, **kw)

    monkeypatch.setattr(Catalog, "upsert", counted)
    files = [os.urandom(5000 + n) for n in range(12)]
    try:
        # another kit sends one of the same contents (created first: a creation waits for
        # a keep of its content in progress, to answer "already here" when it can)
        again = create(hub, "kit-b", files[5], "otra.bin")
        with hub.lock:  # the keeper is held at its first file, as if busy with a slow disk
            first = arrive(hub, "kit-a", files[0], "f00.bin")
            uploads = [arrive(hub, "kit-a", data, f"f{n:02d}.bin")
                       for n, data in enumerate(files[1:], 1)]
            send(hub, again, files[5])
            shas = [hashlib.sha256(d).hexdigest() for d in files]
            assert all(hub.keeper.busy_with(sha) for sha in shas)
            assert hub.record(shas[3]) is None  # answered, not yet kept
        assert hub.keeper.idle(30)
        # what the keeper had gathered when it was held, then everything that came meanwhile
        # in one write (the second kit's copy of one of them found it kept and only joined
        # its record): one or two shard writes for twelve new records, not twelve
        assert len(writes) in (1, 2) and sum(n for _f, n in writes) == 12, writes
        assert len({folder for folder, _n in writes}) == 1
        for sha, data in zip(shas, files, strict=True):
            record = hub.record(sha)
            assert record is not None
            path = hub.original_path(record)
            assert path is not None and path.read_bytes() == data
        assert hub.record(shas[5])["kits"] == ["kit-a", "kit-b"]
        assert sum(1 for p in (hub.data.archive).rglob("*") if p.is_file()) == 12
        for upload in [first, *uploads, again]:
            state = hub.uploads.get(upload.kit, upload.id)
            assert state is not None and state.done
            assert not hub.uploads.data_path(state).exists()
        # what a kit asks (its acknowledgement) is answered once kept, and reads it back
        answer = hub.object_status("kit-b", shas[5], verify=True)
        assert answer is not None and answer["verified"]
    finally:
        hub.close()


def test_a_question_waits_for_the_keep_and_a_stop_keeps_what_came(config: Config) -> None:
    hub = Hub(config)
    data = os.urandom(40_000)
    sha = hashlib.sha256(data).hexdigest()
    answers: list[Any] = []
    with hub.lock:
        arrive(hub, "kit-a", data, "espera.bin")
        asking = threading.Thread(target=lambda: answers.append(
            hub.object_status("kit-a", sha, verify=True)))
        asking.start()
        asking.join(0.3)
        assert asking.is_alive() and not answers  # not "not found": it waits
    asking.join(10)
    assert answers and answers[0]["verified"] is True
    # submitted, then the hub stops at once: close keeps it before it returns
    other = os.urandom(30_000)
    with hub.lock:
        arrive(hub, "kit-a", other, "cierre.bin")
        closing = threading.Thread(target=hub.close)
        closing.start()
    closing.join(30)
    assert not closing.is_alive()
    again = Hub(config)
    try:
        record = again.record(hashlib.sha256(other).hexdigest())
        assert record is not None and again.original_path(record) is not None
    finally:
        again.close()


def test_a_keep_that_fails_is_tried_again_when_the_kit_asks(
        config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk while keeping: the kit's question is told 507 (it asks again later, the
    file stays unacknowledged), and kept once the disk has room; nothing is sent again."""
    hub = Hub(config)
    real = Hub._place
    failures = {"left": 2}

    def full_disk(self: Hub, *args: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args)

    monkeypatch.setattr(Hub, "_place", full_disk)
    data = os.urandom(20_000)
    sha = hashlib.sha256(data).hexdigest()
    try:
        upload = arrive(hub, "kit-a", data, "lleno.bin")
        assert hub.keeper.idle(30)
        assert failures["left"] == 1 and hub.record(sha) is None
        with pytest.raises(UploadError) as refused:  # tried again at once: still full
            hub.object_status("kit-a", sha, verify=True)
        assert refused.value.status == 507 and refused.value.code == "keep_failed"
        assert "No space left" in refused.value.message
        answer = hub.object_status("kit-a", sha, verify=True)  # room again: kept now
        assert answer is not None and answer["verified"] is True
        state = hub.uploads.get("kit-a", upload.id)
        assert state is not None and state.done
        record = hub.record(sha)
        assert record is not None and hub.original_path(record).read_bytes() == data
    finally:
        hub.close()


def test_uploads_that_follow_each_other_closely_are_kept_in_one_batch() -> None:
    """A kit's photos come a few milliseconds apart, faster than one keep each: they wait
    for the gathering to end and go in one batch (one shard write), in the order submitted;
    one that comes after the batch went is kept in the next."""
    batches: list[list[str]] = []
    keeper = Keeper(lambda batch: batches.append([upload_id for _k, upload_id, _s in batch]),
                    gather_s=0.5)
    try:
        for n in range(5):
            keeper.submit("kit-a", f"u{n}", f"{n:064x}")
            threading.Event().wait(0.02)
        assert keeper.wait(f"{4:064x}", timeout=10)
        keeper.submit("kit-a", "late", f"{9:064x}")
        assert keeper.idle(10)
        assert batches == [["u0", "u1", "u2", "u3", "u4"], ["late"]]
        # a full batch does not wait for the gathering to end
        full = Keeper(lambda batch: batches.append([u for _k, u, _s in batch]), max_batch=3,
                      gather_s=30)
        for n in range(3):
            full.submit("kit-b", f"f{n}", f"{n:064x}")
        assert full.idle(5) and batches[-1] == ["f0", "f1", "f2"]
        full.close()
    finally:
        keeper.close()


def test_contacts_are_written_at_most_once_a_minute_and_survive_damage(tmp_path: Path) -> None:
    from sync.hub.contact import WRITE_EVERY_S, Contacts

    now = [1_800_000_000.0]
    (tmp_path / "tmp").mkdir()
    contacts = Contacts(tmp_path, clock=lambda: now[0], ticks=lambda: now[0])
    contacts.seen("kit-a", "10.0.0.7")
    written = contacts.path.stat().st_mtime_ns
    now[0] += WRITE_EVERY_S / 2
    contacts.seen("kit-a", "10.0.0.8")  # kept in memory: a chunk a second writes nothing
    assert contacts.path.stat().st_mtime_ns == written
    assert contacts.read()["kit-a"]["address"] == "10.0.0.8"
    assert Contacts(tmp_path).read()["kit-a"]["address"] == "10.0.0.7"  # another process
    now[0] += WRITE_EVERY_S
    contacts.seen("kit-a", "10.0.0.9")
    assert Contacts(tmp_path).read()["kit-a"] == {"at": "2027-01-15T08:01:30+00:00",
                                                  "address": "10.0.0.9"}
    contacts.path.write_bytes(b'{"kit-a": {"at": ')  # torn by a crash
    assert Contacts(tmp_path).read() == {}
    fresh = Contacts(tmp_path, clock=lambda: now[0])
    fresh.seen("kit-b", None)
    assert set(Contacts(tmp_path).read()) == {"kit-b"}


def test_contacts_are_written_after_the_hubs_clock_stepped_back(tmp_path: Path) -> None:
    """The once-a-minute pacing compared wall times: NTP stepping back a hub clock that ran
    6 h ahead held every write back for 6 h (`acopio hub kits` showed a stale time)."""
    from sync.hub.contact import WRITE_EVERY_S, Contacts

    wall, ticks = [1_800_000_000.0], [500.0]
    (tmp_path / "tmp").mkdir()
    contacts = Contacts(tmp_path, clock=lambda: wall[0], ticks=lambda: ticks[0])
    contacts.seen("kit-a", "10.0.0.5")
    wall[0] -= 6 * 3600
    for _ in range(3):
        wall[0] += WRITE_EVERY_S
        ticks[0] += WRITE_EVERY_S
        contacts.seen("kit-a", "10.0.0.5")
    assert Contacts(tmp_path).read() == contacts.read()


def test_a_contact_file_with_a_bad_time_is_read_as_empty_for_that_kit(tmp_path: Path) -> None:
    """A contact time that is not a time made the hub's status page a 500."""
    from sync.hub.contact import Contacts

    (tmp_path / "contact.json").write_text(
        '{"kit-a": {"at": "ayer", "address": "x"}, '
        '"kit-b": {"at": "2027-01-15T08:00:00+00:00", "address": "10.0.0.2"}}')
    assert set(Contacts(tmp_path).read()) == {"kit-b"}
