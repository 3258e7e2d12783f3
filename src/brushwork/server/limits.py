"""Rate limits: so many requests per minute for each key (a client address, a participant), in one process."""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from fastapi import HTTPException

WINDOW_S = 60.0
#: Keys kept before those without a request in the last minute are forgotten.
SWEEP_AT = 4096


class RateLimit:
    """A sliding window: a request is let through when its key made fewer than ``limit`` in the last minute."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.requests: dict[str, deque[float]] = {}
        self.lock = threading.Lock()

    def charge(self, key: str, limit: int, who: str) -> None:
        """Count a request of ``key``, or refuse it with 429 and the seconds until one is let through again."""
        with self.lock:
            now = self.clock()
            if len(self.requests) >= SWEEP_AT:
                self.requests = {known: times for known, times in self.requests.items()
                                 if times and times[-1] > now - WINDOW_S}
            times = self.requests.setdefault(key, deque())
            while times and times[0] <= now - WINDOW_S:
                times.popleft()
            if len(times) >= limit:
                wait = max(1, math.ceil(times[0] + WINDOW_S - now)) if times else math.ceil(WINDOW_S)
                raise HTTPException(429, f"too many study requests from {who} ({limit} a minute); try again in "
                                         f"{wait} s", headers={"Retry-After": str(wait)})
            times.append(now)
