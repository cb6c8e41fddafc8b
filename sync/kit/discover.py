"""Find a hub on the office LAN: zeroconf browse for `_acopio-hub._tcp`.

Used when `sync.hub_url` is empty and the hub the kit was paired with does not answer at the
URL it was paired at (the office network gave it another address). The kit then looks for
hubs for `timeout` seconds and tries what it finds, with the scheme it was paired with:
a kit paired over https only ever talks https to a discovered hub, so the hub's certificate
(checked against `sync.ca_file`) still proves who it is; over http a discovered hub is
trusted as the LAN is. The token is only sent once a hub has been chosen.

`interfaces` are the addresses to browse on (empty: every interface). Like advertising,
browsing multicasts: tests do it only inside a network namespace of their own, on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

log = logging.getLogger(__name__)

SERVICE_TYPE = "_acopio-hub._tcp.local."
DEFAULT_TIMEOUT = 3.0


@dataclass(frozen=True)
class FoundHub:
    name: str  # the DNS-SD instance name
    addresses: tuple[str, ...]
    port: int
    properties: dict[str, str] = field(default_factory=dict)

    def url(self, scheme: str | None = None) -> str:
        scheme = scheme or self.properties.get("scheme") or "http"
        address = self.addresses[0]
        host = f"[{address}]" if ":" in address else address
        # TXT `path` says where the sync API lives ("/sync/"); the client adds "/sync/...".
        path = self.properties.get("path", "").strip().rstrip("/").removesuffix("/sync")
        if path and not path.startswith("/"):
            path = "/" + path
        return f"{scheme}://{host}:{self.port}{path}"


def _decode(props: dict[bytes, bytes | None]) -> dict[str, str]:
    out = {}
    for key, value in props.items():
        try:
            out[key.decode()] = value.decode() if value is not None else ""
        except UnicodeDecodeError:
            continue
    return out


def find_hubs(timeout: float = DEFAULT_TIMEOUT, interfaces: Sequence[str] = (),
              *, first: bool = False) -> list[FoundHub]:
    """The hubs that answer within `timeout` seconds (with `first`, as soon as one does)."""
    zc = Zeroconf(interfaces=list(interfaces) if interfaces else InterfaceChoice.All,
                  ip_version=IPVersion.V4Only)
    found: dict[str, FoundHub] = {}
    names: list[str] = []
    seen = threading.Event()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str,
                  state_change: ServiceStateChange) -> None:
        if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated):
            names.append(name)
            seen.set()

    browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            seen.wait(max(0.0, min(0.25, deadline - time.monotonic())))
            seen.clear()
            while names:
                name = names.pop(0)
                info = zc.get_service_info(SERVICE_TYPE, name, timeout=1500)
                if info is None or not info.port:
                    continue
                addresses = tuple(a for a in info.parsed_addresses()
                                  if not ipaddress.ip_address(a).is_link_local)
                if addresses:
                    found[name] = FoundHub(name.removesuffix("." + SERVICE_TYPE), addresses,
                                           info.port, _decode(info.properties))
            if first and found:
                break
    finally:
        browser.cancel()
        zc.close()
    hubs = sorted(found.values(), key=lambda h: h.name)
    log.info("zeroconf: %d hub(s) found%s", len(hubs),
             "".join(f"; {h.name} at {h.url()}" for h in hubs))
    return hubs
