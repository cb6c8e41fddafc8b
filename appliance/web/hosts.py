"""The Host header allowlist: the guard against DNS rebinding (design decision 9).

A page on a hostile site can make a guest's browser resolve its own name to the box's
address; the browser then sends that foreign name in the Host header. Requests naming the box
by an IP address, `localhost`, its host name or `<kit>.local` (zeroconf) are answered; any
other name gets 400 before a session is even looked at.
"""

from __future__ import annotations

import ipaddress
import re
import socket

from appliance.agenda import slugify

_HOST = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]{1,253}))(?::\d{1,5})?$")


def allowed_hosts(kit_name: str, extra: tuple[str, ...]) -> frozenset[str]:
    hostname = socket.gethostname().lower()
    names = {"localhost", hostname, f"{hostname}.local", f"{slugify(kit_name)}.local"}
    return frozenset(names | {h.lower() for h in extra})


def host_allowed(host_header: str, names: frozenset[str]) -> bool:
    """IP literals are always fine (rebinding needs a name); names must be on the list.
    Anything that is not a plain name or address with an optional port is refused."""
    match = _HOST.match(host_header or "")
    if match is None:
        return False
    host = match["v6"] or match["name"]
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(match["name"]) and host.rstrip(".").lower() in names
