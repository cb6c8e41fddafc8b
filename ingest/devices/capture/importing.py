"""Importing a finished recording through the verified pipeline, then deleting it."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from tinydb import Query

from appliance import storage
from appliance.catalog import Catalog
from appliance.datadir import DataDir
from appliance.fsutil import fsync_dir
from ingest.devices.capture.args import RecordError
from ingest.devices.capture.processes import is_running
from ingest.devices.capture.recorder import (
    _ACTIVE,
    _FINISHED,
    Recording,
    _files_lock,
    _state_path,
    log_path,
)
from ingest.devices.capture.repair import container_of
from ingest.pipeline import Importer, Outcome, Reporter, Summary
from ingest.sources import FolderSource
from ingest.walk import Scan

if TYPE_CHECKING:
    from appliance.config import Config

logger = logging.getLogger("ingest.devices.capture")  # one logger name, as before the split


# -- import -----------------------------------------------------------------------------


class _OneFile(FolderSource):
    """The recording's folder as an import source that offers only the recording: the other
    files there (its log, an older recording awaiting recover) are not part of this import."""

    def __init__(self, path: Path) -> None:
        super().__init__(path.parent)
        self.name = os.fsencode(path.name)

    def scan(self, extra_clutter: tuple[str, ...] = ()) -> Scan:
        found = super().scan(extra_clutter)
        return Scan(files=[f for f in found.files if f.rel == self.name])


class _Committed(Reporter):
    """Keeps the outcomes the pipeline reports as safely in the catalog."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def committed(self, outcomes: list[Outcome]) -> None:
        self.outcomes.extend(outcomes)


def import_recording(config: Config, path: str | os.PathLike[str],
                     activity: str | None) -> Summary:
    """Import one finished recording through the verified pipeline; delete it only once the
    archive holds it (imported or already there). On failure it stays for `recover()`."""
    data = DataDir.at(config.data_dir)
    with _files_lock(data):
        path = _check_recording_path(data, Path(path))
        reporter = _Committed()
        with _OneFile(path) as source:
            summary = Importer(config, reporter=reporter).run_source(source, activity)
        if _archived(data, summary, reporter.outcomes, path):
            _discard(data, path)
        else:
            logger.warning("recording %s not imported, kept for recover(): %s", path,
                           summary.stopped or [o.reason for o in summary.failed])
    return summary


def _check_recording_path(data: DataDir, path: Path) -> Path:
    path = path.absolute()
    root = data.recordings
    if path.parent.parent != root or container_of(path) is None:
        raise RecordError(f"{path} is not a recording in {root}")
    if not path.is_file():
        raise RecordError(f"recording {path} does not exist")
    rows = storage.snapshot(_state_path(data)).table(_ACTIVE).all()
    for row in rows:
        recording = Recording.from_record(row, data.root)
        if recording.output == path and is_running(recording.process):
            raise RecordError(f"{path} is still being recorded; stop it first")
    return path


def _archived(data: DataDir, summary: Summary, committed: list[Outcome], path: Path) -> bool:
    """True only when the pipeline committed this one file (imported, or already archived)
    and the archive holds a file of its size under the catalog's name for its hash."""
    if not summary.ok or summary.imported + summary.duplicates != 1 or len(committed) != 1:
        return False
    outcome = committed[0]
    if outcome.status not in ("imported", "duplicate") or outcome.rel != os.fsencode(path.name):
        return False
    entry = Catalog(data).lookup(outcome.sha256)
    if not entry:
        return False
    archived = data.root / entry["archive_path"]
    return archived.is_file() and archived.stat().st_size == path.stat().st_size


def _discard(data: DataDir, path: Path) -> None:
    """Delete an archived recording, its log, and its folder once empty."""
    path.unlink()
    with contextlib.suppress(FileNotFoundError):
        log_path(path).unlink()
    fsync_dir(path.parent)
    try:
        path.parent.rmdir()
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    rel = path.relative_to(data.root).as_posix()
    with storage.transaction(_state_path(data), data.tmp) as db:
        db.table(_FINISHED).remove(Query().output == rel)
