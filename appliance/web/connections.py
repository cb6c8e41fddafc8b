"""At most so many open connections per client address, for waitress.

Why: waitress serves at most `connection_limit` (100) connections in all, and holds each
until its request is whole. On an open event LAN one laptop opening a hundred connections
and sending a byte every few seconds ("slowloris") left the web UI and the hub unable to
answer anyone else. A browser keeps at most six connections to a host and a kit two to four,
so a connection beyond `web.connections_per_address` from one address is closed at once;
everyone else is still served.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer

log = logging.getLogger(__name__)

WARN_EVERY_S = 60.0  # one warning per address and minute, not one per refused connection


def limit_per_address(server: Any, most: int) -> None:
    """Make `server` (what waitress.create_server returned) close the connections of an
    address beyond its `most` open ones."""
    counts: Counter[str] = Counter()
    warned: dict[str, float] = {}
    lock = threading.Lock()

    class Limited(HTTPChannel):
        def __init__(self, server: Any, sock: Any, addr: Any, adj: Any,
                     map: Any = None) -> None:
            host = addr[0] if isinstance(addr, tuple) else str(addr)
            with lock:
                over = counts[host] >= most
                if not over:
                    counts[host] += 1
                    self._counted: str | None = host
                else:
                    self._counted = None
                    now = time.monotonic()
                    if now - warned.get(host, float("-inf")) >= WARN_EVERY_S:
                        warned[host] = now
                        log.warning("%s has %d connections open: more are closed at once "
                                    "(web.connections_per_address)", host, most)
            super().__init__(server, sock, addr, adj, map)
            if over:
                self.close()

        def del_channel(self, map: Any = None) -> None:
            host, self._counted = getattr(self, "_counted", None), None
            if host is not None:
                with lock:
                    counts[host] -= 1
                    if counts[host] <= 0:
                        del counts[host]
            super().del_channel(map)

    listeners = [server] if isinstance(server, BaseWSGIServer) else \
        [s for s in getattr(server, "map", {}).values() if isinstance(s, BaseWSGIServer)]
    for listener in listeners:
        listener.channel_class = Limited
