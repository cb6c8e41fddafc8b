"""Recording from the web UI's record button (`POST /api/devices/<id>/record`).

A physical microphone cannot exist here, so the device record is what the udev watcher
writes for one, and ffmpeg's lavfi sine source stands in for ALSA through the same
`devices.audio_input` setting a real box uses (as in tests/test_capture.py). Everything
else is real: ffmpeg records, stops cleanly, and the file goes through the verified import
into the archive, where "Lo más reciente" shows it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from appliance.datadir import DataDir
from ingest.devices import capture
from ingest.devices.capture import Recorder
from ingest.devices.state import Device, DeviceStates
from tests.conftest import require_tool
from tests.webclient import web_app

AUDIO = "-re -f lavfi -i sine=frequency=440:sample_rate=48000"


def _microphone(data_dir: Path) -> Device:
    device = Device(id="card1", kind="microphone", status="ready", name="USB Audio",
                    syspath="/sys/devices/pci0000:00/usb1/1-1/1-1:1.0/sound/card1")
    DataDir.at(data_dir).ensure()
    return DeviceStates(DataDir.at(data_dir).state).put(device)


@pytest.mark.slow
def test_record_button_records_and_imports(data_dir: Path) -> None:
    require_tool("ffmpeg")
    _microphone(data_dir)
    env = {"ACOPIO_DEVICES_AUDIO_INPUT": AUDIO}
    with web_app(data_dir, env) as web:
        web.ctx.agenda.set_current(None)
        photographer = web.user_and_login("foto", "photographer")
        designer = web.user_and_login("diseno", "designer")
        try:
            # The status strip offers the microphone, ready.
            status = photographer.get("/api/status").get_json()
            [mic] = [d for d in status["devices"] if d["id"] == "card1"]
            assert (mic["kind"], mic["status"], mic["recording"]) == ("microphone", "ready",
                                                                      None)
            # Diseño may not record; Fotografía may.
            refused = designer.write("POST", "/api/devices/card1/record",
                                     json={"action": "start"})
            assert refused.status_code == 403
            started = photographer.write("POST", "/api/devices/card1/record",
                                         json={"action": "start"})
            assert started.status_code == 200, started.get_data(as_text=True)
            assert started.get_json()["recording"]["status"] == "recording"
            again = photographer.write("POST", "/api/devices/card1/record",
                                       json={"action": "start"})
            assert again.status_code == 409  # already recording: said, not a crash
            status = photographer.get("/api/status").get_json()
            [mic] = [d for d in status["devices"] if d["id"] == "card1"]
            assert mic["recording"]["status"] == "recording"
            time.sleep(2.5)
            stopped = photographer.write("POST", "/api/devices/card1/record",
                                         json={"action": "stop"})
            assert stopped.status_code == 200, stopped.get_data(as_text=True)
            # The import runs in the background; the item shows up in the listing.
            deadline = time.monotonic() + 60
            listed: list[dict] = []
            while time.monotonic() < deadline:
                listed = photographer.get("/api/items?kind=audio").get_json()["items"]
                if listed:
                    break
                time.sleep(0.3)
            assert len(listed) == 1, "the recording never reached the archive"
            item = listed[0]
            assert item["original_name"] == stopped.get_json()["stopped"]
            assert abs(item["duration"] - 2.5) <= 1.0
            assert (data_dir / item["archive_path"]).is_file()
            # Stopping when idle is a 409 with the reason, not a 500.
            idle = photographer.write("POST", "/api/devices/card1/record",
                                      json={"action": "stop"})
            assert idle.status_code == 409 and idle.get_json()["message"]
        finally:
            for recording in Recorder(data_dir, zone=web.ctx.config.zone).active():
                capture.end_process(recording.process, 0)
