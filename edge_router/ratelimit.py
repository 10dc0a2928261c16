"""Per-account token buckets: ``rate`` tokens per second, at most ``burst`` saved up.

The bucket is pure arithmetic on a clock value passed in; ``RateLimiter`` keeps one bucket per
account in a bounded LRU so an unbounded tenant count cannot grow memory. An evicted bucket
comes back full, which errs on the side of serving.
"""

from __future__ import annotations

import math
from collections import OrderedDict


class TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> float:
        """0.0 when a token was taken; otherwise seconds until one will be available."""
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    def __init__(self, rate: float, burst: int, maxsize: int = 100_000) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._maxsize = maxsize
        # An LRU by hand: an OrderedDict in recency order (cachetools' LRUCache costs several
        # Python-level calls per lookup on the hot path).
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def check(self, account: str, now: float) -> int:
        """0 when allowed, else the whole seconds a client should wait (Retry-After)."""
        buckets = self._buckets
        bucket = buckets.get(account)
        if bucket is None:
            if buckets and len(buckets) >= self._maxsize:
                buckets.popitem(last=False)  # the least recently used
            bucket = buckets[account] = TokenBucket(self._rate, self._burst, now)
        else:
            buckets.move_to_end(account)
        wait = bucket.take(now)
        return 0 if wait == 0.0 else max(1, math.ceil(wait))
