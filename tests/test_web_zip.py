"""A ZIP of 2,000 items over a real socket, and a client that goes away halfway.

The issue's fault: "a ZIP of 2,000 items, and a client that disconnects halfway: memory stays
bounded, nothing is left behind". A real `acopio serve` process streams it; the test reads
a few megabytes, drops the connection, and then looks at the server from outside: its
resident memory, its open files, the data folder, and that it still answers.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import time
import zipfile
from pathlib import Path

import pytest

from appliance import fields
from appliance.catalog import Catalog
from appliance.datadir import DataDir
from tests.conftest import run_cli
from tests.webclient import PASSWORD, real_server

pytestmark = pytest.mark.slow

ITEMS = 2000
FOLDERS = 10


def _library(data_dir: Path) -> list[str]:
    """2,000 real files (64 KiB of noise each, so the ZIP is ~128 MB) catalogued in 10
    activity folders, written as an import would leave them."""
    data = DataDir.at(data_dir)
    data.ensure()
    catalog = Catalog(data)
    shas = []
    for f in range(FOLDERS):
        key = f"2026/05/2026-05-{f + 1:02d}_evento-{f}"
        folder = data.archive / key
        folder.mkdir(parents=True)
        records = []
        for i in range(ITEMS // FOLDERS):
            payload = os.urandom(64 * 1024)
            name = f"IMG_{i:04d}.JPG"
            (folder / name).write_bytes(payload)
            sha = hashlib.sha256(payload).hexdigest()
            shas.append(sha)
            records.append({
                "sha256": sha, "size": len(payload), "kind": "photo", "original_name": name,
                "source_path": f"DCIM/{name}", "archive_path": f"archive/{key}/{name}",
                "folder": key, "activity": f"evento-{f}", "filed_by": "agenda",
                "captured_at": f"2026-05-{f + 1:02d}T10:{i // 60:02d}:{i % 60:02d}-06:00",
                "date_source": "exif", "camera": None, "gps": None, "orientation": 1,
                "rotation": 0, "width": 64, "height": 64, "duration": None, "problems": [],
                "imported_at": "2026-05-20T10:00:00+00:00", "import_id": "t",
                **fields.defaults()})
        catalog.upsert(key, records)
    return shas


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) // 1024  # MiB
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if "query.sqlite" not in p.name and "sessions.json" not in p.name}


def test_a_2000_item_zip_streams_in_bounded_memory_and_a_dropped_client_leaves_nothing(
        data_dir: Path) -> None:
    shas = _library(data_dir)
    made = run_cli("--data-dir", data_dir, "users", "add", "ana", "--role", "designer",
                   "--password-stdin", input=f"{PASSWORD}\n".encode())
    assert made.returncode == 0, made.stderr.decode()
    with real_server(data_dir) as server:
        status, headers, body = server.json("POST", "/api/login",
                                            {"username": "ana", "password": PASSWORD})
        assert status == 200
        cookie = "; ".join(c.split(";", 1)[0] for c in headers.get_all("Set-Cookie"))
        auth = {"Cookie": cookie, "X-CSRF-Token": body["csrf_token"],
                "Content-Type": "application/json"}
        request = json.dumps({"sha256": shas, "variant": "original"}).encode()
        server.json("GET", "/api/status", headers=auth)  # warm up the index
        before = _status(server.proc.pid)
        files_before = _files(data_dir)

        # A whole ZIP, read to the end: every entry there, memory bounded.
        conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
        conn.request("POST", "/api/zip", body=request, headers=auth)
        response = conn.getresponse()
        assert response.status == 200
        target = data_dir.parent / "todo.zip"
        started = time.monotonic()
        with open(target, "wb") as fh:
            while chunk := response.read(1 << 20):
                fh.write(chunk)
        seconds = time.monotonic() - started
        conn.close()
        with zipfile.ZipFile(target) as archive:
            assert len(archive.namelist()) == ITEMS
            assert archive.testzip() is None
        whole = _status(server.proc.pid)
        size_mb = target.stat().st_size / 1e6
        print(f"\n[zip] {ITEMS} items, {size_mb:.0f} MB in {seconds:.1f} s "
              f"({size_mb / seconds:.0f} MB/s); server RSS {before['VmRSS']} -> "
              f"{whole['VmRSS']} MiB, peak {whole['VmHWM']} MiB")
        assert whole["VmHWM"] - before["VmHWM"] < 60, (before, whole)
        target.unlink()

        # Halfway: read 8 MB, then the client vanishes (the socket reset, no goodbye).
        sock = socket.create_connection((server.host, server.port), timeout=30)
        head = (f"POST /api/zip HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in auth.items())
                + f"Content-Length: {len(request)}\r\n\r\n").encode()
        sock.sendall(head + request)
        received = 0
        while received < 8 << 20:
            chunk = sock.recv(1 << 16)
            assert chunk, "the server stopped sending"
            received += len(chunk)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()

        # The server notices, closes every file of the stream, writes nothing.
        deadline = time.monotonic() + 20
        after = _status(server.proc.pid)
        while time.monotonic() < deadline and after["fds"] > before["fds"] + 1:
            time.sleep(0.2)
            after = _status(server.proc.pid)
        assert after["fds"] <= before["fds"] + 1, (before, after)
        assert after["VmHWM"] - before["VmHWM"] < 60, (before, after)
        assert _files(data_dir) == files_before
        status, _, body = server.json("GET", "/api/status", headers=auth)
        assert status == 200 and body["kit"]
