"""Whether this box's own clock can be believed, and the latest time it is known to have seen.

Why: a Raspberry Pi has no battery-backed clock. It boots with the time fake-hwclock saved at
its last shutdown (days or weeks behind after a box stayed in a drawer) or at 1970, and only
NTP, when a network appears, sets it right. At an event there is often no network at all, so
the box's "now" is then only a lower bound of the true time. A camera time after it is not
"in the future" (design decision 5's implausible date): the box is behind. Judging camera
times against such a clock filed a whole event under the day the box was last switched off.

`synchronized()` asks the kernel (or systemd-timesyncd's flag); `kit.clock` overrides it for
a box with a battery-backed clock ("trusted") or one whose clock is known to drift
("untrusted"). The latest wall time a data folder is known to have passed is the sync
clock's durable floor (`sync.hlc.known_time`), which every edit, sync and import moves on.
`boot_id()` tells this boot from the last: what a power cut ended (a job's lease, a web
session's idle time on the boot's own clock) is known by it, whatever the wall clock says.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

from appliance.fsutil import libc

# systemd-timesyncd creates it at its first synchronisation (systemd 249 and later): readable
# inside the units' sandbox, where ProtectClock= denies even adjtimex's read.
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")
_TIME_ERROR = 5  # adjtimex's answer while the kernel's clock is not synchronized
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@functools.cache
def boot_id() -> str | None:
    """This boot's identity (the kernel's random boot id), None where there is none: what
    was taken in an earlier boot (a lease, a clock's last stamp) died with it."""
    try:
        return BOOT_ID.read_text().strip() or None
    except OSError:
        return None


def synchronized() -> bool | None:
    """True when NTP (timesyncd, chrony, ntpd) keeps the clock right; False when the kernel
    says it does not; None when it cannot be asked (a sandbox denying adjtimex)."""
    if TIMESYNC_FLAG.exists():
        return True
    try:
        timex = ctypes.create_string_buffer(256)  # struct timex; modes 0: read only
        state = libc().adjtimex(timex)
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR


def trusted(setting: str) -> bool:
    """Whether the box's clock may judge other clocks (`kit.clock`: auto, trusted,
    untrusted)."""
    if setting == "trusted":
        return True
    if setting == "untrusted":
        return False
    return synchronized() is True

