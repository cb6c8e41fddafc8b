"""Video and audio derivatives: the pure ffmpeg command lines, and real ffmpeg runs through the
one helper, including the faults it must survive (damaged and crafted files, a hung ffmpeg, a
worker killed mid-transcode)."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from appliance.fsutil import TEMP_PREFIX, is_debris
from ingest.derive import av
from ingest.derive.ffmpeg import FFmpegError, _Progress, check_inputs, run_ffmpeg, safe_input
from ingest.metadata.av import stream_rotation
from tests.cards import ffmpeg_audio, ffmpeg_video
from tests.conftest import REPO, require_tool

X264 = ("libx264", ["-preset", "veryfast", "-crf", "23"])
SRC = Path("/archive/ab/cd/abcd.mp4")
DST = Path("/derived/ab/cd/proxy.mp4")


# ---------------------------------------------------------------------------------------------
# Helpers


def run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=60)


def probe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
         str(path)],
        check=True, capture_output=True, timeout=30,
    ).stdout  # fmt: skip
    return json.loads(out)


def streams(path: Path, kind: str) -> list[dict]:
    return [s for s in probe(path)["streams"] if s["codec_type"] == kind]


def first_frame(path: Path) -> Image.Image:
    """The first frame as a player shows it (ffmpeg applies any display rotation)."""
    args = ["ffmpeg", "-v", "error", "-i", str(path), "-frames:v", "1"]
    png = subprocess.run(
        [*args, "-f", "image2pipe", "-c:v", "png", "-"], check=True, capture_output=True
    ).stdout
    return Image.open(io.BytesIO(png)).convert("RGB")


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b.resize(a.size))).mean) / 3


def top_level_boxes(path: Path) -> list[bytes]:
    """The MP4's top-level box types in file order."""
    kinds, data, offset = [], path.read_bytes(), 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        kinds.append(data[offset + 4 : offset + 8])
        if size == 1:
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        if size < 8:
            break
        offset += size
    return kinds


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def process_gone(pid: int, wait: float = 5.0) -> bool:
    """True once ``pid`` has exited, all its threads too (a zombie waiting for its new parent
    counts as gone, but its threads may still be ending, holding its files)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            threads = len(os.listdir(f"/proc/{pid}/task"))
        except FileNotFoundError:
            return True
        if state == "Z" and threads <= 1:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def pids_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and not process_gone(int(entry.name), wait=0):
            found.append(int(entry.name))
    return found


def stand_in_ffmpeg(bin_dir: Path, pidfile: Path) -> None:
    """An ffmpeg that writes a little to its output, starts a child and never finishes."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "ffmpeg"
    script.write_text(
        "#!/bin/sh\n"
        "for last; do :; done\n"
        'printf partial > "${last#file:}"\n'
        "/bin/sleep 60 &\n"
        f'echo $! > "{pidfile}"\n'
        "wait\n"
    )
    script.chmod(0o755)


# ---------------------------------------------------------------------------------------------
# Media, made once per module


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    require_tool("ffmpeg")
    require_tool("ffprobe")
    d = tmp_path_factory.mktemp("media")
    out = {"clip.mp4": ffmpeg_video(d / "clip.mp4", seconds=2)}
    # ffmpeg 5.1 has no -display_rotation; its muxer turns the legacy tag into a display matrix.
    out["rotated.mp4"] = d / "rotated.mp4"
    run("ffmpeg", "-v", "error", "-i", str(out["clip.mp4"]), "-c", "copy",
        "-metadata:s:v", "rotate=90", str(out["rotated.mp4"]))  # fmt: skip
    out["silent.mp4"] = d / "silent.mp4"
    run("ffmpeg", "-v", "error", "-i", str(out["clip.mp4"]), "-an", "-c", "copy",
        str(out["silent.mp4"]))  # fmt: skip
    out["tone.wav"] = ffmpeg_audio(d / "tone.wav", seconds=2)
    out["tone.mp3"] = ffmpeg_audio(d / "tone.mp3", seconds=2)
    return out


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clip whose proxy takes a few seconds, to be interrupted."""
    return ffmpeg_video(tmp_path_factory.mktemp("long") / "long.mp4", seconds=12, size="1280x720")


# ---------------------------------------------------------------------------------------------
# Pure argument builders


def test_safe_input_whitelists_file_and_containers() -> None:
    args = safe_input(SRC)
    assert args[-2:] == ["-i", f"file:{SRC}"]
    assert args[args.index("-protocol_whitelist") + 1] == "file"
    demuxers = args[args.index("-format_whitelist") + 1].split(",")
    assert "mov" in demuxers and not {"hls", "concat", "image2"} & set(demuxers)
    assert safe_input(SRC, seek_s=2.5)[:2] == ["-ss", "2.500"]
    with pytest.raises(ValueError, match="absolute"):
        safe_input(Path("relative.mp4"))


@pytest.mark.parametrize(
    "args",
    [
        ["-f", "lavfi", "-i", "testsrc"],
        ["-i", f"file:{SRC}"],
        ["-protocol_whitelist", "file", "-i", "http://example.org/x"],
        ["-protocol_whitelist", "file,http", "-format_whitelist", "mov", "-i", f"file:{SRC}"],
    ],
)
def test_unrestricted_inputs_are_refused(args: list[str]) -> None:
    with pytest.raises(ValueError, match="safe_input"):
        check_inputs([*args, f"file:{DST}"])


def test_video_proxy_args() -> None:
    args = av.video_proxy_args(SRC, DST, encoder=X264, has_audio=True, rotation=0)
    check_inputs(args)
    assert args[-3:] == ["-f", "mp4", f"file:{DST}"]
    joined = " ".join(args)
    assert "-c:v libx264 -preset veryfast -crf 23 -pix_fmt yuv420p" in joined
    assert "-map 0:v:0" in joined and "-map 0:a:0 " in joined
    assert "-c:a aac -b:a 128k" in joined and "-movflags +faststart" in joined
    assert "-autorotate 1" in joined and args.index("-autorotate") < args.index("-i")
    assert args[args.index("-vf") + 1].endswith("setsar=1,format=yuv420p")
    silent = av.video_proxy_args(SRC, DST, encoder=X264, has_audio=False, rotation=90)
    assert "-an" in silent and "aac" not in silent
    maybe = av.video_proxy_args(SRC, DST, encoder=X264, has_audio=None, rotation=0)
    assert "-map 0:a:0? -af" in " ".join(maybe)


def test_video_proxy_args_hardware_encoder() -> None:
    encoder = av.choose_encoder({"libx264", "h264_v4l2m2m"}, lambda path: True)
    args = av.video_proxy_args(SRC, DST, encoder=encoder, has_audio=True, rotation=0)
    joined = " ".join(args)
    assert "-c:v h264_v4l2m2m -b:v 4M -g 60 -pix_fmt yuv420p" in joined
    assert "format=yuv420p" in args[args.index("-vf") + 1]  # fed yuv420p frames


def test_poster_args() -> None:
    args = av.poster_args(SRC, Path("/d/poster.jpg"), at_s=1.5, rotation=270)
    check_inputs(args)
    assert args[args.index("-ss") + 1] == "1.500" and args.index("-ss") < args.index("-i")
    assert "-frames:v 1" in " ".join(args) and "mjpeg" in args
    assert args[-5:] == ["-f", "image2", "-update", "1", "file:/d/poster.jpg"]
    assert "png" in av.poster_args(SRC, Path("/d/poster.png"), at_s=0, rotation=0)
    assert "-ss" not in av.poster_args(SRC, Path("/d/poster.png"), at_s=0, rotation=0)
    with pytest.raises(ValueError, match="jpg"):
        av.poster_args(SRC, Path("/d/poster.gif"), at_s=0, rotation=0)
    with pytest.raises(ValueError, match="quarter"):
        av.poster_args(SRC, Path("/d/poster.jpg"), at_s=0, rotation=45)


def test_audio_and_waveform_args() -> None:
    audio = av.audio_proxy_args(SRC, Path("/d/proxy.m4a"))
    check_inputs(audio)
    assert " ".join(audio).endswith("-movflags +faststart -f ipod file:/d/proxy.m4a")
    assert "-c:a aac -b:a 128k" in " ".join(audio)
    assert "channel_layouts=mono|stereo:sample_rates=44100|48000" in audio[audio.index("-af") + 1]
    wave = av.waveform_args(SRC, Path("/d/wave.png"), 800, 100)
    check_inputs(wave)
    graph = wave[wave.index("-filter_complex") + 1]
    assert graph.startswith("[0:a:0]") and "showwavespic=s=800x100" in graph
    assert wave[-5:] == ["-f", "image2", "-update", "1", "file:/d/wave.png"]


@pytest.mark.parametrize(
    ("available", "device", "expected"),
    [
        ({"libx264", "h264_v4l2m2m"}, True, "h264_v4l2m2m"),
        ({"libx264", "h264_v4l2m2m"}, False, "libx264"),  # Pi 5, or a PC: no encoder device
        ({"libx264"}, True, "libx264"),
    ],
)
def test_choose_encoder(available: set[str], device: bool, expected: str) -> None:
    asked: list[str] = []

    def has_device(path: str) -> bool:
        asked.append(path)
        return device

    name, options = av.choose_encoder(available, has_device)
    assert name == expected
    if name == "libx264":
        assert options == ["-preset", "veryfast", "-crf", "23"]
    assert asked in ([], [av.PI_ENCODER_DEVICE])


def test_parse_encoders() -> None:
    listing = (
        "Encoders:\n V..... = Video\n A..... = Audio\n ------\n"
        " V....D libx264              libx264 H.264 / AVC\n"
        " V..... h264_v4l2m2m         V4L2 mem2mem H.264 encoder wrapper (codec h264)\n"
        " A....D aac                  AAC (Advanced Audio Coding)\n"
    )
    assert av.parse_encoders(listing) == {"libx264", "h264_v4l2m2m", "aac"}


def test_encoders_asks_ffmpeg_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake(ffmpeg: str = "ffmpeg") -> set[str]:
        calls.append(ffmpeg)
        return {"libx264"}

    monkeypatch.setattr(av, "available_encoders", fake)
    encoders = av.Encoders("ffmpeg", has_device=lambda path: True)
    assert encoders.video() == encoders.video() == X264
    assert calls == ["ffmpeg"]


def test_real_ffmpeg_has_libx264() -> None:
    require_tool("ffmpeg")
    assert {"libx264", "aac", "mjpeg", "png"} <= av.available_encoders()


def test_progress_blocks_become_throttled_percents() -> None:
    heard: list[float] = []
    now = [0.0]
    parser = _Progress(10.0, heard.append, clock=lambda: now[0])
    text = b""
    for us in ("N/A", "0", "1000000", "1200000", "5000000", "10000000"):
        text += f"frame=1\nout_time_us={us}\nout_time=00:00:00\nprogress=continue\n".encode()
    text += b"out_time_us=10400000\nprogress=end\n"
    for i in range(0, len(text), 7):  # the pipe cuts lines anywhere
        now[0] += 0.1
        parser.feed(text[i : i + 7])
    assert heard == sorted(heard) and heard[0] == 0.0
    assert 99 < heard[-1] < 100  # 100 is said only once the output is in place
    assert len(heard) < 6  # throttled
    assert _Progress(None, None).percent({"out_time_us": "5"}) is None
    assert _Progress(2.0, None).percent({"out_time_ms": "1000000"}) == 50.0


def test_run_ffmpeg_wants_its_output_last(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="last"):
        run_ffmpeg([*safe_input(SRC), f"file:{tmp_path / 'a.mp4'}"], output=tmp_path / "b.mp4",
                   duration_s=None, timeout_s=5, progress=None)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Real derivatives


def test_video_proxy_is_browser_playable(media: dict[str, Path], tmp_path: Path) -> None:
    heard: list[float] = []
    dst = tmp_path / "out" / "proxy.mp4"
    av.make_video_proxy(media["clip.mp4"], dst, duration=2, rotation=0, encoder=X264,
                        timeout=60, has_audio=True, progress=heard.append)  # fmt: skip
    (video,) = streams(dst, "video")
    (audio,) = streams(dst, "audio")
    assert (video["codec_name"], video["pix_fmt"], video["width"], video["height"]) == (
        "h264", "yuv420p", 320, 240)  # fmt: skip
    assert audio["codec_name"] == "aac" and int(audio["sample_rate"]) in (44100, 48000)
    boxes = top_level_boxes(dst)
    assert boxes.index(b"moov") < boxes.index(b"mdat")  # faststart
    assert heard and heard == sorted(heard) and heard[-1] == 100.0
    assert leftovers(dst.parent) == ["proxy.mp4"]


def test_video_proxy_without_audio(media: dict[str, Path], tmp_path: Path) -> None:
    for has_audio in (False, None):
        dst = tmp_path / f"proxy-{has_audio}.mp4"
        av.make_video_proxy(media["silent.mp4"], dst, duration=2, rotation=0, encoder=X264,
                            timeout=60, has_audio=has_audio)  # fmt: skip
        assert streams(dst, "audio") == [] and len(streams(dst, "video")) == 1


@pytest.mark.parametrize(
    ("size", "expected"),
    [("1920x1080", (1280, 720)), ("1080x1920", (720, 1280)), ("1441x811", (1280, 720)),
     ("322x242", (322, 242))],
)  # fmt: skip
def test_proxy_fits_the_720p_box(size: str, expected: tuple[int, int], tmp_path: Path) -> None:
    src = tmp_path / "src.mp4"
    run("ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc=size={size}:rate=5", "-t", "0.4",
        "-c:v", "libx264", "-preset", "ultrafast", str(src))  # fmt: skip
    dst = tmp_path / "proxy.mp4"
    av.make_video_proxy(src, dst, duration=0.4, rotation=0, encoder=X264, timeout=60)
    (video,) = streams(dst, "video")
    assert (video["width"], video["height"]) == expected


def test_rotated_video_comes_out_upright(media: dict[str, Path], tmp_path: Path) -> None:
    src = media["rotated.mp4"]
    (stored,) = streams(src, "video")
    rotation = stream_rotation(stored)
    assert rotation in (90, 270) and (stored["width"], stored["height"]) == (320, 240)
    proxy, poster = tmp_path / "proxy.mp4", tmp_path / "poster.png"
    av.make_video_proxy(src, proxy, duration=2, rotation=rotation, encoder=X264, timeout=60)
    av.make_poster(src, poster, duration=None, rotation=rotation, timeout=30)
    (video,) = streams(proxy, "video")
    assert (video["width"], video["height"]) == (240, 320)
    assert stream_rotation(video) == 0
    assert "rotate" not in video.get("tags", {})
    assert not [s for s in video.get("side_data_list", []) if "rotation" in s]
    # What a player shows of the proxy and the poster is what it shows of the original.
    shown = first_frame(src)
    wrong = shown.rotate(180)
    for picture in (first_frame(proxy), Image.open(poster).convert("RGB")):
        assert picture.size == (240, 320)
        assert mean_difference(shown, picture) < 4 < mean_difference(wrong, picture)


def test_poster_frame(media: dict[str, Path], tmp_path: Path) -> None:
    dst = tmp_path / "poster.jpg"
    av.make_poster(media["clip.mp4"], dst, duration=2, rotation=0, timeout=30)
    with Image.open(dst) as img:
        assert (img.format, img.size) == ("JPEG", (320, 240))
    # A duration longer than the stream (a lying container): the moment has no frame, so the
    # poster comes from the start instead of failing.
    late = tmp_path / "late.jpg"
    av.make_poster(media["clip.mp4"], late, duration=600, rotation=0, timeout=30)
    assert Image.open(late).size == (320, 240)
    assert leftovers(tmp_path) == ["late.jpg", "poster.jpg"]


@pytest.mark.parametrize(
    ("make", "channels", "rate"),
    [
        (["sine=frequency=440:sample_rate=96000:duration=1", "-ac", "4"], 2, 48000),
        (["sine=frequency=440:sample_rate=22050:duration=1"], 1, 44100),
        (["sine=frequency=440:sample_rate=48000:duration=1", "-ac", "2"], 2, 48000),
    ],
)
def test_audio_proxy(make: list[str], channels: int, rate: int, tmp_path: Path) -> None:
    src = tmp_path / "rec.wav"
    run("ffmpeg", "-v", "error", "-f", "lavfi", "-i", *make, str(src))
    dst = tmp_path / "proxy.m4a"
    heard: list[float] = []
    av.make_audio_proxy(src, dst, duration=1, timeout=30, progress=heard.append)
    (audio,) = streams(dst, "audio")
    assert (audio["codec_name"], audio["channels"], int(audio["sample_rate"])) == (
        "aac", channels, rate)  # fmt: skip
    assert heard[-1] == 100.0


def test_audio_proxy_from_mp3(media: dict[str, Path], tmp_path: Path) -> None:
    dst = tmp_path / "proxy.m4a"
    av.make_audio_proxy(media["tone.mp3"], dst, duration=2, timeout=30)
    assert probe(dst)["format"]["format_name"].startswith("mov")
    assert float(probe(dst)["format"]["duration"]) == pytest.approx(2, abs=0.1)


def test_waveform(media: dict[str, Path], tmp_path: Path) -> None:
    dst = tmp_path / "wave.png"
    av.make_waveform(media["tone.wav"], dst, timeout=30)
    with Image.open(dst) as img:
        assert (img.format, img.size, img.mode) == ("PNG", (1200, 200), "RGBA")
        alpha = img.getchannel("A")
        assert alpha.getextrema() == (0, 255)  # a drawn wave on a transparent background
        assert img.getpixel((600, 100))[:3] == (0x2F, 0x6F, 0xDB)
    # A video's sound has a waveform too.
    av.make_waveform(media["clip.mp4"], tmp_path / "clip.png", timeout=30)
    assert Image.open(tmp_path / "clip.png").size == (1200, 200)


# ---------------------------------------------------------------------------------------------
# Faults


def jobs(tmp_path: Path) -> dict[str, Callable[[Path], None]]:
    """Every derivative job, writing into tmp_path/out."""
    out = tmp_path / "out"
    return {
        "proxy": lambda src: av.make_video_proxy(
            src, out / "proxy.mp4", duration=2, rotation=0, encoder=X264, timeout=30),
        "poster": lambda src: av.make_poster(
            src, out / "poster.jpg", duration=2, rotation=0, timeout=30),
        "audio": lambda src: av.make_audio_proxy(src, out / "proxy.m4a", duration=2, timeout=30),
        "waveform": lambda src: av.make_waveform(src, out / "wave.png", timeout=30),
    }  # fmt: skip


@pytest.mark.parametrize("job", ["proxy", "poster", "audio", "waveform"])
def test_truncated_mp4_fails_cleanly(media: dict[str, Path], tmp_path: Path, job: str) -> None:
    data = media["clip.mp4"].read_bytes()
    src = tmp_path / "cut.mp4"
    src.write_bytes(data[: len(data) // 2])  # the card was pulled: no moov atom
    with pytest.raises(FFmpegError, match="moov atom not found") as caught:
        jobs(tmp_path)[job](src)
    assert "exited with status" in str(caught.value) and caught.value.returncode
    assert leftovers(tmp_path / "out") == []


@pytest.mark.parametrize("job", ["proxy", "poster", "audio", "waveform"])
def test_zero_byte_file_fails_cleanly(tmp_path: Path, job: str) -> None:
    src = tmp_path / "empty.mp4"
    src.touch()
    with pytest.raises(FFmpegError, match="exited with status"):
        jobs(tmp_path)[job](src)
    assert leftovers(tmp_path / "out") == []


@pytest.mark.parametrize("job", ["proxy", "poster", "audio", "waveform"])
@pytest.mark.parametrize("playlist", ["hls", "concat"])
def test_crafted_playlist_reaches_nothing(tmp_path: Path, job: str, playlist: str) -> None:
    require_tool("ffmpeg")
    secret = Path("/etc/passwd").read_text().splitlines()[0]
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        src = tmp_path / "clip.mp4"
        if playlist == "hls":
            src.write_text(
                "#EXTM3U\n#EXT-X-TARGETDURATION:10\n"
                f"#EXTINF:10,\nhttp://127.0.0.1:{port}/x.ts\n"
                "#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"
            )
        else:
            src.write_text(
                f"ffconcat version 1.0\nfile /etc/passwd\nfile http://127.0.0.1:{port}/x\n"
            )
        with pytest.raises(FFmpegError) as caught:
            jobs(tmp_path)[job](src)
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing connected while ffmpeg ran
    assert secret not in str(caught.value)
    out = tmp_path / "out"
    for path in out.iterdir() if out.exists() else []:
        assert secret.encode() not in path.read_bytes()
    assert leftovers(out) == []


def test_hung_ffmpeg_is_killed_at_timeout(
    media: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pidfile = tmp_path / "child.pid"
    stand_in_ffmpeg(tmp_path / "bin", pidfile)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    started = time.monotonic()
    with pytest.raises(FFmpegError, match=r"timed out after 1 s") as caught:
        av.make_video_proxy(media["clip.mp4"], out / "proxy.mp4", duration=2, rotation=0,
                            encoder=X264, timeout=1)  # fmt: skip
    assert time.monotonic() - started < 5
    assert caught.value.timed_out
    assert process_gone(int(pidfile.read_text()))  # the whole process group was killed
    assert leftovers(out) == []  # the partial temp output is gone too


def test_missing_ffmpeg_is_a_clear_error(media: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(FFmpegError, match="not installed"):
        av.make_poster(media["clip.mp4"], tmp_path / "p.jpg", duration=2, rotation=0, timeout=5,
                       ffmpeg="no-such-ffmpeg")  # fmt: skip


# A slow preset: even a fast machine is still transcoding when the worker is killed.
KILLED_WORKER = """
import sys
from pathlib import Path
from ingest.derive.av import make_video_proxy
make_video_proxy(Path(sys.argv[1]), Path(sys.argv[2]), duration=12, rotation=0,
                 encoder=("libx264", ["-preset", "slower"]), timeout=120,
                 progress=lambda p: print(p, flush=True))
"""


def test_worker_killed_mid_transcode_leaves_only_debris(
    long_clip: Path, media: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    dst = out / "proxy.mp4"
    worker = subprocess.Popen(
        [sys.executable, "-c", KILLED_WORKER, str(long_clip), str(dst)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert worker.stdout is not None
        for line in worker.stdout:
            if 0 < float(line) < 100:
                break  # ffmpeg is writing the proxy
        ffmpegs = pids_mentioning(str(out))
        assert ffmpegs
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait()
    assert all(process_gone(pid) for pid in ffmpegs)  # ffmpeg died with its worker
    assert not dst.exists()
    (temp,) = out.iterdir()
    assert temp.name.startswith(TEMP_PREFIX) and temp.stat().st_size > 0
    assert is_debris(temp)
    # The retry of the job clears the debris and publishes a whole proxy.
    av.make_video_proxy(media["clip.mp4"], dst, duration=2, rotation=0, encoder=X264, timeout=60)
    assert leftovers(out) == ["proxy.mp4"]
    assert streams(dst, "video")[0]["codec_name"] == "h264"
