"""Writes with a definite outcome (issue 20) under a real freeze: DynamoDB Local stopped
(SIGSTOP) while concurrent creates are in flight. Every create is answered
``write_outcome_unknown``, every send of one request carries that request's one token, and each
retry with its ``Idempotency-Key`` returns the profile that landed (never a 409).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session
from aiohttp.test_utils import TestClient

from profile_store.app import REPOSITORY, create_app
from profile_store.provisioning import create_table
from residency_dev import dynamodb_local

from .conftest import Api, make_settings, scan_all, unique_profile
from .write_outcome import (
    BOUND_S,
    PROFILES,
    call,
    current_profiles,
    key_header,
    profiles_with_email,
)


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
