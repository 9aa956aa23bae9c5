"""Rate limits of the webhook intake: token buckets per client address and per pipeline.

Time is a parameter: every call takes `now` (seconds on a monotonic clock), so tests drive the
buckets without sleeping. A bucket holds at most `burst` tokens and refills at `per_minute / 60`
tokens a second; a request takes one, and a bucket without one answers how long until it has
one (the `Retry-After` of a 429). The table of buckets is bounded: full buckets (clients quiet
long enough to have refilled) are dropped first, so a flood of addresses cannot grow it.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

MAX_BUCKETS = 10_000  # per table; beyond it the refilled ones go, then the oldest


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimit:
    """Token buckets keyed by a string (a client address, a pipeline name); thread-safe."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(max(1, burst))
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str, now: float) -> float:
        """Take a token for `key` at `now`: 0.0 when there was one, else the seconds until one
        refills (the request is refused and takes nothing)."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= MAX_BUCKETS:
                    self._trim(now)
                bucket = self._buckets[key] = _Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + max(0.0, now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate

    def _trim(self, now: float) -> None:
        full = [k for k, b in self._buckets.items()
                if b.tokens + (now - b.at) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= MAX_BUCKETS:  # all busy: forget the longest quiet half
            for key in sorted(self._buckets, key=lambda k: self._buckets[k].at)[:MAX_BUCKETS // 2]:
                del self._buckets[key]


def retry_after(seconds: float) -> str:
    """The value of a `Retry-After` header: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
