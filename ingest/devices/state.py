"""What is attached now and how its import is going, shared between processes.

The watcher (in `acopio run` or `acopio devices watch`) is the only writer; `acopio devices
list`, the recorder and the web UI read it. One small crash-safe TinyDB file: it holds the
devices attached now plus the recently removed ones, never the archive.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from tinydb import Query

from appliance import storage

DeviceKind = Literal["card", "camera", "microphone", "webcam"]
# detected -> mounting -> importing -> done -> safe_to_remove   (cards)
# detected -> importing -> done                                  (PTP cameras)
# ready <-> recording                                            (microphones, webcams)
# removed_early: unplugged before its import finished; error: see `reason`
DeviceStatus = Literal["detected", "mounting", "importing", "done", "safe_to_remove",
                       "removed_early", "error", "ready", "recording", "removed"]


@dataclass
class Device:
    id: str  # the kernel name (sdb1, card1, video0) or the USB bus address of a camera
    kind: DeviceKind
    status: DeviceStatus = "detected"
    name: str = ""  # what a person would call it: label, vendor and model
    devnode: str = ""
    syspath: str = ""
    reason: str = ""  # why it is in error / removed early, in English for logs
    total: int = 0  # media files found on it
    verified: int = 0  # imported and verified
    duplicates: int = 0
    failed: int = 0
    card_id: str = ""  # the card's identity (see cards.py), for its import history
    properties: dict[str, str] = field(default_factory=dict)  # udev properties that matter
    updated_at: str = ""

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Device:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in record.items() if k in known})


class DeviceStates:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "devices.json"
        self.tmp = state_dir / "tmp"

    def all(self) -> list[Device]:
        rows = storage.snapshot(self.path).table("devices").all()
        return sorted((Device.from_record(r) for r in rows), key=lambda d: d.id)

    def get(self, device_id: str) -> Device | None:
        return next((d for d in self.all() if d.id == device_id), None)

    def put(self, device: Device) -> Device:
        device.updated_at = datetime.now(UTC).isoformat()
        with storage.transaction(self.path, self.tmp) as db:
            db.table("devices").upsert(device.to_record(), Query().id == device.id)
        return device

    def update(self, device_id: str, **changes: Any) -> Device | None:
        with storage.transaction(self.path, self.tmp) as db:
            table = db.table("devices")
            row = table.get(Query().id == device_id)
            if row is None:
                return None
            device = Device.from_record(dict(row))
            for key, value in changes.items():
                if not hasattr(device, key):
                    raise AttributeError(f"Device has no field {key!r}")
                setattr(device, key, value)
            device.updated_at = datetime.now(UTC).isoformat()
            table.upsert(device.to_record(), Query().id == device_id)
            return device

    def remove(self, device_id: str) -> None:
        with storage.transaction(self.path, self.tmp) as db:
            db.table("devices").remove(Query().id == device_id)
