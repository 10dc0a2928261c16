"""Fixtures for the crypto tests: a local key provider, a moto server for KMS, and a fresh
data-key table on the session's DynamoDB Local for each test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from profile_store.crypto import DataKeyStore, EnvelopeCodec
from profile_store.key_providers import LocalKeyProvider, generate_local_master_key
from residency_contract.tables import PK_SK_KEYS

REGION = "eu-west-1"
FAST = AioConfig(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1})


@pytest.fixture
def master_key_file(tmp_path: Path) -> Path:
    return generate_local_master_key(tmp_path / "master.key")


@pytest.fixture
def local_provider(master_key_file: Path) -> LocalKeyProvider:
    return LocalKeyProvider(master_key_file)


def aws_client(service: str, endpoint: str) -> Any:
    """An aiobotocore client of ``service`` (an async context manager) at ``endpoint``, in
    ``REGION``, failing fast."""
    return get_session().create_client(
        service, region_name=REGION, endpoint_url=endpoint, config=FAST
    )


@pytest.fixture
async def ddb(ddb_endpoint: str) -> AsyncIterator[Any]:
    async with aws_client("dynamodb", ddb_endpoint) as client:
        yield client


@pytest.fixture
async def kms(moto_endpoint: str) -> AsyncIterator[Any]:
    """A KMS client of the moto server."""
    async with aws_client("kms", moto_endpoint) as client:
        yield client


@pytest.fixture
async def key_table(ddb: Any) -> AsyncIterator[str]:
    name = f"crypto-{uuid.uuid4().hex[:12]}"
    await ddb.create_table(
        TableName=name,
        **PK_SK_KEYS,
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        yield name
    finally:
        await ddb.delete_table(TableName=name)


@pytest.fixture
def store(ddb: Any, key_table: str, local_provider: LocalKeyProvider) -> DataKeyStore:
    return DataKeyStore(ddb, key_table, local_provider, region=REGION)


@pytest.fixture
def codec(store: DataKeyStore) -> EnvelopeCodec:
    return EnvelopeCodec(store)
