"""Tier (b): real aiohttp servers on 127.0.0.1 -- fake stores behind the real edge."""

from __future__ import annotations

import asyncio
import gzip
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from edge_router.admin import create_admin_app
from edge_router.app import STATE, create_app
from edge_router.errors import RegistryError, Unavailable
from edge_router.registry import CachedLookup

from .conftest import (
    FakeRegistry,
    FakeStore,
    Key,
    blackhole,
    dead_url,
    make_settings,
    wait_until,
)

P = "/api/storage/profile-system"
EU_KEY = Key("vtexappkey-acme-A1", "token-acme-0123456789", frozenset({"read", "write"}))
US_KEY = Key("vtexappkey-bolt-B1", "token-bolt-0123456789", frozenset({"read"}))


def auth(key: Key) -> dict[str, str]:
    return {"X-VTEX-API-AppKey": key.app_key, "X-VTEX-API-AppToken": key.token}


@dataclass
class Stack:
    edge: Any  # TestClient for the public app
    admin: Any  # TestClient for the admin app
    app: web.Application
    stores: dict[str, list[FakeStore]]
    servers: dict[str, list[Any]]
    registry: FakeRegistry

    async def get(self, path: str, key: Key | None = EU_KEY, **kw: Any) -> aiohttp.ClientResponse:
        headers = {**(auth(key) if key else {}), **kw.pop("headers", {})}
        return await self.edge.get(URL(path, encoded=True), headers=headers, **kw)

    async def metrics(self) -> str:
        resp = await self.admin.get("/metrics")
        return await resp.text()


@pytest.fixture
def build(aiohttp_server, aiohttp_client, registry: FakeRegistry):  # type: ignore[no-untyped-def]
    async def make(layout: dict[str, list[str | FakeStore]] | None = None, **over: Any) -> Stack:
        layout = layout or {
            "eu-west-1": ["store", "store"],
            "us-east-1": ["store"],
        }
        registry.add("acme", "eu-west-1", [EU_KEY])
        registry.add("bolt", "us-east-1", [US_KEY])
        stores: dict[str, list[FakeStore]] = {}
        servers: dict[str, list[Any]] = {}
        urls: dict[str, list[str]] = {}
        for region, items in layout.items():
            for i, item in enumerate(items):
                if item == "dead":
                    urls.setdefault(region, []).append(dead_url())
                    continue
                store = item if isinstance(item, FakeStore) else FakeStore(region, f"{region}-{i}")
                server = await aiohttp_server(store.app())
                stores.setdefault(region, []).append(store)
                servers.setdefault(region, []).append(server)
                urls.setdefault(region, []).append(f"http://127.0.0.1:{server.port}")
        settings = make_settings(urls, **over)
        app = create_app(settings, registry_factory=registry.factory())
        edge = await aiohttp_client(app, auto_decompress=False)
        admin = await aiohttp_client(create_admin_app(app))
        return Stack(edge, admin, app, stores, servers, registry)

    return make


# -- proxy correctness ---------------------------------------------------------------------


async def test_raw_target_is_forwarded_byte_for_byte_with_assertion(build) -> None:  # type: ignore[no-untyped-def]
    st = await build()
    target = f"{P}/profiles/Jane%40Example.com?an=acme&alternativeKey=email&q=%2Fa+b%20c&e=%C3%A9&z"
    resp = await st.get(target)
    assert resp.status == 200, await resp.text()
    assert resp.headers["X-Data-Region"] == "eu-west-1"
    seen = [s for store in st.stores["eu-west-1"] for s in store.seen]
    assert len(seen) == 1 and seen[0].raw_path == target
    a = seen[0].assertion
    assert a is not None, seen[0].assertion_error
    assert (a.account, a.region, a.principal, a.roles) == (
        "acme",
        "eu-west-1",
        EU_KEY.app_key,
        frozenset({"read", "write"}),
    )
    assert st.stores["us-east-1"][0].proxied == 0


async def test_headers_hop_by_hop_forwarding_ids_and_trace(build) -> None:  # type: ignore[no-untyped-def]
    st = await build({"eu-west-1": ["store"], "us-east-1": ["store"]})
    resp = await st.get(
        f"{P}/profiles/p1?an=acme",
        headers={
            "Connection": "keep-alive, X-Client-Hop",
            "X-Client-Hop": "secret",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic abc",
            "X-Request-Id": "client-request-0001",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "X-Forwarded-For": "203.0.113.7",
        },
    )
    assert resp.status == 200
    h = st.stores["eu-west-1"][0].seen[0].headers
    for name in ("x-client-hop", "keep-alive", "te", "proxy-authorization"):
        assert name not in h, name
    # the app token was checked at the edge; the store trusts the assertion, never the secret
    assert "x-vtex-api-apptoken" not in h and "x-vtex-api-appkey" in h
    assert h["x-request-id"] == ["client-request-0001"]
    assert h["traceparent"] == ["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"]
    assert h["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]
    assert h["x-forwarded-proto"] == ["http"]
    assert h["x-forwarded-host"][0].startswith("127.0.0.1:")
    assert h["via"] == ["1.1 edge-router"]
    # response side: upstream's hop-by-hop dropped, ids and region set
    assert "X-Hop" not in resp.headers and "Keep-Alive" not in resp.headers
    assert resp.headers["X-Request-Id"] == "client-request-0001"
    assert resp.headers["X-Store-Instance"] == "eu-west-1-0"
    # a request id is minted when the client sends none (or a bad one)
    resp2 = await st.get(f"{P}/profiles/p1?an=acme", headers={"X-Request-Id": "bad id!"})
    rid = resp2.headers["X-Request-Id"]
    assert rid != "bad id!" and len(rid) == 32
    assert st.stores["eu-west-1"][0].seen[1].headers["x-request-id"] == [rid]


async def test_content_encoding_passes_untouched_both_ways(build) -> None:  # type: ignore[no-untyped-def]
    store = FakeStore("eu-west-1", "gz", gzip_body=True)
    st = await build({"eu-west-1": [store], "us-east-1": ["store"]})
    raw = gzip.compress(b'{"firstName":"Jane"}')
    resp = await st.edge.patch(
        URL(f"{P}/profiles/p1?an=acme", encoded=True),
        data=raw,
        headers={**auth(EU_KEY), "Content-Encoding": "gzip", "Content-Type": "application/json"},
        skip_auto_headers=["Accept-Encoding", "User-Agent"],
    )
    assert resp.status == 200
    assert resp.headers["Content-Encoding"] == "gzip"
    body = await resp.read()  # client has auto_decompress=False: raw bytes
    assert json.loads(gzip.decompress(body))["instance"] == "gz"
    assert store.seen[0].body == raw
    assert store.seen[0].headers["content-encoding"] == ["gzip"]
    # no Accept-Encoding or User-Agent invented by the edge
    assert "accept-encoding" not in store.seen[0].headers
    assert "user-agent" not in store.seen[0].headers


async def test_client_sent_internal_headers_are_dropped(build) -> None:  # type: ignore[no-untyped-def]
    st = await build({"eu-west-1": ["store"], "us-east-1": ["store"]})
    resp = await st.get(
        f"{P}/profiles/p1?an=acme",
        headers={
            "X-Residency-Assertion": "v1;acme;eu-west-1;root;erase;1;forged",
            "X-Residency-Roles": "erase",
        },
    )
    assert resp.status == 200
    h = st.stores["eu-west-1"][0].seen[0].headers
    assert "x-residency-roles" not in h
    assert len(h["x-residency-assertion"]) == 1
    assert st.stores["eu-west-1"][0].seen[0].assertion is not None  # the edge's, verified


async def test_body_over_limit_is_413_declared_and_streamed(build) -> None:  # type: ignore[no-untyped-def]
    st = await build(
        {"eu-west-1": ["store"], "us-east-1": ["store"]}, max_body_bytes=1024, buffer_body_bytes=512
    )
    url = URL(f"{P}/profiles?an=acme", encoded=True)
    resp = await st.edge.post(url, data=b"x" * 2000, headers=auth(EU_KEY))
    assert resp.status == 413
    assert (await resp.json())["error"] == "payload_too_large"

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"y" * 300

    resp = await st.edge.post(url, data=chunks(), headers=auth(EU_KEY))
    assert resp.status == 413
    assert (await resp.json())["error"] == "payload_too_large"

    # within limits, streamed (chunked) and buffered bodies arrive whole
    async def small():  # type: ignore[no-untyped-def]
        for _ in range(3):
            yield b"z" * 300

    resp = await st.edge.post(url, data=small(), headers=auth(EU_KEY))
    assert resp.status == 200
    resp = await st.edge.post(url, data=b"w" * 100, headers=auth(EU_KEY))
    assert resp.status == 200
    bodies = [s.body for s in st.stores["eu-west-1"][0].seen]
    assert b"z" * 900 in bodies and b"w" * 100 in bodies


async def test_slow_upstream_is_504(build) -> None:  # type: ignore[no-untyped-def]
    slow = FakeStore("eu-west-1", "slow", delay=2.0)
    st = await build(
        {"eu-west-1": [slow], "us-east-1": ["store"]},
        total_timeout_s=0.3,
        read_timeout_s=0.3,
        connect_timeout_s=0.2,
    )
    resp = await st.get(f"{P}/profiles/p1?an=acme")
    assert resp.status == 504
    assert (await resp.json())["error"] == "upstream_timeout"
    assert resp.headers["X-Data-Region"] == "eu-west-1"


async def test_paths_outside_the_apis_and_traversal(build) -> None:  # type: ignore[no-untyped-def]
    st = await build()
    resp = await st.get("/admin/secrets?an=acme")
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"
    resp = await st.get(f"{P}/profiles/%2e%2e/%2e%2e/x?an=acme")
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_path"
    assert sum(s.proxied for ss in st.stores.values() for s in ss) == 0


# -- account, auth, limits ---------------------------------------------------------------


async def test_account_errors_are_json(build) -> None:  # type: ignore[no-untyped-def]
    st = await build()
    cases = [
        (f"{P}/profiles/p1", {}, 400, "missing_account"),
        (f"{P}/profiles/p1?an=acme", {"Host": "bolt.localhost"}, 400, "ambiguous_account"),
        (f"{P}/profiles/p1?an=nobody", {}, 404, "unknown_account"),
        (f"{P}/profiles/p1?an=Bad_Name", {}, 400, "invalid_account"),
    ]
    for path, headers, status, code in cases:
        resp = await st.get(path, headers=headers)
        assert resp.status == status, path
        assert resp.content_type == "application/json"
        body = await resp.json()
        assert body["error"] == code and body["message"]
    # host-based resolution works
    resp = await st.get(f"{P}/profiles/p1", headers={"Host": "acme.vtexcommercestable.com.br"})
    assert resp.status == 200


async def test_authentication(build) -> None:  # type: ignore[no-untyped-def]
    st = await build()
    path = f"{P}/profiles/p1?an=acme"
    resp = await st.get(path, key=None)
    assert resp.status == 401 and (await resp.json())["error"] == "missing_credentials"
    resp = await st.get(path, key=Key(EU_KEY.app_key, "wrong-token-000000"))
    assert resp.status == 401
    resp = await st.get(path, key=Key("vtexappkey-nobody", "whatever-000000000"))
    assert resp.status == 401
    # the us account's valid key on the eu account: 403, and no store sees it
    resp = await st.get(path, key=US_KEY)
    assert resp.status == 403 and (await resp.json())["error"] == "key_not_for_account"
    # someone else's app key without its token stays 401 (no key-existence oracle)
    resp = await st.get(path, key=Key(US_KEY.app_key, "not-the-token-0000"))
    assert resp.status == 401
    assert sum(s.proxied for ss in st.stores.values() for s in ss) == 0
    # suspended account: 403 after authentication
    st.registry.add("sus", "eu-west-1", [Key("vtexappkey-sus", "sus-token-00000000")], "suspended")
    resp = await st.get(f"{P}/profiles/p1?an=sus", key=Key("vtexappkey-sus", "sus-token-00000000"))
    assert resp.status == 403 and (await resp.json())["error"] == "account_suspended"
    text = await st.metrics()
    assert 'edge_auth_failures_total{reason="wrong_account"} 1.0' in text
    assert 'edge_auth_failures_total{reason="missing_credentials"} 1.0' in text


async def test_rate_limit_429(build) -> None:  # type: ignore[no-untyped-def]
    st = await build(
        {"eu-west-1": ["store"], "us-east-1": ["store"]}, rate_limit_rps=0.01, rate_limit_burst=2
    )
    statuses = [(await st.get(f"{P}/profiles/p1?an=acme")).status for _ in range(2)]
    assert statuses == [200, 200]
    resp = await st.get(f"{P}/profiles/p1?an=acme")
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) >= 1
    assert (await resp.json())["error"] == "rate_limited"
    # another account has its own bucket
    assert (await st.get(f"{P}/profiles/p1?an=bolt", key=US_KEY)).status == 200
    assert 'edge_rate_limited_total{region="eu-west-1"} 1.0' in await st.metrics()


async def test_overload_is_503_immediately(build) -> None:  # type: ignore[no-untyped-def]
    slow = FakeStore("eu-west-1", "slow", delay=0.5)
    st = await build({"eu-west-1": [slow], "us-east-1": ["store"]}, max_concurrent_requests=1)
    first = asyncio.ensure_future(st.get(f"{P}/profiles/p1?an=acme"))
    await wait_until(lambda: slow.proxied == 1)
    resp = await st.get(f"{P}/profiles/p2?an=acme")
    assert resp.status == 503 and (await resp.json())["error"] == "overloaded"
    assert (await first).status == 200


# -- routing, health, failover -----------------------------------------------------------


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


# -- registry cache ------------------------------------------------------------------------


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


# -- metrics & logs ------------------------------------------------------------------------


async def test_metrics_and_access_log(build, caplog) -> None:  # type: ignore[no-untyped-def]
    st = await build(access_log=True)
    caplog.set_level("INFO", logger="edge_router.access")
    email_path = f"{P}/profiles/jane.roe%40example.com?an=acme&alternativeKey=email"
    assert (await st.get(email_path)).status == 200
    assert (await st.get("/nope?an=acme")).status == 404
    text = await st.metrics()
    assert (
        'edge_requests_total{method="GET",region="eu-west-1",'
        'route="/api/storage/profile-system/profiles/{profileId}",status_class="2xx"} 1.0'
    ) in text
    assert (
        'edge_requests_total{method="GET",region="none",route="other",status_class="4xx"} 1.0'
        in text
    )
    for name in (
        "edge_request_duration_seconds_bucket",
        "edge_upstream_duration_seconds_bucket",
        "edge_upstream_healthy",
        "edge_region_healthy_instances",
        "edge_registry_lookups_total",
        "edge_in_flight_requests",
        "edge_cross_region_refusals_total",
        "edge_upstream_retries_total",
        "edge_rate_limited_total",
    ):
        assert name in text, name
    assert "jane" not in text and "acme" not in text
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "edge_router.access"]
    assert len(lines) == 2
    first = lines[0]
    assert first["route"] == "/api/storage/profile-system/profiles/{profileId}"
    assert first["account"] == "acme" and first["region"] == "eu-west-1" and first["status"] == 200
    assert first["upstream"].startswith("eu-west-1-") and first["request_id"]
    assert all("jane" not in r.getMessage() for r in caplog.records)
    health = await st.admin.get("/healthz")
    assert health.status == 200
    assert (await st.admin.get("/readyz")).status == 200


async def test_head_and_delete_pass_through(build) -> None:  # type: ignore[no-untyped-def]
    st = await build({"eu-west-1": ["store"], "us-east-1": ["store"]})
    resp = await st.edge.head(URL(f"{P}/profiles/p1?an=acme", encoded=True), headers=auth(EU_KEY))
    assert resp.status == 200
    resp = await st.edge.delete(URL(f"{P}/profiles/p1?an=acme", encoded=True), headers=auth(EU_KEY))
    assert resp.status == 200
    assert [s.method for s in st.stores["eu-west-1"][0].seen] == ["HEAD", "DELETE"]


async def test_user_rights_endpoint_routed(build) -> None:  # type: ignore[no-untyped-def]
    st = await build({"eu-west-1": ["store"], "us-east-1": ["store"]})
    resp = await st.edge.post(
        URL("/api/user-rights/createAndProcessDeleteUserData?an=acme", encoded=True),
        json={"email": "x@example.com"},
        headers=auth(EU_KEY),
    )
    assert resp.status == 200
    assert st.stores["eu-west-1"][0].seen[0].raw_path == (
        "/api/user-rights/createAndProcessDeleteUserData?an=acme"
    )
