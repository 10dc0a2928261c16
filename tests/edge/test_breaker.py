"""The registry's circuit breaker and stale-while-revalidate: a fake registry whose reads answer,
fail or hang until the test releases them, and a clock the test moves. No sleeps: every wait
is on an event the test controls, bounded by ``asyncio.wait_for``."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from contextlib import asynccontextmanager
from typing import Any

import pytest
from yarl import URL

from edge_router.admin import create_admin_app
from edge_router.app import STATE, create_app
from edge_router.errors import RegistryError, Unavailable
from edge_router.registry import AccountRecord, ApiKey, KeyOwner, token_hash
from edge_router.registry.breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from edge_router.registry.cache import BREAKER_OPEN, REGISTRY_ERROR, REVALIDATING, CachedLookup

from .conftest import FakeStore, Key, make_settings, wait_until

BOUND = 2.0  # every wait in this file: a request that "waits for the registry" fails the test


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ControlledRegistry:
    """Reads answer from ``accounts``/``owners``, or (``mode``) fail at once, or hang until
    ``release`` ends them with an answer or a failure."""

    def __init__(self) -> None:
        self.accounts: dict[str, AccountRecord] = {}
        self.owners: dict[str, KeyOwner] = {}
        self.mode = "answer"  # answer | fail | hang
        self.calls: Counter[str] = Counter()
        self.hung: list[tuple[asyncio.Future[None], str]] = []

    def add(self, name: str, region: str, keys: list[Key], active: bool = True) -> None:
        api = {k.app_key: ApiKey(k.app_key, token_hash(k.token), k.roles, active) for k in keys}
        self.accounts[name] = AccountRecord(name, region, "active", api)
        for k in keys:
            self.owners[k.app_key] = KeyOwner(name, token_hash(k.token), active)

    async def _read(self, what: str) -> None:
        self.calls[what] += 1
        if self.mode == "fail":
            raise RegistryError("registry down (test)")
        if self.mode == "hang":
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.hung.append((future, what))
            await asyncio.wait_for(future, 10)  # released by the test; bounded regardless

    def release(self, *, fail: bool) -> int:
        """End every hung read: with a failure, or let it answer from the tables."""
        n = 0
        for future, _what in self.hung:
            if not future.done():
                if fail:
                    future.set_exception(RegistryError("registry timed out (test)"))
                else:
                    future.set_result(None)
                n += 1
        self.hung.clear()
        return n

    async def get_account(self, name: str) -> AccountRecord | None:
        await self._read(f"account:{name}")
        return self.accounts.get(name)

    async def get_key_owner(self, app_key: str) -> KeyOwner | None:
        await self._read(f"owner:{app_key}")
        return self.owners.get(app_key)

    def factory(self) -> Any:
        @asynccontextmanager
        async def make(_settings: Any):  # type: ignore[no-untyped-def]
            yield self

        return make


KEY = Key("vtexappkey-acme-A1", "token-acme-0123456789")


# -- the breaker alone: a table of events ----------------------------------------------------


def test_breaker_transitions() -> None:
    clock = Clock()
    seen: list[tuple[str, str]] = []
    b = Breaker(
        failure_threshold=3, open_s=5, clock=clock, on_change=lambda o, n: seen.append((o, n))
    )
    assert b.state == CLOSED and b.allow()
    b.failure()
    b.failure()
    b.success()  # a success in between: the count starts again
    b.failure()
    b.failure()
    assert b.state == CLOSED
    b.failure()
    assert b.state == OPEN and not b.allow()
    clock.now = 4.99
    assert not b.allow()
    clock.now = 5.0
    assert b.allow() and b.state == HALF_OPEN  # this caller's read is the probe
    assert not b.allow() and not b.allow()  # one probe at a time
    b.failure()  # the probe failed: open again, for open_s from now
    assert b.state == OPEN and not b.allow()
    clock.now = 9.99
    assert not b.allow()
    clock.now = 10.0
    assert b.allow()
    b.success()
    assert b.state == CLOSED and b.allow()
    assert seen == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
    ]
    b.failure()
    b.failure()
    assert b.state == CLOSED  # the count restarted when it closed


def test_a_late_failure_while_open_changes_nothing() -> None:
    clock = Clock()
    b = Breaker(failure_threshold=1, open_s=5, clock=clock)
    b.failure()
    clock.now = 3
    b.failure()  # a read that started while closed, failing late
    clock.now = 5
    assert b.allow()  # the open period was not extended


def test_breaker_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        Breaker(failure_threshold=0, open_s=1)
    with pytest.raises(ValueError):
        Breaker(failure_threshold=1, open_s=0)


# -- the cache with a breaker ----------------------------------------------------------------


def _cache(reg: ControlledRegistry, clock: Clock, **over: Any) -> Any:
    results: list[str] = []
    stale: list[str] = []
    breaker = Breaker(failure_threshold=2, open_s=5, clock=clock)
    args: dict[str, Any] = dict(
        maxsize=100,
        ttl_s=10,
        negative_ttl_s=1,
        stale_if_error_s=100,
        on_result=results.append,
        on_stale=stale.append,
        breaker=breaker,
        clock=clock,
    )
    args.update(over)
    cache: Any = CachedLookup(reg.get_account, **args)
    cache.results, cache.stale, cache.breaker = results, stale, breaker
    return cache


async def _get(cache: Any, key: str) -> Any:
    return await asyncio.wait_for(cache.get(key), BOUND)


async def test_past_its_ttl_a_known_entry_is_served_while_one_read_refreshes_it() -> None:
    reg, clock = ControlledRegistry(), Clock()
    reg.add("acme", "eu-west-1", [KEY])
    cache = _cache(reg, clock)
    first = await _get(cache, "acme")
    reg.mode = "hang"
    clock.now = 50  # long past the 10 s TTL, within the stale bound
    answers = await asyncio.gather(*(_get(cache, "acme") for _ in range(50)))
    assert all(a is first for a in answers)  # served at once, the read still hanging
    assert reg.calls["account:acme"] == 2  # ONE background refresh for the 50
    assert cache.stale == [REVALIDATING] * 50
    reg.accounts["acme"] = AccountRecord("acme", "us-east-1", "active", {})
    assert reg.release(fail=False) == 1
    await wait_until(lambda: not cache._inflight, BOUND)
    assert (await _get(cache, "acme")).region == "us-east-1"  # the refreshed answer, fresh
    assert cache.results[-1] == "hit"


async def test_beyond_the_revalidate_window_the_request_waits_for_the_read() -> None:
    reg, clock = ControlledRegistry(), Clock()
    reg.add("acme", "eu-west-1", [KEY])
    cache = _cache(reg, clock, stale_while_revalidate_s=5)
    await _get(cache, "acme")
    clock.now = 14  # 4 s past the TTL: inside the 5 s window, served at once
    reg.mode = "hang"
    assert (await _get(cache, "acme")) is not None
    reg.release(fail=False)
    await wait_until(lambda: not cache._inflight, BOUND)
    clock.now = 14 + 10 + 6  # the refreshed entry is now 6 s past its TTL
    waiting = asyncio.ensure_future(cache.get("acme"))
    await wait_until(lambda: bool(reg.hung), BOUND)
    assert not waiting.done()  # waits for the registry, which answers...
    reg.release(fail=False)
    assert (await asyncio.wait_for(waiting, BOUND)) is not None
    assert cache.results[-1] == "miss"
    clock.now = 30 + 16  # ... and if the read fails, the old answer is served
    waiting = asyncio.ensure_future(cache.get("acme"))
    await wait_until(lambda: bool(reg.hung), BOUND)
    reg.release(fail=True)
    assert (await asyncio.wait_for(waiting, BOUND)) is not None
    assert cache.stale[-1] == REGISTRY_ERROR


async def test_an_outage_opens_the_breaker_then_nobody_waits() -> None:
    reg, clock = ControlledRegistry(), Clock()
    reg.add("acme", "eu-west-1", [KEY])
    cache = _cache(reg, clock)
    known = await _get(cache, "acme")
    reg.mode = "hang"  # the registry's DynamoDB is SIGSTOPped: reads hang, then time out
    clock.now = 11
    assert (await _get(cache, "acme")) is known  # stale at once; its refresh hangs
    first_unknown = asyncio.ensure_future(cache.get("newcomer"))  # nothing known: it waits
    await wait_until(lambda: len(reg.hung) == 2, BOUND)
    assert cache.breaker.state == CLOSED
    reg.release(fail=True)  # both reads time out: 2 failures in a row open the breaker
    with pytest.raises(Unavailable):
        await asyncio.wait_for(first_unknown, BOUND)
    assert cache.breaker.state == OPEN
    calls = sum(reg.calls.values())
    # open: a known account is served at once, an unknown one refused at once, no reads
    for _ in range(20):
        assert (await _get(cache, "acme")) is known
        with pytest.raises(Unavailable) as err:
            await _get(cache, "other-newcomer")
        assert err.value.code == "registry_unavailable" and err.value.retry_after == 1
    assert sum(reg.calls.values()) == calls and not reg.hung
    assert cache.stale[-1] == BREAKER_OPEN and cache.results[-1] == "error"


async def test_half_open_probe_runs_in_the_background_and_closes_the_breaker() -> None:
    reg, clock = ControlledRegistry(), Clock()
    reg.add("acme", "eu-west-1", [KEY])
    reg.add("bolt", "us-east-1", [])
    cache = _cache(reg, clock)
    await _get(cache, "acme")
    reg.mode = "fail"
    clock.now = 11
    await _get(cache, "acme")  # refresh fails (1)
    with pytest.raises(Unavailable):
        await _get(cache, "bolt")  # (2): open
    assert cache.breaker.state == OPEN
    reg.mode = "hang"
    clock.now = 16  # open_s over: the next wanted read is the probe
    with pytest.raises(Unavailable):
        await _get(cache, "bolt")  # refused at once; its read is the probe, in the background
    assert cache.breaker.state == HALF_OPEN and [w for _f, w in reg.hung] == ["account:bolt"]
    # while the probe is out: no other read starts, nobody waits
    assert (await _get(cache, "acme")) is not None
    with pytest.raises(Unavailable):
        await _get(cache, "carl")
    assert len(reg.hung) == 1
    reg.release(fail=True)  # the probe fails: open again
    await wait_until(lambda: cache.breaker.state == OPEN, BOUND)
    clock.now = 21
    assert (await _get(cache, "acme")) is not None  # a stale serve launches the next probe
    assert [w for _f, w in reg.hung] == ["account:acme"]
    reg.mode = "answer"
    reg.release(fail=False)  # the registry is back
    await wait_until(lambda: cache.breaker.state == CLOSED, BOUND)
    assert (await _get(cache, "bolt")).region == "us-east-1"  # a read again, answered


async def test_a_hanging_registry_is_waited_for_at_most_wait_s() -> None:
    reg, clock = ControlledRegistry(), Clock()
    cache = _cache(reg, clock, wait_s=0.05)
    reg.mode = "hang"  # reads never end by themselves (until the test releases them)
    for name in ("anna", "bert"):
        with pytest.raises(Unavailable):
            await _get(cache, name)  # 503 after wait_s, the read still out
    assert cache.breaker.state == OPEN  # two slow reads count as two failures
    with pytest.raises(Unavailable):
        await _get(cache, "carl")  # open: refused at once, no read
    assert len(reg.hung) == 2
    reg.add("anna", "eu-west-1", [])
    reg.release(fail=False)  # the slow reads answer after all: their answers are kept
    await wait_until(lambda: not cache._inflight, BOUND)
    assert (await _get(cache, "anna")).region == "eu-west-1"
    assert cache.breaker.state == OPEN  # counted as failed already; the probe decides
    clock.now = 5
    reg.mode = "answer"
    with pytest.raises(Unavailable):
        await _get(cache, "carl")  # refused at once; its read is the probe
    await wait_until(lambda: cache.breaker.state == CLOSED, BOUND)


async def test_a_failing_read_is_not_repeated_per_request() -> None:
    reg, clock = ControlledRegistry(), Clock()
    reg.add("acme", "eu-west-1", [KEY])
    cache = _cache(reg, clock, breaker=None)  # no breaker: the per-key back-off alone
    await _get(cache, "acme")
    reg.mode = "fail"
    clock.now = 11
    for _ in range(10):
        assert (await _get(cache, "acme")) is not None
    await wait_until(lambda: not cache._inflight, BOUND)
    assert reg.calls["account:acme"] == 2  # one failed refresh; the rest within error_retry
    clock.now = 12.5
    assert (await _get(cache, "acme")) is not None
    await wait_until(lambda: not cache._inflight, BOUND)
    assert reg.calls["account:acme"] == 3


async def test_no_such_account_is_never_served_stale() -> None:
    reg, clock = ControlledRegistry(), Clock()
    cache = _cache(reg, clock)
    assert (await _get(cache, "ghost")) is None
    clock.now = 2  # past the negative TTL
    reg.add("ghost", "eu-west-1", [])
    assert (await _get(cache, "ghost")).region == "eu-west-1"  # waited for the read
    # a known "no such account" past its TTL while the registry fails: refused with 503
    # (the registry cannot say now), neither 404 from a stale answer nor a wait
    assert (await _get(cache, "nobody")) is None
    reg.mode = "fail"
    clock.now = 4
    with pytest.raises(Unavailable):
        await _get(cache, "nobody")


# -- through the edge: revoked stays revoked, unknown keys refused at once -----------------


P = "/api/storage/profile-system"


@pytest.fixture
async def edge(aiohttp_server, aiohttp_client):  # type: ignore[no-untyped-def]
    store = FakeStore("eu-west-1", "eu-0")
    server = await aiohttp_server(store.app())
    reg, clock = ControlledRegistry(), Clock()
    reg.add("acme", "eu-west-1", [KEY])
    settings = make_settings(
        {"eu-west-1": [f"http://127.0.0.1:{server.port}"]},
        cache_ttl_s=10,
        negative_ttl_s=1,
        stale_if_error_s=100,
        registry_breaker_failures=1,
        registry_breaker_open_s=5,
    )
    app = create_app(settings, registry_factory=reg.factory(), clock=clock)
    client = await aiohttp_client(app)
    admin = await aiohttp_client(create_admin_app(app))

    async def get(key: Key, account: str = "acme") -> tuple[int, dict[str, Any]]:
        resp = await asyncio.wait_for(
            client.get(
                URL(f"{P}/profiles/p1?an={account}", encoded=True),
                headers={"X-VTEX-API-AppKey": key.app_key, "X-VTEX-API-AppToken": key.token},
            ),
            BOUND,
        )
        return resp.status, await resp.json()

    async def metrics() -> str:
        return await (await admin.get("/metrics")).text()

    return reg, clock, get, metrics, app


async def test_a_revoked_key_stays_revoked_while_the_registry_is_down(edge) -> None:  # type: ignore[no-untyped-def]
    reg, clock, get, metrics, app = edge
    assert (await get(KEY))[0] == 200
    reg.add("acme", "eu-west-1", [KEY], active=False)  # revoked in the registry
    clock.now = 11  # past the TTL: served stale once while the refresh reads the revocation
    await get(KEY)
    await wait_until(lambda: not app[STATE].accounts._inflight, BOUND)
    assert (await get(KEY)) == (
        401,
        {"error": "invalid_credentials", "message": "invalid app key or token"},
    )
    reg.mode = "fail"  # outage: the breaker opens, stale answers from now on
    clock.now = 50
    for _ in range(3):
        status, body = await get(KEY)
        assert (status, body["error"]) == (401, "invalid_credentials")  # revoked stays revoked
    assert app[STATE].accounts._breaker.state == OPEN
    text = await metrics()
    assert 'edge_registry_breaker_state{state="open"} 1.0' in text
    assert 'edge_registry_breaker_state{state="closed"} 0.0' in text
    assert 'edge_registry_breaker_transitions_total{state="open"} 1.0' in text
    served = re.search(
        r'edge_registry_stale_served_total\{lookup="account",reason="breaker_open"\} (\S+)', text
    )
    assert served is not None and float(served.group(1)) >= 2, text


async def test_a_key_never_seen_is_refused_at_once_while_open(edge) -> None:  # type: ignore[no-untyped-def]
    reg, clock, get, metrics, app = edge
    assert (await get(KEY))[0] == 200
    reg.mode = "hang"
    clock.now = 11
    assert (await get(KEY))[0] == 200  # stale, refresh hanging
    reg.release(fail=True)  # one failure opens it (registry_breaker_failures=1)
    await wait_until(lambda: app[STATE].accounts._breaker.state == OPEN, BOUND)
    calls = sum(reg.calls.values())
    stranger = Key("vtexappkey-never-seen", "token-never-seen-000000")
    status, body = await get(stranger)
    assert (status, body["error"]) == (503, "registry_unavailable")
    status, body = await get(KEY, account="never-seen-account")
    assert (status, body["error"]) == (503, "registry_unavailable")
    assert (await get(KEY))[0] == 200  # the known account is still served
    assert sum(reg.calls.values()) == calls and not reg.hung  # nothing asked the registry
    text = await metrics()
    assert 'edge_registry_lookups_total{result="error"} 1.0' in text
