"""What was plugged in, told by udev: classification of udev devices and a watcher over them.

Why udev and not polling /dev or /proc/mounts: the box runs unattended, a card must be noticed
the moment it appears, and udev has already identified everything we need (filesystem type,
UUID and label from blkid, gphoto2/libmtp camera tags, ALSA and V4L2 capabilities). The kernel
event goes through udevd, which adds those properties and rebroadcasts it on the "udev" netlink
group; a real `pyudev.Monitor` listens there.

Three layers, so each can be tested on its own:

* `classify()` is a pure function of (subsystem, devtype, properties): it decides what kind of
  device this is for Acopio (card, camera, microphone, webcam) or None. Unit tests feed it
  property sets copied from real `udevadm info` dumps.
* `event_from_properties()` turns one udev device into a `DeviceEvent` (stable short id, human
  name, the few properties later stages need). Also pure.
* `UdevWatcher` owns the pyudev context and monitor: coldplug enumeration at start, then live
  events. It remembers what it reported, by syspath, because udev no longer has a device's
  properties once it is gone: a "remove" is classified from what was seen before and carries the
  same id as the "add".

Ordering at start (see `UdevWatcher`): the monitor socket is bound BEFORE coldplug enumerates,
so a device plugged in between is never lost; the price is that it may be reported twice, once
by `coldplug()` and once as an "add" from `events()`. The caller must treat "add" of an id it
already tracks as a no-op (it has to anyway: a watcher restart coldplugs every attached device
again).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import pyudev

from ingest.devices.state import DeviceKind

Action = Literal["add", "remove", "change"]

# What the monitor listens to: (subsystem, devtype or None for every devtype).
WATCHED: tuple[tuple[str, str | None], ...] = (
    ("block", None),
    ("usb", "usb_device"),
    ("sound", None),
    ("video4linux", None),
)

# Paths whose backing block devices belong to the box itself (its own root SD card, boot
# partition). Such devices, and every partition of the same disk, are never reported. A box
# whose archive lives on a USB disk must add its data folder here (`system_paths=`).
SYSTEM_PATHS: tuple[str, ...] = ("/", "/boot", "/boot/firmware")

# udev properties later stages use (mount, card identity, gphoto2 port, ffmpeg inputs, names).
KEPT_PROPERTIES: tuple[str, ...] = (
    "SUBSYSTEM",
    "DEVTYPE",
    "DEVNAME",
    "ID_FS_UUID",
    "ID_FS_LABEL",
    "ID_FS_TYPE",
    "ID_FS_VERSION",
    "ID_FS_USAGE",
    "ID_VENDOR",
    "ID_VENDOR_ID",
    "ID_MODEL",
    "ID_MODEL_ID",
    "ID_SERIAL",
    "ID_SERIAL_SHORT",
    "BUSNUM",
    "DEVNUM",
    "ID_BUS",
    "ID_PATH",
    "ID_GPHOTO2",
    "ID_MTP_DEVICE",
    "ID_V4L_CAPABILITIES",
    "ID_V4L_PRODUCT",
)

# Block devices that are never removable media, whatever their properties say.
_VIRTUAL_BLOCK = re.compile(r"(loop|ram|zram|dm-|md|nbd|fd)\d")
_SOUND_CARD = re.compile(r"card(\d+)")
_USB_IN_DEVPATH = re.compile(r"/usb\d+/")
_UDEV_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- classification


def _sys_name(properties: Mapping[str, str]) -> str:
    devpath = properties.get("DEVPATH", "")
    return devpath.rstrip("/").rsplit("/", 1)[-1]


def _on_usb(properties: Mapping[str, str]) -> bool:
    """Attached through USB: the bus udev's usb_id found, the persistent path, or the sysfs
    path itself (old udev versions and some rules leave ID_BUS/ID_PATH out)."""
    return (
        properties.get("ID_BUS", "") == "usb"
        or "usb" in properties.get("ID_PATH", "")
        or bool(_USB_IN_DEVPATH.search(properties.get("DEVPATH", "")))
    )


def _on_sd_or_mmc(properties: Mapping[str, str]) -> bool:
    """An SD/MMC slot: built in (platform-fe340000.mmc on a Pi, rtsx_pci_sdmmc in laptops) or
    SDIO. The box's own root card is such a device too; the watcher excludes it by mounts."""
    id_path = properties.get("ID_PATH", "")
    devname = properties.get("DEVNAME", "")
    return (
        "mmc" in id_path
        or "sdio" in id_path
        or "/mmc_host/" in properties.get("DEVPATH", "")
        or os.path.basename(devname).startswith("mmcblk")
    )


def _is_card(devtype: str | None, properties: Mapping[str, str]) -> bool:
    if not properties.get("ID_FS_TYPE", "").strip():
        return False
    # crypto_LUKS, LVM2_member, linux_raid_member and swap have an ID_FS_TYPE too, but they
    # are not filesystems (blkid sets ID_FS_USAGE to crypto, raid, other). Any real filesystem
    # is accepted here; whether it can be mounted is decided later.
    usage = properties.get("ID_FS_USAGE", "filesystem")
    if usage not in ("filesystem", ""):
        return False
    if devtype == "disk":
        # A whole disk counts only when it carries the filesystem itself (superfloppy cards
        # without a partition table). A hybrid ISO has both, and its partitions are reported.
        if properties.get("ID_PART_TABLE_TYPE"):
            return False
    elif devtype != "partition":
        return False
    devpath = properties.get("DEVPATH", "")
    if "/devices/virtual/" in devpath:
        return False
    name = os.path.basename(properties.get("DEVNAME", "")) or _sys_name(properties)
    if _VIRTUAL_BLOCK.match(name):
        return False
    return _on_usb(properties) or _on_sd_or_mmc(properties)


def classify(subsystem: str, devtype: str | None,
             properties: Mapping[str, str]) -> DeviceKind | None:
    """What kind of device this is for Acopio, or None when it is none of ours.

    * "card": a block partition with a filesystem (or a whole disk formatted without partition
      table) on USB, SD or MMC. Internal SATA/NVMe/virtio disks and loop/ram/dm/md devices are
      not cards. The box's own root card IS classified as a card here: only the mounts can tell
      it apart, and that is the caller's check (`UdevWatcher` does it).
    * "camera": a whole USB device that libgphoto2 (ID_GPHOTO2) or libmtp (ID_MTP_DEVICE=1)
      tagged: PTP cameras, and phones in PTP/MTP mode.
    * "microphone": the card-level ALSA device (sys name cardN) of a USB sound card. udev does
      not say whether a card can capture; USB sound cards are accepted and the recorder finds
      out (a playback-only DAC fails there, with a reason).
    * "webcam": a V4L2 node with ":capture:" on USB. Metadata nodes (ID_V4L_CAPABILITIES=":"),
      loopback devices and a Pi's platform codec/ISP nodes are not webcams.
    """
    if subsystem == "block":
        return "card" if _is_card(devtype, properties) else None
    if subsystem == "usb":
        if devtype != "usb_device":
            return None
        gphoto2 = properties.get("ID_GPHOTO2", "").strip()
        if (gphoto2 and gphoto2 != "0") or properties.get("ID_MTP_DEVICE", "").strip() == "1":
            return "camera"
        return None
    if subsystem == "sound":
        if _SOUND_CARD.fullmatch(_sys_name(properties)) and _on_usb(properties):
            return "microphone"
        return None
    if subsystem == "video4linux":
        if ":capture:" in properties.get("ID_V4L_CAPABILITIES", "") and _on_usb(properties):
            return "webcam"
        return None
    return None


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class DeviceEvent:
    """One classified udev event, as the device watcher hands it on.

    `id` is short and stable while the device stays plugged in: the kernel name (sdb1, card1,
    video0) or, for PTP/MTP cameras, "usb-BUS-DEV" (gphoto2's port is usb:BUS,DEV).
    `properties` keeps only the udev properties later stages use (`KEPT_PROPERTIES`), plus
    ALSA_CARD (the card number) for microphones.
    """

    action: Action
    kind: DeviceKind
    id: str
    syspath: str
    devnode: str = ""
    properties: dict[str, str] = field(default_factory=dict)
    name: str = ""

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


def _unescape(value: str) -> str:
    """udev's *_ENC properties escape spaces and other bytes as \\xNN."""
    raw = _UDEV_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), value.encode("utf-8"))
    return raw.decode("utf-8", errors="replace")


def _clean(text: str) -> str:
    return " ".join(text.split())


def _vendor_model(properties: Mapping[str, str]) -> str:
    """'Canon EOS 90D', 'SanDisk Extreme': the device's own strings, readable."""

    def pick(key: str) -> str:
        enc = properties.get(f"{key}_ENC", "")
        text = _clean(_unescape(enc) if enc else properties.get(key, "").replace("_", " "))
        if not text or text.lower() == properties.get(f"{key}_ID", "").lower():
            # usb_id falls back to the numeric id when the device has no string for it
            text = _clean(properties.get(f"{key}_FROM_DATABASE", ""))
        return text

    vendor = pick("ID_VENDOR")
    model = _clean(properties.get("ID_V4L_PRODUCT", "")) or pick("ID_MODEL")
    # "Canon Inc." + "Canon Digital Camera" reads better as the model alone.
    vendor_words = {w.strip(".,").lower() for w in vendor.split() if len(w.strip(".,")) > 2}
    if model and vendor_words & {w.strip(".,").lower() for w in model.split()}:
        return model
    return " ".join(part for part in (vendor, model) if part)


def human_name(kind: DeviceKind, device_id: str, properties: Mapping[str, str]) -> str:
    """What a person would call the device: 'EOS_DIGITAL (SanDisk Extreme)', 'Canon EOS 90D'."""
    product = _vendor_model(properties)
    if kind == "card":
        label = _clean(properties.get("ID_FS_LABEL", ""))
        if label and product:
            return f"{label} ({product})"
        if label:
            return label
        return f"{product} ({device_id})" if product else device_id
    return product or device_id


def _device_id(kind: DeviceKind, sys_name: str, properties: Mapping[str, str]) -> str:
    if kind == "camera":
        busnum, devnum = properties.get("BUSNUM", ""), properties.get("DEVNUM", "")
        if busnum and devnum:
            return f"usb-{busnum}-{devnum}"
    return sys_name


def event_from_properties(action: Action, syspath: str,
                          properties: Mapping[str, str]) -> DeviceEvent | None:
    """A `DeviceEvent` for one udev device, or None when it is not one of ours.

    `properties` are the device's udev properties, with SUBSYSTEM, DEVTYPE (if any), DEVPATH
    and DEVNAME as udev reports them.
    """
    props = dict(properties)
    if "DEVPATH" not in props and syspath.startswith("/sys/"):
        props["DEVPATH"] = syspath[len("/sys"):]
    kind = classify(props.get("SUBSYSTEM", ""), props.get("DEVTYPE") or None, props)
    if kind is None:
        return None
    sys_name = os.path.basename(syspath.rstrip("/")) or _sys_name(props)
    kept = {key: props[key] for key in KEPT_PROPERTIES if props.get(key, "") != ""}
    if kind == "microphone":
        match = _SOUND_CARD.fullmatch(sys_name)
        if match:
            kept["ALSA_CARD"] = match.group(1)
    device_id = _device_id(kind, sys_name, props)
    return DeviceEvent(
        action=action,
        kind=kind,
        id=device_id,
        syspath=syspath,
        devnode=props.get("DEVNAME", ""),
        properties=kept,
        name=human_name(kind, device_id, props),
    )


def device_properties(device: pyudev.Device) -> dict[str, str]:
    """All udev properties of a pyudev device, with the identity keys filled in.

    Under real udev a monitor event carries every property; enumerated devices read them from
    the udev database. SUBSYSTEM/DEVTYPE/DEVNAME/DEVPATH are taken from the device itself too,
    so classification never depends on how the properties were delivered.
    """
    props: dict[str, str] = {}
    with contextlib.suppress(OSError, pyudev.DeviceNotFoundError):  # gone while we looked
        props.update(device.properties.items())
    props.setdefault("SUBSYSTEM", device.subsystem or "")
    if device.device_type:
        props.setdefault("DEVTYPE", device.device_type)
    if device.device_node:
        props.setdefault("DEVNAME", device.device_node)
    props.setdefault("DEVPATH", device.device_path)
    return props


# --------------------------------------------------------------------------- watcher


class UdevWatcher:
    """Coldplug enumeration and live udev events, classified, for the device watcher role.

    Usage (one thread)::

        watcher = UdevWatcher()
        watcher.start()                   # binds the monitor socket: from now on nothing is lost
        for event in watcher.coldplug():  # what is attached now, as "add"
            ...
        for event in watcher.events(stop):  # until stop is set
            ...

    Why start() comes first: a device plugged in while coldplug enumerates is then both
    enumerated and queued on the socket. Reporting it twice is harmless (the caller treats
    "add" of a known id as a no-op); missing it would leave a card unimported until replugged.

    What events() yields, per syspath it has reported before (`known`):

    * "add" when a device becomes one of ours: its "add" event, or a "change" that makes it
      classifiable. ALSA cards get their ID_BUS/ID_PATH only on the "change" udev synthesises
      once the card is set up (78-sound-card.rules), and a superfloppy card put into a reader
      shows up as a "change" of the reader's disk.
    * "change" when a known device's kept properties changed (identical ones are dropped).
    * "remove" with the id, kind and properties of what was reported, either on udev's
      "remove" or on a "change" after which it no longer classifies (card taken out of a
      reader whose disk stays).

    The box's own disks (`system_paths`) are never reported. If the kernel drops events because
    the socket overflowed (ENOBUFS), the watcher re-enumerates and reports the difference.
    """

    def __init__(self, context: pyudev.Context | None = None, *,
                 system_paths: Iterable[str | os.PathLike[str]] = SYSTEM_PATHS,
                 system_device_numbers: Iterable[int] = (),
                 receive_buffer_size: int = 8 * 1024 * 1024) -> None:
        self.context = context if context is not None else pyudev.Context()
        self.monitor = pyudev.Monitor.from_netlink(self.context)
        for subsystem, devtype in WATCHED:
            self.monitor.filter_by(subsystem, devtype)
        self.system_paths = tuple(os.fspath(p) for p in system_paths)
        self.system_device_numbers = tuple(system_device_numbers)  # st_dev values, for tests
        self.receive_buffer_size = receive_buffer_size
        self.known: dict[str, DeviceEvent] = {}  # syspath -> last event reported for it
        self._system_syspaths: frozenset[str] = frozenset()
        self._started = False

    # -- lifecycle

    def start(self) -> None:
        """Bind the monitor socket (idempotent). Call before `coldplug()`."""
        if self._started:
            return
        try:
            # A storm of events must not overflow the socket; needs CAP_NET_ADMIN (root).
            self.monitor.set_receive_buffer_size(self.receive_buffer_size)
        except (OSError, ValueError) as exc:
            log.debug("cannot enlarge the udev receive buffer: %s", exc)
        self.monitor.start()
        self._system_syspaths = self._find_system_syspaths()
        self._started = True

    def _find_system_syspaths(self) -> frozenset[str]:
        """Syspaths of the block devices (and their whole disks) behind `system_paths`."""
        numbers = set(self.system_device_numbers)
        for path in self.system_paths:
            with contextlib.suppress(OSError):
                numbers.add(os.stat(path).st_dev)
        found: set[str] = set()
        for st_dev in numbers:
            if os.major(st_dev) == 0:  # tmpfs, overlay, btrfs subvolume: not a block device
                continue
            try:
                device = pyudev.Devices.from_device_number(self.context, "block", st_dev)
            except (pyudev.DeviceNotFoundError, OSError, ValueError):
                continue
            found.add(device.sys_path)
            disk = device.find_parent("block", "disk")
            if disk is not None and device.device_type == "partition":
                found.add(disk.sys_path)
        return frozenset(found)

    def _is_system(self, syspath: str) -> bool:
        if not self._system_syspaths:
            return False
        return syspath in self._system_syspaths or os.path.dirname(syspath) in self._system_syspaths

    # -- enumeration

    def _enumerate(self) -> dict[str, DeviceEvent]:
        found: dict[str, DeviceEvent] = {}
        for subsystem, devtype in WATCHED:
            enumerator = self.context.list_devices(subsystem=subsystem)
            if devtype is not None:
                enumerator = enumerator.match_property("DEVTYPE", devtype)
            for device in enumerator:
                if self._is_system(device.sys_path):
                    continue
                event = event_from_properties("add", device.sys_path, device_properties(device))
                if event is not None:
                    found[device.sys_path] = event
        return found

    def coldplug(self) -> list[DeviceEvent]:
        """Every device of ours attached now, as "add" events (starts the monitor first)."""
        self.start()
        found = self._enumerate()
        self.known.update(found)
        return list(found.values())

    def _resync(self) -> list[DeviceEvent]:
        """After lost events: report what appeared and what vanished since we last knew."""
        found = self._enumerate()
        events = [replace(old, action="remove") for path, old in self.known.items()
                  if path not in found]
        events += [new for path, new in found.items() if path not in self.known]
        self.known = found
        return events

    # -- live events

    def handle(self, action: str, syspath: str,
               properties: Mapping[str, str]) -> DeviceEvent | None:
        """One raw udev event -> the event to report, or None. Updates `known`."""
        if self._is_system(syspath):
            return None
        known = self.known.get(syspath)
        if action == "remove":
            if known is not None:
                del self.known[syspath]
                return replace(known, action="remove")
            # Never reported (e.g. it appeared and vanished before we could classify its add):
            # real udev still sends the properties with a remove, so classify those.
            return event_from_properties("remove", syspath, properties)
        if action not in ("add", "change", "bind", "online"):
            return None  # unbind, offline, move: nothing we act on
        event = event_from_properties("add", syspath, properties)
        if event is None:
            if known is not None and action == "change":
                del self.known[syspath]  # e.g. the card was taken out of a superfloppy reader
                return replace(known, action="remove")
            return None
        if known is None or action == "add":
            self.known[syspath] = event
            return event
        if event.properties == known.properties and event.devnode == known.devnode:
            return None
        event = replace(event, action="change")
        self.known[syspath] = event
        return event

    def events(self, stop: threading.Event, poll_timeout: float = 0.5) -> Iterator[DeviceEvent]:
        """Classified events until `stop` is set (checked at least every `poll_timeout` s)."""
        self.start()
        while not stop.is_set():
            try:
                device = self.monitor.poll(timeout=poll_timeout)
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                log.warning("udev events were lost (receive buffer overflow); re-enumerating")
                yield from self._resync()
                continue
            if device is None:
                continue
            event = self.handle(device.action or "change", device.sys_path,
                                device_properties(device))
            if event is not None:
                yield event
