"""The status strip's sync part in a real browser: Spanish words for every state, what is
pending, and a stopped sync service said as such (on a box the web UI and the sync role run
in separate units, systemd/).

A real `acopio run --roles web` and, for a while, a real `acopio sync` beside it on the same
data folder, paired with a hub that is out of reach; Debian's chromium through Playwright.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.datadir import DataDir
from sync.kit import credentials
from tests.browser import Appliance, chromium, require_playwright
from tests.cards import exif_jpeg
from tests.conftest import REPO, run_cli
from tests.webclient import free_port

pytestmark = pytest.mark.slow

USER, PASSWORD = "direccion", "prensa-municipal-2026"


def test_the_strip_says_what_sync_does_and_when_its_service_is_stopped(tmp_path: Path
                                                                       ) -> None:
    require_playwright()
    data = tmp_path / "kit"
    card = tmp_path / "card"
    for i in range(2):
        exif_jpeg(card / "DCIM" / f"IMG_{i:04d}.JPG", f"2026:11:2{i} 10:00:00", "-06:00",
                  color=(30 * i, 90, 150))
    assert run_cli("--data-dir", data, "ingest", card).returncode == 0
    added = run_cli("--data-dir", data, "users", "add", USER, "--role", "director",
                    "--password-stdin", input=f"{PASSWORD}\n".encode())
    assert added.returncode == 0, added.stderr.decode()
    # Paired with a hub that no longer answers (a closed port on this machine).
    credentials.save(DataDir.at(data), credentials.Credentials(
        hub_url=f"http://127.0.0.1:{free_port()}/", kit="kit-campo", token="t" * 32))
    web = Appliance(data, tmp_path / "web.log", roles=["web"])
    web.start(setup_code=False)
    sync: subprocess.Popen[bytes] | None = None
    try:
        with chromium() as browser:
            page = browser.new_context(locale="es-MX", base_url=web.url).new_page()
            page.goto("/login")
            page.fill("#login-form input[name=username]", USER)
            page.fill("#login-form input[name=password]", PASSWORD)
            with page.expect_navigation():
                page.click("#login-form button[type=submit]")
            strip = page.locator("#live-status .sync")
            strip.wait_for()
            page.wait_for_function(
                "() => document.querySelector('#live-status .sync').textContent"
                ".includes('Servicio detenido')")
            assert strip.inner_text() == "Central: Servicio detenido"
            assert "problem" in (strip.get_attribute("class") or "")

            with open(tmp_path / "sync.log", "wb") as out:
                sync = subprocess.Popen(
                    [sys.executable, "-m", "appliance", "--data-dir", str(data), "sync"],
                    cwd=REPO, env={**web.env, "ACOPIO_SYNC_RETRY_MAX_S": "1"}, stdout=out,
                    stderr=subprocess.STDOUT)
            page.wait_for_function(
                "() => document.querySelector('#live-status .sync').textContent"
                ".includes('Sin conexión')", timeout=30_000)
            text = strip.inner_text()
            assert text.startswith("Central: Sin conexión · 2 pendientes ("), text
            assert "MB)" in text or "KB)" in text, text
            title = strip.get_attribute("title") or ""
            # what it means in the page's language first, then the log's detail
            assert title.startswith("La central no responde") and "unreachable" in title
            assert "problem" not in (strip.get_attribute("class") or "")

            sync.send_signal(signal.SIGTERM)
            assert sync.wait(timeout=30) == 0, (tmp_path / "sync.log").read_text()
            page.wait_for_function(
                "() => document.querySelector('#live-status .sync').textContent"
                ".includes('Servicio detenido')", timeout=15_000)
    finally:
        if sync is not None and sync.poll() is None:
            sync.kill()
        web.stop()
