"""Erasure (Data Subject Rights API) on DynamoDB Local: crypto-shredding first, then every item;
suppression of the email until lifted; status read-back; role; idempotence; retry after failure.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from profile_store.__main__ import main
from profile_store.crypto import DataKeyStore, EnvelopeCodec, SubjectErased
from profile_store.errors import StorageUnavailable
from profile_store.handlers import SERVICE
from profile_store.key_providers import LocalKeyProvider
from profile_store.masking import mask_text
from profile_store.rights_handlers import ERASER
from tests.store.conftest import (
    ADDRESS,
    BASE,
    PROSPECT,
    PURCHASE_INFO,
    REGION,
    Api,
    scan_all,
    unique_profile,
)

from .conftest import ERASE, ERASER_ROLES, item_text


async def erase(api: Api, email: str, **kw: Any) -> tuple[int, Any]:
    status, body, _ = await api.call(
        "POST", ERASE, params={"an": api.account}, json_body={"email": email}, **kw
    )
    return status, body


async def raw_get(ddb: Any, table: str, pk: str, sk: str) -> dict[str, Any] | None:
    out = await ddb.get_item(
        TableName=table, Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True
    )
    return out.get("Item")


async def subject_with_everything(api: Api) -> dict[str, Any]:
    """A profile with an address (patched), purchase info, two versions, and a prospect with the
    same email; returns the ids and values."""
    doc = unique_profile()
    pid = (await api.create_profile(doc))["id"]
    first_version = (await api.call("GET", f"{BASE}/profiles/{pid}"))[1][0]["meta"]["version"]
    status, _, _ = await api.call("PATCH", f"{BASE}/profiles/{pid}", json_body={"lastName": "X"})
    assert status == 200
    status, address, _ = await api.call(
        "POST", f"{BASE}/profiles/{pid}/addresses", json_body=ADDRESS
    )
    assert status == 201
    await api.call(
        "PATCH", f"{BASE}/profiles/{pid}/addresses/{address['id']}", json_body={"route": "52"}
    )
    status, _, _ = await api.call(
        "POST", f"{BASE}/profiles/{pid}/purchase-info", json_body=PURCHASE_INFO
    )
    assert status == 200
    status, prospect, _ = await api.call(
        "POST", f"{BASE}/prospects", json_body={**PROSPECT, "email": doc["email"]}
    )
    assert status == 201
    return {
        "doc": doc,
        "pid": pid,
        "vid": first_version,
        "aid": address["id"],
        "rid": prospect["id"],
    }


async def test_erasure_removes_and_shreds_everything_of_the_subject(
    api: Api,
    client: TestClient,
    ddb: Any,
    ddb_endpoint: str,
    table: str,
    master_key_file: Path,
    capsys: Any,
) -> None:
    s = await subject_with_everything(api)
    pid, rid, doc = s["pid"], s["rid"], s["doc"]
    bystander = await api.create_profile()
    status, other_prospect, _ = await api.call(
        "POST", f"{BASE}/prospects", json_body={**PROSPECT, "email": "someone.else@example.com"}
    )
    assert status == 201
    saved_cur = await raw_get(ddb, table, f"A#acme#P#{pid}", "CUR")
    saved_version = await raw_get(ddb, table, f"A#acme#P#{pid}", f"V#{s['vid']}")
    assert saved_cur and saved_version

    status, body = await erase(api, doc["email"].upper(), roles=ERASER_ROLES)  # normalised
    assert status == 200, body
    assert body["requestType"] == "Removal" and body["status"] == "Completed"
    assert body["email"] == mask_text(doc["email"].upper()) and body["email"] != doc["email"]
    assert body["requestTime"] and len(body["uuid"]) == 36
    data = json.loads(body["dataResponse"])["Profile System PII API"]
    assert data["profiles"] == 1 and data["prospects"] == 1 and data["dataKeysShredded"] == 2
    [app] = body["applications"]
    assert app["application"] == "profileSystemV2" and app["status"] == "Completed"
    assert app["errorDetail"] == "" and app["updateAt"]

    # the API shows nothing: current, by email, old version, address, prospect
    for path, params in [
        (f"{BASE}/profiles/{pid}", None),
        (f"{BASE}/profiles/{doc['email']}", {"alternativeKey": "email"}),
        (f"{BASE}/profiles/{doc['document']}", {"alternativeKey": "document"}),
        (f"{BASE}/profiles/{pid}/versions/{s['vid']}", None),
        (f"{BASE}/profiles/{pid}/versions/{s['vid']}/unmask", {"reason": "r"}),
        (f"{BASE}/profiles/{pid}/addresses/{s['aid']}", None),
        (f"{BASE}/profiles/{pid}/purchase-info", None),
        (f"{BASE}/prospects/{rid}", None),
    ]:
        status, answer, _ = await api.call("GET", path, params=params)
        assert status == 404, (path, answer)
    status, listed, _ = await api.call("GET", f"{BASE}/prospects")
    assert status == 200 and [p["id"] for p in listed] == [other_prospect["id"]]

    # the raw table: nothing of the subject but the suppression entry and the audit trail
    items = await scan_all(ddb, table)
    for item in items:
        text = item_text(item)
        pk = item["pk"]["S"]
        for secret in (doc["email"], doc["document"], doc["firstName"] + " " + doc["lastName"]):
            assert secret not in text, pk
        if pid in text or rid in text:
            assert pk == "A#acme#AUDIT", (pk, item["sk"]["S"])
    assert sum("#SUPPRESS#" in i["pk"]["S"] for i in items) == 1
    assert not [i for i in items if i["pk"]["S"] in {f"A#acme#DK#{pid}", f"A#acme#DK#{rid}"}]

    # a saved copy (a backup, an old version id) cannot be decrypted any more
    keys = client.app[SERVICE].keys
    keys.clear_cache()
    fresh = EnvelopeCodec(
        DataKeyStore(ddb, table, LocalKeyProvider(master_key_file), region=REGION)
    )
    for codec in (client.app[SERVICE].codec, fresh):
        for saved, sk in ((saved_cur, "CUR"), (saved_version, f"V#{s['vid']}")):
            with pytest.raises(SubjectErased):
                await codec.open(account="acme", subject_id=pid, entity_id=sk, item=saved)

    # the bystanders are intact
    assert (await api.call("GET", f"{BASE}/profiles/{bystander['id']}"))[0] == 200
    assert (await api.call("GET", f"{BASE}/prospects/{other_prospect['id']}"))[0] == 200

    # suppressed: no new profile or prospect with this email, no PATCH to it
    again = {**unique_profile(), "email": doc["email"]}
    status, answer, _ = await api.call("POST", f"{BASE}/profiles", json_body=again)
    assert status == 409 and answer["error"] == "subject_suppressed", answer
    assert doc["email"] not in json.dumps(answer)
    status, answer, _ = await api.call(
        "POST", f"{BASE}/prospects", json_body={"email": f" {doc['email'].title()} "}
    )
    assert status == 409 and answer["error"] == "subject_suppressed"
    status, answer, _ = await api.call(
        "PATCH", f"{BASE}/profiles/{bystander['id']}", json_body={"email": doc["email"]}
    )
    assert status == 409 and answer["error"] == "subject_suppressed"
    status, answer, _ = await api.call(
        "PATCH", f"{BASE}/prospects/{other_prospect['id']}", json_body={"email": doc["email"]}
    )
    assert status == 409 and answer["error"] == "subject_suppressed"

    # an operator lifts it (CLI); the email can be stored again
    capsys.readouterr()
    lift = ["suppression", "lift", "--account", "acme", "--email", doc["email"]]
    lift += ["--region", REGION, "--table", table, "--endpoint", ddb_endpoint]
    assert await asyncio.to_thread(main, lift) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == {"account": "acme", "lifted": True} and doc["email"] not in out
    assert await asyncio.to_thread(main, lift) == 0
    assert json.loads(capsys.readouterr().out)["lifted"] is False
    status, answer, _ = await api.call("POST", f"{BASE}/profiles", json_body=again)
    assert status == 201, answer


async def test_erasure_needs_the_erase_role(api: Api) -> None:
    doc = unique_profile()
    pid = (await api.create_profile(doc))["id"]
    status, body = await erase(api, doc["email"])  # read/write/delete/unmask, no erase
    assert status == 403 and body["error"] == "forbidden"
    assert (await api.call("GET", f"{BASE}/profiles/{pid}"))[0] == 200


async def test_status_read_back_and_idempotence(api: Api) -> None:
    doc = unique_profile()
    await api.create_profile(doc)
    status, first = await erase(api, doc["email"], roles=ERASER_ROLES)
    assert status == 200 and first["status"] == "Completed"

    path = f"/api/user-rights/requests/{first['uuid']}"
    status, stored, _ = await api.call("GET", path, params={"an": "acme"}, roles=ERASER_ROLES)
    assert status == 200
    assert {k: v for k, v in first.items() if k != "email"} == stored
    assert "email" not in stored
    status, _, _ = await api.call("GET", path, params={"an": "acme"})  # no erase role
    assert status == 403
    status, _, _ = await api.call("GET", path, roles=ERASER_ROLES, account="other")
    assert status == 404
    status, _, _ = await api.call(
        "GET", "/api/user-rights/requests/3e2f53dc-b099-4dc8-9727-581b2a97f39c", roles=ERASER_ROLES
    )
    assert status == 404

    for _ in range(2):  # again: nothing left, still Completed, a new request id
        status, again = await erase(api, doc["email"], roles=ERASER_ROLES)
        assert status == 200 and again["status"] == "Completed" and again["uuid"] != first["uuid"]
        data = json.loads(again["dataResponse"])["Profile System PII API"]
        assert data["profiles"] == data["prospects"] == data["itemsDeleted"] == 0
    status, never = await erase(api, "never.seen@example.com", roles=ERASER_ROLES)
    assert status == 200 and never["status"] == "Completed"


@pytest.mark.parametrize("body", [{}, {"email": ""}, {"email": 3}, ["x"]])
async def test_erasure_body_is_validated(api: Api, body: Any) -> None:
    status, answer, _ = await api.call("POST", ERASE, json_body=body, roles=ERASER_ROLES)
    assert status == 400, answer


async def test_partial_failure_is_an_error_and_a_retry_completes_it(
    api: Api, client: TestClient, ddb: Any, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = await subject_with_everything(api)
    repo = client.app[ERASER].repo
    real = repo.delete_keys
    calls = 0

    async def flaky(keys: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StorageUnavailable("DynamoDB is unreachable (batch_write_item)")
        await real(keys)

    monkeypatch.setattr(repo, "delete_keys", flaky)
    status, failed = await erase(api, s["doc"]["email"], roles=ERASER_ROLES)
    assert status == 200 and failed["status"] == "Error"
    assert failed["applications"][0]["status"] == "Error"
    assert "again" in failed["applications"][0]["errorDetail"]
    status, stored, _ = await api.call(
        "GET", f"/api/user-rights/requests/{failed['uuid']}", roles=ERASER_ROLES
    )
    assert stored["status"] == "Error"
    # the keys went first: what is left is unreadable already
    assert (await api.call("GET", f"{BASE}/profiles/{s['pid']}"))[0] == 404

    status, retried = await erase(api, s["doc"]["email"], roles=ERASER_ROLES)
    assert status == 200 and retried["status"] == "Completed", retried
    data = json.loads(retried["dataResponse"])["Profile System PII API"]
    assert data["profiles"] == 1 and data["dataKeysShredded"] == 0
    leftovers = [
        i
        for i in await scan_all(ddb, table)
        if s["pid"] in item_text(i) or s["rid"] in item_text(i)
    ]
    assert {i["pk"]["S"] for i in leftovers} == {"A#acme#AUDIT"}
