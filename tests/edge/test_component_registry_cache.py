"""Tier (b): real aiohttp servers on 127.0.0.1 -- fake stores behind the real edge. The
registry cache (``CachedLookup``): single flight, negative caching, stale-if-error then fail
closed, errors converted, and a registry outage seen through the edge.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from edge_router.app import STATE
from edge_router.errors import RegistryError, Unavailable
from edge_router.registry import CachedLookup

from .conftest import US_KEY, FakeRegistry, P, wait_until


def _cache(reg: FakeRegistry, clock: list[float], **over: Any) -> CachedLookup:  # type: ignore[type-arg]
    results: list[str] = []
    args: dict[str, Any] = dict(
        maxsize=100,
        ttl_s=10,
        negative_ttl_s=1,
        stale_if_error_s=60,
        on_result=results.append,
        clock=lambda: clock[0],
    )
    args.update(over)
    c = CachedLookup(reg.get_account, **args)
    c.results = results  # type: ignore[attr-defined]
    return c


async def test_single_flight(registry: FakeRegistry) -> None:
    registry.add("acme", "eu-west-1")
    registry.gate = asyncio.Event()
    clock = [0.0]
    cache = _cache(registry, clock)
    waiters = [asyncio.ensure_future(cache.get("acme")) for _ in range(50)]
    await wait_until(lambda: registry.calls == 1)
    registry.gate.set()
    records = await asyncio.gather(*waiters)
    assert registry.calls == 1
    assert all(r is not None and r.region == "eu-west-1" for r in records)
    assert await cache.get("acme") is records[0]
    assert registry.calls == 1 and cache.results[-1] == "hit"  # type: ignore[attr-defined]


async def test_single_flight_survives_a_cancelled_waiter(registry: FakeRegistry) -> None:
    registry.add("acme", "eu-west-1")
    registry.gate = asyncio.Event()
    cache = _cache(registry, [0.0])
    first = asyncio.ensure_future(cache.get("acme"))
    second = asyncio.ensure_future(cache.get("acme"))
    await wait_until(lambda: registry.calls == 1)
    first.cancel()
    registry.gate.set()
    assert (await second) is not None
    assert registry.calls == 1


async def test_negative_caching(registry: FakeRegistry) -> None:
    clock = [0.0]
    cache = _cache(registry, clock)
    assert await cache.get("ghost") is None
    assert await cache.get("ghost") is None
    assert registry.calls == 1
    assert cache.results == ["miss", "negative_hit"]  # type: ignore[attr-defined]
    clock[0] = 1.5  # past the negative TTL (1s), well within the positive TTL
    registry.add("ghost", "us-east-1")
    assert (await cache.get("ghost")).region == "us-east-1"  # type: ignore[union-attr]
    assert registry.calls == 2


async def test_stale_if_error_then_fail_closed(registry: FakeRegistry) -> None:
    registry.add("acme", "eu-west-1")
    clock = [0.0]
    cache = _cache(registry, clock)
    assert (await cache.get("acme")) is not None
    registry.fail = True
    clock[0] = 11.0  # fresh TTL (10s) over, registry down: stale value served
    assert (await cache.get("acme")).region == "eu-west-1"  # type: ignore[union-attr]
    assert cache.results[-1] == "stale"  # type: ignore[attr-defined]
    calls = registry.calls
    assert (await cache.get("acme")) is not None  # within the error back-off: no new read
    assert registry.calls == calls and cache.results[-1] == "stale"  # type: ignore[attr-defined]
    # an unknown account fails closed
    with pytest.raises(Unavailable) as err:
        await cache.get("newcomer")
    assert err.value.code == "registry_unavailable" and err.value.status == 503
    # past ttl + stale_if_error the known account fails closed too
    clock[0] = 71.0
    with pytest.raises(Unavailable):
        await cache.get("acme")
    # registry back: served fresh again
    registry.fail = False
    assert (await cache.get("acme")) is not None
    assert cache.results[-1] == "miss"  # type: ignore[attr-defined]


async def test_registry_outage_through_the_edge(build) -> None:  # type: ignore[no-untyped-def]
    st = await build(
        {"eu-west-1": ["store"], "us-east-1": ["store"]}, cache_ttl_s=0.05, negative_ttl_s=0.05
    )
    assert (await st.get(f"{P}/profiles/p1?an=acme")).status == 200
    st.registry.fail = True
    cache = st.app[STATE].accounts
    await wait_until(lambda: cache._cache["acme"].fresh_until < st.app[STATE].pools.clock())
    assert (await st.get(f"{P}/profiles/p1?an=acme")).status == 200  # stale
    resp = await st.get(f"{P}/profiles/p1?an=bolt", key=US_KEY)
    assert resp.status == 503 and (await resp.json())["error"] == "registry_unavailable"
    assert "Retry-After" in resp.headers
    text = await st.metrics()
    assert 'edge_registry_lookups_total{result="stale"} 1.0' in text
    assert 'edge_registry_lookups_total{result="error"} 1.0' in text


async def test_registry_errors_are_converted(registry: FakeRegistry) -> None:
    async def boom(_k: str) -> None:
        raise RuntimeError("unexpected")

    cache = CachedLookup(boom, maxsize=10, ttl_s=1, negative_ttl_s=1, stale_if_error_s=1)
    with pytest.raises(Unavailable):
        await cache.get("x")
    assert not cache.last_ok
    assert issubclass(RegistryError, Exception)
