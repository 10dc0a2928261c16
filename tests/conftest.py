"""Session-wide fixtures: a real DynamoDB Local, clean environment, assertion minting.

Tiers (see STYLE.md): pure decision tables need none of these; component tests start real
aiohttp servers; end-to-end tests use ``dynamodb_local`` (Amazon's emulator, started once per
session on a free port and stopped at the end).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web_app

from residency_dev import dynamodb_local

# Fixtures of the account mover's tests (tests/move/test_mover_*.py), kept apart from the
# store-side ones in tests/move/conftest.py.
pytest_plugins = ["tests.move.conftest_mover"]


def pytest_addoption(parser: pytest.Parser) -> None:
    # Here, not in tests/reliability/conftest.py: options must be known before collection.
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="reliability suite: run more load, more concurrent writes and more fuzzing",
    )


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's shell settings must never leak into a test.
    for name in list(os.environ):
        if name.startswith(("PROFILE_STORE_", "EDGE_", "AWS_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(autouse=True)
def _release_applications() -> Iterator[None]:
    yield
    # aiohttp keeps the last 1024 (handler, apps) pairs it built middleware chains for in a
    # module-level lru_cache, and with them every Application (and its DynamoDB client,
    # botocore models, pools). One app per process in production; here one or more per test,
    # so the heap grew to ~4 million objects by the end of the suite and each full garbage
    # collection stopped the loop for up to 3.5 s: long enough to fire a 0.5 s connect
    # timeout in whatever test was running (an edge ejected its only store: a 503).
    cached = getattr(web_app, "_cached_build_middleware", None)
    if cached is not None:
        cached.cache_clear()


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


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """moto's server, only for APIs DynamoDB Local lacks (PITR) and for KMS."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    # start() waits without a bound; a helper thread lets us give up instead of hanging.
    starter = threading.Thread(target=server.start, daemon=True)
    starter.start()
    starter.join(30)
    if starter.is_alive():
        pytest.fail("moto server did not start within 30s")
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
