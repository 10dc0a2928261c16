"""The table's stream: made with the table, and added to a table that was made without one."""

from __future__ import annotations

import uuid
from typing import Any

from profile_store.provisioning import create_table, warn_without_stream
from residency_contract.tables import PK_SK_KEYS


async def _stream(ddb: Any, table: str) -> dict[str, Any]:
    described = (await ddb.describe_table(TableName=table))["Table"]
    return dict(described.get("StreamSpecification") or {})


async def test_create_table_adds_a_stream_to_an_existing_table(ddb: Any) -> None:
    name = f"profiles-{uuid.uuid4().hex[:12]}"
    await ddb.create_table(TableName=name, **PK_SK_KEYS, BillingMode="PAY_PER_REQUEST")
    assert not (await _stream(ddb, name)).get("StreamEnabled")
    done = await create_table(ddb, name, wait_s=30)
    assert (done["table"], done["stream"]) == ("exists", "enabled")
    assert await _stream(ddb, name) == {"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"}
    again = await create_table(ddb, name, wait_s=30)
    assert again["stream"] == "already-enabled"


async def test_a_new_table_has_its_stream(ddb: Any) -> None:
    name = f"profiles-{uuid.uuid4().hex[:12]}"
    done = await create_table(ddb, name, wait_s=30)
    assert (done["table"], done["stream"]) == ("created", "enabled")
    assert (await _stream(ddb, name))["StreamEnabled"] is True


async def test_a_store_on_a_table_without_a_stream_warns_at_start(ddb: Any) -> None:
    name = f"profiles-{uuid.uuid4().hex[:12]}"
    await ddb.create_table(TableName=name, **PK_SK_KEYS, BillingMode="PAY_PER_REQUEST")
    assert await warn_without_stream(ddb, name) is False
    await create_table(ddb, name, wait_s=30)
    assert await warn_without_stream(ddb, name) is True
