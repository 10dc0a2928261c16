"""Tier (a), pure decision tables (no I/O, no servers): rate limiting -- the token bucket's take
and refill, and one bucket per account.
"""

from __future__ import annotations

import pytest

from edge_router.ratelimit import RateLimiter, TokenBucket


def test_token_bucket() -> None:
    b = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [b.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take(0.0) == pytest.approx(0.5)
    assert b.take(0.5) == 0.0  # one token refilled
    assert b.take(0.5) > 0
    assert b.take(100.0) == 0.0  # refill is capped at burst
    assert b.tokens == pytest.approx(2.0)


def test_rate_limiter_is_per_account() -> None:
    rl = RateLimiter(rate=1.0, burst=1)
    assert rl.check("a", 0.0) == 0
    assert rl.check("a", 0.0) == 1
    assert rl.check("b", 0.0) == 0
