"""The kiosk screen beside the town hall's mural: what Dirección sets for it, which approved
items it shows, and `acopio kiosk`, which starts Chromium full screen on the box's display.

Interface-agnostic (no Flask): the web UI (appliance/web/kiosk.py) reads and saves the
settings and builds the slides; the CLI starts the browser.

- Settings live in `state/kiosk.json` (one TinyDB document, written through
  `storage.transaction`: locked, atomic, durable) and the logo in `state/kiosk/logo.png`,
  always re-encoded here from what was uploaded (a PNG or JPEG checked and decoded by Pillow),
  so the public page never serves a file as a person sent it.
- Which items: approved ones only, photos (and RAWs, through their preview) and videos, of
  the chosen period (the current month by default, a fixed month or a range of capture dates)
  and areas. Grouping into slides (`plan_slides`) is pure, so it is tested without a server.
- `chromium_argv` builds the browser's command line (pure); `launch` waits until the web UI
  answers, then replaces itself with Chromium, so systemd supervises the browser directly.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import sys
import time
import unicodedata
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from hashlib import sha256
from pathlib import Path
from typing import Any

from appliance import storage
from appliance.config import Config
from appliance.datadir import DataDir
from appliance.fsutil import atomic_write
from ingest.derive.plan import has_no_picture

log = logging.getLogger(__name__)

PERIODS = ("current", "month", "range")
LAYOUTS = ("collage", "grid", "single")
COLOURS = ("background", "text", "accent")
# Items shown per slide, at most, by layout (a video always has a slide of its own).
PER_SLIDE = {"collage": 5, "grid": 6, "single": 1}
INTERVAL_RANGE = (1, 3600)  # seconds per slide
TICKER_MAX_MESSAGES = 10
TICKER_MAX_CHARS = 140
MAX_AREAS = 50
LOGO_MAX_BYTES = 1024 * 1024  # the web UI refuses larger requests anyway (413)
LOGO_MAX_SIDE = 8000  # of an uploaded logo, checked before it is decoded
LOGO_SIDE = 1024  # the stored logo fits in this square
VIDEO_MAX_S = 120  # a video's slide lasts its length (at least the interval), up to this
SHOWN_KINDS = ("photo", "raw", "video")

_COLOUR = re.compile(r"^#[0-9a-f]{6}$")
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class KioskError(ValueError):
    """A setting Dirección typed is not acceptable: `field` names it, `code` says why (the
    web page shows a translated `kiosk.error.<code>`), the message in English."""

    def __init__(self, field: str, code: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.code = code


@dataclass(frozen=True)
class KioskSettings:
    period: str = "current"  # current | month | range
    month: str = ""  # YYYY-MM, for period "month"
    date_from: str = ""  # YYYY-MM-DD, for period "range" (capture dates, inclusive)
    date_to: str = ""
    areas: tuple[str, ...] = ()  # agenda areas shown; empty: every area
    interval_s: int = 10
    layout: str = "collage"  # collage | grid | single
    background: str = "#14213d"
    text: str = "#ffffff"
    accent: str = "#fca311"
    ticker: tuple[str, ...] = ()  # short messages scrolling at the bottom
    logo: str = ""  # version (hash prefix) of state/kiosk/logo.png; empty: no logo

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["areas"] = list(self.areas)
        record["ticker"] = list(self.ticker)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> KioskSettings:
        """Settings as stored; anything missing or no longer valid falls back to its
        default, so a file from an older version (or edited by hand) never stops the kiosk."""
        defaults = cls()
        values: dict[str, Any] = {}
        for name in asdict(defaults):
            if name not in record:
                continue
            try:
                values[name] = _check_one(name, record[name])
            except KioskError as exc:
                log.warning("kiosk settings: ignoring %s", exc)
        try:
            return _check_period(replace(defaults, **values))
        except KioskError as exc:
            log.warning("kiosk settings: ignoring the period (%s)", exc)
            return replace(defaults, **{k: v for k, v in values.items()
                                        if k not in ("period", "month", "date_from",
                                                     "date_to")})


def clean_text(value: str) -> str:
    """NFC, no control characters, white space runs made single, trimmed."""
    value = unicodedata.normalize("NFC", value)
    value = "".join(c if unicodedata.category(c)[0] != "C" else " " for c in value)
    return " ".join(value.split())


def _check_one(name: str, value: Any) -> Any:
    """One setting checked and normalised, or KioskError."""
    if name == "period":
        if value not in PERIODS:
            raise KioskError(name, "period", f"expected one of {', '.join(PERIODS)}")
        return value
    if name == "month":
        if not isinstance(value, str) or (value and not _MONTH.match(value)):
            raise KioskError(name, "month", "expected a month as YYYY-MM")
        return value
    if name in ("date_from", "date_to"):
        if not isinstance(value, str):
            raise KioskError(name, "date", "expected a date as YYYY-MM-DD")
        if value:
            try:
                date.fromisoformat(value)
            except ValueError:
                raise KioskError(name, "date", "expected a date as YYYY-MM-DD") from None
            if len(value) != 10:
                raise KioskError(name, "date", "expected a date as YYYY-MM-DD")
        return value
    if name == "areas":
        if not isinstance(value, list | tuple) or not all(isinstance(a, str) for a in value):
            raise KioskError(name, "areas", "expected a list of areas")
        areas = list(dict.fromkeys(a for a in (clean_text(v) for v in value) if a))
        if len(areas) > MAX_AREAS or any(len(a) > 200 for a in areas):
            raise KioskError(name, "areas", f"at most {MAX_AREAS} areas")
        return tuple(areas)
    if name == "interval_s":
        low, high = INTERVAL_RANGE
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise KioskError(name, "interval", f"expected whole seconds from {low} to {high}")
        return value
    if name == "layout":
        if value not in LAYOUTS:
            raise KioskError(name, "layout", f"expected one of {', '.join(LAYOUTS)}")
        return value
    if name in COLOURS:
        if not isinstance(value, str) or not _COLOUR.match(value.lower()):
            raise KioskError(name, "colour", "expected a colour as #rrggbb")
        return value.lower()
    if name == "ticker":
        if not isinstance(value, list | tuple) or not all(isinstance(m, str) for m in value):
            raise KioskError(name, "ticker", "expected a list of messages")
        messages = [m for m in (clean_text(v) for v in value) if m]
        if len(messages) > TICKER_MAX_MESSAGES:
            raise KioskError(name, "ticker_count",
                             f"at most {TICKER_MAX_MESSAGES} messages")
        if any(len(m) > TICKER_MAX_CHARS for m in messages):
            raise KioskError(name, "ticker_length",
                             f"each message at most {TICKER_MAX_CHARS} characters")
        return tuple(messages)
    if name == "logo":
        if not isinstance(value, str) or (value and not re.fullmatch(r"[0-9a-f]{16}", value)):
            raise KioskError(name, "logo", "not a logo version")
        return value
    raise KioskError(name, "unknown", "not a kiosk setting")


def _check_period(settings: KioskSettings) -> KioskSettings:
    if settings.period == "month" and not settings.month:
        raise KioskError("month", "month", "a fixed month needs the month (YYYY-MM)")
    if settings.period == "range":
        if not settings.date_from or not settings.date_to:
            raise KioskError("date_from", "date", "a range needs both dates")
        if settings.date_from > settings.date_to:
            raise KioskError("date_to", "range_order", "the range ends before it starts")
    return settings


def validate(changes: Mapping[str, Any], base: KioskSettings | None = None) -> KioskSettings:
    """`base` (the defaults when None) with `changes` applied, every value checked;
    KioskError names the first bad one. `logo` is not set this way (see KioskStore)."""
    values = {}
    for name, value in changes.items():
        if name == "logo":
            raise KioskError(name, "unknown", "the logo is uploaded, not set")
        values[name] = _check_one(name, value)
    return _check_period(replace(base or KioskSettings(), **values))


# -- the period and the slides ------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """What the settings select: a month of the archive (its folders' month) or a range of
    capture dates."""

    month: str | None = None
    date_from: date | None = None
    date_to: date | None = None


def period_of(settings: KioskSettings, today: date) -> Period:
    """`today` in the kit's time zone decides the "current" month."""
    if settings.period == "month":
        return Period(month=settings.month)
    if settings.period == "range":
        return Period(date_from=date.fromisoformat(settings.date_from),
                      date_to=date.fromisoformat(settings.date_to))
    return Period(month=f"{today.year:04d}-{today.month:02d}")


def showable(record: Mapping[str, Any]) -> bool:
    """An item the kiosk may show: approved right now, a photo, RAW or video, with a picture
    of its own (not damaged, too large to decode, or without a preview: those show the
    public a grey placeholder)."""
    if record.get("approved") is not True or record.get("kind") not in SHOWN_KINDS:
        return False
    return not has_no_picture(record)


def _balanced(count: int, most: int) -> list[int]:
    """`count` items in slides of at most `most`, as even as possible: 6 by 5 -> [3, 3]."""
    if count <= 0:
        return []
    slides = math.ceil(count / most)
    base, extra = divmod(count, slides)
    return [base + 1] * extra + [base] * (slides - extra)


@dataclass
class Group:
    """One archive folder's items (an activity, or a day's items in none) in one slide
    group: the same heading over each of its slides."""

    key: str  # the folder
    title: str
    area: str
    date: str  # as shown, already formatted
    order: tuple[Any, ...]  # sorts the groups
    items: list[dict[str, Any]] = field(default_factory=list)


def plan_slides(groups: Iterable[Group], settings: KioskSettings,
                duration: Callable[[dict[str, Any]], float | None] = lambda item: None
                ) -> list[dict[str, Any]]:
    """The slides: each group's items in capture order, photos in collages of the layout's
    size (balanced, so 6 photos make two of 3 rather than 5 and 1), each video alone. A
    slide lasts the interval; a video's, its length (at most VIDEO_MAX_S) when longer.
    Each slide's id is a hash of its heading and items, so the screen can tell whether the
    slide it shows is still there."""
    most = PER_SLIDE[settings.layout]
    slides: list[dict[str, Any]] = []
    for group in sorted(groups, key=lambda g: g.order):
        photos = [i for i in group.items if i["kind"] != "video"]
        videos = [i for i in group.items if i["kind"] == "video"]
        chunks: list[list[dict[str, Any]]] = []
        start = 0
        for size in _balanced(len(photos), most):
            chunks.append(photos[start:start + size])
            start += size
        chunks += [[video] for video in videos]
        for chunk in chunks:
            seconds = float(settings.interval_s)
            for item in chunk:
                length = duration(item)
                if item["kind"] == "video" and length:
                    seconds = max(seconds, min(float(math.ceil(length)), VIDEO_MAX_S))
            ident = sha256("\n".join([group.key, group.title, group.area, group.date,
                                      *(i["sha256"] for i in chunk)]).encode()).hexdigest()
            slides.append({"id": ident[:16], "group": group.key, "title": group.title,
                           "area": group.area, "date": group.date, "duration_s": seconds,
                           "items": chunk})
    return slides


# -- the store ----------------------------------------------------------------------------


class KioskStore:
    """`state/kiosk.json` and `state/kiosk/logo.png` of one data folder."""

    def __init__(self, data: DataDir) -> None:
        self.data = data
        self.path = data.state / "kiosk.json"
        self.logo_path = data.state / "kiosk" / "logo.png"
        self._cache: tuple[tuple[int, int, int], KioskSettings] | None = None

    def identity(self) -> tuple[int, int, int]:
        """Changes with every save (each one renames a new file into place)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return (0, 0, 0)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def load(self) -> KioskSettings:
        identity = self.identity()
        cached = self._cache
        if cached is not None and cached[0] == identity:
            return cached[1]
        try:
            row = storage.snapshot(self.path).table("settings").get(doc_id=1)
        except storage.CorruptStateError as exc:
            # The screen stays up on the defaults; the next save replaces the file.
            log.warning("kiosk settings unreadable, showing the defaults: %s", exc)
            row = None
        settings = KioskSettings.from_record(row or {})
        if settings.logo and not self.logo_path.is_file():
            settings = replace(settings, logo="")
        self._cache = (identity, settings)
        return settings

    def _write(self, change: Callable[[KioskSettings], KioskSettings]) -> KioskSettings:
        """Read, change and write the settings under the file's lock (two Dirección pages
        saving at once never mix their settings with stale ones). A damaged file (a failing
        card) is moved aside, not kept: these are a handful of settings, typed again."""
        try:
            storage.read_json_file(self.path)
        except storage.CorruptStateError as exc:
            aside = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
            log.warning("kiosk settings damaged (%s); moved to %s", exc.reason, aside)
            os.replace(self.path, aside)
        with storage.transaction(self.path, self.data.tmp) as db:
            table = db.table("settings")
            row = table.get(doc_id=1)
            current = KioskSettings.from_record(row or {})
            updated = change(current)
            table.truncate()
            table.insert(updated.to_record())
        self._cache = None
        return updated

    def save(self, changes: Mapping[str, Any]) -> KioskSettings:
        """Apply `changes` (validated: KioskError) to the stored settings."""
        return self._write(lambda current: validate(changes, current))

    def set_logo(self, upload: bytes) -> KioskSettings:
        """Check an uploaded PNG or JPEG, store it re-encoded as PNG, and point the settings
        at it (a new version, so the screen fetches it again)."""
        png = normalise_logo(upload)
        version = sha256(png).hexdigest()[:16]
        atomic_write(self.logo_path, png, self.data.tmp)
        return self._write(lambda current: replace(current, logo=version))

    def remove_logo(self) -> KioskSettings:
        updated = self._write(lambda current: replace(current, logo=""))
        self.logo_path.unlink(missing_ok=True)
        return updated


def normalise_logo(upload: bytes) -> bytes:
    """The logo as a PNG at most LOGO_SIDE square, upright, RGBA; KioskError for anything
    that is not a whole PNG or JPEG of a sensible size."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not upload:
        raise KioskError("logo", "logo_format", "the file is empty")
    if len(upload) > LOGO_MAX_BYTES:
        raise KioskError("logo", "logo_size", f"at most {LOGO_MAX_BYTES // 1024} KiB")
    try:
        with Image.open(io.BytesIO(upload)) as probe:
            if probe.format not in ("PNG", "JPEG"):
                raise KioskError("logo", "logo_format", "expected a PNG or JPEG image")
            width, height = probe.size
            if not (0 < width <= LOGO_MAX_SIDE and 0 < height <= LOGO_MAX_SIDE):
                raise KioskError("logo", "logo_size",
                                 f"at most {LOGO_MAX_SIDE} pixels on each side")
            probe.verify()  # the whole file: chunk checksums, a JPEG cut short
        with Image.open(io.BytesIO(upload)) as image:
            image.load()
            upright = ImageOps.exif_transpose(image)
            rgba = upright.convert("RGBA")
    except KioskError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as exc:
        raise KioskError("logo", "logo_format", f"not a readable PNG or JPEG ({exc})") from None
    rgba.thumbnail((LOGO_SIDE, LOGO_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    rgba.save(out, "PNG", optimize=True)
    return out.getvalue()


# -- the launcher -------------------------------------------------------------------------


# Chromium as a kiosk: full screen with no way out, no first-run or crash bubbles, no
# update checks or background traffic (the box is offline), videos start muted by themselves.
CHROMIUM_FLAGS = (
    "--kiosk",
    "--noerrdialogs",
    "--disable-session-crashed-bubble",
    "--disable-infobars",
    "--check-for-update-interval=31536000",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    # no keyring prompt on a desktop session, no translation bar over a Spanish page,
    # no pinch zoom or swipe-back on a touch screen
    "--password-store=basic",
    "--disable-features=Translate",
    "--disable-pinch",
    "--overscroll-history-navigation=0",
)


def kiosk_url(config: Config) -> str:
    """`kiosk.url`, else the mural on this box's own web UI."""
    if config.kiosk.url:
        return config.kiosk.url
    host = config.web.host
    if host in ("", "0.0.0.0", "::", "localhost"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.web.port}/mural"


def profile_dir(config: Config) -> Path:
    return DataDir.at(config.data_dir).state / "kiosk-profile"


def chromium_argv(config: Config, url: str | None = None) -> list[str]:
    """The browser's whole command line (`kiosk.extra_args` before the URL)."""
    target = url or kiosk_url(config)
    if not re.match(r"^https?://[^\s/]+", target):
        raise ValueError(f"the kiosk URL must start with http:// or https://, not {target!r}")
    return [config.kiosk.browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir(config)}",
            *config.kiosk.extra_args, target]


def wait_for(url: str, *, timeout_s: float | None = None, interval_s: float = 1.0,
             say: Callable[[str], None] = lambda text: print(text, file=sys.stderr,
                                                               flush=True)) -> bool:
    """Until `url` answers 200 (the web UI is up), so the browser never opens on an error
    page; False after `timeout_s` (None: wait for ever)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    told = False
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError, ValueError):
            pass
        if not told:
            say(f"acopio kiosk: waiting for {url} to answer")
            told = True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def launch(config: Config, url: str | None = None, *,
           execv: Callable[[str, Sequence[str]], Any] = os.execv,
           environ: Mapping[str, str] | None = None) -> int:
    """Wait for the web UI, then become Chromium (never returns on success). 2 when the
    browser or a display is missing."""
    argv = chromium_argv(config, url)
    browser = argv[0]
    if not (os.path.isfile(browser) and os.access(browser, os.X_OK)):
        print(f"acopio kiosk: {browser} is not an executable browser (kiosk.browser)",
              file=sys.stderr)
        return 2
    env = os.environ if environ is None else environ
    headless = any(a.startswith("--headless") for a in argv)
    if not headless and not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        print("acopio kiosk: no display: set DISPLAY (X11) or WAYLAND_DISPLAY (see "
              "systemd/acopio-kiosk.service)", file=sys.stderr)
        return 2
    profile_dir(config).mkdir(parents=True, exist_ok=True, mode=0o700)
    wait_for(argv[-1])
    log.info("starting %s", " ".join(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    execv(browser, argv)
    return 0  # only with a stand-in execv (tests)


def format_group_date(first: datetime | None, last: datetime | None,
                      fmt: Callable[[datetime], str]) -> str:
    """"10 de mayo de 2026", or "10 de mayo de 2026 – 12 de mayo de 2026" over days."""
    if first is None:
        return ""
    if last is None or last.date() == first.date():
        return fmt(first)
    return f"{fmt(first)} – {fmt(last)}"
