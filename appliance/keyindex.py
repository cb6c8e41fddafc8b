"""A lookup table kept as one small file per key.

Dedup needs "have we archived this SHA-256?" answered in constant time however large the
archive grows. A single TinyDB file would be rewritten whole on every insert and grow with
the archive, which the design forbids; a folder of small files fanned out by key prefix
(like git's object store) costs one stat per lookup and one small atomic write per insert.
The index is derived data: `acopio check --repair` rebuilds it from the catalog shards.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from appliance.fsutil import atomic_write, syncfs
from appliance.storage import dump_json

_KEY = re.compile(r"^[0-9a-f]{64}$")


class KeyIndex:
    """Maps a hex SHA-256 key to a small JSON object."""

    def __init__(self, root: Path, tmp_dir: Path) -> None:
        self.root = root
        self.tmp_dir = tmp_dir

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"not a hex SHA-256: {key!r}")
        return self.root / key[:2] / key

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        try:
            value = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            # A damaged entry is treated as missing: the caller then verifies against the
            # archive, and `acopio check` reports it. Never trusted, never fatal.
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any], *, durable: bool = True) -> None:
        """`durable=False`: the caller makes it durable later (`syncfs`); a crash before
        that leaves the entry missing or empty, which `get` reads as absent."""
        atomic_write(self._path(key), dump_json(value), self.tmp_dir, durable=durable)

    def put_many(self, entries: dict[str, dict[str, Any]]) -> None:
        """Write a batch of entries, then make them all durable with one syncfs.

        A crash before the syncfs can leave an entry empty or missing; `get` treats that as
        absent and the import falls back to the archive itself (same name, same hash), so the
        worst case is work repeated, never a wrong answer.
        """
        for key, value in entries.items():
            atomic_write(self._path(key), dump_json(value), self.tmp_dir, durable=False)
        if entries:
            syncfs(self.root)

    def remove(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(key))

    def keys(self) -> Iterator[str]:
        return self.keys_after("")

    def keys_after(self, key: str) -> Iterator[str]:
        """The keys greater than `key`, in order ("": all): a long pass over the index can
        go on from where it stopped, reading only the folders still ahead of it."""
        if not self.root.is_dir():
            return
        for fan in sorted(self.root.iterdir()):
            if fan.name < key[:2] or not fan.is_dir():
                continue
            for entry in sorted(fan.iterdir()):
                if entry.name > key and _KEY.match(entry.name):
                    yield entry.name
