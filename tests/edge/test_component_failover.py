"""Tier (b): real aiohttp servers on 127.0.0.1 -- fake stores behind the real edge. Routing,
health and failover: retries and round robin stay inside the home region, an instance's own
failures (5xx, timeouts, refused connects) eject it but never the last one, a failed dependency
never does, a region that is down is a 503 (never another region), and active health checks
follow ``/readyz``.
"""

from __future__ import annotations

import pytest
from yarl import URL

from edge_router.app import STATE

from .conftest import EU_KEY, US_KEY, FakeStore, P, Stack, auth, blackhole, wait_until


async def test_failover_inside_the_region(build) -> None:  # type: ignore[no-untyped-def]
    st = await build({"eu-west-1": ["store", "store"], "us-east-1": ["store"]})
    await st.servers["eu-west-1"][0].close()  # instance 0 dies after passing its health check
    for i in range(4):
        resp = await st.get(f"{P}/profiles/p{i}?an=acme")
        assert resp.status == 200
        assert resp.headers["X-Store-Instance"] == "eu-west-1-1"
    assert st.stores["us-east-1"][0].proxied == 0
    text = await st.metrics()
    assert 'edge_upstream_retries_total{region="eu-west-1"} 1.0' in text
    assert 'edge_upstream_healthy{instance="eu-west-1-0",region="eu-west-1"} 0.0' in text
    assert 'edge_region_healthy_instances{region="eu-west-1"} 1.0' in text


async def test_round_robin_is_per_region(build) -> None:  # type: ignore[no-untyped-def]
    # Strictly alternating traffic of two accounts in two regions: with one counter shared by
    # all regions, every eu request drew an even tick and one eu instance took them all.
    st = await build({"eu-west-1": ["store", "store"], "us-east-1": ["store", "store"]})
    for i in range(40):
        assert (await st.get(f"{P}/profiles/e{i}?an=acme")).status == 200
        assert (await st.get(f"{P}/profiles/u{i}?an=bolt", key=US_KEY)).status == 200
    for region in ("eu-west-1", "us-east-1"):
        shares = [s.proxied for s in st.stores[region]]
        assert sum(shares) == 40 and min(shares) >= 18, (region, shares)


async def _posts(st: Stack, n: int) -> list[int]:
    url = URL(f"{P}/profiles?an=acme", encoded=True)
    statuses = []
    for _ in range(n):  # POSTs: not retried after sending, so each answer is the instance's own
        resp = await st.edge.post(url, data=b"{}", headers=auth(EU_KEY))
        statuses.append(resp.status)
    return statuses


@pytest.mark.parametrize(
    ("error", "retry_after"),
    [("dynamodb_unavailable", "1"), ("key_service_unavailable", None), ("audit_unavailable", "1")],
)
async def test_dependency_errors_never_eject(build, caplog, error, retry_after) -> None:  # type: ignore[no-untyped-def]
    # A store whose DynamoDB (key service, audit table) is down says so; it is not the
    # instance's failure, and ejecting it only moved load and, once the dependency was back,
    # kept a recovered region out of service.
    dep = FakeStore("eu-west-1", "dep", status=503, error=error, retry_after=retry_after)
    st = await build({"eu-west-1": [dep, "store"], "us-east-1": ["store"]})
    caplog.set_level("WARNING", logger="edge_router.upstream")
    statuses = await _posts(st, 12)
    assert statuses.count(503) == dep.proxied >= 6, statuses  # every one reached the store
    pools = st.app[STATE].pools
    assert all(i.available(pools.clock()) for i in pools.by_region["eu-west-1"])
    assert "ejecting" not in caplog.text


async def test_own_5xx_eject_but_never_the_last_instance(build, caplog) -> None:  # type: ignore[no-untyped-def]
    bad = FakeStore("eu-west-1", "bad", status=500)
    st = await build({"eu-west-1": [bad, "store"], "us-east-1": ["store"]}, eject_cooldown_s=60)
    caplog.set_level("WARNING", logger="edge_router.upstream")
    pools = st.app[STATE].pools
    eu = pools.by_region["eu-west-1"]
    await _posts(st, 6)  # three of them to "bad": its own 500s, three in a row
    assert not eu[0].available(pools.clock()) and eu[1].available(pools.clock())
    assert "ejecting eu-west-1-0 in eu-west-1: repeated 500 answers" in caplog.text
    # a 503 without Retry-After or a dependency code is the instance's own failure too
    st2 = await build(
        {"eu-west-1": [FakeStore("eu-west-1", "lone", status=500)], "us-east-1": ["store"]}
    )
    lone = st2.app[STATE].pools.by_region["eu-west-1"][0]
    statuses = await _posts(st2, 9)
    assert statuses == [500] * 9  # its answers, not "region_unavailable" refusals
    assert lone.available(st2.app[STATE].pools.clock())
    assert caplog.text.count("not ejecting eu-west-1-0 in eu-west-1") == 1


async def test_connect_timeouts_eject_but_never_the_last_instance(build, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level("WARNING", logger="edge_router.upstream")
    # a lone instance that passed its health check, then stopped accepting connections
    st = await build({"eu-west-1": ["store"], "us-east-1": ["store"]}, connect_timeout_s=0.2)
    pools = st.app[STATE].pools
    lone = pools.by_region["eu-west-1"][0]
    server = st.servers["eu-west-1"][0]
    port = server.port
    await server.close()
    with blackhole(port):
        for _ in range(3):
            resp = await st.get(f"{P}/profiles/p1?an=acme")
            assert resp.status == 503, await resp.text()
            assert (await resp.json())["error"] == "region_unavailable"
            assert resp.headers["Retry-After"] == "1"
    # not ejected: the health check judges a lone instance (it failed none here)
    assert lone.available(pools.clock())
    assert "not ejecting eu-west-1-0 in eu-west-1 (connect timeouts)" in caplog.text
    assert "ejecting eu-west-1-0 in eu-west-1: connect failed" not in caplog.text
    assert st.stores["us-east-1"][0].proxied == 0  # never another region

    # with a sibling up, the unreachable one is ejected at once and the request retried
    st2 = await build({"eu-west-1": ["store", "store"], "us-east-1": ["store"]})
    pools2 = st2.app[STATE].pools
    gone, good = pools2.by_region["eu-west-1"]
    server = st2.servers["eu-west-1"][0]
    port = server.port
    await server.close()
    with blackhole(port):
        statuses = [(await st2.get(f"{P}/profiles/p{i}?an=acme")).status for i in range(4)]
    assert statuses == [200] * 4
    assert not gone.available(pools2.clock()) and good.available(pools2.clock())
    assert st2.stores["eu-west-1"][1].proxied == 4


async def test_a_refused_connect_ejects_even_the_last_instance(build) -> None:  # type: ignore[no-untyped-def]
    st = await build({"eu-west-1": ["store"], "us-east-1": ["store"]})
    pools = st.app[STATE].pools
    lone = pools.by_region["eu-west-1"][0]
    await st.servers["eu-west-1"][0].close()  # nothing listens there now: certain, not a pause
    resp = await st.get(f"{P}/profiles/p1?an=acme")
    assert resp.status == 503 and (await resp.json())["error"] == "region_unavailable"
    assert not lone.available(pools.clock())


async def test_own_503_without_retry_after_counts(build) -> None:  # type: ignore[no-untyped-def]
    bad = FakeStore("eu-west-1", "bad", status=503, error="something_else")
    st = await build({"eu-west-1": [bad, "store"], "us-east-1": ["store"]}, eject_cooldown_s=60)
    await _posts(st, 6)
    pools = st.app[STATE].pools
    assert not pools.by_region["eu-west-1"][0].available(pools.clock())


async def test_a_passing_health_check_readmits_an_ejected_instance(build) -> None:  # type: ignore[no-untyped-def]
    bad = FakeStore("eu-west-1", "bad", status=500)
    st = await build(
        {"eu-west-1": [bad, "store"], "us-east-1": ["store"]},
        eject_cooldown_s=60,
        health_interval_s=0.05,
    )
    pools = st.app[STATE].pools
    inst = pools.by_region["eu-west-1"][0]
    await _posts(st, 6)
    assert not inst.available(pools.clock())
    ejected_at = pools.clock()
    bad.status = 200  # fixed; its /readyz passed all along
    await wait_until(lambda: inst.available(pools.clock()), timeout=5)
    assert pools.clock() - ejected_at < 2  # a health interval or two, not the 60 s cool-down


async def test_timeouts_of_the_instance_eject_it(build) -> None:  # type: ignore[no-untyped-def]
    slow = FakeStore("eu-west-1", "slow", delay=2.0)
    st = await build(
        {"eu-west-1": [slow, "store"], "us-east-1": ["store"]},
        read_timeout_s=0.2,
        eject_consecutive_5xx=2,
        eject_cooldown_s=60,
    )
    pools = st.app[STATE].pools
    statuses = [(await st.get(f"{P}/profiles/p{i}?an=acme")).status for i in range(4)]
    assert statuses.count(504) == 2, statuses
    assert not pools.by_region["eu-west-1"][0].available(pools.clock())
    statuses = [(await st.get(f"{P}/profiles/q{i}?an=acme")).status for i in range(4)]
    assert statuses == [200] * 4


async def test_post_is_not_retried_after_send_but_is_on_connect_failure(build) -> None:  # type: ignore[no-untyped-def]
    bad = FakeStore("eu-west-1", "bad", status=503)
    good = FakeStore("eu-west-1", "good")
    st = await build({"eu-west-1": [bad, good], "us-east-1": ["store"]}, eject_consecutive_5xx=5)
    url = URL(f"{P}/profiles?an=acme", encoded=True)
    resp = await st.edge.post(url, data=b"{}", headers=auth(EU_KEY))
    assert resp.status == 503  # the store's own answer, relayed: POST is not replayed
    assert bad.proxied == 1 and good.proxied == 0
    # an idempotent GET that meets a 503 goes to the other instance
    resp = await st.get(f"{P}/profiles/p1?an=acme")
    assert resp.status == 200 and good.proxied == 1


async def test_region_down_is_503_and_other_region_gets_nothing(build) -> None:  # type: ignore[no-untyped-def]
    st = await build({"eu-west-1": ["dead", "dead"], "us-east-1": ["store"]})
    us = st.stores["us-east-1"][0]
    for _ in range(3):
        resp = await st.get(f"{P}/profiles/p1?an=acme")
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        assert (await resp.json())["error"] == "region_unavailable"
    assert us.proxied == 0
    text = await st.metrics()
    assert 'edge_cross_region_refusals_total{home_region="eu-west-1"} 3.0' in text
    assert 'edge_cross_region_refusals_total{home_region="us-east-1"} 0.0' in text
    assert 'edge_region_healthy_instances{region="eu-west-1"} 0.0' in text
    # the other region's accounts are unaffected
    assert (await st.get(f"{P}/profiles/p1?an=bolt", key=US_KEY)).status == 200
    readyz = await st.admin.get("/readyz")
    assert readyz.status == 200


async def test_instances_killed_after_start_give_503(build) -> None:  # type: ignore[no-untyped-def]
    st = await build({"eu-west-1": ["store", "store"], "us-east-1": ["store"]})
    for server in st.servers["eu-west-1"]:
        await server.close()
    resp = await st.get(f"{P}/profiles/p1?an=acme")
    assert resp.status == 503 and (await resp.json())["error"] == "region_unavailable"
    assert st.stores["us-east-1"][0].proxied == 0


async def test_active_health_checks_follow_readyz(build) -> None:  # type: ignore[no-untyped-def]
    a, b = FakeStore("eu-west-1", "a"), FakeStore("eu-west-1", "b")
    st = await build({"eu-west-1": [a, b], "us-east-1": ["store"]}, health_interval_s=0.05)
    a.ready = False
    pools = st.app[STATE].pools
    await wait_until(lambda: not pools.by_region["eu-west-1"][0].healthy)
    for i in range(3):
        assert (await st.get(f"{P}/profiles/p{i}?an=acme")).status == 200
    assert a.proxied == 0 and b.proxied == 3
    a.ready = True
    await wait_until(lambda: pools.by_region["eu-west-1"][0].healthy)


async def test_one_failed_probe_does_not_take_an_instance_down(build) -> None:  # type: ignore[no-untyped-def]
    """A probe that fails once (its DynamoDB busy for a second) leaves the instance up; the
    second in a row takes it down; one that passes brings it back. An instance not ready at
    start is down after the first probe."""
    a, b = FakeStore("eu-west-1", "a"), FakeStore("eu-west-1", "b")
    b.ready = False
    st = await build({"eu-west-1": [a, b], "us-east-1": ["store"]}, health_interval_s=3600)
    pools = st.app[STATE].pools
    first, second = pools.by_region["eu-west-1"]
    assert first.healthy and not second.healthy  # the start's probe
    a.ready = False
    await pools.check_all()
    assert first.healthy
    await pools.check_all()
    assert not first.healthy
    a.ready = True
    await pools.check_all()
    assert first.healthy
