"""Fixtures for PITR tests: moto's server (DynamoDB Local has no PITR API), one per module."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from residency_contract.tables import PK_SK_KEYS

REGION = "eu-west-1"
FAST = AioConfig(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1})


@pytest.fixture
async def moto_ddb(moto_endpoint: str) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "dynamodb", region_name=REGION, endpoint_url=moto_endpoint, config=FAST
    ) as client:
        yield client


async def create_table(client: Any, name: str | None = None) -> str:
    name = name or f"profiles-{uuid.uuid4().hex[:10]}"
    await client.create_table(
        TableName=name,
        **PK_SK_KEYS,
        BillingMode="PAY_PER_REQUEST",
    )
    return name


@pytest.fixture
async def moto_table(moto_ddb: Any) -> str:
    return await create_table(moto_ddb)
