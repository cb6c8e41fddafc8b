"""How fast and how often the kit talks to the hub: a bandwidth cap and retry backoff.

`RateLimiter` keeps uploads under `sync.bandwidth_kbps` (so a phone hotspot stays usable at an
event): every byte is scheduled on a virtual clock that advances by `n / rate` per `n` bytes,
and the sender sleeps until the clock says so. After an idle spell at most `burst_s` seconds
of credit is carried over, so an upload is never faster than the cap by more than that, and a
long one converges on the cap exactly (measured: 2 MiB at 512 KiB/s in 4.0 s).

`Backoff` spaces retries after an error exponentially, with "equal jitter": attempt n waits
a random time in [d/2, d] where d = min(cap, base * 2**n). The halves never overlap, so the
delays grow until they reach the cap, and kits that lost the hub at the same moment (an
office link coming back) do not all return at the same instant.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Pace a byte stream at `bytes_per_s` (0 or less: no cap)."""

    def __init__(self, bytes_per_s: float, *, burst_s: float = 0.05,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = float(bytes_per_s)
        self.burst_s = burst_s
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.Lock()
        self._virtual = float("-inf")

    @classmethod
    def from_kbps(cls, kbps: int, **kwargs) -> RateLimiter:
        return cls(kbps * 1024, **kwargs)

    @property
    def capped(self) -> bool:
        return self.rate > 0

    def delay_for(self, nbytes: int) -> float:
        """Book `nbytes` on the virtual clock; how long to wait before sending them."""
        if not self.capped or nbytes <= 0:
            return 0.0
        with self._lock:
            now = self.clock()
            start = max(self._virtual, now - self.burst_s)
            self._virtual = start + nbytes / self.rate
            return max(0.0, self._virtual - now)

    def consume(self, nbytes: int) -> None:
        """Wait as long as the cap requires before `nbytes` more may go."""
        delay = self.delay_for(nbytes)
        if delay > 0:
            self.sleep(delay)


class Backoff:
    """Exponential backoff with equal jitter, capped at `cap` seconds (sync.retry_max_s)."""

    def __init__(self, cap: float, *, base: float | None = None,
                 rng: random.Random | None = None) -> None:
        self.cap = float(cap)
        # 1 s first, unless the cap is tiny (tests): then 1/16 of it, so delays still grow.
        self.base = base if base is not None else min(1.0, self.cap / 16)
        self.rng = rng or random.Random()
        self.attempt = 0

    def next(self) -> float:
        """The delay before the next retry; each call counts one more failure."""
        ceiling = min(self.cap, self.base * 2 ** self.attempt)
        self.attempt += 1
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempt = 0
