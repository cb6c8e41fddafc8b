"""Recording from microphones and webcams: real ffmpeg, with lavfi sources standing in for ALSA
and V4L2 through the capture-input templates (the sanctioned stand-in, see design.md)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from appliance import config as config_mod
from appliance import storage
from ingest.devices import capture
from ingest.devices.capture import (
    Recorder,
    RecordError,
    capture_args,
    device_values,
    import_recording,
)
from ingest.devices.state import Device
from tests.conftest import REPO, require_tool, run_cli

AUDIO = "-re -f lavfi -i sine=frequency=440:sample_rate=48000"
# A webcam with a microphone: two lavfi inputs, so the Matroska file gets video and audio.
VIDEO = ("-re -f lavfi -i testsrc=size=320x240:rate=25 "
         "-re -f lavfi -i sine=frequency=220:sample_rate=48000")
RECORD_S = 3.0
FORMATS = {".flac": "flac", ".wav": "wav", ".mkv": "matroska"}


@pytest.fixture(autouse=True)
def tools() -> None:
    require_tool("ffmpeg")
    require_tool("ffprobe")


@pytest.fixture
def cleanup(data_dir: Path) -> Iterator[None]:
    """Never leave an endless lavfi ffmpeg running when a test fails half-way."""
    yield
    for recording in Recorder(data_dir, zone=UTC).active():
        capture.end_process(recording.process, 0)


def recorder(config: config_mod.Config, audio_format: str = "flac", **kwargs: object
             ) -> Recorder:
    options: dict = {"audio_input": AUDIO, "video_input": VIDEO, **kwargs}
    return Recorder(config.data_dir, audio_format=audio_format, zone=config.zone, **options)


def mic(device_id: str = "card1") -> Device:
    return Device(id=device_id, kind="microphone", status="ready", name="USB Audio",
                  syspath=f"/sys/devices/pci0000:00/usb1/1-1/1-1:1.0/sound/{device_id}")


def webcam(device_id: str = "video0") -> Device:
    return Device(id=device_id, kind="webcam", status="ready", name="USB Camera",
                  devnode=f"/dev/{device_id}")


def decoded_seconds(path: Path) -> float:
    """Decode the whole file; how many seconds of media came out."""
    result = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", f"file:{path}", "-f", "null",
         "-progress", "pipe:1", "-nostats", "-"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    times = re.findall(r"^out_time_us=(\d+)$", result.stdout, re.MULTILINE)
    return int(times[-1]) / 1e6


def wait_until_ended(rec: Recorder, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while any(r.status == "recording" for r in rec.active()):
        assert time.monotonic() < deadline, rec.active()
        time.sleep(0.05)
    assert rec.active(), "the ended recordings must still be listed, as ended"


def items(data: Path) -> list[dict]:
    result = run_cli("--data-dir", data, "items", "--json")
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def assert_imported_and_removed(config: config_mod.Config, path: Path,
                                activity: str | None) -> None:
    summary = import_recording(config, path, activity)
    assert summary.ok and summary.imported == 1, summary.as_dict()
    assert not path.exists() and not capture.log_path(path).exists()
    assert not path.parent.exists()  # the device folder is removed once empty


# -- the argument builder -----------------------------------------------------------------


def test_placeholders_are_filled_per_argument_after_splitting() -> None:
    out = Path("/data/recordings/card1/20261126-101500_card1.flac")
    args = capture_args("-f alsa -i hw:{card}", {"card": "0 -i /etc/passwd"}, out,
                        "microphone", "flac")
    assert args[args.index("-i") + 1] == "hw:0 -i /etc/passwd"  # one argument, not three
    assert args.count("-i") == 1 and "/etc/passwd" not in args

    args = capture_args("-f v4l2 -i {device}", {"device": "/dev/video0; rm -rf /"},
                        out.with_suffix(".mkv"), "webcam", "matroska")
    assert args[args.index("-i") + 1] == "/dev/video0; rm -rf /"

    args = capture_args('-f lavfi -i "sine=frequency=440:sample_rate=48000"', {}, out,
                        "microphone", "flac")
    assert args[args.index("-i") + 1] == "sine=frequency=440:sample_rate=48000"


def test_command_line_is_safe_and_streams_to_disk() -> None:
    out = Path("/data/recordings/card1/20261126-101500_card1.flac")
    started = datetime(2026, 11, 26, 16, 15, tzinfo=UTC)
    args = capture_args("-f alsa -i hw:{card}", {"card": "1"}, out, "microphone", "flac",
                        started=started, ffmpeg="/usr/bin/ffmpeg")
    assert args[0] == "/usr/bin/ffmpeg"
    assert {"-nostdin", "-n"} <= set(args) and "-y" not in args
    assert args[args.index("-loglevel") + 1] == "error"
    assert args[args.index("-flush_packets") + 1] == "1"
    assert args[-3:] == ["-f", "flac", f"file:{out}"]  # the output is last, as a file: URL
    assert "creation_time=2026-11-26T16:15:00.000000Z" in args


def test_each_format_gets_its_codec_and_capture_time() -> None:
    started = datetime(2026, 11, 26, 16, 15, tzinfo=UTC)
    zone = config_mod.load(None, environ={}).zone
    wav = capture_args(AUDIO, {}, Path("/r/a.wav"), "microphone", "wav",
                       started=started, zone=zone)
    assert wav[wav.index("-c:a") + 1] == "pcm_s16le" and wav[wav.index("-rf64") + 1] == "auto"
    # Broadcast WAV keeps a local time: 16:15 UTC is 10:15 in Mexico City.
    assert {"origination_date=2026-11-26", "origination_time=10:15:00"} <= set(wav)

    mkv = capture_args(VIDEO, {}, Path("/r/v.mkv"), "webcam", "matroska", started=started)
    for option, value in (("-c:v", "libx264"), ("-preset", "ultrafast"),
                          ("-pix_fmt", "yuv420p"), ("-c:a", "flac"),
                          ("-cluster_time_limit", str(capture.CLUSTER_MS))):
        assert mkv[mkv.index(option) + 1] == value
    assert mkv[-3:] == ["-f", "matroska", "file:/r/v.mkv"]


def test_bad_templates_and_values_are_refused_with_a_reason() -> None:
    out = Path("/r/a.flac")
    with pytest.raises(RecordError, match=r"needs \{card\}"):
        capture_args("-f alsa -i hw:{card}", {}, out, "microphone", "flac")
    with pytest.raises(RecordError, match="unknown placeholder"):
        capture_args("-f alsa -i hw:{dev}", {"card": "1"}, out, "microphone", "flac")
    with pytest.raises(RecordError, match="must contain -i"):
        capture_args("-f alsa hw:1", {}, out, "microphone", "flac")
    with pytest.raises(RecordError, match="cannot be split"):
        capture_args('-f alsa -i "hw:1', {}, out, "microphone", "flac")
    with pytest.raises(RecordError, match="cannot record into"):
        capture_args(VIDEO, {}, out, "webcam", "flac")
    with pytest.raises(RecordError, match=r"devices\.video_input"):
        Recorder("/tmp/unused", video_input="-f v4l2 {device}", zone=UTC)
    with pytest.raises(RecordError, match="unknown audio format"):
        Recorder("/tmp/unused", audio_format="mp3", zone=UTC)
    assert capture.check_input_template(capture.DEFAULT_AUDIO_INPUT) is None
    assert capture.check_input_template(capture.DEFAULT_VIDEO_INPUT) is None


def test_alsa_card_and_device_node_come_from_the_device() -> None:
    assert device_values(mic("card1")) == {"card": "1"}
    by_devpath = Device(id="usb-mic", kind="microphone",
                        properties={"DEVPATH": "/devices/pci0000:00/usb1/sound/card3"})
    assert device_values(by_devpath) == {"card": "3"}
    by_node = Device(id="usb-mic", kind="microphone", devnode="/dev/snd/controlC2")
    assert device_values(by_node)["card"] == "2"
    assert device_values(webcam()) == {"device": "/dev/video0"}
    with pytest.raises(RecordError, match=r"needs \{card\}"):
        capture_args("-f alsa -i hw:{card}", device_values(webcam()), Path("/r/a.mkv"),
                     "webcam", "matroska")


def test_from_config_reads_the_devices_section(data_dir: Path) -> None:
    zone = config_mod.load(None, environ={}).zone
    config = SimpleNamespace(  # stands in for Config until the [devices] section exists
        data_dir=data_dir, zone=zone,
        devices=SimpleNamespace(audio_input=AUDIO, video_input=VIDEO, audio_format="wav"),
    )
    made = Recorder.from_config(config)  # type: ignore[arg-type]
    assert (made.audio_input, made.video_input, made.audio_format) == (AUDIO, VIDEO, "wav")
    assert made.root == data_dir / "recordings" and made.zone == zone


# -- real recordings ------------------------------------------------------------------------


@pytest.mark.slow
def test_record_stop_and_import(config: config_mod.Config, cleanup: None) -> None:
    flac, wav = recorder(config), recorder(config, "wav")
    started = [flac.start(mic("card1"), "rueda-de-prensa"), wav.start(mic("card2")),
               flac.start(webcam("video0"))]
    assert [r.status for r in flac.active()] == ["recording"] * 3
    time.sleep(RECORD_S)
    paths = [flac.stop("card1"), wav.stop("card2"), flac.stop("video0")]
    assert flac.active() == []

    for recording, path in zip(started, paths, strict=True):
        assert path == recording.output and path.is_file()
        assert path.parent == config.data_dir / "recordings" / recording.device_id
        assert re.fullmatch(rf"\d{{8}}-\d{{6}}_{recording.device_id}\.(flac|wav|mkv)",
                            path.name)
        # Stopped cleanly: the headers hold the duration, and the media decodes in full.
        duration = capture.probe_duration(path, FORMATS[path.suffix])
        assert duration is not None and abs(duration - RECORD_S) <= 1.0, duration
        assert abs(decoded_seconds(path) - RECORD_S) <= 1.0
    assert flac.activity_for(paths[0]) == "rueda-de-prensa"

    for path in paths:
        assert_imported_and_removed(config, path, flac.activity_for(path))
    listed = {i["original_name"]: i for i in items(config.data_dir)}
    assert {n: i["kind"] for n, i in listed.items()} == {
        paths[0].name: "audio", paths[1].name: "audio", paths[2].name: "video"}
    for item in listed.values():
        assert item["date_source"] == "media_creation_time"  # the recording's start time
        assert abs(item["duration"] - RECORD_S) <= 1.0
    assert listed[paths[0].name]["activity"] == "rueda-de-prensa"
    assert listed[paths[2].name]["width"] == 320
    assert flac.recover() == []


@pytest.mark.slow
def test_kill_9_loses_at_most_the_last_second(config: config_mod.Config,
                                              cleanup: None) -> None:
    flac, wav = recorder(config), recorder(config, "wav")
    began: dict[Path, float] = {}
    started = []
    for rec, device, activity in ((flac, mic("card1"), "informe-anual"),
                                  (wav, mic("card2"), None), (flac, webcam("video0"), None)):
        started.append(rec.start(device, activity))
        began[started[-1].output] = time.monotonic()
    time.sleep(RECORD_S)
    killed_at = time.monotonic()
    for recording in started:
        os.kill(recording.process.pid, signal.SIGKILL)
    wait_until_ended(flac)  # noticed without a stop: pid gone (here: a zombie of ours)

    before = {}
    for recording in started:
        path, fmt = recording.output, FORMATS[recording.output.suffix]
        capture.probe_duration(path, fmt)  # ffprobe reads it (raises if it cannot)
        recorded, elapsed = decoded_seconds(path), killed_at - began[path]
        assert elapsed - 1.5 <= recorded <= elapsed + 0.2, (path.name, recorded, elapsed)
        before[path] = (capture.content_hash(path, fmt), recorded)

    recovered = flac.recover()
    assert recovered == sorted(r.output for r in started)
    assert flac.active() == []
    for path in recovered:
        fmt = FORMATS[path.suffix]
        # FLAC and Matroska were rewritten with their duration, their content unchanged.
        duration = capture.probe_duration(path, fmt)
        assert duration is not None and abs(duration - before[path][1]) <= 0.1
        assert capture.content_hash(path, fmt) == before[path][0]
        assert not list(path.parent.glob(".repair-*"))

    for path in recovered:
        assert_imported_and_removed(config, path, flac.activity_for(path))
    listed = {i["original_name"]: i for i in items(config.data_dir)}
    assert sorted(listed) == sorted(p.name for p in recovered)
    assert listed[recovered[0].name]["activity"] == "informe-anual"
    assert all(i["date_source"] == "media_creation_time" for i in listed.values())
    assert flac.recover() == []


@pytest.mark.slow
def test_ffmpeg_ending_on_its_own_is_noticed_and_kept(config: config_mod.Config,
                                                      cleanup: None) -> None:
    """The device vanished (here: the source ends after 1 s): stop() or recover() collect it,
    and a failed import keeps the file for the next recover()."""
    short = recorder(config, audio_input=AUDIO + ":duration=1")
    first, second = short.start(mic("card1")), short.start(mic("card2"))
    wait_until_ended(short)

    assert short.stop("card2") == second.output  # a stop still hands over the file
    assert short.recover() == [first.output, second.output]

    full = config_mod.load(None, environ={"ACOPIO_INGEST_MIN_FREE_MB": str(10**9)},
                           data_dir=config.data_dir)
    summary = import_recording(full, first.output, None)
    assert summary.stopped and summary.imported == 0
    assert first.output.is_file()  # the import failed: the recording stays
    assert short.recover() == [first.output, second.output]
    for path in (first.output, second.output):
        assert_imported_and_removed(config, path, None)
    assert len(items(config.data_dir)) == 2


def test_only_the_named_recording_is_imported_and_an_archived_one_is_a_duplicate(
        config: config_mod.Config) -> None:
    """Its neighbours in the device folder stay; and after a crash between the import and
    the delete, the next import finds it archived and deletes it."""
    made = fake_entry(config.data_dir, "card1", capture.ProcessId(1, 0, ""))
    path = config.data_dir / made["output"]
    neighbour = path.with_name("20261126-111500_card1.flac")
    neighbour.write_bytes(path.read_bytes()[:-100])  # different content, not yet imported
    kept = path.read_bytes()
    summary = import_recording(config, path, None)
    assert summary.imported == 1 and not path.exists() and neighbour.is_file()
    assert [i["original_name"] for i in items(config.data_dir)] == [path.name]

    path.write_bytes(kept)  # as if the delete had not happened
    assert recorder(config).recover() == [path, neighbour]
    summary = import_recording(config, path, None)
    assert summary.ok and summary.duplicates == 1 and summary.imported == 0
    assert not path.exists() and neighbour.is_file() and len(items(config.data_dir)) == 1


SEPARATE_PROCESS = """
import sys
from datetime import UTC
from ingest.devices.capture import Recorder
from ingest.devices.state import Device
rec = Recorder(sys.argv[1], audio_input=sys.argv[2], zone=UTC)
if sys.argv[3] == "start":
    print(rec.start(Device(id="card1", kind="microphone")).process.pid)
else:
    print(rec.stop("card1"))
"""


@pytest.mark.slow
def test_start_and_stop_from_separate_processes(config: config_mod.Config,
                                                cleanup: None) -> None:
    """Like `acopio record start` then `acopio record stop`: ffmpeg outlives the first
    process, in its own session, and the second one stops it cleanly."""
    def run(action: str) -> str:
        result = subprocess.run([sys.executable, "-c", SEPARATE_PROCESS, str(config.data_dir),
                                 AUDIO, action], cwd=REPO, capture_output=True, text=True,
                                timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    pid = int(run("start"))
    [recording] = recorder(config).active()
    assert recording.status == "recording" and recording.process.pid == pid
    assert recording.as_dict()["status"] == "recording"
    assert os.getsid(pid) == pid  # its own session: a terminal's Ctrl-C or hangup misses it
    time.sleep(1.5)
    path = Path(run("stop"))
    assert path == recording.output and not capture.is_running(recording.process)
    duration = capture.probe_duration(path, "flac")  # stopped cleanly: STREAMINFO complete
    assert duration is not None and abs(duration - 1.5) <= 1.0


def test_start_twice_and_stop_when_idle_are_errors(config: config_mod.Config,
                                                   cleanup: None) -> None:
    rec = recorder(config)
    with pytest.raises(RecordError, match="not recording"):
        rec.stop("card1")
    first = rec.start(mic("card1"))
    with pytest.raises(RecordError, match="already recording"):
        rec.start(mic("card1"))
    assert [r.output for r in rec.active()] == [first.output]  # the first one is untouched
    with pytest.raises(RecordError, match="not a microphone or webcam"):
        rec.start(Device(id="sdb1", kind="card"))
    time.sleep(0.5)
    assert rec.stop("card1") == first.output
    with pytest.raises(RecordError, match="not recording"):
        rec.stop("card1")
    assert decoded_seconds(first.output) > 0


def test_an_existing_output_is_never_overwritten(config: config_mod.Config,
                                                 cleanup: None) -> None:
    moment = datetime(2026, 11, 26, 16, 15, tzinfo=UTC)
    rec = recorder(config, clock=lambda: moment)
    name = capture.recording_name("card1", moment, config.zone, "flac")
    existing = config.data_dir / "recordings" / "card1" / name
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"an earlier recording")
    with pytest.raises(RecordError, match="already exists"):
        rec.start(mic("card1"))
    assert existing.read_bytes() == b"an earlier recording"
    assert rec.active() == []


def test_a_failing_ffmpeg_is_reported_at_start(config: config_mod.Config,
                                               cleanup: None) -> None:
    rec = recorder(config, audio_input="-f lavfi -i no_such_source_filter")
    with pytest.raises(RecordError, match=r"ffmpeg stopped at once.*no_such_source_filter"):
        rec.start(mic("card1"))
    assert rec.active() == [] and rec.recover() == []
    assert list((config.data_dir / "recordings" / "card1").iterdir()) == []  # no log left


def test_a_recycled_pid_is_never_signalled(config: config_mod.Config) -> None:
    """State says ffmpeg had pid P; P now belongs to an unrelated process (this test, and a
    `sleep`): it must never be signalled, and the recording counts as ended."""
    rec = recorder(config)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        me, other = capture.identify(os.getpid()), capture.identify(bystander.pid)
        assert me is not None and other is not None
        strangers = (
            ("card1", capture.ProcessId(me.pid, me.start + 1, me.boot_id)),
            ("card2", capture.ProcessId(other.pid, other.start + 1, other.boot_id)),
            # The right start time, but from another boot: someone else too.
            ("card3", capture.ProcessId(other.pid, other.start, str(uuid.UUID(int=0)))),
        )
        entries = [fake_entry(config.data_dir, device_id, process)
                   for device_id, process in strangers]
        with storage.transaction(config.data_dir / "state" / "recordings.json",
                                 config.data_dir / "state" / "tmp") as db:
            db.table("recordings").insert_multiple(entries)

        assert [r.status for r in rec.active()] == ["ended"] * 3
        assert rec.stop("card1").is_file()
        assert rec.stop("card3").is_file()
        assert rec.recover() == sorted(config.data_dir.glob("recordings/card*/*.flac"))
        assert bystander.poll() is None  # still alive: never signalled
    finally:
        bystander.kill()
        bystander.wait()


def fake_entry(data: Path, device_id: str, process: capture.ProcessId) -> dict:
    """A state entry, and a small real recording, as if `process` were its ffmpeg."""
    output = data / "recordings" / device_id / f"20261126-101500_{device_id}.flac"
    output.parent.mkdir(parents=True)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                    "sine=duration=0.5", "-f", "flac", f"file:{output}"], check=True, timeout=30)
    return {"device_id": device_id, "kind": "microphone", "activity": None,
            "output": output.relative_to(data).as_posix(),
            "started_at": "2026-11-26T16:15:00+00:00", "pid": process.pid,
            "proc_start": process.start, "boot_id": process.boot_id}
