"""Writes with a definite outcome (issue 20): tokens, re-sends, ``write_outcome_unknown``, replays.

Tiers: the token derivation and the error classification are plain tables; everything else runs
the store against DynamoDB Local with its ``transact_write_items`` wrapped (``Wire``) so that a
send can be made for real and its answer then lost (a read timeout after the write landed), or
refused before it leaves (nothing reached DynamoDB). The wrapper records every token sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import botocore.exceptions
import pytest
from aiobotocore.session import get_session
from aiohttp.test_utils import TestClient
from botocore.exceptions import ClientError
from multidict import CIMultiDict

from edge_router.headers import request_id, upstream_request_items
from profile_store import idempotency
from profile_store.app import REPOSITORY, create_app
from profile_store.config import ConfigError, StoreSettings
from profile_store.errors import (
    AlreadyApplied,
    BadRequest,
    ConditionFailed,
    StorageFailure,
    StorageUnavailable,
    from_botocore,
)
from profile_store.provisioning import create_table
from residency_dev import dynamodb_local

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

ERASE = "/api/user-rights/createAndProcessDeleteUserData"
PROFILES = f"{BASE}/profiles"
BOUND_S = 30.0  # no request of these tests may take longer


# ---- pure tables ----------------------------------------------------------------------------


def _intent(**over: Any) -> idempotency.WriteIntent:
    args: dict[str, Any] = {
        "account": "acme",
        "operation": "CreateClientProfile",
        "path": PROFILES,
        "query": (),
        "key": "k-1",
        "request_id": "rid-1",
        **over,
    }
    return idempotency.intent(**args)


def _token(body: bytes = b'{"a":1}', **over: Any) -> str:
    intent = _intent(**over)
    intent.bind_body(body, json.loads(body))
    return intent.next_token()


BASELINE = _token()


@pytest.mark.parametrize(
    ("case", "same"),
    [
        ({}, True),
        ({"request_id": "another-request-id"}, True),  # the key wins over the request id
        ({"key": "k-2"}, False),
        ({"account": "other"}, False),
        ({"operation": "UpdateClientProfile"}, False),
        ({"path": f"{PROFILES}/x"}, False),
        ({"body": b'{"a":2}'}, False),
        ({"body": b'{"a": 1}'}, False),  # the token covers the bytes; the record, the JSON
    ],
)
def test_token_is_derived_from_the_request(case: dict[str, Any], same: bool) -> None:
    assert (_token(**case) == BASELINE) is same


def test_token_shape_and_per_transaction_counter() -> None:
    intent = _intent()
    intent.bind_body(b"{}", {})
    first, second = intent.next_token(), intent.next_token()
    assert len(first) == len(second) == 36  # DynamoDB's maximum
    assert first[:32] == second[:32] and first != second
    without_key = _intent(key=None)
    assert without_key.key_hash is None
    assert _intent(key=None).next_token() == _intent(key=None).next_token()  # request id
    assert _intent(key=None, request_id="r2").next_token() != without_key.next_token()


def test_record_digest_is_canonical_and_covers_the_query() -> None:
    a, b = _intent(), _intent()
    a.bind_body(b'{"x":1,"y":[1,2]}', {"x": 1, "y": [1, 2]})
    b.bind_body(b'{"y": [1, 2], "x": 1}', {"y": [1, 2], "x": 1})
    assert a.request_digest() == b.request_digest()
    c = _intent(query=(("ttl", "3"),))
    c.bind_body(b'{"x":1,"y":[1,2]}', {"x": 1, "y": [1, 2]})
    assert c.request_digest() != a.request_digest()


@pytest.mark.parametrize("raw", ["", " ", "x" * 256, "é", "a b"])
def test_bad_idempotency_keys_are_refused(raw: str) -> None:
    with pytest.raises(BadRequest):
        idempotency.parse_key(raw)


def test_the_edge_forwards_the_token_sources() -> None:
    incoming = CIMultiDict({"Host": "acme.localhost", "Idempotency-Key": "k-1"})
    items = upstream_request_items(
        incoming,
        request_id=request_id("client-rid-0001"),
        peer=None,
        scheme="http",
        via="edge",
        assertion="a",
    )
    assert ("Idempotency-Key", "k-1") in items and ("X-Request-Id", "client-rid-0001") in items


def test_write_settings_are_read_and_checked() -> None:
    env = {
        "PROFILE_STORE_REGION": "eu-west-1",
        "PROFILE_STORE_TABLE": "profiles",
        "PROFILE_STORE_ASSERTION_SECRET": "s" * 32,
        "PROFILE_STORE_LOCAL_MASTER_KEY_FILE": "/dev/null",
        "PROFILE_STORE_WRITE_ATTEMPTS": "2",
        "PROFILE_STORE_WRITE_BUDGET_S": "1.5",
    }
    settings = StoreSettings.from_env(env)
    assert (settings.write_attempts, settings.write_budget_s) == (2, 1.5)
    assert settings.idempotency_ttl_s == 86400
    with pytest.raises(ConfigError, match="PROFILE_STORE_IDEMPOTENCY_TTL_S"):
        StoreSettings.from_env({**env, "PROFILE_STORE_IDEMPOTENCY_TTL_S": "60"})


def _client_error(code: str, **extra: Any) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": ""}, **extra}, "TransactWriteItems")


@pytest.mark.parametrize(
    ("exc", "kind", "maybe_applied"),
    [
        (botocore.exceptions.ReadTimeoutError(endpoint_url="u"), StorageUnavailable, True),
        (botocore.exceptions.ConnectionClosedError(endpoint_url="u"), StorageUnavailable, True),
        (aiohttp.ServerDisconnectedError(), StorageUnavailable, True),
        (_client_error("InternalServerError"), StorageUnavailable, True),
        (_client_error("TransactionInProgressException"), StorageUnavailable, True),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="u"), StorageUnavailable, False),
        (botocore.exceptions.ConnectTimeoutError(endpoint_url="u"), StorageUnavailable, False),
        (_client_error("ThrottlingException"), StorageUnavailable, False),
        (_client_error("ProvisionedThroughputExceededException"), StorageUnavailable, False),
        (
            _client_error("TransactionCanceledException", CancellationReasons=[{"Code": "None"}]),
            StorageFailure,
            None,
        ),
        (_client_error("IdempotentParameterMismatchException"), AlreadyApplied, None),
        (_client_error("ConditionalCheckFailedException"), ConditionFailed, None),
    ],
)
def test_from_botocore_says_whether_a_write_may_have_landed(
    exc: BaseException, kind: type, maybe_applied: bool | None
) -> None:
    mapped = from_botocore(exc, call="transact_write_items")
    assert type(mapped) is kind
    if maybe_applied is not None:
        assert isinstance(mapped, StorageUnavailable) and mapped.maybe_applied is maybe_applied


# ---- the store on DynamoDB Local, its transactions wrapped ---------------------------------

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


async def call(api: Api, *args: Any, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
    return await asyncio.wait_for(api.call(*args, **kwargs), BOUND_S)


def key_header(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def profiles_with_email(api: Api, email: str) -> list[str]:
    status, body, _ = await call(
        api, "GET", f"{PROFILES}/{email}", params={"alternativeKey": "email"}
    )
    assert status in {200, 404}, body
    return [] if status == 404 else [p["id"] for p in body]


def current_profiles(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in items if i["sk"]["S"] == "CUR" and i["pk"]["S"].startswith("A#acme#P#")]


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


# ---- a real freeze: DynamoDB Local stopped (SIGSTOP) while the creates are in flight -------


@pytest.fixture
def private_ddb() -> Iterator[dynamodb_local.DynamoDBLocal]:
    """An emulator of this test's own: freezing the session's would stall other tests."""
    server = dynamodb_local.start(timeout=90)
    try:
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


async def test_frozen_dynamodb_every_unanswered_create_is_returned_by_its_retry(
    aiohttp_client: Any, private_ddb: dynamodb_local.DynamoDBLocal, master_key_file: Path
) -> None:
    table = f"profiles-{uuid.uuid4().hex[:12]}"
    async with get_session().create_client(
        "dynamodb", region_name="eu-west-1", endpoint_url=private_ddb.endpoint
    ) as ddb:
        await create_table(ddb, table, wait_s=30)
    settings = make_settings(
        private_ddb.endpoint,
        table,
        master_key_file,
        ddb_connect_timeout_s=0.5,
        ddb_read_timeout_s=0.5,
        ddb_max_attempts=1,
        write_attempts=3,
        write_budget_s=2.0,
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    api = Api(client)
    await api.create_profile()  # the account's salt exists and is cached
    repo = client.server.app[REPOSITORY]
    real = repo.client.transact_write_items
    n = 4
    arrived = asyncio.Event()
    sends: list[tuple[str, str]] = []  # (token, the record's pk) of every send

    async def freeze_when_all_arrived(**kwargs: Any) -> Any:
        record = next(
            e["Put"]["Item"]["pk"]["S"]
            for e in kwargs["TransactItems"]
            if "#IDEM#" in e.get("Put", {}).get("Item", {}).get("pk", {}).get("S", "")
        )
        sends.append((kwargs["ClientRequestToken"], record))
        if len(sends) == n:
            os.kill(private_ddb.process.pid, signal.SIGSTOP)
            arrived.set()
        await asyncio.wait_for(arrived.wait(), BOUND_S)
        return await real(**kwargs)  # reaches the frozen process's socket, not its code

    repo.client.transact_write_items = freeze_when_all_arrived
    docs = [unique_profile() for _ in range(n)]
    keys = [str(uuid.uuid4()) for _ in docs]

    def creates() -> Awaitable[list[tuple[int, Any, dict[str, str]]]]:
        return asyncio.gather(
            *(
                call(api, "POST", PROFILES, json_body=doc, headers=key_header(key))
                for doc, key in zip(docs, keys, strict=True)
            )
        )

    try:
        first = await creates()
    finally:
        os.kill(private_ddb.process.pid, signal.SIGCONT)
    for status, body, headers in first:
        assert status == 503 and body["error"] == "write_outcome_unknown", body
        assert headers["Retry-After"] == "1"
    # every send of one request carried that request's one token
    by_record: dict[str, set[str]] = {}
    for token, record in sends:
        by_record.setdefault(record, set()).add(token)
    assert len(by_record) == n and all(len(t) == 1 for t in by_record.values())
    assert len(sends) > n  # the store did re-send while frozen

    repo.client.transact_write_items = real
    retried = await creates()
    for (status, body, _), doc in zip(retried, docs, strict=True):
        assert status == 201, body  # never 409
        assert body["document"] == doc
        assert await profiles_with_email(api, doc["email"]) == [body["id"]]
    async with get_session().create_client(
        "dynamodb", region_name="eu-west-1", endpoint_url=private_ddb.endpoint
    ) as ddb:
        assert len(current_profiles(await scan_all(ddb, table))) == n + 1
