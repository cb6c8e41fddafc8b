"""The real web server advertises itself with zeroconf and withdraws at shutdown.

`acopio serve` runs inside a network namespace of the test's own, bound to 127.0.0.1 there
(nothing is multicast onto the machine's real network); a browsing child in the same
namespace plays the phone: it finds the kit's `_http._tcp` service, loads the login page
from the advertised address and port, and sees the service removed after SIGTERM. A failure
to advertise (an address that is not on the box) leaves the server answering.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, require_tool
from tests.netns import Namespace, namespace, netns, veth
from tests.test_advertise import BROWSER

__all__ = ["netns"]

pytestmark = [pytest.mark.root, pytest.mark.slow]

FETCH = r"""
import sys, urllib.request, urllib.error
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None
opener = urllib.request.build_opener(NoRedirect)
try:
    response = opener.open(sys.argv[1], timeout=5)
    print(response.status)
except urllib.error.HTTPError as exc:
    print(exc.code, exc.headers.get("Location", ""))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(ns: Namespace, data_dir, port: int, interfaces: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACOPIO_")}
    env.update(ACOPIO_KIT_NAME="kit-prueba", ACOPIO_WEB_ZEROCONF="true",
               ACOPIO_WEB_ZEROCONF_INTERFACES=interfaces)
    return ns.python("-m", "appliance", "--data-dir", data_dir, "serve",
                     "--host", "127.0.0.1", "--port", str(port), cwd=REPO, env=env,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _fetch(ns: Namespace, url: str) -> str:
    return ns.run(sys.executable, "-c", FETCH, url, timeout=20, check=False).stdout.strip()


def _wait_http(ns: Namespace, url: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    answer = ""
    while time.monotonic() < deadline:
        answer = _fetch(ns, url)
        if answer and answer.split()[0].isdigit():
            return answer
        time.sleep(0.3)
    raise AssertionError(f"the server never answered {url}: {answer!r}")


def test_serve_is_advertised_and_withdrawn(netns: Namespace, tmp_path) -> None:
    require_tool("ip")
    port = _free_port()
    browser = netns.json_child("-c", BROWSER, "127.0.0.1")
    browser.wait_for(lambda e: e.get("browsing"), timeout=10)
    server = _serve(netns, tmp_path / "data", port, "127.0.0.1")
    try:
        found = browser.wait_for(lambda e: e.get("event") == "added"
                                 and e["name"].startswith("kit-prueba."), timeout=15)
        assert found["port"] == port
        assert found["properties"]["kit"] == "kit-prueba"
        assert found["properties"]["path"] == "/"
        assert found["server"] == "kit-prueba.local."
        assert "127.0.0.1" in found["addresses"]
        # The phone opens what was advertised and lands on the setup page (no user yet).
        answer = _wait_http(netns, f"http://{found['addresses'][0]}:{found['port']}/login")
        assert answer.startswith("302") and "/setup" in answer
        # The kit's .local name is on the Host allowlist.
        assert _fetch(netns, f"http://127.0.0.1:{port}/setup").startswith("200")
    finally:
        server.send_signal(signal.SIGTERM)
        _out, err = server.communicate(timeout=20)
    assert server.returncode == 0, err.decode()
    removed = browser.wait_for(lambda e: e.get("event") == "removed"
                               and e["name"].startswith("kit-prueba."), timeout=10)
    assert removed
    browser.close()


def test_a_failed_advertisement_never_stops_the_server(netns: Namespace, tmp_path) -> None:
    require_tool("ip")
    port = _free_port()
    server = _serve(netns, tmp_path / "data", port, "192.0.2.77")  # not on this box
    try:
        answer = _wait_http(netns, f"http://127.0.0.1:{port}/setup")
        assert answer.startswith("200")
        time.sleep(1)
        assert server.poll() is None
    finally:
        server.send_signal(signal.SIGTERM)
        _out, err = server.communicate(timeout=20)
    assert server.returncode == 0
    log = err.decode()
    assert "192.0.2.77" in log and "WARNING" in log, log


def test_a_box_booted_before_its_network_is_found_once_it_has_one(
        netns: Namespace, tmp_path) -> None:
    """acopio.service waited for network-online.target, up to a minute or two at an event
    with no network, because an advertisement made before the network stayed silent for
    good. Now the web UI starts at once, and on every interface it announces itself again
    whenever the box's addresses change: plugged in later, the phone finds it."""
    require_tool("ip")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACOPIO_")}
    env.update(ACOPIO_KIT_NAME="kit-prueba", ACOPIO_WEB_ZEROCONF="true",
               ACOPIO_WEB_ZEROCONF_INTERFACES="")  # every interface, as on a box
    server = netns.python("-m", "appliance", "--data-dir", tmp_path / "data", "serve",
                          "--host", "0.0.0.0", "--port", str(port), cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert _wait_http(netns, f"http://127.0.0.1:{port}/setup").startswith("200")
        with namespace() as phone:
            link = veth(netns, phone)  # the cable, plugged in after boot
            browser = phone.json_child("-c", BROWSER, link.ip_b)
            browser.wait_for(lambda e: e.get("browsing"), timeout=10)
            found = browser.wait_for(lambda e: e.get("event") == "added"
                                     and e["name"].startswith("kit-prueba."), timeout=40)
            assert link.ip_a in found["addresses"] and found["port"] == port
            answer = _wait_http(phone, f"http://{link.ip_a}:{port}/login")
            assert answer.startswith("302") and "/setup" in answer
            browser.close()
    finally:
        server.send_signal(signal.SIGTERM)
        _out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err.decode()
    log = err.decode()
    assert "no network yet" in log and "advertising kit-prueba" in log, log
