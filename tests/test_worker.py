"""Derivatives end to end: ingest queues jobs, real workers (separate processes) make them
with real Pillow and ffmpeg, and survive kill -9 and a hanging ffmpeg."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from appliance.fsutil import TEMP_PREFIX
from tests.cards import exif_jpeg, ffmpeg_audio, ffmpeg_video, sample
from tests.conftest import REPO, require_tool, run_cli

pytestmark = pytest.mark.slow


def jobs(data: Path, env: dict[str, str] | None = None) -> dict:
    result = run_cli("--data-dir", data, "jobs", "--json", env=env)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def items(data: Path) -> dict[str, dict]:
    listed = json.loads(run_cli("--data-dir", data, "items", "--json").stdout)
    return {i["original_name"]: i for i in listed}


def ffprobe(path: Path) -> dict:
    out = subprocess.run([require_tool("ffprobe"), "-v", "error", "-print_format", "json",
                          "-show_streams", "-show_format", str(path)],
                         capture_output=True, check=True, timeout=60).stdout
    return json.loads(out)


def start_worker(data: Path, stderr: int, **env: str) -> subprocess.Popen[bytes]:
    """`acopio worker` on `data` in a session of its own, polling every 0.2 s."""
    full_env = {**{k: v for k, v in os.environ.items() if not k.startswith("ACOPIO_")},
                "ACOPIO_WORKER_POLL_S": "0.2", **env}
    return subprocess.Popen([sys.executable, "-m", "appliance", "--data-dir", str(data),
                             "worker"], cwd=REPO, env=full_env, stdout=subprocess.DEVNULL,
                            stderr=stderr, start_new_session=True)


def test_ingest_queues_and_a_worker_makes_every_derivative(tmp_path: Path) -> None:
    card = tmp_path / "card"
    exif_jpeg(card / "DCIM/a.jpg", "2026:05:10 10:00:00", size=(2000, 1500))
    sample("hopper_orientation_3.jpg", card / "DCIM/rotada.jpg")
    broken = (tmp_path / "b.jpg")
    exif_jpeg(broken, "2026:05:10 10:05:00", size=(800, 600), color=(1, 2, 3))
    (card / "DCIM/cortada.jpg").write_bytes(broken.read_bytes()[:2000])
    ffmpeg_video(card / "DCIM/clip.mp4", seconds=2, size="640x360")
    ffmpeg_audio(card / "AUDIO/nota.wav", seconds=2)
    data = tmp_path / "data"
    assert run_cli("--data-dir", data, "ingest", card).returncode == 0
    queued = jobs(data)["counts"]
    assert queued["thumb"]["queued"] == 3 and queued["video_proxy"]["queued"] == 1
    first = jobs(data)["jobs"][0]
    assert first["kind"] == "thumb"  # thumbnails come first
    worked = run_cli("--data-dir", data, "worker", "--once", timeout=300)
    assert worked.returncode == 0, worked.stderr.decode()
    counts = jobs(data)["counts"]
    assert all(c["queued"] == c["running"] == c["parked"] == 0 for c in counts.values())
    by_name = items(data)
    assert set(by_name["a.jpg"]["derivatives"]) == {"thumb", "preview"}
    thumb = Image.open(data / by_name["a.jpg"]["derivatives"]["thumb"])
    assert max(thumb.size) == 320 and thumb.format == "JPEG" and not thumb.getexif()
    assert max(Image.open(data / by_name["a.jpg"]["derivatives"]["preview"]).size) == 1600
    assert [p["code"] for p in by_name["cortada.jpg"]["problems"]] == ["damaged"]
    assert set(by_name["clip.mp4"]["derivatives"]) == {"poster", "proxy"}
    proxy = data / by_name["clip.mp4"]["derivatives"]["proxy"]
    streams = {s["codec_type"]: s["codec_name"] for s in ffprobe(proxy)["streams"]}
    assert streams == {"video": "h264", "audio": "aac"}
    head = proxy.read_bytes()[:4096]
    assert head.find(b"moov") < head.find(b"mdat") or b"mdat" not in head  # faststart
    assert set(by_name["nota.wav"]["derivatives"]) == {"proxy", "waveform"}
    assert by_name["nota.wav"]["derivatives"]["proxy"].endswith(".m4a")
    # The tree is regenerable: delete it, rebuild, work again.
    subprocess.run(["rm", "-rf", str(data / "derivatives")], check=True)
    assert b"jobs queued" in run_cli("--data-dir", data, "derive", "--rebuild").stdout
    assert run_cli("--data-dir", data, "worker", "--once", timeout=300).returncode == 0
    assert set(items(data)["clip.mp4"]["derivatives"]) == {"poster", "proxy"}


def test_worker_killed_mid_transcode_then_the_job_runs_again(tmp_path: Path) -> None:
    card = tmp_path / "card"
    ffmpeg_video(card / "largo.mp4", seconds=40, size="1280x720")
    data = tmp_path / "data"
    assert run_cli("--data-dir", data, "ingest", card).returncode == 0
    worker = start_worker(data, subprocess.DEVNULL, ACOPIO_WORKER_LEASE_S="3")
    try:
        deadline = time.monotonic() + 120
        while True:
            running = [j for j in jobs(data)["jobs"]
                       if j["kind"] == "video_proxy" and (j["progress"] or 0) > 5]
            if running:
                break
            assert worker.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
    proxy = next((data / "derivatives").rglob("proxy.mp4"), None)
    assert proxy is None, "a half-written proxy under its final name"
    time.sleep(1)  # ffmpeg dies with its worker (pdeathsig)
    listed = items(data)["largo.mp4"]
    assert "proxy" not in listed["derivatives"]
    time.sleep(3)  # the lease expires
    again = run_cli("--data-dir", data, "worker", "--once", env={"ACOPIO_WORKER_LEASE_S": "3"},
                    timeout=300)
    assert again.returncode == 0, again.stderr.decode()
    listed = items(data)["largo.mp4"]
    proxy = data / listed["derivatives"]["proxy"]
    assert float(ffprobe(proxy)["format"]["duration"]) == pytest.approx(40, abs=1)
    assert not list((data / "derivatives").rglob(TEMP_PREFIX + "*"))
    assert jobs(data)["counts"]["video_proxy"]["done"] == 1


def test_a_stopped_worker_ends_its_transcode_and_gives_the_job_back(tmp_path: Path) -> None:
    """SIGTERM mid-transcode took as long as the transcode had left (29 s for a 90 s clip),
    past a unit's stop timeout on a Pi. Now ffmpeg is ended at its next progress report and
    the job is queued again, its attempts untouched, for the next start."""
    card = tmp_path / "card"
    ffmpeg_video(card / "largo.mp4", seconds=90, size="1280x720")
    data = tmp_path / "data"
    assert run_cli("--data-dir", data, "ingest", card).returncode == 0
    worker = start_worker(data, subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            [proxy_job] = [j for j in jobs(data)["jobs"] if j["kind"] == "video_proxy"]
            assert proxy_job["state"] in ("queued", "running"), proxy_job  # not done yet
            if (proxy_job["progress"] or 0) > 2:
                break
            assert worker.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        stopped_at = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
        took = time.monotonic() - stopped_at
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    assert worker.returncode == 0, stderr.decode()
    assert took < 5, f"the worker took {took:.1f} s to stop"
    assert b"given back: the worker is stopping" in stderr
    [proxy_job] = [j for j in jobs(data)["jobs"] if j["kind"] == "video_proxy"]
    assert proxy_job["state"] == "queued" and proxy_job["attempts"] == 0, proxy_job
    assert not list((data / "derivatives").rglob("proxy.mp4"))
    assert not list((data / "derivatives").rglob(TEMP_PREFIX + "*"))
    assert subprocess.run(["pgrep", "-f", str(data)], capture_output=True).returncode == 1
    again = run_cli("--data-dir", data, "worker", "--once", timeout=300)
    assert again.returncode == 0, again.stderr.decode()
    assert "proxy" in items(data)["largo.mp4"]["derivatives"]


def test_a_hanging_ffmpeg_is_ended_retried_then_parked(tmp_path: Path) -> None:
    card = tmp_path / "card"
    ffmpeg_audio(card / "nota.wav", seconds=1)
    data = tmp_path / "data"
    assert run_cli("--data-dir", data, "ingest", card).returncode == 0
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ffmpeg").write_text("#!/bin/sh\nsleep 60\n")
    (fake / "ffmpeg").chmod(0o755)
    env = {"PATH": f"{fake}:{os.environ['PATH']}", "ACOPIO_WORKER_TIMEOUT_S": "1",
           "ACOPIO_WORKER_TIMEOUT_PER_MEDIA_S": "0"}
    started = time.monotonic()
    deadline = started + 60
    while True:
        run_cli("--data-dir", data, "worker", "--once", env=env, timeout=60)
        state = jobs(data)
        parked = [j for j in state["jobs"] if j["state"] == "parked"]
        if len(parked) == 2:  # the audio proxy and the waveform
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    assert all("timed out" in j["error"] and j["attempts"] == 3 for j in parked)
    assert not list((data / "derivatives").rglob("*.m4a"))
    # given up on: the item says so (one entry per code), not "on its way" for good
    [flag] = items(data)["nota.wav"]["problems"]
    assert flag["code"] == "no_preview" and "timed out" in flag["detail"], flag
    retried = run_cli("--data-dir", data, "jobs", "--retry")
    assert b"2 jobs back" in retried.stdout
    assert run_cli("--data-dir", data, "worker", "--once", timeout=120).returncode == 0
    assert set(items(data)["nota.wav"]["derivatives"]) == {"proxy", "waveform"}
    assert items(data)["nota.wav"]["problems"] == []  # made after all: the flag is gone


def test_broken_videos_end_parked_with_their_reason(tmp_path: Path) -> None:
    card = tmp_path / "card"
    whole = ffmpeg_video(tmp_path / "whole.mp4", seconds=2)
    card.mkdir()
    (card / "cortado.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    (card / "vacio.mp4").write_bytes(b"")
    data = tmp_path / "data"
    assert run_cli("--data-dir", data, "ingest", card).returncode == 0
    deadline = time.monotonic() + 90
    while True:
        run_cli("--data-dir", data, "worker", "--once", timeout=120)
        state = jobs(data)
        parked = {(j["kind"], j["item"]): j for j in state["jobs"] if j["state"] == "parked"}
        if len(parked) == 4:  # poster and proxy of each
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    by_name = items(data)
    for name in ("cortado.mp4", "vacio.mp4"):
        item = by_name[name]
        assert item["derivatives"] == {}
        for kind in ("poster", "video_proxy"):
            assert parked[(kind, item["sha256"])]["error"].startswith("FFmpegError")
        assert "no_preview" in {p["code"] for p in item["problems"]}, item["problems"]
    # The web UI says so, in Spanish: on the item, and on the status page and strip.
    from tests.webclient import web_app

    with web_app(data) as web:
        client = web.user_and_login("direccion")
        page = client.get(f"/item/{by_name['cortado.mp4']['sha256']}").get_data(as_text=True)
        assert "No se pudo preparar la vista previa de este archivo" in page
        assert "Vista previa en preparación" not in page
        status = client.get("/estado").get_data(as_text=True)
        assert re.search(r'id="jobs-parked">4 con error<', status), status
        assert client.get("/api/status").get_json()["jobs"]["parked"] == 4
    assert not list((data / "derivatives").rglob(TEMP_PREFIX + "*"))


@pytest.mark.parametrize("name, codecs", [
    ("pantalla.webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-b:v", "200k",
                       "-c:a", "libopus", "-f", "webm"]),
    ("viejo.3gp", ["-c:v", "h263", "-s", "352x288", "-c:a", "aac", "-ar", "16000",
                   "-f", "3gp"]),
    ("dvd.mpg", ["-c:v", "mpeg2video", "-c:a", "mp2", "-f", "mpeg"]),
])
def test_other_video_containers_are_imported_and_played(tmp_path: Path, name: str,
                                                         codecs: list[str]) -> None:
    """A phone's screen recording (.webm), an old phone's .3gp and a DVD-era camera's .mpg
    stayed on the card as "unknown"; ffmpeg reads them all."""
    card = tmp_path / "card"
    card.mkdir()
    subprocess.run(
        [require_tool("ffmpeg"), "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
         "testsrc=size=352x288:rate=10", "-f", "lavfi", "-i", "sine=frequency=440",
         "-t", "1", *codecs, f"file:{card / name}"], check=True, timeout=120)
    data = tmp_path / "data"
    done = run_cli("--data-dir", data, "ingest", card, "--json")
    assert done.returncode == 0, done.stdout.decode()
    assert json.loads(done.stdout)["imported"] == 1, done.stdout.decode()
    assert run_cli("--data-dir", data, "worker", "--once", timeout=300).returncode == 0
    item = items(data)[name]
    assert item["kind"] == "video" and item["problems"] == [], item
    assert set(item["derivatives"]) == {"poster", "proxy"}
    streams = {s["codec_type"] for s in ffprobe(data / item["derivatives"]["proxy"])["streams"]}
    assert streams == {"video", "audio"}


def test_a_job_of_an_item_in_a_damaged_shard_never_ends_the_worker(tmp_path: Path) -> None:
    """Parking a job notes it on the item, which reads its shard: a damaged shard made that
    raise out of the worker, ending the role (and every role of `acopio run`) each time."""
    card = tmp_path / "card"
    exif_jpeg(card / "DCIM/a.jpg", "2026:05:10 10:00:00", color=(9, 9, 9))
    data = tmp_path / "data"
    assert run_cli("--data-dir", data, "ingest", card).returncode == 0
    shard = next((data / "state" / "catalog").rglob("*.json"))
    doc = json.loads(shard.read_bytes())
    next(iter(doc["items"].values()))["size"] = "12x"  # a garbled record: a damaged shard
    shard.write_text(json.dumps(doc))
    deadline = time.monotonic() + 60
    while True:
        done = run_cli("--data-dir", data, "worker", "--once", timeout=120)
        assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr.decode()
        parked = [j for j in jobs(data)["jobs"] if j["state"] == "parked"]
        if len(parked) == 2:  # thumb and preview, given up on without a crash
            break
        assert time.monotonic() < deadline, jobs(data)
        time.sleep(0.5)
    assert b"could not note on" in done.stderr, done.stderr.decode()
