"""The kit's side of sync (sync.kit): outbox, tus uploads with resume, backoff, bandwidth cap,
pause during imports, metadata both ways, eviction, status.

Kits are real data folders filled by `acopio ingest` from real JPEGs and ffmpeg-made media;
the hub is a real `acopio hub` process on 127.0.0.1 (one per module, each test pairing kits
of its own with it); `acopio sync` runs as a real process too, so kill -9 is real.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from appliance import config as config_mod
from appliance.agenda import Agenda
from appliance.catalog import Catalog
from appliance.datadir import DataDir
from appliance.editorial import Editor
from sync.kit import credentials
from sync.kit.outbox import Outbox
from sync.kit.pacing import Backoff, RateLimiter
from sync.kit.store import SyncStore, record_digest, sync_dir
from tests.cards import exif_jpeg, ffmpeg_audio, ffmpeg_video, sha256_file
from tests.conftest import REPO, TEST_ENV, require_tool, run_cli
from tests.netns import Namespace, netns

__all__ = ["netns"]  # the fixture

MIB = 1024 * 1024


# -- helpers ----------------------------------------------------------------------------------


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACOPIO_")}
    env.update(TEST_ENV)
    env.update(extra or {})
    return env


@dataclass
class Kit:
    root: Path
    name: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def data(self) -> DataDir:
        return DataDir.at(self.root)

    def config(self, **env: str) -> config_mod.Config:
        return config_mod.load(None, environ={**TEST_ENV, **self.env, **env}, data_dir=self.root)

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
            ) -> subprocess.CompletedProcess:
        return run_cli("--data-dir", self.root, *args, env={**self.env, **(env or {})},
                       timeout=timeout)

    def ingest(self, folder: Path) -> None:
        result = self.cli("ingest", str(folder), "--json")
        assert result.returncode == 0, result.stderr.decode()

    def items(self) -> dict[str, dict[str, Any]]:
        return {r["sha256"]: r for r in Catalog(self.data).items()}

    def sync_popen(self, *args: str, env: dict[str, str] | None = None,
                   log: Path | None = None) -> subprocess.Popen:
        out = open(log or self.root.parent / f"{self.name}-sync.log", "ab")  # noqa: SIM115
        return subprocess.Popen(
            [sys.executable, "-m", "appliance", "--data-dir", str(self.root), "sync", *args],
            cwd=REPO, env=_env({**self.env, **(env or {})}), stdout=out,
            stderr=subprocess.STDOUT)


def make_kit(tmp_path: Path, name: str, files: dict[str, Path], **env: str) -> Kit:
    """A kit data folder with `files` imported by `acopio ingest` from a card folder."""
    kit = Kit(tmp_path / name, name, {"ACOPIO_KIT_NAME": name, **env})
    kit.root.mkdir()
    card = tmp_path / f"{name}-card"
    for rel, src in files.items():
        dest = card / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(src, dest)
    kit.ingest(card)
    return kit


class Media:
    """Real media made on demand for one test, unique to it (colours and creation times from
    a random seed), so that kits of different tests never share content at the one hub."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.rng = random.Random()
        self.made: dict[str, Path] = {}

    def __getitem__(self, key: str) -> Path:
        if key not in self.made:
            minute = self.rng.randrange(60)
            if key.startswith("photo"):
                i = int(key[5:])
                color = tuple(self.rng.randrange(256) for _ in range(3))
                self.made[key] = exif_jpeg(self.root / f"IMG_{i:04d}.JPG",
                                           f"2026:05:{10 + i:02d} 11:{minute:02d}:00", "-06:00",
                                           color=color)  # type: ignore[arg-type]
            elif key == "video":
                self.made[key] = ffmpeg_video(self.root / "C0001.MP4",
                                              f"2026-05-09T18:{minute:02d}:00Z")
            elif key == "audio":
                self.made[key] = ffmpeg_audio(self.root / "ENTREVISTA.WAV",
                                              f"2026-05-08T18:{minute:02d}:00Z")
            else:
                raise KeyError(key)
        return self.made[key]


@pytest.fixture
def media(tmp_path: Path) -> Media:
    root = tmp_path / "media"
    root.mkdir()
    return Media(root)


def small_card(media: Media, count: int = 4) -> dict[str, Path]:
    card = {f"DCIM/100CANON/IMG_{i:04d}.JPG": media[f"photo{i}"] for i in range(count)}
    card["PRIVATE/M4ROOT/CLIP/C0001.MP4"] = media["video"]
    card["AUDIO/ENTREVISTA.WAV"] = media["audio"]
    return card


# -- pacing: bandwidth cap and backoff --------------------------------------------------------


def test_rate_limiter_keeps_to_the_cap_on_a_virtual_clock() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(512 * 1024, clock=lambda: now[0], sleep=sleep, burst_s=0.05)
    for _ in range(128):  # 2 MiB in 16 KiB blocks
        limiter.consume(16 * 1024)
    elapsed = now[0] - 100.0
    assert 4.0 - 0.05 - 1e-6 <= elapsed <= 4.0 + 1e-6  # never faster than the cap beyond the burst
    # Idle time earns no more than the burst: after a pause it is paced again at once.
    now[0] += 60
    before = now[0]
    for _ in range(64):
        limiter.consume(16 * 1024)
    assert 2.0 - 0.05 - 1e-6 <= now[0] - before <= 2.0 + 1e-6
    assert RateLimiter(0).delay_for(10**9) == 0.0  # 0: no cap


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    delays = [Backoff(300, rng=random.Random(seed)).next() for seed in range(50)]
    assert len(set(delays)) > 40  # jittered: kits do not come back in step
    assert all(0.5 <= d <= 1.0 for d in delays)
    backoff = Backoff(300, rng=random.Random(7))
    seq = [backoff.next() for _ in range(12)]
    doubling = seq[:9]  # 1, 2, 4, ... 256 s ceilings: each delay at least the one before
    assert all(b >= a for a, b in itertools.pairwise(doubling))
    assert all(150 <= d <= 300 for d in seq[9:])  # then at the cap (sync.retry_max_s)
    backoff.reset()
    assert backoff.next() <= 1.0
    tiny = Backoff(1.6, rng=random.Random(1))  # a small cap still grows from a smaller base
    small = [tiny.next() for _ in range(5)]
    assert small[0] <= 0.1 and small[-1] > 0.8 and max(small) <= 1.6


# -- a real hub, and a counting TCP proxy in front of it --------------------------------------


class Proxy:
    """A TCP relay from 127.0.0.1:<port> to the hub that counts and timestamps the bytes the
    kit sends (the hub's own view of what arrived, independent of the kit's log)."""

    def __init__(self, target_port: int, tls: ssl.SSLContext | None = None) -> None:
        import threading

        self.target = ("127.0.0.1", target_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.tls = tls  # TLS ends here (as a reverse proxy in front of a real hub would)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.events: list[tuple[float, int]] = []  # (monotonic time, bytes kit -> hub)
        self.closed = False
        self.down = False  # True: every connection is cut at once (the link is gone)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def upstream(self) -> int:
        with self.lock:
            return sum(n for _, n in self.events)

    def _accept(self) -> None:
        import threading

        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            try:
                if self.tls is not None:
                    client.settimeout(10)
                    client = self.tls.wrap_socket(client, server_side=True)
                    client.settimeout(None)
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True
                             ).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True
                             ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while block := src.recv(65536):
                if count:
                    with self.lock:
                        self.events.append((time.monotonic(), len(block)))
                dst.sendall(block)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()

    def rate_between(self, low: float, high: float) -> float:
        """Bytes per second over the part of the traffic between the `low` and `high`
        fractions of all bytes sent (leaves out small requests before and after)."""
        with self.lock:
            events = list(self.events)
        total = sum(n for _, n in events)
        seen, start, end, counted = 0, None, None, 0
        for at, n in events:
            seen += n
            if start is None and seen >= low * total:
                start, counted = at, 0
            elif start is not None:
                counted += n
            if seen >= high * total:
                end = at
                break
        assert start is not None and end is not None and end > start
        return counted / (end - start)

    def close(self) -> None:
        self.closed = True
        self.server.close()


@dataclass
class RealHub:
    root: Path
    proc: subprocess.Popen
    log: Path
    url: str
    port: int

    @property
    def data(self) -> DataDir:
        return DataDir.at(self.root)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return run_cli("--data-dir", self.root, *args, env={"ACOPIO_HUB_ZEROCONF": "false",
                                                           "ACOPIO_KIT_NAME": "central"})

    def pair_code(self) -> str:
        result = self.cli("hub", "pair")
        assert result.returncode == 0, result.stderr.decode()
        code = result.stdout.decode().strip().splitlines()[-1]
        assert re.fullmatch(r"\d{4}-\d{4}-\d{4}", code), code
        return code

    def items(self) -> dict[str, dict[str, Any]]:
        result = self.cli("items", "--json")
        assert result.returncode == 0, result.stderr.decode()
        return {i["sha256"]: i for i in json.loads(result.stdout)}

    def config(self) -> config_mod.Config:
        return config_mod.load(None, environ={**TEST_ENV, "ACOPIO_HUB_ZEROCONF": "false",
                                              "ACOPIO_KIT_NAME": "central"},
                               data_dir=self.root)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealHub]:
    root = tmp_path_factory.mktemp("hub") / "data"
    log = root.parent / "hub.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "--data-dir", str(root), "hub", "--host",
             "127.0.0.1", "--port", "0"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            env=_env({"ACOPIO_HUB_ZEROCONF": "false", "ACOPIO_KIT_NAME": "central",
                      "PYTHONUNBUFFERED": "1"}))
    deadline = time.monotonic() + 30
    port = None
    while port is None:
        match = re.search(r"hub on http://127\.0\.0\.1:(\d+)/", log.read_text(errors="replace"))
        if match:
            port = int(match[1])
        elif proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the hub did not start:\n{log.read_text(errors='replace')[-3000:]}")
        else:
            time.sleep(0.1)
    running = RealHub(root, proc, log, f"http://127.0.0.1:{port}", port)
    try:
        yield running
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def paired(kit: Kit, hub: RealHub, url: str | None = None) -> None:
    result = kit.cli("sync", "pair", url or hub.url, hub.pair_code())
    assert result.returncode == 0, result.stderr.decode()
    assert f"as {kit.name}" in result.stdout.decode()


def sync_once(kit: Kit, env: dict[str, str] | None = None, timeout: float = 120
              ) -> tuple[int, str]:
    result = kit.cli("sync", "--once", env=env, timeout=timeout)
    return result.returncode, result.stdout.decode() + result.stderr.decode()


def sha_of(line: str) -> str:
    """The SHA-256 right after "uploaded "/"acknowledged " in a role log line."""
    for word in ("uploaded ", "acknowledged "):
        if word in line:
            return line.split(word, 1)[1].split()[0]
    return ""


def log_lines(text: str, word: str) -> list[str]:
    return [line for line in text.splitlines() if f"sync.kit.role: {word}" in line]


# -- pairing, a full sync, nothing sent twice, priority order ---------------------------------


@pytest.mark.slow
def test_pair_and_sync_everything_in_priority_order_then_nothing_again(
        hub: RealHub, media: Media, tmp_path: Path) -> None:
    kit = make_kit(tmp_path, "kit-norte", small_card(media, 5))
    items = kit.items()
    assert len(items) == 7
    by_name = {r["original_name"]: sha for sha, r in items.items()}
    editor = Editor(kit.data, node=kit.name)
    editor.approve([by_name["IMG_0000.JPG"]], by="directora")
    editor.edit(by_name["IMG_0003.JPG"], {"pick": "picked"}, by="ana")
    editor.edit(by_name["IMG_0004.JPG"], {"pick": "rejected"}, by="ana")

    code, output = sync_once(kit)
    assert code == 2 and "not paired" in output  # nothing to talk to yet

    proxy = Proxy(hub.port)
    paired(kit, hub, proxy.url)
    creds = credentials.path_of(kit.data)
    assert creds.stat().st_mode & 0o777 == 0o600
    assert (creds.parent / "kit_id").stat().st_mode & 0o777 == 0o600  # a code + it = the name
    assert json.loads(creds.read_text())["token"]

    code, output = sync_once(kit)
    assert code == 0, output
    assert "everything is acknowledged by the hub" in output
    # Metadata before originals; approved, then picked, then the rest, rejected last.
    lines = output.splitlines()
    first_upload = next(i for i, line in enumerate(lines) if "role: uploading" in line)
    assert all(i < first_upload for i, line in enumerate(lines)
               if "role: sent metadata" in line)
    assert "(approved first)" in next(line for line in lines if "role: sent metadata" in line)
    uploads = [line.split("uploading ")[1].split()[0] for line in lines
               if "role: uploading" in line]
    assert sorted(uploads) == sorted(items)
    assert uploads[0] == by_name["IMG_0000.JPG"]
    assert uploads[1] == by_name["IMG_0003.JPG"]
    assert uploads[-1] == by_name["IMG_0004.JPG"]
    # Originals acknowledged only after a verified answer, each of them; the hub verifies
    # one while the next ones upload (on two lanes, which may finish in either order), so
    # the first acknowledgement is logged after two uploads.
    assert len(log_lines(output, "acknowledged")) == 7
    at = {(word, sha_of(line)): i for i, line in enumerate(lines)
          for word in ("uploaded", "acknowledged") if f"role: {word} " in line}
    for sha in uploads:
        assert at[("uploaded", sha)] < at[("acknowledged", sha)], sha
    uploaded_at = sorted(at[("uploaded", sha)] for sha in uploads)
    assert min(at[("acknowledged", sha)] for sha in uploads) > uploaded_at[1]
    sent_bytes = proxy.upstream
    assert sent_bytes >= sum(r["size"] for r in items.values())

    at_hub = hub.items()
    for sha, record in items.items():
        assert at_hub[sha]["kits"] == [kit.name]
        assert at_hub[sha]["size"] == record["size"]
    assert at_hub[by_name["IMG_0000.JPG"]]["approved"] is True
    assert at_hub[by_name["IMG_0003.JPG"]]["pick"] == "picked"

    status = kit.cli("sync", "status", "--json")
    report = json.loads(status.stdout)
    assert report["state"] == "idle" and report["pending_items"] == 0
    assert report["pending_bytes"] == 0 and report["last_success"]
    assert report["hub"] == proxy.url and report["last_error"] is None
    from appliance.status import StatusBoard

    board = StatusBoard(kit.config(), latest_import=lambda: None).sync()
    assert board["state"] == "idle" and board["pending_items"] == 0

    # Again: nothing is sent, not a record, not a byte of an original.
    before = proxy.upstream
    code, output = sync_once(kit)
    assert code == 0, output
    assert not log_lines(output, "uploading") and not log_lines(output, "sent metadata")
    assert proxy.upstream - before < 4096  # a probe and a changes request, no more
    proxy.close()


# -- resume across a kill -9 ------------------------------------------------------------------


def _status(kit: Kit) -> dict[str, Any]:
    path = SyncStore(kit.data).status_path
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


@pytest.mark.slow
def test_kill_9_mid_upload_resumes_from_the_hubs_offset(hub: RealHub, tmp_path: Path) -> None:
    size_s = 360  # 16-bit mono WAV at 44.1 kHz: about 30 MiB
    big = ffmpeg_audio(tmp_path / "media" / "PLENO.WAV", "2026-05-12T10:00:00Z", size_s)
    kit = make_kit(tmp_path, "kit-sur", {"AUDIO/PLENO.WAV": big})
    (sha, record), = kit.items().items()
    size = record["size"]
    assert size > 30 * 10**6
    proxy = Proxy(hub.port)
    paired(kit, hub, proxy.url)
    chunk = 1 * MIB
    lane = chunk // 2  # two upload lanes share sync.chunk_mb: each sends half of it
    slow = {"ACOPIO_SYNC_CHUNK_MB": "1", "ACOPIO_SYNC_PARALLEL_UPLOADS": "2",
            "ACOPIO_SYNC_BANDWIDTH_KBPS": "6144"}
    child = kit.sync_popen("--once", env=slow)
    deadline = time.monotonic() + 30
    while (_status(kit).get("current") or {}).get("offset", 0) < 8 * MIB:
        assert child.poll() is None and time.monotonic() < deadline, "upload did not start"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    reported = _status(kit)["current"]["offset"]
    first_run = proxy.upstream
    time.sleep(0.3)  # the hub drops the chunk cut short

    # The upload URL survived in state/sync/uploads/; the hub kept whole chunks only.
    url = SyncStore(kit.data).uploads.get(sha)["url"]
    token = credentials.load(kit.data).token
    head = requests.head(url.replace(proxy.url, hub.url), timeout=10, headers={
        "Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"})
    offset = int(head.headers["Upload-Offset"])
    assert offset % lane == 0 and reported - lane <= offset < size

    code, output = sync_once(kit)  # no cap now
    assert code == 0, output
    assert f"resuming {sha} PLENO.WAV at offset {offset} of {size}" in output
    assert f"{size - offset} bytes sent" in output
    second_run = proxy.upstream - first_run
    # Everything that crossed the wire, both runs: the file once, plus at most the chunk that
    # was in flight at the kill (and a few KiB of requests and records).
    print(f"killed at ~{reported} bytes; the hub had {offset}; run 1 sent {first_run}, run 2 "
          f"{second_run}: {first_run + second_run - size} bytes over the file's {size}")
    assert first_run + second_run - size <= chunk + 64 * 1024
    assert first_run >= offset and second_run >= size - offset
    assert hub.items()[sha]["kits"] == [kit.name]
    assert SyncStore(kit.data).uploads.get(sha) is None
    proxy.close()


# -- backoff when the hub is unreachable ------------------------------------------------------


def test_unreachable_hub_backs_off_then_once_fails_clearly(tmp_path: Path,
                                                           media: Media) -> None:
    kit = make_kit(tmp_path, "kit-este", {"DCIM/IMG_0001.JPG": media["photo1"]})
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    url = f"http://127.0.0.1:{dead.getsockname()[1]}"
    credentials.save(kit.data, credentials.Credentials(url, kit.name, "t" * 43))
    started = time.monotonic()
    code, output = sync_once(kit, env={"ACOPIO_SYNC_RETRY_MAX_S": "1.6"})
    elapsed = time.monotonic() - started
    dead.close()
    assert code == 1, output
    assert f"hub {url} unreachable: connection refused" in output
    assert "gave up after 5 attempts" in output and "1 items pending" in output
    delays = [float(m) for m in re.findall(r"next in ([0-9.]+) s", output)]
    assert len(delays) == 4
    assert all(b > a for a, b in itertools.pairwise(delays)), delays
    assert delays[0] <= 0.1 and 0.4 <= delays[-1] <= 0.8
    assert elapsed < 15
    report = kit.cli("sync", "status", "--json")
    status = json.loads(report.stdout)
    assert status["state"] == "offline" and status["pending_items"] == 1
    assert "connection refused" in status["last_error"]["message"]


# -- the role, running: offline, then back -----------------------------------------------------


@pytest.mark.slow
def test_the_running_role_rides_out_a_lost_link(hub: RealHub, tmp_path: Path,
                                                media: Media) -> None:
    kit = make_kit(tmp_path, "kit-ruta", {"DCIM/IMG_0001.JPG": media["photo1"],
                                          "DCIM/IMG_0002.JPG": media["photo2"]})
    proxy = Proxy(hub.port)
    paired(kit, hub, proxy.url)
    proxy.down = True
    log = tmp_path / "role.log"
    child = kit.sync_popen(env={"ACOPIO_SYNC_RETRY_MAX_S": "1", "ACOPIO_SYNC_POLL_S": "0.5"},
                           log=log)
    try:
        deadline = time.monotonic() + 20
        while _status(kit).get("state") != "offline":
            assert child.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert _status(kit)["pending_items"] == 2
        assert _status(kit)["last_error"]["message"]
        proxy.down = False  # the link is back: the next retry sends everything
        while _status(kit).get("pending_items") != 0 or _status(kit).get("state") != "idle":
            assert child.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert _status(kit)["last_success"]
        assert all(kit.name in r["kits"] for sha, r in hub.items().items()
                   if sha in kit.items())
        # New work is picked up by the next round (sync.poll_s), with no restart.
        late = tmp_path / "late"
        late.mkdir()
        os.link(media["photo3"], late / "IMG_0003.JPG")
        kit.ingest(late)
        deadline = time.monotonic() + 20
        store = SyncStore(kit.data)
        while not all(store.object_acked(sha) for sha in kit.items()):
            assert child.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert len(kit.items()) == 3
    finally:
        child.send_signal(signal.SIGTERM)
        code = child.wait(timeout=15)
    assert code == 0, log.read_text()
    assert "stopped" in log.read_text()
    proxy.close()


# -- the bandwidth cap ------------------------------------------------------------------------


@pytest.mark.slow
def test_bandwidth_cap_is_kept_and_reached(hub: RealHub, tmp_path: Path) -> None:
    # 2 MiB of WAV: 16-bit mono at 44.1 kHz.
    wav = ffmpeg_audio(tmp_path / "media" / "NOTA.WAV", "2026-05-13T10:00:00Z", 23.78)
    kit = make_kit(tmp_path, "kit-oeste", {"AUDIO/NOTA.WAV": wav})
    (record,) = kit.items().values()
    assert abs(record["size"] - 2 * MIB) < 4096
    proxy = Proxy(hub.port)
    paired(kit, hub, proxy.url)
    cap = 512 * 1024
    code, output = sync_once(kit, env={"ACOPIO_SYNC_BANDWIDTH_KBPS": "512"})
    assert code == 0, output
    seconds = float(re.search(r"bytes sent in ([0-9.]+) s", output)[1])
    assert record["size"] / cap * 0.97 <= seconds <= record["size"] / cap / 0.9
    measured = proxy.rate_between(0.1, 0.9)  # as the hub's side of the wire saw it
    print(f"cap {cap / 1024:.0f} KiB/s: {record['size']} bytes in {seconds:.2f} s by the kit "
          f"({record['size'] / seconds / cap:.1%} of the cap), {measured / cap:.1%} on the wire")
    assert 0.9 * cap <= measured <= 1.05 * cap, measured / cap
    proxy.close()


# -- paused while a card imports --------------------------------------------------------------


@pytest.mark.slow
def test_uploads_wait_while_a_card_imports(hub: RealHub, tmp_path: Path,
                                           media: Media) -> None:
    from ingest.devices.state import Device, DeviceStates

    kit = make_kit(tmp_path, "kit-centro", {"DCIM/IMG_0002.JPG": media["photo2"]})
    paired(kit, hub)
    states = DeviceStates(kit.data.state)
    states.put(Device(id="sdz1", kind="card", status="importing", name="EOS_DIGITAL"))
    log = tmp_path / "paused.log"
    child = kit.sync_popen("--once", log=log)
    deadline = time.monotonic() + 20
    while _status(kit).get("state") != "paused":
        assert child.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    time.sleep(1.5)
    assert child.poll() is None
    text = log.read_text()
    assert "uploads held while EOS_DIGITAL imports" in text
    assert "role: uploading" not in text
    assert "sent metadata of 1 items" in text  # records are small: they go meanwhile
    states.update("sdz1", status="done")
    assert child.wait(timeout=20) == 0, log.read_text()
    text = log.read_text()
    assert "import finished; uploads resume" in text and "role: acknowledged" in text


# -- metadata both ways -----------------------------------------------------------------------


@pytest.mark.slow
def test_edits_go_up_and_decisions_come_down(hub: RealHub, tmp_path: Path,
                                             media: Media) -> None:
    kit = make_kit(tmp_path, "kit-prensa", small_card(media, 3))
    paired(kit, hub)
    assert sync_once(kit)[0] == 0
    by_name = {r["original_name"]: sha for sha, r in kit.items().items()}
    flower, second, third = (by_name[f"IMG_000{i}.JPG"] for i in range(3))

    # An edit on the kit after the sync is sent again (its revision changed), alone.
    Editor(kit.data, node=kit.name).edit(flower, {"caption": "Cabildo abierto",
                                                  "tags": ["cabildo"]}, by="ana")
    code, output = sync_once(kit)
    assert code == 0, output
    assert "sent metadata of 1 items" in output and not log_lines(output, "uploading")
    at_hub = hub.items()[flower]
    assert at_hub["caption"] == "Cabildo abierto" and at_hub["tags"] == ["cabildo"]

    # Headquarters approves one and captions another: both come down to the kit.
    hub_editor = Editor(hub.data, node="hub")
    hub_editor.approve([second], by="directora")
    hub_editor.edit(third, {"caption": "Desde la central"}, by="editor")
    code, output = sync_once(kit)
    assert code == 0, output
    items = kit.items()
    assert items[second]["approved"] is True and items[second]["approved_by"] == "directora"
    assert items[third]["caption"] == "Desde la central"
    assert items[flower]["caption"] == "Cabildo abierto"
    # ...and what came down is not echoed back.
    code, output = sync_once(kit)
    assert code == 0 and not log_lines(output, "sent metadata"), output


def refile_at_hub(hub: RealHub, sha: str, title: str, day: str, slug: str) -> None:
    """A new agenda activity on `day` at the hub, and the item re-filed into it there."""
    from appliance.refile import Refiler

    result = hub.cli("agenda", "add", title, "--start", f"{day}T09:00", "--end",
                     f"{day}T14:00", "--slug", slug)
    assert result.returncode == 0, result.stderr.decode()
    Refiler(hub.config(), hub.data).refile([sha], slug, by="directora")


@pytest.mark.slow
def test_a_refile_at_the_hub_moves_the_kits_file(hub: RealHub, tmp_path: Path,
                                                 media: Media) -> None:

    kit = make_kit(tmp_path, "kit-archivo", {"DCIM/IMG_0005.JPG": media["photo5"]})
    paired(kit, hub)
    assert sync_once(kit)[0] == 0
    (sha, before), = kit.items().items()
    refile_at_hub(hub, sha, "Informe anual", "2026-05-20", "informe-anual")
    code, output = sync_once(kit)
    assert code == 0, output
    after = kit.items()[sha]
    assert after["activity"] == "informe-anual", output
    assert after["archive_path"] == "archive/2026/05/2026-05-20_informe-anual/IMG_0005.JPG"
    assert (kit.root / after["archive_path"]).is_file()
    assert not (kit.root / before["archive_path"]).exists()
    assert [a.slug for a in Agenda(kit.data.state).activities()] == ["informe-anual"]
    assert kit.cli("check").returncode == 0


def test_a_worker_on_the_hub_makes_the_derivatives_of_what_kits_send(
        hub: RealHub, tmp_path: Path, media: Media) -> None:
    """Headquarters runs acopio-worker.service beside the hub (systemd/): the derivatives the
    hub queues for each kept file are made there, for its own web UI."""
    kit = make_kit(tmp_path, "kit-fotos", small_card(media, 2))
    paired(kit, hub)
    assert sync_once(kit)[0] == 0
    sent = set(kit.items())
    assert all(not hub.items()[sha].get("derivatives") for sha in sent)
    expected = {"photo": {"thumb", "preview"}, "video": {"poster", "proxy"},
                "audio": {"proxy", "waveform"}}

    def made_all(items: dict[str, dict[str, Any]]) -> bool:
        return all(expected[items[sha]["kind"]] <= set(items[sha].get("derivatives") or {})
                   for sha in sent)

    # the hub queues them in batches, a moment after the files are kept (sync.hub.derivatives)
    deadline = time.monotonic() + 30
    while True:
        result = hub.cli("worker", "--once")
        assert result.returncode == 0, result.stderr.decode()
        items = hub.items()
        if made_all(items) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for item in (items[sha] for sha in sent):
        made = item["derivatives"]
        assert expected[item["kind"]] <= set(made), item
        assert all((hub.root / path).is_file() for path in made.values())


# -- eviction under storage pressure ----------------------------------------------------------


@pytest.mark.slow
def test_eviction_keeps_the_unacknowledged_and_fetch_back_restores(
        hub: RealHub, tmp_path: Path, media: Media) -> None:
    from sync.kit.evict import Evictor, fetch_back, is_evicted

    kit = make_kit(tmp_path, "kit-lleno", small_card(media, 2))
    assert kit.cli("worker", "--once").returncode == 0  # thumbnails and previews
    paired(kit, hub)
    assert sync_once(kit)[0] == 0
    acked = kit.items()
    # Imported after the sync: not acknowledged, so never evicted.
    late = tmp_path / "late"
    late.mkdir()
    os.link(media["photo5"], late / "IMG_0009.JPG")
    kit.ingest(late)
    fresh = set(kit.items()) - set(acked)
    assert len(fresh) == 1
    digests = {sha: sha256_file(kit.root / r["archive_path"]) for sha, r in acked.items()}
    thumbs = sorted(p for p in kit.data.derivatives.rglob("*") if p.is_file())
    assert thumbs

    config = kit.config(ACOPIO_SYNC_EVICT_BELOW_MB=str(10**9))  # always "below"
    evicted = Evictor(config).run(None)
    assert sorted(evicted) == sorted(acked)
    items = kit.items()
    for sha, record in items.items():
        on_disk = (kit.root / record["archive_path"]).exists()
        assert on_disk == (sha in fresh)
        assert is_evicted(kit.data, sha) == (sha not in fresh)
    assert sorted(p for p in kit.data.derivatives.rglob("*") if p.is_file()) == thumbs
    check = kit.cli("check", "--json")
    assert check.returncode == 0, check.stdout.decode()

    # The sync role evicts too, and never what is pending: a round that sends the late one
    # evicts it only after the hub verified it.
    code, output = sync_once(kit, env={"ACOPIO_SYNC_EVICT_BELOW_MB": str(10**9)})
    assert code == 0, output
    assert all(is_evicted(kit.data, sha) for sha in items)
    status = json.loads(kit.cli("sync", "status", "--json").stdout)
    assert status["pending_items"] == 0

    # Fetched back byte for byte, into its archive name; no longer marked evicted.
    sha = next(iter(acked))
    restored = fetch_back(config, sha)
    assert restored == kit.root / acked[sha]["archive_path"]
    assert sha256_file(restored) == digests[sha] == sha
    assert not is_evicted(kit.data, sha)

    # The web UI shows the others "En la central" and brings one back from the item page.
    from tests.webclient import web_app

    other = next(s for s in acked if s != sha)
    # No link at the event: the page says so in Spanish (it was a 500), the API a 503.
    with web_app(kit.root, {"ACOPIO_SYNC_HUB_URL": "http://127.0.0.1:9"}) as web:
        browser = web.user_and_login("sin-red", "photographer")
        refused = browser.form(f"/item/{other}/traer")
        assert refused.status_code == 409
        assert "la central no responde" in refused.get_data(as_text=True)
        api = browser.write("POST", f"/api/items/{other}/fetch")
        assert api.status_code == 503 and api.get_json()["error"] == "fetch"
        assert browser.get(f"/api/items/{other}").get_json()["evicted"] is True
    with web_app(kit.root) as web:
        browser = web.user_and_login("foto", "photographer")
        assert browser.get(f"/api/items/{other}").get_json()["evicted"] is True
        page = browser.get(f"/item/{other}").get_data(as_text=True)
        assert "En la central" in page and "Traer de la central" in page
        back = browser.form(f"/item/{other}/traer")
        assert back.status_code == 302, back.get_data(as_text=True)
        assert sha256_file(kit.root / acked[other]["archive_path"]) == other
        assert browser.get(f"/api/items/{other}").get_json()["evicted"] is False
        assert "En la central" not in browser.get(f"/item/{other}").get_data(as_text=True)
    # Both back; the one fetched two days ago goes first, the one fetched now last, even
    # when it is the older capture (before, the oldest capture always went first).
    from sync.kit.store import SyncStore

    by_capture = [r["sha256"] for r in Evictor(config).candidates()]
    assert sorted(by_capture) == sorted([sha, other])
    older, newer = sorted(by_capture, key=lambda s: kit.items()[s]["captured_at"])
    SyncStore(kit.data).fetched.put(newer, {"at": time.time() - 2 * 24 * 3600})
    assert [r["sha256"] for r in Evictor(config).candidates()] == [newer, older]
    assert not list(kit.data.staging.iterdir())
    assert kit.cli("check", "--deep").returncode == 0


# -- the outbox, in process -------------------------------------------------------------------


def test_outbox_pending_follows_revisions_and_acknowledgements(
        tmp_path: Path, media: Media) -> None:
    kit = make_kit(tmp_path, "kit-uno", small_card(media, 2))
    store = SyncStore(kit.data)
    outbox = Outbox(kit.data, store)
    pending = outbox.scan()
    assert pending.items == 4 and len(pending.records) == 4 and len(pending.originals) == 4
    assert pending.bytes == sum(r["size"] for r in kit.items().values())
    store.ack_records(pending.records)
    for original in pending.originals:
        store.ack_object(original.sha256, original.size)
    assert outbox.scan().empty
    sha = pending.records[0]["sha256"]
    edited = Editor(kit.data, node=kit.name).edit(sha, {"rating": 4}, by="ana")
    again = outbox.scan()
    assert [r["sha256"] for r in again.records] == [sha] and not again.originals
    assert record_digest(edited) == record_digest(again.records[0])
    assert Outbox(kit.data, store).scan().items == 1  # a fresh outbox agrees (no cache)


def test_acknowledgements_are_made_durable_in_batches_and_before_any_eviction(
        tmp_path: Path, media: Media, monkeypatch: pytest.MonkeyPatch) -> None:
    """One syncfs per `ACK_BATCH` acknowledgements (or `ACK_WINDOW_S`) instead of two fsyncs
    each (an SD card's fsync costs tens of ms); what is left is synced when asked, and an
    eviction syncs first, so no original goes on an acknowledgement a power cut could undo."""
    from sync.kit import store as store_mod
    from sync.kit.evict import Evictor

    kit = make_kit(tmp_path, "kit-lotes", small_card(media, 2))
    events: list[str] = []
    real_syncfs = store_mod.syncfs

    def syncfs(path: Any) -> None:
        events.append("syncfs")
        real_syncfs(path)

    monkeypatch.setattr(store_mod, "syncfs", syncfs)
    store = SyncStore(kit.data)
    fake = [f"{n:064x}" for n in range(store_mod.ACK_BATCH * 2 + 3)]
    for sha in fake:
        store.ack_object(sha, 1)
    assert events == ["syncfs", "syncfs"]  # after 64 and after 128
    assert all(store.object_acked(sha) for sha in fake)  # readable before they are durable
    store.sync_acks()
    store.sync_acks()  # nothing new: no syncfs
    assert events == ["syncfs"] * 3
    # a slow link: an acknowledgement that comes long after the first one not yet durable
    # makes them durable without waiting for the batch to fill
    monkeypatch.setattr(store_mod, "ACK_WINDOW_S", 0.2)
    store.ack_object(f"{1:064x}", 1)
    time.sleep(0.3)
    assert events == ["syncfs"] * 3
    store.ack_object(f"{2:064x}", 1)
    assert events == ["syncfs"] * 4

    # the kit's real items acknowledged, not yet durable; an eviction syncs before it marks
    # or removes anything, whoever wrote them (here another store object)
    evicting = SyncStore(kit.data)
    real_put = evicting.evicted.put
    monkeypatch.setattr(evicting.evicted, "put",
                        lambda *a, **k: (events.append("evicted"), real_put(*a, **k)))
    events.clear()
    items = kit.items()
    for sha, record in items.items():
        store.ack_object(sha, record["size"])
    config = kit.config(ACOPIO_SYNC_EVICT_BELOW_MB=str(10**9))  # always "below"
    evicted = Evictor(config, kit.data, evicting).run(None)
    assert sorted(evicted) == sorted(items)
    assert events == ["syncfs"] + ["evicted"] * len(items)


# -- HTTPS, with the hub's CA from sync.ca_file -----------------------------------------------


def make_ca_and_cert(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signs for 127.0.0.1 (openssl): (ca, cert, key)."""
    openssl = require_tool("openssl")
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.pem", "hub.key",
                                                        "hub.csr", "hub.pem"))

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "2", "-subj",
        "/CN=Acopio test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key


@pytest.mark.slow
def test_https_hub_verified_with_the_configured_ca(hub: RealHub, tmp_path: Path,
                                                   media: Media) -> None:
    ca, cert, key = make_ca_and_cert(tmp_path / "tls")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    proxy = Proxy(hub.port, tls=context)
    assert proxy.url.startswith("https://")
    kit = make_kit(tmp_path, "kit-tls", {"DCIM/IMG_0003.JPG": media["photo3"]})

    # Without the CA the hub's certificate is not trusted: pairing fails, and says why.
    result = kit.cli("sync", "pair", proxy.url, hub.pair_code())
    assert result.returncode == 1
    assert "certificate verify failed" in result.stderr.decode()
    assert "sync.ca_file" in result.stderr.decode()
    assert credentials.load(kit.data) is None

    kit.env["ACOPIO_SYNC_CA_FILE"] = str(ca)
    paired(kit, hub, proxy.url)
    code, output = sync_once(kit)
    assert code == 0, output
    (sha,) = kit.items()
    assert hub.items()[sha]["kits"] == [kit.name]
    assert proxy.upstream > kit.items()[sha]["size"]  # the upload went over TLS

    # A CA that did not sign the hub's certificate: refused at once, no retries.
    other, _, _ = make_ca_and_cert(tmp_path / "other")
    code, output = sync_once(kit, env={"ACOPIO_SYNC_CA_FILE": str(other)})
    assert code == 1 and "certificate verify failed" in output
    assert "attempt 1 failed" not in output
    proxy.close()


# -- a hub found on the LAN with zeroconf (in a network namespace of the test's own) ----------


@pytest.mark.root
@pytest.mark.slow
def test_a_hub_that_moved_is_found_with_zeroconf(netns: Namespace, tmp_path: Path,
                                                 media: Media) -> None:
    zeroconf = {"ACOPIO_WEB_ZEROCONF": "true", "ACOPIO_WEB_ZEROCONF_INTERFACES": "127.0.0.1"}
    hub_root = tmp_path / "hub"

    def start_hub(port: int, log: Path) -> subprocess.Popen:
        with open(log, "wb") as out:
            child = netns.python(
                "-m", "appliance", "--data-dir", hub_root, "hub", "--host", "127.0.0.1",
                "--port", str(port), stdout=out, stderr=subprocess.STDOUT,
                env=_env({**zeroconf, "ACOPIO_HUB_ZEROCONF": "true",
                          "ACOPIO_KIT_NAME": "central", "PYTHONUNBUFFERED": "1"}))
        deadline = time.monotonic() + 20
        while f"hub on http://127.0.0.1:{port}/" not in log.read_text(errors="replace"):
            assert child.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        return child

    def kit_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
        return netns.run(sys.executable, "-m", "appliance", "--data-dir", kit.root, *args,
                         check=False, timeout=60, cwd=REPO, env=_env({**kit.env, **env}))

    kit = make_kit(tmp_path, "kit-oficina", {"DCIM/IMG_0004.JPG": media["photo4"]})
    first = start_hub(8090, tmp_path / "hub1.log")
    code = run_cli("--data-dir", hub_root, "hub", "pair").stdout.decode().split()[-1]
    result = kit_cli("sync", "pair", "http://127.0.0.1:8090", code)
    assert result.returncode == 0, result.stderr
    first.terminate()
    first.wait(timeout=10)

    # The office network gave the hub another address (here: port); sync.hub_url is empty.
    second = start_hub(8091, tmp_path / "hub2.log")
    # With zeroconf off on the kit it does not look for it: offline, says so.
    result = kit_cli("sync", "--once", ACOPIO_SYNC_RETRY_MAX_S="0.2")
    assert result.returncode == 1 and "127.0.0.1:8090 unreachable" in result.stderr
    result = kit_cli("sync", "--once", **zeroconf)
    assert result.returncode == 0, result.stderr
    assert "using http://127.0.0.1:8091 found by zeroconf" in result.stderr
    (sha,) = kit.items()
    assert SyncStore(kit.data).object_acked(sha)
    second.terminate()
    second.wait(timeout=10)


# -- status file, pause rule, merge defaults, in process --------------------------------------


def test_a_kit_id_left_readable_by_an_older_kit_is_made_private(tmp_path: Path) -> None:
    data = DataDir.at(tmp_path / "data")
    data.ensure()
    made = credentials.kit_id(data)
    path = sync_dir(data) / "kit_id"
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)  # as kits wrote it before
    assert credentials.kit_id(data) == made
    assert path.stat().st_mode & 0o777 == 0o600


def test_status_is_written_at_most_once_a_second(tmp_path: Path) -> None:
    from sync.kit.status import StatusWriter, empty, read

    data = DataDir.at(tmp_path / "data")
    data.ensure()
    credentials.save(data, credentials.Credentials("http://hub:8090", "kit", "t" * 43))
    now = [0.0]
    writer = StatusWriter(data, hub="http://hub:8090", clock=lambda: now[0])
    path = SyncStore(data).status_path
    writes = []
    for i in range(50):  # progress of an upload, 50 times in half a second
        now[0] += 0.01
        writer.update(state="sending", current={"sha256": "a" * 64, "name": "x", "offset": i,
                                                "size": 50, "rate_bps": 1})
        if path.exists() and (not writes or writes[-1] != path.stat().st_mtime_ns):
            writes.append(path.stat().st_mtime_ns)
            time.sleep(0.002)  # distinct mtimes
    assert len(writes) == 1 and read(data)["current"]["offset"] == 0
    now[0] += 1.0
    writer.update(pending_items=3)
    assert read(data)["current"]["offset"] == 49 and read(data)["pending_items"] == 3
    writer.error("hub unreachable", state="offline")  # state changes are written at once
    report = read(data)
    assert report["state"] == "offline" and report["last_error"]["message"] == "hub unreachable"
    assert path.stat().st_mode & 0o777 == 0o644
    credentials.path_of(data).unlink()
    assert read(data) == empty() | {"running": False}  # every field, in every state
    assert read(data)["state"] == "not_configured"


def test_a_pairing_that_cannot_be_read_is_an_error_not_the_roles_end(tmp_path: Path) -> None:
    """A credentials file the role cannot read (its owner, a failing disk; here a folder in
    its place, which root cannot read either) is reported and retried: a role that raised
    would stop the whole service, web UI included, for systemd to restart in a loop."""
    import threading

    from sync.kit.role import SyncRole
    from sync.kit.status import read

    data = DataDir.at(tmp_path / "data")
    data.ensure()
    credentials.path_of(data).mkdir(parents=True)
    config = config_mod.load(None, environ={**TEST_ENV, "ACOPIO_SYNC_RETRY_MAX_S": "0.2"},
                             data_dir=data.root)
    role = SyncRole(config)
    stop = threading.Event()
    thread = threading.Thread(target=role.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while (role.status is None or role.status.status["state"] != "error") \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a few retries
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    status = role.status.status
    assert status["state"] == "error"
    assert "cannot read the pairing" in status["last_error"]["message"]
    assert read(data)["state"] == "error"  # what the web UI shows
    code, output = SyncRole(config).run_once()
    assert code == 1 and "cannot read the pairing" in output


def test_the_rate_shown_is_every_lane_together() -> None:
    from sync.kit.status import LinkMeter

    now = [0.0]
    meter = LinkMeter(window_s=3.0, clock=lambda: now[0])
    assert meter.add("a", 0) == 0
    assert meter.add("b", 4_000_000) == 0  # resumed there: those bytes went before
    for _ in range(10):  # one second, both lanes sending 1 MB/s
        now[0] += 0.1
        meter.add("a", meter._offsets["a"] + 100_000)
        rate = meter.add("b", meter._offsets["b"] + 100_000)
    assert rate == 2_000_000
    meter.done("a")
    now[0] += 0.1
    # a new upload of "a" starts its own count: its first offset adds nothing
    assert meter.add("a", 50_000) == int(2_000_000 / 1.1)


def test_a_stale_import_does_not_hold_uploads_forever(tmp_path: Path) -> None:
    from ingest.devices.state import Device, DeviceStates
    from sync.kit.role import STALE_IMPORT_S, import_running

    data = DataDir.at(tmp_path / "data")
    data.ensure()
    states = DeviceStates(data.state)
    assert import_running(data) is None
    states.put(Device(id="sdb1", kind="card", status="mounting", name="EOS_DIGITAL"))
    assert import_running(data) == "EOS_DIGITAL"
    states.update("sdb1", status="safe_to_remove")
    assert import_running(data) is None
    states.put(Device(id="usb-1-4", kind="camera", status="importing"))
    assert import_running(data) == "usb-1-4"
    # A watcher killed mid-import leaves "importing" behind: after a while it stops counting.
    assert import_running(data, now=time.time() + STALE_IMPORT_S + 60) is None


def test_a_merge_group_the_hub_leaves_out_is_no_news(tmp_path: Path, media: Media) -> None:
    from sync.hlc import Clock
    from sync.kit.pull import complete, current_records
    from sync.merge import merge_into_catalog

    kit = make_kit(tmp_path, "kit-dos", {"DCIM/IMG_0001.JPG": media["photo1"]})
    (sha, local), = kit.items().items()
    remote = {k: v for k, v in local.items() if k not in ("folder", "activity")}
    remote["caption"] = "De la central"
    remote["edited"] = {"caption": {"by": "editor", "at": "2026-05-20T10:00:00+00:00",
                                    "hlc": "1790000000000-0000-hub"}}
    merged = complete(remote, current_records(Catalog(kit.data), [sha])[sha])
    merge_into_catalog(Catalog(kit.data), [merged],
                       clock=Clock(kit.data.state, "kit-dos", wall=lambda: 1790000000.0))
    now = kit.items()[sha]
    assert now["caption"] == "De la central"
    assert (now["folder"], now["activity"]) == (local["folder"], local["activity"])


def test_status_of_a_kit_not_paired_yet_counts_what_it_will_send(tmp_path: Path) -> None:
    """`sync status --json` has the same fields in every state: a script that reads
    `running` or `pending_items` works before the pairing too."""
    card = tmp_path / "card"
    exif_jpeg(card / "a.jpg", "2026:06:02 18:00:00", color=(1, 1, 1))
    data = tmp_path / "data"
    assert run_cli("--data-dir", data, "ingest", card).returncode == 0
    report = json.loads(run_cli("--data-dir", data, "sync", "status", "--json").stdout)
    assert report["state"] == "not_configured" and report["running"] is False
    assert report["pending_items"] == 1 and report["pending_originals"] == 1
    assert report["pending_bytes"] == (card / "a.jpg").stat().st_size
    shown = run_cli("--data-dir", data, "sync", "status").stdout.decode()
    assert "not paired" in shown and "pending: 1 items" in shown


def test_pairing_with_a_url_that_is_not_a_hub_says_so(tmp_path: Path) -> None:
    """The easy mistake: the kit's own web UI's port instead of the hub's. Its 401 must not
    read as "the hub refused the pairing code" (the operator would make codes forever)."""
    import threading

    from werkzeug.serving import make_server

    from tests.webclient import WebApp

    web = WebApp.build(tmp_path / "web")
    server = make_server("127.0.0.1", 0, web.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        paired = run_cli("--data-dir", tmp_path / "kit", "sync", "pair", url, "ABCD-EFGH")
    finally:
        server.shutdown()
        thread.join()
    assert paired.returncode != 0
    assert b"is not an Acopio hub" in paired.stderr and b"hub.port" in paired.stderr
    assert b"refused the pairing code" not in paired.stderr


def test_a_record_the_hub_refuses_does_not_stop_the_rest(hub: RealHub, tmp_path: Path,
                                                         media: Media) -> None:
    """A kit whose clock once ran days ahead stamps its edits in the future, and the hub
    refuses those records. The kit read the answer's count ("refused": 1) as a list, and
    every round then failed: no other record, no original, nothing from the hub moved."""
    from appliance.fsutil import atomic_write

    kit = make_kit(tmp_path, "kit-adelantado", small_card(media, 2))
    paired(kit, hub)
    assert sync_once(kit)[0] == 0
    first = next(iter(kit.items()))
    ahead = int(time.time() * 1000) + 3 * 24 * 3600 * 1000
    for name, state in (("hlc.json", {"wall": ahead, "counter": 0}), ("hlc.floor",
                                                                         {"floor": ahead})):
        atomic_write(kit.data.state / "sync" / name, json.dumps(state).encode())
    Editor(kit.data, node=kit.name).edit(first, {"caption": "Del futuro"}, by="ana")
    card = tmp_path / "more"
    exif_jpeg(card / "NUEVA.JPG", "2026:06:02 18:00:00", color=(7, 7, 7))
    kit.ingest(card)
    new = next(sha for sha, r in kit.items().items() if r["original_name"] == "NUEVA.JPG")

    code, output = sync_once(kit)
    assert code != 0, output  # --once exits 0 only when the hub took everything
    assert "TypeError" not in output
    assert f"the hub refused the record of {first}" in output
    assert new in hub.items() and f"acknowledged {new}" in output
    assert hub.items()[first].get("caption") != "Del futuro"


def test_a_copy_damaged_on_the_kit_is_set_aside_not_sent_forever(hub: RealHub, tmp_path: Path,
                                                                 media: Media) -> None:
    """One byte of an archived original flipped on the kit's disk (same size): the hub
    refuses the upload (not the SHA-256 announced). The kit sent the whole file again every
    round, forever; now it finds its own copy damaged, sets it aside, says how to mend it,
    and the card's next import does."""
    own = exif_jpeg(tmp_path / "own" / "DANADA.JPG", "2026:06:02 18:00:00", color=(9, 8, 7))
    # content of its own: the module's hub holds the shared sample photos from other kits
    kit = make_kit(tmp_path, "kit-danado", {"DCIM/DANADA.JPG": own})
    paired(kit, hub)
    sha, record = next(iter(kit.items().items()))
    original = kit.root / record["archive_path"]
    data = bytearray(original.read_bytes())
    data[len(data) // 2] ^= 0xFF
    original.write_bytes(bytes(data))

    code, output = sync_once(kit)
    assert code != 0 and "this kit's copy is damaged and was set aside" in output
    assert sha not in hub.items() and not original.exists()
    [aside] = (kit.data.state / "damaged").iterdir()
    assert aside.read_bytes() == bytes(data)
    code, output = sync_once(kit)
    assert code != 0 and not log_lines(output, "uploading")  # not sent again
    assert "import the card it came from again" in output

    kit.ingest(tmp_path / "kit-danado-card")  # the card it came from
    assert sha256_file(original) == sha
    code, output = sync_once(kit)
    assert code == 0, output
    assert hub.items()[sha]["size"] == record["size"]


def test_an_activity_added_on_a_kit_reaches_headquarters(hub: RealHub, tmp_path: Path,
                                                         media: Media) -> None:
    """The kit sent only its records: an activity added at the event (and the items filed
    into it) showed at headquarters as a bare slug, and its report counted it unplanned."""
    kit = make_kit(tmp_path, "kit-evento", small_card(media, 1))
    paired(kit, hub)
    added = kit.cli("agenda", "add", "Rueda de prensa del evento", "--start",
                    "2026-06-02T09:00", "--end", "2026-06-02T20:00", "--area", "Prensa")
    assert added.returncode == 0, added.stderr.decode()
    slug = added.stdout.decode().strip()
    code, output = sync_once(kit)
    assert code == 0, output
    assert "the hub took agenda changes of " + slug in output
    at_hq = Agenda(hub.data.state).get(slug)
    assert at_hq is not None and at_hq.title == "Rueda de prensa del evento"
    assert at_hq.area == "Prensa"
    code, output = sync_once(kit)  # unchanged since: not sent again
    assert code == 0 and "agenda" not in output, output
    removed = kit.cli("agenda", "remove", slug)
    assert removed.returncode == 0
    assert sync_once(kit)[0] == 0
    assert Agenda(hub.data.state).get(slug) is None  # the removal goes up too


def test_a_refile_at_the_hub_of_an_evicted_original_follows_when_it_comes_back(
        hub: RealHub, tmp_path: Path, media: Media) -> None:
    """Headquarters re-files an item whose original the kit evicted: the kit cannot move a
    file it does not have. Fetched back, the original landed in the old folder while the
    record named the new one, for good (and `refile --unsorted` said "already there")."""
    from sync.kit.evict import Evictor, fetch_back

    kit = make_kit(tmp_path, "kit-mudanza", {"DCIM/IMG_0005.JPG": media["photo5"]})
    paired(kit, hub)
    assert sync_once(kit)[0] == 0
    (sha, before), = kit.items().items()
    config = kit.config(ACOPIO_SYNC_EVICT_BELOW_MB=str(10**9))
    assert Evictor(config).run(None) == [sha]
    refile_at_hub(hub, sha, "Informe de gobierno", "2026-05-21", "informe-de-gobierno")
    code, output = sync_once(kit)
    assert code == 0, output
    assert kit.items()[sha]["activity"] == "informe-de-gobierno"  # the record follows...
    assert kit.items()[sha]["archive_path"] == before["archive_path"]  # ...the file cannot
    assert "moves when it is fetched back" in output and "acopio check" not in output

    restored = fetch_back(config, sha)
    moved = "archive/2026/05/2026-05-21_informe-de-gobierno/IMG_0005.JPG"
    assert restored == kit.root / moved and sha256_file(restored) == sha
    after = kit.items()[sha]
    assert after["archive_path"] == moved and after["folder"] == moved[8:].rsplit("/", 1)[0]
    assert not (kit.root / before["archive_path"]).exists()
    assert kit.cli("check", "--deep").returncode == 0


def test_an_originals_name_cannot_forge_log_lines() -> None:
    """A card's file named with a newline made the sync role's "uploading"/"acknowledged"
    lines split in the journal, the second half reading like a line of its own."""
    from sync.kit.outbox import Original

    hostile = Original(sha256="a" * 64, size=1, name="IMG\nacopio: forged\r\udcff.jpg",
                       kind="photo", archive_path="archive/x", tier=0)
    assert hostile.shown == "IMG\\nacopio: forged\\r\\xff.jpg"
    assert Original(sha256="a" * 64, size=1, name="Año nuevo.jpg", kind="photo",
                    archive_path="archive/x", tier=0).shown == "Año nuevo.jpg"


def test_a_damaged_sync_cache_is_set_aside_and_the_work_done_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A damaged state/sync/cursor.json or agenda-sent.json (files that only save work) made
    every sync round fail with "see the log"; now each is moved aside and forgotten."""
    from appliance.datadir import DataDir
    from sync.kit.store import SyncStore

    data = DataDir.at(tmp_path / "data")
    data.ensure()
    store = SyncStore(data)
    store.set_cursor("abc-12")
    store.set_agenda_sent("d1")
    assert store.cursor() == "abc-12" and store.agenda_sent() == "d1"
    store.cursor_path.write_bytes(b'{"since": "ab')
    store.agenda_sent_path.write_bytes(b"\0\0\0")
    with caplog.at_level("WARNING"):
        assert store.cursor() == "" and store.agenda_sent() == ""
    assert "read again from the start" in caplog.text and "agenda is sent again" in caplog.text
    assert len(list(store.root.glob("*.damaged-*"))) == 2
    store.set_cursor("abc-13")
    assert store.cursor() == "abc-13"


def test_a_pairing_is_noticed_within_seconds(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """An unpaired role looked for its pairing every sync.poll_s (30 s), so the status said
    "not paired" that long after `acopio sync pair`; and it said nothing in the log."""
    import threading

    from sync.kit.role import SyncRole
    from tests.webclient import free_port

    data = DataDir.at(tmp_path / "data")
    data.ensure()
    config = config_mod.load(None, environ={**TEST_ENV, "ACOPIO_SYNC_POLL_S": "30",
                                            "ACOPIO_SYNC_RETRY_MAX_S": "60"},
                             data_dir=data.root)
    role = SyncRole(config)
    stop = threading.Event()
    with caplog.at_level("INFO"):
        thread = threading.Thread(target=role.run, args=(stop,))
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while role.status is None or role.status.status.get("state") != "not_configured":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            credentials.save(data, credentials.Credentials(
                hub_url=f"http://127.0.0.1:{free_port()}", kit="acopio", token="x" * 43))
            paired_at = time.monotonic()
            while role.status.status.get("state") == "not_configured":
                assert time.monotonic() - paired_at < 5, "the pairing went unnoticed"
                time.sleep(0.05)
        finally:
            stop.set()
            thread.join(timeout=10)
    assert "not paired with a hub: waiting for `acopio sync pair URL CODE`" in caplog.text


@pytest.mark.slow
def test_what_the_hub_lost_after_acknowledging_it_is_sent_again(
        hub: RealHub, tmp_path: Path, media: Media) -> None:
    """Bit rot at headquarters found by `acopio check --deep` was reported and left in
    place, and the kits, which had the acknowledgement, never sent the original again. Now
    `--repair` sets it aside at the hub, the kit's next round asks the hub which of its
    acknowledged originals it still holds and sends what it lost, record and caption too;
    a kit that evicted its own copy says plainly it cannot."""
    kit = make_kit(tmp_path, "kit-respaldo", {"DCIM/IMG_0001.JPG": media["photo1"],
                                              "DCIM/IMG_0002.JPG": media["photo2"]})
    paired(kit, hub)
    items = kit.items()
    kept, evicted = sorted(items)
    Editor(kit.data, node=kit.name).edit(kept, {"caption": "Informe en el Cabildo"}, by="ana")
    assert sync_once(kit)[0] == 0
    at_hub = hub.items()
    for sha in (kept, evicted):  # bit rot in the hub's archive, the size unchanged
        path = hub.root / at_hub[sha]["archive_path"]
        spoilt = bytearray(path.read_bytes())
        spoilt[len(spoilt) // 2] ^= 0xFF
        path.write_bytes(bytes(spoilt))
    from sync.kit.evict import Evictor

    config = kit.config(ACOPIO_SYNC_EVICT_BELOW_MB=str(10**9))
    assert Evictor(config).evict(items[evicted])  # this kit's own copy of one is gone

    found = hub.cli("check", "--deep", "--json")
    assert found.returncode == 1
    assert {f["code"] for f in json.loads(found.stdout)["findings"]} == {"hash_mismatch"}
    repaired = hub.cli("check", "--deep", "--repair", "--json")
    assert "set aside in state/hub/corrupt/" in repaired.stdout.decode()
    assert len(list((hub.root / "state/hub/corrupt").iterdir())) == 2
    assert kept not in hub.items()

    code, output = sync_once(kit)  # within sync.audit_hours of the last pass: not asked
    assert code == 0 and "no longer holds" not in output, output
    code, output = sync_once(kit, env={"ACOPIO_SYNC_AUDIT_HOURS": "0"})
    assert f"the hub no longer holds {kept}, which it had acknowledged: sending it" in output
    assert f"the hub no longer holds {evicted}" in output and "evicted its own copy" in output
    assert log_lines(output, f"acknowledged {kept}"), output
    assert code == 1, output  # the evicted one is gone at both ends: not "everything"
    back = hub.items()[kept]
    assert back["caption"] == "Informe en el Cabildo" and kit.name in back["kits"]
    assert sha256_file(hub.root / back["archive_path"]) == kept
    assert hub.cli("check", "--deep").returncode == 0
