from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from appliance import config as config_mod
from appliance.config import ConfigError
from tests.conftest import run_cli


def test_defaults_without_a_file(tmp_path: Path) -> None:
    cfg = config_mod.load(None, environ={}, data_dir=tmp_path)
    assert cfg.data_dir == tmp_path
    assert cfg.kit.timezone == "America/Mexico_City"
    assert cfg.kit.language == "es-MX"
    assert cfg.ingest.earliest_year == 1990


def test_toml_file_and_environment_override(tmp_path: Path) -> None:
    file = tmp_path / "acopio.toml"
    file.write_text(
        'data_dir = "/srv/acopio"\n[kit]\nname = "kit-cultura"\n'
        '[ingest]\nmin_free_mb = 100\nextra_clutter = ["*.lrv"]\n'
    )
    cfg = config_mod.load(file, environ={"ACOPIO_INGEST_MIN_FREE_MB": "7",
                                         "ACOPIO_KIT_TIMEZONE": "America/Tijuana"})
    assert cfg.data_dir == Path("/srv/acopio")
    assert cfg.kit.name == "kit-cultura"
    assert cfg.ingest.min_free_mb == 7  # the environment wins over the file
    assert cfg.kit.timezone == "America/Tijuana"
    assert cfg.ingest.extra_clutter == ("*.lrv",)
    # --data-dir wins over everything
    assert config_mod.load(file, environ={}, data_dir="/x").data_dir == Path("/x")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[ingest]\nmin_free_mb = -1\n", "ingest.min_free_mb: must be 0 or more"),
        ("[ingest]\nmin_free_mb = 'lots'\n", "ingest.min_free_mb: expected a number"),
        ("[ingest]\nmin_free_mb = 1.5\n", "ingest.min_free_mb: expected a whole number"),
        ("[ingest]\nbogus = 1\n", "unknown setting ingest.bogus"),
        ("[nope]\nx = 1\n", "unknown setting nope"),
        ("[kit]\ntimezone = 'Mars/Olympus'\n", "kit.timezone: unknown time zone"),
        ("[kit]\nlanguage = 'fr'\n", "kit.language: must be one of es-MX, en"),
        ("kit = 3\n", "kit: expected a table"),
        ("[ingest]\nextra_clutter = 'x'\n", "ingest.extra_clutter: expected a list"),
        ("this is not toml", "not valid TOML"),
        ("[sync]\nhub_url = 'ftp://hq'\n", "sync.hub_url: must be http://host[:port]"),
        ("[sync]\nhub_url = 'http://hq:99999'\n", "sync.hub_url: the port must be a number"),
        ("[sync]\nhub_url = 'http://u:p@hq'\n", "sync.hub_url: a hub URL has no query"),
        ("[kit]\nname = ' '\n", "kit.name: must have letters or digits"),
        ("data_dir = 'datos'\n", "data_dir: must be an absolute path"),
    ],
)
def test_errors_name_the_bad_key(tmp_path: Path, toml: str, message: str) -> None:
    file = tmp_path / "acopio.toml"
    file.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_mod.load(file, environ={})


def test_environment_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="ACOPIO_INGEST_NOPE"):
        config_mod.load(None, environ={"ACOPIO_INGEST_NOPE": "1"})
    with pytest.raises(ConfigError, match=re.escape("ingest.catalog_batch: must be greater")):
        config_mod.load(None, environ={"ACOPIO_INGEST_CATALOG_BATCH": "0"})


def test_environment_values_are_named_by_their_variable(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=re.escape(
            "ingest.min_free_mb: expected a number") + ".*ACOPIO_INGEST_MIN_FREE_MB"):
        config_mod.load(None, environ={"ACOPIO_INGEST_MIN_FREE_MB": "abc"})
    monkeypatch.chdir(tmp_path)  # typed at a shell: relative to where it was typed
    assert config_mod.load(None, environ={"ACOPIO_DATA_DIR": "datos"}).data_dir == \
        tmp_path / "datos"
    assert config_mod.load(None, environ={}, data_dir="otros").data_dir == tmp_path / "otros"


def test_config_check_reports_a_missing_file_without_stopping_the_box(tmp_path: Path) -> None:
    file = tmp_path / "acopio.toml"
    file.write_text(f"[editorial]\nwatermark = '{tmp_path}/logo.png'\n")
    assert config_mod.load(file, environ={}).editorial.watermark  # services still start
    result = run_cli("--config", file, "--data-dir", tmp_path, "config", "check")
    assert result.returncode == 1
    assert b"editorial.watermark" in result.stderr and b"no such file" in result.stderr
    (tmp_path / "logo.png").write_bytes(b"png")
    assert run_cli("--config", file, "--data-dir", tmp_path, "config", "check"
                   ).returncode == 0


def test_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        config_mod.load(tmp_path / "missing.toml", environ={})


def test_acopio_config_env_names_the_file(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text("[kit]\nname = 'desde-env'\n")
    assert config_mod.load(None, environ={"ACOPIO_CONFIG": str(file)}).kit.name == "desde-env"


def test_cli_config_check(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[kit]\nname = 'kit-1'\n")
    result = run_cli("--config", good, "--data-dir", tmp_path, "config", "check", "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["kit"]["name"] == "kit-1"
    assert shown["data_dir"] == str(tmp_path)

    # Without --json, the effective settings are TOML lines: they can be pasted into a file.
    lines = run_cli("--config", good, "--data-dir", tmp_path, "config", "check").stdout
    *settings, verdict = lines.decode().splitlines()
    assert verdict == "configuration OK"
    flat = {k: json.loads(v) for k, v in (line.split(" = ", 1) for line in settings)}
    assert tomllib.loads("\n".join(settings))["kit"]["name"] == "kit-1"
    assert flat["data_dir"] == str(tmp_path) and flat["ingest.extra_clutter"] == []
    assert flat["sync.hub_url"] == ""

    bad = tmp_path / "bad.toml"
    bad.write_text("[ingest]\nprobe_timeout_s = 0\n")
    result = run_cli("--config", bad, "config", "check")
    assert result.returncode == 2
    assert b"ingest.probe_timeout_s" in result.stderr

    result = run_cli("--data-dir", tmp_path, "config", "check", env={"ACOPIO_KIT_LANGUAGE": "xx"})
    assert result.returncode == 2
    assert b"kit.language" in result.stderr


def test_a_config_that_cannot_be_read_is_a_configuration_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder, bytes that are not UTF-8 or a file the user may not read gave a traceback
    and exit 1 (a 0600 root config made every unit of the acopio user fail that way)."""
    folder = tmp_path / "conf.d"
    folder.mkdir()
    latin = tmp_path / "latin1.toml"
    latin.write_bytes('[kit]\nname = "Comunicaci\xf3n"\n'.encode("latin-1"))
    for path, said in ((folder, "cannot be read"), (latin, "not UTF-8")):
        done = run_cli("--config", path, "config", "check")
        assert done.returncode == 2, done.stderr.decode()
        assert said in done.stderr.decode() and b"Traceback" not in done.stderr, done.stderr
    # root reads any file, so the refusal a 0600 root file gives the acopio user is made here
    secret = tmp_path / "secret.toml"
    secret.write_text('[kit]\nname = "norte"\n')
    real_open = open

    def refuse(file: object, *args: object, **kwargs: object) -> object:
        if str(file) == str(secret):
            raise PermissionError(13, "Permission denied", str(secret))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(ConfigError, match=r"cannot be read by this user .*\(chmod 0644"):
        config_mod.load(secret, environ={})


@pytest.mark.parametrize("host", ["999.1.1.1", "not a host!", "", "1.2.3"])
def test_a_listening_address_is_checked(host: str) -> None:
    """`999.1.1.1` passed `acopio config check`, then stopped the service at its start."""
    with pytest.raises(ConfigError, match=r"web\.host: not an IP address or host name"):
        config_mod.load(environ={"ACOPIO_WEB_HOST": host})
    for good in ("0.0.0.0", "::", "127.0.0.1", "localhost", "acopio.local"):
        assert config_mod.load(environ={"ACOPIO_HUB_HOST": good}).hub.host == good


def test_a_list_item_with_a_comma_can_be_set_from_the_environment() -> None:
    """`ACOPIO_KIOSK_EXTRA_ARGS="--window-size=1920,1080"` was split into two arguments, and
    Chromium refused to start."""
    config = config_mod.load(environ={
        "ACOPIO_KIOSK_EXTRA_ARGS": '["--window-size=1920,1080", "--ozone-platform=x11"]'})
    assert config.kiosk.extra_args == ("--window-size=1920,1080", "--ozone-platform=x11")
    plain = config_mod.load(environ={"ACOPIO_KIOSK_EXTRA_ARGS": "--a, --b"})
    assert plain.kiosk.extra_args == ("--a", "--b")
    with pytest.raises(ConfigError, match=r"kiosk\.extra_args: not a JSON array"):
        config_mod.load(environ={"ACOPIO_KIOSK_EXTRA_ARGS": '["--a",'})
