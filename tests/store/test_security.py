"""Auth, tenant isolation, unmask audit, and the no-plaintext-PII-at-rest guarantee."""

from __future__ import annotations

import json
import time
from typing import Any

from profile_store.app import REPOSITORY
from profile_store.errors import StorageUnavailable
from residency_contract.assertion import sign

from .conftest import BASE, REGION, SECRET, Api, scan_all, target, unique_profile


async def test_assertion_is_required_and_checked(api: Api) -> None:
    pid = (await api.create_profile())["id"]
    path = f"{BASE}/profiles/{pid}"
    status, body, _ = await api.call("GET", path, signed=False)
    assert status == 401 and body["error"] == "missing_assertion"
    status, body, _ = await api.call("GET", path, key=b"another-secret-0123456789")
    assert status == 401 and body["error"] == "invalid_assertion"
    stale = sign(
        SECRET,
        account="acme",
        region=REGION,
        principal="p",
        roles={"read"},
        method="GET",
        target=target(path),
        now=int(time.time()) - 3600,
    )
    status, body, _ = await api.call("GET", path, assertion=stale)
    assert status == 401 and body["error"] == "stale_assertion"
    # Signed for another request target: replay on this one fails.
    other = sign(
        SECRET,
        account="acme",
        region=REGION,
        principal="p",
        roles={"read"},
        method="GET",
        target=target(f"{BASE}/profiles/x"),
    )
    status, body, _ = await api.call("GET", path, assertion=other)
    assert status == 401
    status, body, _ = await api.call("GET", path, region="us-east-1")
    assert status == 421 and body["error"] == "misdirected_request"


async def test_roles_per_method(api: Api) -> None:
    pid = (await api.create_profile())["id"]
    path = f"{BASE}/profiles/{pid}"
    checks = [
        ("GET", path, None, {"write", "delete", "unmask"}),
        ("PATCH", path, {"a": 1}, {"read", "delete", "unmask"}),
        ("POST", f"{BASE}/profiles", unique_profile(), {"read", "delete", "unmask"}),
        ("PUT", f"{BASE}/schemas/profileSystem/custom", {}, {"read"}),
        ("DELETE", path, None, {"read", "write", "unmask"}),
    ]
    for method, p, body, roles in checks:
        status, answer, _ = await api.call(method, p, json_body=body, roles=roles)
        assert status == 403 and answer["error"] == "forbidden", (method, p)
    status, _, _ = await api.call("GET", path, roles={"read"})
    assert status == 200


async def test_tenant_isolation(api: Api) -> None:
    doc = unique_profile()
    created = await api.create_profile(doc)
    pid = created["id"]
    for method, path, params in (
        ("GET", f"{BASE}/profiles/{pid}", {}),
        ("GET", f"{BASE}/profiles/{pid}/unmask", {"reason": "r"}),
        ("GET", f"{BASE}/profiles/{pid}/versions/{created['meta']['version']}", {}),
        ("GET", f"{BASE}/profiles/{doc['email']}", {"alternativeKey": "email"}),
        ("GET", f"{BASE}/profiles/{pid}/addresses", {}),
        ("DELETE", f"{BASE}/profiles/{pid}", {}),
    ):
        status, body, _ = await api.call(method, path, params=params, account="globex")
        assert status == 404, (method, path, body)
    status, _, _ = await api.call("GET", f"{BASE}/profiles/{pid}")
    assert status == 200


async def test_unmask_writes_an_audit_record_without_pii(api: Api, ddb: Any, table: str) -> None:
    doc = unique_profile()
    pid = (await api.create_profile(doc))["id"]
    status, _, _ = await api.call(
        "GET",
        f"{BASE}/profiles/{doc['email']}/unmask",
        params={"alternativeKey": "email", "reason": "r" * 500, "onBehalfOf": "ticket-42"},
        headers={"X-Request-Id": "req-123"},
    )
    assert status == 200
    audit = [i for i in await scan_all(ddb, table) if i["pk"]["S"] == "A#acme#AUDIT"]
    assert len(audit) == 1
    item = audit[0]
    assert item["entityId"]["S"] == pid and item["entityType"]["S"] == "profile"
    assert item["principal"]["S"] == "tester" and item["account"]["S"] == "acme"
    assert item["action"]["S"] == "unmask" and item["requestId"]["S"] == "req-123"
    assert len(item["reason"]["S"]) == 200 and item["onBehalfOf"]["S"] == "ticket-42"
    flat = json.dumps(item)
    for value in (doc["email"], doc["document"], doc["firstName"]):
        assert value not in flat


async def test_audit_failure_serves_no_data(api: Api, client: Any, monkeypatch: Any) -> None:
    doc = unique_profile()
    pid = (await api.create_profile(doc))["id"]
    repo = client.app[REPOSITORY]
    original = repo.put

    async def failing_put(item: dict[str, Any], **kw: Any) -> None:
        if item["pk"]["S"].endswith("#AUDIT"):
            raise StorageUnavailable("down")
        await original(item, **kw)

    monkeypatch.setattr(repo, "put", failing_put)
    status, body, headers = await api.call(
        "GET", f"{BASE}/profiles/{pid}/unmask", params={"reason": "r"}
    )
    assert status == 503 and body["error"] == "audit_unavailable"
    assert doc["email"] not in json.dumps(body) and "Retry-After" in headers


async def test_no_plaintext_pii_in_keys_or_top_level_attributes(
    api: Api, ddb: Any, table: str
) -> None:
    doc = unique_profile(homePhone="5551234567")
    created = await api.create_profile(doc)
    pid = created["id"]
    await api.call("PATCH", f"{BASE}/profiles/{pid}", json_body={"firstName": "Johnny"})
    await api.call(
        "POST",
        f"{BASE}/profiles/{pid}/addresses",
        json_body={
            "postalCode": "99999-123",
            "countryName": "Brasil",
            "administrativeAreaLevel1": "RJ",
            "locality": "Niteroi",
            "localityAreaLevel1": "Icarai",
            "route": "Rua X",
            "streetNumber": "1",
        },
    )
    await api.call(
        "POST", f"{BASE}/prospects", json_body={"email": doc["email"], "document": doc["document"]}
    )
    await api.call("GET", f"{BASE}/profiles/{pid}/unmask", params={"reason": "r"})
    secrets = {
        doc["email"],
        doc["email"].lower(),
        doc["document"],
        doc["homePhone"],
        "99999-123",
        "Niteroi",
    }
    items = await scan_all(ddb, table)
    assert len(items) > 5
    for item in items:
        for name, value in item.items():
            if name == "doc":  # the codec's attribute
                continue
            text = json.dumps(value, default=repr)
            for secret in secrets:
                assert secret not in text, (name, item["sk"])
