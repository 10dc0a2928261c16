"""Tier (c): end to end -- the real registry on DynamoDB Local, real Profile System stores.

Two regions x two store instances, each region on its OWN DynamoDB Local process (eu-west-1
on the session emulator, us-east-1 on one started here), the edge in front with the registry
table on the session emulator. Every server listens on 127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiobotocore.session import get_session
from yarl import URL

from edge_router.admin import create_admin_app
from edge_router.app import create_app
from residency_contract.assertion import sign
from residency_contract.protocol import ASSERTION_HEADER
from residency_contract.tables import PK_SK_KEYS
from residency_dev import dynamodb_local
from residency_ops.__main__ import main as ops_main

from .conftest import SECRETS, make_settings

pytestmark = pytest.mark.slow

P = "/api/storage/profile-system"


@pytest.fixture(scope="module")
def second_ddb() -> Iterator[dynamodb_local.DynamoDBLocal]:
    server = dynamodb_local.start(timeout=90)
    try:
        yield server
    finally:
        server.stop()


def _uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _env(
    monkeypatch: pytest.MonkeyPatch,
    registry_endpoint: str,
    registry_table: str,
    regions: dict[str, dict[str, Any]],
) -> None:
    monkeypatch.setenv("EDGE_REGISTRY_ENDPOINT", registry_endpoint)
    monkeypatch.setenv("EDGE_REGISTRY_TABLE", registry_table)
    monkeypatch.setenv("EDGE_REGIONS_JSON", json.dumps(regions))


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]], str]:
    code = ops_main(["registry", *args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


def _ddb(endpoint: str, region: str):  # type: ignore[no-untyped-def]
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def test_registry_cli(
    ddb_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reg_table, eu_table, us_table = _uniq("registry"), _uniq("profiles-eu"), _uniq("profiles-us")
    regions = {
        "eu-west-1": {
            "instances": ["http://127.0.0.1:1"],
            "table": eu_table,
            "assertion_secret": SECRETS["eu-west-1"].decode(),
            "dynamodb_endpoint": ddb_endpoint,
        },
        "us-east-1": {
            "instances": ["http://127.0.0.1:2"],
            "table": us_table,
            "assertion_secret": SECRETS["us-east-1"].decode(),
            "dynamodb_endpoint": ddb_endpoint,
        },
    }
    _env(monkeypatch, ddb_endpoint, reg_table, regions)
    assert _cli(capsys, "create-table")[1] == [{"table": reg_table, "created": True}]
    assert _cli(capsys, "create-table")[1] == [{"table": reg_table, "created": False}]
    assert _cli(capsys, "create-account", "shop", "--region", "eu-west-1")[0] == 0
    code, _, err = _cli(capsys, "create-account", "shop", "--region", "eu-west-1")
    assert code == 1 and "already exists" in err
    code, _, err = _cli(capsys, "create-account", "Bad_Name", "--region", "eu-west-1")
    assert code == 1 and "valid account" in err
    code, _, err = _cli(capsys, "create-account", "x1", "--region", "ap-south-1")
    assert code == 1 and "not configured" in err
    # generated key: token printed once
    code, out, _ = _cli(capsys, "create-key", "shop", "--roles", "read,write")
    assert code == 0 and out[0]["app_key"].startswith("vtexappkey-shop-")
    assert len(out[0]["app_token"]) >= 40
    gen_key = out[0]["app_key"]
    code, out, _ = _cli(
        capsys,
        "create-key",
        "shop",
        "--roles",
        "read",
        "--app-key",
        "k-given",
        "--app-token",
        "given-token-0123456789",
    )
    assert code == 0 and "app_token" not in out[0]
    assert _cli(capsys, "create-key", "shop", "--roles", "root")[0] == 1
    # the mover's own role is never granted to a key
    assert _cli(capsys, "create-key", "shop", "--roles", "read,move")[0] == 1
    assert _cli(capsys, "create-key", "nobody", "--roles", "read")[0] == 1
    assert _cli(capsys, "revoke-key", "shop", "k-given")[0] == 0
    code, out, _ = _cli(capsys, "list")
    shop = next(o for o in out if o["account"] == "shop")
    assert shop["region"] == "eu-west-1"
    keys = {k["app_key"]: k for k in shop["keys"]}
    assert keys[gen_key]["active"] and not keys["k-given"]["active"]
    # the token itself is never stored
    items = _ddb(ddb_endpoint, "us-east-1").scan(TableName=reg_table)["Items"]
    assert "given-token-0123456789" not in json.dumps(items)
    # set-region: allowed while the account has no data in its home region ...
    # (a region whose table is missing is refused too: no proof the account has no data there)
    code, _, err = _cli(capsys, "set-region", "shop", "us-east-1")
    assert code == 1 and "cannot check" in err
    # (DynamoDB Local keeps one namespace per region name, like AWS keeps one per region)
    for table, region in ((eu_table, "eu-west-1"), (us_table, "us-east-1")):
        _ddb(ddb_endpoint, region).create_table(
            TableName=table,
            BillingMode="PAY_PER_REQUEST",
            **PK_SK_KEYS,
        )
    assert _cli(capsys, "set-region", "shop", "us-east-1")[1][0]["changed"] is True
    assert _cli(capsys, "set-region", "shop", "eu-west-1")[1][0]["changed"] is True
    # ... refused once the store wrote the account's marker item there
    _ddb(ddb_endpoint, "eu-west-1").put_item(
        TableName=eu_table, Item={"pk": {"S": "A#shop#META"}, "sk": {"S": "SALT"}}
    )
    code, _, err = _cli(capsys, "set-region", "shop", "us-east-1")
    assert code == 1 and "already has data" in err and "residency-ops account move shop" in err
    code, out, _ = _cli(capsys, "list")
    assert next(o for o in out if o["account"] == "shop")["region"] == "eu-west-1"
    assert _cli(capsys, "set-status", "shop", "suspended")[0] == 0


async def _store_total(client: Any) -> float:
    """Sum of profile_store_requests_total over data operations (probes excluded)."""
    resp = await client.get("/metrics")
    text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("profile_store_requests_total{"):
            if re.search(r'operation="(readyz|healthz|metrics)"', line):
                continue
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _scan(endpoint: str, region: str, table: str) -> list[dict[str, Any]]:
    async with get_session().create_client(
        "dynamodb", endpoint_url=endpoint, region_name=region
    ) as c:
        return (await c.scan(TableName=table))["Items"]


async def test_two_regions_end_to_end(
    ddb_endpoint: str,
    second_ddb: dynamodb_local.DynamoDBLocal,
    aiohttp_server: Any,
    aiohttp_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from profile_store.app import create_app as create_store
    from profile_store.config import StoreSettings
    from profile_store.key_providers import generate_local_master_key
    from profile_store.provisioning import create_table

    endpoints = {"eu-west-1": ddb_endpoint, "us-east-1": second_ddb.endpoint}
    tables = {r: _uniq(f"profiles-{r}") for r in endpoints}
    for region, endpoint in endpoints.items():
        async with get_session().create_client(
            "dynamodb", endpoint_url=endpoint, region_name=region
        ) as c:
            await create_table(c, tables[region])

    stores: dict[str, list[Any]] = {}
    urls: dict[str, list[str]] = {}
    for region, endpoint in endpoints.items():
        # One master key per region, shared by the region's instances (as KMS would be).
        master_key = generate_local_master_key(tmp_path / f"master-{region}.key")
        for i in range(2):
            settings = StoreSettings(
                region=region,
                table=tables[region],
                dynamodb_endpoint=endpoint,
                assertion_secret=SECRETS[region],
                instance_id=f"{region}-{i}",
                require_pitr=False,
                local_master_key_file=str(master_key),
            )
            server = await aiohttp_server(create_store(settings))
            stores.setdefault(region, []).append(server)
            urls.setdefault(region, []).append(f"http://127.0.0.1:{server.port}")

    # registry through the CLI (in a thread: the CLI runs its own event loop)
    reg_table = _uniq("registry")
    regions = {
        r: {
            "instances": urls[r],
            "table": tables[r],
            "dynamodb_endpoint": endpoints[r],
            "assertion_secret": SECRETS[r].decode(),
        }
        for r in endpoints
    }
    _env(monkeypatch, ddb_endpoint, reg_table, regions)
    keys = {
        "shop-eu": ("vtexappkey-shop-eu-1", "token-shop-eu-000000"),
        "shop-us": ("vtexappkey-shop-us-1", "token-shop-us-000000"),
    }
    steps = [
        ["create-table"],
        ["create-account", "shop-eu", "--region", "eu-west-1"],
        ["create-account", "shop-us", "--region", "us-east-1"],
    ]
    for account, (k, t) in keys.items():
        steps.append(
            [
                "create-key",
                account,
                "--roles",
                "read,write,delete,unmask",
                "--app-key",
                k,
                "--app-token",
                t,
            ]
        )
    for step in steps:
        assert await asyncio.to_thread(ops_main, ["registry", *step]) == 0, step

    settings = make_settings(
        urls, registry_table=reg_table, registry_endpoint=ddb_endpoint, max_attempts=2
    )
    app = create_app(settings)
    edge = await aiohttp_client(app)
    admin = await aiohttp_client(create_admin_app(app))
    store_clients = {r: [await aiohttp_client(s) for s in ss] for r, ss in stores.items()}

    def auth(account: str) -> dict[str, str]:
        k, t = keys[account]
        return {"X-VTEX-API-AppKey": k, "X-VTEX-API-AppToken": t, "Accept": "application/json"}

    us_before = [await _store_total(c) for c in store_clients["us-east-1"]]

    # an eu-west-1 account's data lands only in the eu-west-1 table
    email = f"jane.{uuid.uuid4().hex[:6]}@example.eu"
    resp = await edge.post(
        URL(f"{P}/profiles?an=shop-eu", encoded=True),
        headers=auth("shop-eu"),
        json={
            "firstName": "Jane",
            "lastName": "Roe",
            "email": email,
            "document": "12345678900",
            "documentType": "CPF",
        },
    )
    assert resp.status == 201, await resp.text()
    assert resp.headers["X-Data-Region"] == "eu-west-1"
    pid = (await resp.json())["id"]
    resp = await edge.get(
        URL(f"{P}/profiles/{pid}?an=shop-eu", encoded=True), headers=auth("shop-eu")
    )
    assert resp.status == 200, await resp.text()
    eu_items = await _scan(endpoints["eu-west-1"], "eu-west-1", tables["eu-west-1"])
    us_items = await _scan(endpoints["us-east-1"], "us-east-1", tables["us-east-1"])
    assert any("shop-eu" in repr(i) for i in eu_items)
    assert not any("shop-eu" in repr(i) for i in us_items)
    assert us_items == []

    # the eu key on the us account: 403 at the edge
    resp = await edge.get(
        URL(f"{P}/profiles/{pid}?an=shop-us", encoded=True), headers=auth("shop-eu")
    )
    assert resp.status == 403

    # one eu instance killed: still served
    await stores["eu-west-1"][0].close()
    for _ in range(3):
        resp = await edge.get(
            URL(f"{P}/profiles/{pid}?an=shop-eu", encoded=True), headers=auth("shop-eu")
        )
        assert resp.status == 200

    # both killed: 503 region_unavailable, and us-east-1 stores saw nothing of it
    await stores["eu-west-1"][1].close()
    for _ in range(2):
        resp = await edge.get(
            URL(f"{P}/profiles/{pid}?an=shop-eu", encoded=True), headers=auth("shop-eu")
        )
        assert resp.status == 503
        assert resp.headers["Retry-After"]
        assert (await resp.json())["error"] == "region_unavailable"
    us_after = [await _store_total(c) for c in store_clients["us-east-1"]]
    assert us_after == us_before

    # a direct call to a store: no assertion -> 401; another region's assertion -> 421
    target = f"{P}/profiles/{pid}?an=shop-us"
    us_store = store_clients["us-east-1"][0]
    resp = await us_store.get(URL(target, encoded=True))
    assert resp.status == 401
    forged = sign(
        SECRETS["eu-west-1"],
        account="shop-us",
        region="eu-west-1",
        principal="x",
        roles={"read"},
        method="GET",
        target=target,
    )
    resp = await us_store.get(URL(target, encoded=True), headers={ASSERTION_HEADER: forged})
    assert resp.status == 421

    # the edge's own metrics counted all of it
    text = await (await admin.get("/metrics")).text()
    assert re.search(
        r'edge_requests_total\{method="GET",region="eu-west-1",'
        r'route="/api/storage/profile-system/profiles/\{profileId\}",status_class="2xx"\} 4\.0',
        text,
    ), text
    assert 'status_class="5xx"} 2.0' in text
    assert 'edge_cross_region_refusals_total{home_region="eu-west-1"} 2.0' in text
    assert 'edge_region_healthy_instances{region="eu-west-1"} 0.0' in text
    assert 'edge_region_healthy_instances{region="us-east-1"} 2.0' in text
    assert 'edge_registry_lookups_total{result="miss"}' in text
