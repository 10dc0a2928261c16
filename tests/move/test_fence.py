"""The fence: a write that loses the marker's check stores nothing and says why; reads of an
account that moved are refused within the cache's TTL; a stale view never lets a write in."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from profile_store.layout import key
from tests.move import steps
from tests.move.conftest import ACCOUNT, DEST, SOURCE, Region, StartRegion
from tests.store.conftest import ADDRESS, BASE, metric_value, unique_profile

ERASE = "/api/user-rights/createAndProcessDeleteUserData"


async def writes(region: Region, pid: str) -> list[tuple[str, str, dict[str, Any]]]:
    """One of each write path: entity create/update/delete, sub-resource, schema, erasure."""
    return [
        ("POST", f"{BASE}/profiles", {"json_body": unique_profile()}),
        ("PATCH", f"{BASE}/profiles/{pid}", {"json_body": {"firstName": "Changed"}}),
        ("DELETE", f"{BASE}/profiles/{pid}", {}),
        ("POST", f"{BASE}/profiles/{pid}/addresses", {"json_body": ADDRESS}),
        ("PUT", f"{BASE}/schemas/profileSystem/custom", {"json_body": {"documentTTL": 3}}),
        (
            "POST",
            ERASE,
            {
                "params": {"an": ACCOUNT},
                "json_body": {"email": "someone@example.com"},
                "roles": frozenset({"erase"}),
            },
        ),
    ]


@pytest.mark.parametrize(
    ("state", "status", "code"),
    [
        ("frozen", 503, "account_moving"),
        ("moved_out", 421, "residency_mismatch"),
        ("incoming", 421, "residency_mismatch"),
    ],
)
async def test_every_write_path_is_refused_and_stores_nothing(
    source: Region, state: str, status: int, code: str
) -> None:
    pid = (await source.create_profile())["id"]
    before = sorted(map(str, await source.items()))
    await steps.fence(source, state, 1, DEST)
    for method, path, kw in await writes(source, pid):
        got, body, headers = await source.call(method, path, **kw)
        assert (got, body["error"]) == (status, code), (method, path, body)
        if status == 503:
            assert headers["Retry-After"] == "2"
    assert sorted(map(str, await source.items())) == before
    text = await (await source.client.get("/metrics")).text()
    refused = metric_value(text, "profile_store_fence_refusals_total", error=code, kind="write")
    assert refused == len(await writes(source, pid))
    # Frozen accounts keep serving reads; the others are refused.
    got, body, _ = await source.call("GET", f"{BASE}/profiles/{pid}")
    assert got == (200 if state == "frozen" else 421), body
    # Lifting the fence lets writes through again.
    await steps.fence(source, "none", 1, None)
    got, _, _ = await source.call("PATCH", f"{BASE}/profiles/{pid}", json_body={"a": 1})
    assert got == 200


async def test_a_frozen_account_refuses_audited_reads_and_says_so(source: Region) -> None:
    """During the freeze masked reads are served, but an unmask read must write its audit
    record first, and that write is refused (it could not be carried by the move's final
    catch-up): 503 account_moving, whose body names what the freeze refuses."""
    pid = (await source.create_profile())["id"]
    await steps.fence(source, "frozen", 1, DEST)
    before = sorted(map(str, await source.items()))
    got, body, _ = await source.call("GET", f"{BASE}/profiles/{pid}")
    assert got == 200, body
    unmasked = [f"{BASE}/profiles/{pid}/unmask", f"{BASE}/profiles/{pid}/addresses/unmask"]
    for path in unmasked:
        got, body, headers = await source.call("GET", path, params={"reason": "ticket-1"})
        assert (got, body["error"]) == (503, "account_moving"), (path, body)
        assert body["refused"] == ["writes", "audited_reads"], body
        assert "unmask" in body["message"] and headers["Retry-After"] == "2"
    got, body, _ = await source.call("PATCH", f"{BASE}/profiles/{pid}", json_body={"a": 1})
    assert (got, body["error"], body["refused"]) == (
        503,
        "account_moving",
        ["writes", "audited_reads"],
    )
    assert sorted(map(str, await source.items())) == before  # no audit record, no write
    # After the freeze (here: the fence lifted) the unmask read is served and audited.
    await steps.fence(source, "none", 1, None)
    got, body, _ = await source.call("GET", unmasked[0], params={"reason": "ticket-1"})
    assert got == 200, body
    audit = [i for i in await source.items() if i["pk"]["S"] == f"A#{ACCOUNT}#AUDIT"]
    assert [i["action"]["S"] for i in audit] == ["unmask"]


async def test_a_stale_fence_cache_cannot_let_a_write_in(
    source: Region, start_region: StartRegion
) -> None:
    """Instance B fences the account; instance A, whose cache still says "normal", refuses the
    write anyway (the transaction's check), and stops serving reads within fence_cache_s."""
    other = await start_region(SOURCE, table=source.table)
    pid = (await source.create_profile())["id"]
    got, _, _ = await source.call("GET", f"{BASE}/profiles/{pid}")  # A caches "normal"
    assert got == 200
    before = sorted(map(str, await source.items()))
    await steps.fence(other, "moved_out", 3, DEST)
    fenced_at = time.monotonic()
    got, body, _ = await source.call("PATCH", f"{BASE}/profiles/{pid}", json_body={"a": 1})
    assert (got, body["error"]) == (421, "residency_mismatch")
    got, body, _ = await source.call("POST", f"{BASE}/profiles", json_body=unique_profile())
    assert (got, body["error"]) == (421, "residency_mismatch")
    # Reads: refused as soon as A's cached view expires (1 s), bounded generously.
    deadline = fenced_at + source.settings.fence_cache_s + 10.0
    while True:
        got, body, _ = await source.call("GET", f"{BASE}/profiles/{pid}")
        if got == 421:
            break
        assert got == 200 and time.monotonic() < deadline, "reads were never refused"
        await asyncio.sleep(0.05)
    assert body["error"] == "residency_mismatch"
    # No write reached the table.
    assert sorted(map(str, await source.items())) == before


async def test_the_fence_refuses_a_lower_generation(source: Region) -> None:
    await steps.fence(source, "frozen", 5, DEST)
    for state in ("incoming", "moved_out", "none"):
        body = {"state": state, "generation": 4, "peer": DEST}
        got, answer, _ = await source.move(f"/{ACCOUNT}/fence", body)
        assert (got, answer["error"]) == (409, "stale_generation")
    assert (await source.repo.read_fence(ACCOUNT)).generation == 5  # type: ignore[union-attr]
    await steps.fence(source, "moved_out", 5, DEST)
    await steps.fence(source, "none", 6, None)
    assert await source.repo.read_fence(ACCOUNT) is None


async def test_the_repository_refuses_a_bare_write_to_an_account_item(source: Region) -> None:
    """No write path can skip the fence: a bare PutItem/DeleteItem/BatchWriteItem on an
    account's items is refused before it is sent."""
    item = {**key(f"A#{ACCOUNT}#X", "Y"), "v": {"S": "1"}}
    with pytest.raises(RuntimeError, match="fenced transaction"):
        await source.repo.call("put_item", TableName=source.table, Item=item)
    with pytest.raises(RuntimeError, match="fenced transaction"):
        await source.repo.call(
            "delete_item", TableName=source.table, Key=key(f"A#{ACCOUNT}#X", "Y")
        )
    with pytest.raises(RuntimeError, match="fenced transaction"):
        await source.repo.call(
            "batch_write_item",
            RequestItems={source.table: [{"PutRequest": {"Item": item}}]},
        )
    assert await source.items() == []
