"""Faults under load: lost instances, a lost region, a lost DynamoDB, a lost registry, a slow store.

Each test measures with the STORES' own ``profile_store_requests_total`` (not the edge's
metrics) that nothing crossed regions: while a region is down, the other region's stores count
exactly the requests its own clients sent. Every wait polls against a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import urllib.request
from collections import Counter
from typing import Any

import pytest

from edge_router.app import create_app as create_edge
from tests.edge.conftest import FakeRegistry, Key, make_settings

from .conftest import STATS, Client, Load, Pii, poll
from .stack import ACCOUNT_OF, API, ReliabilityStack, auth_headers

pytestmark = pytest.mark.slow

EU, US = "eu-west-1", "us-east-1"


async def create_profile(client: Client, pii: Pii, region: str) -> str:
    account = ACCOUNT_OF[region]
    answer = await client.call(
        "POST", f"{API}/profiles", headers=auth_headers(account), json=pii.profile()
    )
    assert answer.status == 201, answer.body
    assert answer.headers["X-Data-Region"] == region
    return str(answer.body["id"])


async def get_profile(client: Client, region: str, pid: str, expect: tuple[int, ...] = ()):  # type: ignore[no-untyped-def]
    return await client.call(
        "GET", f"{API}/profiles/{pid}", headers=auth_headers(ACCOUNT_OF[region]), expect=expect
    )


class GetLoad:
    """Steady GETs from ``workers`` clients per region until stopped; outcomes counted."""

    def __init__(self, client: Client, targets: dict[str, str], workers: int) -> None:
        self.client = client
        self.targets = targets
        self.workers = workers
        self.outcomes: dict[str, Counter[str]] = {r: Counter() for r in targets}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def ok(self, region: str) -> int:
        return self.outcomes[region]["200"]

    def failed(self, region: str) -> int:
        return sum(n for k, n in self.outcomes[region].items() if k != "200")

    async def _worker(self, region: str) -> None:
        while not self._stop.is_set():
            try:
                answer = await get_profile(self.client, region, self.targets[region])
                self.outcomes[region][str(answer.status)] += 1
            except Exception as exc:  # counted as a failed GET, never swallowed silently
                self.outcomes[region][type(exc).__name__] += 1

    def __enter__(self) -> GetLoad:
        for region in self.targets:
            for _ in range(self.workers):
                self._tasks.append(asyncio.create_task(self._worker(region)))
        return self

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), 30)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


def record_cross_region(stack: ReliabilityStack, region: str, before: float, sent: int) -> int:
    """Requests the ``region`` stores counted beyond what its own clients sent: must be 0."""
    extra = int(stack.region_requests(region) - before - sent)
    STATS.cross_region_checks += 1
    STATS.cross_region += max(extra, 0)
    return extra


async def test_kill_one_instance_then_both(
    stack: ReliabilityStack, client: Client, pii: Pii, load: Load
) -> None:
    targets = {EU: await create_profile(client, pii, EU), US: await create_profile(client, pii, US)}
    us_before = stack.region_requests(US)

    # 1. one of eu-west-1's two instances is SIGKILLed during a steady load of GETs
    with GetLoad(client, targets, load.workers) as gets:
        await poll("load running", lambda: gets.ok(EU) >= 20 and gets.ok(US) >= 20, 20)
        STATS.fault("SIGKILL one eu-west-1 store instance under GET load")
        stack.kill_store(EU, 0)
        at_kill = gets.ok(EU)
        await poll(
            "edge sees one eu instance",
            lambda: stack.edge_healthy_instances().get(EU) == 1.0,
            10,
        )
        t_end = time.monotonic() + load.seconds
        await poll(
            "load after the kill",
            lambda: time.monotonic() > t_end and gets.ok(EU) >= at_kill + 50,
            load.seconds + 30,
        )
        await gets.stop()
    assert gets.failed(EU) == 0, gets.outcomes
    assert gets.failed(US) == 0, gets.outcomes
    us_sent = gets.ok(US)

    # 2. the second one too: eu-west-1 clients get 503 + Retry-After, never another region
    STATS.fault("SIGKILL both eu-west-1 store instances")
    stack.kill_store(EU, 1)
    await poll(
        "eu refused",
        lambda: _is(get_profile(client, EU, targets[EU], expect=(200, 503)), 503),
        10,
    )
    eu_answers = await asyncio.gather(
        *(get_profile(client, EU, targets[EU], expect=(503,)) for _ in range(20))
    )
    us_answers = await asyncio.gather(*(get_profile(client, US, targets[US]) for _ in range(20)))
    us_sent += len(us_answers)
    for a in eu_answers:
        assert a.status == 503, a.body
        assert int(a.headers["Retry-After"]) >= 1
        assert a.body["error"] == "region_unavailable"
        assert a.headers["X-Data-Region"] == EU
    assert [a.status for a in us_answers] == [200] * len(us_answers)
    # the us-east-1 stores' own counters: exactly the us requests, not one eu request more
    assert record_cross_region(stack, US, us_before, us_sent) == 0


async def _is(coro: Any, status: int) -> bool:
    return bool((await coro).status == status)


async def test_dynamodb_outage_is_regional_and_recovers(
    stack: ReliabilityStack, client: Client, pii: Pii
) -> None:
    targets = {EU: await create_profile(client, pii, EU), US: await create_profile(client, pii, US)}
    pids = {sp.name: sp.proc.pid for r in stack.stores.values() for sp in r if sp.proc}
    us_before = stack.region_requests(US)
    STATS.fault("SIGSTOP eu-west-1 DynamoDB Local")
    stack.pause(stack.ddbs[EU])
    try:
        await poll(
            "eu 503 while its DynamoDB is stopped",
            lambda: _is(get_profile(client, EU, targets[EU], expect=(200, 503)), 503),
            20,
            interval=0.1,
        )
        eu = await asyncio.gather(
            *(get_profile(client, EU, targets[EU], expect=(503,)) for _ in range(10)),
            client.call(
                "POST",
                f"{API}/profiles",
                headers=auth_headers(ACCOUNT_OF[EU]),
                json=pii.profile(),
                expect=(503,),
            ),
        )
        us = await asyncio.gather(*(get_profile(client, US, targets[US]) for _ in range(10)))
        assert [a.status for a in eu] == [503] * len(eu), [a.body for a in eu]
        assert all(int(a.headers["Retry-After"]) >= 1 for a in eu)
        assert [a.status for a in us] == [200] * len(us)
        assert record_cross_region(stack, US, us_before, len(us)) == 0
    finally:
        stack.resume(stack.ddbs[EU])
    # back without restarting anything: same processes, same data
    await poll(
        "eu recovers after DynamoDB Local returns",
        lambda: _is(get_profile(client, EU, targets[EU], expect=(200, 503)), 200),
        30,
        interval=0.2,
    )
    answer = await get_profile(client, EU, targets[EU])
    assert answer.body[0]["id"] == targets[EU]
    now = {sp.name: sp.proc.pid for r in stack.stores.values() for sp in r if sp.proc}
    assert now == pids
    assert all(sp.alive() for r in stack.stores.values() for sp in r)


def _edge_metric(stack: ReliabilityStack, pattern: str) -> float:
    with urllib.request.urlopen(stack.admin_url + "/metrics", timeout=2) as resp:  # noqa: S310
        text = resp.read().decode()
    m = re.search(pattern + r" ([0-9.e+]+)", text)
    return float(m.group(1)) if m else 0.0


async def test_registry_unreachable_serves_known_accounts_from_cache(
    stack: ReliabilityStack, client: Client, pii: Pii
) -> None:
    targets = {EU: await create_profile(client, pii, EU), US: await create_profile(client, pii, US)}
    stale = r'edge_registry_lookups_total\{result="stale"\}'
    stale_before = _edge_metric(stack, stale)
    assert stack.registry_ddb is not None
    STATS.fault("SIGSTOP the registry's DynamoDB Local")
    stack.pause(stack.registry_ddb)
    try:
        # The cache entries (TTL 1 s) expire; a known account is then served stale.
        answers = []

        async def stale_served() -> bool:
            answers.append(await get_profile(client, EU, targets[EU]))
            return _edge_metric(stack, stale) > stale_before

        await poll("a stale registry entry is served", stale_served, 15, interval=0.1)
        answers += await asyncio.gather(
            *(get_profile(client, r, targets[r]) for r in (EU, US) for _ in range(10))
        )
        assert {a.status for a in answers} == {200}
        # an account the edge never saw: fail closed, 503 + Retry-After, within bounded time
        t0 = time.monotonic()
        unknown = await client.call(
            "GET",
            f"{API}/profiles/{targets[EU]}",
            headers={**auth_headers(ACCOUNT_OF[EU]), "Host": "never-seen-account.localhost"},
            expect=(503,),
        )
        assert unknown.status == 503, unknown.body
        assert unknown.body["error"] == "registry_unavailable"
        assert int(unknown.headers["Retry-After"]) >= 1
        assert time.monotonic() - t0 < 5
    finally:
        stack.resume(stack.registry_ddb)

    async def unknown_is_404() -> bool:
        a = await client.call(
            "GET",
            f"{API}/profiles/x",
            headers={**auth_headers(ACCOUNT_OF[EU]), "Host": "never-seen-account.localhost"},
            expect=(404, 503),
        )
        return a.status == 404

    await poll("registry back", unknown_is_404, 20, interval=0.2)


# -- a slow instance: in-process edge (real app) in front of a store that never answers -------


class SlowUpstream:
    """Answers /readyz at once and holds every other request forever; counts connections."""

    def __init__(self) -> None:
        self.open = 0
        self.max_open = 0
        self.busy = 0  # connections holding a proxied request
        self.max_busy = 0
        self.server: asyncio.Server | None = None

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        busy = False
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if head.startswith(b"GET /readyz "):
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
                    continue
                busy = True
                self.busy += 1
                self.max_busy = max(self.max_busy, self.busy)
                await reader.read()  # hold until the edge gives up and closes
                return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self.open -= 1
            if busy:
                self.busy -= 1
            writer.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)


async def test_slow_instance_gives_504_at_the_timeout_within_connection_limits(
    aiohttp_client: Any,
) -> None:
    slow = SlowUpstream()
    port = await slow.start()
    pool_limit, max_concurrent, read_s, total_s = 3, 10, 0.6, 1.0
    settings = make_settings(
        {EU: [f"http://127.0.0.1:{port}"]},
        upstream_pool_limit=pool_limit,
        max_concurrent_requests=max_concurrent,
        read_timeout_s=read_s,
        total_timeout_s=total_s,
        max_attempts=2,
        eject_cooldown_s=0.5,
    )
    reg = FakeRegistry()
    key = Key("vtexappkey-slow-1", "token-slow-0000000000")
    reg.add("slow", EU, [key])
    edge = await aiohttp_client(create_edge(settings, registry_factory=reg.factory()))
    STATS.fault("store instance that accepts and never answers")
    headers = {"X-VTEX-API-AppKey": key.app_key, "X-VTEX-API-AppToken": key.token}

    async def one() -> tuple[int, float, str]:
        STATS.requests += 1
        t0 = time.monotonic()
        resp = await edge.get(f"{API}/profiles/p1?an=slow", headers=headers)
        body = await resp.json()
        return resp.status, time.monotonic() - t0, body["error"]

    try:
        n = 3 * max_concurrent
        results = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), 30)
        for status, _s, code in results:
            STATS.errors[f"expected {status} {code}"] += 1
        timed_out = [r for r in results if r[0] == 504]
        overloaded = [r for r in results if r[0] == 503]
        # every admitted request ends in 504 at the configured timeout, the rest are shed
        assert len(timed_out) + len(overloaded) == n, results
        assert pool_limit <= len(timed_out) <= max_concurrent, results
        # The rest are shed at admission ("overloaded"). A request that times out waiting for
        # one of the instance's pooled connections is a timeout (504), never a connect failure:
        # a slow instance that still answers /readyz is not ejected as if it were dead.
        assert {r[2] for r in overloaded} == {"overloaded"}, results
        assert len(overloaded) >= n - max_concurrent, results
        assert all(read_s - 0.05 <= s <= total_s + 0.75 for _, s, _ in timed_out), results
        # never more connections to the slow instance than the per-upstream cap (plus, at
        # most, the health checker's own connection)
        assert 1 <= slow.max_busy <= pool_limit, slow.max_busy
        assert slow.max_open <= pool_limit + 1, slow.max_open
        # and none is left hanging once the edge gave up
        await poll("held connections released", lambda: slow.busy == 0, 5)

        # the edge is not wedged: after the burst a new request is admitted and times out the
        # same way
        status, _s, code = await one()
        STATS.errors[f"expected {status} {code}"] += 1
        assert (status, code) == (504, "upstream_timeout")
    finally:
        await slow.close()
