"""What people add to an item: pick, rating, caption, tags, credit, approval, with history.

Interface-agnostic (the web UI, the JSON API and `acopio items set` all call this), like the
beets importer. The catalog record is the one place an item's fields live, so an edit is a
read-modify-write of its shard under the shard's lock: concurrent editors in several web
threads or processes never lose each other's writes.

Concurrent edits of one item: every record carries a `revision` and, per field, the revision
that last changed it (`edited`). A client that says which revision it started from
(`base_revision`) gets an `EditConflict` for a field someone else changed meanwhile, with
who and what, instead of silently overwriting it; fields nobody else touched merge. Tags can
also be added and removed (`add_tags`, `remove_tags`), which always merge. Without a base
revision (the CLI, a script) the last writer wins.

Every applied change is also appended to a month's edit log (`state/edits/YYYY-MM.jsonl`,
fsynced): a catalog shard rebuilt from the archive by `acopio check --repair` gets people's
work back from it, since the files themselves cannot tell what anyone wrote about them.

Sync (README "Metadata both ways"): every change of a merged field (`fields.MERGED`) also
stamps it with the kit's hybrid logical clock, `edited[field]["hlc"]` (sync/hlc.py), taken
under the shard's lock, so stamps follow the order in which the writes land. The edit log
carries the stamps, and what a sync merge changed (action "sync", see `apply_merged`), so a
replay restores them too.

An Editor's `on_written` listener is told of every shard write it made (catalog.ShardWrite,
once per call, after all of them): the web process passes its query index's
`apply_changes`, so the page fetched next shows the edit without the shard being re-read.
"""

from __future__ import annotations

import contextlib
import json
import os
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from appliance.catalog import Catalog, ShardWrite
from appliance.datadir import DataDir
from appliance.fields import EDITABLE, MERGED, with_defaults
from appliance.fsutil import SHARED_MODE, file_lock, fsync_dir
from sync.hlc import Clock, box_node, is_stamp

PICKS = ("picked", "rejected")
TEXT_LIMITS = {"caption": 2000, "credit": 200, "place": 200}
LIST_FIELDS = ("tags", "people")
LIST_ITEM_LIMIT = 64
LIST_LENGTH_LIMIT = 50
OPERATIONS = ("add_tags", "remove_tags")
SYNC_ACTION = "sync"


class EditError(ValueError):
    """A value a person typed is not acceptable; the message (English, for the CLI and the
    API) names the field. `code` and `values` let the web pages say it in the screen's
    language (web/i18n.py `edit.error.<code>`), as agenda.AgendaError does."""

    def __init__(self, message: str, code: str = "", **values: Any) -> None:
        super().__init__(message)
        self.code = code
        self.values = values


class NotFound(LookupError):
    pass


class EditConflict(Exception):
    """Someone else changed these fields since `base_revision`: {field: {value, by, at}}."""

    def __init__(self, sha256: str, fields: dict[str, dict[str, Any]], revision: int) -> None:
        super().__init__(f"{sha256}: changed by someone else meanwhile: {', '.join(fields)}")
        self.sha256 = sha256
        self.fields = fields
        self.revision = revision


def _clean_text(value: str) -> str:
    """NFC, no control characters (newlines and tabs in a caption are fine), trimmed."""
    value = unicodedata.normalize("NFC", value)
    return "".join(c for c in value if c in "\n\t" or unicodedata.category(c)[0] != "C").strip()


def validate(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Check and normalise an edit; unknown fields and bad values raise EditError."""
    out: dict[str, Any] = {}
    for key, value in changes.items():
        if key in TEXT_LIMITS:
            if not isinstance(value, str):
                raise EditError(f"{key}: expected text", "not_text", field=key)
            value = _clean_text(value)
            if len(value) > TEXT_LIMITS[key]:
                raise EditError(f"{key}: at most {TEXT_LIMITS[key]} characters", "too_long",
                                field=key, limit=TEXT_LIMITS[key])
        elif key in LIST_FIELDS or key in OPERATIONS:
            value = _clean_list(key, value)
        elif key == "pick":
            if value not in (*PICKS, None):
                raise EditError("pick: expected picked, rejected or null", "bad_pick")
        elif key == "rating":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 5:
                raise EditError("rating: expected a whole number from 0 to 5", "bad_rating")
        else:
            raise EditError(f"{key}: not an editable field "
                            f"(editable: {', '.join([*EDITABLE, *OPERATIONS])})")
        out[key] = value
    return out


def _clean_list(key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise EditError(f"{key}: expected a list of text", "not_list", field=key)
    seen: dict[str, str] = {}
    for raw in value:
        text = " ".join(_clean_text(raw).split())
        if not text:
            continue
        if len(text) > LIST_ITEM_LIMIT:
            raise EditError(f"{key}: each entry at most {LIST_ITEM_LIMIT} characters",
                            "entry_too_long", field=key, limit=LIST_ITEM_LIMIT)
        seen.setdefault(text.casefold(), text)
    if len(seen) > LIST_LENGTH_LIMIT:
        raise EditError(f"{key}: at most {LIST_LENGTH_LIMIT} entries", "too_many",
                        field=key, limit=LIST_LENGTH_LIMIT)
    return list(seen.values())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def apply(record: dict[str, Any], changes: Mapping[str, Any], *, by: str, at: str,
          action: str = "edit", base_revision: int | None = None,
          hlc: str | Callable[[], str] | None = None) -> dict[str, Any] | None:
    """The record with `changes` (already validated) applied, or None when nothing changes.

    `hlc`: the clock stamp (or a function giving it, called only when something changes)
    that every changed merged field gets as `edited[field]["hlc"]`.

    Raises EditConflict when `base_revision` is given and a changed field was edited by
    someone else after it (to a different value than this edit sets)."""
    record = with_defaults(dict(record))
    if base_revision is not None:
        conflicts = {}
        for key, value in changes.items():
            field = "tags" if key in OPERATIONS else key
            if key in OPERATIONS:
                continue  # adding or removing a tag merges with anything
            mark = record["edited"].get(field)
            if mark and mark["revision"] > base_revision and record[field] != value:
                conflicts[field] = {"value": record[field], "by": mark["by"], "at": mark["at"]}
        if conflicts:
            raise EditConflict(record["sha256"], conflicts, record["revision"])
    new_values = dict(changes)
    if "add_tags" in new_values or "remove_tags" in new_values:
        tags = list(new_values.pop("tags", record["tags"]))
        folded = {t.casefold() for t in tags}
        tags += [t for t in new_values.pop("add_tags", []) if t.casefold() not in folded]
        removed = {t.casefold() for t in new_values.pop("remove_tags", [])}
        new_values["tags"] = [t for t in tags if t.casefold() not in removed]
    diff = {k: [record.get(k), v] for k, v in new_values.items() if record.get(k) != v}
    if not diff:
        return None
    revision = record["revision"] + 1
    edited = dict(record["edited"])
    stamp = (hlc() if any(k in MERGED for k in diff) else None) if callable(hlc) else hlc
    for key, (_, value) in diff.items():
        record[key] = value
        edited[key] = {"revision": revision, "by": by, "at": at}
        if stamp and key in MERGED:
            edited[key]["hlc"] = stamp
    record["edited"] = edited
    record["revision"] = revision
    # The newest MAX_HISTORY, as union_history keeps: a record the hub refused (it takes no
    # more) never reached it, edits, approval and all.
    record["history"] = [*record["history"],
                         {"at": at, "by": by, "action": action, "changes": diff}
                         ][-MAX_HISTORY:]
    return record


def _canonical(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True, sort_keys=True, separators=(",", ":"))


# A record keeps at most this many history entries, the newest (union_history).
MAX_HISTORY = 1000


def history_key(entry: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """What makes two history entries the same change: when, who, what."""
    return (str(entry.get("at", "")), str(entry.get("by", "")), str(entry.get("action", "")),
            _canonical(entry.get("changes")))


def union_history(*histories: Iterable[Any]) -> list[dict[str, Any]]:
    """Every entry of the histories once (the same (at, by, action, changes) is one entry),
    in time order; the same whatever the order of the histories. At most the newest
    MAX_HISTORY: a record's history cannot grow without bound (a peer sending a new batch of
    entries with every record), and keeping the greatest N of a union is itself order-free,
    so replicas still converge. The edit log (state/edits) keeps every change."""
    chosen: dict[tuple[str, str, str, str], tuple[str, dict[str, Any]]] = {}
    for history in histories:
        for entry in history:
            if not isinstance(entry, dict):
                continue
            key, full = history_key(entry), _canonical(entry)
            if key not in chosen or full < chosen[key][0]:
                chosen[key] = (full, entry)
    return [dict(chosen[key][1]) for key in sorted(chosen)[-MAX_HISTORY:]]


def apply_merged(record: dict[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    """The record with what a sync merge changed (an edit-log entry of action "sync")
    applied again: the new values, their `edited` marks (None: no mark), the history entries
    it brought; the revision moves on by one."""
    record = with_defaults(dict(record))
    revision = record["revision"] + 1
    for key, change in (entry.get("changes") or {}).items():
        record[key] = change[1]
    edited = dict(record["edited"])
    for key, mark in (entry.get("edited") or {}).items():
        if mark is None:
            edited.pop(key, None)
        else:
            edited[key] = {**mark, "revision": revision}
    record["edited"] = edited
    record["history"] = union_history(record["history"], entry.get("history") or [])
    record["revision"] = revision
    return record


class EditLog:
    """Append-only JSON lines, one file per month (of the clock, unless it went back), fsynced:
    replayed onto rebuilt shards in the order they were written."""

    def __init__(self, data: DataDir) -> None:
        self.root = data.state / "edits"

    def append(self, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        payload = "".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n"
                          for e in entries).encode()
        with file_lock(self.root / ".lock"):
            # The month's file, but never one that sorts before the newest: replay reads the
            # files in name order, which must stay the order of writing. A clock come back
            # at 1970 (a Pi after a power cut) put its edits first, and a rebuilt shard got
            # the older caption back.
            month = entries[0]["at"][:7]
            newest = max((p.stem for p in self.root.glob("*.jsonl")), default=month)
            path = self.root / f"{max(month, newest)}.jsonl"
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                         SHARED_MODE)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    # A line cut short (a crash, a full disk) is ended here: glued to it,
                    # this entry would be skipped with it when the log is replayed.
                    payload = b"\n" + payload
                try:
                    view = memoryview(payload)
                    while view:  # a full disk may write part of it
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except OSError:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)  # no half entry left behind, if it can
                    raise
            finally:
                os.close(fd)
        fsync_dir(self.root)

    def entries(self, sha256s: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """Entries in the order they were written (oldest month first); a line cut short by
        a crash is skipped."""
        wanted = set(sha256s) if sha256s is not None else None
        if not self.root.is_dir():
            return
        for path in sorted(self.root.glob("*.jsonl")):
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    if wanted is None or entry.get("sha256") in wanted:
                        yield entry


def replay(records: list[dict[str, Any]], log: EditLog) -> list[dict[str, Any]]:
    """Records rebuilt from files, with the logged edits and approvals applied again."""
    by_sha = {r["sha256"]: with_defaults(r) for r in records}
    for entry in log.entries(by_sha):
        record = by_sha[entry["sha256"]]
        if entry.get("action") == SYNC_ACTION:
            by_sha[entry["sha256"]] = apply_merged(record, entry)
            continue
        changes = {k: new for k, (_, new) in entry["changes"].items()}
        stamp = entry.get("hlc") if is_stamp(entry.get("hlc")) else None
        record = apply(record, changes, by=entry["by"], at=entry["at"],
                       action=entry["action"], hlc=stamp) or record
        if stamp:
            # A record rebuilt from the files may hold a value already (an item re-filed is
            # found in its new folder): the value's stamp comes back all the same.
            edited = dict(record["edited"])
            for key, value in changes.items():
                mark = edited.get(key) or {}
                if key in MERGED and record.get(key) == value and mark.get("hlc", "") < stamp:
                    edited[key] = {"revision": record["revision"], "by": entry["by"],
                                   "at": entry["at"], "hlc": stamp}
            record = {**record, "edited": edited}
        by_sha[entry["sha256"]] = record
    return list(by_sha.values())


class Editor:
    """`node`: this box's name for the sync clock (`kit.name`; made a valid node name by
    `sync.hlc.box_node`, `hub` on a headquarters data folder); `hlc`: a clock to use
    instead of the data folder's own; `on_written`: told of the shard writes of each call
    (after them all, even when the call then fails, e.g. an item of a later folder not
    found)."""

    def __init__(self, data: DataDir, catalog: Catalog | None = None,
                 clock: Callable[[], str] = _now, *, node: str = "kit",
                 hlc: Clock | None = None,
                 on_written: Callable[[list[ShardWrite]], object] | None = None) -> None:
        self.data = data
        self.catalog = catalog or Catalog(data)
        self.log = EditLog(data)
        self.clock = clock
        self.hlc = hlc or Clock(data.state, box_node(data.state, node))
        self.on_written = on_written

    def edit(self, sha256: str, changes: Mapping[str, Any], *, by: str,
             base_revision: int | None = None) -> dict[str, Any]:
        """Apply a person's edit to one item; the record as it is afterwards."""
        return self._change([sha256], validate(changes), by=by, action="edit",
                            base_revision=base_revision)[0]

    def edit_many(self, sha256s: list[str], changes: Mapping[str, Any], *, by: str,
                  base_revisions: Mapping[str, int] | None = None,
                  conflicts: list[EditConflict] | None = None) -> list[dict[str, Any]]:
        """The same edit on a selection: one write per catalog shard.

        With `base_revisions` (the revision of each item as the selecting page showed it),
        an item whose changed field someone else edited since is left as it is and its
        EditConflict added to `conflicts`: a grid loaded before a colleague captioned a photo
        must not overwrite that caption unseen. Without, last writer wins (the CLI)."""
        return self._change(sha256s, validate(changes), by=by, action="edit",
                            base_revisions=base_revisions, conflicts=conflicts)

    def approve(self, sha256s: list[str], *, by: str,
                base_revisions: Mapping[str, int] | None = None,
                conflicts: list[EditConflict] | None = None) -> list[dict[str, Any]]:
        """Approve items. With `base_revisions` (each item's revision as the approver's page
        showed it), an item whose caption, tags, people, credit or place someone else
        changed since is not approved: EditConflict (raised, or added to `conflicts`). An
        approval vouches for what the approver saw, not for a draft typed meanwhile."""
        return self._change(sha256s, {"approved": True, "approved_by": by,
                                      "approved_at": self.clock()}, by=by, action="approve",
                            base_revisions=base_revisions, conflicts=conflicts)

    def withdraw(self, sha256s: list[str], *, by: str) -> list[dict[str, Any]]:
        return self._change(sha256s, {"approved": False, "approved_by": by,
                                      "approved_at": self.clock()}, by=by, action="withdraw")

    def _change(self, sha256s: list[str], changes: dict[str, Any], *, by: str, action: str,
                base_revision: int | None = None,
                base_revisions: Mapping[str, int] | None = None,
                conflicts: list[EditConflict] | None = None) -> list[dict[str, Any]]:
        by_folder: dict[str, list[str]] = {}
        for sha in dict.fromkeys(sha256s):
            entry = self.catalog.lookup(sha)
            if entry is None:
                raise NotFound(sha)
            by_folder.setdefault(entry["folder"], []).append(sha)
        at = self.clock()
        stamps: list[str] = []

        def stamp() -> str:
            # One stamp per shard write, taken under the shard's lock (change runs there).
            if not stamps:
                stamps.append(self.hlc.now())
            return stamps[0]

        def change(record: dict[str, Any]) -> dict[str, Any] | None:
            if action in ("approve", "withdraw") and \
                    record.get("approved", False) == changes["approved"]:
                return None  # approving an approved item changes nothing, not even its time
            if base_revisions is None:
                return apply(record, changes, by=by, at=at, action=action,
                             base_revision=base_revision, hlc=stamp)
            base = base_revisions.get(record["sha256"])
            try:
                if action == "approve":
                    _check_unchanged_since(record, base, by)
                    base = None
                return apply(record, changes, by=by, at=at, action=action,
                             base_revision=base, hlc=stamp)
            except EditConflict as exc:
                if conflicts is None:
                    raise
                conflicts.append(exc)
                return None

        def log(changed: list[dict[str, Any]]) -> None:
            self.log.append([{"sha256": r["sha256"], "at": at, "by": by, "action": action,
                              "changes": r["history"][-1]["changes"],
                              **({"hlc": stamps[0]} if stamps else {})} for r in changed])

        results: dict[str, dict[str, Any]] = {}
        writes: list[ShardWrite] = []
        try:
            for folder, shas in by_folder.items():
                stamps.clear()
                updated = self.catalog.update(
                    folder, shas, change, before_commit=log,
                    after_write=writes.append if self.on_written else None)
                missing = set(shas) - set(updated)
                if missing:
                    raise NotFound(sorted(missing)[0])
                results.update(updated)
        finally:
            if writes and self.on_written is not None:
                self.on_written(writes)
        return [results[sha] for sha in dict.fromkeys(sha256s)]


# What an approval vouches for: the fields that are published with the picture.
REVIEWED = ("caption", "tags", "people", "credit", "place")


def _check_unchanged_since(record: dict[str, Any], base: int | None, by: str) -> None:
    """EditConflict when someone other than `by` changed a REVIEWED field after `base`."""
    if base is None:
        return
    record = with_defaults(dict(record))
    changed = {field: {"value": record[field], "by": mark["by"], "at": mark["at"]}
               for field in REVIEWED
               if (mark := record["edited"].get(field)) and mark["revision"] > base
               and mark["by"] != by}
    if changed:
        raise EditConflict(record["sha256"], changed, record["revision"])


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A record as listings show it: the editorial fields, without the long history."""
    out = with_defaults(dict(record))
    out.pop("history", None)
    return out


def history_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    return list(with_defaults(dict(record))["history"])
