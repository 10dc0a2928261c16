"""Session-wide fixtures: a real DynamoDB Local, clean environment, assertion minting.

Tiers (see STYLE.md): pure decision tables need none of these; component tests start real
aiohttp servers; end-to-end tests use ``dynamodb_local`` (Amazon's emulator, started once per
session on a free port and stopped at the end).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from profile_store import dynamodb_local


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's shell settings must never leak into a test.
    for name in list(os.environ):
        if name.startswith(("PROFILE_STORE_", "EDGE_", "AWS_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def dynamodb_local_server() -> Iterator[dynamodb_local.DynamoDBLocal]:
    server = dynamodb_local.start(timeout=90)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ddb_endpoint(dynamodb_local_server: dynamodb_local.DynamoDBLocal) -> str:
    return dynamodb_local_server.endpoint
