"""The headquarters hub (`acopio hub`) as kits see it: a real hub process on a real socket,
pairing through its CLI, uploads with tuspy (the standard tus 1.0 client the kits use), the
metadata routes, and the faults (kill -9 mid-upload, corrupt bytes on the hub's disk,
malformed requests)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from tusclient.client import TusClient
from tusclient.exceptions import TusUploadFailed
from tusclient.uploader import Uploader

from appliance.fsutil import TEMP_PREFIX
from tests.cards import exif_jpeg
from tests.conftest import REPO, run_cli
from tests.webclient import claim_large_body, free_port, server_env

HUB_ENV = {"ACOPIO_HUB_ZEROCONF": "false"}
CODE_LINE = re.compile(r"^\d{4}-\d{4}-\d{4}$")


class Sha256Uploader(Uploader):
    """tuspy's uploader with per-chunk SHA-256 checksums (its default is SHA-1)."""

    CHECKSUM_ALGORITHM_PAIR = ("sha256", hashlib.sha256)


class Hub:
    """A real `acopio hub --host 127.0.0.1 --port P` process on a data folder."""

    def __init__(self, data_dir: Path, port: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.env = {**HUB_ENV, **(env or {})}
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "--data-dir", str(self.data_dir), "hub",
             "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO, env=server_env(self.env), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"acopio hub exited with {proc.returncode}:\n{self.stderr()}")
            with contextlib.suppress(OSError):
                status, _, _ = self.request("GET", "/sync/whoami")
                if status:
                    return proc
            time.sleep(0.05)
        proc.kill()
        raise AssertionError(f"acopio hub did not answer:\n{self.stderr()}")

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def restart(self) -> None:
        self.proc = self._start()

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("acopio hub ignored SIGTERM") from None
        self.log.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    # -- requests ----------------------------------------------------------------------

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None
                ) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body: Any = None, token: str | None = None
             ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        status, _, raw = self.request(method, path, None if body is None
                                      else json.dumps(body).encode(), headers)
        return status, json.loads(raw) if raw else None

    def pair_code(self, env: dict[str, str] | None = None) -> str:
        done = run_cli("--data-dir", self.data_dir, "hub", "pair", env={**self.env,
                                                                         **(env or {})})
        assert done.returncode == 0, done.stderr.decode()
        last = done.stdout.decode().rstrip("\n").split("\n")[-1]
        assert CODE_LINE.match(last), done.stdout.decode()
        return last

    def pair(self, kit: str) -> str:
        status, body = self.json("POST", "/sync/pair", {"code": self.pair_code(), "kit": kit,
                                                        "kit_id": kit_id_of(kit)})
        assert status == 200, body
        assert body["kit"] == kit
        return str(body["token"])

    def director_session(self, name: str, password: str) -> str:
        """A director account made with the CLI, logged in to the hub's web UI: the Cookie
        header of its session."""
        made = run_cli("--data-dir", self.data_dir, "users", "add", name, "--role",
                       "director", "--password-stdin", input=f"{password}\n".encode())
        assert made.returncode == 0, made.stderr.decode()
        status, headers, body = self.request("POST", "/api/login", json.dumps(
            {"username": name, "password": password}).encode(),
            {"Content-Type": "application/json"})
        assert status == 200, body
        return "; ".join(c.split(";")[0] for c in headers.get_all("Set-Cookie"))

    def items(self) -> list[dict[str, Any]]:
        done = run_cli("--data-dir", self.data_dir, "items", "--json")
        assert done.returncode == 0, done.stderr.decode()
        return list(json.loads(done.stdout))


KIT_ID = "c3" * 16  # a kit's own identity (state/sync/kit_id), required to pair


def kit_id_of(kit: str) -> str:
    return hashlib.md5(kit.encode()).hexdigest()


def pair_request(hub: Hub, code: str, kit: str, kit_id: str | None = KIT_ID
                 ) -> tuple[int, Any]:
    body = {"code": code, "kit": kit, **({"kit_id": kit_id} if kit_id else {})}
    return hub.json("POST", "/sync/pair", body)


def tus(hub: Hub, token: str) -> TusClient:
    return TusClient(f"{hub.url}/sync/files/", headers={"Authorization": f"Bearer {token}"})


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def uploader(client: TusClient, path: Path, *, chunk: int = 1 << 20, sha: str | None = None,
             url: str | None = None, cls: type[Uploader] = Uploader) -> Uploader:
    """tuspy's uploader; once its last PATCH is answered, it asks the hub about the file as a
    kit does (the hub keeps a file after that answer, and answers the question once kept)."""

    class AsksAfter(cls):  # type: ignore[valid-type,misc]
        def upload(self, stop_at: int | None = None) -> None:
            super().upload(stop_at)
            if self.offset >= self.get_file_size():
                object_url = client.url.replace("/sync/files/", "/sync/objects/")
                requests.get(object_url + self.metadata["sha256"], headers=client.headers,
                             timeout=60)

    return AsksAfter(file_path=str(path), client=client, url=url, chunk_size=chunk,
                     upload_checksum=True,
                     metadata={"sha256": sha or sha256_of(path), "filename": path.name})


def random_file(path: Path, size: int, seed: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def tus_headers(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0", **extra}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def create_upload(hub: Hub, token: str, length: int, sha: str, name: str = "f.bin") -> str:
    status, headers, body = hub.request("POST", "/sync/files/", b"", tus_headers(
        token, **{"Upload-Length": str(length),
                  "Upload-Metadata": f"sha256 {b64(sha)},filename {b64(name)}"}))
    assert status == 201, body
    return str(headers["Location"])


def head_offset(hub: Hub, token: str, location: str) -> int | None:
    status, headers, _ = hub.request("HEAD", location, None, tus_headers(token))
    assert headers["Tus-Resumable"] == "1.0.0"
    return int(headers["Upload-Offset"]) if status == 200 else None


@contextlib.contextmanager
def running_hub(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[Hub]:
    hub = Hub(data_dir, env=env)
    try:
        yield hub
    finally:
        hub.close()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("hub") / "data") as served:
        yield served


# -- pairing -------------------------------------------------------------------------------


def test_pairing_codes_tokens_and_revocation(tmp_path: Path) -> None:
    # (a hub whose disk is "full": ingest.min_free_mb far above what is free)
    with running_hub(tmp_path / "hub", env={"ACOPIO_INGEST_MIN_FREE_MB": "999999999"}) as hub:
        code = hub.pair_code()
        assert hub.json("GET", "/sync/whoami")[0] == 401
        status, body = pair_request(hub, code, "kit-norte")
        assert status == 200, body
        token = body["token"]
        assert len(token) >= 43
        assert hub.json("GET", "/sync/whoami", token=token) == (
            200, {"kit": "kit-norte", "hub": "acopio"})
        # a code works once
        again = pair_request(hub, code, "kit-sur")
        assert again[0] == 403 and again[1]["error"] == "pairing_refused"
        assert pair_request(hub, "0000-0000-0000", "x")[0] == 403
        assert pair_request(hub, "nope", "x")[0] == 403
        bad_name = pair_request(hub, hub.pair_code(), "Kit Sur")
        assert bad_name[0] == 400, bad_name
        # a kit's own identity is required: without it a name could be taken over
        anonymous = pair_request(hub, hub.pair_code(), "kit-sin-id", kit_id=None)
        assert anonymous[0] == 400 and "kit_id" in anonymous[1]["message"], anonymous
        # an expired code (valid 0.01 minutes)
        short = hub.pair_code(env={"ACOPIO_HUB_PAIR_CODE_MINUTES": "0.01"})
        time.sleep(0.8)
        assert pair_request(hub, short, "kit-sur")[0] == 403
        # the hub keeps only hashes: of tokens (SHA-256) and codes (scrypt)
        state = hub.data_dir / "state" / "hub"
        kits_file = (state / "kits.json").read_text()
        assert token not in kits_file
        assert hashlib.sha256(token.encode()).hexdigest() in kits_file
        assert code.replace("-", "") not in (state / "pairing.json").read_text()
        assert (state / "kits.json").stat().st_mode & 0o077 == 0
        # wrong tokens
        assert hub.json("GET", "/sync/whoami", token=token + "x")[0] == 401
        status, headers, _ = hub.request("GET", "/sync/whoami", None,
                                         {"Authorization": f"Basic {token}"})
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        # no room for an upload: 507, before a byte is sent
        status, _, body = hub.request("POST", "/sync/files/", b"", tus_headers(
            token, **{"Upload-Length": "1000", "Upload-Metadata": f"sha256 {b64('a' * 64)}"}))
        assert status == 507 and json.loads(body)["error"] == "insufficient_storage"
        # revoked: 401 at once, on every route
        done = run_cli("--data-dir", hub.data_dir, "hub", "revoke", "kit-norte", env=HUB_ENV)
        assert done.returncode == 0, done.stderr.decode()
        assert hub.json("GET", "/sync/whoami", token=token)[0] == 401
        assert hub.request("POST", "/sync/files/", b"", tus_headers(
            token, **{"Upload-Length": "1"}))[0] == 401
        listed = run_cli("--data-dir", hub.data_dir, "hub", "kits", "--json", env=HUB_ENV)
        kits = json.loads(listed.stdout)
        assert [(k["kit"], k["revoked"]) for k in kits] == [("kit-norte", True)]
        assert run_cli("--data-dir", hub.data_dir, "hub", "revoke", "nadie",
                       env=HUB_ENV).returncode == 2
        # five wrong codes from one address: throttled
        for _ in range(6):
            status, _ = pair_request(hub, "1111-1111-1111", "k")
        assert status == 429


def test_a_name_is_one_kit(tmp_path: Path) -> None:
    """Two kits asking for one name (both left at the default `kit.name`, say) would be one
    clock node and could read and change each other's items: the second is refused (409,
    its code still good), the same kit pairing again takes its own name back, and a revoked
    kit's name is free. Through the real `acopio sync pair` as well."""
    first, second = "a1" * 16, "b2" * 16
    with running_hub(tmp_path / "hub") as hub:
        status, body = hub.json("POST", "/sync/pair", {"code": hub.pair_code(),
                                                       "kit": "prensa", "kit_id": first})
        assert status == 200, body
        old_token = body["token"]
        code = hub.pair_code()
        status, body = hub.json("POST", "/sync/pair", {"code": code, "kit": "prensa",
                                                       "kit_id": second})
        assert status == 409 and body["error"] == "name_taken", body
        assert "acopio hub revoke prensa" in body["message"]
        assert hub.json("GET", "/sync/whoami", token=old_token)[0] == 200  # untouched
        status, body = hub.json("POST", "/sync/pair", {"code": code, "kit": "prensa-sur",
                                                       "kit_id": second})
        assert status == 200, body  # the refused code was not used up
        status, body = hub.json("POST", "/sync/pair", {"code": hub.pair_code(),
                                                       "kit": "prensa", "kit_id": first})
        assert status == 200, body  # the same kit again: a new token, the old one ends
        assert hub.json("GET", "/sync/whoami", token=old_token)[0] == 401
        assert hub.json("POST", "/sync/pair", {"code": hub.pair_code(), "kit": "prensa",
                                               "kit_id": "no es un id"})[0] == 400
        done = run_cli("--data-dir", hub.data_dir, "hub", "revoke", "prensa", env=HUB_ENV)
        assert done.returncode == 0, done.stderr.decode()
        status, body = hub.json("POST", "/sync/pair", {"code": hub.pair_code(),
                                                       "kit": "prensa", "kit_id": second})
        assert status == 200, body  # it replaces the revoked one

        # two real kits, both with the default name
        kits = [tmp_path / "kit-uno", tmp_path / "kit-dos"]
        results = [run_cli("--data-dir", kit, "sync", "pair", hub.url, hub.pair_code())
                   for kit in kits]
        assert results[0].returncode == 0, results[0].stderr.decode()
        assert results[1].returncode == 1
        assert "another kit is already paired with this hub as 'acopio'" in \
            results[1].stderr.decode()
        again = run_cli("--data-dir", kits[0], "sync", "pair", hub.url, hub.pair_code())
        assert again.returncode == 0, again.stderr.decode()  # the first one, again: fine
        renamed = run_cli("--data-dir", kits[1], "sync", "pair", hub.url, hub.pair_code(),
                          env={"ACOPIO_KIT_NAME": "Prensa Norte"})
        assert renamed.returncode == 0, renamed.stderr.decode()
        listed = json.loads(run_cli("--data-dir", hub.data_dir, "hub", "kits", "--json",
                                    env=HUB_ENV).stdout)
        assert {k["kit"] for k in listed if not k["revoked"]} >= {"acopio", "prensa-norte"}
        wrong = run_cli("--data-dir", tmp_path / "kit-tres", "sync", "pair", hub.url,
                        "AAAA-BBBB-CCCC")
        assert wrong.returncode != 0 and b"refused the pairing code" in wrong.stderr


# -- uploads -------------------------------------------------------------------------------


def test_tuspy_uploads_land_in_the_archive_layout(hub: Hub, tmp_path: Path) -> None:
    token = hub.pair("kit-cultura")
    client = tus(hub, token)
    photo = exif_jpeg(tmp_path / "card" / "DSC_0001.JPG", "2026:11:10 10:00:00", "-06:00",
                      size=(640, 480))
    big = random_file(tmp_path / "card" / "grande.bin", 20 * 1024 * 1024)
    up = uploader(client, photo, chunk=4096, cls=Sha256Uploader)
    up.upload()
    assert up.offset == photo.stat().st_size
    up = uploader(client, big, chunk=4 * 1024 * 1024)  # tuspy's default: SHA-1 per chunk
    up.upload()
    items = {i["original_name"]: i for i in hub.items()}
    jpeg = items["DSC_0001.JPG"]
    assert jpeg["archive_path"] == \
        "archive/2026/11/2026-11-10_sin-actividad/DSC_0001.JPG"
    assert jpeg["kits"] == ["kit-cultura"] and jpeg["kind"] == "photo"
    assert jpeg["captured_at"].startswith("2026-11-10T10:00:00")
    stored = hub.data_dir / items["grande.bin"]["archive_path"]
    assert re.fullmatch(r"archive/\d{4}/\d{2}/\d{4}-\d{2}-\d{2}_sin-actividad/grande\.bin",
                        items["grande.bin"]["archive_path"])
    assert sha256_of(stored) == sha256_of(big) == items["grande.bin"]["sha256"]
    assert (hub.data_dir / jpeg["archive_path"]).read_bytes() == photo.read_bytes()
    # acknowledged: a verified 200 for the kit that sent it
    status, body = hub.json("GET", f"/sync/objects/{jpeg['sha256']}?verify=1", token=token)
    assert status == 200 and body["verified"] is True and body["kits"] == ["kit-cultura"]
    # no bytes left behind; the finished uploads still answer their full offset
    uploads = hub.data_dir / "state/hub/uploads/kit-cultura"
    assert not list(uploads.glob("*.bin"))
    assert head_offset(hub, token, up.url.removeprefix(hub.url)) == big.stat().st_size
    check = run_cli("--data-dir", hub.data_dir, "check")
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    # the same kit sending it again: the creation answers "complete" at once
    again = uploader(client, photo)
    again.upload()
    assert again.offset == photo.stat().st_size
    assert len([i for i in hub.items() if i["sha256"] == jpeg["sha256"]]) == 1


def test_resume_from_the_hubs_offset(hub: Hub, tmp_path: Path) -> None:
    token = hub.pair("kit-resume")
    client = tus(hub, token)
    path = random_file(tmp_path / "video.mov", 5 * 1024 * 1024 + 123, seed=2)
    first = uploader(client, path, chunk=1024 * 1024)
    for _ in range(3):
        first.upload_chunk()
    assert first.offset == 3 * 1024 * 1024
    assert head_offset(hub, token, first.url.removeprefix(hub.url)) == 3 * 1024 * 1024
    # a new uploader (the kit restarted) with the same URL asks the offset and goes on
    second = uploader(client, path, chunk=1024 * 1024, url=first.url)
    assert second.offset == 3 * 1024 * 1024
    second.upload()
    [item] = [i for i in hub.items() if i["original_name"] == "video.mov"]
    assert sha256_of(hub.data_dir / item["archive_path"]) == sha256_of(path)


@pytest.mark.slow
def test_kill_9_mid_upload_keeps_the_acknowledged_offset(tmp_path: Path) -> None:
    path = random_file(tmp_path / "entrevista.wav", 6 * 1024 * 1024, seed=3)
    sha = sha256_of(path)
    with running_hub(tmp_path / "hub") as hub:
        token = hub.pair("kit-crash")
        client = tus(hub, token)
        up = uploader(client, path, chunk=1024 * 1024)
        up.upload_chunk()
        up.upload_chunk()
        acked = up.offset
        assert acked == 2 * 1024 * 1024
        # a PATCH cut in the middle of its body, then kill -9
        location = up.url.removeprefix(hub.url)
        sock = socket.create_connection(("127.0.0.1", hub.port))
        request = (f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   f"Authorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\n"
                   "Content-Type: application/offset+octet-stream\r\n"
                   f"Upload-Offset: {acked}\r\nContent-Length: {1024 * 1024}\r\n\r\n")
        with open(path, "rb") as f:
            f.seek(acked)
            sock.sendall(request.encode() + f.read(300_000))
        time.sleep(0.3)
        hub.kill9()
        sock.close()
        # as if killed in the middle of a state write and of placing a file: temp files
        debris = [hub.data_dir / "state/hub/tmp" / f"{TEMP_PREFIX}cortado",
                  hub.data_dir / "archive/.incoming" / f"{TEMP_PREFIX}cortado"]
        for leftover in debris:
            leftover.parent.mkdir(parents=True, exist_ok=True)
            leftover.write_bytes(b"{medio")
        hub.restart()
        assert not any(p.exists() for p in debris)  # gone at start: `check` is clean
        assert head_offset(hub, token, location) == acked
        resumed = uploader(client, path, chunk=1024 * 1024, url=up.url)
        assert resumed.offset == acked
        resumed.upload()
        status, body = hub.json("GET", f"/sync/objects/{sha}?verify=1", token=token)
        assert status == 200 and body["verified"], body
        [item] = [i for i in hub.items() if i["sha256"] == sha]
        assert sha256_of(hub.data_dir / item["archive_path"]) == sha
        # kill -9 after the last byte was acknowledged is kept at the next start too
        other = random_file(tmp_path / "otro.bin", 300_000, seed=4)
        location = create_upload(hub, token, other.stat().st_size, sha256_of(other), "otro.bin")
        upload_id = location.rsplit("/", 1)[1]
        meta = hub.data_dir / "state/hub/uploads/kit-crash" / f"{upload_id}.json"
        stale = create_upload(hub, token, 10, "12" * 32).rsplit("/", 1)[1]
        stale_meta = meta.with_name(f"{stale}.json")
        hub.kill9()
        # an upload nobody touched for 40 days goes at the next start
        stale_state = json.loads(stale_meta.read_text())
        stale_meta.write_text(json.dumps({**stale_state,
                                          "updated": time.time() - 40 * 86400}))
        # as if killed right after acknowledging the last PATCH, before placing the file
        (meta.with_suffix(".bin")).write_bytes(other.read_bytes())
        state = json.loads(meta.read_text())
        meta.write_text(json.dumps({**state, "offset": other.stat().st_size}))
        hub.restart()
        assert any(i["sha256"] == sha256_of(other) for i in hub.items())
        assert json.loads(meta.read_text())["done"] is True
        assert not meta.with_suffix(".bin").exists()
        assert not stale_meta.exists() and not stale_meta.with_suffix(".bin").exists()

        # Derivatives are queued in batches after the answer: a photo kept, its thumbnail
        # and preview queued within a moment; a batch lost to a stop (here: the queue
        # deleted) is queued again at the next start.
        photo = exif_jpeg(tmp_path / "card" / "DSC_0100.JPG", "2026:11:12 10:00:00", "-06:00")
        uploader(client, photo, chunk=1024 * 1024).upload()
        photo_sha = sha256_of(photo)
        deadline = time.monotonic() + 10
        while queued_jobs(hub.data_dir, photo_sha) != {"thumb", "preview"}:
            assert time.monotonic() < deadline, "the photo's derivatives were never queued"
            time.sleep(0.1)
        hub.kill9()
        shutil.rmtree(hub.data_dir / "state" / "jobs")
        hub.restart()
        assert queued_jobs(hub.data_dir, photo_sha) == {"thumb", "preview"}


@pytest.mark.slow
def test_bytes_lost_to_a_power_cut_are_asked_again(tmp_path: Path) -> None:
    """Chunks are not fsynced one by one (the keep fsyncs the file): after a power cut the
    `.bin` may hold less than the offset the hub answered. HEAD then says what the disk
    holds, the kit sends from there, and the file is kept whole."""
    path = random_file(tmp_path / "discurso.mov", 4 * 1024 * 1024 + 77, seed=9)
    with running_hub(tmp_path / "hub") as hub:
        token = hub.pair("kit-apagon")
        client = tus(hub, token)
        up = uploader(client, path, chunk=1024 * 1024)
        for _ in range(3):
            up.upload_chunk()
        hub.kill9()
        location = up.url.removeprefix(hub.url)
        data = hub.data_dir / "state/hub/uploads/kit-apagon" / f"{location.rsplit('/', 1)[1]}.bin"
        with open(data, "r+b") as f:  # what a power cut can leave: the last chunk gone
            f.truncate(2 * 1024 * 1024 + 1000)
        hub.restart()
        assert head_offset(hub, token, location) == 2 * 1024 * 1024 + 1000
        resumed = uploader(client, path, chunk=1024 * 1024, url=up.url)
        assert resumed.offset == 2 * 1024 * 1024 + 1000
        resumed.upload()
        sha = sha256_of(path)
        status, body = hub.json("GET", f"/sync/objects/{sha}?verify=1", token=token)
        assert status == 200 and body["verified"], body
        [item] = [i for i in hub.items() if i["sha256"] == sha]
        assert sha256_of(hub.data_dir / item["archive_path"]) == sha
        assert "answered before a stop" in hub.stderr()


def queued_jobs(data_dir: Path, sha: str) -> set[str]:
    from appliance.datadir import DataDir
    from appliance.jobs import JobQueue

    return {job.kind for job in JobQueue(DataDir.at(data_dir)).jobs() if job.item == sha}


def test_checksum_mismatches(hub: Hub, tmp_path: Path) -> None:
    token = hub.pair("kit-checksum")
    data = os.urandom(200_000)
    sha = hashlib.sha256(data).hexdigest()
    location = create_upload(hub, token, len(data), sha)
    wrong = base64.b64encode(hashlib.sha1(b"something else").digest()).decode()
    status, headers, body = hub.request("PATCH", location, data[:100_000], tus_headers(
        token, **{"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0",
                  "Upload-Checksum": f"sha1 {wrong}"}))
    assert status == 460, body
    assert json.loads(body)["error"] == "checksum_mismatch"
    assert head_offset(hub, token, location) == 0  # the chunk was dropped
    right = base64.b64encode(hashlib.sha256(data[:100_000]).digest()).decode()
    status, headers, _ = hub.request("PATCH", location, data[:100_000], tus_headers(
        token, **{"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0",
                  "Upload-Checksum": f"sha256 {right}"}))
    assert status == 204 and headers["Upload-Offset"] == "100000"
    # a whole file that is not what was announced: 460 on the last PATCH, nothing kept
    path = tmp_path / "mentira.jpg"
    path.write_bytes(os.urandom(50_000))
    liar = uploader(tus(hub, token), path, chunk=20_000, sha="ab" * 32)
    with pytest.raises(TusUploadFailed) as failed:
        liar.upload()
    assert failed.value.status_code == 460
    assert head_offset(hub, token, liar.url.removeprefix(hub.url)) is None
    assert not any(i["original_name"] == "mentira.jpg" for i in hub.items())
    assert hub.json("GET", f"/sync/objects/{'ab' * 32}", token=token)[0] == 404
    # the same lie in one chunk (its sha256 checksum right, so the chunk's own digest is the
    # file's): 460, nothing kept
    whole = os.urandom(30_000)
    location = create_upload(hub, token, len(whole), "cd" * 32, "mentira2.jpg")
    status, _, body = hub.request("PATCH", location, whole, tus_headers(
        token, **{"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0",
                  "Upload-Checksum": "sha256 " + base64.b64encode(
                      hashlib.sha256(whole).digest()).decode()}))
    assert status == 460 and json.loads(body)["error"] == "checksum_mismatch", body
    assert not any(i["original_name"] == "mentira2.jpg" for i in hub.items())
    # a chunk damaged on the way in the middle of an upload: refused, sent again, and the
    # file (hashed as it came, the refused bytes left out) is kept
    good = os.urandom(60_000)
    location = create_upload(hub, token, len(good), hashlib.sha256(good).hexdigest(),
                             "bueno.jpg")
    for offset, chunk, damaged in ((0, good[:20_000], False), (20_000, good[20_000:40_000], True),
                                   (20_000, good[20_000:40_000], False),
                                   (40_000, good[40_000:], False)):
        sent = bytes([chunk[0] ^ 1]) + chunk[1:] if damaged else chunk
        status, headers, body = hub.request("PATCH", location, sent, tus_headers(
            token, **{"Content-Type": "application/offset+octet-stream",
                      "Upload-Offset": str(offset), "Upload-Checksum": "sha256 " +
                      base64.b64encode(hashlib.sha256(chunk).digest()).decode()}))
        assert status == (460 if damaged else 204), body
    # answered once kept (the last PATCH's answer came before the keep: sync.hub.keeper)
    assert hub.json("GET", f"/sync/objects/{hashlib.sha256(good).hexdigest()}",
                    token=token)[0] == 200
    [item] = [i for i in hub.items() if i["original_name"] == "bueno.jpg"]
    assert sha256_of(hub.data_dir / item["archive_path"]) == hashlib.sha256(good).hexdigest()


def test_creation_with_upload(hub: Hub) -> None:
    """A file that fits in one chunk goes with its creation (tus creation-with-upload):
    kept when whole and right; a chunk whose checksum fails leaves the upload at offset 0
    for PATCH to go on from; a lie is 460 and nothing is kept; bad requests are refused."""
    token = hub.pair("kit-una-vez")

    def create_with(data: bytes, sha: str, name: str, checksum_of: bytes | None = None,
                    **extra: str) -> tuple[int, Any, bytes]:
        headers = {"Upload-Length": str(len(data)),
                   "Upload-Metadata": f"sha256 {b64(sha)},filename {b64(name)}",
                   "Content-Type": "application/offset+octet-stream",
                   "Upload-Checksum": "sha256 " + base64.b64encode(hashlib.sha256(
                       data if checksum_of is None else checksum_of).digest()).decode(),
                   **extra}
        return hub.request("POST", "/sync/files/", data, tus_headers(token, **headers))

    photo = os.urandom(70_000)
    sha = hashlib.sha256(photo).hexdigest()
    status, headers, body = create_with(photo, sha, "una.jpg")
    assert status == 201 and headers["Upload-Offset"] == str(len(photo)), body
    verified = hub.json("GET", f"/sync/objects/{sha}?verify=1", token=token)
    assert verified[0] == 200 and verified[1]["verified"], verified
    [item] = [i for i in hub.items() if i["sha256"] == sha]
    assert (hub.data_dir / item["archive_path"]).read_bytes() == photo
    # the same content again: "complete" at once, nothing more kept
    status, headers, _ = create_with(photo, sha, "una.jpg")
    assert status == 201 and headers["Upload-Offset"] == str(len(photo))
    # bytes damaged on the way: the upload exists at offset 0, PATCH sends them again
    other = os.urandom(50_000)
    other_sha = hashlib.sha256(other).hexdigest()
    damaged = bytes([other[0] ^ 1]) + other[1:]
    status, headers, _ = create_with(damaged, other_sha, "otra.jpg", checksum_of=other)
    assert status == 201 and headers["Upload-Offset"] == "0"
    status, headers, body = hub.request("PATCH", headers["Location"], other, tus_headers(
        token, **{"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}))
    assert status == 204 and headers["Upload-Offset"] == str(len(other)), body
    assert hub.json("GET", f"/sync/objects/{other_sha}?verify=1", token=token)[0] == 200
    # a lie (right chunk checksum, wrong announced SHA-256): 460, nothing kept
    lie = os.urandom(40_000)
    status, _, body = create_with(lie, "ef" * 32, "mentira3.jpg")
    assert status == 460 and json.loads(body)["error"] == "checksum_mismatch", body
    assert hub.json("GET", f"/sync/objects/{'ef' * 32}", token=token)[0] == 404
    # bytes without their content type, or more bytes than announced: refused, clearly
    status, _, body = create_with(lie, hashlib.sha256(lie).hexdigest(), "x.jpg",
                                  **{"Content-Type": "text/plain"})
    assert status == 415 and json.loads(body)["error"] == "bad_content_type", body
    status, _, body = hub.request("POST", "/sync/files/", lie, tus_headers(token, **{
        "Upload-Length": "100", "Upload-Metadata": f"sha256 {b64('12' * 32)}",
        "Content-Type": "application/offset+octet-stream"}))
    assert status == 413 and json.loads(body)["error"] == "too_long", body
    assert not any(i["original_name"] in ("mentira3.jpg", "x.jpg") for i in hub.items())
    # nothing left behind by the refused ones: only the upload PATCH went on with remains
    # besides the kept ones' markers
    uploads = hub.data_dir / "state/hub/uploads/kit-una-vez"
    assert not list(uploads.glob("*.bin"))
    assert len(list(uploads.glob("*.json"))) == 3


def test_two_kits_one_file_and_uploads_kept_apart(hub: Hub, tmp_path: Path) -> None:
    a, b = hub.pair("kit-a"), hub.pair("kit-b")
    path = random_file(tmp_path / "cabildo.mp4", 700_000, seed=5)
    sha = sha256_of(path)
    # kit b may not see or touch kit a's upload in progress
    half = uploader(tus(hub, a), path, chunk=300_000)
    half.upload_chunk()
    location = half.url.removeprefix(hub.url)
    assert head_offset(hub, b, location) is None
    patch = hub.request("PATCH", location, b"x", tus_headers(
        b, **{"Content-Type": "application/offset+octet-stream", "Upload-Offset": "300000"}))
    assert patch[0] == 404
    assert hub.request("DELETE", location, None, tus_headers(b))[0] == 404
    assert hub.json("GET", f"/sync/objects/{sha}", token=b)[0] == 404
    half.upload()
    assert hub.json("GET", f"/sync/objects/{sha}", token=b)[0] == 404  # a's, not b's
    assert hub.request("GET", f"/sync/objects/{sha}/content", None,
                       {"Authorization": f"Bearer {b}"})[0] == 404
    uploader(tus(hub, b), path, chunk=300_000).upload()
    [item] = [i for i in hub.items() if i["sha256"] == sha]
    assert item["kits"] == ["kit-a", "kit-b"]
    stored = hub.data_dir / item["archive_path"]
    assert stored.stat().st_nlink == 1
    assert [p for p in (hub.data_dir / "archive").rglob("cabildo*")] == [stored]
    status, body = hub.json("GET", f"/sync/objects/{sha}", token=b)
    assert status == 200 and body["kits"] == ["kit-a", "kit-b"]
    # an original comes back to a kit that owns it, with Range
    status, _, content = hub.request("GET", f"/sync/objects/{sha}/content", None, {
        "Authorization": f"Bearer {b}", "Range": "bytes=100-199"})
    assert status == 206 and content == path.read_bytes()[100:200]
    # termination: the temp files go
    location = create_upload(hub, a, 1000, "cd" * 32)
    upload_id = location.rsplit("/", 1)[1]
    folder = hub.data_dir / "state/hub/uploads/kit-a"
    assert (folder / f"{upload_id}.bin").exists()
    assert hub.request("DELETE", location, None, tus_headers(a))[0] == 204
    assert not list(folder.glob(f"{upload_id}*"))
    assert head_offset(hub, a, location) is None


def test_a_body_larger_than_a_chunk_is_refused_before_it_is_stored(hub: Hub) -> None:
    """Before any token is checked (waitress spools the body first): 413 from the headers."""
    from sync.hub.server import MAX_BODY

    for path in ("/sync/pair", "/sync/files/"):
        for length in (MAX_BODY, 100 * 1024 * 1024):  # a 64 MiB chunk fits; 100 MiB not
            answer = claim_large_body(hub.port, path, length)
            assert answer.startswith(b"HTTP/1.1 413"), (path, answer[:200])
    spool = hub.data_dir / "state" / "hub" / "spool"
    assert not any(f.stat().st_size > 1024 * 1024 for f in spool.iterdir())


def test_malformed_requests_get_clear_errors(hub: Hub) -> None:
    token = hub.pair("kit-malo")
    sha = "ef" * 32
    ok_meta = f"sha256 {b64(sha)}"

    def post(**headers: str) -> tuple[int, Any, Any]:
        status, got, body = hub.request("POST", "/sync/files/", b"", {
            "Authorization": f"Bearer {token}", **headers})
        return status, got, json.loads(body) if body else None

    status, headers, _ = post(**{"Upload-Length": "10", "Upload-Metadata": ok_meta})
    assert status == 412 and headers["Tus-Version"] == "1.0.0"
    assert post(**{"Tus-Resumable": "0.2.2", "Upload-Length": "10"})[0] == 412
    for length in ("-5", "abc", "1e3", ""):
        status, _, body = post(**{"Tus-Resumable": "1.0.0", "Upload-Length": length,
                                  "Upload-Metadata": ok_meta})
        assert status == 400, (length, body)
    assert post(**{"Tus-Resumable": "1.0.0", "Upload-Metadata": ok_meta})[0] == 400
    status, _, body = post(**{"Tus-Resumable": "1.0.0", "Upload-Length": str(65 * 1024**3),
                              "Upload-Metadata": ok_meta})
    assert status == 413 and body["error"] == "too_large"
    for metadata in ("sha256 !!!notbase64", "sha256", f"filename {b64('x.jpg')}",
                     f"sha256 {b64('not-a-hash')}", f"sha256 {b64(sha)},sha256 {b64(sha)}",
                     "a b c"):
        status, _, body = post(**{"Tus-Resumable": "1.0.0", "Upload-Length": "10",
                                  "Upload-Metadata": metadata})
        assert status == 400, (metadata, body)
        assert body["error"] == "bad_metadata"
    location = create_upload(hub, token, 10, sha)

    def patch(body: bytes, **headers: str) -> tuple[int, Any]:
        sent = {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0",
                **headers}
        status, _, raw = hub.request("PATCH", location, body, tus_headers(token, **sent))
        return status, json.loads(raw) if raw else None

    assert patch(b"12345", **{"Content-Type": "application/octet-stream"})[0] == 415
    assert patch(b"12345", **{"Upload-Offset": "3"})[0] == 409
    assert patch(b"12345", **{"Upload-Offset": "x"})[0] == 400
    assert patch(b"12345678901")[0] == 413
    assert patch(b"12345", **{"Upload-Checksum": "md5 AAAA"}) == (400, {
        "error": "unsupported_checksum",
        "message": "checksum algorithm 'md5' is not supported (use sha1, sha256)"})
    assert patch(b"12345", **{"Upload-Checksum": "sha256 ***"})[0] == 400
    assert patch(b"12345", **{"Upload-Checksum": "sha256"})[0] == 400
    status, headers, _ = hub.request("PATCH", location, b"12345", {
        "Authorization": f"Bearer {token}", "Content-Type": "application/offset+octet-stream",
        "Upload-Offset": "0"})
    assert status == 412
    assert head_offset(hub, token, location) == 0
    assert patch(b"12345")[0] == 204
    assert head_offset(hub, token, location) == 5
    unknown = hub.request("PATCH", "/sync/files/" + "0" * 32, b"1", tus_headers(
        token, **{"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}))
    assert unknown[0] == 404
    for sneaky in ("/sync/files/../../kits.json", "/sync/files/..%2f..%2fkits.json",
                   "/sync/files/" + "0" * 31 + "/"):
        assert hub.request("HEAD", sneaky, None, tus_headers(token))[0] in (401, 404)
    assert hub.json("POST", "/sync/records", {"records": "nope"}, token=token)[0] == 400
    assert hub.json("GET", "/sync/changes?limit=0", token=token)[0] == 400
    bad = hub.json("GET", "/sync/changes?since=garbage", token=token)  # not the whole feed
    assert bad[0] == 400 and bad[1]["error"] == "bad_cursor"
    assert hub.json("GET", "/sync/objects/XYZ", token=token)[0] == 400
    status, headers, _ = hub.request("OPTIONS", "/sync/files/", None,
                                     {"Authorization": f"Bearer {token}"})
    assert status == 204
    assert headers["Tus-Version"] == "1.0.0"
    assert headers["Tus-Extension"] == "creation,creation-with-upload,checksum,termination"
    assert headers["Tus-Checksum-Algorithm"] == "sha1,sha256"
    assert headers["Tus-Max-Size"] == str(64 * 1024**3)
    # a foreign Host name (DNS rebinding) is refused before anything else
    assert hub.request("GET", "/sync/whoami", None, {"Host": "evil.example",
                                                     "Authorization": f"Bearer {token}"}
                       )[0] == 400
    assert hub.alive()
    assert hub.json("GET", "/sync/whoami", token=token)[0] == 200


# -- metadata ------------------------------------------------------------------------------


def kit_record(path: Path, folder: str, **fields: Any) -> dict[str, Any]:
    sha = sha256_of(path)
    return {"sha256": sha, "size": path.stat().st_size, "kind": "photo",
            "original_name": path.name, "source_path": f"DCIM/{path.name}",
            "archive_path": f"archive/{folder}/{path.name}", "folder": folder,
            "activity": folder.split("_", 1)[1], "filed_by": "agenda",
            "captured_at": "2026-11-10T10:00:00-06:00", "date_source": "exif",
            "camera": {"make": "Canon", "model": "Canon EOS R6"}, "gps": None,
            "orientation": 1, "rotation": 0, "width": 64, "height": 48, "duration": None,
            "problems": [], "imported_at": "2026-11-10T16:30:00+00:00",
            "import_id": "20261110T163000Z-abc123", "caption": "", "tags": [], "people": [],
            "credit": "", "place": "", "pick": None, "rating": 0, "approved": False,
            "approved_by": None, "approved_at": None, "revision": 0, "edited": {},
            "history": [], **fields}


def test_records_both_ways_each_kit_sees_its_own(hub: Hub, tmp_path: Path) -> None:
    north, south = hub.pair("kit-norte"), hub.pair("kit-sur")
    folder = "2026/11/2026-11-10_sesion-de-cabildo"
    mine = exif_jpeg(tmp_path / "a" / "cabildo.jpg", "2026:11:10 10:00:00", "-06:00",
                     color=(10, 20, 30))
    theirs = exif_jpeg(tmp_path / "b" / "plaza.jpg", "2026:11:10 11:00:00", "-06:00",
                       color=(90, 20, 30))
    stamp = f"{int(time.time() * 1000)}-0000-kit-norte"
    record = kit_record(mine, folder, caption="Sesión de Cabildo", revision=1, edited={
        "caption": {"revision": 1, "by": "foto", "at": "2026-11-10T17:00:00+00:00",
                    "hlc": stamp}})
    # metadata before the original: kept, pending
    status, body = hub.json("POST", "/sync/records", {"records": [record]}, token=north)
    assert status == 200 and body["results"] == [{"sha256": record["sha256"],
                                                 "status": "pending"}]
    status, body = hub.json("GET", f"/sync/objects/{record['sha256']}", token=north)
    assert status == 404 and body["pending"] is True
    uploader(tus(hub, north), mine).upload()
    uploader(tus(hub, south), theirs).upload()
    items = {i["original_name"]: i for i in hub.items()}
    stored = items["cabildo.jpg"]
    # filed where the kit's record says, with the kit's facts and its caption
    assert stored["archive_path"] == f"archive/{folder}/cabildo.jpg"
    assert stored["caption"] == "Sesión de Cabildo"
    assert stored["kits"] == ["kit-norte"]
    status, body = hub.json("POST", "/sync/records", {"records": [
        kit_record(theirs, "2026/11/2026-11-10_sin-actividad"),
        {"sha256": "nothex", "size": 1}]}, token=south)
    assert [r["status"] for r in body["results"]] == ["merged", "refused"]
    # the change feed: each kit gets its own items only
    status, feed = hub.json("GET", "/sync/changes", token=north)
    assert status == 200
    assert [r["sha256"] for r in feed["records"]] == [record["sha256"]]
    sent = feed["records"][0]
    assert sent["caption"] == "Sesión de Cabildo"
    assert "sources" not in sent and "kits" not in sent and "archive_path" not in sent
    status, feed_south = hub.json("GET", "/sync/changes", token=south)
    assert [r["sha256"] for r in feed_south["records"]] == [sha256_of(theirs)]
    # nothing new since the cursor
    status, again = hub.json("GET", f"/sync/changes?since={feed['cursor']}", token=north)
    assert again["records"] == [] and again["more"] is False
    # a kit claiming another kit's content by hash gets nothing of it
    claim = kit_record(mine, folder, caption="vandalismo", edited={"caption": {
        "revision": 9, "by": "x", "at": "2026-11-11T00:00:00+00:00",
        "hlc": f"{int(time.time() * 1000) + 5000}-0000-kit-sur"}})
    status, body = hub.json("POST", "/sync/records", {"records": [claim]}, token=south)
    assert body["results"][0]["status"] == "pending"
    assert {i["original_name"]: i for i in hub.items()}["cabildo.jpg"]["caption"] == \
        "Sesión de Cabildo"
    status, feed_south = hub.json("GET", f"/sync/changes?since={feed_south['cursor']}",
                                  token=south)
    assert feed_south["records"] == []
    # a newer edit from the owner reaches the hub, and the feed carries it
    newer = dict(record, caption="Sesión ordinaria de Cabildo", revision=2, edited={
        "caption": {"revision": 2, "by": "foto", "at": "2026-11-10T18:00:00+00:00",
                    "hlc": f"{int(time.time() * 1000) + 10}-0000-kit-norte"}})
    assert hub.json("POST", "/sync/records", {"records": [newer]}, token=north)[1][
        "results"][0]["status"] == "merged"
    status, later = hub.json("GET", f"/sync/changes?since={feed['cursor']}", token=north)
    assert [r["caption"] for r in later["records"]] == ["Sesión ordinaria de Cabildo"]
    assert later["agenda"] is None
    # a re-filing on the kit (a newer stamp on the filing) moves the hub's file too
    moved_to = "2026/11/2026-11-10_informe-anual"
    refiled = dict(newer, folder=moved_to, activity="informe-anual", revision=3, edited={
        **newer["edited"], "folder": {"revision": 3, "by": "foto", "hlc": (
            f"{int(time.time() * 1000) + 20}-0000-kit-norte")},
        "activity": {"revision": 3, "by": "foto", "hlc": (
            f"{int(time.time() * 1000) + 20}-0000-kit-norte")}})
    assert hub.json("POST", "/sync/records", {"records": [refiled]}, token=north)[0] == 200
    stored = {i["original_name"]: i for i in hub.items()}["cabildo.jpg"]
    assert stored["archive_path"] == f"archive/{moved_to}/cabildo.jpg"
    assert (hub.data_dir / stored["archive_path"]).read_bytes() == mine.read_bytes()
    assert not (hub.data_dir / f"archive/{folder}/cabildo.jpg").exists()
    # the hub's agenda goes to every kit; a kit's activities merge into it
    added = run_cli("--data-dir", hub.data_dir, "agenda", "add", "Informe anual",
                    "--start", "2026-12-01T10:00", "--end", "2026-12-01T12:00",
                    "--slug", "informe-anual")
    assert added.returncode == 0, added.stderr.decode()
    status, page = hub.json("GET", f"/sync/changes?since={later['cursor']}", token=south)
    assert [a["slug"] for a in page["agenda"]] == ["informe-anual"]
    assert page["agenda"][0]["edited"]["title"]["hlc"]
    activity = {"slug": "feria-del-libro", "title": "Feria del libro",
                "start": "2026-12-05T10:00:00-06:00", "end": "2026-12-05T18:00:00-06:00",
                "area": "Cultura", "place": "", "added": f"{int(time.time() * 1000)}-0000-kit-sur",
                "edited": {f: {"hlc": f"{int(time.time() * 1000)}-0000-kit-sur"}
                           for f in ("title", "start", "end", "area", "place")}}
    status, body = hub.json("POST", "/sync/records", {"agenda": [activity]}, token=south)
    assert status == 200 and body["agenda_changed"] == ["feria-del-libro"]
    listed = run_cli("--data-dir", hub.data_dir, "agenda", "list", "--json")
    assert {a["slug"] for a in json.loads(listed.stdout)} == {"informe-anual",
                                                              "feria-del-libro"}


def test_a_kits_wrongly_typed_import_facts_are_refused_and_never_stop_the_hub(
        tmp_path: Path) -> None:
    """A hostile or buggy kit sent a record whose import facts had the wrong types (a kind
    that is a list, a capture time that is an object), then the file. The hub took the
    record as the item's; its derivative thread died on it (no thumbnails for any kit from
    then on), and every restart failed while the upload's marker lived. Now such a record is
    refused with the field named, the file's own facts describe the item, and the hub keeps
    queuing and restarts."""
    hub = Hub(tmp_path / "hub")
    try:
        token = hub.pair("kit-hostil")
        folder = "2026/11/2026-11-10_sin-actividad"
        photos = {}
        for n, (field, value) in enumerate((("kind", ["photo"]),
                                            ("captured_at", {"evil": True}),
                                            ("imported_at", "not-a-date"),
                                            ("camera", {"make": {"nested": 1}}),
                                            ("width", "ancho"),
                                            ("problems", "ninguno"))):
            photo = exif_jpeg(tmp_path / f"h{n}.jpg", "2026:11:10 10:00:00", "-06:00",
                              color=(n * 20, 7, 7))
            photos[field] = photo
            status, body = hub.json("POST", "/sync/records", {"records": [
                kit_record(photo, folder, **{field: value})]}, token=token)
            assert status == 200, body
            [result] = body["results"]
            assert result["status"] == "refused", (field, result)
            assert f"{field}: expected" in result["message"], result
            uploader(tus(hub, token), photo).upload()
        history = [{"at": f"2026-11-10T10:{i // 60:02d}:{i % 60:02d}+00:00", "by": "x",
                    "action": "edit", "changes": {}} for i in range(1001)]
        photo = exif_jpeg(tmp_path / "larga.jpg", "2026:11:10 10:00:00", "-06:00",
                          color=(1, 99, 1))
        status, body = hub.json("POST", "/sync/records", {"records": [
            kit_record(photo, folder, history=history)]}, token=token)
        assert body["results"][0]["status"] == "refused", body
        assert "history has 1001 entries" in body["results"][0]["message"]

        items = {i["sha256"]: i for i in hub.items()}
        deadline = time.monotonic() + 15  # the hub gathers kept files before queuing
        for field, photo in photos.items():
            sha = sha256_of(photo)
            assert items[sha]["kind"] == "photo" and items[sha]["kits"] == ["kit-hostil"]
            while not queued_jobs(hub.data_dir, sha) >= {"thumb", "preview"}:
                assert time.monotonic() < deadline, (field, hub.stderr())
                time.sleep(0.2)
        assert "Traceback" not in hub.stderr(), hub.stderr()
        hub.close()
        hub = Hub(tmp_path / "hub")  # starts again
        assert hub.alive()
    finally:
        hub.close()


def test_verify_finds_corrupt_bytes_and_the_kit_restores_them(hub: Hub,
                                                               tmp_path: Path) -> None:
    token = hub.pair("kit-verifica")
    path = random_file(tmp_path / "audio.flac", 400_000, seed=9)
    sha = sha256_of(path)
    uploader(tus(hub, token), path).upload()
    [item] = [i for i in hub.items() if i["sha256"] == sha]
    stored = hub.data_dir / item["archive_path"]
    with open(stored, "r+b") as f:  # one byte flipped on the hub's disk
        f.seek(1234)
        byte = f.read(1)
        f.seek(1234)
        f.write(bytes([byte[0] ^ 0x01]))
    assert hub.json("GET", f"/sync/objects/{sha}", token=token)[0] == 200  # not re-read
    status, body = hub.json("GET", f"/sync/objects/{sha}?verify=1", token=token)
    assert status == 409 and body["verified"] is False and body["error"] == "corrupt"
    assert not stored.exists()
    assert list((hub.data_dir / "state/hub/corrupt").glob(f"*{sha[:16]}*"))
    assert not any(i["sha256"] == sha for i in hub.items())
    assert "CORRUPT ORIGINAL" in hub.stderr()
    assert hub.json("GET", f"/sync/objects/{sha}", token=token)[0] == 404
    uploader(tus(hub, token), path).upload()  # the kit sends it again
    status, body = hub.json("GET", f"/sync/objects/{sha}?verify=1", token=token)
    assert status == 200 and body["verified"] is True
    [item] = [i for i in hub.items() if i["sha256"] == sha]
    assert item["kits"] == ["kit-verifica"]
    assert sha256_of(hub.data_dir / item["archive_path"]) == sha


def test_headquarters_web_ui_over_every_kit(hub: Hub, tmp_path: Path) -> None:
    one, two = hub.pair("kit-uno"), hub.pair("kit-dos")
    for token, name, color in ((one, "uno.jpg", (1, 2, 3)), (two, "dos.jpg", (3, 2, 1))):
        photo = exif_jpeg(tmp_path / name, "2026:10:01 12:00:00", "-06:00", color=color)
        uploader(tus(hub, token), photo).upload()
    cookies = hub.director_session("direccion", "clave-de-prueba-1")
    status, _, body = hub.request("GET", "/api/items?month=2026-10", None, {"Cookie": cookies})
    assert status == 200, body
    items = {i["original_name"]: i for i in json.loads(body)["items"]}
    assert items["uno.jpg"]["kits"] == ["kit-uno"] and items["dos.jpg"]["kits"] == ["kit-dos"]
    # a kit's token opens no page of the UI, and the UI's session no /sync/ route
    assert hub.request("GET", "/api/items", None, {"Authorization": f"Bearer {one}"})[0] == 401
    assert hub.request("GET", "/sync/whoami", None, {"Cookie": cookies})[0] == 401


def test_headquarters_sees_each_kits_last_contact(hub: Hub, tmp_path: Path) -> None:
    """The hub's status page (and `acopio hub kits`) answer headquarters' first question about
    a kit in the field, when it last synced, with what it sent and what is still to come; an
    item's page says which kits sent it."""
    token = hub.pair("kit-contacto")
    hub.pair("kit-callado")  # paired, never heard from
    photo = exif_jpeg(tmp_path / "contacto.jpg", "2026:09:01 12:00:00", "-06:00",
                      color=(9, 9, 9))
    uploader(tus(hub, token), photo).upload()
    sha = sha256_of(photo)

    done = run_cli("--data-dir", hub.data_dir, "hub", "kits", "--json")
    assert done.returncode == 0, done.stderr.decode()
    kits = {k["kit"]: k for k in json.loads(done.stdout)}
    seen, quiet = kits["kit-contacto"], kits["kit-callado"]
    assert seen["last_address"] == "127.0.0.1" and seen["items"] == 1, seen
    age = time.time() - datetime.fromisoformat(seen["last_contact"]).timestamp()
    assert 0 <= age < 120, seen
    assert quiet["last_contact"] is None and quiet["items"] == 0, quiet
    listed = run_cli("--data-dir", hub.data_dir, "hub", "kits").stdout.decode()
    assert re.search(r"kit-contacto .* 1 items, .*last contact \S+ from 127\.0\.0\.1", listed)
    assert re.search(r"kit-callado .*never in contact", listed), listed

    cookies = hub.director_session("central", "clave-de-prueba-2")
    deadline = time.monotonic() + 10  # the UI's index refreshes at most every few seconds
    while True:
        status, _, body = hub.request("GET", "/estado", None, {"Cookie": cookies})
        assert status == 200, body
        page = body.decode()
        if "<td>0</td><td>0</td><td>0</td>" not in page.split("kit-contacto", 1)[1][:300] \
                or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "<h2>Equipos enlazados</h2>" in page and "<h2>Dispositivos</h2>" not in page
    rows = {m["kit"]: m["row"] for m in re.finditer(
        r"<tr(?P<row>[^>]*>(?:(?!</tr>).)*?<strong>(?P<kit>[^<]+)</strong>.*?)</tr>", page,
        re.S)}
    assert "Nunca se ha conectado" in rows["kit-callado"], rows["kit-callado"]
    assert rows["kit-callado"].startswith(' class="warn"'), rows["kit-callado"]
    assert "127.0.0.1" in rows["kit-contacto"] and "warn" not in rows["kit-contacto"][:20]
    assert re.search(r"<td>1</td><td>0</td><td>0</td>", rows["kit-contacto"]), rows
    status, _, body = hub.request("GET", f"/item/{sha}", None, {"Cookie": cookies})
    assert status == 200, body
    assert re.search(r'<dt>Enviado por</dt><dd id="kits">kit-contacto</dd>', body.decode())


def test_check_repair_on_the_hub_keeps_which_kits_own_what(tmp_path: Path) -> None:
    """A hub shard damaged and rebuilt from the files by `acopio check --repair`: its items
    keep their `kits` (from the hub's change feed), so each kit still reaches its own."""
    photo = exif_jpeg(tmp_path / "card" / "DSC_0200.JPG", "2026:11:14 10:00:00", "-06:00")
    sha = sha256_of(photo)
    with running_hub(tmp_path / "hub") as hub:
        token = hub.pair("kit-repara")
        uploader(tus(hub, token), photo, chunk=1024 * 1024).upload()
        assert hub.json("GET", f"/sync/objects/{sha}?verify=1", token=token)[0] == 200
        [item] = [i for i in hub.items() if i["sha256"] == sha]
        assert item["kits"] == ["kit-repara"]
        hub.json("GET", "/sync/changes", token=token)  # the feed has seen the shard
        data_dir = hub.data_dir
    shard = data_dir / "state" / "catalog" / f"{item['folder']}.json"
    shard.write_text('{"items": {"1": {"sha256": ')  # damaged
    repair = run_cli("--data-dir", data_dir, "check", "--repair")
    assert repair.returncode == 0, repair.stdout.decode() + repair.stderr.decode()
    [rebuilt] = [i for i in json.loads(run_cli("--data-dir", data_dir, "items", "--json")
                                       .stdout) if i["sha256"] == sha]
    assert rebuilt["kits"] == ["kit-repara"]
    with running_hub(data_dir) as hub:
        status, body = hub.json("GET", f"/sync/objects/{sha}?verify=1", token=token)
        assert status == 200 and body["kits"] == ["kit-repara"], body


def test_a_damaged_catalog_shard_does_not_keep_the_hub_from_starting(tmp_path: Path) -> None:
    """The hub's start finishes what a stop interrupted, reading the records of the files it
    kept last: one damaged shard made that start fail, and every kit met "connection
    refused". Now that upload waits (logged with the repair) and the hub serves."""
    hub = Hub(tmp_path / "hub")
    try:
        token = hub.pair("kit-danado")
        photo = exif_jpeg(tmp_path / "danado.jpg", "2026:11:10 10:00:00", "-06:00",
                          color=(4, 5, 6))
        uploader(tus(hub, token), photo).upload()
        [item] = [i for i in hub.items() if i["sha256"] == sha256_of(photo)]
        hub.close()
        shard = hub.data_dir / "state" / "catalog" / f"{item['folder']}.json"
        shard.write_text('{"items": {"1": {"sha256": ')
        hub = Hub(tmp_path / "hub")
        assert hub.json("GET", "/sync/whoami", token=token)[0] == 200
        assert "acopio check --repair" in hub.stderr(), hub.stderr()
    finally:
        hub.close()


def test_a_hub_that_runs_for_months_sweeps_its_uploads(tmp_path: Path) -> None:
    """Idle uploads and the day-old markers of uploads already kept were swept only when the
    hub started: a hub up for weeks piled up two files per original (and every status page
    walked them), and an abandoned partial of up to hub.max_upload_gb stayed. Now the hub
    sweeps them every SWEEP_S, while it runs."""
    import threading

    from appliance import config as config_mod
    from sync.hub.server import HubServer
    from tests.conftest import TEST_ENV

    config = config_mod.load(None, environ={**TEST_ENV, **HUB_ENV}, data_dir=tmp_path / "hub")
    server = HubServer(config, host="127.0.0.1", port=0)
    server.sweep_s = 0.2
    stop = threading.Event()
    serving = threading.Thread(target=server.run, args=(stop,), daemon=True)
    serving.start()
    try:
        deadline = time.monotonic() + 20  # serving: its start's sweep is done
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                requests.get(f"http://127.0.0.1:{server.bound_port}/sync/whoami", timeout=2)
                break
            time.sleep(0.05)
        uploads = server.hub.uploads

        def made(days_ago: float, *, done: bool) -> Path:
            upload = uploads.create("kit-norte", 10, {"sha256": "a" * 64}, done=done)
            path = uploads._paths(upload.kit, upload.id)[0]
            record = json.loads(path.read_text())
            record["updated"] = time.time() - days_ago * 86400
            path.write_text(json.dumps(record))
            return path

        kept_yesterday = made(1.5, done=True)
        kept_now = made(0.1, done=True)
        abandoned = made(31, done=False)
        resumable = made(2, done=False)
        deadline = time.monotonic() + 10
        while (kept_yesterday.exists() or abandoned.exists()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not kept_yesterday.exists() and not abandoned.exists()
        assert not abandoned.with_suffix(".bin").exists()
        assert kept_now.exists() and resumable.exists()
    finally:
        stop.set()
        serving.join(timeout=30)
