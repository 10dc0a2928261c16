"""Tier (b): real aiohttp servers on 127.0.0.1 -- fake stores behind the real edge. Proxy
correctness: the raw target and the signed assertion reach the store byte for byte, hop-by-hop
and internal headers are dropped, ids and trace headers pass, bodies and content encodings cross
untouched within the size limit, a slow store is a 504, paths outside the APIs never leave the
edge, and every method and API is routed.
"""

from __future__ import annotations

import gzip
import json

from yarl import URL

from .conftest import EU_KEY, FakeStore, P, auth


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
