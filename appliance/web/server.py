"""Serving the web UI with waitress, as `acopio serve` or the `web` role of `acopio run`.

waitress is pure Python (it installs anywhere the box runs), multi-threaded, and does not
trust X-Forwarded-For unless told to, so the address a login is throttled by is the real
peer. At start, while no account exists, a one-time setup code is printed to the console
and the journal (design decision 9). zeroconf advertises the UI; a failure there is logged
and never stops the server.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from waitress.server import create_server

from appliance.advertise import Advertiser, Following
from appliance.agenda import slugify
from appliance.config import Config
from appliance.storage import CorruptStateError, repair_hint
from appliance.web import create_app
from appliance.web.connections import limit_per_address
from appliance.web.context import EXTENSION, WebContext

log = logging.getLogger(__name__)

# waitress reads (and spools to a temp file) a whole request body before the app sees it, so
# the app's 1 MiB limit (MAX_REQUEST_BYTES) came only after storing up to waitress's default of
# 1 GiB per connection, with no login needed. Bodies up to this still reach the app, which
# answers a slightly too large kiosk logo with its own page; a larger Content-Length gets 413
# from waitress at once, before a byte of the body is read.
MAX_SPOOLED_BODY = 8 * 1024 * 1024


# glibc mallopt parameters (malloc.h).
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def return_freed_memory() -> None:
    """Keep the web process small on a 1 GB Pi (measured by `./scripts/bench web`).

    Each login's scrypt allocates a 16 MiB block; glibc keeps freed blocks in per-thread
    arenas, so 20 logins left 200-300 MB resident. Blocks above 1 MiB served by mmap go back
    to the system when freed, and two arenas are plenty for eight request threads.
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20) and libc.mallopt(_M_ARENA_MAX, 2)
    except (OSError, AttributeError) as exc:  # not glibc: its defaults stay
        log.warning("could not tune the memory allocator: %s", exc)
        return
    if not ok:
        log.warning("the memory allocator refused its tuning (mallopt)")


def advertising(make: Callable[[], Advertiser], interfaces: Sequence[str]
                ) -> Advertiser | Following:
    """On the interfaces named, once; on every interface, following the box's addresses
    (a box that booted before its network is found once it has one)."""
    return make() if interfaces else Following(make)


def serve_until(stop: threading.Event, server: Any, advertiser: Advertiser | Following | None,
                close: Callable[[], None], what: str, url: str) -> None:
    """Serve on a thread until `stop`; then withdraw the advertisement, close, and wait.
    The advertisement registers in the background (about 1.7 s of probing): the server
    answers meanwhile. Shared by the web UI and the hub."""
    if advertiser is not None:
        advertiser.start_in_background()
    closing = threading.Event()

    def run() -> None:
        try:
            server.run()
        except OSError:
            if not closing.is_set():
                raise
            # closed under waitress's select() at a stop (EBADF): the stop it was asked for

    serving = threading.Thread(target=run, name=f"{what.split()[0].lower()}-server",
                               daemon=True)
    serving.start()
    log.info("%s on %s", what, url)
    try:
        stop.wait()
    finally:
        if advertiser is not None:
            advertiser.close()
        closing.set()
        close()
        serving.join(timeout=5)


def announce_setup_code(context: WebContext) -> str | None:
    try:
        code = context.setup.issue()
    except OSError as exc:  # a full disk: serve anyway; the next start issues one
        log.error("no account exists yet, and no setup code could be kept (%s): free some "
                  "space on the data disk and restart", exc.strerror or exc)
        return None
    except CorruptStateError as exc:  # pages say so (503); the other roles go on
        log.error("%s; %s", exc, repair_hint(context.data, exc))
        return None
    if code is None:
        return None
    banner = (f"\n  Código de configuración de Acopio / Acopio setup code: {code}\n"
              "  Úselo en la página /setup para crear la cuenta de Dirección.\n")
    print(banner, flush=True)
    log.warning("no account exists yet: setup code %s (use it at /setup to create the "
                "director's account)", code)
    return code


class WebServer:
    """A role: serve until `stop` is set, then close the listener, advertisement and app."""

    def __init__(self, config: Config, *, host: str | None = None,
                 port: int | None = None) -> None:
        return_freed_memory()
        # A saturated queue is visible in the status and the benchmark; one warning per
        # queued request would flood the journal at an event.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self.config = config
        self.host = host or config.web.host
        self.port = config.web.port if port is None else port
        self.app = create_app(config)
        self.context: WebContext = self.app.extensions[EXTENSION]
        self.server = create_server(self.app, host=self.host, port=self.port,
                                    threads=config.web.threads, ident="Acopio",
                                    clear_untrusted_proxy_headers=True,
                                    max_request_body_size=MAX_SPOOLED_BODY)
        limit_per_address(self.server, config.web.connections_per_address)
        self.bound_port = self.server.effective_port  # type: ignore[union-attr]

    def run(self, stop: threading.Event) -> None:
        announce_setup_code(self.context)
        advertiser = None
        if self.config.web.zeroconf:
            # The host record is named after the kit (kit-cultura.local), which the Host
            # allowlist accepts, and which stays distinct on boxes cloned from one image.
            advertiser = advertising(functools.partial(
                Advertiser, self.config.kit.name, int(self.bound_port),
                interfaces=self.config.web.zeroconf_interfaces,
                hostname=slugify(self.config.kit.name) or None),
                self.config.web.zeroconf_interfaces)
        serve_until(stop, self.server, advertiser, self.close, "web UI",
                    f"http://{self.host}:{self.bound_port}/")

    def close(self) -> None:
        self.server.close()
        self.server.task_dispatcher.shutdown()  # type: ignore[union-attr]
        self.context.close()


def serve(config: Config, host: str | None, port: int | None) -> int:
    from appliance.service import Service

    try:
        server = WebServer(config, host=host, port=port)
    except OSError as exc:
        print(f"acopio: cannot listen on {host or config.web.host}:"
              f"{port or config.web.port}: {exc.strerror}", file=sys.stderr)
        return 1
    return Service(config, roles=("web",),
                   make_role=lambda *_: server).run_until_signal()
