"""The kit reads the next chunk ahead while one is on the wire (sync.kit.readahead): the
chunk given is exactly the one asked for, of the same file, with its SHA-256; anything else
gives None (the caller reads it itself); no descriptor is left open."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from sync.kit.readahead import ReadAhead


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_the_chunk_asked_for_or_nothing(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    path = tmp_path / "video.mp4"
    path.write_bytes(data)
    other = tmp_path / "otro.mp4"
    other.write_bytes(data)  # same bytes, another file: never stands in for it
    before = open_fds()
    ahead = ReadAhead()
    fd = os.open(path, os.O_RDONLY)
    other_fd = os.open(other, os.O_RDONLY)
    try:
        ahead.ahead_fd(fd, 100_000, 100_000)
        assert ahead.take(fd, 100_000, 100_000) == (data[100_000:200_000],
                                                    hashlib.sha256(data[100_000:200_000])
                                                    .digest())
        assert ahead.take(fd, 100_000, 100_000) is None  # given once
        ahead.ahead_fd(fd, 0, 1000)
        assert ahead.take(fd, 1000, 1000) is None  # another offset
        ahead.ahead_path(path, 50_000)  # the next original's first chunk
        assert ahead.take(other_fd, 0, 50_000) is None  # another file
        ahead.ahead_path(path, 50_000)
        assert ahead.take(fd, 0, 50_000) == (data[:50_000],
                                             hashlib.sha256(data[:50_000]).digest())
        ahead.ahead_fd(fd, 250_000, 100_000)  # past the end: short, not given
        assert ahead.take(fd, 250_000, 100_000) is None
        ahead.ahead_path(tmp_path / "no-existe.jpg", 10)  # unreadable: the caller reads
        assert ahead.take(fd, 0, 10) is None
        for _ in range(50):  # started and dropped, many times: nothing left open
            ahead.ahead_fd(fd, 0, 10)
            ahead.drop()
        ahead.ahead_fd(fd, 0, 10)
    finally:
        ahead.close()
        os.close(fd)
        os.close(other_fd)
    assert open_fds() == before
