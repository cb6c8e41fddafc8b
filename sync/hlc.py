"""Hybrid logical clocks: the stamps that order edits across kits and the hub.

A stamp is text, `<wall ms, 13 digits>-<counter, 4 digits>-<node>`, for example
`1778400000000-0003-kit-cultura`: comparing two stamps as strings compares the clocks (wall
time, then the counter, then the node name breaks ties). Every change of a merged field
stamps it (README "Metadata both ways"); a merge keeps, per field, the value with the
greater stamp, so the same set of changes gives the same result on every replica in any
order.

`Clock` issues stamps for one data folder. It is shared by every thread and process that
edits there (the web UI, `acopio items set`, the sync client) through `state/sync/hlc.json`
under an flock, and never goes back: not across threads, processes or restarts, and not when
the wall clock steps back (a box without a battery-backed clock that boots with a stale time
and is corrected by NTP later): then the counter counts on from the last stamp until the wall
clock passes it again.

Durability without an fsync per stamp: the last stamp is written without fsync (a process
that dies keeps its writes in the page cache; only a power cut loses them, and a power cut
means a new boot), and a *floor* (a wall time above every stamp issued or observed so far)
is written durably to `state/sync/hlc.floor`, ahead of need by `LEASE_MS`, so about once a
second of continuous editing. After a new boot (the kernel's boot id differs from the one
recorded with the last stamp) the clock starts from the floor. Where there is no boot id the
last stamp is written durably every time instead.

A stamp received from elsewhere (`observe`) more than `MAX_AHEAD_MS` ahead of this box's wall
clock is refused (`ClockAhead`, logged), not absorbed: one kit with a clock in the year 2040
must not drag every replica's clock there and win every merge for years. A kit whose own
clock is not known to be right (appliance.boxclock: booted days behind, no NTP yet) lets the
hub's clock vouch for the time instead (`vouch`, from the hub's HTTP `Date`): else every
decision headquarters made in those days was refused.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from appliance.boxclock import boot_id as _boot_id
from appliance.fsutil import atomic_write, file_lock

log = logging.getLogger(__name__)

NODE = re.compile(r"[a-z0-9-]{1,63}")
_STAMP = re.compile(r"([0-9]{13})-([0-9]{4})-([a-z0-9-]{1,63})")
MAX_WALL = 10**13 - 1
MAX_COUNTER = 9999
MAX_AHEAD_MS = 24 * 3600 * 1000
LEASE_MS = 1000
HUB = "hub"


class ClockAhead(ValueError):
    """A stamp too far ahead of this box's clock: refused now, maybe accepted later."""


def check_node(node: str) -> str:
    if not isinstance(node, str) or not NODE.fullmatch(node):
        raise ValueError(f"invalid clock node name {node!r}: 1 to 63 of a-z, 0-9, -")
    return node


def node_name(name: str) -> str:
    """A valid node name from a kit's name as configured (`kit.name` may be any text, such
    as "Prensa Norte"): lower-case ASCII letters, digits and hyphens, at most 63; "kit" when
    nothing is left. A name that is valid already is returned unchanged."""
    if isinstance(name, str) and NODE.fullmatch(name):
        return name
    ascii_text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:63].strip("-")
    return slug or "kit"


def box_node(state_dir: Path, name: str) -> str:
    """The node that stamps this box's changes: `hub` on a headquarters data folder (it
    has `state/hub/`), whatever its `kit.name`, as README "Metadata both ways" says; else
    the kit's name (`node_name`). A kit left at the default name then never shares a node
    with headquarters, whose own default name is the same."""
    return HUB if (Path(state_dir) / "hub").is_dir() else node_name(name)


def make(wall_ms: int, counter: int, node: str) -> str:
    if isinstance(wall_ms, bool) or not isinstance(wall_ms, int) or \
            not 0 <= wall_ms <= MAX_WALL:
        raise ValueError(f"wall time out of range: {wall_ms!r}")
    if isinstance(counter, bool) or not isinstance(counter, int) or \
            not 0 <= counter <= MAX_COUNTER:
        raise ValueError(f"counter out of range: {counter!r}")
    return f"{wall_ms:013d}-{counter:04d}-{check_node(node)}"


def parse(stamp: str) -> tuple[int, int, str]:
    """(wall ms, counter, node); ValueError for anything that is not a stamp."""
    match = _STAMP.fullmatch(stamp) if isinstance(stamp, str) else None
    if match is None:
        raise ValueError(f"not a clock stamp: {str(stamp)[:80]!r}")
    return int(match[1]), int(match[2]), match[3]


def is_stamp(value: object) -> bool:
    return isinstance(value, str) and _STAMP.fullmatch(value) is not None


def _floor_path(state_dir: Path) -> Path:
    return Path(state_dir) / "sync" / "hlc.floor"


def _floor_ms(floor_state: dict[str, object] | None) -> int:
    floor = floor_state.get("floor") if floor_state else 0
    return floor if isinstance(floor, int) and 0 <= floor <= MAX_WALL else 0


def known_time(state_dir: Path) -> datetime | None:
    """The durable floor as a time: the latest wall time this data folder is known to have
    passed (appliance.boxclock's lower bound of the true time while the box's own clock is
    not known right); None when nothing was ever stamped here."""
    floor = _floor_ms(Clock._read(_floor_path(state_dir)))
    return datetime.fromtimestamp(floor / 1000, UTC) if floor else None


class Clock:
    """Persistent per data dir (state/sync/hlc.json, under an flock): monotonic across
    threads, processes and restarts, even if the wall clock steps back."""

    def __init__(self, state_dir: Path, node: str,
                 wall: Callable[[], float] = time.time, *, tmp_dir: Path | None = None
                 ) -> None:
        """`tmp_dir`: where the state writes keep their temp files (default `state/tmp`; a
        re-filing keeps its own apart, so that what a crash leaves is known as its)."""
        self.node = check_node(node)
        self.wall = wall
        root = Path(state_dir) / "sync"
        self.path = root / "hlc.json"
        self.floor_path = _floor_path(state_dir)
        self.lock_path = root / "hlc.lock"
        self.tmp = tmp_dir or Path(state_dir) / "tmp"  # DataDir.tmp
        self._boot = _boot_id()
        self._mutex = threading.Lock()
        self._vouched_ms = 0

    # -- public -------------------------------------------------------------------------

    def now(self) -> str:
        """A new stamp, greater than every stamp issued or observed here before."""
        with self._mutex, file_lock(self.lock_path):
            wall, counter, floor = self._load()
            physical = self._wall_ms()
            if physical > wall:
                wall, counter = physical, 0
            elif counter < MAX_COUNTER:
                counter += 1
            else:  # 10,000 stamps in one millisecond (or while the wall clock is behind)
                wall, counter = wall + 1, 0
            self._store(wall, counter, floor)
        return make(wall, counter, self.node)

    def observe(self, stamp: str) -> None:
        """Absorb a stamp received from another replica: every later `now()` is greater.
        Garbage, or a stamp more than a day ahead of this box's wall clock, is ValueError
        (and logged) and changes nothing."""
        wall, counter, _ = self.check(stamp)
        with self._mutex, file_lock(self.lock_path):
            last_wall, last_counter, floor = self._load()
            if (wall, counter) > (last_wall, last_counter):
                self._store(wall, counter, floor)

    def check(self, stamp: str) -> tuple[int, int, str]:
        """The parsed stamp if `observe` would accept it; ValueError (logged) if not, or
        ClockAhead when it is more than a day ahead of this box's (or the vouched) time."""
        wall, counter, node = parse(stamp)
        if wall > max(self._wall_ms(), self._vouched_ms) + MAX_AHEAD_MS:
            log.warning("refused clock stamp %s from %s: more than a day ahead of this "
                        "box's clock (is one of the clocks wrong?)", stamp, node)
            raise ClockAhead(f"clock stamp {stamp} is more than a day in the future")
        return wall, counter, node

    def vouch(self, wall_s: float) -> None:
        """Accept stamps up to a day past `wall_s` too, for this instance's life: the time a
        peer trusted more than this box's own clock reports (the hub's `Date`)."""
        self._vouched_ms = max(self._vouched_ms, min(int(wall_s * 1000), MAX_WALL))

    # -- state --------------------------------------------------------------------------

    def _wall_ms(self) -> int:
        return max(0, min(int(self.wall() * 1000), MAX_WALL))

    def _load(self) -> tuple[int, int, int]:
        """(wall, counter) of the last stamp issued or observed, and the durable floor."""
        state = self._read(self.path)
        floor = _floor_ms(self._read(self.floor_path))
        wall, counter = (state.get("wall"), state.get("counter")) if state else (None, None)
        if not (isinstance(wall, int) and isinstance(counter, int)
                and 0 <= wall <= MAX_WALL and 0 <= counter <= MAX_COUNTER):
            wall, counter = 0, 0
            state = None
        # A new boot (a power cut may have lost the last writes), or no state at all: start
        # above everything that was ever issued or observed.
        if self._boot is not None and (state is None or state.get("boot") != self._boot) \
                and (floor, 0) > (wall, counter):
            wall, counter = floor, 0
        return wall, counter, floor

    def _store(self, wall: int, counter: int, floor: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._boot is None:
            atomic_write(self.path, _dump({"wall": wall, "counter": counter}), self.tmp)
            return
        if wall >= floor:
            floor = min(wall + LEASE_MS, MAX_WALL)
            atomic_write(self.floor_path, _dump({"floor": floor}), self.tmp)
        atomic_write(self.path, _dump({"wall": wall, "counter": counter, "boot": self._boot}),
                     self.tmp, durable=False)

    @staticmethod
    def _read(path: Path) -> dict[str, object] | None:
        try:
            value = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("clock state %s unreadable (%s); starting from its durable floor",
                        path, exc)
            return None
        return value if isinstance(value, dict) else None


def _dump(value: dict[str, object]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


__all__ = ["HUB", "MAX_AHEAD_MS", "Clock", "box_node", "check_node", "is_stamp", "make",
           "node_name", "parse"]
