"""Schemas (full and custom fields) and TTL: defaults, the ttl parameter, expiry before sweeping."""

from __future__ import annotations

import time
from typing import Any

from profile_store.layout import profile_pk

from .conftest import BASE, Api, unique_profile


async def test_full_schema_and_custom_fields(api: Api) -> None:
    status, full, _ = await api.call("GET", f"{BASE}/schemas/profileSystem")
    assert status == 200
    assert {"title", "type", "description", "required", "properties"} <= set(full)
    assert full["properties"]["email"]["pii"] is True

    status, custom, _ = await api.call("GET", f"{BASE}/schemas/profileSystem/custom")
    assert status == 200 and custom["properties"] == {} and "documentTTL" not in custom

    declaration = {
        "loyaltyId": {"type": ["string", "null"], "sensitive": True, "pii": True},
        "segment": {"type": ["string", "null"], "sensitive": False, "pii": False},
        "documentTTL": 30,
    }
    status, body, _ = await api.call(
        "PUT", f"{BASE}/schemas/profileSystem/custom", json_body=declaration
    )
    assert status == 201 and body is None
    status, custom, _ = await api.call("GET", f"{BASE}/schemas/profileSystem/custom")
    assert custom["properties"]["loyaltyId"]["pii"] is True
    assert custom["documentTTL"] == 30 and custom["version"] == 1
    status, full, _ = await api.call("GET", f"{BASE}/schemas/profileSystem")
    assert full["properties"]["segment"]["pii"] is False

    # Custom pii fields are masked on reads, others are not; declared types are enforced.
    created = await api.create_profile(unique_profile(loyaltyId="LX-1234", segment="gold"))
    status, got, _ = await api.call("GET", f"{BASE}/profiles/{created['id']}")
    assert got[0]["document"]["loyaltyId"] == "L*-1***"
    assert got[0]["document"]["segment"] == "gold"
    status, body, _ = await api.call(
        "POST", f"{BASE}/profiles", json_body=unique_profile(segment=5)
    )
    assert status == 400 and body["error"] == "invalid_field"

    for bad in (
        {"x": {"type": ["string"], "sensitive": True}},
        {"x": {"type": ["texty"], "sensitive": True, "pii": True}},
        {"documentTTL": -1},
        ["x"],
    ):
        status, body, _ = await api.call(
            "PUT", f"{BASE}/schemas/profileSystem/custom", json_body=bad
        )
        assert status == 400 and body["error"] in {"invalid_schema"}, bad

    status, _, _ = await api.call("PUT", f"{BASE}/schemas/profileSystem/custom", json_body={})
    assert status == 201
    status, custom, _ = await api.call("GET", f"{BASE}/schemas/profileSystem/custom")
    assert custom["properties"] == {} and custom["version"] == 2


async def _expires_at(ddb: Any, table: str, pk: str, sk: str) -> int | None:
    item = (await ddb.get_item(TableName=table, Key={"pk": {"S": pk}, "sk": {"S": sk}}))["Item"]
    return int(item["expiresAt"]["N"]) if "expiresAt" in item else None


async def test_ttl_parameter_and_schema_default(api: Api, ddb: Any, table: str) -> None:
    now = time.time()
    created = await api.create_profile(params={"ttl": "365"})
    pk = profile_pk("acme", created["id"])
    expires = await _expires_at(ddb, table, pk, "CUR")
    assert expires is not None and abs(expires - (now + 365 * 86400)) < 120

    plain = await api.create_profile()
    assert await _expires_at(ddb, table, profile_pk("acme", plain["id"]), "CUR") is None

    await api.call("PUT", f"{BASE}/schemas/profileSystem/custom", json_body={"documentTTL": 10})
    defaulted = await api.create_profile()
    expires = await _expires_at(ddb, table, profile_pk("acme", defaulted["id"]), "CUR")
    assert expires is not None and abs(expires - (now + 10 * 86400)) < 120


async def test_expired_items_are_never_served(api: Api, ddb: Any, table: str) -> None:
    doc = unique_profile()
    created = await api.create_profile(doc, params={"ttl": "1"})
    pid = created["id"]
    pk = profile_pk("acme", pid)
    status, _, _ = await api.call("GET", f"{BASE}/profiles/{pid}")
    assert status == 200
    # Push expiresAt into the past directly: DynamoDB Local's sweeper has not run.
    await ddb.update_item(
        TableName=table,
        Key={"pk": {"S": pk}, "sk": {"S": "CUR"}},
        UpdateExpression="SET expiresAt = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 60)}},
    )
    for path, params in (
        (f"{BASE}/profiles/{pid}", {}),
        (f"{BASE}/profiles/{pid}/unmask", {"reason": "r"}),
        (f"{BASE}/profiles/{pid}/versions/{created['meta']['version']}", {}),
        (f"{BASE}/profiles/{pid}/addresses", {}),
    ):
        status, _body, _ = await api.call("GET", path, params=params)
        assert status == 404, path
    status, _, _ = await api.call("PATCH", f"{BASE}/profiles/{pid}", json_body={"a": 1})
    assert status == 404
    # An expired prospect is not listed either.
    status, prospect, _ = await api.call("POST", f"{BASE}/prospects", json_body={"firstName": "A"})
    await ddb.update_item(
        TableName=table,
        Key={"pk": {"S": "A#acme#R"}, "sk": {"S": f"CUR#{prospect['id']}"}},
        UpdateExpression="SET expiresAt = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 60)}},
    )
    status, listed, _ = await api.call("GET", f"{BASE}/prospects")
    assert prospect["id"] not in {p["id"] for p in listed}
    status, _, _ = await api.call("GET", f"{BASE}/prospects/{prospect['id']}")
    assert status == 404
