"""A network link of a set rate between this machine and a namespace of the benchmark's own.

Why: loopback has no rate, so a benchmark over 127.0.0.1 measures CPU, never how the link
is used. The kit syncs over an office LAN (1 Gbit/s at best); a veth pair into a network
namespace, its two ends shaped with `tc tbf` (netem is not available on these machines; the
token bucket is), carries what a real link would, and what runs in the namespace (a hub,
an rsync daemon) is reached only through it.

Needs root (namespaces, links, qdiscs); the namespace and its links are removed on close.
"""

from __future__ import annotations

import os
import subprocess


class LinkError(Exception):
    pass


class PacedLink:
    """`ip netns` NAME with a veth pair: this side HOST_IP, the namespace's side PEER_IP,
    each end sending at most `rate` (tc syntax: "1gbit", "100mbit")."""

    def __init__(self, rate: str = "1gbit", *, subnet: str = "10.213.77") -> None:
        self.rate = rate
        self.name = f"acopio-bench-{os.getpid()}"
        self.here = f"ab{os.getpid() % 100000}h"
        self.there = f"ab{os.getpid() % 100000}n"
        self.host_ip = f"{subnet}.1"
        self.peer_ip = f"{subnet}.2"
        self.prefix = ["ip", "netns", "exec", self.name]
        if os.geteuid() != 0:
            raise LinkError("a paced link needs root (ip netns, tc)")
        try:
            self._up()
        except (OSError, subprocess.CalledProcessError) as exc:
            self.close()
            detail = getattr(exc, "stderr", b"") or b""
            raise LinkError(f"could not set up the paced link: {exc} "
                            f"{detail.decode(errors='replace').strip()}") from exc

    def _ip(self, *args: str, inside: bool = False) -> None:
        subprocess.run([*(self.prefix if inside else []), *args], check=True,
                       capture_output=True)

    def _up(self) -> None:
        self._ip("ip", "netns", "add", self.name)
        self._ip("ip", "link", "add", self.here, "type", "veth", "peer", "name", self.there)
        self._ip("ip", "link", "set", self.there, "netns", self.name)
        self._ip("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.here)
        self._ip("ip", "link", "set", self.here, "up")
        self._ip("ip", "link", "set", "lo", "up", inside=True)
        self._ip("ip", "addr", "add", f"{self.peer_ip}/24", "dev", self.there, inside=True)
        self._ip("ip", "link", "set", self.there, "up", inside=True)
        for dev, inside in ((self.here, False), (self.there, True)):
            self._ip("tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", self.rate,
                     "burst", "512kb", "latency", "20ms", inside=inside)

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.here], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def __enter__(self) -> PacedLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
