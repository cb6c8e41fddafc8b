"""Whatever is plugged into the box: detection (udev), cards, PTP cameras, capture devices.

Nothing here imports Flask; the web UI reads the device states this package writes.
"""
