"""`acopio check`: does the catalog agree with the archive, and can it be made to?

The archive is the truth. Check compares every catalog shard with its folder (each record's
file present with its size, and with `deep` its SHA-256), finds files nobody catalogued and
temp files left by a crash, and checks the hash index. Repair never deletes an original: a
damaged shard is moved aside and rebuilt from the files of its folder (and the edit log, for
what people wrote about them), uncatalogued files
are adopted, the index is rebuilt, and only crash debris (unlocked temp files) is removed.
A re-filing that a crash interrupted (appliance.refile) is finished first by repair, and
otherwise reported as `refile_interrupted`, its files not counted as uncatalogued.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance import refile
from appliance.catalog import Catalog, SchemaTooNewError, is_folder_key
from appliance.config import Config
from appliance.datadir import DataDir
from appliance.editorial import EditLog, replay
from appliance.fsutil import TEMP_PREFIX, file_lock, is_debris, lock_in_use, remove_if_debris
from appliance.storage import CorruptStateError
from ingest import copy, records
from ingest.kinds import kind_of
from ingest.pipeline import COMMIT_LOCK, IMPORTING_LOCK

# What mends an original lost or cut short (ingest.pipeline puts it back, the damaged file
# moved to state/damaged/); an evicted one comes back from the hub instead.
RESTORE = "import the card it came from again to restore it"


@dataclass
class Finding:
    code: str  # damaged_shard, missing_file, size_mismatch, hash_mismatch, uncatalogued, ...
    path: str  # relative to the data dir
    detail: str = ""
    repaired: bool = False
    problem: bool = True  # False: a note (a file an import is recording right now)

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "path": self.path, "detail": self.detail,
                "repaired": self.repaired, "problem": self.problem}


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    items: int = 0
    folders: int = 0

    @property
    def clean(self) -> bool:
        return all(f.repaired or not f.problem for f in self.findings)


def check(config: Config, *, deep: bool = False, repair: bool = False,
          progress: Callable[[str], None] | None = None) -> Report:
    data = DataDir.at(config.data_dir)
    catalog = Catalog(data)
    report = Report()
    # -- re-filing (appliance.refile): no re-filing moves a file while folders are compared;
    # one a crash interrupted is finished first (--repair) or reported as refile_interrupted,
    # and the names it involves are not reported as uncatalogued (nor adopted) meanwhile.
    with refile.exclusive(data) if data.state.is_dir() else contextlib.nullcontext():
        refiling = _Refiling(refile.Refiler(config, data, catalog), report, repair=repair)
        # -- end re-filing --
        # An import records its verified files a batch at a time: while one runs, a file
        # in the archive but not in the catalog is most likely its own, and not adopted.
        importing = lock_in_use(data.state / IMPORTING_LOCK)
        folders = _archive_folders(data) | set(catalog.folder_keys())
        for key in sorted(folders):
            if progress:
                progress(key)
            report.folders += 1
            _check_folder(config, data, catalog, key, report, deep=deep, repair=repair,
                          refiling=refiling.paths, importing=importing)
        refiling.retry()  # a recovery that a damaged shard stopped, once it is rebuilt
        # Under the imports' commit lock: an import that recorded a batch between the shards
        # read here and the index listed after them had its fresh index entries taken for
        # stale, and --repair removed them (its items then unknown to edits and the worker).
        # (No lock file, and none can be made on a read-only disk: no import ever ran here,
        # and none can commit now.)
        with file_lock(data.state / COMMIT_LOCK, missing_ok=True) if data.state.is_dir() \
                else contextlib.nullcontext():
            _check_index(data, catalog, report, repair=repair, refiling=refiling.shas)
        _check_state_debris(data, report, repair=repair)
    return report


# -- re-filing (appliance.refile) -----------------------------------------------------------


class _Refiling:
    """Re-filings a crash interrupted: finished with --repair, else reported. `paths` and
    `shas` are what they still involve, left out of the other findings."""

    def __init__(self, refiler: refile.Refiler, report: Report, *, repair: bool) -> None:
        self.refiler = refiler
        self.repair = repair
        self.findings: dict[str, Finding] = {}
        pending = refiler.interrupted()
        for item in pending:
            finding = Finding("refile_interrupted", item.path, item.detail)
            self.findings[item.path] = finding
            report.findings.append(finding)
        if repair and pending:
            refiler.recover(locked=True)
        self._update()

    def retry(self) -> None:
        if self.repair and self.pending:
            self.refiler.recover(locked=True)
            self._update()

    def _update(self) -> None:
        self.pending = self.refiler.interrupted() if self.findings else []
        left = {item.path for item in self.pending}
        for path, finding in self.findings.items():
            finding.repaired = path not in left
        self.paths = frozenset(p for item in self.pending for p in item.archive_paths)
        self.shas = frozenset(s for item in self.pending for s in item.sha256s)


# -- end re-filing ----------------------------------------------------------------------------


def _archive_folders(data: DataDir) -> set[str]:
    if not data.archive.is_dir():
        return set()
    keys = set()
    for path in data.archive.glob("*/*/*"):
        key = path.relative_to(data.archive).as_posix()
        if path.is_dir() and is_folder_key(key):
            keys.add(key)
    return keys


def _check_folder(config: Config, data: DataDir, catalog: Catalog, key: str, report: Report,
                  *, deep: bool, repair: bool, refiling: frozenset[str] = frozenset(),
                  importing: bool = False) -> None:
    folder = data.archive / key
    shard_rel = data.relative(catalog.shard_path(key))
    try:
        items = catalog.read_shard(key)
    except CorruptStateError as exc:
        finding = Finding("damaged_shard", shard_rel, exc.reason)
        report.findings.append(finding)
        if repair:
            _rebuild_shard(config, data, catalog, key, report)
            finding.repaired = True
        return
    except SchemaTooNewError as exc:
        report.findings.append(Finding("schema_too_new", shard_rel, str(exc)))
        return
    report.items += len(items)
    reader = copy.ReadBack()
    catalogued = set()
    for item in items:
        path = data.root / item["archive_path"]
        catalogued.add(item["archive_path"])
        rel = item["archive_path"]
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            # Renamed by an interrupted re-filing (reported as such), or evicted for space
            # once the hub acknowledged it (sync.kit.evict): neither is lost.
            if rel not in refiling and not _evicted(data, item["sha256"]):
                report.findings.append(
                    Finding("missing_file", rel, f"catalogued but not in archive; {RESTORE}"))
            continue
        if size != item["size"]:
            finding = Finding("size_mismatch", rel,
                              f"{size} bytes on disk, {item['size']} catalogued")
        elif deep and (sha256 := reader.sha256(path)[0]) != item["sha256"]:
            finding = Finding("hash_mismatch", rel,
                              f"SHA-256 on disk {sha256}, catalogued {item['sha256']}")
        else:
            continue
        report.findings.append(finding)
        if (data.state / "hub").is_dir():  # a hub's originals come from kits, not cards
            if repair:
                from sync.hub.ledger import set_aside_corrupt

                actual = sha256 if finding.code == "hash_mismatch" else ""
                set_aside_corrupt(data, catalog, item, path, actual, size)
                finding.repaired = True
                finding.detail += ("; set aside in state/hub/corrupt/: each kit that holds it "
                                   "sends it again at its next sync (it asks the hub)")
            else:
                finding.detail += "; `--repair` sets it aside and the kits send it again"
        else:
            finding.detail += "; " + (_set_aside(data, path, item, finding) if repair
                                      else RESTORE)
    strays: list[Path] = []
    if folder.is_dir():
        for entry in sorted(folder.iterdir()):
            rel = data.relative(entry)
            if entry.name.startswith(TEMP_PREFIX):
                if is_debris(entry):
                    finding = Finding("stray_temp", rel, "left by an interrupted import")
                    finding.repaired = repair and remove_if_debris(entry)
                    report.findings.append(finding)
            elif rel not in catalogued and rel not in refiling:  # (an interrupted re-filing)
                strays.append(entry)
    if importing:
        for entry in strays:
            report.findings.append(Finding(
                "being_imported", data.relative(entry), "not in the catalog yet: an import "
                "is running, and records its files a batch at a time", problem=False))
        strays = []
    for entry in strays:
        report.findings.append(
            Finding("uncatalogued", data.relative(entry), "in the archive, not in the catalog"))
    if repair and strays:
        # With what people wrote about them, when the log knows them (a shard file lost
        # whole: its items come back as files, their captions and approvals from the log).
        described = replay(_describe_files(config, data, key, [p for p in strays
                                                                 if p.is_file()]),
                           EditLog(data))
        adopted, copies = [], {}
        for record in described:
            kept = _catalogued_copy(data, catalog, record, adopted)
            if kept is None:
                adopted.append(record)
            else:
                copies[record["archive_path"]] = kept
        catalog.upsert(key, adopted)
        done = {r["archive_path"] for r in adopted}
        for finding in report.findings:
            if finding.code == "uncatalogued" and finding.path in done:
                finding.repaired = True
            elif finding.code == "uncatalogued" and finding.path in copies:
                # A second record of one content would make two items of one photo; the
                # copy is an original all the same, so it stays for a person to remove.
                finding.detail = (f"a copy of {copies[finding.path]}, which is catalogued: "
                                  "not adopted (delete this copy, or move it out of the "
                                  "archive)")


def _catalogued_copy(data: DataDir, catalog: Catalog, record: dict[str, Any],
                     adopting: list[dict[str, Any]]) -> str | None:
    """The archive path of another file of this content that is catalogued (or about to
    be, earlier in this repair) and present, or None."""
    for other in adopting:
        if other["sha256"] == record["sha256"]:
            return str(other["archive_path"])
    entry = catalog.lookup(record["sha256"])
    path = entry.get("archive_path") if entry else None
    if isinstance(path, str) and path != record["archive_path"] and (data.root / path).is_file():
        return path
    return None


def _set_aside(data: DataDir, path: Path, item: dict[str, Any], finding: Finding) -> str:
    """A damaged original (cut short, or bit rot found by --deep) is moved out of the archive
    into state/damaged/, kept: left in place, nothing would ever restore it (a card's import
    counted it a duplicate of itself). Its record then names a missing file, which the
    card's next import restores; when the hub acknowledged this content, the item is "en la
    central" instead, and the web UI fetches it back. What was done, for the finding."""
    from sync.kit.store import SyncStore, now_iso

    aside = copy.set_aside_damaged(data.state, path, item["sha256"])
    said = f"set aside as {data.relative(aside)}"
    store = SyncStore(data)
    if not store.object_acked(item["sha256"]):
        return f"{said}; {RESTORE}"
    store.evicted.put(item["sha256"], {"archive_path": item["archive_path"],
                                       "size": item.get("size"), "at": now_iso(),
                                       "record": item})
    finding.repaired = True
    return f"{said}; the hub holds it: fetch it back from the item's page (\"Traer de la " \
           "central\")"


def _evicted(data: DataDir, sha256: str) -> bool:
    """An original removed from the kit for space once the hub acknowledged it
    (sync.kit.evict): not lost, so not a finding."""
    from sync.kit.evict import is_evicted

    return is_evicted(data, sha256)


def _rebuild_shard(config: Config, data: DataDir, catalog: Catalog, key: str,
                   report: Report) -> None:
    """Move the damaged shard aside (kept as evidence) and rebuild it from the folder."""
    shard = catalog.shard_path(key)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if shard.exists():
        os.replace(shard, shard.with_name(f"{shard.name}.damaged-{stamp}"))
    folder = data.archive / key
    files = [p for p in sorted(folder.iterdir()) if p.is_file()
             and not p.name.startswith(TEMP_PREFIX)] if folder.is_dir() else []
    # People's work (captions, picks, approvals) is not in the files: the edit log has it.
    rebuilt = replay(_describe_files(config, data, key, files), EditLog(data))
    _restore_hub_owners(data, rebuilt)
    catalog.replace_shard(key, rebuilt)
    report.items += len(rebuilt)


def _restore_hub_owners(data: DataDir, rebuilt: list[dict[str, Any]]) -> None:
    """On a hub's data folder, which kits own each rebuilt item, from the hub's change feed
    (read before the rebuilt shard replaces what it saw)."""
    from sync.hub.changes import owners_in

    owners = owners_in(data.state / "hub" / "changes.sqlite", [r["sha256"] for r in rebuilt])
    for record in rebuilt:
        if record["sha256"] in owners:
            record["kits"] = owners[record["sha256"]]


def _describe_files(config: Config, data: DataDir, key: str, files: list[Path]
                    ) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    import_id = f"repair-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    activity = key.split("/")[-1].split("_", 1)[1]
    out = []
    for path in files:
        kind = kind_of(path.name) or "other"
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            sha256, size = copy.hash_fd(fd)
            description = records.describe(fd, kind, config, now)
        finally:
            os.close(fd)
        record = records.make_record(
            sha256=sha256, size=size, kind=kind, original_name=path.name, source_path="",
            archive_path=data.relative(path), folder=key, activity=activity,
            filed_by="repair", description=description, imported_at=now, import_id=import_id,
        )
        record["problems"].append({"code": "rebuilt",
                                   "detail": "record rebuilt from the archive by acopio check"})
        out.append(record)
    return out


def _check_index(data: DataDir, catalog: Catalog, report: Report, *, repair: bool,
                 refiling: frozenset[str] = frozenset()) -> None:
    """Every catalogued item has its index entry, and every entry points at an item."""
    wanted: dict[str, dict[str, str]] = {}
    for key in catalog.folder_keys():
        try:
            for item in catalog.read_shard(key):
                entry = {"folder": key, "archive_path": item["archive_path"]}
                first = wanted.get(item["sha256"])
                if first is None:
                    wanted[item["sha256"]] = entry
                    continue
                if item["sha256"] in refiling:
                    continue
                # Two records of one content: the index names the one whose file is there.
                if not (data.root / first["archive_path"]).is_file() \
                        and (data.root / entry["archive_path"]).is_file():
                    wanted[item["sha256"]], entry = entry, first
                report.findings.append(Finding(
                    "duplicate_record", entry["archive_path"],
                    "another record of the same content as "
                    f"{wanted[item['sha256']]['archive_path']}"))
        except (CorruptStateError, SchemaTooNewError):
            continue  # already reported with its folder
    for sha256, entry in wanted.items():
        if sha256 in refiling:
            continue  # an interrupted re-filing: its item may be in two shards until finished
        if catalog.by_hash.get(sha256) != entry:
            finding = Finding("index_entry_missing", entry["archive_path"], sha256)
            if repair:
                catalog.by_hash.put(sha256, entry)
                finding.repaired = True
            report.findings.append(finding)
    for sha256 in list(catalog.by_hash.keys()):
        if sha256 not in wanted and sha256 not in refiling:
            finding = Finding("index_entry_stale", f"state/index/sha256/{sha256[:2]}/{sha256}",
                              "indexes no catalogued item")
            if repair:
                catalog.by_hash.remove(sha256)
                finding.repaired = True
            report.findings.append(finding)


def _check_state_debris(data: DataDir, report: Report, *, repair: bool) -> None:
    temps = [*data.state.rglob(TEMP_PREFIX + "*"), *data.staging.glob(TEMP_PREFIX + "*")]
    refiling = refile.journal_dir(data)
    for path in sorted(temps):
        if refiling in path.parents:
            continue  # a re-filing's, reported (and removed) with it

        if is_debris(path):
            finding = Finding("stray_temp", data.relative(path), "left by an interrupted write")
            finding.repaired = repair and remove_if_debris(path)
            report.findings.append(finding)
