"""What headquarters decided, brought into the kit: `GET /sync/changes?since=CURSOR`.

The hub answers `{"records": [...], "agenda": [...] or null, "cursor": "...", "more": bool}`:
the records of this kit's items that changed at the hub since the cursor and, when the hub's
agenda changed, its activities. In that order:

1. **agenda**: merged into the kit's agenda per activity field, last writer wins by hybrid
   logical clock, removals as tombstones (`sync.merge.merge_into_agenda`). First, so that an
   item re-filed into an activity headquarters just created finds it;
2. **records**: merged field by field into the kit's catalog (`sync.merge.merge_into_catalog`;
   what the import found never changes). A merge group the hub's record does not carry at all
   (the hub may leave out its own placement, `folder` and `activity`) is taken as "no news":
   the kit's own values and stamps stand for it, never an empty default;
3. **re-filing**: an item whose merged `folder` is not the folder it lies in on the kit moves
   there (`Refiler.follow`, by "hub"): its file moves, as for a re-filing on the kit itself.
   An item whose original was evicted, or that cannot move now, stays where it is (logged);
4. **acknowledgement without an echo**: a record the hub had already accepted, changed here
   by nothing but this merge (its revision moved on by exactly one), now holds only what the
   hub holds: it is marked acknowledged instead of being sent back. Any other change (an edit
   that landed meanwhile, the re-filing) is sent as usual;
5. **cursor**: stored durably only after all of that, so a crash at any point repeats the
   page (merging the same changes again changes nothing).

`more` asks for the next page at once.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable
from typing import Any

from appliance import boxclock
from appliance.agenda import Agenda
from appliance.catalog import Catalog
from appliance.config import Config
from appliance.datadir import DataDir
from appliance.storage import CorruptStateError
from sync.kit.client import HubClient, HubError
from sync.kit.store import SyncStore

log = logging.getLogger(__name__)

MAX_PAGES = 1000
HUB_BY = "hub"


def pull(config: Config, data: DataDir, catalog: Catalog, store: SyncStore,
         client: HubClient, *, should_stop: Callable[[], bool] = lambda: False) -> int:
    """Bring in the hub's changes; how many of the kit's records changed."""
    from sync.hlc import Clock, node_name
    from sync.merge import merge_into_agenda, merge_into_catalog

    clock = Clock(data.state, node_name(config.kit.name))
    own_clock_trusted = boxclock.trusted(config.kit.clock)
    changed_total = 0
    for _ in range(MAX_PAGES):
        if should_stop():
            break
        cursor = store.cursor()
        page, hub_time = client.changes(cursor)
        if hub_time is not None and not own_clock_trusted:
            clock.vouch(hub_time)  # this box may have booted days behind
        records = page.get("records")
        if records is None:
            records = []
        if not isinstance(records, list):
            raise HubError("the hub's changes carry no list of records")
        agenda = page.get("agenda")
        if isinstance(agenda, list) and agenda:
            slugs = merge_into_agenda(Agenda(data.state, config.kit.name), agenda, clock=clock)
            if slugs:
                log.info("agenda: merged %d activities from the hub (%s)", len(slugs),
                         ", ".join(slugs))
        records = [r for r in records if isinstance(r, dict) and isinstance(r.get("sha256"), str)]
        ahead: list[dict[str, Any]] = []  # refused for stamps too far ahead: they wait
        if records:
            before = current_records(catalog, (r["sha256"] for r in records))
            remote = [complete(r, before.get(r["sha256"])) for r in records]
            changed = merge_into_catalog(catalog, remote, clock=clock, ahead=ahead)
            after = current_records(catalog, before)
            echo_free = [now for sha, now in after.items()
                         if now.get("revision") == before[sha].get("revision", 0) + 1
                         and store.record_acked(before[sha])]
            store.ack_records(echo_free)
            if changed:
                log.info("merged %d changes from the hub", len(changed))
                follow_filing(config, data, catalog, changed)
            changed_total += len(changed)
        if ahead:
            # Stamped more than a day past this box's clock: one of the clocks is wrong.
            # The cursor stays, so the page comes again until the clocks agree; moved on,
            # headquarters' decisions in these records were lost for good.
            log.warning("%d changes from the hub wait: their clock stamps are more than a "
                        "day past this box's clock (check both clocks)", len(ahead))
            break
        next_cursor = page.get("cursor")
        if next_cursor is not None and str(next_cursor) != cursor:
            store.set_cursor(str(next_cursor))
        if not page.get("more"):
            break
    return changed_total


def complete(remote: dict[str, Any], local: dict[str, Any] | None) -> dict[str, Any]:
    """The hub's record, with every merge group it does not carry at all filled in from the
    kit's own record (values and stamps): absent is "no news", not "empty"."""
    from sync.merge import GROUPS

    if local is None:
        return remote
    out = dict(remote)
    edited = dict(out.get("edited") or {}) if isinstance(out.get("edited"), dict) else {}
    local_edited = local.get("edited") if isinstance(local.get("edited"), dict) else {}
    for group in GROUPS:
        if any(name in remote for name in group):
            continue
        for name in group:
            if name in local:
                out[name] = copy.deepcopy(local[name])
            if name in local_edited:
                edited[name] = copy.deepcopy(local_edited[name])
            else:
                edited.pop(name, None)
    out["edited"] = edited
    return out


def current_records(catalog: Catalog, sha256s: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The kit's records of these items as they are now (those it catalogues)."""
    by_folder: dict[str, set[str]] = {}
    for sha in sha256s:
        entry = catalog.lookup(sha)
        if entry is not None and isinstance(entry.get("folder"), str):
            by_folder.setdefault(entry["folder"], set()).add(sha)
    out: dict[str, dict[str, Any]] = {}
    for folder, shas in by_folder.items():
        try:
            for record in catalog.read_shard(folder):
                if record.get("sha256") in shas:
                    out[record["sha256"]] = record
        except (CorruptStateError, ValueError) as exc:
            log.warning("catalog folder %s unreadable (%s)", folder, exc)
    return out


def follow_filing(config: Config, data: DataDir, catalog: Catalog,
                  changed: list[dict[str, Any]]) -> list[str]:
    """Move the files of merged items whose `folder` is not where they lie; their SHAs."""
    from appliance.refile import RefileError, Refiler

    moving = []
    for record in changed:
        entry = catalog.lookup(record["sha256"])
        folder = record.get("folder")
        if entry is not None and isinstance(folder, str) and folder != entry.get("folder"):
            moving.append(record["sha256"])
    moved: list[str] = []
    if not moving:
        return moved
    from sync.kit.evict import is_evicted

    refiler = Refiler(config, data, catalog)
    for sha in moving:  # one at a time: one evicted original must not hold back the rest
        if is_evicted(data, sha):
            log.info("item %s: filed elsewhere by the hub; its original is only there "
                     "(evicted here), and moves when it is fetched back", sha)
            continue
        try:
            if refiler.follow([sha], by=HUB_BY):
                moved.append(sha)
        except RefileError as exc:
            log.warning("item %s stays where it is on the kit, though the hub filed it "
                        "elsewhere: %s", sha, exc)
    if moved:
        log.info("re-filed %d items as the hub did", len(moved))
    return moved
