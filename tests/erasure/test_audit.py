"""The audit trail: unmasks, erasures and lifted suppressions are recorded without PII and can be
read back through the admin endpoint (role unmask or erase, own account only) and the CLI."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from profile_store.__main__ import main
from tests.store.conftest import BASE, REGION, Api, scan_all, unique_profile

from .conftest import ERASE, ERASER_ROLES, item_text

AUDIT = "/admin/audit"


async def test_unmask_and_erasure_are_audited_without_pii(
    api: Api, ddb: Any, ddb_endpoint: str, table: str, capsys: Any
) -> None:
    doc = unique_profile()
    pid = (await api.create_profile(doc))["id"]
    started = datetime.now(UTC)
    status, _, _ = await api.call(
        "GET", f"{BASE}/profiles/{pid}/unmask", params={"reason": "ticket 42"}
    )
    assert status == 200
    status, erased, _ = await api.call(
        "POST", ERASE, params={"an": "acme"}, json_body={"email": doc["email"]}, roles=ERASER_ROLES
    )
    assert status == 200 and erased["status"] == "Completed"

    status, listing, _ = await api.call("GET", AUDIT, params={"account": "acme"}, roles={"unmask"})
    assert status == 200 and listing["next"] is None
    entries = listing["items"]
    assert [e["action"] for e in entries] == ["unmask", "erase"]
    unmask, erase = entries
    assert unmask["entityType"] == "profile" and unmask["entityId"] == pid
    assert unmask["reason"] == "ticket 42" and unmask["principal"] == "tester"
    assert unmask["account"] == "acme" and unmask["time"] >= started.isoformat()[:19]
    assert erase["entityType"] == "erasure" and erase["entityId"] == erased["uuid"]
    assert erase["entities"] == [f"profile:{pid}"] and erase["principal"] == "tester"

    # no PII in the stored audit items (nor the email's hash)
    items = await scan_all(ddb, table)
    [suppression] = [i for i in items if "#SUPPRESS#" in i["pk"]["S"]]
    email_hash = suppression["pk"]["S"].rsplit("#", 1)[1]
    audit_items = [i for i in items if i["pk"]["S"] == "A#acme#AUDIT"]
    assert len(audit_items) == 2
    for item in audit_items:
        text = item_text(item)
        for secret in (doc["email"], doc["document"], doc["firstName"], doc["lastName"]):
            assert secret not in text
        assert email_hash not in text

    # time window, paging
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    status, later, _ = await api.call(
        "GET", AUDIT, params={"account": "acme", "since": future}, roles={"erase"}
    )
    assert status == 200 and later["items"] == []
    status, page, _ = await api.call(
        "GET", AUDIT, params={"account": "acme", "limit": "1"}, roles={"erase"}
    )
    assert [e["action"] for e in page["items"]] == ["unmask"] and page["next"]
    status, rest, _ = await api.call(
        "GET", AUDIT, params={"account": "acme", "after": page["next"]}, roles={"erase"}
    )
    assert [e["action"] for e in rest["items"]] == ["erase"]

    # the CLI prints the same records as JSON lines; a lifted suppression is audited too
    location = ["--region", REGION, "--table", table, "--endpoint", ddb_endpoint]
    lift = ["suppression", "lift", "--account", "acme", "--email", doc["email"], *location]
    assert await asyncio.to_thread(main, lift) == 0
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["audit", "list", "--account", "acme", *location]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["action"] for e in lines] == ["unmask", "erase", "lift-suppression"]
    assert lines[2]["entityId"] == erased["uuid"] and lines[2]["principal"].startswith("cli:")
    window = ["--since", future, "--until", future]
    assert (
        await asyncio.to_thread(main, ["audit", "list", "--account", "acme", *location, *window])
        == 0
    )
    assert capsys.readouterr().out == ""


async def test_audit_listing_is_for_auditors_of_the_same_account(api: Api) -> None:
    for params, roles, account, expected in [
        ({"account": "acme"}, {"read", "write", "delete"}, "acme", 403),
        ({"account": "other"}, {"unmask"}, "acme", 403),
        ({"account": "acme"}, {"unmask"}, "other", 403),
        ({}, {"unmask"}, "acme", 400),
        ({"account": "acme", "since": "yesterday"}, {"unmask"}, "acme", 400),
        ({"account": "acme", "limit": "0"}, {"unmask"}, "acme", 400),
        ({"account": "acme"}, {"erase"}, "acme", 200),
    ]:
        status, body, _ = await api.call("GET", AUDIT, params=params, roles=roles, account=account)
        assert status == expected, (params, roles, account, body)
    status, _, _ = await api.call("GET", AUDIT, params={"account": "acme"}, signed=False)
    assert status == 401
