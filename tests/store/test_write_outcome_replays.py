"""Writes with a definite outcome (issue 20): re-sends, ``write_outcome_unknown`` and replays.

The store runs against DynamoDB Local with its ``transact_write_items`` wrapped (``Wire``) so
that a send can be made for real and its answer then lost (a read timeout after the write
landed), or refused before it leaves (nothing reached DynamoDB). The wrapper records every token
sent; the tests check that a re-send carries the same token, that a retry with the same
``Idempotency-Key`` answers what was done, and that erasure removes the subject's records.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from aiohttp.test_utils import TestClient

from profile_store.app import REPOSITORY, create_app

from .conftest import (
    ADDRESS,
    BASE,
    PROSPECT,
    PURCHASE_INFO,
    Api,
    make_settings,
    scan_all,
    unique_profile,
)
from .write_outcome import PROFILES, call, current_profiles, key_header, profiles_with_email

ERASE = "/api/user-rights/createAndProcessDeleteUserData"


Mode = Callable[[str], str]  # token -> "pass" | "lose" (sent, answer lost) | "refuse" (not sent)


_REQUEST_TOKEN = re.compile(r"^[0-9a-f]{32}-[0-9]{3}$")  # idempotency.WriteIntent.next_token


class Wire:
    """Stands in for the client's ``transact_write_items``; records every send's token."""

    def __init__(self, real: Callable[..., Awaitable[Any]]) -> None:
        self.real = real
        self.tokens: list[str] = []
        self.mode: Mode = lambda token: "pass"

    async def __call__(self, **kwargs: Any) -> Any:
        token = kwargs.get("ClientRequestToken", "")
        if not _REQUEST_TOKEN.match(token):
            # Single-item writes (the account's salt, audit records, data keys) are
            # transactions too since the fence; the tests here are about request writes.
            return await self.real(**kwargs)
        self.tokens.append(token)
        mode = self.mode(token)
        if mode == "refuse":
            raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://ddb")
        response = await self.real(**kwargs)
        if mode == "lose":
            raise botocore.exceptions.ReadTimeoutError(endpoint_url="http://ddb")
        return response


@pytest.fixture
async def store(
    aiohttp_client: Any, ddb_endpoint: str, table: str, master_key_file: Path
) -> tuple[Api, Wire]:
    settings = make_settings(
        ddb_endpoint, table, master_key_file, write_attempts=3, write_budget_s=5.0
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    repo = client.server.app[REPOSITORY]
    wire = Wire(repo.client.transact_write_items)
    repo.client.transact_write_items = wire  # Repository.call looks the method up per call
    return Api(client), wire


async def test_a_lost_answer_is_resent_with_the_same_token(
    store: tuple[Api, Wire], ddb: Any, table: str
) -> None:
    api, wire = store
    lost: set[str] = set()

    def lose_first(token: str) -> str:
        if token in lost:
            return "pass"
        lost.add(token)
        return "lose"

    wire.mode = lose_first
    doc = unique_profile()
    status, body, _ = await call(api, "POST", PROFILES, json_body=doc)
    assert status == 201, body
    assert len(wire.tokens) == 2 and wire.tokens[0] == wire.tokens[1]
    assert len(wire.tokens[0]) == 36
    assert await profiles_with_email(api, doc["email"]) == [body["id"]]
    assert [i["id"]["S"] for i in current_profiles(await scan_all(ddb, table))] == [body["id"]]

    # an update and a delete: the same, one version more, then gone
    wire.tokens.clear()
    status, patched, _ = await call(api, "PATCH", f"{PROFILES}/{body['id']}", json_body={"a": 1})
    assert status == 200, patched
    assert len(wire.tokens) == 2 and wire.tokens[0] == wire.tokens[1]
    items = await scan_all(ddb, table)
    versions = [i for i in items if i["pk"]["S"] == f"A#acme#P#{body['id']}"]
    assert sorted(i["sk"]["S"][:2] for i in versions) == ["CU", "V#", "V#"]
    wire.tokens.clear()
    status, _, _ = await call(api, "DELETE", f"{PROFILES}/{body['id']}")
    assert status == 204
    assert len(wire.tokens) == 2 and wire.tokens[0] == wire.tokens[1]
    assert await profiles_with_email(api, doc["email"]) == []


async def test_outcome_unknown_then_the_retry_answers_the_created_profile(
    store: tuple[Api, Wire], ddb: Any, table: str
) -> None:
    api, wire = store
    wire.mode = lambda token: "lose"
    doc = unique_profile()
    key = str(uuid.uuid4())
    status, body, headers = await call(
        api, "POST", PROFILES, json_body=doc, headers=key_header(key)
    )
    assert status == 503 and body["error"] == "write_outcome_unknown", body
    assert headers["Retry-After"] == "1" and "Idempotency-Key" in body["message"]
    assert len(wire.tokens) == 3 and len(set(wire.tokens)) == 1  # write_attempts, one token
    [pid] = await profiles_with_email(api, doc["email"])  # it landed

    wire.mode = lambda token: "pass"
    wire.tokens.clear()
    status, created, _ = await call(api, "POST", PROFILES, json_body=doc, headers=key_header(key))
    assert status == 201, created
    assert created["id"] == pid and created["document"] == doc
    assert wire.tokens == []  # answered from the record: nothing written
    status, shown, _ = await call(api, "GET", f"{PROFILES}/{pid}")
    assert status == 200 and shown[0]["meta"] == created["meta"]
    # the same body in another order and spacing is the same request
    reordered = json.dumps(dict(reversed(list(doc.items())))).encode()
    status, again, _ = await call(
        api,
        "POST",
        PROFILES,
        data=reordered,
        headers={**key_header(key), "Content-Type": "application/json"},
    )
    assert status == 201 and again == created

    # the key with another body, or another query: 422; a new key: the usual 409
    status, reused, _ = await call(
        api, "POST", PROFILES, json_body={**doc, "firstName": "Other"}, headers=key_header(key)
    )
    assert status == 422 and reused["error"] == "idempotency_key_reused", reused
    status, reused, _ = await call(
        api, "POST", PROFILES, json_body=doc, params={"ttl": "3"}, headers=key_header(key)
    )
    assert status == 422 and reused["error"] == "idempotency_key_reused", reused
    status, dup, _ = await call(api, "POST", PROFILES, json_body=doc, headers=key_header("new"))
    assert status == 409 and dup["error"] == "duplicate_alternative_key"

    # the record holds ids and digests only
    records = [i for i in await scan_all(ddb, table) if "#IDEM#" in i["pk"]["S"]]
    assert len(records) == 1
    text = json.dumps(records[0])
    for secret in (doc["email"], doc["document"], doc["firstName"], doc["lastName"], key):
        assert secret not in text

    # deleted since: 410, never a second profile
    status, _, _ = await call(api, "DELETE", f"{PROFILES}/{pid}")
    assert status == 204
    status, gone, _ = await call(api, "POST", PROFILES, json_body=doc, headers=key_header(key))
    assert status == 410 and gone["error"] == "created_then_deleted", gone
    assert await profiles_with_email(api, doc["email"]) == []


async def test_every_unanswered_create_did_not_happen_or_is_returned_by_its_retry(
    store: tuple[Api, Wire], ddb: Any, table: str
) -> None:
    api, wire = store
    seen: dict[str, str] = {}

    def lose_or_refuse(token: str) -> str:
        # The first request seen loses its answers, the next is refused, and so on.
        return seen.setdefault(token, ("lose", "refuse")[len(seen) % 2])

    wire.mode = lose_or_refuse
    docs = [unique_profile() for _ in range(8)]
    keys = [str(uuid.uuid4()) for _ in docs]
    first = await asyncio.gather(
        *(
            call(api, "POST", PROFILES, json_body=doc, headers=key_header(key))
            for doc, key in zip(docs, keys, strict=True)
        )
    )
    assert {status for status, _, _ in first} == {503}
    codes = sorted(body["error"] for _, body, _ in first)
    assert codes == ["dynamodb_unavailable"] * 4 + ["write_outcome_unknown"] * 4
    existing = [await profiles_with_email(api, doc["email"]) for doc in docs]
    for (_, body, _), ids in zip(first, existing, strict=True):
        # nothing was sent: nothing happened; sent and unanswered: it happened
        assert len(ids) == (body["error"] == "write_outcome_unknown"), (body, ids)

    wire.mode = lambda token: "pass"
    retried = await asyncio.gather(
        *(
            call(api, "POST", PROFILES, json_body=doc, headers=key_header(key))
            for doc, key in zip(docs, keys, strict=True)
        )
    )
    for (status, body, _), ids, doc in zip(retried, existing, docs, strict=True):
        assert status == 201, body  # never 409
        assert ids in ([], [body["id"]])
        assert await profiles_with_email(api, doc["email"]) == [body["id"]]
    assert len(current_profiles(await scan_all(ddb, table))) == len(docs)


async def test_concurrent_twins_with_one_key_create_one_profile(store: tuple[Api, Wire]) -> None:
    api, _ = store
    doc, key = unique_profile(), str(uuid.uuid4())
    answers = await asyncio.gather(
        *(call(api, "POST", PROFILES, json_body=doc, headers=key_header(key)) for _ in range(4))
    )
    assert [status for status, _, _ in answers] == [201] * 4
    assert len({body["id"] for _, body, _ in answers}) == 1
    assert len({json.dumps(body, sort_keys=True) for _, body, _ in answers}) == 1
    assert len(await profiles_with_email(api, doc["email"])) == 1


async def test_sub_resources_and_prospects_replay_too(store: tuple[Api, Wire]) -> None:
    api, wire = store
    pid = (await api.create_profile())["id"]
    cases = [
        (f"{PROFILES}/{pid}/addresses", ADDRESS, 201),
        (f"{PROFILES}/{pid}/purchase-info", PURCHASE_INFO, 200),  # the spec's 200
        (f"{BASE}/prospects", PROSPECT, 201),
    ]
    for path, body, code in cases:
        key = str(uuid.uuid4())
        wire.mode = lambda token: "lose"
        status, answer, _ = await call(api, "POST", path, json_body=body, headers=key_header(key))
        assert status == 503 and answer["error"] == "write_outcome_unknown", (path, answer)
        wire.mode = lambda token: "pass"
        status, created, _ = await call(api, "POST", path, json_body=body, headers=key_header(key))
        assert status == code, (path, created)
        status, again, _ = await call(api, "POST", path, json_body=body, headers=key_header(key))
        assert status == code and again == created, path


async def test_a_patch_retried_after_it_landed_is_already_applied(store: tuple[Api, Wire]) -> None:
    api, wire = store
    pid = (await api.create_profile())["id"]
    key = str(uuid.uuid4())
    wire.mode = lambda token: "lose"
    path = f"{PROFILES}/{pid}"
    status, body, _ = await call(
        api, "PATCH", path, json_body={"lastName": "Z"}, headers=key_header(key)
    )
    assert status == 503 and body["error"] == "write_outcome_unknown"
    wire.mode = lambda token: "pass"
    status, body, _ = await call(
        api, "PATCH", path, json_body={"lastName": "Z"}, headers=key_header(key)
    )
    # DynamoDB refuses another transaction under this request's token: applied, not twice
    assert status == 409 and body["error"] == "already_applied", body
    status, shown, _ = await call(api, "GET", f"{path}/unmask", params={"reason": "test"})
    assert status == 200 and shown[0]["document"]["lastName"] == "Z"


async def test_invalid_idempotency_key_is_400(store: tuple[Api, Wire]) -> None:
    api, wire = store
    status, body, _ = await call(
        api, "POST", PROFILES, json_body=unique_profile(), headers=key_header("a b")
    )
    assert status == 400 and body["error"] == "invalid_idempotency_key"
    assert wire.tokens == []


async def test_erasure_deletes_the_subjects_idempotency_records(
    store: tuple[Api, Wire], ddb: Any, table: str
) -> None:
    api, _ = store
    doc = unique_profile()
    status, profile, _ = await call(
        api, "POST", PROFILES, json_body=doc, headers=key_header("p-key")
    )
    assert status == 201
    pid = profile["id"]
    for path, body in [
        (f"{PROFILES}/{pid}/addresses", ADDRESS),
        (f"{PROFILES}/{pid}/purchase-info", PURCHASE_INFO),
        (f"{BASE}/prospects", {**PROSPECT, "email": doc["email"]}),
    ]:
        status, _, _ = await call(api, "POST", path, json_body=body, headers=key_header("k"))
        assert status in {200, 201}
    bystander = unique_profile()
    status, _, _ = await call(
        api, "POST", PROFILES, json_body=bystander, headers=key_header("b-key")
    )
    assert status == 201

    def records(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [i for i in items if "#IDEM#" in i["pk"]["S"]]

    assert len(records(await scan_all(ddb, table))) == 5
    status, erased, _ = await call(
        api,
        "POST",
        ERASE,
        params={"an": "acme"},
        json_body={"email": doc["email"]},
        roles=frozenset({"erase"}),
    )
    assert status == 200 and erased["status"] == "Completed", erased
    [left] = records(await scan_all(ddb, table))  # the bystander's
    assert left["targetPk"]["S"] != f"A#acme#P#{pid}"
    # the erased subject's key no longer answers the erased profile, nor stores it again:
    # DynamoDB still knows the token (10 minutes), and then the email is suppressed
    status, answer, _ = await call(
        api, "POST", PROFILES, json_body=doc, headers=key_header("p-key")
    )
    assert status == 409 and answer["error"] in {"already_applied", "subject_suppressed"}
    assert await profiles_with_email(api, doc["email"]) == []
