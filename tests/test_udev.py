# ruff: noqa: E501 -- the udevadm dumps below are quoted as printed; sysfs paths are long.
"""Device detection through udev: classification of real udev dumps, and a real watcher process
fed by umockdev uevents (see tests/udevbed.py for how the test bed works and why)."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.devices.udev import (
    DeviceEvent,
    UdevWatcher,
    classify,
    event_from_properties,
    human_name,
)
from tests import udevbed
from tests.conftest import require_tool
from tests.udevbed import (
    REPO,
    JsonLinesChild,
    UdevTestbed,
    card_specs,
    webcam_specs,
)

udev_testbed = udevbed.udev_testbed  # the fixture, shared with other udev tests


def parse_dump(text: str) -> tuple[str, dict[str, str]]:
    """`udevadm info` output -> (syspath, properties)."""
    syspath, props = "", {}
    for line in text.strip().splitlines():
        tag, _, rest = line.strip().partition(": ")
        if tag == "P":
            syspath = "/sys" + rest
        elif tag == "E":
            key, _, value = rest.partition("=")
            props[key] = value
    props.setdefault("DEVPATH", syspath[len("/sys"):])
    return syspath, props


# --------------------------------------------------------------------------- real dumps
# Trimmed from `udevadm info` / `udevadm monitor --env` output posted publicly (forums, bug
# reports, project test suites); only the noise (DEVLINKS, TAGS, USEC_INITIALIZED...) is cut.

DUMPS: dict[str, tuple[str, str | None]] = {
    # A USB stick/SD reader partition on a laptop (udevadm info /dev/sdb1).
    "usb partition vfat": ("""
P: /devices/pci0000:00/0000:00:14.0/usb1/1-4/1-4:1.0/host12/target12:0:0/12:0:0:0/block/sdb/sdb1
N: sdb1
E: DEVNAME=/dev/sdb1
E: DEVTYPE=partition
E: DISKSEQ=68
E: PARTN=1
E: MAJOR=8
E: MINOR=17
E: SUBSYSTEM=block
E: ID_SERIAL=Taorfvnj_dsacdarwgree5uy76-0:0
E: ID_TYPE=disk
E: ID_INSTANCE=0:0
E: ID_BUS=usb
E: ID_USB_DRIVER=usb-storage
E: ID_PART_TABLE_UUID=23727e29
E: ID_PART_TABLE_TYPE=dos
E: ID_FS_LABEL=OTA_LE
E: ID_FS_LABEL_ENC=OTA_LE
E: ID_FS_UUID=7478-FC48
E: ID_FS_UUID_ENC=7478-FC48
E: ID_FS_VERSION=FAT32
E: ID_FS_TYPE=vfat
""", "card"),
    # A Kingston stick on a Raspberry Pi 3 (old-style DEVPATH /block/sda/sda1, platform USB).
    "pi usb partition": ("""
P: /block/sda/sda1
N: sda1
E: DEVNAME=/dev/sda1
E: DEVPATH=/block/sda/sda1
E: DEVTYPE=partition
E: ID_BUS=usb
E: ID_FS_LABEL=BOOT
E: ID_FS_TYPE=vfat
E: ID_FS_USAGE=filesystem
E: ID_FS_UUID=47CE-67C0
E: ID_FS_VERSION=FAT32
E: ID_MODEL=DataTraveler_G3
E: ID_MODEL_ENC=DataTraveler\\x20G3\\x20
E: ID_PART_ENTRY_SCHEME=dos
E: ID_PART_TABLE_TYPE=dos
E: ID_PATH=platform-3f980000.usb-usb-0:1.5:1.0-scsi-0:0:0:0
E: ID_SERIAL=Kingston_DataTraveler_G3_001CC07CEB39FBB1C91A24D0-0:0
E: ID_TYPE=disk
E: ID_USB_DRIVER=usb-storage
E: ID_VENDOR=Kingston
E: ID_VENDOR_ENC=Kingston
E: SUBSYSTEM=block
""", "card"),
    # A stick formatted without partition table: the whole disk carries the filesystem.
    "usb superfloppy disk": ("""
P: /devices/pci0000:00/0000:00:11.0/0000:02:03.0/usb1/1-1/1-1:1.0/host33/target33:0:0/33:0:0:0/block/sdb
N: sdb
E: DEVNAME=/dev/sdb
E: DEVTYPE=disk
E: ID_BUS=usb
E: ID_FS_LABEL=MYLINUXLIVE
E: ID_FS_TYPE=vfat
E: ID_FS_USAGE=filesystem
E: ID_FS_UUID=3879-A38A
E: ID_FS_VERSION=FAT32
E: ID_MODEL=DT_101_II
E: ID_PATH=pci-0000:02:03.0-usb-0:1:1.0-scsi-0:0:0:0
E: ID_TYPE=disk
E: ID_USB_DRIVER=usb-storage
E: ID_VENDOR=Kingston
E: SUBSYSTEM=block
""", "card"),
    # The same kind of stick's whole disk when it HAS a partition table: its partitions count.
    "usb disk with partition table": ("""
P: /devices/pci0000:00/0000:00:14.0/usb1/1-4/1-4:1.0/host12/target12:0:0/12:0:0:0/block/sdb
N: sdb
E: DEVNAME=/dev/sdb
E: DEVTYPE=disk
E: ID_BUS=usb
E: ID_PART_TABLE_TYPE=dos
E: ID_PART_TABLE_UUID=23727e29
E: ID_PATH=pci-0000:00:14.0-usb-0:4:1.0-scsi-0:0:0:0
E: ID_TYPE=disk
E: SUBSYSTEM=block
""", None),
    # A hybrid ISO stick: the disk has a filesystem AND a partition table.
    "usb hybrid iso disk": ("""
P: /devices/pci0000:00/0000:00:14.0/usb1/1-4/1-4:1.0/host12/target12:0:0/12:0:0:0/block/sdb
E: DEVNAME=/dev/sdb
E: DEVTYPE=disk
E: ID_BUS=usb
E: ID_FS_TYPE=iso9660
E: ID_FS_USAGE=filesystem
E: ID_PART_TABLE_TYPE=dos
E: SUBSYSTEM=block
""", None),
    # Laptop SD slot (Realtek card reader on PCI), udevadm info /dev/mmcblk0p1.
    "laptop sd slot partition": ("""
P: /devices/pci0000:00/0000:00:1c.0/0000:02:00.0/rtsx_pci_sdmmc.0/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0/mmcblk0p1
E: DEVNAME=/dev/mmcblk0p1
E: DEVTYPE=partition
E: ID_SERIAL=0x00026ff3
E: ID_NAME=SDHC08GB
E: ID_PATH=pci-0000:02:00.0-platform-rtsx_pci_sdmmc.0
E: ID_PART_TABLE_TYPE=dos
E: ID_DRIVE_FLASH_SD=1
E: ID_FS_TYPE=vfat
E: ID_FS_UUID=6333-6330
E: SUBSYSTEM=block
""", "card"),
    # An old udev that set no ID_PATH for SD cards (udevinfo, 2008).
    "old mmc partition": ("""
P: /block/mmcblk0/mmcblk0p1
N: mmcblk0p1
E: DEVNAME=/dev/mmcblk0p1
E: DEVTYPE=partition
E: ID_NAME=SU04G
E: ID_SERIAL=0x20000c3c
E: ID_FS_USAGE=filesystem
E: ID_FS_TYPE=vfat
E: ID_FS_VERSION=FAT32
E: ID_FS_UUID=6333-6330
E: ID_FS_LABEL=
E: SUBSYSTEM=block
""", "card"),
    # A Raspberry Pi 4's own root card. classify() cannot tell it from a card put in the slot:
    # only the mounts can (UdevWatcher excludes it).
    "pi root sd partition": ("""
P: /devices/platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0/mmcblk0p2
E: DEVNAME=/dev/mmcblk0p2
E: DEVTYPE=partition
E: ID_NAME=SD32G
E: ID_PATH=platform-fe340000.mmc
E: ID_PART_ENTRY_SCHEME=dos
E: ID_FS_TYPE=ext4
E: ID_FS_LABEL=rootfs
E: ID_FS_USAGE=filesystem
E: SUBSYSTEM=block
""", "card"),
    "sata partition": ("""
P: /devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda/sda2
E: DEVNAME=/dev/sda2
E: DEVTYPE=partition
E: ID_ATA=1
E: ID_BUS=ata
E: ID_MODEL=Samsung_SSD_860_EVO_500GB
E: ID_PATH=pci-0000:00:17.0-ata-1.0
E: ID_PART_ENTRY_SCHEME=gpt
E: ID_FS_TYPE=ext4
E: ID_FS_USAGE=filesystem
E: ID_FS_UUID=d5cad8b3-b682-4204-a4d2-5bc9a1e5ebf4
E: SUBSYSTEM=block
""", None),
    "nvme partition": ("""
P: /devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1/nvme0n1p1
E: DEVNAME=/dev/nvme0n1p1
E: DEVTYPE=partition
E: ID_MODEL=Samsung SSD 980 PRO with Heatsink 1TB
E: ID_PATH=pci-0000:3d:00.0-nvme-1
E: ID_PART_ENTRY_SCHEME=gpt
E: ID_FS_TYPE=vfat
E: ID_FS_USAGE=filesystem
E: ID_FS_UUID=6D15-0632
E: SUBSYSTEM=block
""", None),
    "loop device": ("""
P: /devices/virtual/block/loop0
E: DEVNAME=/dev/loop0
E: DEVTYPE=disk
E: DISKSEQ=1
E: ID_FS_TYPE=squashfs
E: ID_FS_USAGE=filesystem
E: SUBSYSTEM=block
""", None),
    "loop partition": ("""
P: /devices/virtual/block/loop3/loop3p1
E: DEVNAME=/dev/loop3p1
E: DEVTYPE=partition
E: ID_PART_ENTRY_SCHEME=dos
E: ID_FS_TYPE=vfat
E: ID_FS_USAGE=filesystem
E: SUBSYSTEM=block
""", None),
    "dm crypt on a usb disk": ("""
P: /devices/virtual/block/dm-0
E: DEVNAME=/dev/dm-0
E: DEVTYPE=disk
E: DM_NAME=luks-usb
E: ID_FS_TYPE=ext4
E: ID_FS_USAGE=filesystem
E: SUBSYSTEM=block
""", None),
    "usb luks partition": ("""
P: /devices/pci0000:00/0000:00:14.0/usb2/2-2/2-2:1.0/host4/target4:0:0/4:0:0:0/block/sdc/sdc1
E: DEVNAME=/dev/sdc1
E: DEVTYPE=partition
E: ID_BUS=usb
E: ID_FS_TYPE=crypto_LUKS
E: ID_FS_USAGE=crypto
E: ID_FS_VERSION=2
E: SUBSYSTEM=block
""", None),
    "usb swap partition": ("""
P: /devices/pci0000:00/0000:00:14.0/usb2/2-2/2-2:1.0/host4/target4:0:0/4:0:0:0/block/sdc/sdc2
E: DEVNAME=/dev/sdc2
E: DEVTYPE=partition
E: ID_BUS=usb
E: ID_FS_TYPE=swap
E: ID_FS_USAGE=other
E: SUBSYSTEM=block
""", None),
    # exFAT (every SDXC card) and NTFS are filesystems: cards, mountable or not.
    "usb exfat partition": ("""
P: /devices/pci0000:00/0000:00:14.0/usb2/2-2/2-2:1.0/host4/target4:0:0/4:0:0:0/block/sdc/sdc1
E: DEVNAME=/dev/sdc1
E: DEVTYPE=partition
E: ID_BUS=usb
E: ID_FS_TYPE=exfat
E: ID_FS_USAGE=filesystem
E: ID_FS_LABEL=EOS_DIGITAL
E: ID_FS_UUID=5A3C-1F0B
E: SUBSYSTEM=block
""", "card"),
    "usb partition without filesystem": ("""
P: /devices/pci0000:00/0000:00:14.0/usb2/2-2/2-2:1.0/host4/target4:0:0/4:0:0:0/block/sdc/sdc1
E: DEVNAME=/dev/sdc1
E: DEVTYPE=partition
E: ID_BUS=usb
E: ID_PART_ENTRY_SCHEME=dos
E: SUBSYSTEM=block
""", None),
    # Canon PTP camera (xdg-desktop-portal's USB portal tests).
    "canon ptp camera": ("""
P: /devices/pci0000:00/0000:00:1a.0/usb1/1-1/1-1.5/1-1.5.2/1-1.5.2.3
N: bus/usb/001/011
E: BUSNUM=001
E: COLORD_DEVICE=1
E: COLORD_KIND=camera
E: DEVNAME=/dev/bus/usb/001/011
E: DEVNUM=011
E: DEVTYPE=usb_device
E: DRIVER=usb
E: GPHOTO2_DRIVER=PTP
E: ID_BUS=usb
E: ID_GPHOTO2=1
E: ID_MODEL=Canon_Digital_Camera
E: ID_MODEL_ENC=Canon\\x20Digital\\x20Camera
E: ID_MODEL_ID=31c0
E: ID_SERIAL=Canon_Inc._Canon_Digital_Camera_C767F1C714174C309255F70E4A7B2EE2
E: ID_USB_INTERFACES=:060101:
E: ID_VENDOR=Canon_Inc.
E: ID_VENDOR_ENC=Canon\\x20Inc.
E: ID_VENDOR_ID=04a9
E: PRODUCT=4a9/31c0/2
E: SUBSYSTEM=usb
""", "camera"),
    # Kodak all-in-one with a PTP still-image interface (udevadm info, Ubuntu forums).
    "kodak ptp": ("""
P: /devices/pci0000:00/0000:00:1d.7/usb1/1-5
N: bus/usb/001/005
E: DEVPATH=/devices/pci0000:00/0000:00:1d.7/usb1/1-5
E: DEVNAME=/dev/bus/usb/001/005
E: DEVTYPE=usb_device
E: BUSNUM=001
E: DEVNUM=005
E: SUBSYSTEM=usb
E: ID_VENDOR=Eastman_Kodak_Company
E: ID_VENDOR_ENC=Eastman\\x20Kodak\\x20Company
E: ID_MODEL=KODAK_5300_AiO
E: ID_MODEL_ENC=KODAK\\x205300\\x20AiO
E: ID_BUS=usb
E: ID_USB_INTERFACES=:ffffff:070102:060101:
E: ID_GPHOTO2=1
E: GPHOTO2_DRIVER=PTP
""", "camera"),
    # An Android phone in MTP mode (udevadm info --export-db).
    "android mtp phone": ("""
P: /devices/pci0000:00/0000:00:14.0/usb3/3-1
N: bus/usb/003/052
E: DEVPATH=/devices/pci0000:00/0000:00:14.0/usb3/3-1
E: SUBSYSTEM=usb
E: DEVNAME=/dev/bus/usb/003/052
E: DEVTYPE=usb_device
E: DRIVER=usb
E: BUSNUM=003
E: DEVNUM=052
E: ID_VENDOR=MediaTek
E: ID_MODEL=MT65xx_Android_Phone
E: ID_MODEL_ENC=MT65xx\\x20Android\\x20Phone
E: ID_SERIAL=MediaTek_MT65xx_Android_Phone_0123456789ABCDEF
E: ID_BUS=usb
E: ID_USB_INTERFACES=:ffff00:
E: ID_GPHOTO2=1
E: GPHOTO2_DRIVER=proprietary
E: ID_MEDIA_PLAYER=1
E: ID_VENDOR_FROM_DATABASE=MediaTek Inc.
E: ID_MTP_DEVICE=1
E: ID_PATH=pci-0000:00:14.0-usb-0:1
""", "camera"),
    # libmtp's rules alone (no libgphoto2 rules installed).
    "mtp only phone": ("""
P: /devices/pci0000:00/0000:00:14.0/usb3/3-2
E: SUBSYSTEM=usb
E: DEVNAME=/dev/bus/usb/003/007
E: DEVTYPE=usb_device
E: BUSNUM=003
E: DEVNUM=007
E: ID_VENDOR=SAMSUNG
E: ID_MODEL=SAMSUNG_Android
E: ID_MTP_DEVICE=1
E: ID_MEDIA_PLAYER=1
""", "camera"),
    "mtp phone interface": ("""
P: /devices/pci0000:00/0000:00:14.0/usb3/3-1/3-1:1.0
E: DEVPATH=/devices/pci0000:00/0000:00:14.0/usb3/3-1/3-1:1.0
E: SUBSYSTEM=usb
E: DEVTYPE=usb_interface
E: PRODUCT=e8d/2008/ffff
E: INTERFACE=255/255/0
E: ID_MTP_DEVICE=1
""", None),
    # A camera with a proprietary driver seen through scsi_generic: not a usb_device.
    "gphoto2 scsi generic": ("""
P: /devices/pci0000:00/0000:00:1d.1/usb3/3-1/3-1:1.0/host6/target6:0:0/6:0:0:0/scsi_generic/sg2
N: sg2
E: DEVNAME=/dev/sg2
E: GPHOTO2_DRIVER=proprietary
E: ID_GPHOTO2=1
E: ID_PATH=pci-0000:00:1d.1-usb-0:1:1.0-scsi-0:0:0:0
E: SUBSYSTEM=scsi_generic
""", None),
    "card reader usb device": ("""
P: /devices/pci0000:00/0000:00:14.0/usb3/3-3
E: SUBSYSTEM=usb
E: DEVTYPE=usb_device
E: BUSNUM=003
E: DEVNUM=018
E: ID_VENDOR=TS-RDF5
E: ID_MODEL=Transcend
E: ID_USB_INTERFACES=:080650:
""", None),
    # A Logitech USB headset's card on a BeagleBone (udevadm monitor --env, the "change").
    "usb headset card": ("""
P: /devices/platform/ocp/47400000.target-module/47401c00.usb/musb-hdrc.1/usb1/1-1/1-1:1.0/sound/card0
E: ACTION=change
E: DEVPATH=/devices/platform/ocp/47400000.target-module/47401c00.usb/musb-hdrc.1/usb1/1-1/1-1:1.0/sound/card0
E: SUBSYSTEM=sound
E: SOUND_INITIALIZED=1
E: ID_VENDOR=Logitech_Inc.
E: ID_VENDOR_ENC=Logitech\\x20Inc.
E: ID_VENDOR_ID=046d
E: ID_MODEL=Logitech_USB_Headset_H340
E: ID_MODEL_ENC=Logitech\\x20USB\\x20Headset\\x20H340
E: ID_MODEL_ID=0a38
E: ID_SERIAL=Logitech_Inc._Logitech_USB_Headset_H340
E: ID_TYPE=audio
E: ID_BUS=usb
E: ID_USB_INTERFACES=:010100:010200:030000:
E: ID_USB_DRIVER=snd-usb-audio
E: ID_PATH=platform-musb-hdrc.1-usb-0:1:1.0
E: SOUND_FORM_FACTOR=headset
""", "microphone"),
    # The control node of a USB DAC: a sound device, but not the card-level one.
    "usb dac control node": ("""
P: /devices/pci0000:00/0000:00:14.0/usb2/2-3/2-3:1.1/sound/card2/controlC2
N: snd/controlC2
E: DEVNAME=/dev/snd/controlC2
E: ID_BUS=usb
E: ID_MODEL=FiiO_USB_DAC_K1
E: ID_PATH=pci-0000:00:14.0-usb-0:3:1.1
E: ID_USB_DRIVER=snd-usb-audio
E: MAJOR=116
E: MINOR=13
E: SUBSYSTEM=sound
""", None),
    "usb mic capture pcm node": ("""
P: /devices/pci0000:00/0000:00:1d.1/usb7/7-1/7-1:1.0/sound/card1/pcmC1D0c
N: snd/pcmC1D0c
E: DEVNAME=/dev/snd/pcmC1D0c
E: SUBSYSTEM=sound
""", None),
    # Built-in HDA audio (laptop), and a Bt878 TV card's audio capture on PCI.
    "internal hda card": ("""
P: /devices/pci0000:00/0000:00:1b.0/sound/card0
E: DEVPATH=/devices/pci0000:00/0000:00:1b.0/sound/card0
E: SUBSYSTEM=sound
E: SOUND_INITIALIZED=1
E: ID_VENDOR_FROM_DATABASE=Intel Corporation
E: ID_BUS=pci
E: ID_VENDOR_ID=0x8086
E: ID_MODEL_ID=0x1c20
E: ID_PATH=pci-0000:00:1b.0
E: SOUND_FORM_FACTOR=internal
""", None),
    "pci capture card": ("""
P: /devices/pci0000:00/0000:00:14.4/0000:03:06.1/sound/card1
E: DEVPATH=/devices/pci0000:00/0000:00:14.4/0000:03:06.1/sound/card1
E: SUBSYSTEM=sound
E: SOUND_INITIALIZED=1
E: ID_MODEL_FROM_DATABASE=Bt878 Audio Capture
E: ID_BUS=pci
E: ID_PATH=pci-0000:03:06.1
""", None),
    # Logitech C615 UVC webcam (udevadm info --name=/dev/video0).
    "uvc webcam": ("""
P: /devices/pci0000:00/0000:00:1a.7/usb1/1-6/1-6.1/1-6.1.2/1-6.1.2:1.2/video4linux/video0
N: video0
E: DEVNAME=/dev/video0
E: DEVPATH=/devices/pci0000:00/0000:00:1a.7/usb1/1-6/1-6.1/1-6.1.2/1-6.1.2:1.2/video4linux/video0
E: ID_BUS=usb
E: ID_MODEL=HD_Webcam_C615
E: ID_MODEL_ENC=HD\\x20Webcam\\x20C615
E: ID_MODEL_ID=082c
E: ID_PATH=pci-0000:00:1a.7-usb-0:6.1.2:1.2
E: ID_SERIAL=046d_HD_Webcam_C615_1563CF40
E: ID_TYPE=video
E: ID_USB_DRIVER=uvcvideo
E: ID_V4L_CAPABILITIES=:capture:
E: ID_V4L_PRODUCT=HD Webcam C615
E: ID_V4L_VERSION=2
E: ID_VENDOR=046d
E: ID_VENDOR_ENC=046d
E: ID_VENDOR_ID=046d
E: MAJOR=81
E: MINOR=0
E: SUBSYSTEM=video4linux
""", "webcam"),
    # An older udev's dump of another UVC webcam.
    "uvc webcam old udev": ("""
P: /devices/pci0000:00/0000:00:1a.0/usb1/1-1/1-1.4/1-1.4:1.0/video4linux/video0
N: video0
E: DEVPATH=/devices/pci0000:00/0000:00:1a.0/usb1/1-1/1-1.4/1-1.4:1.0/video4linux/video0
E: DEVNAME=/dev/video0
E: SUBSYSTEM=video4linux
E: ID_V4L_VERSION=2
E: ID_V4L_PRODUCT=WebCam SC-13HDL10931N
E: ID_V4L_CAPABILITIES=:capture:
E: ID_VENDOR=123
E: ID_MODEL=WebCam_SC-13HDL10931N
E: ID_BUS=usb
E: ID_USB_DRIVER=uvcvideo
E: ID_PATH=pci-0000:00:1a.0-usb-0:1.4:1.0
""", "webcam"),
    # A UVC camera's second node carries frame metadata only.
    "uvc metadata node": ("""
P: /devices/pci0000:00/0000:00:14.0/usb1/1-6/1-6:1.0/video4linux/video1
E: DEVNAME=/dev/video1
E: ID_BUS=usb
E: ID_V4L_CAPABILITIES=:
E: ID_V4L_PRODUCT=HD Webcam C615
E: SUBSYSTEM=video4linux
""", None),
    "pci tv capture": ("""
P: /devices/pci0000:00/0000:00:14.4/0000:03:06.0/video4linux/video0
E: DEVPATH=/devices/pci0000:00/0000:00:14.4/0000:03:06.0/video4linux/video0
E: DEVNAME=/dev/video0
E: SUBSYSTEM=video4linux
E: ID_V4L_PRODUCT=BT878 video (Hauppauge (bt878))
E: ID_V4L_CAPABILITIES=:capture:video_overlay:tuner:
E: ID_PATH=pci-0000:03:06.0
""", None),
    "v4l2loopback": ("""
P: /devices/virtual/video4linux/video30
E: DEVNAME=/dev/video30
E: ID_V4L_CAPABILITIES=:capture:
E: ID_V4L_PRODUCT=Dummy video device (0x0000)
E: SUBSYSTEM=video4linux
""", None),
    "pi codec node": ("""
P: /devices/platform/soc/soc:bcm2835-codec/video4linux/video10
E: DEVNAME=/dev/video10
E: ID_PATH=platform-soc:bcm2835-codec
E: ID_V4L_CAPABILITIES=:capture:
E: ID_V4L_PRODUCT=bcm2835-codec-decode
E: SUBSYSTEM=video4linux
""", None),
    "input device": ("""
P: /devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1.4/1-1.4:1.0/input/input12/event5
E: DEVNAME=/dev/input/event5
E: ID_BUS=usb
E: ID_INPUT=1
E: SUBSYSTEM=input
""", None),
}


@pytest.mark.parametrize("name", sorted(DUMPS))
def test_classify_real_udev_dumps(name: str) -> None:
    text, expected = DUMPS[name]
    _, props = parse_dump(text)
    assert classify(props["SUBSYSTEM"], props.get("DEVTYPE"), props) == expected


def test_classify_needs_the_right_devtype_and_values() -> None:
    _, card = parse_dump(DUMPS["usb partition vfat"][0])
    assert classify("block", None, card) is None  # neither partition nor disk
    assert classify("block", "partition", {**card, "ID_FS_TYPE": ""}) is None
    _, camera = parse_dump(DUMPS["canon ptp camera"][0])
    assert classify("usb", "usb_interface", camera) is None
    assert classify("usb", "usb_device", {**camera, "ID_GPHOTO2": "0"}) is None
    assert classify("usb", "usb_device", {**camera, "ID_GPHOTO2": ""}) is None
    assert classify("usb", "usb_device", {**camera, "ID_GPHOTO2": "", "ID_MTP_DEVICE": "1"}) \
        == "camera"
    assert classify("mmc", None, card) is None


def test_events_from_real_dumps_carry_ids_names_and_properties() -> None:
    syspath, props = parse_dump(DUMPS["usb partition vfat"][0])
    card = event_from_properties("add", syspath, props)
    assert card is not None
    assert (card.kind, card.id, card.devnode) == ("card", "sdb1", "/dev/sdb1")
    assert card.properties["ID_FS_UUID"] == "7478-FC48"
    assert card.properties["ID_FS_LABEL"] == "OTA_LE"
    assert "ID_PART_TABLE_UUID" not in card.properties  # only what later stages use
    assert card.name == "OTA_LE"  # no vendor/model in this dump

    syspath, props = parse_dump(DUMPS["pi usb partition"][0])
    event = event_from_properties("add", syspath, props)
    assert event is not None and event.name == "BOOT (Kingston DataTraveler G3)"

    syspath, props = parse_dump(DUMPS["canon ptp camera"][0])
    camera = event_from_properties("add", syspath, props)
    assert camera is not None
    assert (camera.kind, camera.id) == ("camera", "usb-001-011")
    assert (camera.properties["BUSNUM"], camera.properties["DEVNUM"]) == ("001", "011")
    assert camera.name == "Canon Digital Camera"

    syspath, props = parse_dump(DUMPS["android mtp phone"][0])
    phone = event_from_properties("add", syspath, props)
    assert phone is not None and phone.id == "usb-003-052"
    assert phone.name == "MediaTek MT65xx Android Phone"

    syspath, props = parse_dump(DUMPS["usb headset card"][0])
    mic = event_from_properties("change", syspath, props)
    assert mic is not None
    assert (mic.action, mic.kind, mic.id, mic.devnode) == ("change", "microphone", "card0", "")
    assert mic.properties["ALSA_CARD"] == "0"
    assert mic.name == "Logitech USB Headset H340"

    syspath, props = parse_dump(DUMPS["uvc webcam"][0])
    cam = event_from_properties("add", syspath, props)
    assert cam is not None
    assert (cam.kind, cam.id, cam.devnode) == ("webcam", "video0", "/dev/video0")
    assert cam.properties["ID_V4L_CAPABILITIES"] == ":capture:"
    assert cam.name == "HD Webcam C615"  # the numeric vendor id "046d" is not a name


def test_human_names() -> None:
    props = {"ID_FS_LABEL": "EOS_DIGITAL", "ID_VENDOR": "SanDisk", "ID_MODEL": "Extreme"}
    assert human_name("card", "sdb1", props) == "EOS_DIGITAL (SanDisk Extreme)"
    assert human_name("card", "sdb1", {"ID_VENDOR": "SanDisk"}) == "SanDisk (sdb1)"
    assert human_name("card", "sdb1", {}) == "sdb1"
    assert human_name("camera", "usb-001-004", {
        "ID_VENDOR": "Nikon_Corp.", "ID_VENDOR_ENC": "Nikon\\x20Corp.",
        "ID_MODEL": "D750", "ID_MODEL_ENC": "D750"}) == "Nikon Corp. D750"
    assert human_name("camera", "usb-001-004", {
        "ID_VENDOR": "04b0", "ID_VENDOR_ID": "04b0", "ID_VENDOR_FROM_DATABASE": "Nikon Corp.",
        "ID_MODEL": "0442", "ID_MODEL_ID": "0442"}) == "Nikon Corp."
    assert human_name("webcam", "video0", {}) == "video0"


# --------------------------------------------------------------------------- watcher logic


@pytest.fixture
def watcher() -> Iterator[UdevWatcher]:
    """A watcher that is never started: `handle()` is pure bookkeeping."""
    yield UdevWatcher(system_paths=())


def dump(name: str) -> tuple[str, dict[str, str]]:
    return parse_dump(DUMPS[name][0])


def test_remove_is_classified_from_what_was_seen(watcher: UdevWatcher) -> None:
    syspath, props = dump("usb partition vfat")
    added = watcher.handle("add", syspath, props)
    assert added is not None and added.action == "add"
    # What a bare remove would carry without the udev database.
    bare = {k: props[k] for k in ("SUBSYSTEM", "DEVTYPE", "DEVNAME", "DEVPATH")}
    removed = watcher.handle("remove", syspath, bare)
    assert removed is not None
    assert (removed.action, removed.kind, removed.id) == ("remove", "card", "sdb1")
    assert removed.properties == added.properties
    assert watcher.known == {}
    assert watcher.handle("remove", syspath, bare) is None  # twice: nothing to report


def test_changes_are_reported_only_when_something_changed(watcher: UdevWatcher) -> None:
    syspath, props = dump("usb partition vfat")
    watcher.handle("add", syspath, props)
    assert watcher.handle("change", syspath, props) is None
    assert watcher.handle("bind", syspath, props) is None
    relabelled = watcher.handle("change", syspath, {**props, "ID_FS_LABEL": "NIKON"})
    assert relabelled is not None and relabelled.action == "change"
    assert relabelled.name.startswith("NIKON")
    assert watcher.handle("unbind", syspath, props) is None


def test_sound_card_becomes_a_microphone_on_its_change_event(watcher: UdevWatcher) -> None:
    """78-sound-card.rules imports ID_BUS/ID_PATH on the card only at the "change" it
    synthesises once the card is set up; the "add" has none of it."""
    syspath, props = dump("usb headset card")
    bare = {"SUBSYSTEM": "sound", "DEVPATH": "/devices/platform/x/sound/card0"}
    assert watcher.handle("add", "/sys/devices/platform/x/sound/card0", bare) is None
    event = watcher.handle("change", syspath, props)
    assert event is not None and (event.action, event.kind, event.id) == \
        ("add", "microphone", "card0")


def test_superfloppy_card_in_and_out_of_a_reader(watcher: UdevWatcher) -> None:
    """A reader's disk stays when the card is taken out; only "change" events tell."""
    syspath, props = dump("usb superfloppy disk")
    empty = {k: v for k, v in props.items() if not k.startswith("ID_FS_")}
    assert watcher.handle("add", syspath, empty) is None
    inserted = watcher.handle("change", syspath, props)
    assert inserted is not None and (inserted.action, inserted.id) == ("add", "sdb")
    taken_out = watcher.handle("change", syspath, empty)
    assert taken_out is not None and (taken_out.action, taken_out.id) == ("remove", "sdb")
    assert taken_out.properties["ID_FS_UUID"] == "3879-A38A"


def test_remove_of_a_device_never_seen_is_classified_from_its_own_properties(
        watcher: UdevWatcher) -> None:
    syspath, props = dump("canon ptp camera")
    event = watcher.handle("remove", syspath, props)
    assert event is not None and (event.action, event.id) == ("remove", "usb-001-011")


def test_resync_after_lost_events_reports_the_difference(
        watcher: UdevWatcher, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the socket overflowed (ENOBUFS), the watcher re-enumerates: what vanished is
    removed with its old id, what appeared is added, what stayed is not repeated."""
    gone_path, gone = dump("usb partition vfat")
    kept_path, kept = dump("canon ptp camera")
    new_path, new = dump("uvc webcam")
    watcher.handle("add", gone_path, gone)
    watcher.handle("add", kept_path, kept)
    now = {path: event_from_properties("add", path, props)
           for path, props in ((kept_path, kept), (new_path, new))}
    monkeypatch.setattr(watcher, "_enumerate", lambda: now)
    events = watcher._resync()
    assert [(e.action, e.id) for e in events] == [("remove", "sdb1"), ("add", "video0")]
    assert set(watcher.known) == {kept_path, new_path}


# --------------------------------------------------------------------------- real watcher

# The process under test until `acopio devices watch` exists: a real UdevWatcher, JSON lines.
WATCH_CHILD = r"""
import json, os, signal, sys, threading, time
from ingest.devices.udev import UdevWatcher

system_numbers = [os.makedev(*pair) for pair in json.loads(sys.argv[1])]
watcher = UdevWatcher(system_device_numbers=system_numbers)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())

def emit(source, event):
    print(json.dumps({"source": source, "t": time.monotonic(), **event.to_record()}),
          flush=True)

watcher.start()
for event in watcher.coldplug():
    emit("coldplug", event)
print(json.dumps({"ready": True}), flush=True)
for event in watcher.events(stop, poll_timeout=0.2):
    emit("event", event)
print(json.dumps({"stopped": True}), flush=True)
"""


def watch(testbed: UdevTestbed, system: list[tuple[int, int]] | None = None) -> JsonLinesChild:
    env = testbed.child_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return JsonLinesChild([sys.executable, "-c", WATCH_CHILD, json.dumps(system or [])], env)


def coldplugged(child: JsonLinesChild) -> list[dict]:
    """Lines up to "ready", which the child prints once its monitor is bound."""
    lines: list[dict] = []
    while not (line := child.next(timeout=10)).get("ready"):
        lines.append(line)
    return lines


def report(capsys: pytest.CaptureFixture[str], what: str, seconds: list[float]) -> None:
    with capsys.disabled():
        ms = sorted(s * 1000 for s in seconds)
        print(f"\n[udev latency] {what}: n={len(ms)} median {statistics.median(ms):.2f} ms, "
              f"max {ms[-1]:.2f} ms")


def test_coldplug_reports_what_is_attached_before_start(udev_testbed: UdevTestbed) -> None:
    card = udev_testbed.add_card("sdb1", label="EOS_DIGITAL", uuid="1234-ABCD")
    udev_testbed.add_card("sda1", label="", bus="ata", model="Samsung SSD 860")  # internal
    udev_testbed.add_webcam(0)
    udev_testbed.add(webcam_specs(1, capabilities=":"))  # a metadata-only node
    with watch(udev_testbed) as child:
        lines = coldplugged(child)
        assert sorted((x["kind"], x["id"]) for x in lines) == \
            [("card", "sdb1"), ("webcam", "video0")]
        sdb1 = next(x for x in lines if x["id"] == "sdb1")
        assert sdb1["action"] == "add" and sdb1["source"] == "coldplug"
        assert sdb1["syspath"] == card and sdb1["devnode"] == "/dev/sdb1"
        assert sdb1["properties"]["ID_FS_UUID"] == "1234-ABCD"
        assert sdb1["name"] == "EOS_DIGITAL (Generic STORAGE DEVICE)"
        assert child.quiet(0.3) == []


def test_card_plugged_in_and_pulled_out_while_watching(
        udev_testbed: UdevTestbed, capsys: pytest.CaptureFixture[str]) -> None:
    with watch(udev_testbed) as child:
        assert coldplugged(child) == []
        syspath = udev_testbed.add_card("sdc1", label="NIKON D750", uuid="5A3C-1F0B",
                                        fstype="exfat", vendor="SanDisk", model="Extreme")
        added_at = udev_testbed.last_add_time
        # Plugging the reader announced its USB device, interface, SCSI device and disk too:
        # none of them is a card, so exactly one line comes.
        added = child.next()
        assert (added["action"], added["kind"], added["id"]) == ("add", "card", "sdc1")
        assert added["syspath"] == syspath and added["devnode"] == "/dev/sdc1"
        assert added["name"] == "NIKON D750 (SanDisk Extreme)"
        props = added["properties"]
        assert (props["ID_FS_TYPE"], props["ID_FS_UUID"], props["ID_FS_LABEL"]) == \
            ("exfat", "5A3C-1F0B", "NIKON D750")
        assert props["ID_BUS"] == "usb" and "usb" in props["ID_PATH"]

        removed_at = udev_testbed.unplug(syspath)  # the whole reader: partition, disk, USB
        removed = child.next()
        assert (removed["action"], removed["kind"], removed["id"]) == ("remove", "card", "sdc1")
        assert removed["properties"] == props
        assert child.quiet(0.3) == []
        assert removed_at is not None
        report(capsys, "add (device created -> watcher yields)", [added["t"] - added_at])
        report(capsys, "remove (uevent sent -> watcher yields)", [removed["t"] - removed_at])


def test_cameras_phones_microphones_and_webcams_are_classified(
        udev_testbed: UdevTestbed) -> None:
    with watch(udev_testbed) as child:
        coldplugged(child)
        camera = udev_testbed.add_camera(1, 7, "Canon Inc.", "Canon EOS 90D")
        line = child.next()
        assert (line["kind"], line["id"], line["name"]) == \
            ("camera", "usb-001-007", "Canon EOS 90D")
        assert line["properties"]["ID_GPHOTO2"] == "1"
        assert line["devnode"] == "/dev/bus/usb/001/007"

        udev_testbed.add_camera(1, 8, "SAMSUNG", "SAMSUNG Android", mtp=True)
        line = child.next()
        assert (line["kind"], line["id"]) == ("camera", "usb-001-008")
        assert line["properties"]["ID_MTP_DEVICE"] == "1"

        mic = udev_testbed.add_microphone(2)
        line = child.next()
        assert (line["kind"], line["id"], line["devnode"]) == ("microphone", "card2", "")
        assert line["properties"]["ALSA_CARD"] == "2"
        assert line["name"] == "Samson Q2U Microphone"

        udev_testbed.add_webcam(0)
        udev_testbed.add(webcam_specs(1, capabilities=":"))  # a metadata-only node
        line = child.next()
        assert (line["kind"], line["id"], line["devnode"]) == ("webcam", "video0", "/dev/video0")
        udev_testbed.add_card("sda1", bus="ata", model="Samsung SSD 860")  # internal disk
        assert child.quiet(0.3) == []

        udev_testbed.unplug(camera)
        udev_testbed.unplug(mic)
        gone = child.take(2)
        assert [(x["action"], x["id"]) for x in gone] == \
            [("remove", "usb-001-007"), ("remove", "card2")]


def test_card_put_into_a_reader_without_partition_table(udev_testbed: UdevTestbed) -> None:
    """The reader's disk exists empty; inserting a card is a "change" of that disk."""
    specs = card_specs("sdd", label="", uuid="")
    empty = specs[-1][1]
    for key in ("ID_FS_UUID", "ID_FS_UUID_ENC", "ID_FS_VERSION", "ID_FS_TYPE",
                "ID_FS_USAGE"):
        empty = "\n".join(line for line in empty.splitlines()
                          if not line.startswith(f"E: {key}=")) + "\n"
    disk = specs[-1][0]
    with watch(udev_testbed) as child:
        coldplugged(child)
        udev_testbed.add([*specs[:-1], (disk, empty)])
        assert child.quiet(0.3) == []
        udev_testbed.set_property(disk, "ID_FS_TYPE", "vfat")
        udev_testbed.set_property(disk, "ID_FS_UUID", "0F1E-2D3C")
        udev_testbed.uevent(disk, "change")
        line = child.next()
        assert (line["action"], line["kind"], line["id"]) == ("add", "card", "sdd")
        assert line["properties"]["ID_FS_UUID"] == "0F1E-2D3C"
        udev_testbed.set_property(disk, "ID_FS_TYPE", "")
        udev_testbed.uevent(disk, "change")
        line = child.next()
        assert (line["action"], line["id"]) == ("remove", "sdd")


def test_the_box_own_disk_is_never_reported(udev_testbed: UdevTestbed) -> None:
    """Partitions of the disk behind / (here: given by device number) are not cards, even
    the ones that are not mounted, and neither before nor after the watcher started."""
    udev_testbed.add_card("mmcblk0p1", label="bootfs", uuid="5DF9-E225", bus="mmc")
    with watch(udev_testbed, system=[(179, 1)]) as child:
        assert coldplugged(child) == []
        udev_testbed.add_card("mmcblk0p3", label="DATA", uuid="6E8A-0B1C", bus="mmc")
        other = udev_testbed.add_card("sdb1")
        line = child.next()
        assert (line["id"], line["syspath"]) == ("sdb1", other)
        assert child.quiet(0.3) == []


@pytest.mark.root
def test_card_node_holds_a_real_fat_image_for_fusefat(udev_testbed: UdevTestbed,
                                                     tmp_path: Path) -> None:
    """Under the preload, /dev/sdb1 is the test bed's node file: a FAT image written there is
    what a userspace mounter started with child_env() reads (how a card gets content)."""
    tools = {t: require_tool(t) for t in ("mkfs.vfat", "mmd", "mcopy", "fusefat", "umount")}
    udev_testbed.add_card("sdb1", label="EOS_DIGITAL")
    image = Path(udev_testbed.node_path("/dev/sdb1"))
    subprocess.run([tools["mkfs.vfat"], "-C", "-n", "EOS_DIGITAL", str(tmp_path / "card.img"),
                    "4096"], check=True, capture_output=True, timeout=30)
    (tmp_path / "IMG_0001.JPG").write_bytes(b"\xff\xd8 not really a photo")
    subprocess.run([tools["mmd"], "-i", str(tmp_path / "card.img"), "::DCIM"], check=True,
                   timeout=30)
    subprocess.run([tools["mcopy"], "-i", str(tmp_path / "card.img"),
                    str(tmp_path / "IMG_0001.JPG"), "::DCIM/"], check=True, timeout=30)
    shutil.copyfile(tmp_path / "card.img", image)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    fuse = subprocess.Popen([tools["fusefat"], "-f", "-o", "ro", "/dev/sdb1", str(mountpoint)],
                            env=udev_testbed.child_env(), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not os.path.ismount(mountpoint):
            assert fuse.poll() is None, fuse.stderr.read() if fuse.stderr else ""
            assert time.monotonic() < deadline, "fusefat did not mount /dev/sdb1"
            time.sleep(0.05)
        assert (mountpoint / "DCIM" / "IMG_0001.JPG").read_bytes() == \
            (tmp_path / "IMG_0001.JPG").read_bytes()
    finally:
        subprocess.run([tools["umount"], str(mountpoint)], capture_output=True, timeout=30)
        try:
            fuse.wait(timeout=5)
        except subprocess.TimeoutExpired:
            fuse.kill()
            fuse.wait(timeout=5)


def test_event_storm_arrives_complete_and_in_order(
        udev_testbed: UdevTestbed, capsys: pytest.CaptureFixture[str]) -> None:
    """Two cards plugged and pulled five times each: 20 events in well under a second.

    umockdev drops events silently once 10 are unread by the child (see udevbed), so they go
    in bursts of up to 8 and the next burst waits until the child reported the last one: the
    watcher still meets back-to-back events, and a loss would be the watcher's, not the bed's.
    """
    ids = ("sdb1", "sdc1")
    with watch(udev_testbed) as child:
        coldplugged(child)
        for card_id in ids:  # readers in place; the storm is cards in and out
            udev_testbed.remove(udev_testbed.add_card(card_id, label=card_id.upper()))
            child.take(2)
        mark = len(child.seen)
        sent: list[tuple[str, str, float]] = []
        started = time.monotonic()
        for cycle in range(5):
            for card_id in ids:
                udev_testbed.add_card(card_id, label=card_id.upper(),
                                      uuid=f"000{cycle}-{card_id}")
                sent.append(("add", card_id, udev_testbed.last_add_time))
            if cycle % 2 == 0:  # never more than 8 unread
                child.wait_for(lambda x: x["id"] == ids[-1] and x["action"] == "add")
            for card_id in ids:
                path = next(p for p in udev_testbed.present if p.endswith("/" + card_id))
                removed_at = udev_testbed.remove(path)
                assert removed_at is not None
                sent.append(("remove", card_id, removed_at))
        elapsed = time.monotonic() - started
        got = child.seen[mark:]  # what wait_for consumed
        got += child.take(len(sent) - len(got), timeout=5)
        assert [(x["action"], x["id"]) for x in got] == [(a, i) for a, i, _ in sent]
        assert [x["properties"]["ID_FS_UUID"] for x in got if x["action"] == "add"] == \
            [f"000{c}-{i}" for c in range(5) for i in ids]
        assert child.quiet(0.3) == []
        assert elapsed < 1.0, f"the storm took {elapsed:.2f} s, not a storm any more"
        report(capsys, f"storm of {len(sent)} events in {elapsed * 1000:.0f} ms",
               [line["t"] - t for line, (_, _, t) in zip(got, sent, strict=True)])


def test_watcher_stops_when_asked(udev_testbed: UdevTestbed) -> None:
    with watch(udev_testbed) as child:
        coldplugged(child)
        child.proc.terminate()
        assert child.next(timeout=5) == {"stopped": True}
        assert child.proc.wait(timeout=5) == 0


def test_events_returns_when_stop_is_set_in_process() -> None:
    """events() itself, on the real (unmocked) udev of this machine: no device needed."""
    watcher = UdevWatcher()
    stop = threading.Event()
    events: list[DeviceEvent] = []
    reader = threading.Thread(target=lambda: events.extend(watcher.events(stop, 0.1)),
                              daemon=True)
    reader.start()
    time.sleep(0.3)
    stop.set()
    reader.join(timeout=5)
    assert not reader.is_alive(), "events() did not return after stop was set"
    assert all(isinstance(e, DeviceEvent) for e in events)


# --------------------------------------------------------------------------- udev rule


def _udisks_ignores(rules: str, props: dict[str, str]) -> bool:
    """Whether systemd/99-acopio.rules sets UDISKS_IGNORE for a device: udev's matching of the
    keys the file uses (==, globs with | alternatives); any other key fails the test."""
    import fnmatch
    import re

    values = {"SUBSYSTEM": props.get("SUBSYSTEM", ""), "DEVPATH": props.get("DEVPATH", ""),
              "KERNEL": os.path.basename(props.get("DEVNAME", "") or props["DEVPATH"])}
    for line in rules.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        matched, sets = True, {}
        for key, op, value in re.findall(r'([A-Z_]+(?:\{[A-Z_0-9]+\})?)(==|=)"([^"]*)"', line):
            env = re.fullmatch(r"ENV\{(\w+)\}", key)
            if op == "=":
                assert env, f"unexpected assignment {key} in {line!r}"
                sets[env[1]] = value
                continue
            assert env or key in values, f"key {key} not modelled by this test: {line!r}"
            have = props.get(env[1], "") if env else values[key]
            matched &= any(fnmatch.fnmatchcase(have, alt) for alt in value.split("|"))
        if matched and sets.get("UDISKS_IGNORE") == "1":
            return True
    return False


def test_the_udev_rule_keeps_automounters_off_every_card_and_only_those() -> None:
    """Its SD line matched ID_PATH "*-mmc-*", which no SD slot has (a Pi's is
    platform-fe340000.mmc, a laptop's ...-platform-rtsx_pci_sdmmc.0): a desktop automounter
    could mount a card in a built-in slot read-write while it was being imported."""
    rules = (udevbed.REPO / "systemd" / "99-acopio.rules").read_text()
    cards = internal = 0
    for name, (text, expected) in DUMPS.items():
        _, props = parse_dump(text)
        if props.get("SUBSYSTEM") != "block":
            continue
        if expected == "card":
            cards += 1
            assert _udisks_ignores(rules, props), name
        elif props.get("ID_BUS") in ("ata", "scsi") or "nvme" in name or "loop" in name:
            internal += 1
            assert not _udisks_ignores(rules, props), name
    assert cards >= 5 and internal >= 3
