"""Helpers for the browser tests: a real appliance process, Debian's chromium driven by
Playwright, a watch on everything the page does, and screenshots kept after the run.

The appliance is `python -m appliance run` as a separate process (the same code a box runs),
listening on 127.0.0.1 on a free port, with zeroconf off (tests never multicast out of the
machine's real interface). Its one-time setup code is read from its console, as the director
would read it. Chromium is Debian's (/usr/bin/chromium), never one Playwright downloads.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import REPO, TEST_ENV

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SETUP_CODE = re.compile(r"Acopio setup code: (\d{4}-\d{4}-\d{4})")
# Where screenshots are copied for people to look at after CI (not tracked by git).
OUTPUT = REPO / "test-output" / "browser"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Appliance:
    """`python -m appliance --data-dir DATA run --roles ...` as a real child process."""

    def __init__(self, data_dir: Path, log: Path, *, roles: Sequence[str],
                 env: Mapping[str, str] | None = None,
                 base_env: Mapping[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.log = log
        self.roles = tuple(roles)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        base = dict(os.environ if base_env is None else base_env)
        self.env = {k: v for k, v in base.items() if not k.startswith("ACOPIO_")}
        self.env.update(TEST_ENV)
        self.env.update({
            "ACOPIO_WEB_HOST": "127.0.0.1",
            "ACOPIO_WEB_PORT": str(self.port),
            "ACOPIO_DEVICES_INBOX_SETTLE_S": "0.5",
            "ACOPIO_WORKER_POLL_S": "0.5",
        })
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.stdout: list[str] = []
        self._reader: threading.Thread | None = None
        self.setup_code: str | None = None

    def start(self, timeout: float = 30, *, setup_code: bool = True) -> None:
        """Start and wait until it listens; with `setup_code` (no user exists yet) also until
        it has printed its one-time setup code (a kit with users prints none)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "--data-dir", str(self.data_dir), "run",
             "--roles", ",".join(self.roles)],
            cwd=REPO, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=open(self.log, "ab"))  # noqa: SIM115 (the child owns it)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(self.failure(f"the appliance exited ({self.proc.returncode}) "
                                         "while starting"))
            if self.setup_code is None:
                for line in list(self.stdout):
                    if m := SETUP_CODE.search(line):
                        self.setup_code = m.group(1)
            if (self.setup_code or not setup_code) and self._listening():
                return
            time.sleep(0.05)
        waited = "print its setup code and listen" if setup_code else "listen"
        pytest.fail(self.failure(f"the appliance did not {waited} on {self.url} within "
                                 f"{timeout:.0f} s"))

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.stdout.append(raw.decode(errors="replace").rstrip("\n"))

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as systemd stops it; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                pytest.fail(self.failure(f"the appliance did not stop within {timeout:.0f} s "
                                         "of SIGTERM"))
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return int(self.proc.returncode)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stdout is not None:
            with contextlib.suppress(OSError, ValueError):
                self.proc.stdout.close()

    def log_tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def failure(self, message: str) -> str:
        return (f"{message}\nappliance stdout:\n" + "\n".join(self.stdout[-40:])
                + f"\nappliance log ({self.log}):\n{self.log_tail()}")


# --------------------------------------------------------------------------- the browser

def require_playwright() -> Any:
    """The sync Playwright API and Debian's chromium; fails (never skips) without them."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright Python package is not installed; run ./scripts/setup "
                    "(it installs the test extras into .venv)")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install "
                    "chromium, or ./scripts/setup as root); never `playwright install`")
    return sync_playwright


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Debian chromium (a Playwright Browser), closed afterwards."""
    sync_playwright = require_playwright()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


BROKEN_MEDIA = """() => [
    ...[...document.images].filter(i => i.getAttribute('src') && i.complete
                                        && i.naturalWidth === 0).map(i => 'image ' + i.src),
    ...[...document.querySelectorAll('video, audio')].filter(m => m.error)
        .map(m => m.tagName.toLowerCase() + ' ' + m.currentSrc + ': ' + m.error.message),
]"""


@dataclass
class PageWatch:
    """Everything that went wrong in the page: console errors, uncaught exceptions,
    failed requests, HTTP errors, and any request to a host other than the server (the box
    is offline: no CDN, no fonts, nothing from outside). `expected` lists (status, path
    regex) answers that are part of the flow (a 401 after logout)."""

    origin: str
    console: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    bad_responses: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    hosts: set[str] = field(default_factory=set)
    expected: list[tuple[int, re.Pattern[str]]] = field(default_factory=list)

    _not_modified: list[Any] = field(default_factory=list)
    # A navigation that turns into a download (a form post answered with an attachment)
    # ends, for chromium, as an aborted navigation: kept aside, and a failure only if no
    # download of that URL started.
    _aborted_navigations: list[str] = field(default_factory=list)
    _downloads: set[str] = field(default_factory=set)
    _navigations: int = 0
    _started_at: dict[Any, int] = field(default_factory=dict)

    @property
    def server(self) -> str:
        return urlsplit(self.origin).netloc

    def attach(self, context: Any) -> None:
        # Listened to, not intercepted: routing every request would turn off the HTTP cache
        # and change how the page's conditional requests (ETag, 304) behave, and under the
        # sync API a routed request waits whenever the test is not inside a Playwright call.
        context.on("request", self._on_request)
        context.on("page", self._attach_page)
        for page in context.pages:
            self._attach_page(page)

    def _on_request(self, request: Any) -> None:
        if request.is_navigation_request():
            self._navigations += 1
        self._started_at[request] = self._navigations
        url = urlsplit(request.url)
        if url.scheme in ("data", "blob", "about"):
            return
        self.hosts.add(url.netloc)
        if url.netloc != self.server:
            self.foreign.append(request.url)

    def _attach_page(self, page: Any) -> None:
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.page_errors.append(f"{page.url}: {exc}"))
        page.on("requestfailed", self._on_failed)
        page.on("response", self._on_response)
        page.on("download", lambda download: self._downloads.add(download.url))

    def _on_console(self, message: Any) -> None:
        if message.type == "error":
            where = message.location.get("url", "") if message.location else ""
            self.console.append(f"{message.type}: {message.text} ({where})")

    def _on_failed(self, request: Any) -> None:
        error = request.failure or ""
        if "ERR_ABORTED" in error:
            # A media element that has read what it needs cancels the rest of its range
            # request; and when the live grid's fetch (If-None-Match) gets a 304, the script
            # has the answer (it keeps the body it saw with that ETag) yet chromium also
            # reports the load as aborted. Neither is a failure of the server.
            if request.resource_type == "media" or request in self._not_modified:
                return
            # A picture whose load chromium cancels (the page moving on while lazy
            # thumbnails start: the navigation's request event can reach us before the
            # picture's, so the count below misses it) is no server failure; a picture that
            # stays broken on the page is caught by `check(step, page)` instead.
            if request.resource_type == "image":
                return
            # Leaving a page (a link, logout, a reload) cancels its requests still running:
            # the status poll and the live grid's fetch.
            if self._started_at.get(request, self._navigations) < self._navigations:
                return
            if request.is_navigation_request():
                self._aborted_navigations.append(request.url)
                return
        self.failed.append(f"{request.method} {request.url}: {error}")

    def _on_response(self, response: Any) -> None:
        if response.status == 304:
            self._not_modified.append(response.request)
        if response.status < 400:
            return
        path = urlsplit(response.url).path
        if any(status == response.status and pattern.search(path)
               for status, pattern in self.expected):
            return
        self.bad_responses.append(f"{response.status} {response.request.method} "
                                  f"{response.url}")

    def expect(self, status: int, path_regex: str) -> None:
        self.expected.append((status, re.compile(path_regex)))

    def problems(self) -> list[str]:
        console = [c for c in self.console if not self._expected_console(c)]
        return ([f"console {c}" for c in console]
                + [f"page error {e}" for e in self.page_errors]
                + [f"request failed {f}" for f in self.failed]
                + [f"request failed {u}: net::ERR_ABORTED (navigation, no download)"
                   for u in self._aborted_navigations if u not in self._downloads]
                + [f"HTTP {b}" for b in self.bad_responses]
                + [f"request to another host {u}" for u in self.foreign])

    def _expected_console(self, line: str) -> bool:
        # Chromium logs every 4xx as "Failed to load resource"; the expected ones are
        # already listed by status and path.
        m = re.search(r"status of (\d{3}) .*\((\S+)\)$", line)
        if not m:
            return False
        status, path = int(m.group(1)), urlsplit(m.group(2)).path
        return any(status == s and p.search(path) for s, p in self.expected)

    def check(self, step: str, page: Any = None) -> None:
        """No problem so far; with `page`, also no broken image or media element on it (a
        picture whose URL answers with a redirect to the login page is no HTTP error)."""
        problems = self.problems()
        if page is not None:
            problems += [f"broken {b}" for b in page.evaluate(BROKEN_MEDIA)]
        assert not problems, f"the page misbehaved (by {step}):\n" + "\n".join(problems)


class Screenshots:
    """NN-step.png under the test's tmp folder and under test-output/browser/<name>/."""

    def __init__(self, tmp: Path, name: str) -> None:
        self.dirs = [tmp / "screenshots", OUTPUT / name]
        shutil.rmtree(OUTPUT / name, ignore_errors=True)
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self.taken: list[Path] = []

    def take(self, page: Any, step: str, *, full_page: bool = False) -> Path:
        self.count += 1
        name = f"{self.count:02d}-{step}.png"
        first = self.dirs[0] / name
        page.screenshot(path=str(first), full_page=full_page, animations="disabled")
        for d in self.dirs[1:]:
            shutil.copyfile(first, d / name)
        self.taken.append(first)
        return first


def wait_until(condition: Any, what: str, timeout: float, *, interval: float = 0.2,
               on_timeout: Any = None) -> Any:
    """Poll `condition` until it returns something true; fail with `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = on_timeout() if on_timeout else ""
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{extra}")
        time.sleep(interval)
