"""Network namespaces for tests: separate "hosts" on one machine, never the real network.

Needs root and iproute2's `ip` (the tests that use it are marked `root`). A namespace made
here has only its own loopback (up, with multicast on, so zeroconf works inside it bound to
127.0.0.1) until `veth` links two namespaces with /24 addresses; the namespace is deleted on
the way out, failure or not, after the processes started in it are ended.

    with namespace() as ns:                      # or the `netns` fixture
        child = ns.python("-c", CODE, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        ...

    with namespace() as kit, namespace() as hub:
        link = veth(kit, hub, "10.77.0.1/24", "10.77.0.2/24")
        ...
        link.down()                              # cable pulled (either end: link.down("a"))
        link.up()

A process in a namespace must be started through it (`ns.popen`, `ns.python`, `ns.run`):
those are `ip netns exec NAME ...`, and the ones started with popen/python are ended at exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, require_tool

PREFIX = "acopio-t-"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([require_tool("ip"), *args], capture_output=True, text=True,
                            timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({result.returncode}): "
                           f"{result.stderr.strip()}")
    return result


@dataclass
class Namespace:
    """A network namespace made by `namespace()`; start processes in it through these."""

    name: str
    children: list[subprocess.Popen] = field(default_factory=list)
    readers: list[JsonLines] = field(default_factory=list)

    def argv(self, *args: str | os.PathLike[str]) -> list[str]:
        """The command line that runs `args` inside the namespace."""
        return [require_tool("ip"), "netns", "exec", self.name, *map(os.fspath, args)]

    def run(self, *args: str | os.PathLike[str], timeout: float = 30,
            check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """Run a command to completion inside the namespace (output captured as text)."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.argv(*args), timeout=timeout, check=check, **kwargs)

    def popen(self, *args: str | os.PathLike[str], **kwargs) -> subprocess.Popen:
        """Start a command inside the namespace; it is ended when the namespace goes."""
        kwargs.setdefault("cwd", REPO)
        child = subprocess.Popen(self.argv(*args), **kwargs)
        self.children.append(child)
        return child

    def python(self, *args: str | os.PathLike[str], **kwargs) -> subprocess.Popen:
        """Start this interpreter (the project's venv) inside the namespace."""
        return self.popen(sys.executable, *args, **kwargs)

    def json_child(self, *args: str | os.PathLike[str]) -> JsonLines:
        """Start this interpreter with `args` in the namespace, reading its JSON lines."""
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by JsonLines.close)
        child = self.python(*args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=stderr)
        reader = JsonLines(child, stderr)
        self.readers.append(reader)
        return reader

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """`ip -n NAME ...`: look at or change the namespace's links and addresses."""
        return _ip("-n", self.name, *args, check=check)

    def end_children(self, grace: float = 3.0) -> None:
        """Terminate (then kill) every process started in the namespace that still runs."""
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        for child in self.children:
            try:
                child.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=grace)
        for child in self.children:
            for stream in (child.stdin, child.stdout, child.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        for reader in self.readers:
            reader.close()


class JsonLines:
    """A child that prints one JSON object per line, read by a thread so that the test can
    wait for lines with a timeout; `send` writes a line to its stdin."""

    def __init__(self, proc: subprocess.Popen, stderr: Any) -> None:
        self.proc = proc
        self._stderr = stderr
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                obj = json.loads(raw)
            except ValueError:
                obj = {"unparsed": raw.decode(errors="replace").rstrip("\n")}
            obj.setdefault("received", time.monotonic())
            self.lines.put(obj)

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-4000:]

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def next(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next line (parsed); fails the test with the child's stderr on timeout."""
        try:
            obj = self.lines.get(timeout=timeout)
        except queue.Empty:
            state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
            raise AssertionError(
                f"no line from the child within {timeout:.1f} s ({state}); seen so far: "
                f"{self.seen}\nchild stderr:\n{self.stderr()}") from None
        self.seen.append(obj)
        return obj

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float = 5.0) -> dict[str, Any]:
        """Skip lines until one matches; fails after `timeout` seconds in all."""
        deadline = time.monotonic() + timeout
        while True:
            obj = self.next(max(0.0, deadline - time.monotonic()))
            if predicate(obj):
                return obj

    def finish(self, timeout: float = 10.0) -> int:
        """Close its stdin and wait for it to exit; its return code."""
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"child still running after {timeout} s; stderr:\n"
                                 f"{self.stderr()}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._stderr.close()


@contextlib.contextmanager
def namespace(prefix: str = PREFIX) -> Iterator[Namespace]:
    """A fresh, uniquely named namespace with `lo` up and multicast on; always deleted."""
    name = f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    _ip("netns", "add", name)
    ns = Namespace(name)
    try:
        ns.ip("link", "set", "lo", "up")
        ns.ip("link", "set", "lo", "multicast", "on")
        yield ns
    finally:
        try:
            ns.end_children()
        finally:
            _ip("netns", "delete", name, check=False)


@pytest.fixture
def netns() -> Iterator[Namespace]:
    """A fresh namespace for one test (see `namespace`)."""
    with namespace() as ns:
        yield ns


@dataclass
class Veth:
    """A veth pair: end `a` in one namespace, end `b` in the other."""

    a: Namespace
    b: Namespace
    dev_a: str
    dev_b: str
    addr_a: str
    addr_b: str

    @property
    def ip_a(self) -> str:
        """End a's address without its prefix length."""
        return self.addr_a.split("/")[0]

    @property
    def ip_b(self) -> str:
        return self.addr_b.split("/")[0]

    def _ends(self, ends: str) -> list[tuple[Namespace, str]]:
        chosen = {"a": [(self.a, self.dev_a)], "b": [(self.b, self.dev_b)]}
        return [pair for end in ends for pair in chosen[end]]

    def up(self, ends: str = "ab") -> None:
        """Bring the link up at both ends (or only "a" or "b")."""
        for ns, dev in self._ends(ends):
            ns.ip("link", "set", "dev", dev, "up")

    def down(self, ends: str = "ab") -> None:
        """Bring the link down (a pulled cable) at both ends (or only "a" or "b")."""
        for ns, dev in self._ends(ends):
            ns.ip("link", "set", "dev", dev, "down")


def veth(a: Namespace, b: Namespace, addr_a: str = "10.77.0.1/24",
         addr_b: str = "10.77.0.2/24", *, up: bool = True) -> Veth:
    """Link two namespaces with a veth pair holding these addresses (CIDR, e.g. /24).

    The pair disappears with either namespace; multicast works over it (zeroconf bound to
    the address given here sees the other namespace).
    """
    tag = uuid.uuid4().hex[:8]
    dev_a, dev_b = f"va{tag}", f"vb{tag}"  # interface names are at most 15 characters
    _ip("link", "add", dev_a, "netns", a.name, "type", "veth", "peer", "name", dev_b,
        "netns", b.name)
    link = Veth(a, b, dev_a, dev_b, addr_a, addr_b)
    a.ip("addr", "add", addr_a, "dev", dev_a)
    b.ip("addr", "add", addr_b, "dev", dev_b)
    for ns, dev in ((a, dev_a), (b, dev_b)):
        ns.ip("link", "set", "dev", dev, "multicast", "on")
    if up:
        link.up()
    return link


def live_namespaces(prefix: str = PREFIX) -> Sequence[str]:
    """Names of the test namespaces that exist now (to check that none leaked)."""
    names = Path("/run/netns")
    if not names.is_dir():
        return []
    return sorted(p.name for p in names.iterdir() if p.name.startswith(prefix))
