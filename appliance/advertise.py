"""zeroconf: advertise the web UI on the LAN as `_http._tcp` under the kit's name.

Why (design decision 8): at an event the box is found by name on whatever network it is
plugged into, with no DNS and no fixed address; a phone or laptop browsing for web services
(DNS-SD, "Bonjour") sees "<kit name>" and opens it. Advertising is a convenience, never a
condition: a failure to advertise (no network yet, an address not on the box, a zeroconf
error) is logged as a warning with its reason and the web server carries on without it.

What is announced (RFC 6762/6763): the service instance "<kit name>._http._tcp.local."
pointing at "<host name>.local." and the web server's port, with the TXT keys `path` (where
the UI lives, "/") and `kit` (the kit's name, untouched) plus any extra properties. Another
responder already using the instance name (a second kit with the same name) makes zeroconf
pick the next free one, "<kit name>-2", "-3"...: both are then listed. Dots in the kit's
name become "-" in the instance name (zeroconf would otherwise split it into DNS labels), and
a name is cut to 59 bytes so that the renaming still fits in a 63-byte label.

Two caveats, seen in the tests. zeroconf probes instance names but not host names: two
boxes with the same host name (one image cloned) would publish both addresses under it, so
each box needs its own host name (or `hostname=`). And the clash is only noticed when the
probe's unicast answer reaches this zeroconf: another mDNS responder on the same host (a
second Advertiser, avahi-daemon) shares UDP port 5353 and may get it instead (SO_REUSEPORT
hands a unicast datagram to one socket), so a box runs one Advertiser.

Interfaces. `interfaces` lists the addresses to bind to and announce; they must belong to
this machine. Empty means every interface: zeroconf then listens and answers on every IPv4
interface, and the records carry the box's non-loopback IPv4 and IPv6 addresses (IPv6
link-local ones left out: they are useless without their interface) as found at start. On
development machines and in tests use 127.0.0.1 (inside a network namespace, for tests), or
turn advertising off: never multicast onto a network that is not the box's.

Timing (zeroconf 0.154, measured on loopback): registering takes about 1.65 s, as the RFC
requires a random 150-250 ms wait and three probes 500 ms apart (to detect a name clash)
before three announcements 225 ms apart; a browser sees the service at the first
announcement, about 1.25 s after the start. Withdrawing sends three goodbye packets 125 ms
apart, 0.25 s; a browser reports the service removed on the first one. So `start()` is
synchronous but bounded by `timeout` (5 s by default): it returns True once the
announcements went out, False on any failure or when the timeout passes. A caller that
must not wait, like the web server at boot, calls `start_in_background()`, which runs
`start()` on a short-lived daemon thread; `close()` waits for that thread before
withdrawing, so nothing is left announced.

The Advertiser tracks what it registered and withdraws it at shutdown (like OctoPrint):
`close()` is idempotent and never raises. It is not retried: an Advertiser started before
the network came up stays silent (`registered` is False) until a new one is started.
`Following` does that: on every interface, it makes a new Advertiser whenever the box's
addresses change (a cable plugged in after boot at an event, a new DHCP lease), so a box
need not wait for the network at boot, and is found once there is one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType

import ifaddr
from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, Zeroconf

log = logging.getLogger(__name__)

SERVICE_TYPE = "_http._tcp.local."
DEFAULT_TIMEOUT = 5.0
_MAX_INSTANCE_BYTES = 59  # a DNS label holds 63; leave room for zeroconf's "-N" rename


class AdvertiseError(Exception):
    """Why advertising could not start (logged by `Advertiser.start`, never raised by it)."""


def instance_label(kit_name: str) -> str:
    """The DNS-SD instance name for a kit: dots replaced, cut to fit one DNS label."""
    label = " ".join(kit_name.replace(".", "-").split()).strip("- ")
    encoded = label.encode("utf-8")[:_MAX_INSTANCE_BYTES]
    return encoded.decode("utf-8", errors="ignore").rstrip("- ")


def host_label(hostname: str | None = None) -> str:
    """This machine's host name as a DNS label (what precedes ".local.")."""
    name = (hostname if hostname is not None else socket.gethostname()).split(".")[0]
    label = re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-")[:63].strip("-")
    return label or "acopio"


def local_addresses(*, include_loopback: bool = False) -> list[str]:
    """The IPv4 and IPv6 addresses on this machine's interfaces (IPv6 link-local left out)."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            raw = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                address = ipaddress.ip_address(raw.split("%")[0])
            except ValueError:
                continue
            if address.is_loopback and not include_loopback:
                continue
            if address.version == 6 and address.is_link_local:
                continue
            if str(address) not in found:
                found.append(str(address))
    return found


class Advertiser:
    """Tracks its registrations and withdraws them at shutdown (like OctoPrint).

    `start()` registers synchronously within `timeout` seconds (about 1.7 s normally) and
    never raises; `start_in_background()` does the same on a short-lived daemon thread so
    the web server does not wait. `close()` withdraws (goodbye packets) and closes zeroconf;
    idempotent, never raises. See the module docstring for what is announced.

    `interfaces`: addresses of this machine to bind to and announce (empty: every
    interface). `properties` are added to the TXT record (`path`, `kit`). `timeout` bounds
    registering and withdrawing. `hostname` replaces this machine's host name in
    "<host name>.local.".
    """

    def __init__(self, kit_name: str, port: int, *, interfaces: Sequence[str] = (),
                 path: str = "/", properties: Mapping[str, str] | None = None,
                 timeout: float = DEFAULT_TIMEOUT, hostname: str | None = None) -> None:
        self.kit_name = kit_name
        self.port = port
        self.interfaces = tuple(interfaces)
        self.path = path
        self.properties = dict(properties or {})
        self.timeout = timeout
        self.hostname = hostname
        self._lock = threading.Lock()
        self._zeroconf: Zeroconf | None = None
        self._info: ServiceInfo | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    # -- state ---------------------------------------------------------------------------

    @property
    def registered(self) -> bool:
        """True while the service is announced (after a successful start, until close)."""
        return self._info is not None

    @property
    def name(self) -> str | None:
        """The instance name announced ("kit._http._tcp.local."), after any renaming."""
        info = self._info
        return info.name if info is not None else None

    # -- start ---------------------------------------------------------------------------

    def start(self) -> bool:
        """Announce the service; True once announced, False (logged) on any failure."""
        with self._lock:
            if self._closed:
                log.warning("zeroconf: not advertising %r: the advertiser is closed",
                            self.kit_name)
                return False
            if self._info is not None:
                return True
            try:
                info = self._register()
            except Exception as exc:  # never let advertising stop the server
                reason = str(exc) or type(exc).__name__
                log.warning("zeroconf: could not advertise %r (_http._tcp, port %s): %s",
                            self.kit_name, self.port, reason)
                self._shutdown_zeroconf()
                return False
            self._info = info
            log.info("zeroconf: advertising %s on port %s at %s", info.name, self.port,
                     ", ".join(info.parsed_addresses()))
            return True

    def start_in_background(self) -> threading.Thread:
        """Run `start()` on a daemon thread and return at once (the thread is returned)."""
        if self._thread is not None and self._thread.is_alive():
            return self._thread
        thread = threading.Thread(target=self.start, name="zeroconf-advertise", daemon=True)
        self._thread = thread
        thread.start()
        return thread

    def _addresses(self) -> tuple[list[str], list[str] | InterfaceChoice, IPVersion]:
        """(addresses to announce, zeroconf interfaces, zeroconf IP version)."""
        if self.interfaces:
            on_host = set(local_addresses(include_loopback=True))
            addresses = []
            for given in self.interfaces:
                try:
                    address = str(ipaddress.ip_address(given))
                except ValueError as exc:
                    raise AdvertiseError(f"{given!r} is not an IP address") from exc
                if address not in on_host:
                    raise AdvertiseError(f"address {address} is not on any interface of "
                                         "this machine")
                addresses.append(address)
            versions = {ipaddress.ip_address(a).version for a in addresses}
            ip_version = (IPVersion.All if versions == {4, 6}
                          else IPVersion.V6Only if versions == {6} else IPVersion.V4Only)
            return addresses, addresses, ip_version
        addresses = local_addresses()
        if not any(ipaddress.ip_address(a).version == 4 for a in addresses):
            raise AdvertiseError("no network: this machine has no IPv4 address besides "
                                 "loopback")
        return addresses, InterfaceChoice.All, IPVersion.V4Only

    def _service_info(self, addresses: list[str]) -> ServiceInfo:
        label = instance_label(self.kit_name)
        if not label:
            raise AdvertiseError("the kit's name is empty")
        properties = {"path": self.path, "kit": self.kit_name, **self.properties}
        return ServiceInfo(
            SERVICE_TYPE, f"{label}.{SERVICE_TYPE}", port=self.port,
            properties=properties, server=f"{host_label(self.hostname)}.local.",
            parsed_addresses=addresses,
        )

    def _register(self) -> ServiceInfo:
        addresses, interfaces, ip_version = self._addresses()
        info = self._service_info(addresses)
        self._zeroconf = zc = Zeroconf(interfaces=interfaces, ip_version=ip_version,
                                       use_asyncio=False)

        async def register() -> None:
            await zc.async_wait_for_start()
            if not zc.engine.senders:
                raise AdvertiseError("zeroconf could not open a multicast socket on "
                                     f"{', '.join(addresses)}")
            announced = await zc.async_register_service(info, allow_name_change=True)
            await announced

        assert zc.loop is not None
        future = asyncio.run_coroutine_threadsafe(register(), zc.loop)
        try:
            future.result(self.timeout)
        except TimeoutError as exc:
            future.cancel()
            raise AdvertiseError(f"registration took more than {self.timeout:g} s") from exc
        return info

    # -- close ---------------------------------------------------------------------------

    def close(self) -> None:
        """Withdraw the service (goodbye packets) and close zeroconf; idempotent."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.timeout + 5)
        with self._lock:
            self._closed = True
            info, self._info = self._info, None
            zc = self._zeroconf
            if info is not None and zc is not None:
                try:
                    self._unregister(zc, info)
                    log.info("zeroconf: withdrew %s", info.name)
                except Exception as exc:
                    log.warning("zeroconf: could not withdraw %s: %s", info.name,
                                str(exc) or type(exc).__name__)
            self._shutdown_zeroconf()

    def _unregister(self, zc: Zeroconf, info: ServiceInfo) -> None:
        async def unregister() -> None:
            goodbyes = await zc.async_unregister_service(info)
            await goodbyes

        assert zc.loop is not None
        future = asyncio.run_coroutine_threadsafe(unregister(), zc.loop)
        try:
            future.result(self.timeout)
        except TimeoutError as exc:
            future.cancel()
            raise AdvertiseError(f"withdrawing took more than {self.timeout:g} s") from exc

    def _shutdown_zeroconf(self) -> None:
        zc, self._zeroconf = self._zeroconf, None
        if zc is None:
            return
        try:
            zc.close()
        except Exception as exc:
            log.warning("zeroconf: could not close cleanly: %s", str(exc) or type(exc).__name__)

    def __enter__(self) -> Advertiser:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


ADDRESS_POLL_S = 10.0  # how often `Following` looks at the box's addresses


class Following:
    """Advertises on every interface, again whenever the box's addresses change.

    The same two calls as an Advertiser (`start_in_background`, `close`); `make` makes the
    Advertiser for the addresses of the moment. Without any IPv4 address besides loopback
    nothing is announced, and the first address to appear is.
    """

    def __init__(self, make: Callable[[], Advertiser], *,
                 poll_s: float = ADDRESS_POLL_S) -> None:
        self.make = make
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.current: Advertiser | None = None

    def start_in_background(self) -> threading.Thread:
        if self._thread is None:
            self._thread = threading.Thread(target=self._follow, name="zeroconf-follow",
                                            daemon=True)
            self._thread.start()
        return self._thread

    def _follow(self) -> None:
        seen: list[str] | None = None
        while not self._stop.is_set():
            now = sorted(local_addresses())
            if now != seen:
                if self.current is not None:
                    log.info("zeroconf: the box's addresses changed (%s): announcing again",
                             ", ".join(now) or "none")
                    self.current.close()
                    self.current = None
                if any(ipaddress.ip_address(a).version == 4 for a in now):
                    self.current = self.make()
                    self.current.start()
                elif seen is None:
                    log.info("zeroconf: no network yet; announcing once there is one")
                seen = now
            self._stop.wait(self.poll_s)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.current is not None:
            self.current.close()
