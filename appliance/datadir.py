"""Where everything lives inside the data folder.

Kept in one place so that no other module builds a state path by hand, and so that archive
paths are only ever built from values Acopio chose (dates, slugs it validated), never from
user input (design decision 9).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataDir:
    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> DataDir:
        return cls(Path(root).absolute())

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def staging(self) -> Path:
        """Copies in progress, on the archive's filesystem so the final link is atomic."""
        return self.archive / ".incoming"

    @property
    def inbox(self) -> Path:
        """Hot folder: files dropped here are imported, then removed."""
        return self.root / "inbox"

    @property
    def recordings(self) -> Path:
        """Recordings from microphones and webcams not yet in the archive."""
        return self.root / "recordings"

    @property
    def derivatives(self) -> Path:
        return self.root / "derivatives"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def catalog(self) -> Path:
        return self.state / "catalog"

    @property
    def index(self) -> Path:
        return self.state / "index"

    @property
    def jobs(self) -> Path:
        """The job queue's shards (see appliance/jobs.py)."""
        return self.state / "jobs"

    @property
    def tmp(self) -> Path:
        """Temp files of state writes (same filesystem, so renames are atomic)."""
        return self.state / "tmp"

    def ensure(self) -> None:
        for path in (self.archive, self.staging, self.catalog, self.index, self.tmp):
            path.mkdir(parents=True, exist_ok=True)

    def relative(self, path: Path) -> str:
        """A path inside the data dir as the catalog stores it (relative, forward slashes)."""
        return path.relative_to(self.root).as_posix()
