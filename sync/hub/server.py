"""`acopio hub`: the headquarters web UI and the kits' /sync/ protocol, served by waitress.

The same app factory as the kit's UI in headquarters mode (`create_app(config, hub=True)`),
on `hub.host`:`hub.port`, advertised on the LAN as `_acopio-hub._tcp` when `hub.zeroconf`
(on the addresses of `web.zeroconf_interfaces`), so kits without `sync.hub_url` find it.

waitress reads a whole request body before the app sees it, keeping up to 512 KiB in memory
and the rest in a temp file; for the hub those temp files go to `state/hub/spool/` (on the
data disk, not a RAM-backed /tmp). One request body is at most 65 MiB (`MAX_BODY`): a tus
client sends a larger file in several PATCHes (kits send `sync.chunk_mb` chunks). At start,
uploads whose last byte was acknowledged before a crash are verified and placed. At start
and every `SWEEP_S` after (a hub runs for months), uploads left idle for `UPLOAD_IDLE_DAYS`
are deleted, and the day-long markers of uploads already kept: swept only at start, they
piled up at two files per original, and every status page walked them all.
"""

from __future__ import annotations

import functools
import logging
import sys
import tempfile
import threading

from waitress.server import create_server

from appliance.advertise import Advertiser
from appliance.agenda import slugify
from appliance.config import MAX_CHUNK_MB, Config
from appliance.web import create_app
from appliance.web.connections import limit_per_address
from appliance.web.context import EXTENSION, WebContext
from appliance.web.server import (
    advertising,
    announce_setup_code,
    return_freed_memory,
    serve_until,
)
from sync.hub.ledger import UPLOAD_IDLE_DAYS, Hub
from sync.hub.web import EXTENSION as HUB_EXTENSION

log = logging.getLogger(__name__)

HUB_SERVICE_TYPE = "_acopio-hub._tcp.local."
# waitress spools a whole body to disk before the app (and so the token check) sees the
# request: anyone on the LAN could fill the disk with bodies as large as allowed (waitress's
# default, 1 GiB, let 100 connections hold 100 GiB). So one request carries at most the
# largest chunk a kit may send (`sync.chunk_mb`, at most MAX_CHUNK_MB) and a little room;
# files go in several PATCHes, which tus is made for. A larger Content-Length gets 413 from
# waitress at once, before a byte of the body is read.
MAX_BODY = (MAX_CHUNK_MB + 1) * 1024 * 1024
# waitress reads a socket 8 KiB at a time by default: a thousand trips through its event loop
# per 8 MiB chunk. bench_sync measured the transfer of 600 MB of video over loopback (PATCH
# time less the app's) at 1.35 s with that, 0.68 s with 256 KiB (1 MiB: no better).
RECV_BYTES = 256 * 1024
# Connections served at once (waitress's default is 100): every kit's lanes and people's
# browsers at headquarters, with room above hub.connections_per_address for the others.
CONNECTIONS = 500
SWEEP_S = 3600.0  # idle uploads and day-old "already kept" markers, swept this often


class HubAdvertiser(Advertiser):
    """The Advertiser of the web UI, announcing `_acopio-hub._tcp` instead of `_http._tcp`."""

    def _service_info(self, addresses: list[str]):  # type: ignore[no-untyped-def]
        info = super()._service_info(addresses)
        from zeroconf import ServiceInfo

        label = info.name[: -len(info.type)]
        return ServiceInfo(HUB_SERVICE_TYPE, f"{label}{HUB_SERVICE_TYPE}", port=info.port,
                           properties={**info.properties, b"path": b"/sync/"},
                           server=info.server, parsed_addresses=addresses)


class HubServer:
    """A role: serve until `stop` is set."""

    def __init__(self, config: Config, *, host: str | None = None,
                 port: int | None = None) -> None:
        return_freed_memory()
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self.config = config
        self.host = host or config.hub.host
        self.port = config.hub.port if port is None else port
        self.app = create_app(config, hub=True)
        self.context: WebContext = self.app.extensions[EXTENSION]
        self.hub: Hub = self.app.extensions[HUB_EXTENSION]
        spool = self.hub.state / "spool"
        spool.mkdir(parents=True, exist_ok=True)
        for leftover in spool.iterdir():  # waitress unlinks its temp files; a crash may not
            leftover.unlink(missing_ok=True)
        tempfile.tempdir = str(spool)  # waitress's request-body buffers (this process only)
        self.server = create_server(
            self.app, host=self.host, port=self.port, threads=config.web.threads,
            ident="Acopio", clear_untrusted_proxy_headers=True,
            max_request_body_size=MAX_BODY, recv_bytes=RECV_BYTES,
            connection_limit=CONNECTIONS)
        limit_per_address(self.server, config.hub.connections_per_address)
        self.bound_port = self.server.effective_port  # type: ignore[union-attr]
        self.sweep_s = SWEEP_S

    def run(self, stop: threading.Event) -> None:
        announce_setup_code(self.context)
        kept = self.hub.finish_interrupted()
        if kept:
            log.info("kept %d uploads a stop had interrupted after their last byte", kept)
        self.sweep_uploads()
        sweeper = threading.Thread(target=self._sweep_until, args=(stop,),
                                   name="hub-upload-sweep", daemon=True)
        sweeper.start()
        advertiser = None
        if self.config.hub.zeroconf:
            advertiser = advertising(functools.partial(
                HubAdvertiser, self.config.kit.name, int(self.bound_port),
                interfaces=self.config.web.zeroconf_interfaces,
                hostname=slugify(self.config.kit.name) or None),
                self.config.web.zeroconf_interfaces)
        serve_until(stop, self.server, advertiser, self.close, "hub",
                    f"http://{self.host}:{self.bound_port}/ (sync at /sync/)")

    def sweep_uploads(self) -> None:
        try:
            dropped = self.hub.drop_idle_uploads()
        except OSError as exc:  # a disk error: tried again at the next sweep
            log.warning("could not sweep the idle uploads: %s", exc)
            return
        if dropped:
            log.info("deleted %d uploads idle for more than %d days, or kept a day ago",
                     dropped, UPLOAD_IDLE_DAYS)

    def _sweep_until(self, stop: threading.Event) -> None:
        while not stop.wait(self.sweep_s):
            self.sweep_uploads()

    def close(self) -> None:
        self.server.close()
        self.server.task_dispatcher.shutdown()  # type: ignore[union-attr]
        self.context.close()
        self.hub.close()


def serve(config: Config, host: str | None, port: int | None) -> int:
    from appliance.service import Service

    try:
        server = HubServer(config, host=host, port=port)
    except OSError as exc:
        print(f"acopio: cannot listen on {host or config.hub.host}:"
              f"{config.hub.port if port is None else port}: {exc.strerror}", file=sys.stderr)
        return 1
    return Service(config, roles=("hub",), make_role=lambda *_: server).run_until_signal()
