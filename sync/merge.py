"""The per-field merge of catalog records and agenda activities between kits and the hub.

README "Metadata both ways" is the rule; this is it in code. Pure functions (no I/O but a
log line for a conflict of import facts), except `merge_into_catalog` and
`merge_into_agenda`, which apply them to this box's catalog and agenda.

A catalog record's fields fall in four kinds:

- `IMPORT_FACTS` (what the import found) belong to the kit that imported the item: a merge
  never changes them (the first value wins; a different incoming value is logged as a
  conflict and ignored);
- `MERGED` (what people edit, the approval, the filing) merge by hybrid logical clock: each
  change stamps the field, `edited[field]["hlc"]` (sync/hlc.py), and the value with the
  greater stamp wins, its `edited` entry (who, when, stamp) with it. Fields that only make
  sense together merge as one: the approval (`approved`, `approved_by`, `approved_at`) and
  the filing (`folder`, `activity`) come whole from the side holding the greatest stamp
  among them (`fields.MERGE_GROUPS`). Equal stamps (only the same change, or two boxes
  misconfigured with one name) are settled by the values themselves, and a field edited
  before sync existed (an `edited` entry without a stamp) beats one never edited, so the
  result never depends on the order. Two filings nobody made (each kit's import of the same
  photo) are settled by `_filing_preference`: an agenda activity over `sin-actividad`, then
  the earlier day;
- `LOCAL` (`archive_path`, `filed_by`) are each replica's own: where the file lies on this
  box follows `folder` there (see `appliance.refile.Refiler.follow`);
- the history is the union of both histories (one entry per (at, by, action, changes)), in
  time order; `revision` and the `revision` inside `edited` entries are this replica's own
  counters (they serve the web UI's conflict check), moved on by one when a merge changes
  anything.

So `merge_record` is commutative, associative and idempotent in the merged fields (their
values, stamps and `edited` entries apart from `revision`) and the history: replicas that
have seen the same records hold the same item, whatever the order they saw them in.

Agenda activities (`merge_activity`) merge per field the same way (`start` and `end`
together), plus two stamps: `added` (an add, which stamps every field too) and `removed` (a
removal). An activity is shown while it has no removal or was added again after it; a
removed one is kept as a tombstone `{"slug", "removed"}`: every field stamped no later than
the removal is dropped, so the agenda file stays small and a late copy of the activity
cannot bring it back.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from appliance import fields
from appliance.catalog import Catalog, is_folder_key
from appliance.editorial import (
    LIST_FIELDS,
    MAX_HISTORY,
    SYNC_ACTION,
    TEXT_LIMITS,
    EditError,
    EditLog,
    union_history,
    validate,
)
from ingest.metadata.values import MAX_TEXT
from sync import hlc
from sync.hlc import Clock

log = logging.getLogger(__name__)

IMPORT_FACTS: tuple[str, ...] = fields.IMPORT_FACTS
MERGED: tuple[str, ...] = fields.MERGED
GROUPS: tuple[tuple[str, ...], ...] = fields.MERGE_GROUPS
FILING_GROUP: tuple[str, ...] = tuple(fields.FILING)
LOCAL: tuple[str, ...] = fields.LOCAL
_DEFAULTS: dict[str, Any] = {**fields.EDITABLE, **fields.APPROVAL, **fields.FILING}
_BOOKKEEPING = tuple(fields.BOOKKEEPING)

ACTIVITY_FIELDS: tuple[str, ...] = ("title", "start", "end", "area", "place")
ACTIVITY_GROUPS: tuple[tuple[str, ...], ...] = (("title",), ("start", "end"), ("area",),
                                                ("place",))
SYNC_BY = "sync"


def _canonical(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True, sort_keys=True, separators=(",", ":"))


def _stamp(value: Any) -> str:
    return value if hlc.is_stamp(value) else ""


def _mark(record: Mapping[str, Any], field: str) -> dict[str, Any] | None:
    edited = record.get("edited")
    mark = edited.get(field) if isinstance(edited, dict) else None
    return mark if isinstance(mark, dict) else None


def field_stamp(record: Mapping[str, Any], field: str) -> str:
    """The field's clock stamp, `record["edited"][field]["hlc"]`, or "" (never edited since
    stamps exist, or not a valid stamp)."""
    mark = _mark(record, field)
    return _stamp(mark.get("hlc")) if mark else ""


def stamps_of(record: Mapping[str, Any]) -> list[str]:
    """Every clock stamp a record or an activity carries (valid ones only)."""
    out = []
    edited = record.get("edited")
    if isinstance(edited, dict):
        for mark in edited.values():
            if isinstance(mark, dict) and hlc.is_stamp(mark.get("hlc")):
                out.append(mark["hlc"])
    for key in ("added", "removed"):
        if hlc.is_stamp(record.get(key)):
            out.append(record[key])
    return out


def _group_key(record: Mapping[str, Any], group: tuple[str, ...],
               defaults: Mapping[str, Any]) -> tuple[str, bool, tuple[int, ...], str]:
    """What decides which side's group wins: the greatest stamp, then having been edited at
    all, then (for two filings nobody made) the likelier filing, then the values and marks
    themselves (so that equal keys mean equal groups)."""
    marks = [_mark(record, f) for f in group]
    stripped = [{k: v for k, v in m.items() if k != "revision"} if m else None for m in marks]
    values = [record.get(f, defaults.get(f)) for f in group]
    likelier = _filing_preference(record) if group == FILING_GROUP else ()
    return (max(field_stamp(record, f) for f in group), any(m is not None for m in marks),
            likelier, _canonical([values, stripped]))


def _filing_preference(record: Mapping[str, Any]) -> tuple[int, ...]:
    """Two kits that imported one photo each filed it by what they knew: an activity of
    their agenda beats `sin-actividad` (the other kit's agenda lacked it), then the earlier
    day (a copy's file time only ever moves later, never earlier). Larger is likelier."""
    activity, folder = record.get("activity"), record.get("folder")
    planned = int(isinstance(activity, str) and activity not in ("", "sin-actividad"))
    day = folder.split("/")[-1][:10] if isinstance(folder, str) else ""
    return (planned, *(-ord(c) for c in day))


def _clean(record: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy with the editorial fields present and the bookkeeping well-formed."""
    out = copy.deepcopy(dict(record))
    fields.with_defaults(out)
    if not isinstance(out["edited"], dict):
        out["edited"] = {}
    if not isinstance(out["history"], list):
        out["history"] = []
    if isinstance(out["revision"], bool) or not isinstance(out["revision"], int):
        out["revision"] = 0
    return out


# -- catalog records ----------------------------------------------------------------------

def merge_record(local: dict[str, Any] | None, remote: dict[str, Any]) -> dict[str, Any]:
    """`local` (this replica's record, None when it has none) merged with `remote`: per
    merged field (group) the value with the greater stamp, with its `edited` entry; import
    facts and local fields from `local` (from `remote` for those `local` lacks); histories
    united; `revision` = local revision + 1 when anything changed. A new dict; neither
    argument is modified."""
    incoming = _clean(remote)
    if local is None:
        return incoming
    out = _clean(local)
    if out.get("sha256") != incoming.get("sha256"):
        raise ValueError(f"cannot merge records of different items: {out.get('sha256')} and "
                         f"{incoming.get('sha256')}")
    for key in IMPORT_FACTS:
        if key in incoming and key in out and out[key] != incoming[key]:
            log.info("sync conflict on %s of item %s: keeping %r, ignoring %r (import facts "
                     "belong to the importing kit)", key, out.get("sha256"), out[key],
                     incoming[key])
    for key, value in incoming.items():
        if key not in out and key not in _DEFAULTS:
            out[key] = value  # import facts, local fields or others this replica lacks
    edited = dict(out["edited"])
    changed: list[str] = []
    for group in GROUPS:
        if _group_key(incoming, group, _DEFAULTS) > _group_key(out, group, _DEFAULTS):
            for field in group:
                out[field] = copy.deepcopy(incoming.get(field, _DEFAULTS[field]))
                mark = _mark(incoming, field)
                if mark is None:
                    edited.pop(field, None)
                else:
                    edited[field] = dict(mark)
            changed.extend(group)
    history = union_history(out["history"], incoming["history"])
    if not changed and history == out["history"]:
        return out
    revision = out["revision"] + 1
    for field in changed:
        if field in edited:
            edited[field] = {**edited[field], "revision": revision}
    out["edited"] = edited
    out["history"] = history
    out["revision"] = revision
    return out


def changed_fields(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The merged fields whose value or stamp differs between two versions of a record."""
    return [f for f in MERGED
            if before.get(f, _DEFAULTS[f]) != after.get(f, _DEFAULTS[f])
            or field_stamp(before, f) != field_stamp(after, f)]


def projection(record: Mapping[str, Any]) -> dict[str, Any]:
    """What replicas that have seen the same changes agree on: every merged field's value
    and `edited` entry (without this replica's revision numbers), and the history."""
    rec = _clean(record)
    out: dict[str, Any] = {}
    for field in MERGED:
        mark = _mark(rec, field)
        out[field] = (rec.get(field, _DEFAULTS[field]),
                      {k: v for k, v in mark.items() if k != "revision"} if mark else None)
    out["history"] = union_history(rec["history"])
    return out


def check_record(record: Any) -> None:
    """ValueError unless `record` is a catalog record as a replica may send it: a content
    hash, well-formed bookkeeping, valid stamps, and merged values of the right kinds."""
    if not isinstance(record, dict):
        raise ValueError("a record is not an object")
    sha = record.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64 or \
            any(c not in "0123456789abcdef" for c in sha):
        raise ValueError(f"not a content hash: {str(sha)[:80]!r}")
    edited = record.get("edited", {})
    if not isinstance(edited, dict) or not all(isinstance(m, dict) for m in edited.values()):
        raise ValueError(f"{sha}: edited must map fields to objects")
    for mark in edited.values():
        if "hlc" in mark:
            hlc.parse(mark["hlc"])  # ValueError for a bad stamp
    history = record.get("history", [])
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise ValueError(f"{sha}: history must be a list of objects")
    if len(history) > MAX_HISTORY:
        raise ValueError(f"{sha}: history has {len(history)} entries (at most {MAX_HISTORY})")
    for field in MERGED:
        if field in record:
            try:
                _check_value(field, record[field])
            except (EditError, ValueError) as exc:
                raise ValueError(f"{sha}: {exc}") from None
    for field in IMPORT_FACTS:
        if field in record and field != "sha256":
            try:
                _check_fact(field, record[field])
            except ValueError as exc:
                raise ValueError(f"{sha}: {exc}") from None


_KINDS = ("photo", "raw", "video", "audio", "other")
_FACT_TEXT = ("original_name", "source_path", "date_source", "import_id")
_FACT_TIMES = ("captured_at", "imported_at")
_FACT_INTS = ("size", "orientation", "rotation", "width", "height")
_MAX_PROBLEMS = 64


def _check_fact(field: str, value: Any) -> None:
    """An import fact as the importing kit's catalog holds it. Every box uses them as typed
    values (a time parsed for the thumbnail queue's order and the query index, a kind that
    picks the derivatives, a camera shown by name): a wrong type from a peer is refused
    here, per record, not found later by a crashing thread, page or command."""
    def bad(what: str) -> ValueError:
        return ValueError(f"{field}: expected {what}, got {str(value)[:80]!r}")

    if value is None:
        if field in ("size", "kind", "imported_at"):
            raise bad("a value")
        return
    if field == "kind":
        if value not in _KINDS:
            raise bad("one of " + ", ".join(_KINDS))
    elif field in _FACT_TEXT:
        if not isinstance(value, str) or len(value) > 4096:
            raise bad("text")
    elif field in _FACT_TIMES:
        try:
            moment = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            moment = None
        if moment is None or len(value) > 64:
            raise bad("an ISO 8601 time")
    elif field in _FACT_INTS:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
            raise bad("a whole number")
    elif field == "duration":
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not 0 <= value < 1e9:
            raise bad("a number of seconds")
    elif field in ("camera", "gps"):
        if not isinstance(value, dict) or len(value) > 16 or not all(
                isinstance(k, str) and (v is None or isinstance(v, str | int | float))
                and not isinstance(v, bool) and len(str(v)) <= MAX_TEXT
                for k, v in value.items()):
            raise bad("an object of plain values")
    elif field == "problems" and (
            not isinstance(value, list) or len(value) > _MAX_PROBLEMS or not all(
                isinstance(p, dict) and isinstance(p.get("code"), str)
                and isinstance(p.get("detail", ""), str) for p in value)):
        raise bad(f"a list of at most {_MAX_PROBLEMS} {{code, detail}} objects")


def _check_value(field: str, value: Any) -> None:
    if field in TEXT_LIMITS or field in LIST_FIELDS or field in ("pick", "rating"):
        validate({field: value})  # type and size; the value is taken as it comes
    elif field == "approved":
        if not isinstance(value, bool):
            raise ValueError("approved: expected true or false")
    elif field in ("approved_by", "approved_at"):
        if value is not None and (not isinstance(value, str) or len(value) > 200):
            raise ValueError(f"{field}: expected text or null")
    elif field == "folder":
        if not isinstance(value, str) or not is_folder_key(value):
            raise ValueError(f"folder: not an archive folder: {str(value)[:80]!r}")
    elif field == "activity":
        from appliance.agenda import AgendaError, check_slug

        try:
            check_slug(value if isinstance(value, str) else "")
        except AgendaError:
            raise ValueError(f"activity: not a slug: {str(value)[:80]!r}") from None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def accepted(records: Iterable[dict[str, Any]], check: Callable[[dict[str, Any]], None],
             clock: Any, what: str, ahead: list[dict[str, Any]] | None = None
             ) -> Iterator[dict[str, Any]]:
    """The remote records that pass `check` and whose stamps `clock` accepts; the others
    are logged and skipped (a bad record from a peer never stops a merge). Those refused
    only for a stamp too far ahead (hlc.ClockAhead) are also added to `ahead`: a clock set
    right later accepts them."""
    from sync.hlc import ClockAhead

    for record in records:
        try:
            check(record)
            for stamp in stamps_of(record):
                clock.check(stamp)
        except ValueError as exc:
            log.warning("sync: %s not merged: %s", what, exc)
            if isinstance(exc, ClockAhead) and ahead is not None:
                ahead.append(record)
            continue
        yield record


def merge_into_catalog(catalog: Catalog, remote_records: Iterable[dict[str, Any]], *,
                       clock: Clock, ahead: list[dict[str, Any]] | None = None
                       ) -> list[dict[str, Any]]:
    """Merge records received from the hub into this box's catalog; the records (as stored
    now) whose merged fields changed (value or stamp).

    Records are grouped by the folder each item is catalogued in here (`catalog.lookup`) and
    merged under that shard's lock, one write per shard; what changed is appended to the
    edit log (action "sync"), so a shard rebuilt by `acopio check --repair` gets it back.
    Before writing, every stamp is observed by `clock`, so a later local edit wins over what
    was received.

    Not merged (logged, and left out of the result): records that are malformed or carry a
    stamp the clock refuses (more than a day ahead; also listed in `ahead`), and records of
    items this box does not catalogue (the hub only sends a kit its own items; a kit does
    not adopt records without their files).

    No file moves here: when a merge changes an item's `folder`, the record says so while
    the item still lies in (and is catalogued under) its old folder; the caller re-files it
    with `Refiler.follow` (which keeps the merged stamps), for every returned record whose
    `folder` differs from `catalog.lookup(sha)["folder"]`."""
    incoming: dict[str, dict[str, Any]] = {}
    for record in accepted(remote_records, check_record, clock, "record", ahead):
        sha = record["sha256"]
        incoming[sha] = merge_record(incoming.get(sha), record)
    stamps = [s for r in incoming.values() for s in stamps_of(r)]
    if stamps:
        clock.observe(max(stamps))
    by_folder: dict[str, list[str]] = {}
    for sha in incoming:
        entry = catalog.lookup(sha)
        if entry is None or not isinstance(entry.get("folder"), str):
            log.debug("sync: item %s is not catalogued here; its record is ignored", sha)
            continue
        by_folder.setdefault(entry["folder"], []).append(sha)
    edit_log = EditLog(catalog.data)
    changed: list[dict[str, Any]] = []
    for folder, shas in sorted(by_folder.items()):
        changed += _merge_shard(catalog, edit_log, folder, shas, incoming)
    return changed


def _merge_shard(catalog: Catalog, edit_log: EditLog, folder: str, shas: list[str],
                 incoming: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    at = _now()
    entries: dict[str, dict[str, Any]] = {}
    moved: set[str] = set()

    def change(local: dict[str, Any]) -> dict[str, Any] | None:
        before = _clean(local)
        after = merge_record(before, incoming[local["sha256"]])
        if after["revision"] == before["revision"]:
            return None
        entries[after["sha256"]] = _log_entry(before, after, at)
        if changed_fields(before, after):
            moved.add(after["sha256"])
        return after

    def write_log(records: list[dict[str, Any]]) -> None:
        edit_log.append([entries[r["sha256"]] for r in records])

    found = catalog.update(folder, shas, change, before_commit=write_log)
    for sha in shas:
        if sha not in found:
            log.warning("sync: item %s is not in its catalog folder %s; run `acopio check "
                        "--repair`", sha, folder)
    return [found[sha] for sha in shas if sha in moved and sha in found]


def _log_entry(before: dict[str, Any], after: dict[str, Any], at: str) -> dict[str, Any]:
    """The edit-log entry of a merge: values and marks that changed, history it brought."""
    marks = {}
    for field in MERGED:
        old, new = _mark(before, field), _mark(after, field)
        if old != new:
            marks[field] = new
    known = {_canonical(h) for h in before["history"]}
    return {"sha256": after["sha256"], "at": at, "by": SYNC_BY, "action": SYNC_ACTION,
            "changes": {f: [before.get(f, _DEFAULTS[f]), after.get(f, _DEFAULTS[f])]
                        for f in MERGED
                        if before.get(f, _DEFAULTS[f]) != after.get(f, _DEFAULTS[f])},
            "edited": marks,
            "history": [h for h in after["history"] if _canonical(h) not in known]}


# -- agenda activities --------------------------------------------------------------------

def _clean_activity(record: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"slug": record.get("slug")}
    for field in ACTIVITY_FIELDS:
        if field in record:
            out[field] = copy.deepcopy(record[field])
    edited = record.get("edited")
    if isinstance(edited, dict):
        marks = {f: {"hlc": m["hlc"]} for f, m in edited.items()
                 if f in ACTIVITY_FIELDS and isinstance(m, dict) and hlc.is_stamp(m.get("hlc"))}
        if marks:
            out["edited"] = marks
    for key in ("added", "removed"):
        if hlc.is_stamp(record.get(key)):
            out[key] = record[key]
    return out


def _prune(record: dict[str, Any]) -> dict[str, Any]:
    """Drop whatever a removal made obsolete: fields (per group) and the add stamped no
    later than it."""
    removed = record.get("removed", "")
    if not removed:
        return record
    edited = record.get("edited", {})
    for group in ACTIVITY_GROUPS:  # whole groups, so that start and end stay a pair
        if max(field_stamp(record, f) for f in group) <= removed:
            for field in group:
                record.pop(field, None)
                edited.pop(field, None)
    if not edited:
        record.pop("edited", None)
    if record.get("added", "") <= removed:
        record.pop("added", None)
    return record


def activity_removed(record: Mapping[str, Any]) -> bool:
    """True for a tombstone: removed, and not added again since."""
    removed = _stamp(record.get("removed"))
    return bool(removed) and _stamp(record.get("added")) <= removed


def merge_activity(local: dict[str, Any] | None, remote: dict[str, Any]) -> dict[str, Any]:
    """Two replicas' records of one agenda activity merged: per field (start and end
    together) the greater stamp wins; the latest add and the latest removal are kept, and
    what the removal made obsolete is dropped. A new dict, in a canonical form (so equal
    states are equal dicts)."""
    incoming = _clean_activity(remote)
    if local is None:
        return _prune(incoming)
    mine = _clean_activity(local)
    if mine["slug"] != incoming["slug"]:
        raise ValueError(f"cannot merge different activities: {mine['slug']!r} and "
                         f"{incoming['slug']!r}")
    out: dict[str, Any] = {"slug": mine["slug"]}
    edited: dict[str, Any] = {}
    for group in ACTIVITY_GROUPS:
        winner = incoming if _group_key(incoming, group, {}) > _group_key(mine, group, {}) \
            else mine
        for field in group:
            if field in winner:
                out[field] = winner[field]
            mark = _mark(winner, field)
            if mark is not None:
                edited[field] = mark
    if edited:
        out["edited"] = edited
    for key in ("added", "removed"):
        value = max(mine.get(key, ""), incoming.get(key, ""))
        if value:
            out[key] = value
    return _prune(out)


def check_activity(record: Any) -> None:
    """ValueError unless `record` is an agenda activity (or tombstone) a replica may send."""
    from appliance.agenda import AgendaError, check_slug

    if not isinstance(record, dict):
        raise ValueError("an activity is not an object")
    try:
        check_slug(record.get("slug") if isinstance(record.get("slug"), str) else "")
    except AgendaError as exc:
        raise ValueError(str(exc)) from None
    for key in ("added", "removed"):
        if key in record:
            hlc.parse(record[key])
    edited = record.get("edited", {})
    if not isinstance(edited, dict) or not all(isinstance(m, dict) for m in edited.values()):
        raise ValueError(f"{record['slug']}: edited must map fields to objects")
    for mark in edited.values():
        if "hlc" in mark:
            hlc.parse(mark["hlc"])
    for field in ("title", "area", "place"):
        if field in record and (not isinstance(record[field], str)
                                or len(record[field]) > 200):
            raise ValueError(f"{record['slug']}: {field}: text of at most 200 characters")
    for field in ("start", "end"):
        if field in record:
            try:
                moment = datetime.fromisoformat(record[field])
            except (TypeError, ValueError):
                raise ValueError(f"{record['slug']}: {field}: not an ISO 8601 time") from None
            if moment.tzinfo is None:
                raise ValueError(f"{record['slug']}: {field}: time without an offset")
    if not activity_removed(record):
        missing = [f for f in ("title", "start", "end") if f not in record]
        if missing:
            raise ValueError(f"{record['slug']}: missing {', '.join(missing)}")
        if datetime.fromisoformat(record["end"]) < datetime.fromisoformat(record["start"]):
            raise ValueError(f"{record['slug']}: ends before it starts")


def merge_into_agenda(agenda: Any, remote_records: Iterable[dict[str, Any]], *,
                      clock: Clock) -> list[str]:
    """Merge activities received from another replica into `agenda` (an
    `appliance.agenda.Agenda`), in one write; the slugs whose record changed. Malformed
    records and refused stamps are logged and skipped, as in `merge_into_catalog`."""
    return agenda.merge(remote_records, clock=clock)


__all__ = ["ACTIVITY_FIELDS", "ACTIVITY_GROUPS", "GROUPS", "IMPORT_FACTS", "LOCAL", "MERGED",
           "activity_removed", "changed_fields", "check_activity", "check_record",
           "field_stamp", "merge_activity", "merge_into_agenda", "merge_into_catalog",
           "merge_record", "projection", "stamps_of"]
