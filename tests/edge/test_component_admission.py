"""Tier (b): real aiohttp servers on 127.0.0.1 -- fake stores behind the real edge. Admission:
account errors are JSON, app keys are authenticated (and bound to their account) before any
store sees the request, suspended accounts are refused, and the per-account rate limit and the
concurrency limit answer at once.
"""

from __future__ import annotations

import asyncio

from .conftest import EU_KEY, US_KEY, FakeStore, Key, P, wait_until


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
