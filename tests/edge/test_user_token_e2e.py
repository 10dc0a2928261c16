"""Tier (c) for user tokens: the registry on DynamoDB Local (grants made with the CLI), real
Profile System stores of both regions, the edge verifying real signed tokens in front.

The roles of a user come from the registry and are enforced by the stores exactly as an app
key's are; an unmask made with a user token is audited under ``user:{userId}``, and neither the
registry nor the audit record holds the user's e-mail.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiobotocore.session import get_session
from aiohttp import web
from yarl import URL

from edge_router.app import create_app
from edge_router.registry import user_hash
from residency_ops.__main__ import main as ops_main

from .conftest import SECRETS, make_settings, wait_until
from .tokens import TestIssuer

pytestmark = pytest.mark.slow

P = "/api/storage/profile-system"
USER = "5d0e2a71-9b8c-4f6e-a1d2-3c4b5a697887"
OPERATOR = "operator.person@shop.example"


def _uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _edge_env(
    monkeypatch: pytest.MonkeyPatch,
    ddb_endpoint: str,
    urls: dict[str, list[str]],
    tables: dict[str, str],
) -> str:
    """Point the registry CLI at a fresh registry table and the regions' stores; its name."""
    reg_table = _uniq("registry")
    monkeypatch.setenv("EDGE_REGISTRY_ENDPOINT", ddb_endpoint)
    monkeypatch.setenv("EDGE_REGISTRY_TABLE", reg_table)
    monkeypatch.setenv(
        "EDGE_REGIONS_JSON",
        json.dumps(
            {
                r: {
                    "instances": urls[r],
                    "table": tables[r],
                    "dynamodb_endpoint": ddb_endpoint,
                    "assertion_secret": SECRETS[r].decode(),
                }
                for r in tables
            }
        ),
    )
    return reg_table


async def _real_store(
    ddb_endpoint: str, region: str, tmp_path: Path
) -> tuple[web.Application, str]:
    """A real store app of ``region`` on a fresh table of DynamoDB Local; the app, the table."""
    from profile_store.app import create_app as create_store
    from profile_store.config import StoreSettings
    from profile_store.key_providers import generate_local_master_key
    from profile_store.provisioning import create_table

    table = _uniq(f"profiles-{region}")
    async with get_session().create_client(
        "dynamodb", endpoint_url=ddb_endpoint, region_name=region
    ) as c:
        await create_table(c, table)
    store = create_store(
        StoreSettings(
            region=region,
            table=table,
            dynamodb_endpoint=ddb_endpoint,
            assertion_secret=SECRETS[region],
            instance_id=f"{region}-0",
            require_pitr=False,
            local_master_key_file=str(generate_local_master_key(tmp_path / f"master-{region}.key")),
        )
    )
    return store, table


async def test_user_tokens_end_to_end(
    ddb_endpoint: str,
    aiohttp_server: Any,
    aiohttp_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # (DynamoDB Local keeps one namespace per region name: both regions on one emulator)
    regions = ("eu-west-1", "us-east-1")
    tables: dict[str, str] = {}
    urls: dict[str, list[str]] = {}
    for region in regions:
        store, tables[region] = await _real_store(ddb_endpoint, region, tmp_path)
        server = await aiohttp_server(store)
        urls[region] = [f"http://127.0.0.1:{server.port}"]

    reg_table = _edge_env(monkeypatch, ddb_endpoint, urls, tables)
    keys = {
        "shop-eu": ("k-shop-eu", "token-shop-eu-000000"),
        "shop-us": ("k-shop-us", "token-shop-us-000000"),
    }
    steps = [
        ["create-table"],
        ["create-account", "shop-eu", "--region", "eu-west-1"],
        ["create-account", "shop-us", "--region", "us-east-1"],
        *(
            ["create-key", a, "--roles", "read,write", "--app-key", k, "--app-token", t]
            for a, (k, t) in keys.items()
        ),
    ]
    for step in steps:
        assert await asyncio.to_thread(ops_main, ["registry", *step]) == 0, step
    capsys.readouterr()

    def cli(*args: str) -> tuple[int, str, str]:
        code = ops_main(["registry", *args])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = await asyncio.to_thread(
        cli, "grant-user", "shop-eu", OPERATOR, "--roles", "read,unmask"
    )
    assert code == 0 and json.loads(out)["user_sha256"] == user_hash(OPERATOR)
    assert OPERATOR not in out
    assert (await asyncio.to_thread(cli, "grant-user", "shop-us", OPERATOR, "--roles", "read"))[
        0
    ] == 0
    assert (await asyncio.to_thread(cli, "grant-user", "nobody", OPERATOR, "--roles", "read"))[
        0
    ] == 1
    assert (await asyncio.to_thread(cli, "grant-user", "shop-us", OPERATOR, "--roles", "root"))[
        0
    ] == 1
    assert (
        await asyncio.to_thread(cli, "grant-user", "shop-us", "not-an-email", "--roles", "read")
    )[0] == 1
    code, out, _ = await asyncio.to_thread(cli, "list")
    listed = {o["account"]: o for o in map(json.loads, out.splitlines())}
    assert listed["shop-eu"]["users"] == [
        {"user_sha256": user_hash(OPERATOR), "roles": ["read", "unmask"], "active": True}
    ]
    registry_items = boto3.client(
        "dynamodb",
        endpoint_url=ddb_endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    ).scan(TableName=reg_table)["Items"]
    assert OPERATOR not in json.dumps(registry_items)  # the registry stays PII-free

    idp = TestIssuer(tmp_path / "jwks.json")
    idp.add_key("rsa-1", "RS256")
    idp.add_key("ec-1", "ES256")
    settings = make_settings(
        urls,
        registry_table=reg_table,
        registry_endpoint=ddb_endpoint,
        token_issuers=(idp.settings(),),
        cache_ttl_s=0.2,
        negative_ttl_s=0.2,
        stale_while_revalidate_s=0.0,
    )
    edge = await aiohttp_client(create_app(settings))

    def app_key(account: str) -> dict[str, str]:
        k, t = keys[account]
        return {"X-VTEX-API-AppKey": k, "X-VTEX-API-AppToken": t}

    def user(account: str, kid: str = "rsa-1") -> dict[str, str]:
        return {"VtexIdclientAutCookie": idp.mint(kid, idp.claims(account, USER, OPERATOR))}

    ids = {}
    for account, email in (("shop-eu", "jean.x@example.eu"), ("shop-us", "jane.x@example.com")):
        resp = await edge.post(
            URL(f"{P}/profiles?an={account}", encoded=True),
            headers=app_key(account),
            json={
                "firstName": "Jo",
                "lastName": "Roe",
                "email": email,
                "document": "12345678900",
                "documentType": "CPF",
            },
        )
        assert resp.status == 201, await resp.text()
        ids[account] = ((await resp.json())["id"], email)

    # reads with a user token, in each account's own region
    for account, region, kid in (
        ("shop-eu", "eu-west-1", "rsa-1"),
        ("shop-us", "us-east-1", "ec-1"),
    ):
        pid, email = ids[account]
        resp = await edge.get(
            URL(f"{P}/profiles/{pid}?an={account}", encoded=True), headers=user(account, kid)
        )
        assert resp.status == 200, await resp.text()
        assert resp.headers["X-Data-Region"] == region
        assert email not in await resp.text()  # masked

    # unmask: granted on shop-eu, audited under the user id
    pid, email = ids["shop-eu"]
    resp = await edge.get(
        URL(f"{P}/profiles/{pid}/unmask?an=shop-eu&reason=ticket-42", encoded=True),
        headers=user("shop-eu"),
    )
    assert resp.status == 200, await resp.text()
    assert email in await resp.text()
    async with get_session().create_client(
        "dynamodb", endpoint_url=ddb_endpoint, region_name="eu-west-1"
    ) as c:
        page = await c.query(
            TableName=tables["eu-west-1"],
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": "A#shop-eu#AUDIT"}},
        )
    audit = page["Items"]
    assert [i["principal"]["S"] for i in audit] == [f"user:{USER}"]
    assert OPERATOR not in json.dumps(audit) and user_hash(OPERATOR) not in json.dumps(audit)

    # the same user without the unmask (or write) role on shop-us: the store refuses
    pid, _ = ids["shop-us"]
    resp = await edge.get(
        URL(f"{P}/profiles/{pid}/unmask?an=shop-us&reason=ticket-42", encoded=True),
        headers=user("shop-us"),
    )
    assert resp.status == 403, await resp.text()
    resp = await edge.patch(
        URL(f"{P}/profiles/{pid}?an=shop-us", encoded=True),
        headers=user("shop-us"),
        json={"firstName": "Janet"},
    )
    assert resp.status == 403, await resp.text()
    # a shop-eu token on shop-us: refused at the edge
    resp = await edge.get(
        URL(f"{P}/profiles/{pid}?an=shop-us", encoded=True), headers=user("shop-eu")
    )
    assert resp.status == 403 and (await resp.json())["error"] == "token_not_for_account"

    # revoked: refused once the edge's registry cache has the new answer
    assert (await asyncio.to_thread(cli, "revoke-user", "shop-us", OPERATOR))[0] == 0
    assert (await asyncio.to_thread(cli, "revoke-user", "shop-us", "x@nowhere.example"))[0] == 1

    async def refused() -> bool:
        resp = await edge.get(
            URL(f"{P}/profiles/{pid}?an=shop-us", encoded=True), headers=user("shop-us")
        )
        return resp.status == 403 and (await resp.json())["error"] == "user_not_granted"

    await wait_until(refused, timeout=10)


async def test_hostile_tokens_are_a_json_401_and_reach_no_store(
    ddb_endpoint: str,
    aiohttp_server: Any,
    aiohttp_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """Issue 27 through the production listener, in front of a real store and registry on
    DynamoDB Local: an RS256 header on the EC issuer's token and a ``\\xff`` byte in the
    token were a 500; they are a JSON 401 and the store sees nothing. A token cookie after
    ", " reached the store; it does not."""
    from .test_listener import EdgeTestServer
    from .tokens import b64json, json_answer, raw_get

    region = "eu-west-1"
    store, table = await _real_store(ddb_endpoint, region, tmp_path)
    reached: list[dict[str, str]] = []  # the headers of every request that reached the store

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            reached.append(dict(request.headers))
        return await handler(request)

    store.middlewares.append(record)
    server = await aiohttp_server(store)
    urls = {region: [f"http://127.0.0.1:{server.port}"]}

    reg_table = _edge_env(monkeypatch, ddb_endpoint, urls, {region: table})
    app_key, app_token = "k-shop-eu", "token-shop-eu-000000"
    for step in (
        ["create-table"],
        ["create-account", "shop-eu", "--region", region],
        [
            "create-key",
            "shop-eu",
            "--roles",
            "read",
            "--app-key",
            app_key,
            "--app-token",
            app_token,
        ],
        ["grant-user", "shop-eu", OPERATOR, "--roles", "read"],
    ):
        assert await asyncio.to_thread(ops_main, ["registry", *step]) == 0, step
    capsys.readouterr()

    idp = TestIssuer(tmp_path / "jwks.json")
    idp.add_key("ec-1", "ES256")  # the issuer's only key is EC, as in the issue
    settings = make_settings(
        urls,
        registry_table=reg_table,
        registry_endpoint=ddb_endpoint,
        token_issuers=(idp.settings(),),
    )
    edge = await aiohttp_client(EdgeTestServer(create_app(settings)))
    port, target = edge.server.port, f"{P}/profiles/nobody?an=shop-eu"

    # The control: a good token reaches the store (no such profile there: its 404).
    good = idp.mint("ec-1", idp.claims("shop-eu", USER, OPERATOR))
    status, _, body = json_answer(
        await raw_get(port, target, f"VtexIdclientAutCookie: {good}\r\n".encode())
    )
    assert (status, len(reached)) == (404, 1), body

    rs256_on_ec = f"{b64json({'alg': 'RS256'})}.{b64json({'iss': idp.iss})}.AAAA"
    for line, code in (
        (f"VtexIdclientAutCookie: {rs256_on_ec}".encode(), "bad_signature"),
        (f"Cookie: VtexIdclientAutCookie_shop-eu={rs256_on_ec}".encode(), "bad_signature"),
        (b"VtexIdclientAutCookie: \xff.e30.e30", "malformed_token"),
        (b"Cookie: VtexIdclientAutCookie=\xff.e30.e30", "malformed_token"),
    ):
        status, ctype, body = json_answer(await raw_get(port, target, line + b"\r\n"))
        assert (status, body["error"]) == (401, code), line
        assert ctype.startswith("application/json"), line
    assert len(reached) == 1  # none of them reached the store

    # An app key decides; the token cookie after ", " is cut out, the other cookie kept.
    status, _, body = json_answer(
        await raw_get(
            port,
            target,
            f"X-VTEX-API-AppKey: {app_key}\r\nX-VTEX-API-AppToken: {app_token}\r\n"
            f"Cookie: a=1, VtexIdclientAutCookie={good}\r\n".encode(),
        )
    )
    assert (status, len(reached)) == (404, 2), body
    assert reached[-1].get("Cookie") == "a=1"
    assert not any(good in value for value in reached[-1].values())
