from __future__ import annotations

import pytest

from appliance import config as config_mod
from appliance import templates
from appliance.config import ConfigError
from ingest.devices.mounts import command_args


def test_values_fill_inside_their_argument_and_never_split() -> None:
    args = templates.fill("mount -o ro,nosuid {device} '{mountpoint}'",
                          {"device": "/dev/sdb1 -o rw", "mountpoint": "/run/a b"})
    assert args == ["mount", "-o", "ro,nosuid", "/dev/sdb1 -o rw", "/run/a b"]
    assert command_args("umount {mountpoint}", mountpoint="; rm -rf /") == [
        "umount", "; rm -rf /"]


@pytest.mark.parametrize(("template", "message"), [
    ("mount 'unclosed", "cannot be split"),
    ("", "must not be empty"),
    ("mount {device} {where}", "unknown placeholder(s) {where}"),
])
def test_problems_are_named(template: str, message: str) -> None:
    assert message in (templates.problem(template, ("device", "mountpoint")) or "")


def test_a_missing_value_is_an_error() -> None:
    with pytest.raises(templates.TemplateError, match=r"needs \{card\}"):
        templates.fill("-f alsa -i hw:{card}", {"device": "/dev/video0"})


def test_config_checks_templates() -> None:
    with pytest.raises(ConfigError, match=r"devices.mount_command: unknown placeholder"):
        config_mod.load(None, environ={"ACOPIO_DEVICES_MOUNT_COMMAND": "mount {dev} {mountpoint}"})
    with pytest.raises(ConfigError, match=r"devices.gphoto2_port: unknown placeholder"):
        config_mod.load(None, environ={"ACOPIO_DEVICES_GPHOTO2_PORT": "usb:{bus},{devnum}"})
    with pytest.raises(ConfigError, match=r"devices.audio_input: must contain -i"):
        config_mod.load(None, environ={"ACOPIO_DEVICES_AUDIO_INPUT": "-f alsa hw:{card}"})
