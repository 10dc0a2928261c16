"""Refresh-ahead: a hot entry near its expiry is refreshed in the background, never waited for."""

from __future__ import annotations

from edge_router.registry import CachedLookup

from .conftest import FakeRegistry, wait_until


def _cache(reg: FakeRegistry, clock: list[float]) -> CachedLookup:  # type: ignore[type-arg]
    results: list[str] = []
    c = CachedLookup(
        reg.get_account,
        maxsize=100,
        ttl_s=10,
        negative_ttl_s=1,
        stale_if_error_s=60,
        on_result=results.append,
        clock=lambda: clock[0],
    )
    c.results = results  # type: ignore[attr-defined]
    return c


async def test_hit_near_expiry_refreshes_in_the_background(registry: FakeRegistry) -> None:
    registry.add("acme", "eu-west-1")
    clock = [0.0]
    cache = _cache(registry, clock)
    first = await cache.get("acme")
    clock[0] = 8.5  # within the last 20% of the 10 s TTL
    assert await cache.get("acme") is first  # served at once from the cache
    await wait_until(lambda: registry.calls == 2)  # one background read
    clock[0] = 12.0  # past the original expiry: the refreshed entry is fresh
    assert (await cache.get("acme")) is not None
    assert registry.calls == 2
    assert cache.results == ["miss", "hit", "hit"]  # type: ignore[attr-defined]


async def test_failed_refresh_backs_off_and_keeps_serving(registry: FakeRegistry) -> None:
    registry.add("acme", "eu-west-1")
    clock = [0.0]
    cache = _cache(registry, clock)
    await cache.get("acme")
    registry.fail = True
    clock[0] = 8.5
    assert await cache.get("acme") is not None
    await wait_until(lambda: registry.calls == 2)
    await wait_until(lambda: not cache._inflight)
    for _ in range(5):  # within the back-off: no new read per request
        assert await cache.get("acme") is not None
    assert registry.calls == 2
    assert set(cache.results) == {"miss", "hit"}  # type: ignore[attr-defined]
