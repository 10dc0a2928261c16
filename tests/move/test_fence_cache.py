"""The read-side fence cache, as a decision table (no I/O): a view at most ttl old, shared reads,
and never a refusal from a stale view."""

from __future__ import annotations

import asyncio

import pytest

from profile_store.errors import AccountMoving, ResidencyMismatch
from profile_store.fence import Fence, FenceCache, FenceState, accounts_in, fence_check


class Table:
    def __init__(self) -> None:
        self.fence: Fence | None = None
        self.reads = 0
        self.gate: asyncio.Event | None = None

    async def read(self, account: str) -> Fence | None:
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        return self.fence


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def moved(state: FenceState) -> Fence:
    return Fence(state, 1, "eu-west-1")


async def test_a_view_is_kept_for_the_ttl_then_read_again() -> None:
    table, clock = Table(), Clock()
    cache = FenceCache(table.read, ttl_s=1.0, clock=clock)
    await cache.admit("a", write=False)
    await cache.admit("a", write=True)
    assert table.reads == 1
    table.fence = moved(FenceState.MOVED_OUT)
    clock.now += 0.99
    await cache.admit("a", write=False)  # still the normal view: within the TTL
    clock.now += 0.02
    with pytest.raises(ResidencyMismatch):
        await cache.admit("a", write=False)
    assert table.reads == 2


@pytest.mark.parametrize(
    ("state", "read", "write"),
    [
        (FenceState.FROZEN, None, AccountMoving),
        (FenceState.MOVED_OUT, ResidencyMismatch, ResidencyMismatch),
        (FenceState.INCOMING, ResidencyMismatch, ResidencyMismatch),
    ],
)
async def test_what_each_state_refuses(
    state: FenceState, read: type[Exception] | None, write: type[Exception]
) -> None:
    table = Table()
    table.fence = moved(state)
    cache = FenceCache(table.read, ttl_s=1.0)
    if read is None:
        await cache.admit("a", write=False)
    else:
        with pytest.raises(read):
            await cache.admit("a", write=False)
    with pytest.raises(write):
        await cache.admit("a", write=True)


async def test_a_cached_refusal_is_checked_again_before_it_is_answered() -> None:
    """After the marker is removed (the destination after the flip), no request is refused
    on the old view, even within the TTL."""
    table = Table()
    table.fence = moved(FenceState.INCOMING)
    cache = FenceCache(table.read, ttl_s=1.0)
    with pytest.raises(ResidencyMismatch):
        await cache.admit("a", write=False)
    table.fence = None
    await cache.admit("a", write=True)
    await cache.admit("a", write=False)


async def test_concurrent_misses_share_one_read() -> None:
    table = Table()
    table.gate = asyncio.Event()
    cache = FenceCache(table.read, ttl_s=1.0)
    waiting = [asyncio.create_task(cache.admit("a", write=False)) for _ in range(20)]
    await asyncio.sleep(0)
    table.gate.set()
    await asyncio.wait_for(asyncio.gather(*waiting), 5)
    assert table.reads == 1


async def test_a_cancelled_reader_does_not_fail_the_others() -> None:
    table = Table()
    table.gate = asyncio.Event()
    cache = FenceCache(table.read, ttl_s=1.0)
    first = asyncio.create_task(cache.get("a"))
    await asyncio.sleep(0)
    second = asyncio.create_task(cache.get("a"))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    table.gate.set()
    assert await asyncio.wait_for(second, 5) is None
    assert first.cancelled()


def test_every_account_a_transaction_touches_gets_one_check() -> None:
    entries = [
        {"Put": {"Item": {"pk": {"S": "A#acme#P#1"}, "sk": {"S": "CUR"}}}},
        {"Delete": {"Key": {"pk": {"S": "A#acme#K#email#ff"}, "sk": {"S": "K"}}}},
        {"ConditionCheck": {"Key": {"pk": {"S": "A#beta#SCHEMA"}, "sk": {"S": "CUSTOM"}}}},
        {"Put": {"Item": {"pk": {"S": "FENCE#acme"}, "sk": {"S": "F"}}}},
    ]
    assert accounts_in(entries) == ["acme", "beta"]
    check = fence_check("acme")["ConditionCheck"]
    assert check["Key"]["pk"]["S"] == "FENCE#acme"
    assert check["ConditionExpression"] == "attribute_not_exists(pk)"
