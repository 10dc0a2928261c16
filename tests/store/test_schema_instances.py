"""Read-your-writes of the custom schema across two instances of one region (one table).

Each instance caches schemas; the cache is made to outlive the test (``SCHEMA_CACHE_S``
patched to an hour) so nothing here passes because a short TTL happened to run out: every
fresh answer is owed to the version checks, and each test first shows the other instance
really holds the old schema.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from profile_store.app import create_app
from profile_store.entities import custom_schema
from profile_store.handlers import SERVICE

from .conftest import BASE, Api, make_settings, unique_profile

CUSTOM = f"{BASE}/schemas/profileSystem/custom"
LOYALTY_PII = {"loyaltyCode": {"type": ["string", "null"], "sensitive": True, "pii": True}}

Instances = Callable[[int], Awaitable[list[Api]]]


@pytest.fixture
def instances(
    aiohttp_client: Any,
    ddb_endpoint: str,
    table: str,
    master_key_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Instances:
    monkeypatch.setattr(custom_schema, "SCHEMA_CACHE_S", 3600.0)

    async def make(count: int) -> list[Api]:
        apis = []
        for i in range(count):
            own = make_settings(ddb_endpoint, table, master_key_file, instance_id=f"store-{i}")
            apis.append(Api(await aiohttp_client(create_app(own))))
        return apis

    return make


def cached_version(api: Api, account: str = "acme") -> int | None:
    schema = api.client.app[SERVICE].schemas._cache.get(account)
    return None if schema is None else schema.version


async def warm(api: Api) -> None:
    """A masked profile read: the instance now caches the account's schema."""
    created = await api.create_profile()
    status, _, _ = await api.call("GET", f"{BASE}/profiles/{created['id']}")
    assert status == 200


async def test_get_after_put_on_another_instance_returns_the_new_fields(
    instances: Instances,
) -> None:
    a, b = await instances(2)
    await warm(b)
    assert cached_version(b) == 0

    status, _, _ = await a.call("PUT", CUSTOM, json_body=LOYALTY_PII)
    assert status == 201
    assert cached_version(b) == 0  # b was told nothing

    status, custom, _ = await b.call("GET", CUSTOM)
    assert status == 200 and custom["version"] == 1
    assert custom["properties"]["loyaltyCode"]["pii"] is True
    status, full, _ = await b.call("GET", f"{BASE}/schemas/profileSystem")
    assert full["properties"]["loyaltyCode"]["pii"] is True


async def test_a_newly_declared_pii_field_is_masked_by_every_instance(
    instances: Instances,
) -> None:
    a, b, c = await instances(3)
    await warm(b)
    await warm(c)
    status, _, _ = await a.call("PUT", CUSTOM, json_body=LOYALTY_PII)
    assert status == 201
    assert cached_version(b) == 0 and cached_version(c) == 0

    # b writes with its stale copy: the transaction's schema check sends it back for the new
    # one, and the items carry the version they were validated with.
    created = await b.create_profile(unique_profile(loyaltyCode="LC-98765"))
    assert cached_version(b) == 1
    assert cached_version(c) == 0
    for api in (c, b, a):
        status, got, _ = await api.call("GET", f"{BASE}/profiles/{created['id']}")
        assert status == 200
        assert got[0]["document"]["loyaltyCode"] == "L*-9****", api.client.app
    assert cached_version(c) == 1  # c re-read the schema because the item said so

    # The same through a PATCH, and on the version it made.
    both = {**LOYALTY_PII, "tier": LOYALTY_PII["loyaltyCode"]}
    status, _, _ = await c.call("PUT", CUSTOM, json_body=both)
    assert status == 201 and cached_version(b) == 1
    status, patched, _ = await b.call(
        "PATCH", f"{BASE}/profiles/{created['id']}", json_body={"tier": "GOLD-7"}
    )
    assert status == 200, patched
    version = patched["meta"]["version"]
    for api in (a, b, c):
        status, got, _ = await api.call(
            "GET", f"{BASE}/profiles/{created['id']}/versions/{version}"
        )
        assert status == 200 and got[0]["document"]["tier"] == "G***-7"


async def test_a_write_on_a_stale_instance_is_validated_by_the_new_schema(
    instances: Instances,
) -> None:
    a, b = await instances(2)
    await warm(b)
    status, _, _ = await a.call(
        "PUT", CUSTOM, json_body={"visits": {"type": "integer", "sensitive": False, "pii": False}}
    )
    assert status == 201 and cached_version(b) == 0
    status, body, _ = await b.call(
        "POST", f"{BASE}/profiles", json_body=unique_profile(visits="many")
    )
    assert status == 400 and body["error"] == "invalid_field"
    created = await b.create_profile(unique_profile(visits=3))
    assert created["document"]["visits"] == 3


async def test_concurrent_replacements_never_share_a_version(instances: Instances) -> None:
    a, b = await instances(2)
    puts = [
        api.call("PUT", CUSTOM, json_body={f"f{i}": LOYALTY_PII["loyaltyCode"]})
        for i, api in enumerate([a, b] * 3)
    ]
    statuses = [status for status, _, _ in await asyncio.gather(*puts)]
    assert statuses == [201] * 6
    status, custom, _ = await a.call("GET", CUSTOM)
    # Six replacements, each on top of the one before: version 6 holds exactly one of them.
    assert status == 200 and custom["version"] == 6 and len(custom["properties"]) == 1
