"""What the benchmarks that time whole commands share: inputs built once and cached beside a
manifest, the page cache put in the same state before every measured run, and a launcher
that measures a child process by itself.

Why a module: bench_ingest and bench_sync each carried a copy of all three. Benchmarks run as
scripts (`./scripts/bench NAME`), so this folder is on `sys.path`: `from _bench_common import
...`, as bench_derive does with `_bench_video`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

MB = 1_000_000
READ_BLOCK = 4 * 1024 * 1024


# -- small helpers ---------------------------------------------------------------------------


def pick(value: Any, default: Any) -> Any:
    """An option's value, or its default when it was not given."""
    return default if value is None else value


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


@dataclass
class Stopwatch:
    seconds: float = 0.0


@contextlib.contextmanager
def stopwatch() -> Iterator[Stopwatch]:
    watch = Stopwatch()
    started = time.perf_counter()
    try:
        yield watch
    finally:
        watch.seconds = time.perf_counter() - started


def tree_files(root: Path) -> Iterator[Path]:
    for folder, _dirs, names in os.walk(root):
        for name in names:
            yield Path(folder) / name


class PageCache:
    """Puts every measured run in the same cache state: cold (dropped) or warm (pre-read).
    `what` names the tree read into the cache when dropping is not permitted."""

    DROP = Path("/proc/sys/vm/drop_caches")

    def __init__(self, what: str = "the source tree") -> None:
        self.what = what
        self.cold = self._try_drop()

    def _try_drop(self) -> bool:
        os.sync()
        try:
            self.DROP.write_text("3\n")
        except OSError:
            return False
        return True

    @property
    def mode(self) -> str:
        if self.cold:
            return "cold: `sync; echo 3 > /proc/sys/vm/drop_caches` before every measured run"
        return (f"warm: drop_caches not permitted here, so {self.what} is read into the "
                "page cache before every measured run")

    def prepare(self, source: Path) -> None:
        os.sync()
        if self.cold:
            self.DROP.write_text("3\n")
            return
        for path in tree_files(source):
            with open(path, "rb") as fh:
                while fh.read(READ_BLOCK):
                    pass


# Why a launcher: a child's ru_maxrss starts from the high-water mark of the address space it
# was spawned from (the kernel records the old mm's peak at exec, and subprocess spawns with
# vfork, sharing ours). The benchmark's own peak (Pillow images, seeding) would then show as
# the command's. So a minimal interpreter (-I -S) spawns the measured command, times it and
# reports wait4's rusage; its own small footprint is the floor of every RSS figure.
LAUNCHER = """
import json, os, sys, time
report, argv = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ)
_, status, ru = os.wait4(pid, 0)
seconds = time.perf_counter() - started
with open(report, "w") as fh:
    json.dump({"seconds": seconds, "maxrss_kb": ru.ru_maxrss,
               "cpu_seconds": ru.ru_utime + ru.ru_stime,
               "returncode": os.waitstatus_to_exitcode(status)}, fh)
"""


@dataclass
class Launched:
    """Time and rusage of the command alone."""

    seconds: float
    maxrss_kb: int
    cpu_seconds: float
    returncode: int

    @property
    def rss_mb(self) -> float:
        return self.maxrss_kb * 1024 / MB


def launch(cmd: Sequence[str], *, env: dict[str, str] | None, stdout: IO[bytes],
           stderr: IO[bytes] | int, cwd: Path | None = None,
           timeout: float | None = None) -> Launched:
    """Run `cmd` through the launcher, its output into `stdout`/`stderr`."""
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, report.name]
        subprocess.run([*launcher, *cmd], cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout,
                       stderr=stderr, env=env, check=True, timeout=timeout)
        figures = json.loads(Path(report.name).read_text())
    return Launched(figures["seconds"], figures["maxrss_kb"], figures["cpu_seconds"],
                    figures["returncode"])


# -- cached inputs: a tree and, beside it, a manifest written last ---------------------------


def remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def manifest_path(root: Path) -> Path:
    return root.with_name(root.name + ".json")


def file_sizes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in tree_files(root)}


def load_cached(root: Path, params: dict[str, Any], rebuild: bool, *, fmt: int
                ) -> dict[str, Any] | None:
    """The manifest of a cached input built with `params` by the benchmark's input format
    `fmt`; None when it must be (re)built. The manifest is written last, so an interrupted
    build has none."""
    if rebuild:
        return None
    try:
        manifest = json.loads(manifest_path(root).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if manifest.get("format") != fmt or manifest.get("params") != params \
            or not root.is_dir():
        return None
    for rel, size in manifest.get("sizes", {}).items():
        try:
            if (root / rel).stat().st_size != size:
                return None
        except FileNotFoundError:
            return None
    return manifest


def save_manifest(root: Path, params: dict[str, Any], info: dict[str, Any],
                  sizes: dict[str, int] | None = None, *, fmt: int) -> dict[str, Any]:
    os.sync()
    manifest = {"format": fmt, "params": params, "info": info, "sizes": sizes or {}}
    manifest_path(root).write_text(json.dumps(manifest, indent=1))
    return manifest


def start_fresh(root: Path) -> None:
    manifest_path(root).unlink(missing_ok=True)
    remove_tree(root)
    root.mkdir(parents=True)
