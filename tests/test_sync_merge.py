"""Sync's hybrid logical clocks and per-field merge (sync/hlc.py, sync/merge.py), and the
stamps that editing, re-filing and the agenda put on what they change.

The clocks are real (state files under an flock in temporary folders, real separate
processes), with injected wall clocks that step back and disagree between boxes. The merge
is checked for its algebra (commutative, associative, idempotent) with hypothesis, and then
for the property the issue asks for: two kits and the hub that edited offline, synced in
random subsets, cut short, in any order, converge to the same state once connected; once
with plain records and the real agenda, once with real catalog shards and the edit log.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance import fields
from appliance.agenda import Activity, Agenda, AgendaError, parse_time
from appliance.catalog import Catalog
from appliance.check import check
from appliance.config import Config
from appliance.datadir import DataDir
from appliance.editorial import EditLog, Editor, apply, replay
from appliance.refile import Refiler
from sync import hlc
from sync.hlc import Clock
from sync.merge import (
    ACTIVITY_GROUPS,
    IMPORT_FACTS,
    MERGED,
    activity_removed,
    changed_fields,
    field_stamp,
    merge_activity,
    merge_into_agenda,
    merge_into_catalog,
    merge_record,
    projection,
)
from tests.cards import sha256_file
from tests.conftest import REPO

T0 = 1_778_400_000_000  # 2026-05-10 08:00 UTC, in ms
DAY_MS = 24 * 3600 * 1000


class Wall:
    """A wall clock a test turns by hand (milliseconds)."""

    def __init__(self, ms: int = T0) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


# -- the clock ------------------------------------------------------------------------------


def test_stamps_are_text_that_compares_like_the_clock() -> None:
    stamp = hlc.make(T0, 7, "kit-cultura")
    assert stamp == "1778400000000-0007-kit-cultura"
    assert hlc.parse(stamp) == (T0, 7, "kit-cultura")
    ordered = [hlc.make(1, 0, "z"), hlc.make(1, 1, "a"), hlc.make(2, 0, "a"),
               hlc.make(2, 0, "b"), hlc.make(10**12, 0, "a"), hlc.make(T0, 9999, "hub")]
    assert sorted(ordered) == sorted(ordered, key=hlc.parse)
    for garbage in ["", "1778400000000-0007", "1778400000000-0007-Kit", "177840000000-0007-a",
                    "1778400000000-07-a", "1778400000000-0007-a b", "x" * 30, None, 17,
                    "1778400000000-0007-" + "a" * 64, "１７７８４００００００００-0007-a",
                    "1778400000000-0007-a\n"]:
        with pytest.raises(ValueError):
            hlc.parse(garbage)  # type: ignore[arg-type]
    for bad in [(-1, 0, "a"), (10**13, 0, "a"), (0, 10_000, "a"), (0, 0, "Hub"), (0, 0, "")]:
        with pytest.raises(ValueError):
            hlc.make(*bad)
    assert hlc.node_name("kit-cultura") == "kit-cultura"
    assert hlc.node_name("Prensa Norte — Cabildo") == "prensa-norte-cabildo"
    assert hlc.node_name("¡¿!") == "kit"
    assert len(hlc.node_name("x" * 200)) == 63


def test_the_clock_never_goes_back_when_the_wall_clock_does(tmp_path: Path) -> None:
    wall = Wall()
    clock = Clock(tmp_path, "kit-a", wall)
    stamps = [clock.now() for _ in range(3)]
    wall.ms -= 3_600_000  # NTP steps the clock back an hour
    stamps += [clock.now() for _ in range(3)]
    wall.ms += 10  # still behind the stamps already issued
    stamps += [clock.now()]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert [hlc.parse(s)[:2] for s in stamps[:5]] == [(T0, 0), (T0, 1), (T0, 2), (T0, 3),
                                                      (T0, 4)]
    wall.ms = T0 + 5  # the wall clock passes the stamps again: the counter starts over
    assert hlc.parse(clock.now())[:2] == (T0 + 5, 0)
    # 10,000 stamps in one millisecond: the wall part moves on, the text still sorts.
    wall.ms = T0 + 6
    clock.observe(hlc.make(T0 + 6, 9997, "kit-b"))
    many = [clock.now() for _ in range(3)]
    assert many == sorted(many) and [hlc.parse(s)[:2] for s in many] == [
        (T0 + 6, 9998), (T0 + 6, 9999), (T0 + 7, 0)]


def test_the_clock_persists_across_instances_restarts_and_a_power_cut(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wall = Wall()
    first = Clock(tmp_path, "kit-a", wall).now()
    wall.ms -= 60_000
    second = Clock(tmp_path, "kit-a", wall).now()  # a restart with the clock behind
    assert second > first
    state = tmp_path / "sync" / "hlc.json"
    assert json.loads(state.read_text())["wall"] == T0
    # A power cut loses the last (unsynced) state write: after the new boot the clock starts
    # from its durable floor, above every stamp it issued before.
    before_cut = state.read_bytes()
    issued = [Clock(tmp_path, "kit-a", wall).now() for _ in range(5)]
    state.write_bytes(before_cut)
    monkeypatch.setattr(hlc, "_boot_id", lambda: "another-boot")
    after = Clock(tmp_path, "kit-a", wall).now()
    assert after > max(issued)
    # A damaged state file (a dying SD card): the floor still holds.
    state.write_bytes(b"\x00" * 20)
    assert Clock(tmp_path, "kit-a", wall).now() > after
    # Without a boot id to tell a new boot, every state write is durable instead.
    monkeypatch.setattr(hlc, "_boot_id", lambda: None)
    state.unlink()
    plain = Clock(tmp_path, "kit-a", Wall(T0 + 5000))
    assert [plain.now(), plain.now()] == [hlc.make(T0 + 5000, 0, "kit-a"),
                                          hlc.make(T0 + 5000, 1, "kit-a")]


def test_observe_moves_the_clock_past_what_it_received(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    wall = Wall()
    clock = Clock(tmp_path, "kit-a", wall)
    clock.observe(hlc.make(T0 + 90_000, 3, "hub"))  # the hub's clock is 90 s ahead
    assert clock.now() == hlc.make(T0 + 90_000, 4, "kit-a")
    clock.observe(hlc.make(T0, 0, "kit-b"))  # older: changes nothing
    assert clock.now() == hlc.make(T0 + 90_000, 5, "kit-a")
    assert Clock(tmp_path, "kit-b", wall).now() == hlc.make(T0 + 90_000, 6, "kit-b")
    for garbage in ["1778400000000-0001-KIT", "latest", ""]:
        with pytest.raises(ValueError):
            clock.observe(garbage)
    future = hlc.make(T0 + DAY_MS + 1000, 0, "kit-2040")
    with pytest.raises(ValueError, match="future"):
        clock.observe(future)
    assert "kit-2040" in caplog.text
    assert clock.now() == hlc.make(T0 + 90_000, 7, "kit-a")  # not absorbed
    clock.observe(hlc.make(T0 + DAY_MS - 1000, 0, "kit-c"))  # less than a day ahead: taken
    assert clock.now() > hlc.make(T0 + DAY_MS - 1000, 0, "kit-c")


HAMMER = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from sync.hlc import Clock
    state, node, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    out = {}
    def run(name):
        clock = Clock(state, node)
        out[name] = [clock.now() for _ in range(count)]
    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads: t.start()
    for t in threads: t.join()
    for name, stamps in out.items():
        print(name, " ".join(stamps))
""")


def test_two_processes_and_their_threads_never_share_a_stamp(tmp_path: Path) -> None:
    count = 400
    procs = [subprocess.Popen([sys.executable, "-c", HAMMER, str(tmp_path), node, str(count)],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
             for node in ("kit-a", "kit-a")]  # one node name: only the clock keeps them apart
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    every = []
    for output in outputs:
        for line in output.splitlines():
            stamps = line.split()[1:]
            assert len(stamps) == count and stamps == sorted(stamps)  # increasing per thread
            every += stamps
    assert len(set(every)) == len(every) == 4 * count
    assert Clock(tmp_path, "hub").now() > max(every)


# -- the merge, as algebra -------------------------------------------------------------------

SHA = "5" * 64
NODES = ["kit-a", "kit-b", "hub"]
AT = ["2026-05-10T10:00:00+00:00", "2026-05-10T10:00:01+00:00", "2026-05-11T09:00:00+00:00"]
FOLDERS = ["2026/05/2026-05-10_sin-actividad", "2026/05/2026-05-10_cabildo",
           "2026/06/2026-06-01_feria"]
FILINGS = [(FOLDERS[0], "sin-actividad"), (FOLDERS[1], "cabildo"), (FOLDERS[2], "feria")]
VALUES: dict[str, list[Any]] = {
    "caption": ["", "Sesión de cabildo", "Feria del libro"],
    "tags": [[], ["cabildo"], ["cabildo", "prensa"]],
    "people": [[], ["Ana Pérez"], ["Ana Pérez", "Luis Díaz"]],
    "credit": ["", "Comunicación Social", "Ana Pérez"],
    "place": ["", "Palacio municipal", "Plaza"],
    "pick": [None, "picked", "rejected"],
    "rating": [0, 3, 5],
    "approved": [False, True],
    "approved_by": [None, "directora", "subdirector"],
    "approved_at": [None, *AT],
    "folder": FOLDERS,
    "activity": ["sin-actividad", "cabildo", "feria"],
}
HISTORY = [{"at": at, "by": by, "action": "edit", "changes": {"caption": ["", text]}}
           for at in AT[:2] for by in ("ana", "luis") for text in ("a", "b")]

stamps = st.builds(hlc.make, st.integers(T0, T0 + 3), st.integers(0, 2), st.sampled_from(NODES))
marks = st.one_of(
    st.none(),
    st.fixed_dictionaries({"revision": st.integers(0, 5), "by": st.sampled_from(["ana", "luis"]),
                           "at": st.sampled_from(AT)}, optional={"hlc": stamps}))


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {"sha256": SHA, "size": draw(st.integers(1, 3)),
                              "captured_at": draw(st.sampled_from(AT)),
                              "archive_path": draw(st.sampled_from(["archive/x/1.jpg", None]))}
    edited = {}
    for field in MERGED:
        if draw(st.booleans()):
            record[field] = draw(st.sampled_from(VALUES[field]))
        mark = draw(marks)
        if mark is not None:
            edited[field] = mark
    record["edited"] = edited
    record["history"] = draw(st.lists(st.sampled_from(HISTORY), max_size=4))
    record["revision"] = draw(st.integers(0, 9))
    return record


def test_two_imports_of_one_photo_keep_the_likelier_filing() -> None:
    """Two kits imported the same photo and filed it by what each knew; nobody re-filed it.
    The filing an agenda gave beats `sin-actividad`, then the earlier day wins (a copy's
    file time only moves later); before, the folder name that sorted last won."""
    def imported(folder: str, activity: str) -> dict[str, Any]:
        return {"sha256": SHA, "size": 1, "folder": folder, "activity": activity,
                "edited": {}, "history": [], "revision": 0}

    late = imported("2026/11/2026-11-26_sin-actividad", "sin-actividad")
    early = imported("2025/03/2025-03-21_sin-actividad", "sin-actividad")
    planned = imported("2026/11/2026-11-27_feria", "feria")
    for one, other, winner in ((late, early, early), (late, planned, planned),
                               (early, planned, planned)):
        for a, b in ((one, other), (other, one)):
            merged = merge_record(copy.deepcopy(a), copy.deepcopy(b))
            assert (merged["folder"], merged["activity"]) == (
                winner["folder"], winner["activity"])
    refiled = dict(late, edited={"folder": {"hlc": hlc.make(T0, 0, "kit-a")},
                                 "activity": {"hlc": hlc.make(T0, 0, "kit-a")}})
    assert merge_record(copy.deepcopy(planned), refiled)["folder"] == late["folder"]


FAST = settings(max_examples=150, deadline=None)


@FAST
@given(records(), records(), records())
def test_merge_record_is_commutative_associative_and_idempotent(a: dict, b: dict,
                                                                c: dict) -> None:
    originals = copy.deepcopy((a, b, c))
    ab = merge_record(a, b)
    assert projection(ab) == projection(merge_record(b, a))
    assert projection(merge_record(ab, c)) == projection(merge_record(a, merge_record(b, c)))
    assert projection(merge_record(ab, b)) == projection(ab)
    assert projection(merge_record(ab, ab)) == projection(ab)
    assert merge_record(ab, ab)["revision"] == ab["revision"]  # nothing new: no new revision
    assert (a, b, c) == originals  # the arguments are left alone
    # Each merged group comes whole from the side with its greatest stamp.
    for group in fields.MERGE_GROUPS:
        top = max(max(field_stamp(a, f), field_stamp(b, f)) for f in group)
        assert max(field_stamp(ab, f) for f in group) == top
    # What the import found is never changed by a merge, whatever arrives.
    for key in IMPORT_FACTS:
        if key in a:
            assert ab[key] == a[key]
    assert ab["revision"] in (a["revision"], a["revision"] + 1)
    assert set(changed_fields(a, ab)) <= set(MERGED)
    assert merge_record(None, b) == merge_record(None, merge_record(None, b))


def test_a_merge_keeps_the_newer_value_with_its_mark_and_unites_histories() -> None:
    def rec(caption: str, stamp: str, by: str, history: list) -> dict:
        return {"sha256": SHA, "size": 1, "caption": caption, "revision": 4,
                "edited": {"caption": {"revision": 4, "by": by, "at": AT[0], "hlc": stamp}},
                "history": history, **{k: v for k, v in fields.defaults().items()
                                       if k not in ("caption", "edited", "history", "revision")}}
    older = rec("Desde el kit", hlc.make(T0, 0, "kit-a"), "ana", HISTORY[:2])
    newer = rec("Desde la sede", hlc.make(T0, 1, "hub"), "luis", HISTORY[1:3])
    newer["size"] = 999  # an import fact: the local one stays
    merged = merge_record(older, newer)
    assert merged["caption"] == "Desde la sede" and merged["size"] == 1
    assert merged["edited"]["caption"] == {"revision": 5, "by": "luis", "at": AT[0],
                                           "hlc": hlc.make(T0, 1, "hub")}
    assert merged["revision"] == 5 and merged["history"] == sorted(
        HISTORY[:3], key=lambda h: (h["at"], h["by"], h["action"], json.dumps(h["changes"])))
    assert changed_fields(older, merged) == ["caption"]
    assert merge_record(newer, older)["caption"] == "Desde la sede"
    # The approval travels whole: a later withdrawal on one side and an approval stamped in
    # between on the other never mix into "withdrawn, approved by the other".
    approve = {"approved": True, "approved_by": "subdirector", "approved_at": AT[1]}
    withdraw = {"approved": False, "approved_by": "directora", "approved_at": AT[2]}
    base = apply(older, {"approved": True, "approved_by": "directora", "approved_at": AT[0]},
                 by="directora", at=AT[0], hlc=hlc.make(T0, 2, "kit-a"))
    assert base is not None
    there = apply(base, approve, by="subdirector", at=AT[1], hlc=hlc.make(T0, 3, "kit-b"))
    here = apply(base, withdraw, by="directora", at=AT[2], hlc=hlc.make(T0, 4, "kit-a"))
    assert here is not None and there is not None
    assert "approved_by" not in here["history"][-1]["changes"]  # unchanged: not re-stamped
    for merged in (merge_record(here, there), merge_record(there, here)):
        assert {k: merged[k] for k in withdraw} == withdraw


activity_values = {
    "title": ["Feria del libro", "Cabildo abierto"],
    "start": ["2026-06-01T09:00:00-06:00", "2026-06-02T09:00:00-06:00"],
    "end": ["2026-06-03T20:00:00-06:00", "2026-06-04T20:00:00-06:00"],
    "area": ["", "Cultura"],
    "place": ["", "Plaza"],
}


@st.composite
def activities(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {"slug": "feria"}
    edited = {}
    for field, values in activity_values.items():
        if draw(st.booleans()):
            record[field] = draw(st.sampled_from(values))
        if draw(st.booleans()):
            edited[field] = {"hlc": draw(stamps)}
    if edited:
        record["edited"] = edited
    for key in ("added", "removed"):
        if draw(st.booleans()):
            record[key] = draw(stamps)
    return record


@FAST
@given(activities(), activities(), activities())
def test_merge_activity_is_commutative_associative_and_idempotent(a: dict, b: dict,
                                                                  c: dict) -> None:
    ab = merge_activity(a, b)
    assert ab == merge_activity(b, a)
    assert merge_activity(ab, c) == merge_activity(a, merge_activity(b, c))
    assert merge_activity(ab, b) == ab == merge_activity(ab, ab)
    removed = max(a.get("removed", ""), b.get("removed", ""))
    if removed:  # nothing stamped before the removal outlives it; the pair stays a pair
        assert ab["removed"] == removed
        for group in ACTIVITY_GROUPS:
            if any(f in ab for f in group):
                assert max(field_stamp(ab, f) for f in group) > removed


def test_a_removal_is_a_tombstone_and_an_add_after_it_brings_the_activity_back() -> None:
    live = {"slug": "feria", "title": "Feria", "start": activity_values["start"][0],
            "end": activity_values["end"][0], "area": "", "place": "",
            "edited": {f: {"hlc": hlc.make(T0, 0, "kit-a")} for f in activity_values},
            "added": hlc.make(T0, 0, "kit-a")}
    tomb = {"slug": "feria", "removed": hlc.make(T0, 5, "kit-b")}
    assert merge_activity(live, tomb) == tomb == merge_activity(tomb, live)
    assert activity_removed(tomb) and not activity_removed(live)
    # A change made elsewhere before it heard of the removal does not revive it.
    late = {**live, "title": "Feria 2026",
            "edited": {**live["edited"], "title": {"hlc": hlc.make(T0, 9, "hub")}}}
    merged = merge_activity(tomb, late)
    assert activity_removed(merged) and merged["title"] == "Feria 2026"
    again = {**live, "edited": {f: {"hlc": hlc.make(T0, 12, "kit-b")} for f in activity_values},
             "added": hlc.make(T0, 12, "kit-b")}
    revived = merge_activity(merged, again)
    assert not activity_removed(revived) and revived["title"] == "Feria"


# -- convergence: three replicas, random offline edits, cut syncs, any order ----------------

ITEMS = {"shared": [f"{i:064x}" for i in (1, 2, 3)], "kit-a": [f"{4:064x}"],
         "kit-b": [f"{5:064x}"]}
SLUGS = ["feria", "cabildo", "informe"]
GROUP_NAMES = [g[0] for g in fields.MERGE_GROUPS]


def initial_record(sha: str, kit: str) -> dict[str, Any]:
    """What an import on `kit` catalogued (the same content on two kits: different facts)."""
    return {"sha256": sha, "size": int(sha, 16), "kind": "photo",
            "original_name": f"IMG_{sha[-1]}.JPG", "source_path": f"DCIM/{kit}.JPG",
            "archive_path": f"archive/{FOLDERS[0]}/IMG_{sha[-1]}.JPG",
            "folder": FOLDERS[0], "activity": "sin-actividad", "filed_by": "unsorted",
            "captured_at": "2026-05-10T10:00:00-06:00",
            "imported_at": f"2026-05-10T16:{ord(kit[-1]) % 60:02d}:00+00:00",
            "import_id": kit, **fields.defaults()}


def group_change(group: str, choice: int, node: str) -> dict[str, Any]:
    if group == "approved":
        return {"approved": bool(choice % 2), "approved_by": f"dir-{node}",
                "approved_at": AT[choice % len(AT)]}
    if group == "folder":
        folder, activity = FILINGS[choice % len(FILINGS)]
        return {"folder": folder, "activity": activity}
    values = VALUES[group]
    return {group: values[choice % len(values)]}


class Replica:
    def __init__(self, root: Path, node: str, skew_ms: int) -> None:
        self.node = node
        self.state = root / node / "state"
        self.state.mkdir(parents=True)
        self.wall = Wall(T0 + skew_ms)
        self.restart()
        self.records: dict[str, dict[str, Any]] = {}

    def restart(self) -> None:
        self.clock = Clock(self.state, self.node, self.wall)
        self.agenda = Agenda(self.state, self.node, hlc=self.clock)

    def receive(self, records: list[dict[str, Any]], *, adopt: bool) -> None:
        """What the hub's /sync/records or the kit's pull does with a batch (as dicts)."""
        top = max((s for r in records for m in r["edited"].values()
                   if (s := m.get("hlc"))), default=None)
        if top:
            self.clock.observe(top)
        for record in records:
            if adopt or record["sha256"] in self.records:
                self.records[record["sha256"]] = merge_record(
                    self.records.get(record["sha256"]), record)


edits = st.tuples(st.just("edit"), st.sampled_from(NODES), st.sampled_from([0, 0, 0, 1, 2, 3]),
                  st.sampled_from(["caption", "caption", "folder", "approved", *GROUP_NAMES]),
                  st.integers(0, 5))
batches = st.lists(st.integers(0, 4), min_size=1, max_size=6)
agenda_ops = st.tuples(st.just("agenda"), st.sampled_from(NODES), st.sampled_from(SLUGS[:2]),
                       st.sampled_from(["add", "add", "title", "dates", "remove"]),
                       st.integers(0, 3))
# Weighted towards edits and syncs, so that replicas often edit the same field of the same
# item concurrently; a cut of 0..6 records (a batch is at most 6) is often short of it all.
operations = st.one_of(
    edits, edits, edits,
    st.tuples(st.just("push"), st.sampled_from(NODES[:2]), batches, st.integers(0, 6)),
    st.tuples(st.just("pull"), st.sampled_from(NODES[:2]), batches, st.integers(0, 6)),
    st.tuples(st.just("wall"), st.sampled_from(NODES), st.integers(-3_600_000, 3_600_000)),
    st.tuples(st.just("restart"), st.sampled_from(NODES)),
    agenda_ops, agenda_ops,
    st.tuples(st.just("agenda-sync"), st.sampled_from(NODES[:2]), st.booleans(),
              st.integers(0, 2)),
)
AGENDA_ZONE = ZoneInfo("America/Mexico_City")


def agenda_op(replica: Replica, slug: str, what: str, n: int) -> tuple[str, str, Any] | None:
    """Do it as a person would (refused when there is nothing to do); what it stamped:
    ("add" | "remove" | "title" | "dates", stamp, value)."""
    start = parse_time(f"2026-06-0{n + 1}T09:00", AGENDA_ZONE)
    end = parse_time(f"2026-06-0{n + 1}T18:00", AGENDA_ZONE)
    try:
        if what == "add":
            title = f"{slug} {replica.node} {n}"
            replica.agenda.add(Activity(slug, title, start, end))
        elif what == "title":
            title = f"{slug} por {replica.node} {n}"
            replica.agenda.update(slug, title=title)
        elif what == "dates":
            replica.agenda.update(slug, start=start, end=end)
        else:
            replica.agenda.remove(slug)
    except AgendaError:
        return None  # already there / not there: nothing changes
    [row] = [r for r in replica.agenda.records() if r["slug"] == slug]
    if what == "add":
        return ("add", row["added"], title)
    if what == "remove":
        return ("remove", row["removed"], None)
    if what == "title":
        return ("title", field_stamp(row, "title"), title)
    return ("dates", field_stamp(row, "start"), (start.isoformat(), end.isoformat()))


def run_convergence(ops: list[tuple], skews: tuple[int, int, int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        reps = {node: Replica(Path(tmp), node, skew) for node, skew in zip(NODES, skews,
                                                                            strict=True)}
        hub, kits = reps["hub"], [reps["kit-a"], reps["kit-b"]]
        for kit in kits:
            for sha in ITEMS["shared"] + ITEMS[kit.node]:
                kit.records[sha] = initial_record(sha, kit.node)
        facts = {(kit.node, sha): {k: r[k] for k in IMPORT_FACTS if k in r}
                 for kit in kits for sha, r in kit.records.items()}
        # Every stamped group write: (item, group) -> [(stamp, values)], the oracle of
        # "last writer wins": the converged group is the one written with the greatest stamp.
        writes: dict[tuple[str, str], list[tuple[str, dict]]] = {}
        agenda_writes: dict[str, list[tuple[str, str, Any]]] = {}
        all_items = ITEMS["shared"] + ITEMS["kit-a"] + ITEMS["kit-b"]

        def pick(replica: Replica, indexes: list[int]) -> list[str]:
            mine = [s for s in all_items if s in replica.records]
            return [mine[i % len(mine)] for i in indexes] if mine else []

        for op in ops:
            kind, replica = op[0], reps[op[1]]
            if kind == "edit":
                _, _, index, group_name, choice = op
                [sha] = pick(replica, [index]) or [None]
                if sha is None:
                    continue
                change = group_change(group_name, choice, replica.node)
                record = replica.records[sha]
                after = apply(record, change, by=replica.node, at=AT[0],
                              action="edit", hlc=replica.clock.now)
                if after is not None:
                    replica.records[sha] = after
                    group = next(g for g in fields.MERGE_GROUPS if group_name in g)
                    writes.setdefault((sha, group_name), []).append(
                        (max(field_stamp(after, f) for f in group),
                         {f: after.get(f) for f in group}))
            elif kind in ("push", "pull"):
                _, _, indexes, cut = op
                if kind == "push":
                    batch = [replica.records[s] for s in pick(replica, indexes)]
                    hub.receive(copy.deepcopy(batch[:cut]), adopt=True)  # cut short
                else:
                    batch = [hub.records[s] for s in pick(replica, indexes) if s in hub.records]
                    replica.receive(copy.deepcopy(batch[:cut]), adopt=False)
            elif kind == "wall":
                replica.wall.ms += op[2]
            elif kind == "restart":
                replica.restart()
            elif kind == "agenda":
                done = agenda_op(replica, *op[2:])
                if done is not None:
                    agenda_writes.setdefault(op[2], []).append(done)
            elif kind == "agenda-sync":
                _, _, push, cut = op
                if push:
                    merge_into_agenda(hub.agenda, replica.agenda.records()[:cut],
                                      clock=hub.clock)
                else:
                    merge_into_agenda(replica.agenda, hub.agenda.records()[:cut],
                                      clock=replica.clock)

        # Connected at last: complete rounds, twice.
        for _ in range(2):
            for kit in kits:
                hub.receive(copy.deepcopy(list(kit.records.values())), adopt=True)
                merge_into_agenda(hub.agenda, kit.agenda.records(), clock=hub.clock)
            for kit in kits:
                kit.receive(copy.deepcopy(list(hub.records.values())), adopt=False)
                merge_into_agenda(kit.agenda, hub.agenda.records(), clock=kit.clock)

        a, b = reps["kit-a"], reps["kit-b"]
        for sha in ITEMS["shared"]:
            assert projection(a.records[sha]) == projection(b.records[sha]) == \
                projection(hub.records[sha]), sha
        for kit in kits:
            for sha in ITEMS[kit.node]:
                assert projection(kit.records[sha]) == projection(hub.records[sha])
                assert sha not in reps["kit-b" if kit.node == "kit-a" else "kit-a"].records
            for sha, record in kit.records.items():
                assert {k: record[k] for k in IMPORT_FACTS if k in record} == \
                    facts[(kit.node, sha)]
        for sha in all_items:
            assert {k: hub.records[sha][k] for k in IMPORT_FACTS if k in hub.records[sha]} in (
                facts.get(("kit-a", sha)), facts.get(("kit-b", sha)))
        for (sha, group_name), written in writes.items():
            stamp, values = max(written, key=lambda w: w[0])
            group = next(g for g in fields.MERGE_GROUPS if group_name in g)
            assert {f: hub.records[sha].get(f) for f in group} == values, (sha, group_name)
            assert max(field_stamp(hub.records[sha], f) for f in group) == stamp
        agendas = [sorted(r.agenda.records(), key=lambda x: x["slug"]) for r in reps.values()]
        assert agendas[0] == agendas[1] == agendas[2]
        shown = [[x.to_record() for x in r.agenda.activities()] for r in reps.values()]
        assert shown[0] == shown[1] == shown[2]
        # The agenda's oracle: an activity is there iff its latest add is later than its
        # latest removal; its title is the one last set (by an add or a change).
        visible = {a["slug"]: a for a in shown[0]}
        for slug, done in agenda_writes.items():
            added = max((w[1] for w in done if w[0] == "add"), default="")
            removed = max((w[1] for w in done if w[0] == "remove"), default="")
            assert (slug in visible) == (added > removed), (slug, done)
            if slug in visible:
                title = max((w for w in done if w[0] in ("add", "title")), key=lambda w: w[1])
                assert visible[slug]["title"] == title[2]


skews = st.tuples(st.integers(-3_600_000, 3_600_000), st.integers(-3_600_000, 3_600_000),
                  st.integers(-3_600_000, 3_600_000))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations, min_size=8, max_size=40), skews)
def test_two_kits_and_the_hub_converge_once_connected(ops: list[tuple],
                                                      clock_skews: tuple[int, int, int]) -> None:
    run_convergence(ops, clock_skews)


def test_convergence_on_a_known_tricky_history() -> None:
    """Concurrent edits of one field with the wall clocks of the kits an hour apart, the
    hub's stepping back, cut pushes, and an activity removed on one kit while the other
    renames it."""
    run_convergence([
        ("edit", "kit-a", 0, "caption", 1), ("edit", "kit-b", 0, "caption", 2),
        ("wall", "hub", -3_600_000), ("push", "kit-b", [0, 1, 2], 1),
        ("edit", "hub", 0, "folder", 2), ("pull", "kit-a", [0], 1),
        ("edit", "kit-a", 0, "approved", 1), ("restart", "kit-a"),
        ("agenda", "kit-a", "feria", "add", 0), ("agenda-sync", "kit-a", True, 3),
        ("agenda-sync", "kit-b", False, 3), ("agenda", "kit-b", "feria", "title", 1),
        ("agenda", "kit-a", "feria", "remove", 0), ("agenda", "hub", "feria", "dates", 2),
        ("edit", "kit-b", 0, "folder", 1), ("push", "kit-a", [0, 3], 2),
    ], (3_600_000, -3_600_000, 0))


# -- with real catalog shards and the edit log -----------------------------------------------

class Kit:
    def __init__(self, root: Path, node: str, skew_ms: int, items: list[int]) -> None:
        self.node = node
        self.data = DataDir.at(root / node)
        self.data.ensure()
        self.catalog = Catalog(self.data)
        self.initial = [initial_record(f"{n:064x}", node) for n in items]
        self.catalog.upsert(FOLDERS[0], copy.deepcopy(self.initial))
        self.wall = Wall(T0 + skew_ms)
        self.clock = Clock(self.data.state, node, self.wall)
        self.editor = Editor(self.data, self.catalog, node=node, hlc=self.clock)

    def records(self) -> dict[str, dict[str, Any]]:
        return {r["sha256"]: r for r in self.catalog.items()}


catalog_ops = st.lists(st.one_of(
    st.tuples(st.just("edit"), st.sampled_from(["kit-a", "kit-b"]), st.integers(0, 2),
              st.sampled_from(["caption", "rating", "pick", "tags"]), st.integers(0, 5)),
    st.tuples(st.just("approve"), st.sampled_from(["kit-a", "kit-b"]), st.integers(0, 2),
              st.booleans()),
    st.tuples(st.just("hub"), st.integers(0, 2), st.sampled_from(GROUP_NAMES),
              st.integers(0, 5)),
    st.tuples(st.just("push"), st.sampled_from(["kit-a", "kit-b"]), st.integers(0, 3)),
    st.tuples(st.just("pull"), st.sampled_from(["kit-a", "kit-b"]), st.integers(0, 3)),
    st.tuples(st.just("wall"), st.sampled_from(["kit-a", "kit-b", "hub"]),
              st.integers(-600_000, 600_000)),
), max_size=14)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(catalog_ops)
def test_kits_with_real_catalogs_converge_and_their_edit_logs_replay_it(ops: list) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        kits = {"kit-a": Kit(root, "kit-a", 90_000, [1, 2]),
                "kit-b": Kit(root, "kit-b", -90_000, [1, 3])}
        hub = Replica(root, "hub", 0)
        for op in ops:
            if op[0] in ("edit", "approve"):
                kit = kits[op[1]]
                sha = kit.initial[op[2] % 2]["sha256"]
                if op[0] == "edit":
                    kit.editor.edit(sha, group_change(op[3], op[4], kit.node), by=kit.node)
                elif op[3]:
                    kit.editor.approve([sha], by=kit.node)
                else:
                    kit.editor.withdraw([sha], by=kit.node)
            elif op[0] == "hub":
                shas = sorted(hub.records)
                if shas:
                    sha = shas[op[1] % len(shas)]
                    after = apply(hub.records[sha], group_change(op[2], op[3], "hub"),
                                  by="hub", at=AT[1], hlc=hub.clock.now)
                    hub.records[sha] = after or hub.records[sha]
            elif op[0] == "push":
                hub.receive(list(kits[op[1]].records().values())[:op[2]], adopt=True)
            elif op[0] == "pull":
                kit = kits[op[1]]
                mine = kit.records()
                merge_into_catalog(kit.catalog, [r for s, r in hub.records.items()
                                                 if s in mine][:op[2]], clock=kit.clock)
            else:
                (kits[op[1]].wall if op[1] in kits else hub.wall).ms += op[2]
        for _ in range(2):
            for kit in kits.values():
                hub.receive(list(kit.records().values()), adopt=True)
            for kit in kits.values():
                changed = merge_into_catalog(kit.catalog, list(hub.records.values()),
                                             clock=kit.clock)
                for record in changed:  # what the kit's sync client would re-file
                    assert kit.catalog.lookup(record["sha256"])["folder"] == FOLDERS[0]
        a, b = kits["kit-a"].records(), kits["kit-b"].records()
        shared = f"{1:064x}"
        assert projection(a[shared]) == projection(b[shared]) == \
            projection(hub.records[shared])
        for kit in kits.values():
            current = kit.records()
            for sha, record in current.items():
                assert projection(record) == projection(hub.records[sha])
            # A shard lost and rebuilt from the files gets everything back from the edit log.
            rebuilt = {r["sha256"]: r for r in replay(copy.deepcopy(kit.initial),
                                                      EditLog(kit.data))}
            for sha, record in current.items():
                assert projection(rebuilt[sha]) == projection(record), sha
            # And a later local edit wins over everything received.
            after = kit.editor.edit(shared, {"caption": f"Final de {kit.node}"}, by=kit.node)
            assert field_stamp(after, "caption") > max(
                field_stamp(r, f) for r in hub.records.values() for f in MERGED)


def test_merge_into_catalog_skips_what_it_must_not_take(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    kit = Kit(tmp_path, "kit-a", 0, [1, 2])
    sha1, sha2 = f"{1:064x}", f"{2:064x}"
    remote = merge_record(None, kit.records()[sha1])
    remote = apply(remote, {"caption": "De la sede"}, by="hub", at=AT[1],
                   hlc=hlc.make(T0 + 1000, 0, "hub"))
    future = apply(kit.records()[sha2], {"caption": "Del año 2040"}, by="hub", at=AT[1],
                   hlc=hlc.make(T0 + 2 * DAY_MS, 0, "hub"))
    garbage = {**kit.records()[sha2], "caption": 42}
    unknown = initial_record(f"{9:064x}", "kit-b")
    assert remote is not None and future is not None
    shard = kit.catalog.shard_path(FOLDERS[0])
    inode = shard.stat().st_ino
    changed = merge_into_catalog(kit.catalog, [remote, future, garbage, unknown, "nonsense"],
                                 clock=kit.clock)  # type: ignore[list-item]
    assert [r["sha256"] for r in changed] == [sha1]
    assert shard.stat().st_ino != inode  # one write
    records = kit.records()
    assert records[sha1]["caption"] == "De la sede" and records[sha2]["caption"] == ""
    assert f"{9:064x}" not in records
    assert "future" in caplog.text and "caption" in caplog.text
    assert kit.clock.now() > hlc.make(T0 + 1000, 0, "hub")
    # The same again changes nothing and writes nothing.
    inode = shard.stat().st_ino
    assert merge_into_catalog(kit.catalog, [remote], clock=kit.clock) == []
    assert shard.stat().st_ino == inode
    [entry] = [e for e in EditLog(kit.data).entries([sha1])]
    assert entry["action"] == "sync" and entry["changes"] == {"caption": ["", "De la sede"]}


# -- stamps on the real writers ------------------------------------------------------------

def test_editor_approval_refile_and_agenda_stamp_what_they_change(config: Config,
                                                                  tmp_path: Path) -> None:
    data = DataDir.at(config.data_dir)
    data.ensure()
    now = int(time.time() * 1000)  # an editor without a clock of its own uses the real one
    wall = Wall(now)
    clock = Clock(data.state, "kit-cultura", wall)
    catalog = Catalog(data)
    catalog.upsert(FOLDERS[0], [initial_record(f"{1:064x}", "kit-a")])
    sha = f"{1:064x}"
    editor = Editor(data, catalog, node="kit-cultura", hlc=clock)
    first = editor.edit(sha, {"caption": "Cabildo", "rating": 4}, by="ana")
    stamp = first["edited"]["caption"]["hlc"]
    assert hlc.parse(stamp) == (now, 0, "kit-cultura")
    assert first["edited"]["rating"]["hlc"] == stamp
    wall.ms -= 10_000
    [approved] = editor.approve([sha], by="directora")
    assert {approved["edited"][f]["hlc"] for f in fields.APPROVAL} == {
        hlc.make(now, 1, "kit-cultura")}
    [entry, approval] = EditLog(data).entries([sha])
    assert entry["hlc"] == stamp and approval["hlc"] == hlc.make(now, 1, "kit-cultura")
    # Without a clock of its own, an editor uses the data folder's, under the kit's name
    # made a node name; the stamps keep increasing across both.
    plain = Editor(data, node="Prensa Norte").edit(sha, {"caption": "Otro"}, by="ana")
    assert plain["edited"]["caption"]["hlc"] > approved["edited"]["approved"]["hlc"]
    assert plain["edited"]["caption"]["hlc"].endswith("-prensa-norte")
    # On a headquarters data folder the node is `hub`, whatever the box's kit.name (its
    # default, "acopio", is every new kit's too).
    (data.state / "hub").mkdir()
    at_hq = Editor(data, node="acopio").edit(sha, {"caption": "Central"}, by="directora")
    assert at_hq["edited"]["caption"]["hlc"].endswith("-hub")
    assert Agenda(data.state, "acopio").hlc.now().endswith("-hub")
    (data.state / "hub").rmdir()

    agenda = Agenda(data.state, "kit-cultura", hlc=clock)
    zone = config.zone
    agenda.add(Activity("feria", "Feria", parse_time("2026-06-01T09:00", zone),
                        parse_time("2026-06-03T20:00", zone)))
    [row] = agenda.records()
    assert set(row["edited"]) == set(activity_values) and row["added"] == \
        row["edited"]["title"]["hlc"]
    agenda.update("feria", title="Feria del libro")
    [row] = agenda.records()
    assert row["edited"]["title"]["hlc"] > row["added"] == row["edited"]["place"]["hlc"]
    agenda.set_current("feria")
    agenda.remove("feria")
    [tomb] = agenda.records()
    assert set(tomb) == {"slug", "removed"} and tomb["removed"] > row["edited"]["title"]["hlc"]
    assert agenda.activities() == [] and agenda.get("feria") is None
    assert agenda.current() is None
    with pytest.raises(AgendaError, match="no activity"):
        agenda.update("feria", title="x")
    with pytest.raises(AgendaError, match="no activity"):
        agenda.remove("feria")
    agenda.add(Activity("feria", "Feria otra vez", parse_time("2026-06-01T09:00", zone),
                        parse_time("2026-06-03T20:00", zone)))
    assert [a.title for a in agenda.activities()] == ["Feria otra vez"]
    assert Agenda(data.state).get("feria") is not None
    # A tombstone received from elsewhere hides it, and clears it as the current activity.
    agenda.set_current("feria")
    remote = {"slug": "feria", "removed": clock.now()}
    assert agenda.merge([remote, {"slug": "../x"}], clock=clock) == ["feria"]
    assert agenda.activities() == [] and agenda.current() is None


def write_item(data: DataDir, folder: str, name: str, payload: bytes) -> dict[str, Any]:
    path = data.archive / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    record = initial_record(sha256_file(path), "kit-a")
    record.update(size=len(payload), original_name=name, source_path=name,
                  archive_path=f"archive/{folder}/{name}", folder=folder,
                  activity=folder.split("_", 1)[1], kind="other")
    return record


def test_a_folder_changed_by_sync_is_followed_without_a_new_stamp(config: Config) -> None:
    data = DataDir.at(config.data_dir)
    data.ensure()
    zone = config.zone
    Agenda(data.state).add(Activity("feria", "Feria", parse_time("2026-06-01T09:00", zone),
                                    parse_time("2026-06-03T20:00", zone)))
    catalog = Catalog(data)
    items = [write_item(data, FOLDERS[0], f"nota-{i}.txt", f"nota {i}".encode())
             for i in range(2)]
    catalog.upsert(FOLDERS[0], items)
    clock = Clock(data.state, "kit-a")
    moved, stays = items
    remote = apply(merge_record(None, moved), {"folder": FOLDERS[2], "activity": "feria"},
                   by="directora", at=AT[1], hlc=hlc.make(T0, 0, "hub"))
    assert remote is not None
    [changed] = merge_into_catalog(catalog, [remote, stays], clock=clock)
    assert changed["folder"] == FOLDERS[2] and changed["archive_path"] == moved["archive_path"]
    assert catalog.lookup(moved["sha256"])["folder"] == FOLDERS[0]  # not moved yet
    pending = check(config)
    assert pending.clean, [f.as_dict() for f in pending.findings]
    inode = (data.root / moved["archive_path"]).stat().st_ino
    refiler = Refiler(config, data, catalog)
    [followed] = refiler.follow([moved["sha256"], stays["sha256"]])
    assert followed["archive_path"] == f"archive/{FOLDERS[2]}/nota-0.txt"
    assert (data.root / followed["archive_path"]).stat().st_ino == inode
    assert not (data.root / moved["archive_path"]).exists()
    assert catalog.lookup(moved["sha256"]) == {"folder": FOLDERS[2],
                                               "archive_path": followed["archive_path"]}
    for field in ("folder", "activity"):  # the merged filing and its stamp, untouched
        assert followed["edited"][field]["hlc"] == hlc.make(T0, 0, "hub")
    assert followed["history"][-1]["action"] == "refile"
    assert refiler.follow([moved["sha256"]]) == []  # already there
    report = check(config, deep=True)
    assert report.clean, [f.as_dict() for f in report.findings]
    # A re-filing by a person stamps the new filing with this kit's clock.
    [again] = refiler.refile([moved["sha256"]], None, by="ana")
    assert again["edited"]["folder"]["hlc"] > hlc.make(T0, 0, "hub")
    assert again["edited"]["folder"]["hlc"] == again["edited"]["activity"]["hlc"]
    # The edit log replays all of it onto a shard rebuilt from the files.
    rebuilt = {r["sha256"]: r for r in replay([copy.deepcopy(moved)], EditLog(data))}
    assert projection(rebuilt[moved["sha256"]]) == projection(again)


def test_a_replayed_re_filing_restores_the_stamp_of_a_folder_found_in_place(tmp_path: Path
                                                                            ) -> None:
    """`acopio check --repair` rebuilds a shard from its folder's files: an item re-filed
    there is found there already, and still gets its filing's stamp back from the log."""
    data = DataDir.at(tmp_path)
    sha = f"{1:064x}"
    stamp = hlc.make(T0, 3, "kit-a")
    EditLog(data).append([{"sha256": sha, "at": AT[0], "by": "ana", "action": "refile",
                           "hlc": stamp, "changes": {
                               "folder": [FOLDERS[0], FOLDERS[2]],
                               "activity": ["sin-actividad", "feria"],
                               "filed_by": ["unsorted", "manual"]}}])
    found = {**initial_record(sha, "kit-a"), "folder": FOLDERS[2], "activity": "feria",
             "filed_by": "repair"}
    [rebuilt] = replay([found], EditLog(data))
    assert field_stamp(rebuilt, "folder") == field_stamp(rebuilt, "activity") == stamp
    assert rebuilt["filed_by"] == "manual" and rebuilt["history"][-1]["action"] == "refile"


def test_history_keeps_the_newest_entries_in_any_order_of_union() -> None:
    """A record keeps at most MAX_HISTORY history entries (a peer could send a new batch with
    every record); the newest N of a union do not depend on the order the histories met."""
    from appliance.editorial import MAX_HISTORY, union_history

    def entries(start: int, count: int) -> list[dict[str, Any]]:
        return [{"at": f"2026-05-10T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}+00:00",
                 "by": "kit-a", "action": "edit", "changes": {"n": i}}
                for i in range(start, start + count)]

    a, b, c = entries(0, 700), entries(500, 700), entries(1100, 400)
    one = union_history(union_history(a, b), c)
    two = union_history(c, union_history(b, a))
    assert one == two == union_history(a, b, c)
    assert len(one) == MAX_HISTORY
    assert [e["changes"]["n"] for e in one] == list(range(1500 - MAX_HISTORY, 1500))
