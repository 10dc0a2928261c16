"""Who may call the transfer endpoints, and what they refuse: the move role is required there
and accepted nowhere else; a bad body is a 400 JSON answer and stores nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.move import steps
from tests.move.conftest import ACCOUNT, MOVE, SOURCE, TRANSFER, Region
from tests.store.conftest import ALL_ROLES, BASE


async def test_the_transfer_endpoints_need_the_move_role(source: Region) -> None:
    for roles in (ALL_ROLES, frozenset({"erase"})):
        got, body, _ = await source.call(
            "POST", f"{TRANSFER}/{ACCOUNT}/fence", json_body={}, roles=roles
        )
        assert (got, body["error"]) == (403, "forbidden")
    got, body, _ = await source.call("GET", f"{TRANSFER}/public-key", roles=ALL_ROLES)
    assert got == 403
    got, body, _ = await source.call("GET", f"{TRANSFER}/public-key", signed=False)
    assert got == 401


async def test_the_move_role_opens_nothing_else(source: Region) -> None:
    pid = (await source.create_profile())["id"]
    for roles in (MOVE, MOVE | {"read"}):
        got, body, _ = await source.call("GET", f"{BASE}/profiles/{pid}", roles=roles)
        assert (got, body["error"]) == (403, "forbidden"), roles
    got, body, _ = await source.call(
        "POST", f"{BASE}/profiles", json_body={}, roles=MOVE | {"write"}
    )
    assert got == 403


async def test_a_transfer_call_is_for_the_assertions_account_only(source: Region) -> None:
    got, body, _ = await source.call(
        "POST",
        f"{TRANSFER}/{ACCOUNT}/fence",
        json_body={"state": "frozen", "generation": 1, "peer": "eu-west-1"},
        roles=MOVE,
        account="other",
    )
    assert (got, body["error"]) == (403, "forbidden")
    assert await source.repo.read_fence(ACCOUNT) is None


PAGE_OK: dict[str, Any] = {"segment": 0, "total_segments": 1, "cursor": None, "limit": 10}
BAD_BODIES: list[tuple[str, Any]] = [
    ("/fence", {"state": "gone", "generation": 1, "peer": "eu-west-1"}),
    ("/fence", {"state": "frozen", "generation": -1, "peer": "eu-west-1"}),
    ("/fence", {"state": "frozen", "generation": True, "peer": "eu-west-1"}),
    ("/fence", {"state": "frozen", "generation": 1}),
    ("/fence", {"state": "frozen", "generation": 1, "peer": "Mars"}),
    ("/fence", [1, 2]),
    ("/changes", {"checkpoint": {"v": 2}}),
    ("/changes", {"checkpoint": "abc"}),
    ("/digests", {**PAGE_OK, "segment": 1}),
    ("/digests", {**PAGE_OK, "limit": 0}),
    ("/digests", {**PAGE_OK, "cursor": "not-a-cursor"}),
    ("/export", PAGE_OK),  # no recipient
    ("/export", {**PAGE_OK, "recipient": {"kid": "x", "pem": "not a pem"}}),
    ("/export-keys", {"keys": [["A#other#P#1", "CUR"]], "recipient": None}),
    ("/import", {"items": "x"}),
    ("/import", {"items": [], "delete": [["A#other#P#1", "CUR"]]}),
    ("/purge", {"generation": 1, "role": "both"}),
    ("/audit", {"event": "moved", "generation": 1, "peer": "eu-west-1", "job": "j"}),
    ("/audit", {"event": "move_in", "generation": 1, "peer": "eu-west-1", "job": "j j"}),
    (
        "/audit",
        {
            "event": "move_in",
            "generation": 1,
            "peer": "eu-west-1",
            "job": "j",
            "counts": {"profile": "many"},
        },
    ),
]


@pytest.mark.parametrize(("path", "body"), BAD_BODIES)
async def test_bad_bodies_are_400_json(source: Region, path: str, body: Any) -> None:
    await steps.fence(source, "incoming", 1, "eu-west-1")  # import would otherwise be 409
    got, answer, _ = await source.move(f"/{ACCOUNT}{path}", body)
    assert got == 400, answer
    assert answer["error"].startswith("invalid_") and answer["message"]
    assert await source.items() == []


async def test_not_json_is_400(source: Region) -> None:
    for data, content_type in ((b"{", "application/json"), (b"x=1", "text/plain")):
        got, answer, _ = await source.call(
            "POST",
            f"{TRANSFER}/{ACCOUNT}/fence",
            data=data,
            headers={"Content-Type": content_type},
            roles=MOVE,
        )
        assert got == 400 and answer["error"] in {"invalid_json", "invalid_body"}


async def test_an_import_with_one_bad_item_stores_none(source: Region, dest: Region) -> None:
    await source.create_profile()
    recipient = await steps.public_key(dest)
    items = await steps.export_all(source, recipient)
    await steps.fence(dest, "incoming", 1, SOURCE)
    bad_items: list[Any] = [
        {"pk": {"S": f"A#{ACCOUNT}#X"}, "sk": {"S": "Y"}, "n": {"N": "not a number"}},
        {"pk": {"S": "A#other#X"}, "sk": {"S": "Y"}},
        {"pk": {"S": f"A#{ACCOUNT}#X"}, "sk": {"S": "Y"}, "b": {"B": "!!"}},
        {"pk": {"S": f"A#{ACCOUNT}#DK#s"}, "sk": {"S": "DK"}, "wrapped": {"B": "AAAA"}},
        {"pk": {"S": f"A#{ACCOUNT}#X"}, "sk": {"S": "Y"}, "wrapped": {"B": "AAAA"}},
        items[0],  # twice in one import
    ]
    for bad in bad_items:
        got, answer, _ = await dest.move(f"/{ACCOUNT}/import", {"items": [*items, bad]})
        assert got == 400, (bad, answer)
        assert await dest.items() == []
    # A data key wrapped for another transfer key (the source's own) is refused too.
    own = await steps.public_key(source)
    foreign = await steps.export_all(source, own)
    got, answer, _ = await dest.move(f"/{ACCOUNT}/import", {"items": foreign})
    assert (got, answer["error"]) == (400, "invalid_transfer_key")
    assert await dest.items() == []
