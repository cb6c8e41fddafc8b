"""A small real TCP proxy for tests: what a bad link does to a connection, on real sockets.

    proxy = TcpProxy(("127.0.0.1", hub_port))          # listens on 127.0.0.1:<proxy.port>
    proxy.url                                           # http://127.0.0.1:<port>
    proxy.up, proxy.down                                # bytes forwarded client->server, back
    proxy.cut_at([300_000, 2_000_000])                  # cut the connection carrying the byte
                                                        # at these totals of client->server
    proxy.drop_after = 65536                            # cut every connection after N bytes
    proxy.pause(); proxy.resume()                       # hold every byte (a stalled link);
                                                        # proxy.paused says which
    proxy.blackhole(); proxy.resume()                   # also accept and never answer
    proxy.refuse(); proxy.resume()                      # cut everything, close new ones
    proxy.cut_all()                                     # cut what is open now, only
    proxy.flows()                                       # {connection number: bytes up}
    proxy.rate_bps = 256 * 1024                         # pace client->server
    proxy.on_upstream = lambda total, data: ...         # see each block before it goes on
    proxy.on_flow = lambda number, up, data: ...        # the same, per connection
    proxy.close()

Counting is of bytes actually forwarded (sent on to the other side), so a connection the
target refused (`failed_connects`), or bytes a cut stopped, count for nothing. A cut
(`cuts`, `cut_log`) forwards exactly up to the cut point; the target then gets the end of
the stream after those bytes, and the client sees its connection end mid-request, as on a
link that died. `refuse()` and `cut_all()` close both sides at once.

`netns=` / `target_netns=` name network namespaces (`ip netns`, tests/netns.py): the
listening socket, or the connections to the target, are then made inside that namespace
(setns(2) in a short-lived thread; a socket stays in the namespace it was made in), so one
proxy can even join two namespaces. That needs root.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

BLOCK = 64 * 1024
CLONE_NEWNET = 0x40000000


def in_netns(name: str | None, make: Callable[[], Any]) -> Any:
    """`make()` run in network namespace `name` (None: here); its result (e.g. a socket,
    which stays in that namespace wherever it is used afterwards)."""
    if name is None:
        return make()
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {name}: {os.strerror(err)}")
            finally:
                os.close(fd)
            out["value"] = make()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, name=f"netns-{name}")  # this thread only
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


class _Conn:
    def __init__(self, number: int, client: socket.socket, upstream: socket.socket) -> None:
        self.number = number
        self.client = client
        self.upstream = upstream
        self.up = 0  # client->server bytes forwarded on this connection
        self.cut = False
        self.pumps = 2  # running; the last one to end closes both sockets
        self.lock = threading.Lock()

    def pump_done(self) -> bool:
        with self.lock:
            self.pumps -= 1
            return self.pumps == 0

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class TcpProxy:
    def __init__(self, target: tuple[str, int], *, host: str = "127.0.0.1", port: int = 0,
                 netns: str | None = None, target_netns: str | None = None,
                 connect_timeout: float = 5.0) -> None:
        self.target = target
        self.target_netns = target_netns
        self.connect_timeout = connect_timeout
        self.server: socket.socket = in_netns(
            netns, lambda: socket.create_server((host, port)))
        self.host = host
        self.port = self.server.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.lock = threading.Lock()
        self.up = 0  # client->server bytes forwarded, all connections
        self.down = 0  # server->client bytes forwarded
        self.connections = 0  # accepted and joined to the target
        self.failed_connects = 0  # accepted, but the target could not be reached
        self.cuts = 0  # connections this proxy cut (cut points, drop_after)
        # (total up at the cut, the connection's own up, its number)
        self.cut_log: list[tuple[int, int, int]] = []
        self.drop_after: int | None = None  # cut every connection after this many bytes up
        self.rate_bps: float = 0.0  # client->server pace (0: none)
        self.on_upstream: Callable[[int, bytes], None] | None = None
        # the same per connection: (its number, bytes up on it before this block, block)
        self.on_flow: Callable[[int, int, bytes], None] | None = None
        self._points: list[int] = []  # pending cut points (totals of `up`), ascending
        self._in_flight = 0  # bytes reserved by a connection, not forwarded yet
        self._flowing = threading.Event()
        self._flowing.set()
        self._refusing = False
        self._blackholed = False
        self._held: list[socket.socket] = []
        self._conns: set[_Conn] = set()
        self._paced_until = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name=f"tcpproxy-{self.port}",
                                        daemon=True)
        self._thread.start()

    # -- faults -----------------------------------------------------------------------------

    def cut_at(self, points: Iterable[int]) -> None:
        """Cut the connection carrying the byte at each of these totals of client->server
        bytes (the bytes before it are forwarded, none after it on that connection)."""
        with self.lock:
            self._points = sorted({*self._points, *(int(p) for p in points)})

    @property
    def points_left(self) -> int:
        with self.lock:
            return len(self._points)

    @property
    def paused(self) -> bool:
        return not self._flowing.is_set()

    def pause(self) -> None:
        """Hold every byte in both directions (connections stay open, as on a stalled link)."""
        self._flowing.clear()

    def blackhole(self) -> None:
        """Paused, and new connections are accepted but never served."""
        self._blackholed = True
        self.pause()

    def refuse(self) -> None:
        """The link is gone: every connection is cut now, new ones are closed at once."""
        self._refusing = True
        self.cut_all()

    def resume(self) -> None:
        self._refusing = False
        self._blackholed = False
        held, self._held = self._held, []
        for sock in held:  # a blackhole's victims never got an answer: they end now
            with contextlib.suppress(OSError):
                sock.close()
        self._flowing.set()

    def flows(self) -> dict[int, int]:
        """Client->server bytes forwarded so far on each open connection, by its number."""
        with self.lock:
            return {conn.number: conn.up for conn in self._conns}

    def cut_all(self) -> int:
        with self.lock:
            conns = list(self._conns)
        for conn in conns:
            conn.close()
        return len(conns)

    # -- plumbing ---------------------------------------------------------------------------

    def _accept(self) -> None:
        number = 0
        while not self._closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self._refusing:
                client.close()
                continue
            if self._blackholed:
                self._held.append(client)
                continue
            try:
                upstream = in_netns(self.target_netns, lambda: socket.create_connection(
                    self.target, timeout=self.connect_timeout))
            except OSError:
                with self.lock:
                    self.failed_connects += 1
                client.close()
                continue
            upstream.settimeout(None)
            number += 1
            conn = _Conn(number, client, upstream)
            with self.lock:
                self.connections += 1
                self._conns.add(conn)
            threading.Thread(target=self._pump_up, args=(conn,), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(conn,), daemon=True).start()

    def _reserve(self, conn: _Conn, n: int) -> tuple[int, int, bool]:
        """(call under the lock) How many of the next `n` bytes of `conn` may go before a
        cut, where they begin in the stream of every connection, and whether this
        connection is cut after them. The bytes are reserved at once, so connections sending
        at the same time never both pass a cut point, and the one that reaches a point
        claims it: each point cuts exactly one connection."""
        at = self.up + self._in_flight
        allowed = n
        if self.drop_after is not None:
            allowed = min(allowed, max(0, self.drop_after - conn.up))
        claims = bool(self._points) and self._points[0] - at <= allowed
        if claims:
            allowed = max(0, self._points.pop(0) - at)
        self._in_flight += allowed
        return allowed, at, claims

    def _pace(self, n: int) -> None:
        rate = self.rate_bps
        if rate <= 0:
            return
        with self.lock:
            now = time.monotonic()
            start = max(self._paced_until, now - 0.05)
            self._paced_until = start + n / rate
            delay = self._paced_until - now
        if delay > 0:
            time.sleep(delay)

    def _pump_up(self, conn: _Conn) -> None:
        try:
            while block := conn.client.recv(BLOCK):
                self._flowing.wait()
                view = memoryview(block)
                while view:
                    with self.lock:
                        allowed, total, claims = self._reserve(conn, len(view))
                    if self.on_upstream is not None:
                        self.on_upstream(total, bytes(view[:allowed]))
                    if self.on_flow is not None:
                        self.on_flow(conn.number, conn.up, bytes(view[:allowed]))
                    sent = 0
                    try:
                        if allowed:
                            self._pace(allowed)
                            conn.upstream.sendall(view[:allowed])
                            sent = allowed
                    finally:  # forwarded bytes count; the reservation ends either way
                        with self.lock:
                            self._in_flight -= allowed
                            self.up += sent
                            conn.up += sent
                    view = view[allowed:]
                    if view or claims or self._due(conn):
                        self._cut(conn)
                        return
                    self._flowing.wait()
            # The client is done sending (it may still read): pass the half-close on.
            conn.upstream.shutdown(socket.SHUT_WR)
        except OSError:
            conn.close()
        except BaseException:  # the tap failed: no connection is left hanging on it
            conn.close()
            raise
        finally:
            self._end(conn)

    def _due(self, conn: _Conn) -> bool:
        with self.lock:
            return self.drop_after is not None and conn.up >= self.drop_after

    def _cut(self, conn: _Conn) -> None:
        """The client's connection ends here; the target gets every byte forwarded so far,
        then the end of the stream (not a reset, which could lose bytes still queued)."""
        with self.lock:
            self.cuts += 1
            self.cut_log.append((self.up, conn.up, conn.number))
            conn.cut = True
        with contextlib.suppress(OSError):
            conn.upstream.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            conn.client.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            conn.client.close()
        timer = threading.Timer(5.0, conn.close)  # a target that never hangs up
        timer.daemon = True
        timer.start()

    def _pump_down(self, conn: _Conn) -> None:
        try:
            while block := conn.upstream.recv(BLOCK):
                self._flowing.wait()
                conn.client.sendall(block)
                with self.lock:
                    self.down += len(block)
            conn.client.shutdown(socket.SHUT_WR)
        except OSError:
            conn.close()
        finally:
            self._end(conn)

    def _end(self, conn: _Conn) -> None:
        if conn.pump_done():
            conn.close()
            with self.lock:
                self._conns.discard(conn)

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        with contextlib.suppress(OSError):
            self.server.close()
        self.cut_all()
        for sock in self._held:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
