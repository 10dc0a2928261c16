"""The bench's store floor makes the store's DynamoDB calls, entry for entry, with items of the
same sizes: otherwise its ratio would measure a different workload, not our code's cost.

Both services run in process on one DynamoDB Local table; every call their clients make is
recorded (botocore's ``before-parameter-build`` event, the parameters as the caller built
them) and the two recordings of each operation are compared.
"""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session
from aiohttp.test_utils import TestClient

from bench import e2e
from bench.store_floor import API, CLIENT
from bench.store_floor import create_app as create_floor
from profile_store.app import REPOSITORY, create_app
from profile_store.entities import custom_schema
from profile_store.key_providers import generate_local_master_key
from profile_store.provisioning import create_table
from tests.store.conftest import REGION, Api, make_settings

ACCOUNT = "acme"
Call = tuple[str, Any]


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB's size of an item: attribute names plus values (strings and binary)."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        (kind, raw), *_ = value.items()
        size += len(raw) if kind == "B" else len(str(raw).encode())
    return size


def shape(call: str, params: dict[str, Any]) -> Call:
    """What must be equal between the two services: the call, each entry's kind, condition,
    key layout and attribute names; item sizes are returned alongside to compare roughly."""
    if call == "TransactWriteItems":
        entries = []
        for entry in params["TransactItems"]:
            ((kind, body),) = entry.items()
            item = body.get("Item") or body.get("Key")
            pk = item["pk"]["S"].split("#")
            entries.append(
                (
                    kind,
                    body.get("ConditionExpression"),
                    "#".join(pk[:1] + pk[2:3]),  # A#<kind>: the key family, not the ids
                    tuple(sorted(item)),
                    item_size(item) if "Item" in body else 0,
                )
            )
        return call, entries
    if call == "GetItem":
        return call, (params["Key"]["sk"]["S"], params.get("ConsistentRead"))
    return call, params


def recorder(client: Any) -> list[tuple[str, dict[str, Any]]]:
    calls: list[tuple[str, dict[str, Any]]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((model.name, params))

    client.meta.events.register("before-parameter-build.dynamodb", record)
    return calls


def compare(store: list[Call], floor: list[Call]) -> None:
    assert [c for c, _ in store] == [c for c, _ in floor]
    for (call, s), (_, f) in zip(store, floor, strict=True):
        if call != "TransactWriteItems":
            assert s == f
            continue
        assert [e[:4] for e in s] == [e[:4] for e in f]
        for se, fe in zip(s, f, strict=True):
            # Same attributes; values differ by a few characters (counters, a stand-in doc).
            assert abs(se[4] - fe[4]) <= max(24, se[4] // 20), (se, fe)


_n = itertools.count()


@pytest.fixture
async def table(ddb_endpoint: str) -> str:
    name = f"floor-{uuid.uuid4().hex[:12]}"
    async with get_session().create_client(
        "dynamodb", region_name=REGION, endpoint_url=ddb_endpoint
    ) as client:
        await create_table(client, name, wait_s=30)
    return name


async def test_floor_makes_the_stores_calls_with_items_of_the_same_size(
    aiohttp_client: Any,
    ddb_endpoint: str,
    table: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    master_key_file = generate_local_master_key(tmp_path / "master.key")
    # One schema read when the test starts, none in the middle of a compared operation.
    monkeypatch.setattr(custom_schema, "SCHEMA_CACHE_S", 3600.0)
    # Likewise the fence marker: read once by the seeding call, then a cache hit, as in the
    # bench's steady state (one read per account and second, amortised to nothing). With the
    # production TTL (1 s, which StoreSettings.from_env caps) a loaded machine that takes a
    # second between seeding and a compared call made the store read it again: an extra
    # GetItem the floor does not make. Built directly, the settings are not capped.
    settings = make_settings(ddb_endpoint, table, master_key_file, fence_cache_s=3600.0)
    store = Api(await aiohttp_client(create_app(settings)), account=ACCOUNT)
    floor: TestClient = await aiohttp_client(
        create_floor(endpoint=ddb_endpoint, table=table, account=ACCOUNT, region=REGION)
    )
    store_calls = recorder(store.client.app[REPOSITORY].client)
    floor_calls = recorder(floor.app[CLIENT])

    async def floor_call(method: str, path: str, body: Any = None) -> Any:
        async with floor.request(method, path, json=body) as resp:
            assert resp.status in {200, 201}, await resp.text()
            return await resp.json()

    # Seeding warms the store's caches (salt, schema, data key) as the bench's warm-up does.
    status, seeded, _ = await store.call("POST", f"{API}/profiles", json_body=e2e._profile_body())
    assert status == 201
    floor_seeded = await floor_call("POST", f"{API}/profiles", e2e._profile_body())
    for op in ("get", "create", "patch", "get"):
        store_calls.clear()
        floor_calls.clear()
        if op == "get":
            status, _, _ = await store.call("GET", f"{API}/profiles/{seeded['id']}")
            await floor_call("GET", f"{API}/profiles/{floor_seeded['id']}")
        elif op == "create":
            status, _, _ = await store.call(
                "POST", f"{API}/profiles", json_body=e2e._profile_body()
            )
            await floor_call("POST", f"{API}/profiles", e2e._profile_body())
        else:
            patch = {"firstName": f"Bench{next(_n)}"}
            status, _, _ = await store.call(
                "PATCH", f"{API}/profiles/{seeded['id']}", json_body=patch
            )
            await floor_call("PATCH", f"{API}/profiles/{floor_seeded['id']}", patch)
        assert status in {200, 201}
        store_shape = [shape(c, p) for c, p in store_calls]
        floor_shape = [shape(c, p) for c, p in floor_calls]
        assert store_shape, op
        compare(store_shape, floor_shape)
