"""umockdev test bed: mocked udev devices and uevents, seen by a REAL child process.

Why this shape (verified with umockdev 0.17 on Debian 12):

* The code under test runs as a real child process (later `acopio devices watch`) with
  `LD_PRELOAD=<libumockdev-preload.so.0>` and `UMOCKDEV_DIR=<test bed>` (`child_env()`). The
  preload redirects its /sys and /dev into the test bed and turns its udev netlink socket into
  a Unix socket in the test bed ($UMOCKDEV_DIR/event<fd>), so its pyudev Monitor and
  enumeration see only the mocked devices.
* The SENDER needs the preload too: `umockdev_testbed_uevent()` looks the device up with
  libudev (`udev_device_new_from_syspath("/sys/devices/...")`) before it builds the message.
  Without the preload that reads the real /sys and fails ("ERROR: uevent_sender_send: No such
  device"), and no event is sent. Creating the test bed and adding devices works without it.
  Since pytest itself must not run under the preload (every other test would see a fake /sys),
  the test bed is owned by a small long-lived helper process: this file run as a script under
  the preload, taking JSON-line commands on stdin (add devices, uevent, remove) and answering
  on stdout. pytest talks to it through `UdevTestbed`.
* Adding a device (`umockdev_testbed_add_from_string`) already sends an "add" uevent for it
  to every monitor listening, parent first, as a real plug-in would; removing one
  (`umockdev_testbed_remove_device`) sends nothing, so `remove()` sends "remove" uevents
  itself (child first) before removing. umockdev 0.17 puts every property of the device's
  mocked uevent file into the message, like udevd does, so a "remove" handled after the device
  is gone still carries ID_FS_UUID and the rest.
* Delivery is a non-blocking send on a Unix datagram socket: when the child has more than
  net.unix.max_dgram_qlen (10 on Debian) events unread, further ones are DROPPED silently. Real
  netlink has a byte budget instead (the watcher asks for 8 MiB). Storm tests must therefore
  wait for the child every few events (see test_udev's storm), or they test the test bed.
* umockdev 0.17 aborts the whole helper when a /dev node name is used twice (checked here
  first, reported as an error), and leaves a dangling /sys/block/<name> link behind on
  removal, which would abort the next add of the same name (swept here after each removal).

Use from a test module: `udev_testbed = udevbed.udev_testbed` (or list "tests.udevbed" in
conftest's pytest_plugins), then `def test_x(udev_testbed): ...`; start the code under test
with `env=udev_testbed.child_env()`; `JsonLinesChild` reads its JSON-lines output with
timeouts and kills it at the end.

The helper exits, and libumockdev deletes the test bed directory, when its stdin closes: a
crashed pytest leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import json
import os
import queue
import re
import select
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
DEBIAN_PACKAGE = "umockdev"
LIBRARY = "libumockdev.so.0"
PRELOAD = "libumockdev-preload.so.0"
USB_HOST = "/devices/pci0000:00/0000:00:14.0"  # an xHCI controller, as on a PC
USB_HOST_PATH = "pci-0000:00:14.0"  # its ID_PATH prefix
MMC_HOST = "/devices/platform/emmc2bus/fe340000.mmc"  # a Raspberry Pi 4's SD slot
MMC_HOST_PATH = "platform-fe340000.mmc"
SATA_HOST = "/devices/pci0000:00/0000:00:17.0"
SATA_HOST_PATH = "pci-0000:00:17.0"


class UmockdevMissing(RuntimeError):
    pass


def library_path(soname: str) -> str:
    """Full path of a shared library for this interpreter's architecture (`ldconfig -p`).

    The box is aarch64, CI x86_64: the multiarch directory is found, never written down.
    """
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    try:
        listing = subprocess.run([ldconfig, "-p"], capture_output=True, text=True,
                                 timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise UmockdevMissing(f"cannot run {ldconfig} -p to find {soname}: {exc}") from exc
    candidates = [line.split("=>", 1)[1].strip() for line in listing.splitlines()
                  if line.strip().startswith(soname + " ") and "=>" in line]
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    ordered = [c for c in candidates if multiarch and f"/{multiarch}/" in c] + candidates
    for candidate in ordered:
        if os.path.exists(candidate):
            return candidate
    raise UmockdevMissing(
        f"{soname} not found (ldconfig -p); install the Debian package {DEBIAN_PACKAGE} "
        f"(apt-get install {DEBIAN_PACKAGE}, or run ./scripts/setup as root)")


# --------------------------------------------------------------------------- descriptions
# umockdev's text format, as `umockdev-record` writes it: one block per device, separated by
# blank lines. P: sysfs path (without /sys), N: node under /dev, E: udev property,
# A: sysfs attribute. `DeviceSpec` lists go parent first.

DeviceSpec = tuple[str, str]  # (syspath, description block)


def _block(path: str, *, node: str = "", props: Mapping[str, str] | None = None,
           attrs: Mapping[str, str] | None = None) -> DeviceSpec:
    lines = [f"P: {path}"]
    if node:
        lines.append(f"N: {node}")
    lines += [f"E: {k}={v}" for k, v in (props or {}).items()]
    lines += [f"A: {k}={v}" for k, v in (attrs or {}).items()]
    return "/sys" + path, "\n".join(lines) + "\n"


def _node(devname: str) -> str:
    """The N: entry (node under /dev) for a DEVNAME."""
    return devname[len("/dev/"):] if devname.startswith("/dev/") else ""


def _enc(text: str) -> str:
    """udev's *_ENC form: spaces and unsafe bytes as \\xNN."""
    return "".join(c if c.isalnum() or c in "-_.:" else f"\\x{ord(c):02x}" for c in text)


def parse_description(text: str) -> list[DeviceSpec]:
    """Split a umockdev/udevadm-style description into (syspath, block) pairs."""
    specs: list[DeviceSpec] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        m = re.match(r"P: (/devices/\S+)", block.strip())
        if m is None:
            raise ValueError(f"a device description starts with 'P: /devices/...':\n{block}")
        specs.append(("/sys" + m.group(1), block.strip() + "\n"))
    return specs


def _usb_ids(vendor: str, model: str, serial: str, vendor_id: str,
             model_id: str) -> dict[str, str]:
    return {
        "ID_VENDOR": vendor.replace(" ", "_"),
        "ID_VENDOR_ENC": _enc(vendor),
        "ID_VENDOR_ID": vendor_id,
        "ID_MODEL": model.replace(" ", "_"),
        "ID_MODEL_ENC": _enc(model),
        "ID_MODEL_ID": model_id,
        "ID_REVISION": "0100",
        "ID_SERIAL": f"{vendor}_{model}_{serial}".replace(" ", "_"),
        "ID_SERIAL_SHORT": serial,
        "ID_BUS": "usb",
    }


def _usb_device(bus: int, port: str, devnum: int, ids: Mapping[str, str],
                extra: Mapping[str, str] | None = None) -> DeviceSpec:
    path = f"{USB_HOST}/usb{bus}/{bus}-{port}"
    props = {
        "DEVNAME": f"/dev/bus/usb/{bus:03d}/{devnum:03d}",
        "DEVTYPE": "usb_device",
        "DRIVER": "usb",
        "PRODUCT": f"{int(ids['ID_VENDOR_ID'], 16):x}/{int(ids['ID_MODEL_ID'], 16):x}/100",
        "TYPE": "0/0/0",
        "BUSNUM": f"{bus:03d}",
        "DEVNUM": f"{devnum:03d}",
        "MAJOR": "189",
        "MINOR": str((bus - 1) * 128 + devnum - 1),
        "SUBSYSTEM": "usb",
        **ids,
        "ID_PATH": f"{USB_HOST_PATH}-usb-0:{port}",
        **(extra or {}),
    }
    attrs = {"busnum": str(bus), "devnum": str(devnum), "idVendor": ids["ID_VENDOR_ID"],
             "idProduct": ids["ID_MODEL_ID"], "devpath": port,
             "dev": f"189:{props['MINOR']}"}
    return _block(path, node=f"bus/usb/{bus:03d}/{devnum:03d}", props=props, attrs=attrs)


def _usb_interface(bus: int, port: str, ifnum: int, interface: str, driver: str,
                   extra: Mapping[str, str] | None = None) -> DeviceSpec:
    path = f"{USB_HOST}/usb{bus}/{bus}-{port}/{bus}-{port}:1.{ifnum}"
    props = {"DEVTYPE": "usb_interface", "DRIVER": driver, "INTERFACE": interface,
             "SUBSYSTEM": "usb", **(extra or {})}
    return _block(path, props=props, attrs={"bInterfaceNumber": f"{ifnum:02d}"})


def card_specs(id: str = "sdb1", label: str = "EOS_DIGITAL", uuid: str = "1234-ABCD",
               fstype: str = "vfat", devnode: str | None = None, bus: str = "usb", *,
               vendor: str = "Generic", model: str = "STORAGE DEVICE",
               serial: str = "000000000819", extra: Mapping[str, str] | None = None,
               ) -> list[DeviceSpec]:
    """A card as a card reader (or the card in a camera in mass-storage mode) presents it.

    `id` is the kernel name: "sdb1" (partition 1 of sdb), "sdc" (a whole disk formatted without
    partition table), "mmcblk1p1" (built-in SD slot). `bus` is "usb", "mmc" or "ata" (an
    internal SATA disk, which must NOT be taken for a card). Properties follow real
    `udevadm info` dumps of a USB SD reader partition.
    """
    m = re.fullmatch(r"(sd[a-z]+|mmcblk\d+)(?:p?(\d+))?", id)
    if m is None:
        raise ValueError(f"card id must look like sdb1, sdc or mmcblk1p1, not {id!r}")
    disk, part = m.group(1), int(m.group(2)) if m.group(2) else 0
    devnode = devnode or f"/dev/{id}"
    if not devnode.startswith("/dev/"):  # libudev asserts it, aborting the child
        raise ValueError(f"a device node lives under /dev, not {devnode!r}; to give the card "
                         "content, write an image to UdevTestbed.node_path(devnode)")
    ident = {"ID_FS_LABEL": label, "ID_FS_LABEL_ENC": _enc(label), "ID_FS_UUID": uuid,
             "ID_FS_UUID_ENC": uuid, "ID_FS_VERSION": "FAT32" if fstype == "vfat" else "1.0",
             "ID_FS_TYPE": fstype, "ID_FS_USAGE": "filesystem"}
    if not label:
        for key in ("ID_FS_LABEL", "ID_FS_LABEL_ENC"):
            ident.pop(key)
    specs: list[DeviceSpec] = []
    if disk.startswith("mmcblk"):
        if bus != "mmc":
            raise ValueError("mmcblk devices sit on bus 'mmc'")
        n = int(disk[len("mmcblk"):])
        base = f"{MMC_HOST}/mmc_host/mmc{n}/mmc{n}:aaaa"
        ids = {"ID_NAME": "SD64G", "ID_SERIAL": "0x" + serial[-8:].rjust(8, "0"),
               "ID_PATH": MMC_HOST_PATH, "ID_DRIVE_FLASH_SD": "1",
               "ID_DRIVE_MEDIA_FLASH_SD": "1"}
        specs.append(_block(base, props={"SUBSYSTEM": "mmc", "DRIVER": "mmcblk",
                                         "MMC_TYPE": "SD", "MMC_NAME": "SD64G"}))
        major, minor0 = 179, n * 8
        part_prefix = f"{disk}p"
    else:
        idx = ord(disk[-1]) - ord("a")
        host = 6 + idx
        scsi = f"{host}:0:0:0"
        if bus == "usb":
            port = str(idx + 1)
            usb_ids = _usb_ids(vendor, model, serial, "0bda", "0109")
            ids = {**usb_ids, "ID_TYPE": "disk", "ID_INSTANCE": "0:0",
                   "ID_USB_DRIVER": "usb-storage", "ID_USB_INTERFACES": ":080650:",
                   "ID_USB_INTERFACE_NUM": "00",
                   "ID_PATH": f"{USB_HOST_PATH}-usb-0:{port}:1.0-scsi-0:0:0:0"}
            specs.append(_usb_device(1, port, 100 + idx, usb_ids))
            specs.append(_usb_interface(1, port, 0, "8/6/80", "usb-storage"))
            base = f"{USB_HOST}/usb1/1-{port}/1-{port}:1.0/host{host}/target{host}:0:0/{scsi}"
        elif bus == "ata":
            ids = {"ID_ATA": "1", "ID_TYPE": "disk", "ID_BUS": "ata",
                   "ID_MODEL": model.replace(" ", "_"), "ID_SERIAL": f"{model}_{serial}",
                   "ID_PATH": f"{SATA_HOST_PATH}-ata-{idx + 1}"}
            base = f"{SATA_HOST}/ata{idx + 1}/host{host}/target{host}:0:0/{scsi}"
        else:
            raise ValueError(f"bus must be usb, mmc or ata, not {bus!r}")
        specs.append(_block(base, props={"SUBSYSTEM": "scsi", "DEVTYPE": "scsi_device",
                                         "DRIVER": "sd"}))
        major, minor0 = 8, idx * 16
        part_prefix = disk
    disk_path = f"{base}/block/{disk}"
    disk_props = {"DEVNAME": f"/dev/{disk}", "DEVTYPE": "disk", "MAJOR": str(major),
                  "MINOR": str(minor0), "SUBSYSTEM": "block", **ids}
    if part:
        disk_props.update({"ID_PART_TABLE_TYPE": "dos", "ID_PART_TABLE_UUID": "c3072e18"})
    else:  # the filesystem is on the whole disk
        disk_props.update({**ident, "DEVNAME": devnode, **(extra or {})})
    specs.append(_block(disk_path, node=_node(disk_props["DEVNAME"]), props=disk_props,
                        attrs={"dev": f"{major}:{minor0}", "removable": "1", "ro": "0",
                               "size": "124735488"}))
    if part:
        name = f"{part_prefix}{part}"
        part_props = {"DEVNAME": devnode, "DEVTYPE": "partition", "PARTN": str(part),
                      "MAJOR": str(major), "MINOR": str(minor0 + part), "SUBSYSTEM": "block",
                      **ids, "ID_PART_TABLE_TYPE": "dos", "ID_PART_TABLE_UUID": "c3072e18",
                      **ident, "ID_PART_ENTRY_SCHEME": "dos", "ID_PART_ENTRY_TYPE": "0xc",
                      "ID_PART_ENTRY_NUMBER": str(part), "ID_PART_ENTRY_OFFSET": "8192",
                      "ID_PART_ENTRY_SIZE": "124727296", "ID_PART_ENTRY_DISK": f"{major}:{minor0}",
                      **(extra or {})}
        specs.append(_block(f"{disk_path}/{name}", node=_node(devnode), props=part_props,
                            attrs={"dev": f"{major}:{minor0 + part}", "partition": str(part),
                                   "start": "8192", "size": "124727296", "ro": "0"}))
    return specs


def camera_specs(busnum: int = 1, devnum: int = 11, vendor: str = "Canon Inc.",
                 model: str = "Canon EOS 90D", *, mtp: bool = False,
                 serial: str = "C767F1C714174C309255F70E4A7B2EE2") -> list[DeviceSpec]:
    """A PTP camera (or with mtp=True an Android phone in MTP mode) as libgphoto2's and
    libmtp's udev rules tag it; the usb_device is the one that counts. Device numbers must be
    unique per bus: card readers use 100-125, microphones 40+N and webcams 60+N on bus 1."""
    port = str(100 + devnum)
    ids = _usb_ids(vendor, model, serial, "04a9", "32f4")
    tags = {"ID_USB_INTERFACES": ":060101:", "ID_GPHOTO2": "1",
            "GPHOTO2_DRIVER": "proprietary" if mtp else "PTP",
            "COLORD_DEVICE": "1", "COLORD_KIND": "camera"}
    if mtp:
        tags.update({"ID_USB_INTERFACES": ":ffff00:", "ID_MTP_DEVICE": "1",
                     "ID_MEDIA_PLAYER": "1"})
    return [
        _usb_device(busnum, port, devnum, ids, tags),
        _usb_interface(busnum, port, 0, "6/1/1", "usbfs"),
    ]


def microphone_specs(card_number: int = 1, vendor: str = "Samson Technologies",
                     model: str = "Samson Q2U Microphone",
                     serial: str = "00000001") -> list[DeviceSpec]:
    """A USB microphone: snd-usb-audio card N with its control and capture PCM nodes. The
    card-level device holds the properties 78-sound-card.rules imports."""
    port = str(200 + card_number)
    ids = _usb_ids(vendor, model, serial, "17a0", "0304")
    iface = f"{USB_HOST}/usb1/1-{port}/1-{port}:1.0"
    card_props = {"SUBSYSTEM": "sound", "SOUND_INITIALIZED": "1", **ids, "ID_TYPE": "audio",
                  "ID_USB_INTERFACES": ":010100:010200:030000:", "ID_USB_INTERFACE_NUM": "00",
                  "ID_USB_DRIVER": "snd-usb-audio",
                  "ID_ID": f"usb-{ids['ID_SERIAL']}-00",
                  "ID_PATH": f"{USB_HOST_PATH}-usb-0:{port}:1.0",
                  "SOUND_FORM_FACTOR": "microphone"}
    card = f"{iface}/sound/card{card_number}"
    minor = card_number * 32
    return [
        _usb_device(1, port, 40 + card_number, ids),
        _usb_interface(1, port, 0, "1/1/0", "snd-usb-audio"),
        _block(card, props=card_props, attrs={"id": "Microphone", "number": str(card_number)}),
        _block(f"{card}/controlC{card_number}", node=f"snd/controlC{card_number}",
               props={"SUBSYSTEM": "sound", "DEVNAME": f"/dev/snd/controlC{card_number}",
                      "MAJOR": "116", "MINOR": str(minor)},
               attrs={"dev": f"116:{minor}"}),
        _block(f"{card}/pcmC{card_number}D0c", node=f"snd/pcmC{card_number}D0c",
               props={"SUBSYSTEM": "sound", "DEVNAME": f"/dev/snd/pcmC{card_number}D0c",
                      "MAJOR": "116", "MINOR": str(minor + 24)},
               attrs={"dev": f"116:{minor + 24}", "pcm_class": "generic"}),
    ]


def webcam_specs(n: int = 0, vendor: str = "Logitech, Inc.", model: str = "HD Webcam C615",
                 serial: str = "1563CF40", capabilities: str = ":capture:") -> list[DeviceSpec]:
    """A UVC webcam's video node /dev/videoN (properties as in a real C615 dump)."""
    port = str(300 + n)
    ids = _usb_ids(vendor, model, serial, "046d", "082c")
    node_props = {"DEVNAME": f"/dev/video{n}", "MAJOR": "81", "MINOR": str(n),
                  "SUBSYSTEM": "video4linux", **ids, "ID_TYPE": "video",
                  "ID_USB_DRIVER": "uvcvideo", "ID_USB_INTERFACES": ":0e0100:0e0200:",
                  "ID_USB_INTERFACE_NUM": "00", "ID_PATH": f"{USB_HOST_PATH}-usb-0:{port}:1.0",
                  "ID_V4L_VERSION": "2", "ID_V4L_PRODUCT": model,
                  "ID_V4L_CAPABILITIES": capabilities}
    return [
        _usb_device(1, port, 60 + n, ids),
        _usb_interface(1, port, 0, "14/1/0", "uvcvideo"),
        _block(f"{USB_HOST}/usb1/1-{port}/1-{port}:1.0/video4linux/video{n}",
               node=f"video{n}", props=node_props,
               attrs={"name": model, "index": "0", "dev": f"81:{n}"}),
    ]


# --------------------------------------------------------------------------- the helper

class _LineReader:
    """Lines from a pipe with a deadline (select), so no read can hang a test."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.fd = stream.fileno()
        self.buffer = b""
        self.eof = False

    def readline(self, timeout: float) -> bytes | None:
        """A line without its newline; None on timeout or end of file (`eof` tells)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.eof = True
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line


class UdevTestbed:
    """pytest's handle on a umockdev test bed owned by a helper process (see module doc)."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.preload = library_path(PRELOAD)
        library_path(LIBRARY)  # fail here, with the package name, rather than in the helper
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        env = {**os.environ, "LD_PRELOAD": _join_preload(self.preload, os.environ)}
        env.pop("UMOCKDEV_DIR", None)
        self._proc = subprocess.Popen(
            [sys.executable, "-u", str(Path(__file__).resolve()), "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env,
            cwd=REPO)
        self._reader = _LineReader(self._proc.stdout)  # type: ignore[arg-type]
        try:
            hello = self._receive()
        except BaseException:
            self._proc.kill()
            self._proc.wait(timeout=5)
            raise
        self.root_dir: str = hello["root"]
        self.sys_dir: str = hello["sys"]
        self.present: set[str] = set()  # syspaths added and not removed
        self.last_add_time = 0.0

    # -- protocol

    def _helper_stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-4000:]

    def _receive(self) -> dict[str, Any]:
        line = self._reader.readline(self.timeout)
        if line is None:
            if self._reader.eof:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=5)
                state = f"died (exit status {self._proc.returncode})"
            else:
                state = f"did not answer within {self.timeout:.0f} s"
            raise RuntimeError(f"umockdev helper {state}; its stderr:\n{self._helper_stderr()}")
        reply = json.loads(line)
        if not reply.get("ok", False):
            raise RuntimeError(f"umockdev helper: {reply.get('error')}\n{self._helper_stderr()}")
        return reply

    def _call(self, **command: Any) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(command).encode() + b"\n")
        self._proc.stdin.flush()
        return self._receive()

    # -- devices

    def add(self, specs: Sequence[DeviceSpec] | str) -> list[str]:
        """Plug devices in: add them (parent first; ones already present are kept) and return
        the syspaths added. umockdev itself sends an "add" uevent for each new device, in that
        order, to every monitor listening, as the kernel and udev would: do not send another.
        A raw umockdev description string is accepted too. `last_add_time` is
        time.monotonic() just before the first device was created."""
        if isinstance(specs, str):
            specs = parse_description(specs)
        reply = self._call(op="add", devices=[list(s) for s in specs])
        self.last_add_time = float(reply["t"])
        self.present.update(reply["added"])
        return list(reply["added"])

    def add_card(self, id: str = "sdb1", label: str = "EOS_DIGITAL", uuid: str = "1234-ABCD",
                 fstype: str = "vfat", devnode: str | None = None, bus: str = "usb",
                 **kwargs: Any) -> str:
        """A card partition (with its disk, SCSI and USB parents); returns its syspath.
        See `card_specs` for the arguments."""
        specs = card_specs(id, label, uuid, fstype, devnode, bus, **kwargs)
        self.add(specs)
        return specs[-1][0]

    def add_camera(self, busnum: int = 1, devnum: int = 11, vendor: str = "Canon Inc.",
                   model: str = "Canon EOS 90D", *, mtp: bool = False) -> str:
        """A PTP camera (ID_GPHOTO2=1), or an MTP phone; returns the usb_device syspath."""
        specs = camera_specs(busnum, devnum, vendor, model, mtp=mtp)
        self.add(specs)
        return specs[0][0]

    def add_microphone(self, card_number: int = 1, **kwargs: Any) -> str:
        """A USB microphone; returns the syspath of its ALSA card device (cardN)."""
        specs = microphone_specs(card_number, **kwargs)
        self.add(specs)
        return specs[2][0]

    def add_webcam(self, n: int = 0, **kwargs: Any) -> str:
        """A UVC webcam; returns the syspath of /dev/videoN."""
        specs = webcam_specs(n, **kwargs)
        self.add(specs)
        return specs[-1][0]

    def uevent(self, syspath: str, action: str = "add") -> float:
        """Send a uevent; returns time.monotonic() just before it was sent (CLOCK_MONOTONIC
        is system-wide, so a child's time.monotonic() on receipt gives the latency)."""
        return float(self._call(op="uevent", syspath=syspath, action=action)["t"])

    def set_property(self, syspath: str, name: str, value: str) -> None:
        """Change a udev property in place (then send a "change" uevent to announce it)."""
        self._call(op="set_property", syspath=syspath, name=name, value=value)

    def remove(self, syspath: str, *, uevent: bool = True) -> float | None:
        """Unplug a device: "remove" uevents for it and the children added under it (child
        first; umockdev needs each to still exist to send its event), then remove them all
        from the test bed. Returns time.monotonic() just before the first uevent."""
        children = [p for p in self.present if p.startswith(syspath + "/")]
        doomed = [*sorted(children, key=lambda p: p.count("/"), reverse=True), syspath]
        sent = None
        if uevent:
            for path in doomed:
                t = self.uevent(path, "remove")
                sent = t if sent is None else sent
        self._call(op="remove", syspath=syspath)
        self.present.difference_update(doomed)
        return sent

    def unplug(self, syspath: str) -> float | None:
        """Pull out the whole USB device `syspath` hangs off (a card reader with its disk and
        partitions, a webcam), as `remove()` does; devices not on USB are removed alone."""
        match = re.match(r"(.*/usb\d+/\d+-[\d.]+)(?:/|$)", syspath)
        return self.remove(match.group(1) if match else syspath)

    def node_path(self, devnode: str) -> str:
        """Where the mocked /dev node really is: under the preload, a child that opens
        `devnode` (/dev/sdb1) opens this file, so a filesystem image written here is the
        card's content for a userspace mounter such as fusefat run in child_env()."""
        if not devnode.startswith("/dev/"):
            raise ValueError(f"not a device node: {devnode!r}")
        return os.path.join(self.root_dir, devnode[1:])

    # -- the child

    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a child process that must see the test bed (and not the host)."""
        env = dict(os.environ if base is None else base)
        env["LD_PRELOAD"] = _join_preload(self.preload, env)
        env["UMOCKDEV_DIR"] = self.root_dir
        return env

    def close(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                self._call(op="quit")
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()
        self._stderr.close()
        # A helper that crashed (libumockdev aborts on some misuse) could not delete it.
        if self.root_dir.startswith(tempfile.gettempdir()):
            shutil.rmtree(self.root_dir, ignore_errors=True)

    def __enter__(self) -> UdevTestbed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _join_preload(preload: str, env: Mapping[str, str]) -> str:
    existing = [p for p in env.get("LD_PRELOAD", "").replace(":", " ").split() if p != preload]
    return ":".join([preload, *existing])


# --------------------------------------------------------------------------- child processes

class JsonLinesChild:
    """A child process that prints one JSON object per line (e.g. `acopio devices watch
    --json`), read by a thread so the test can wait for lines with a timeout. Always killed at
    the end (context manager)."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str],
                 cwd: str | os.PathLike[str] = REPO) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=self._stderr,
                                     env=dict(env), cwd=cwd)
        self.lines: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            received = time.monotonic()
            try:
                obj = json.loads(raw)
            except ValueError:
                obj = {"unparsed": raw.decode(errors="replace").rstrip("\n")}
            self.lines.put((received, obj))

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-4000:]

    def next(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next line (parsed); fails the test with the child's stderr on timeout."""
        try:
            _, obj = self.lines.get(timeout=timeout)
        except queue.Empty:
            state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
            raise AssertionError(
                f"no line from the child within {timeout} s ({state}); seen so far: "
                f"{self.seen}\nchild stderr:\n{self.stderr()}") from None
        self.seen.append(obj)
        return obj

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float = 5.0) -> dict[str, Any]:
        """Skip lines until one matches; fails after `timeout` seconds in all."""
        deadline = time.monotonic() + timeout
        while True:
            obj = self.next(max(0.0, deadline - time.monotonic()))
            if predicate(obj):
                return obj

    def take(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        return [self.next(max(0.0, deadline - time.monotonic())) for _ in range(count)]

    def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Lines that arrive within `seconds` (to assert that nothing more comes)."""
        deadline = time.monotonic() + seconds
        extra: list[dict[str, Any]] = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                _, obj = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(obj)
            extra.append(obj)
        return extra

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._thread.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> JsonLinesChild:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- pytest

def _make_fixture() -> Callable[..., Any]:
    # pytest is imported here, not at the top: the helper process runs this file too, under
    # the preload, and importing pytest there would cost a quarter second per test bed.
    import pytest

    @pytest.fixture
    def udev_testbed() -> Iterator[UdevTestbed]:
        """A fresh umockdev test bed for one test, closed (helper gone, directory deleted)
        afterwards. Fails, never skips, when umockdev is not installed."""
        try:
            testbed = UdevTestbed()
        except UmockdevMissing as exc:
            pytest.fail(str(exc))
        try:
            yield testbed
        finally:
            testbed.close()

    return udev_testbed


if __name__ != "__main__":
    udev_testbed = _make_fixture()


# --------------------------------------------------------------------------- helper side

class _GError(ctypes.Structure):
    _fields_ = [("domain", ctypes.c_uint32), ("code", ctypes.c_int),
                ("message", ctypes.c_char_p)]


def _serve() -> int:  # pragma: no cover - runs in the helper process, under the preload
    """The helper: owns the test bed, executes commands from stdin, answers on stdout."""
    lib = ctypes.CDLL(LIBRARY)
    glib = ctypes.CDLL("libglib-2.0.so.0")
    gobject = ctypes.CDLL("libgobject-2.0.so.0")
    libc = ctypes.CDLL(None)
    lib.umockdev_testbed_new.restype = ctypes.c_void_p
    lib.umockdev_testbed_add_from_string.argtypes = [
        ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.POINTER(_GError))]
    lib.umockdev_testbed_add_from_string.restype = ctypes.c_int
    lib.umockdev_testbed_uevent.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    lib.umockdev_testbed_remove_device.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.umockdev_testbed_set_property.argtypes = [
        ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
    for getter in ("umockdev_testbed_get_root_dir", "umockdev_testbed_get_sys_dir"):
        getattr(lib, getter).argtypes = [ctypes.c_void_p]
        getattr(lib, getter).restype = ctypes.c_char_p
    glib.g_error_free.argtypes = [ctypes.POINTER(_GError)]
    gobject.g_object_unref.argtypes = [ctypes.c_void_p]
    libc.getenv.restype = ctypes.c_char_p
    libc.getenv.argtypes = [ctypes.c_char_p]

    testbed = lib.umockdev_testbed_new()
    root = lib.umockdev_testbed_get_root_dir(testbed).decode()
    sys_dir = lib.umockdev_testbed_get_sys_dir(testbed).decode()
    # libumockdev set UMOCKDEV_DIR with g_setenv (the C environ, not os.environ): that is what
    # makes the preload in THIS process redirect /sys, which umockdev_testbed_uevent needs.
    if (libc.getenv(b"UMOCKDEV_DIR") or b"").decode() != root:
        raise SystemExit(f"UMOCKDEV_DIR in the C environment is not the test bed {root}")

    # Answers go to a private copy of stdout; fd 1 itself now points at stderr, so anything
    # a C library prints (GLib messages go to stdout) cannot corrupt the protocol.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)

    def reply(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj).encode() + b"\n")
        out.flush()

    def exists(syspath: str) -> bool:
        return syspath.startswith("/sys/") and os.path.isdir(sys_dir + syspath[len("/sys"):])

    def run(command: Mapping[str, Any]) -> dict[str, Any]:
        op = command.get("op")
        if op == "add":
            added: list[str] = []
            started = time.monotonic()
            for syspath, text in command["devices"]:
                if syspath and exists(syspath):
                    continue
                # libumockdev aborts the whole process when a node name is taken twice.
                for node in re.findall(r"^N: ([^=\n]+)", text, flags=re.MULTILINE):
                    if os.path.lexists(os.path.join(root, "dev", ".node",
                                                    node.replace("/", "_"))):
                        return {"ok": False, "error": f"add: /dev/{node} already exists"}
                error = ctypes.POINTER(_GError)()
                if not lib.umockdev_testbed_add_from_string(testbed, text.encode(),
                                                            ctypes.byref(error)):
                    message = error.contents.message.decode() if error else "unknown error"
                    if error:
                        glib.g_error_free(error)
                    return {"ok": False, "error": f"add_from_string: {message}\n{text}"}
                if syspath:
                    added.append(syspath)
            return {"ok": True, "added": added, "t": started}
        if op == "uevent":
            syspath = command["syspath"]
            if not exists(syspath):
                return {"ok": False, "error": f"uevent: no such device {syspath}"}
            sent = time.monotonic()
            lib.umockdev_testbed_uevent(testbed, syspath.encode(), command["action"].encode())
            return {"ok": True, "t": sent}
        if op == "remove":
            if not exists(command["syspath"]):
                return {"ok": False, "error": f"remove: no such device {command['syspath']}"}
            lib.umockdev_testbed_remove_device(testbed, command["syspath"].encode())
            # umockdev 0.17 leaves /sys/block/<name> behind, dangling; adding the device
            # again (a card put back in) would then abort in symlink(). Sweep such links.
            for pattern in ("block", "class/*", "bus/*/devices", "dev/*"):
                for link in glob.glob(os.path.join(sys_dir, pattern, "*")):
                    if os.path.islink(link) and not os.path.exists(link):
                        os.unlink(link)
            return {"ok": True}
        if op == "set_property":
            lib.umockdev_testbed_set_property(testbed, command["syspath"].encode(),
                                              command["name"].encode(),
                                              command["value"].encode())
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}

    reply({"ok": True, "root": root, "sys": sys_dir})
    for raw in sys.stdin.buffer:
        command = json.loads(raw)
        if command.get("op") == "quit":
            reply({"ok": True})
            break
        try:
            reply(run(command))
        except Exception as exc:  # report, keep serving
            reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    gobject.g_object_unref(testbed)  # deletes the test bed directory
    return 0


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    raise SystemExit(_serve())
