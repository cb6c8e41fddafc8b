"""zeroconf advertising of the web UI, with real zeroconf in real separate processes.

Every zeroconf instance here lives in a network namespace of the test's own (tests/netns.py)
bound to 127.0.0.1 (or to a veth address between two namespaces): nothing is ever multicast
onto the machine's real network. One child advertises with `appliance.advertise.Advertiser`,
another browses with a plain zeroconf `ServiceBrowser`, as a phone on the LAN would.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from appliance.advertise import host_label
from tests.conftest import require_tool
from tests.netns import JsonLines, Namespace, live_namespaces, namespace, netns, veth

__all__ = ["netns"]  # the fixture, imported so that pytest finds it

pytestmark = pytest.mark.root

HTTP = "_http._tcp.local."

# Advertises (with start(), or start_in_background() then prints {"background": seconds
# it took}), prints {"started": ..., "name": ...}, withdraws on "close" (stdin) or SIGTERM,
# prints {"closed": ...}, exits.
ADVERTISER = r"""
import json, logging, signal, sys, threading, time
from appliance.advertise import Advertiser

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
kit, port, interfaces = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
adv = Advertiser(kit, port, interfaces=interfaces, hostname=sys.argv[4] or None)
begun = time.monotonic()
if sys.argv[5] == "background":
    thread = adv.start_in_background()
    print(json.dumps({"background": time.monotonic() - begun}), flush=True)
    thread.join()
    started = adv.registered
else:
    started = adv.start()
print(json.dumps({"started": started, "registered": adv.registered, "name": adv.name,
                  "seconds": time.monotonic() - begun}), flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
stop.wait()
begun = time.monotonic()
adv.close()
print(json.dumps({"closed": not adv.registered, "seconds": time.monotonic() - begun}),
      flush=True)
"""

# Browses _http._tcp on the given address and prints every service added (resolved) or
# removed, until its stdin closes.
BROWSER = r"""
import json, sys, time
from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf

zc = Zeroconf(interfaces=[sys.argv[1]])

def changed(zeroconf, service_type, name, state_change):
    event = {"event": state_change.name.lower(), "name": name, "at": time.monotonic()}
    if state_change is ServiceStateChange.Added:
        info = zeroconf.get_service_info(service_type, name, timeout=3000)
        if info is not None:
            event.update(port=info.port, server=info.server,
                         addresses=info.parsed_addresses(),
                         properties={k.decode(): (v or b"").decode()
                                     for k, v in info.properties.items()})
    print(json.dumps(event), flush=True)

browser = ServiceBrowser(zc, "_http._tcp.local.", handlers=[changed])
print(json.dumps({"browsing": True}), flush=True)
sys.stdin.read()
browser.cancel()
zc.close()
"""

# Failures that must never raise: each case prints what start() returned and the warnings.
FAILURES = r"""
import json, logging, sys
import appliance.advertise as advertise
from appliance.advertise import Advertiser

class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []
    def emit(self, record):
        self.messages.append(record.getMessage())

collect = Collect()
logging.getLogger("appliance.advertise").addHandler(collect)

def no_socket(*args, **kwargs):
    raise OSError(19, "No such device")

def case(label, make, patch=None):
    collect.messages.clear()
    original = advertise.Zeroconf
    if patch is not None:
        advertise.Zeroconf = patch
    try:
        adv = make()
        started = adv.start()
        registered = adv.registered
        adv.close()
        adv.close()
        out = {"case": label, "started": started, "registered": registered,
               "after_close": adv.registered, "warnings": list(collect.messages)}
    except BaseException as exc:
        out = {"case": label, "raised": repr(exc)}
    finally:
        advertise.Zeroconf = original
    print(json.dumps(out), flush=True)

case("address not here", lambda: Advertiser("kit-prueba", 8080, interfaces=["192.0.2.77"]))
case("not an address", lambda: Advertiser("kit-prueba", 8080, interfaces=["eth-nada"]))
case("no network", lambda: Advertiser("kit-prueba", 8080))
case("empty name", lambda: Advertiser(" . ", 8080, interfaces=["127.0.0.1"]))
case("zeroconf error", lambda: Advertiser("kit-prueba", 8080, interfaces=["127.0.0.1"]),
     patch=no_socket)
case("too slow", lambda: Advertiser("kit-prueba", 8080, interfaces=["127.0.0.1"],
                                     timeout=0.05))

collect.messages.clear()
adv = Advertiser("kit-prueba", 8080, interfaces=["127.0.0.1"])
adv.start_in_background()
adv.close()  # while registering: waits for it, then withdraws
print(json.dumps({"case": "closed while starting", "registered": adv.registered,
                  "again": adv.start(), "warnings": list(collect.messages)}), flush=True)
with Advertiser("kit-prueba", 8080, interfaces=["192.0.2.77"]) as adv:
    print(json.dumps({"case": "context manager", "started": adv.registered}), flush=True)
"""


def advertiser(ns: Namespace, kit: str, port: int, interfaces: list[str],
               hostname: str = "", mode: str = "wait") -> JsonLines:
    return ns.json_child("-c", ADVERTISER, kit, str(port), json.dumps(interfaces), hostname,
                         mode)


def browser(ns: Namespace, address: str = "127.0.0.1") -> JsonLines:
    child = ns.json_child("-c", BROWSER, address)
    child.wait_for(lambda e: e.get("browsing"), timeout=10)
    return child


def added(name: str):
    return lambda e: e.get("event") == "added" and e.get("name") == name


def removed(name: str):
    return lambda e: e.get("event") == "removed" and e.get("name") == name


def started(child: JsonLines) -> dict[str, Any]:
    line = child.wait_for(lambda e: "started" in e, timeout=10)
    assert line["started"] is True, f"start() failed: {child.stderr()}"
    assert line["registered"] is True
    return line


@pytest.fixture(autouse=True)
def _ip_tool() -> None:
    require_tool("ip")


def test_advertised_then_withdrawn_on_close(netns: Namespace) -> None:
    """A browser on the "LAN" finds the kit's UI with its port, TXT and address; when the
    advertiser closes, the browser sees the service removed. Started in the background, as
    the web server does: that call returns at once."""
    watcher = browser(netns)
    kit = advertiser(netns, "kit-prueba", 8080, ["127.0.0.1"], mode="background")
    assert kit.wait_for(lambda e: "background" in e, timeout=10)["background"] < 0.5
    line = started(kit)
    assert line["name"] == f"kit-prueba.{HTTP}"
    assert line["seconds"] < 5  # probing and announcing: about 1.7 s

    found = watcher.wait_for(added(f"kit-prueba.{HTTP}"), timeout=8)
    assert found["port"] == 8080
    assert found["properties"] == {"path": "/", "kit": "kit-prueba"}
    assert found["addresses"] == ["127.0.0.1"]
    assert found["server"] == f"{host_label()}.local."  # this machine's host name

    kit.send("close")
    asked = time.monotonic()
    closed = kit.wait_for(lambda e: "closed" in e, timeout=10)
    assert closed["closed"] is True
    gone = watcher.wait_for(removed(f"kit-prueba.{HTTP}"), timeout=5)
    assert gone["received"] - asked < 5
    assert kit.finish() == 0
    assert watcher.finish() == 0


def test_failure_to_advertise_never_raises(netns: Namespace) -> None:
    """An address not on the machine, no network at all, an empty name, a zeroconf error or
    a registration that takes too long: start() returns False and logs why; close() is fine."""
    child = netns.json_child("-c", FAILURES)
    results = {}
    for _ in range(8):
        line = child.next(timeout=10)
        results[line["case"]] = line
    assert child.finish() == 0, child.stderr()

    reasons = {
        "address not here": "192.0.2.77 is not on any interface",
        "not an address": "'eth-nada' is not an IP address",
        "no network": "no network",
        "empty name": "name is empty",
        "zeroconf error": "No such device",
        "too slow": "took more than 0.05 s",
    }
    for case, reason in reasons.items():
        line = results[case]
        assert "raised" not in line, f"{case}: {line['raised']}"
        assert line["started"] is False and line["registered"] is False, case
        assert line["after_close"] is False, case
        assert len(line["warnings"]) == 1, (case, line["warnings"])
        assert "could not advertise 'kit-prueba'" in line["warnings"][0] or case == "empty name"
        assert reason in line["warnings"][0], (case, line["warnings"])
    assert results["closed while starting"]["registered"] is False
    assert results["closed while starting"]["again"] is False  # a closed one stays closed
    assert results["closed while starting"]["warnings"] == [
        "zeroconf: not advertising 'kit-prueba': the advertiser is closed"]
    assert results["context manager"] == {"case": "context manager", "started": False,
                                          "received": results["context manager"]["received"]}


def test_two_kits_with_one_name_are_both_listed() -> None:
    """A second kit with the same name (started after the first) takes the next free
    instance name; a browser lists both, each with its own address, port and TXT.

    The kits are two hosts (namespaces) on a veth link, as on a real LAN: two zeroconf
    instances on ONE host share UDP port 5353, and the unicast answer to the second one's
    probe reaches only one of the sockets (SO_REUSEPORT), so the clash can go unnoticed.
    The namespaces share this machine's host name, so each kit is given its own: two boxes
    with one host name would publish both addresses under it (zeroconf does not probe host
    names). Also checks tests/netns.py: link down/up, and both namespaces gone afterwards."""
    with namespace() as one, namespace() as two:
        link = veth(one, two, "10.77.0.1/24", "10.77.0.2/24")
        first = advertiser(one, "kit-prueba", 8080, [link.ip_a], "caja-uno")
        first_name = started(first)["name"]
        second = advertiser(two, "kit-prueba", 8081, [link.ip_b], "caja-dos")
        second_name = started(second)["name"]
        assert first_name == f"kit-prueba.{HTTP}"
        assert second_name == f"kit-prueba-2.{HTTP}"

        watcher = browser(two, link.ip_b)  # after the probes, not to take their answers
        seen: dict[str, tuple] = {}
        deadline = time.monotonic() + 8
        while len(seen) < 2:  # in either order
            event = watcher.wait_for(lambda e: e.get("event") == "added",
                                     timeout=deadline - time.monotonic())
            assert event["properties"] == {"path": "/", "kit": "kit-prueba"}
            seen[event["name"]] = (event["server"], event["addresses"], event["port"])
        assert seen == {first_name: ("caja-uno.local.", ["10.77.0.1"], 8080),
                        second_name: ("caja-dos.local.", ["10.77.0.2"], 8081)}

        first.proc.terminate()  # SIGTERM withdraws too
        assert first.wait_for(lambda e: "closed" in e, timeout=10)["closed"] is True
        watcher.wait_for(removed(first_name), timeout=5)

        link.down("a")
        assert "state DOWN" in one.ip("link", "show", link.dev_a).stdout
        link.up("a")
        assert "state DOWN" not in one.ip("link", "show", link.dev_a).stdout
        names = (one.name, two.name)
    assert not set(names) & set(live_namespaces())
