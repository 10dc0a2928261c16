"""Profiles end to end: create, masked and unmasked reads, versions, PATCH, DELETE, errors."""

from __future__ import annotations

from typing import Any

from .conftest import BASE, PROFILE, Api, scan_all, unique_profile

UUID_LEN = 36


async def test_create_returns_201_with_id_meta_and_clear_document(api: Api) -> None:
    doc = unique_profile(favouriteColour="blue")
    body = await api.create_profile(doc)
    assert set(body) == {"id", "meta", "document"}
    assert len(body["id"]) == UUID_LEN
    assert set(body["meta"]) == {"version", "author", "creationDate", "lastUpdate"}
    assert body["meta"]["author"] == "tester"
    assert body["document"] == doc


async def test_get_is_masked_array_like_the_spec_example(api: Api) -> None:
    created = await api.create_profile(dict(PROFILE))
    status, body, _ = await api.call("GET", f"{BASE}/profiles/{created['id']}")
    assert status == 200
    assert isinstance(body, list) and len(body) == 1
    item = body[0]
    assert item["id"] == created["id"]
    assert item["meta"] == created["meta"]
    assert item["document"]["firstName"] == "J***"
    assert item["document"]["lastName"] == "D**"
    assert item["document"]["email"] == "j***.d**@e******.c**"
    assert item["document"]["document"] == "1**********"
    assert item["document"]["documentType"] == "CPF"


async def test_unmask_returns_clear_array_and_needs_reason_and_role(api: Api) -> None:
    doc = unique_profile()
    created = await api.create_profile(doc)
    path = f"{BASE}/profiles/{created['id']}/unmask"
    status, body, _ = await api.call("GET", path, params={"reason": "data-validation"})
    assert status == 200
    assert isinstance(body, list) and body[0]["document"] == doc

    status, body, _ = await api.call("GET", path)
    assert status == 400 and body["error"] == "missing_reason"

    status, body, _ = await api.call("GET", path, params={"reason": "x"}, roles={"read"})
    assert status == 403 and body["error"] == "forbidden"


async def test_patch_merges_and_creates_readable_versions(api: Api) -> None:
    doc = unique_profile()
    created = await api.create_profile(doc)
    pid, v1 = created["id"], created["meta"]["version"]
    status, body, _ = await api.call(
        "PATCH", f"{BASE}/profiles/{pid}", json_body={"firstName": "Johnny", "vip": True}
    )
    assert status == 200
    assert isinstance(body, dict) and body["id"] == pid
    assert body["document"] == {**doc, "firstName": "Johnny", "vip": True}
    v2 = body["meta"]["version"]
    assert v2 != v1
    assert body["meta"]["creationDate"] == created["meta"]["creationDate"]

    status, old, _ = await api.call("GET", f"{BASE}/profiles/{pid}/versions/{v1}")
    assert status == 200 and isinstance(old, list)
    assert old[0]["document"]["firstName"] == "J***"
    assert old[0]["meta"]["version"] == v1
    assert "vip" not in old[0]["document"]

    status, old, _ = await api.call(
        "GET", f"{BASE}/profiles/{pid}/versions/{v1}/unmask", params={"reason": "audit"}
    )
    assert status == 200 and old[0]["document"] == doc

    status, body, _ = await api.call("GET", f"{BASE}/profiles/{pid}/versions/{v1}/unmask")
    assert status == 400 and body["error"] == "missing_reason"

    status, body, _ = await api.call("GET", f"{BASE}/profiles/{pid}/versions/nope-123")
    assert status == 404 and body["error"] == "not_found"


async def test_if_match_mismatch_is_412_and_match_succeeds(api: Api) -> None:
    created = await api.create_profile()
    pid, v1 = created["id"], created["meta"]["version"]
    status, body, _ = await api.call(
        "PATCH", f"{BASE}/profiles/{pid}", json_body={"a": 1}, headers={"If-Match": "other"}
    )
    assert status == 412 and body["error"] == "version_mismatch"
    status, body, _ = await api.call(
        "PATCH", f"{BASE}/profiles/{pid}", json_body={"a": 1}, headers={"If-Match": f'"{v1}"'}
    )
    assert status == 200


async def test_delete_removes_the_whole_partition_and_frees_alternative_keys(
    api: Api, ddb: Any, table: str
) -> None:
    doc = unique_profile()
    created = await api.create_profile(doc)
    pid = created["id"]
    await api.call("PATCH", f"{BASE}/profiles/{pid}", json_body={"x": 1})
    status, _, _ = await api.call("DELETE", f"{BASE}/profiles/{pid}")
    assert status == 204
    status, body, _ = await api.call("GET", f"{BASE}/profiles/{pid}")
    assert status == 404 and body["error"] == "not_found"
    status, _, _ = await api.call("DELETE", f"{BASE}/profiles/{pid}")
    assert status == 404
    leftovers = [i for i in await scan_all(ddb, table) if pid in i["pk"]["S"]]
    assert leftovers == []
    # The email and document are free again.
    await api.create_profile(doc)


async def test_alternative_keys_email_and_document(api: Api) -> None:
    doc = unique_profile()
    created = await api.create_profile(doc)
    pid = created["id"]
    for kind, value in (("email", doc["email"].upper() + " "), ("document", doc["document"])):
        status, body, _ = await api.call(
            "GET", f"{BASE}/profiles/{value}", params={"alternativeKey": kind}
        )
        assert status == 200, (kind, body)
        assert body[0]["id"] == pid
    status, body, _ = await api.call(
        "GET", f"{BASE}/profiles/nobody@example.com", params={"alternativeKey": "email"}
    )
    assert status == 404 and "nobody" not in body["message"]

    # Changing the email moves the key: the old one stops resolving, the new one works.
    new_email = "moved." + doc["email"]
    status, body, _ = await api.call(
        "PATCH",
        f"{BASE}/profiles/{doc['email']}",
        params={"alternativeKey": "email"},
        json_body={"email": new_email},
    )
    assert status == 200 and body["id"] == pid
    status, _, _ = await api.call(
        "GET", f"{BASE}/profiles/{doc['email']}", params={"alternativeKey": "email"}
    )
    assert status == 404
    status, body, _ = await api.call(
        "GET",
        f"{BASE}/profiles/{new_email}/unmask",
        params={"alternativeKey": "email", "reason": "support"},
    )
    assert status == 200 and body[0]["document"]["email"] == new_email

    status, body, _ = await api.call(
        "GET", f"{BASE}/profiles/{new_email}", params={"alternativeKey": "phone"}
    )
    assert status == 400 and body["error"] == "invalid_alternative_key"


async def test_duplicate_alternative_key_is_409_without_echoing_the_value(api: Api) -> None:
    doc = unique_profile()
    await api.create_profile(doc)
    for clash in (
        {**unique_profile(), "email": doc["email"].title()},
        {**unique_profile(), "document": doc["document"]},
    ):
        status, body, _ = await api.call("POST", f"{BASE}/profiles", json_body=clash)
        assert status == 409 and body["error"] == "duplicate_alternative_key"
        assert doc["email"] not in body["message"] and doc["document"] not in body["message"]
    other = await api.create_profile()
    status, body, _ = await api.call(
        "PATCH", f"{BASE}/profiles/{other['id']}", json_body={"email": doc["email"]}
    )
    assert status == 409 and body["error"] == "duplicate_alternative_key"


async def test_invalid_bodies_are_400_and_store_nothing(api: Api, ddb: Any, table: str) -> None:
    before = len(await scan_all(ddb, table))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"json_body": {**PROFILE, "email": None}}, "invalid_field"),
        ({"json_body": {k: v for k, v in PROFILE.items() if k != "lastName"}}, "invalid_field"),
        ({"json_body": {**PROFILE, "tags": "not-a-list"}}, "invalid_field"),
        ({"json_body": [PROFILE]}, "invalid_body"),
        ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, "invalid_json"),
        ({"data": b"", "headers": {"Content-Type": "application/json"}}, "invalid_json"),
        (
            {"data": b"firstName=J", "headers": {"Content-Type": "text/plain"}},
            "unsupported_content_type",
        ),
    ]
    for kwargs, code in cases:
        status, body, _ = await api.call("POST", f"{BASE}/profiles", **kwargs)
        assert status == 400, (kwargs, body)
        assert body["error"] == code
        assert set(body) == {"error", "message"}
    status, body, _ = await api.call(
        "POST", f"{BASE}/profiles", params={"ttl": "0"}, json_body=unique_profile()
    )
    assert status == 400 and body["error"] == "invalid_ttl"
    status, body, _ = await api.call(
        "POST", f"{BASE}/profiles", params={"ttl": "abc"}, json_body=unique_profile()
    )
    assert status == 400 and body["error"] == "invalid_ttl"
    assert len(await scan_all(ddb, table)) == before

    created = await api.create_profile()
    status, body, _ = await api.call(
        "PATCH", f"{BASE}/profiles/{created['id']}", json_body={"firstName": 7}
    )
    assert status == 400 and body["error"] == "invalid_field"


async def test_unknown_ids_routes_methods_and_large_bodies(api: Api) -> None:
    status, body, _ = await api.call("GET", f"{BASE}/profiles/00000000-0000-0000-0000-000000000000")
    assert status == 404 and body["error"] == "not_found"
    status, body, _ = await api.call("GET", f"{BASE}/nothing-here")
    assert status == 404 and body["error"] == "not_found"
    status, body, _ = await api.call("PUT", f"{BASE}/profiles")
    assert status == 405 and body["error"] == "method_not_allowed"
    big = unique_profile(blob="x" * (300 * 1024))
    status, body, _ = await api.call("POST", f"{BASE}/profiles", json_body=big)
    assert status == 413 and body["error"] == "payload_too_large"
