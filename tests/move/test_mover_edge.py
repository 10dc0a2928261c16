"""The edge during a move: a moving account's writes are refused with 503 account_moving and
Retry-After, its reads still served; the registry's generation and moving flag are parsed; the
``edge_accounts_moving`` gauge counts what the edge's cache knows."""

from __future__ import annotations

import dataclasses
from typing import Any

from yarl import URL

from edge_router.admin import create_admin_app
from edge_router.app import create_app
from edge_router.registry import parse_account
from tests.edge.conftest import FakeRegistry, FakeStore, Key, make_settings

P = "/api/storage/profile-system"
KEY = Key("vtexappkey-shop-A1", "token-shop-0123456789", frozenset({"read", "write"}))
AUTH = {"X-VTEX-API-AppKey": KEY.app_key, "X-VTEX-API-AppToken": KEY.token}


def test_meta_carries_generation_and_moving() -> None:
    meta = {"pk": {"S": "ACCOUNT#shop"}, "sk": {"S": "META"}, "region": {"S": "us-east-1"}}
    rec = parse_account("shop", [meta])
    assert rec is not None and (rec.generation, rec.moving) == (0, False)
    moving = {**meta, "generation": {"N": "3"}, "moving": {"BOOL": True}}
    rec = parse_account("shop", [moving])
    assert rec is not None and (rec.generation, rec.moving) == (3, True)


async def test_a_moving_account_is_read_only(aiohttp_server: Any, aiohttp_client: Any) -> None:
    registry = FakeRegistry()
    store = FakeStore("us-east-1", "us-0")
    server = await aiohttp_server(store.app())
    settings = make_settings({"us-east-1": [f"http://127.0.0.1:{server.port}"]}, retry_after_s=2)
    registry.add("shop", "us-east-1", [KEY])
    registry.add("calm", "us-east-1", [Key("vtexappkey-calm-A1", "token-calm-0123456789")])
    registry.accounts["shop"] = dataclasses.replace(registry.accounts["shop"], moving=True)
    app = create_app(settings, registry_factory=registry.factory())
    edge = await aiohttp_client(app)
    admin = await aiohttp_client(create_admin_app(app))
    host = {"Host": "shop.localhost"}

    for method in ("POST", "PUT", "PATCH", "DELETE"):
        resp = await edge.request(
            method, URL(P + "/profiles/x", encoded=True), headers={**AUTH, **host}, json={}
        )
        assert resp.status == 503, method
        assert (await resp.json())["error"] == "account_moving"
        assert resp.headers["Retry-After"] == "2"
    assert store.proxied == 0  # refused at the edge, nothing reached the store
    for method in ("GET", "HEAD"):
        resp = await edge.request(
            method, URL(P + "/profiles/x", encoded=True), headers={**AUTH, **host}
        )
        assert resp.status == 200, method
    assert store.proxied == 2
    # unauthenticated writes are still 401, not a hint that the account is moving
    resp = await edge.post(URL(P + "/profiles", encoded=True), headers=host, json={})
    assert resp.status == 401

    text = await (await admin.get("/metrics")).text()
    assert "edge_accounts_moving 1.0" in text


async def test_a_stores_421_makes_the_edge_forget_the_account(
    aiohttp_server: Any, aiohttp_client: Any
) -> None:
    """After a flip the old region's store answers 421; the edge relays it and drops its cached
    entry, so the next request follows the registry at once instead of after the TTL."""
    registry = FakeRegistry()
    old = FakeStore("us-east-1", "us-0", status=421, error="residency_mismatch")
    new = FakeStore("eu-west-1", "eu-0")
    urls = {}
    for store in (old, new):
        server = await aiohttp_server(store.app())
        urls[store.region] = [f"http://127.0.0.1:{server.port}"]
    settings = make_settings(urls, cache_ttl_s=30.0, negative_ttl_s=5.0)
    registry.add("shop", "us-east-1", [KEY])
    edge = await aiohttp_client(create_app(settings, registry_factory=registry.factory()))
    host = {**AUTH, "Host": "shop.localhost"}
    target = URL(P + "/profiles/x", encoded=True)
    assert (await edge.get(target, headers=host)).status == 421  # cached: us-east-1
    registry.accounts["shop"] = dataclasses.replace(
        registry.accounts["shop"], region="eu-west-1", generation=1
    )
    resp = await edge.patch(target, headers=host, json={})
    assert resp.status == 200 and resp.headers["X-Data-Region"] == "eu-west-1"
    assert (old.proxied, new.proxied) == (1, 1)
