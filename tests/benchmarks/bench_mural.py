"""Benchmark the printed mural: an A1 at 150 dpi of a month with 40 approved camera photos.

Why: the box is a Raspberry Pi 4, down to 1 GB of memory, which also runs the web UI, the
worker and the device watcher. Making the mural must stay under 400 MB at its peak and take
seconds, not minutes. It is not part of the test suite: ``./scripts/bench mural``.

* Inputs: ``--photos`` (40) different 6000x4000 JPEGs at quality 90 (gradients, two noise
  layers, random shapes: 8-9 MB each, as a camera's) with EXIF capture times in 10 agenda
  activities of 4 areas, imported with ``acopio ingest``, derived with ``acopio worker
  --once`` (thumbnail and 1600 px preview each), approved and captioned (a few captions too
  long for their box). Made once under ``$BENCH_OUT/mural`` and reused.
* Each figure is ``acopio mural --month 2026-11 --size A1 --out FILE.pdf`` run in its own
  process (the CLI's ``main`` under ``python -c``), which prints its own VmHWM (peak RSS,
  from /proc/self/status) at its end; wall time measured from outside. ``--repeat`` (3)
  runs, the median time and the largest peak are shown.
* Two cases: with the previews (the usual case: every photo is drawn from its 1600 px
  preview) and with the derivatives folder hidden (every photo decoded from its 24 MP
  original, shrunk on load by libjpeg's DCT scaling). A2 and A3, and the results report's
  PDF (``acopio informe --out``), are shown beside them.
* Target: peak memory < 400 MB in every case. Time is shown, not judged (a Pi 4 is about
  three to four times slower than a desktop core per thread).

Exit status: 0 when the benchmark ran, whatever the PASS/FAIL words say; 2 when it could not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from appliance.agenda import Activity, Agenda  # noqa: E402
from appliance.datadir import DataDir  # noqa: E402
from appliance.editorial import Editor  # noqa: E402

MB = 1_000_000
MONTH = "2026-11"
ZONE = ZoneInfo("America/Mexico_City")
PHOTO_SIZE = (6000, 4000)
PEAK_TARGET_MB = 400
AREAS = ("Obras Públicas", "Cultura", "Desarrollo Social", "Seguridad Ciudadana")
ACTIVITIES = 10

MAKE_JPEG = """
import random, sys
from PIL import Image, ImageDraw
path, when = sys.argv[1], sys.argv[5]
seed, w, h = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(seed)
gx = Image.linear_gradient("L").rotate(rnd.uniform(0, 360)).resize((w, h), Image.BILINEAR)
gy = Image.radial_gradient("L").resize((w, h), Image.BILINEAR)
r = Image.blend(gx, Image.effect_noise((w, h), rnd.uniform(30, 45)), 0.5)
g = Image.blend(gy, Image.effect_noise((w, h), rnd.uniform(30, 45)), 0.5)
b = Image.blend(gx.transpose(Image.Transpose.ROTATE_180), gy, rnd.uniform(0.3, 0.7))
image = Image.merge("RGB", (r, g, b))
draw = ImageDraw.Draw(image)
for _ in range(40):
    x, y, s = rnd.randrange(w), rnd.randrange(h), rnd.randrange(w // 40, w // 6)
    draw.ellipse((x, y, x + s, y + s * 2 // 3), fill=tuple(rnd.randrange(256) for _ in "rgb"))
exif = Image.Exif()
exif[271], exif[272] = "Canon", "Canon EOS R6"
ifd = exif.get_ifd(0x8769)
ifd[36867], ifd[36881] = when, "-06:00"
if seed % 5 == 3:
    image = image.transpose(Image.Transpose.ROTATE_90)  # a portrait now and then
image.save(path + ".part", "JPEG", quality=90, exif=exif)
import os
os.replace(path + ".part", path)
"""

# The mural (or the report) in a process of its own; prints its peak RSS at its end.
MAKE = """
import json, os, sys
from appliance.cli import main
with open(os.devnull, "w") as quiet:
    saved, sys.stdout = sys.stdout, quiet
    code = main(sys.argv[1:])
    sys.stdout = saved
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"code": code, "hwm_kb": hwm}))
"""


class BenchError(Exception):
    pass


def log(message: str) -> None:
    print(f"bench mural: {message}", file=sys.stderr, flush=True)


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ACOPIO_")}
    return {**clean, "PYTHONPATH": str(REPO), "ACOPIO_WEB_ZEROCONF": "false"}


def cli(*args: str | Path, timeout: float = 3600) -> str:
    done = subprocess.run([sys.executable, "-m", "appliance", *map(str, args)], cwd=REPO,
                          env=env(), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise BenchError(f"acopio {' '.join(map(str, args))}: exit {done.returncode}: "
                         f"{done.stderr[-2000:]}")
    return done.stdout


def activity_of(index: int, photos: int) -> int:
    return index * ACTIVITIES // photos


def capture_time(index: int, photos: int) -> datetime:
    k = activity_of(index, photos)
    return datetime(2026, 11, 2 + 2 * k, 10, 0, tzinfo=ZONE) + timedelta(minutes=index)


def build(workdir: Path, photos: int) -> Path:
    """The archive: made once, reused while its marker says it holds `photos` photos."""
    data = workdir / f"data-{photos}"
    marker = data / "bench-ready"
    if marker.exists():
        return data
    card = workdir / f"card-{photos}" / "DCIM" / "100CANON"
    card.mkdir(parents=True, exist_ok=True)
    width, height = PHOTO_SIZE
    missing = [i for i in range(photos) if not (card / f"IMG_{i:04d}.JPG").exists()]
    if missing:
        log(f"making {len(missing)} JPEGs of {width}x{height} in {card}")

        def make(i: int) -> None:
            when = capture_time(i, photos).strftime("%Y:%m:%d %H:%M:%S")
            subprocess.run([sys.executable, "-c", MAKE_JPEG, str(card / f"IMG_{i:04d}.JPG"),
                            str(i), str(width), str(height), when], check=True, env=env())

        with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
            list(pool.map(make, missing))
    if data.exists():
        import shutil

        shutil.rmtree(data)
    DataDir.at(data).ensure()
    agenda = Agenda(DataDir.at(data).state)
    for k in range(ACTIVITIES):
        start = datetime(2026, 11, 2 + 2 * k, 9, 0, tzinfo=ZONE)
        agenda.add(Activity(slug=f"actividad-{k}", title=f"Actividad número {k}: entrega de "
                            "obra y recorrido con vecinos de la colonia",
                            area=AREAS[k % len(AREAS)], place="Palacio Municipal",
                            start=start, end=start + timedelta(hours=6)))
    log("importing and deriving (acopio ingest, acopio worker --once)")
    cli("--data-dir", data, "ingest", card.parent.parent)
    cli("--data-dir", data, "worker", "--once")
    items = json.loads(cli("--data-dir", data, "items", "--json"))
    editor = Editor(DataDir.at(data))
    for n, item in enumerate(sorted(items, key=lambda i: i["original_name"])):
        caption = "Recorrido de la obra con vecinos de la colonia." if n % 4 else \
            "Vecinos y autoridades durante la entrega " + "de la obra " * 30
        editor.edit(item["sha256"], {"caption": caption, "rating": n % 6}, by="bench")
    editor.approve([i["sha256"] for i in items], by="bench")
    marker.write_text(json.dumps({"photos": photos, "items": len(items)}))
    return data


def measure(args: Sequence[str | Path], repeat: int) -> dict[str, Any]:
    times, peaks = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", MAKE, *map(str, args)], cwd=REPO,
                              env=env(), capture_output=True, text=True, timeout=3600)
        elapsed = time.perf_counter() - started
        if done.returncode != 0 or not done.stdout.strip():
            raise BenchError(f"{shlex.join(map(str, args))}: {done.stderr[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if result["code"] != 0:
            raise BenchError(f"{shlex.join(map(str, args))}: exit {result['code']}: "
                             f"{done.stderr[-2000:]}")
        times.append(elapsed)
        peaks.append(result["hwm_kb"] * 1024 / MB)
    return {"seconds": statistics.median(times), "times": times, "peak_mb": max(peaks)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=40, help="approved photos (default 40)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (default 3)")
    opts = parser.parse_args(sys.argv[1:] if argv is None else argv)
    workdir = Path(os.environ.get("BENCH_OUT", REPO / "bench-results")) / "mural"
    workdir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC)
    results: dict[str, Any] = {"photos": opts.photos}
    try:
        data = build(workdir, opts.photos)
        out = workdir / "out"
        out.mkdir(exist_ok=True)
        base = ["--data-dir", data]
        for size in ("A1", "A2", "A3"):
            log(f"{size} with previews")
            results[f"{size}_previews"] = measure(
                [*base, "mural", "--month", MONTH, "--size", size, "--out",
                 out / f"mural-{size}.pdf"], opts.repeat)
        manifest = json.loads(cli(*base, "mural", "--month", MONTH, "--size", "A1", "--out",
                                  out / "mural-A1.pdf", "--json"))
        results["A1_layout"] = {k: manifest[k] for k in (
            "pages", "photos", "approved", "photos_per_activity", "photo_height_mm",
            "width", "height", "width_pt", "height_pt")}
        results["A1_layout"]["ellipsized"] = len(manifest["ellipsized"])
        hidden = data / "derivatives.hidden"
        (data / "derivatives").rename(hidden)
        try:
            log("A1 from the originals")
            results["A1_originals"] = measure(
                [*base, "mural", "--month", MONTH, "--size", "A1", "--out",
                 out / "mural-A1-originals.pdf"], opts.repeat)
        finally:
            hidden.rename(data / "derivatives")
        log("results report")
        results["informe"] = measure([*base, "informe", "--month", MONTH, "--out",
                                      out / "informe.pdf"], opts.repeat)
    except BenchError as exc:
        log(f"error: {exc}")
        return 2
    layout = results["A1_layout"]
    lines = ["", f"Acopio mural benchmark, {stamp:%Y-%m-%d %H:%M UTC}",
             f"host: {platform.node()}, {os.cpu_count()} CPUs {platform.machine()}, Linux "
             f"{platform.release()}, Python {platform.python_version()}",
             f"{opts.photos} approved 6000x4000 photos in {ACTIVITIES} activities of "
             f"{len(AREAS)} areas; median of {opts.repeat} runs, each in its own process; "
             "MB = 10^6 bytes", "",
             f"A1 at 150 dpi: {layout['width']} x {layout['height']} px, "
             f"{layout['width_pt']} x {layout['height_pt']} pt, {layout['pages']} sheet(s), "
             f"{layout['photos']} of {layout['approved']} photos (at most "
             f"{layout['photos_per_activity']} per activity, rows at most "
             f"{layout['photo_height_mm']} "
             f"mm high), {layout['ellipsized']} texts shortened", ""]
    worst = 0.0
    for key, label in (("A1_previews", "A1 from the previews"),
                       ("A1_originals", "A1 from the originals"),
                       ("A2_previews", "A2 from the previews"),
                       ("A3_previews", "A3 from the previews"),
                       ("informe", "results report PDF (A4)")):
        figure = results[key]
        worst = max(worst, figure["peak_mb"])
        verdict = "PASS" if figure["peak_mb"] < PEAK_TARGET_MB else "FAIL"
        lines.append(f"{label:<28} {figure['seconds']:6.2f} s   peak {figure['peak_mb']:6.1f} "
                     f"MB (target < {PEAK_TARGET_MB})  {verdict}")
    saved = workdir / f"results-{stamp:%Y%m%dT%H%M%SZ}.json"
    saved.write_text(json.dumps(results, indent=1))
    lines += ["", f"largest peak: {worst:.1f} MB",
              " ".join(["reproduce: ./scripts/bench mural",
                        *map(shlex.quote, sys.argv[1:] if argv is None else argv)]),
              f"figures saved to {saved}"]
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
