"""One typed configuration model, loaded from TOML and the environment, validated at load.

A wrong setting must stop the box at start-up with a message that names the key, not fail
an hour later at an event. Every setting lives in one dataclass field below, with its
documentation in the field metadata; the README documents each one (a test checks it).

Precedence, lowest first: defaults, the TOML file, `ACOPIO_<SECTION>_<KEY>` environment
variables, command-line options (`--data-dir`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from appliance import templates

DEFAULT_CONFIG_PATH = Path("/etc/acopio/acopio.toml")
DEFAULT_DATA_DIR = Path("/var/lib/acopio")
ENV_PREFIX = "ACOPIO_"
# Environment variables that are not settings but choose where settings come from.
ENV_NON_SETTINGS = frozenset({"ACOPIO_CONFIG"})


class ConfigError(ValueError):
    """A setting is missing, unknown or invalid; the message names it."""


def _setting(default: Any, doc: str, check: Callable[[Any], str | None] | None = None) -> Any:
    return field(default=default, metadata={"doc": doc, "check": check})


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*\.?")


def _listen_host(value: str) -> str | None:
    """An IP address (0.0.0.0, ::, 127.0.0.1) or a host name; `999.1.1.1` passed the check
    and then stopped the service at its start."""
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", value) or not _HOST_NAME.fullmatch(value):
        return "not an IP address or host name"
    return None


def _timezone(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {value!r} (use an IANA name such as America/Mexico_City)"
    return None


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def hub_url_problem(url: str) -> str | None:
    """What is wrong with `url` as a hub's address, or None: `http(s)://host[:port][/prefix]`
    and nothing more. The one rule for `sync.hub_url` and for `acopio sync pair URL`
    (sync.kit.credentials.normalize_url)."""
    parts = urlsplit(url.strip())
    try:
        parts.port  # noqa: B018 -- raises for a port out of range
    except ValueError:
        return "the port must be a number from 1 to 65535"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be http://host[:port] or https://host[:port]"
    if parts.query or parts.fragment or parts.username or parts.password:
        return "a hub URL has no query, fragment or user name"
    return None


def _hub_url(value: str) -> str | None:
    """Checked at load, so that `acopio config check` names it instead of every sync round
    failing; empty means "find a hub with zeroconf"."""
    return hub_url_problem(value) if value.strip() else None


def _named(value: str) -> str | None:
    return None if any(c.isalnum() for c in value) else \
        "must have letters or digits (the kit is known by it on the hub and in the UI)"


def _absolute(value: Path) -> str | None:
    return None if value.is_absolute() else \
        "must be an absolute path (a service's working folder is /)"


def _year(value: int) -> str | None:
    return None if 1900 <= value <= 2100 else "must be a year between 1900 and 2100"


@dataclass(frozen=True)
class KitConfig:
    name: str = _setting("acopio", "Name of this kit, shown in the UI and used by sync.",
                         _named)
    timezone: str = _setting(
        "America/Mexico_City",
        "IANA time zone for capture times without an offset and for agenda windows.",
        _timezone,
    )
    language: str = _setting("es-MX", "Language of the screens.", _one_of("es-MX", "en"))
    clock: str = _setting(
        "auto",
        "Whether the box's clock may judge camera times as in the future: auto (when NTP "
        "has set it), trusted (a battery-backed clock), untrusted.",
        _one_of("auto", "trusted", "untrusted"),
    )


@dataclass(frozen=True)
class IngestConfig:
    min_free_mb: int = _setting(
        256,
        "Stop importing when the archive disk would have less than this many MiB free.",
        _non_negative,
    )
    earliest_year: int = _setting(
        1990, "Capture times before this year are flagged as implausible.", _year
    )
    future_tolerance_hours: int = _setting(
        24,
        "Capture times more than this many hours ahead of a trusted clock (kit.clock) are "
        "flagged as implausible.",
        _non_negative,
    )
    probe_timeout_s: float = _setting(
        30.0, "Seconds allowed to read one file's metadata (ffprobe, exiftool).", _positive
    )
    catalog_batch: int = _setting(
        64,
        "Verified files recorded in the catalog per write (a crash re-adopts the rest).",
        _positive,
    )
    extra_clutter: tuple[str, ...] = _setting(
        (), "Extra file or folder name patterns (glob, case-insensitive) never imported."
    )


@dataclass(frozen=True)
class DevicesConfig:
    mount_command: str = _setting(
        "mount -o ro,nosuid,nodev,noexec {device} {mountpoint}",
        "Command that mounts a card read-only; placeholders {device} and {mountpoint}.",
        templates.checker(("device", "mountpoint")),
    )
    unmount_command: str = _setting(
        "umount {mountpoint}", "Command that unmounts a card; placeholder {mountpoint}.",
        templates.checker(("mountpoint",)),
    )
    filesystems: tuple[str, ...] = _setting(
        ("vfat", "exfat", "ntfs", "ntfs3", "hfsplus", "ext2", "ext3", "ext4", "btrfs", "xfs",
         "udf", "iso9660"),
        "Filesystem types (udev ID_FS_TYPE) that are mounted; others are reported, not touched.",
    )
    mount_root: Path = _setting(
        Path("/run/acopio/media"), "Private folder under which cards are mounted."
    )
    command_timeout_s: float = _setting(
        30.0, "Seconds allowed for a mount or unmount command.", _positive
    )
    inbox_settle_s: float = _setting(
        5.0,
        "Seconds a file in <data>/inbox/ must stay unchanged, and not open for writing by a "
        "process on the box, before it is imported; raise it for slow or flaky shares.",
        _positive,
    )
    gphoto2_port: str = _setting(
        "usb:{busnum},{devnum}",
        "libgphoto2 port of a PTP/MTP camera; placeholders {busnum} and {devnum} from udev.",
        templates.checker(("busnum", "devnum"), split=False),
    )
    system_paths: tuple[str, ...] = _setting(
        ("/", "/boot", "/boot/firmware"),
        "The disks holding these paths (the box's own) are never imported; the data folder "
        "is always added.",
    )
    audio_input: str = _setting(
        "-f alsa -i hw:{card}",
        "ffmpeg input arguments for recording a microphone, split like a shell would but never "
        "run by one; {card} (the ALSA card number) is filled in after splitting.",
        templates.checker(("card", "device"), required=("-i",)),
    )
    video_input: str = _setting(
        "-f v4l2 -i {device}",
        "ffmpeg input arguments for recording a webcam; {device} (its node, /dev/video0) is "
        "filled in after splitting. A second input (-f alsa -i hw:2) adds its sound.",
        templates.checker(("card", "device"), required=("-i",)),
    )
    audio_format: str = _setting(
        "flac", "File format of microphone recordings.", _one_of("flac", "wav")
    )


@dataclass(frozen=True)
class WorkerConfig:
    lease_s: float = _setting(
        60.0, "Seconds a worker holds a job without a heartbeat; a dead worker's job comes "
        "back after this.", _positive)
    poll_s: float = _setting(2.0, "Seconds an idle worker waits before looking again.",
                             _positive)
    timeout_s: float = _setting(
        300.0, "Seconds a derivative job may take at least (ffmpeg is killed after that).",
        _positive)
    timeout_per_media_s: float = _setting(
        4.0, "Extra seconds allowed per second of video or audio (a long transcode).",
        _non_negative)


def _port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else "must be a TCP port between 1 and 65535"


@dataclass(frozen=True)
class WebConfig:
    host: str = _setting("0.0.0.0", "Address the web UI listens on (0.0.0.0: every interface).",
                         _listen_host)
    port: int = _setting(8080, "TCP port of the web UI.", _port)
    threads: int = _setting(8, "Request threads of the web server.", _positive)
    connections_per_address: int = _setting(
        24, "Open connections one client address may hold (web UI and hub); more are closed "
        "at once, so one machine cannot hold every connection (a browser uses up to six).",
        _positive)
    allowed_hosts: tuple[str, ...] = _setting(
        (), "Extra names the web UI answers to in the Host header, beside IP addresses, "
        "localhost, the box's host name and <kit name>.local (DNS rebinding guard).")
    session_idle_hours: float = _setting(
        12.0, "A session unused for this many hours ends (log in again).", _positive)
    session_max_hours: float = _setting(
        72.0, "A session ends this many hours after login, used or not.", _positive)
    login_attempts: int = _setting(
        5, "Failed logins allowed per user name and address within login_window_s.", _positive)
    login_window_s: float = _setting(
        300.0, "Seconds over which failed logins are counted (then the block lifts).",
        _positive)
    secure_cookies: bool = _setting(
        False, "Send cookies only over HTTPS (set when a TLS proxy fronts the box).")
    page_size: int = _setting(60, "Thumbnails per page in grids.", _positive)
    zeroconf: bool = _setting(
        True, "Advertise the web UI on the LAN with zeroconf (_http._tcp).")
    zeroconf_interfaces: tuple[str, ...] = _setting(
        (), "Addresses zeroconf advertises on; empty means every interface.")


def _fraction(value: float) -> str | None:
    return None if 0 < value <= 1 else "must be more than 0 and at most 1"


@dataclass(frozen=True)
class EditorialConfig:
    credit_presets: tuple[str, ...] = _setting(
        ("Comunicación Social",),
        "Credit lines offered when describing items (the first is the default).")
    rights: str = _setting(
        "Todos los derechos reservados.",
        "Rights line embedded (IPTC CopyrightNotice, XMP dc:rights) in web-size copies.")
    web_long_side: int = _setting(
        2048, "Long side in pixels of the web-size JPEG for social media.", _positive)
    web_quality: int = _setting(85, "JPEG quality of the web-size copy (1-95).",
                                lambda v: None if 1 <= v <= 95 else "must be from 1 to 95")
    watermark: str = _setting(
        "", "PNG (with transparency) stamped on web-size copies, bottom right; empty: none.")
    watermark_scale: float = _setting(
        0.15, "Watermark width as a fraction of the picture's width.", _fraction)
    zip_max_items: int = _setting(
        5000, "Most items in one ZIP download.", _positive)


def _lanes(value: int) -> str | None:
    return None if 1 <= value <= 4 else "must be from 1 to 4"


# The hub takes request bodies of at most this (sync.hub.server), so a kit's chunk must fit.
MAX_CHUNK_MB = 64


def _chunk(value: int) -> str | None:
    return None if 1 <= value <= MAX_CHUNK_MB else f"must be from 1 to {MAX_CHUNK_MB}"


@dataclass(frozen=True)
class SyncConfig:
    hub_url: str = _setting(
        "", "URL of the headquarters hub (http:// or https://); empty: find one on the LAN "
        "with zeroconf.", _hub_url)
    bandwidth_kbps: int = _setting(
        0, "Upload cap in KiB/s (0: no cap); keeps a phone hotspot usable.", _non_negative)
    chunk_mb: int = _setting(8, "Upload chunk size in MiB, 1 to 64 (at most this is sent "
                             "again after a cut; parallel uploads share it).", _chunk)
    parallel_uploads: int = _setting(
        2, "Originals uploaded at once, each on its own connection (1 to 4): one keeps the "
        "link busy while the hub handles the other's request.", _lanes)
    pause_during_import: bool = _setting(
        True, "Hold uploads while a card or camera is importing.")
    poll_s: float = _setting(30.0, "Seconds between rounds when everything is sent.",
                             _positive)
    retry_max_s: float = _setting(
        300.0, "Longest wait between retries after an error (exponential backoff with "
        "jitter).", _positive)
    evict_below_mb: int = _setting(
        0, "When the archive disk has less than this many MiB free, originals the hub has "
        "acknowledged may be removed from the kit (0: never).", _non_negative)
    ca_file: str = _setting(
        "", "CA certificate (PEM) that signs the hub's HTTPS certificate; empty: the "
        "system's.")
    audit_hours: float = _setting(
        24.0, "Hours between two passes asking the hub whether it still holds every original "
        "it acknowledged (what it lost is sent again); 0: a pass in every round.",
        _non_negative)


@dataclass(frozen=True)
class HubConfig:
    host: str = _setting("0.0.0.0", "Address the hub listens on.", _listen_host)
    port: int = _setting(8090, "TCP port of the hub (sync and its web UI).", _port)
    connections_per_address: int = _setting(
        96, "Open connections one address may hold at the hub; more than the web UI's, for "
        "kits that reach it through one shared address (a venue's NAT), four each.",
        _positive)
    max_upload_gb: float = _setting(
        64.0, "Largest single file a kit may upload, in GiB.", _positive)
    pair_code_minutes: float = _setting(
        60.0, "Minutes a pairing code from `acopio hub pair` stays valid.", _positive)
    zeroconf: bool = _setting(True, "Advertise the hub on the LAN (_acopio-hub._tcp).")


def _print_dpi(value: int) -> str | None:
    return None if 150 <= value <= 300 else "must be from 150 to 300 (print resolution)"


@dataclass(frozen=True)
class MuralConfig:
    institution: str = _setting(
        "H. Ayuntamiento — Comunicación Social",
        "Institution named at the top of the printed mural and of the results report.")
    title: str = _setting("Mural de actividades", "Title of the printed mural.")
    photos_per_activity: int = _setting(
        4, "Most photos per activity on the printed mural (its best approved ones); fewer "
        "when the month does not fit.", lambda v: None if 1 <= v <= 12 else
        "must be from 1 to 12")
    dpi: int = _setting(150, "Resolution of the printed mural and the results report PDF, "
                        "in dots per inch (150-300).", _print_dpi)


@dataclass(frozen=True)
class KioskConfig:
    browser: str = _setting(
        "/usr/bin/chromium", "Chromium that `acopio kiosk` starts full screen on the display.")
    url: str = _setting(
        "", "Page the kiosk opens; empty: the mural of this box's own web UI "
        "(http://127.0.0.1:<web.port>/mural).")
    extra_args: tuple[str, ...] = _setting(
        (), "Extra Chromium arguments, before the URL (e.g. --ozone-platform=wayland).")


@dataclass(frozen=True)
class Config:
    data_dir: Path = _setting(
        DEFAULT_DATA_DIR, "Folder holding the archive, the catalog and all state (an "
        "absolute path; `--data-dir` and ACOPIO_DATA_DIR may be relative to the current "
        "folder).", _absolute)
    log_level: str = _setting(
        "info", "Log level.", _one_of("debug", "info", "warning", "error")
    )
    kit: KitConfig = field(default_factory=KitConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    devices: DevicesConfig = field(default_factory=DevicesConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    web: WebConfig = field(default_factory=WebConfig)
    editorial: EditorialConfig = field(default_factory=EditorialConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    kiosk: KioskConfig = field(default_factory=KioskConfig)
    mural: MuralConfig = field(default_factory=MuralConfig)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.kit.timezone)


def iter_settings(cls: type = Config, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field]]:
    """Every setting as (dotted key, field), sections expanded; used by docs and the env map."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from iter_settings(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f


def env_name(key: str) -> str:
    return ENV_PREFIX + key.replace(".", "_").upper()


def _coerce(key: str, hint: Any, value: Any, from_env: bool) -> Any:
    """Convert a raw TOML or environment value to the field's type, or raise ConfigError."""
    origin = typing.get_origin(hint)
    if hint is bool:
        if from_env and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint is int or hint is float:
        if from_env and isinstance(value, str):
            try:
                return hint(value.strip())
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{key}: expected a whole number, got {value!r}")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected text, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: expected a path, got {value!r}")
        return Path(value).expanduser()
    if origin is tuple:
        if from_env and isinstance(value, str):
            if value.lstrip().startswith("["):  # a JSON array: items that hold commas
                try:
                    value = json.loads(value)
                except ValueError as exc:
                    raise ConfigError(f"{key}: not a JSON array of text: {exc}") from None
            else:
                value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of text, got {value!r}")
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{key}: unsupported setting type {hint!r}")
    raise ConfigError(f"{key}: unsupported setting type {hint!r}")


def _build(cls: type, raw: Mapping[str, Any], prefix: str, sources: dict[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            raise ConfigError(f"unknown setting {prefix}{key!s}")
    values: dict[str, Any] = {}
    for name, f in names.items():
        key = f"{prefix}{name}"
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            section = raw.get(name, {})
            if not isinstance(section, Mapping):
                raise ConfigError(f"{key}: expected a table [{key}]")
            values[name] = _build(hint, section, f"{key}.", sources)
            continue
        if name not in raw:
            continue
        from_env = sources.get(key) == "env"
        try:
            value = _coerce(key, hint, raw[name], from_env=from_env)
            check = f.metadata.get("check")
            problem = check(value) if check else None
            if problem:
                raise ConfigError(f"{key}: {problem} (got {value!r})")
        except ConfigError as exc:
            if from_env:  # said where it came from: the file may not even have the key
                raise ConfigError(f"{exc} (from the environment variable {env_name(key)})"
                                  ) from None
            raise
        values[name] = value
    return cls(**values)


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    *sections, last = key.split(".")
    node = raw
    for section in sections:
        node = node.setdefault(section, {})
    node[last] = value


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> Config:
    """Load and validate the configuration.

    `path` None means `$ACOPIO_CONFIG`, else the default path if it exists, else defaults only.
    An explicitly named file that does not exist is an error.
    """
    environ = os.environ if environ is None else environ
    if path is None and environ.get("ACOPIO_CONFIG"):
        path = environ["ACOPIO_CONFIG"]
    raw: dict[str, Any] = {}
    if path is not None or DEFAULT_CONFIG_PATH.exists():
        file = Path(path) if path is not None else DEFAULT_CONFIG_PATH
        try:
            with open(file, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"configuration file not found: {file}") from None
        except PermissionError:
            raise ConfigError(
                f"{file}: cannot be read by this user (uid {os.getuid()}); the services run "
                "as acopio: make it readable (chmod 0644, or chown root:acopio and chmod "
                "0640)") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})"
                              ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        except OSError as exc:  # a folder, a device, an I/O error
            raise ConfigError(f"{file}: cannot be read: {exc.strerror or exc}") from None
    sources: dict[str, str] = {}
    by_env = {env_name(key): key for key, _ in iter_settings()}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_NON_SETTINGS:
            continue
        key = by_env.get(name)
        if key is None:
            raise ConfigError(f"unknown setting in environment variable {name}")
        if key == "data_dir":
            value = os.path.abspath(value)  # typed at a shell: relative to where it was
        _set_dotted(raw, key, value)
        sources[key] = "env"
    if data_dir is not None:
        raw["data_dir"] = os.path.abspath(os.fspath(data_dir))
    return _build(Config, raw, "", sources)


def file_problems(config: Config) -> list[str]:
    """Settings that name a file that is not there. Not a load error: a missing watermark
    must not stop a box's imports at an event; `acopio config check` reports them."""
    problems = []
    for key, path, consequence in (
            ("editorial.watermark", config.editorial.watermark,
             "web-size copies will be refused"),
            ("sync.ca_file", config.sync.ca_file, "HTTPS to the hub will fail")):
        if path and not Path(path).is_file():
            problems.append(f"{key}: {path}: no such file ({consequence})")
    return problems


def as_dict(config: Config) -> dict[str, Any]:
    """The effective settings as plain data (for `acopio config check --show`)."""
    out: dict[str, Any] = {}
    for key, _ in iter_settings():
        value: Any = config
        for part in key.split("."):
            value = getattr(value, part)
        if isinstance(value, Path):
            value = os.fspath(value)
        elif isinstance(value, tuple):
            value = list(value)
        _set_dotted(out, key, value)
    return out
