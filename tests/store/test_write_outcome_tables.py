"""Writes with a definite outcome (issue 20), the plain tables: how a write's token is derived
from the request (``Idempotency-Key``, else the request id) and what it covers, which keys are
refused, what the edge forwards for it, the write settings, and how ``from_botocore`` says
whether a failed transaction may have landed.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import botocore.exceptions
import pytest
from botocore.exceptions import ClientError
from multidict import CIMultiDict

from edge_router.headers import request_id, upstream_request_items
from profile_store import idempotency
from profile_store.config import ConfigError, StoreSettings
from profile_store.errors import (
    AlreadyApplied,
    BadRequest,
    ConditionFailed,
    StorageFailure,
    StorageUnavailable,
    from_botocore,
)

from .write_outcome import PROFILES


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
