"""A progress bar for imports run from a terminal (a Reporter for the ingest pipeline)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from ingest.pipeline import Outcome, Reporter
from ingest.walk import Scan


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class TerminalProgress(Reporter):
    """Redraws one line at most ten times a second; prints nothing when not on a terminal."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.total_files = 0
        self.total_bytes = 0
        self.done_files = 0
        self.done_bytes = 0
        self.started_at = time.monotonic()
        self.last_draw = 0.0

    def started(self, scan: Scan) -> None:
        self.total_files = len(scan.files)
        self.total_bytes = scan.total_bytes
        self.started_at = time.monotonic()
        self._draw(force=True)

    def advanced(self, nbytes: int) -> None:
        self.done_bytes += nbytes
        self._draw()

    def file_done(self, outcome: Outcome) -> None:
        self.done_files += 1
        self._draw(force=self.done_files == self.total_files)
        if self.enabled and self.done_files == self.total_files:
            self.stream.write("\n")

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last_draw < 0.1:
            return
        self.last_draw = now
        # Bytes read can exceed the total when a duplicate is hashed and then copied.
        fraction = min(1.0, self.done_bytes / self.total_bytes) if self.total_bytes else 1.0
        width = 30
        bar = "#" * int(fraction * width)
        rate = self.done_bytes / max(now - self.started_at, 1e-6)
        self.stream.write(
            f"\r[{bar:<{width}}] {fraction:4.0%} {self.done_files}/{self.total_files} files "
            f"{human_bytes(self.done_bytes)}/{human_bytes(self.total_bytes)} "
            f"{human_bytes(rate)}/s  "
        )
        self.stream.flush()
