"""Shared helpers for the web UI tests (and later browser tests and benchmarks).

- `WebApp`: a real app built with `create_app` on a data folder, with its core objects
  (`.ctx`), ways to make users and to get a logged-in test client (`.login`).
- `library`: a small real archive (photos with EXIF and GPS, a video, an audio file) imported
  with the real `acopio ingest` and with thumbnails, previews and proxies made by a real
  `acopio worker --once`.
- `RealServer` / `real_server`: a real `acopio serve` process on a free local port, for what
  only a real socket shows (the peer address, raw paths, the setup code on stdout, SIGTERM).

No fixtures live here, so test modules stay free of fixture imports: they wrap these in a
couple of lines of their own.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask
from flask.testing import FlaskClient

from appliance import config as config_mod
from appliance.accounts import User
from appliance.agenda import Activity, Agenda
from appliance.datadir import DataDir
from appliance.web import create_app
from appliance.web.context import EXTENSION, WebContext
from appliance.web.security import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE
from tests.cards import exif_jpeg, ffmpeg_audio, ffmpeg_video, sample
from tests.conftest import REPO, TEST_ENV, run_cli

PASSWORD = "clave-de-prueba-1"  # >= 10 characters, as accounts.MIN_PASSWORD asks


# -- the app in process ---------------------------------------------------------------


class Client(FlaskClient):
    """A test client that remembers the CSRF token of its session and sends it on writes."""

    csrf: str = ""

    def write(self, method: str, url: str, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", None) or {})
        headers.setdefault(CSRF_HEADER, self.csrf)
        return self.open(url, method=method, headers=headers, **kwargs)

    def form(self, url: str, data: dict[str, str] | None = None, **kwargs: Any) -> Any:
        """A form post as a browser sends it: the page's token in the `csrf_token` field."""
        return self.post(url, data={"csrf_token": self.csrf, **(data or {})}, **kwargs)

    def cookie(self, name: str) -> str | None:
        found = self.get_cookie(name)
        return found.value if found is not None else None

    @property
    def session_id(self) -> str | None:
        return self.cookie(SESSION_COOKIE)


def web_config(data_dir: Path, env: dict[str, str] | None = None) -> config_mod.Config:
    """The config a test app runs with: zeroconf off (TEST_ENV) plus `env` settings
    (`{"ACOPIO_WEB_PAGE_SIZE": "2"}`)."""
    return config_mod.load(None, environ={**TEST_ENV, **(env or {})}, data_dir=data_dir)


@dataclass
class WebApp:
    app: Flask
    data_dir: Path
    clients: list[Client] = field(default_factory=list)

    @classmethod
    def build(cls, data_dir: Path, env: dict[str, str] | None = None) -> WebApp:
        app = create_app(web_config(data_dir, env))
        app.test_client_class = Client
        return cls(app=app, data_dir=data_dir)

    @property
    def ctx(self) -> WebContext:
        return self.app.extensions[EXTENSION]

    def client(self) -> Client:
        made = self.app.test_client()
        assert isinstance(made, Client)
        self.clients.append(made)
        return made

    def user(self, name: str, role: str = "director", password: str = PASSWORD) -> User:
        return self.ctx.users.add(name, role, password)

    def login(self, name: str, password: str = PASSWORD) -> Client:
        """A client logged in through `POST /api/login`, its CSRF token remembered."""
        client = self.client()
        response = client.post("/api/login", json={"username": name, "password": password})
        assert response.status_code == 200, response.get_data(as_text=True)
        client.csrf = response.get_json()["csrf_token"]
        assert client.cookie(CSRF_COOKIE) == client.csrf
        return client

    def user_and_login(self, name: str, role: str = "director") -> Client:
        self.user(name, role)
        return self.login(name)

    def close(self) -> None:
        self.ctx.close()


@contextlib.contextmanager
def web_app(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[WebApp]:
    """`with web_app(data_dir) as web:` a fresh app, closed afterwards (the fixture builder)."""
    built = WebApp.build(data_dir, env)
    try:
        yield built
    finally:
        built.close()


def form_token(html: str) -> str:
    """The `csrf_token` hidden field of a rendered form."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no csrf_token field in the page"
    return match[1]


# -- a real archive ----------------------------------------------------------------------


@dataclass
class Library:
    """A data folder with real imported items; `sha` maps original names to SHA-256."""

    data_dir: Path
    sha: dict[str, str]
    items: list[dict[str, Any]]  # `acopio items --json`

    def copy_to(self, data_dir: Path) -> Path:
        """A private copy for one test (tests change users and sessions)."""
        shutil.copytree(self.data_dir, data_dir, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("query.sqlite*"))
        return data_dir


FIRST_BATCH = ("plaza.jpg", "cabildo.jpg", "flower.jpg")
SECOND_BATCH = ("clip.mp4", "entrevista.wav", "gps.jpg")


ZONE = ZoneInfo("America/Mexico_City")  # the kit's default time zone
ACTIVITY = Activity(slug="sesion-de-cabildo", title="Sesión de Cabildo",
                    start=datetime(2026, 11, 10, 9, 0, tzinfo=ZONE),
                    end=datetime(2026, 11, 10, 12, 0, tzinfo=ZONE), area="Gobierno",
                    place="Sala de Cabildo")
# In capture order within the activity's folder (what prev/next follow).
IN_ACTIVITY = ("plaza.jpg", "cabildo.jpg", "entrevista.wav", "gps.jpg")


def _set_mtime(path: Path, moment: datetime) -> None:
    os.utime(path, (moment.timestamp(), moment.timestamp()))


def build_library(root: Path) -> Library:
    """Two imports one after the other (so "newest imports first" has an order to show),
    then the worker makes every derivative. Photos of 10 November 2026 (EXIF, two camera
    models, one with GPS) and an audio recording fall in the agenda's "Sesión de Cabildo";
    the afternoon video is unsorted; a real sample from 2003 (flower.jpg, Canon PowerShot
    S40) is alone in its month."""
    data = root / "data"
    DataDir.at(data).ensure()
    Agenda(DataDir.at(data).state).add(ACTIVITY)
    first, second = root / "card1", root / "card2"
    exif_jpeg(first / "DCIM/100CANON/plaza.jpg", "2026:11:10 10:00:00", "-06:00",
              model="Canon EOS R6", color=(200, 30, 30))
    exif_jpeg(first / "DCIM/100CANON/cabildo.jpg", "2026:11:10 10:05:00", "-06:00",
              model="Canon EOS R5", color=(30, 200, 30))
    sample("flower.jpg", first / "DCIM/100CANON/flower.jpg")
    ffmpeg_video(second / "PRIVATE/M4ROOT/CLIP/clip.mp4", "2026-11-10T20:00:00Z")
    wav = ffmpeg_audio(second / "AUDIO/entrevista.wav", "2026-11-10T16:20:00Z")
    # a WAV carries no creation time: the file's own time counts
    _set_mtime(wav, datetime(2026, 11, 10, 10, 20, tzinfo=ZONE))
    exif_jpeg(second / "DCIM/101CANON/gps.jpg", "2026:11:10 10:30:00", "-06:00",
              model="Canon EOS R6", color=(30, 30, 200), gps=(19.4326, -99.1332))
    for card in (first, second):
        done = run_cli("--data-dir", data, "ingest", card)
        assert done.returncode == 0, done.stderr.decode()
    worked = run_cli("--data-dir", data, "worker", "--once", timeout=300)
    assert worked.returncode == 0, worked.stderr.decode()
    listed = run_cli("--data-dir", data, "items", "--json")
    assert listed.returncode == 0, listed.stderr.decode()
    items = json.loads(listed.stdout)
    sha = {item["original_name"]: item["sha256"] for item in items}
    assert set(sha) == set(FIRST_BATCH + SECOND_BATCH), sha
    return Library(data_dir=data, sha=sha, items=items)


# -- a real server -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def server_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """What `run_cli` gives a child: no ACOPIO_* of ours, zeroconf off, plus `env`."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("ACOPIO_")}
    full.update(TEST_ENV)
    full.update(env or {})
    full["PYTHONUNBUFFERED"] = "1"
    return full


class RealServer:
    """A real `acopio serve --host 127.0.0.1 --port N` process. stdout is collected line by
    line (the setup code is printed there); stderr (the log) goes to a temporary file."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None,
                 port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.url = f"http://{self.host}:{self.port}"
        # kept after stop() so stderr() can still be read; close() closes it
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "--data-dir", str(data_dir), "serve",
             "--host", self.host, "--port", str(self.port)],
            cwd=REPO, env=server_env(env), stdout=subprocess.PIPE, stderr=self._stderr,
            stdin=subprocess.DEVNULL, text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def wait_for_line(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        """The first stdout line matching `pattern` (waiting for it)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    match = regex.search(line)
                    if match:
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no line matching {pattern!r} on stdout: "
                                         f"{self.lines!r}\nstderr:\n{self.stderr()}")
                self._changed.wait(min(left, 0.2))

    def wait_ready(self, timeout: float = 30) -> None:
        """Until the server answers HTTP (any status)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"acopio serve exited with {self.proc.returncode}:\n"
                                     f"{self.stderr()}")
            try:
                status, _, _ = self.request("GET", "/login")
                if status:
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"acopio serve did not answer within {timeout} s:\n"
                             f"{self.stderr()}")

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None
                ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One raw HTTP request on a new connection: the path goes out exactly as given
        (no normalisation), Host defaults to 127.0.0.1:<port>."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            sent = {"Host": f"{self.host}:{self.port}", **(headers or {})}
            data = body.encode() if isinstance(body, str) else body
            if data is not None:
                sent.setdefault("Content-Length", str(len(data)))
            for key, value in sent.items():
                conn.putheader(key, value)
            conn.endheaders(data)
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, Any]:
        sent = {"Content-Type": "application/json", **(headers or {})}
        status, got, raw = self.request(method, path, None if body is None
                                        else json.dumps(body), sent)
        return status, got, json.loads(raw) if raw else None

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, then the exit code (killed after `timeout`: a failure to stop)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"acopio serve ignored SIGTERM for {timeout} s") from None
        self._reader.join(timeout=5)
        if self.proc.stdout is not None and not self._reader.is_alive():
            self.proc.stdout.close()
        return self.proc.returncode

    def close(self) -> None:
        """Stop, and drop the captured stderr."""
        try:
            self.stop()
        finally:
            self._stderr.close()


@contextlib.contextmanager
def real_server(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[RealServer]:
    """`with real_server(data_dir) as server:` a served UI at `server.url`, stopped with
    SIGTERM afterwards. Retries on another port if the free one was taken meanwhile."""
    for _attempt in range(3):
        server = RealServer(data_dir, env)
        try:
            server.wait_ready()
        except AssertionError:
            server.stop()
            taken = "cannot listen" in server.stderr()
            server.close()
            if taken:
                continue
            raise
        break
    else:
        raise AssertionError("no free port for acopio serve")
    try:
        yield server
    finally:
        server.close()


def claim_large_body(port: int, path: str, length: int, host: str = "127.0.0.1") -> bytes:
    """Send a POST's headers claiming a `length`-byte body, then only a few bytes of it, and
    read the answer: a server that checks the length before reading the body answers at once
    (a 413); one that waits for the body answers nothing (a timeout, raised)."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
                     f"\r\n{{".encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            piece = sock.recv(4096)
            if not piece:
                break
            answer += piece
        return answer
