"""Concurrent writes through the edge: no lost update, one profile per e-mail.

PATCH is a merge, so each concurrent PATCH sets its OWN field: a lost update shows up as a
missing field. The version history must then be one linear chain (version k holds exactly k of
the fields, each holds its predecessor's), and the current document must be its last link.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest

from .conftest import STATS, Client, Load, Pii
from .stack import ACCOUNT_OF, API, ReliabilityStack, auth_headers

pytestmark = pytest.mark.slow

EU = "eu-west-1"
ACCOUNT = ACCOUNT_OF[EU]


def _fields(document: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in document.items() if k.startswith("relPatch")}


async def test_concurrent_patches_lose_no_update(
    stack: ReliabilityStack, client: Client, pii: Pii, load: Load
) -> None:
    h = auth_headers(ACCOUNT)
    created = await client.call("POST", f"{API}/profiles", headers=h, json=pii.profile())
    assert created.status == 201, created.body
    pid, v0 = created.body["id"], created.body["meta"]["version"]

    n = load.patches
    answers = await asyncio.gather(
        *(
            client.call("PATCH", f"{API}/profiles/{pid}", headers=h, json={f"relPatch{i}": i})
            for i in range(n)
        )
    )
    assert [a.status for a in answers] == [200] * n, [a.body for a in answers if a.status != 200]
    slowest = max(a.seconds for a in answers)
    STATS.errors[f"info: slowest of {n} concurrent PATCHes {slowest:.1f}s"] += 1
    versions = [a.body["meta"]["version"] for a in answers]
    assert len(set(versions)) == n and v0 not in versions

    current = await client.call("GET", f"{API}/profiles/{pid}", headers=h)
    assert current.status == 200
    [record] = current.body
    assert _fields(record["document"]) == {f"relPatch{i}": i for i in range(n)}  # none lost
    assert record["meta"]["version"] in versions

    # Every version each PATCH answered with is stored and immutable; together they form one
    # chain: the version a PATCH created holds that PATCH's field and its predecessor's fields.
    history = await asyncio.gather(
        *(client.call("GET", f"{API}/profiles/{pid}/versions/{v}", headers=h) for v in versions)
    )
    by_size: dict[int, dict[str, object]] = {}
    for i, (answer, version) in enumerate(zip(history, versions, strict=True)):
        assert answer.status == 200, answer.body
        [doc] = answer.body
        assert doc["meta"]["version"] == version
        fields = _fields(doc["document"])
        assert fields.get(f"relPatch{i}") == i  # each version holds its own patch
        assert len(fields) not in by_size, "two versions applied to the same predecessor"
        by_size[len(fields)] = fields
    assert sorted(by_size) == list(range(1, n + 1))
    for k in range(2, n + 1):
        assert by_size[k - 1].items() <= by_size[k].items()
    assert by_size[n] == _fields(record["document"])


async def test_concurrent_creates_with_one_email_make_one_profile(
    stack: ReliabilityStack, client: Client, pii: Pii, load: Load
) -> None:
    h = auth_headers(ACCOUNT)
    email = pii.email()
    bodies = [pii.profile(email=email) for _ in range(load.creates)]
    answers = await asyncio.gather(
        *(client.call("POST", f"{API}/profiles", headers=h, json=b, expect=(409,)) for b in bodies)
    )
    statuses = sorted(a.status for a in answers)
    assert statuses == [201] + [409] * (load.creates - 1), [a.body for a in answers]
    [winner] = [a.body["id"] for a in answers if a.status == 201]
    assert {a.body["error"] for a in answers if a.status == 409} == {"duplicate_alternative_key"}

    found = await client.call(
        "GET", f"{API}/profiles/{quote(email, safe='')}?alternativeKey=email", headers=h
    )
    assert found.status == 200, found.body
    assert [r["id"] for r in found.body] == [winner]
    # the losers' documents were never stored under an id of their own
    for answer, b in zip(answers, bodies, strict=True):
        doc = await client.call(
            "GET",
            f"{API}/profiles/{b['document']}?alternativeKey=document",
            headers=h,
            expect=(404,),
        )
        if answer.status == 201:
            assert doc.status == 200 and [r["id"] for r in doc.body] == [winner]
        else:
            assert doc.status == 404, doc.body
