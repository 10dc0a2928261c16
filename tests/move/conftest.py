"""Move fixtures: two regions, each a store app on its own DynamoDB Local table (created by our
provisioning, with its stream) under its own local master key and assertion secret.

Built on the store tier's fixtures and helpers (``tests/store/conftest.py``: ``make_settings``,
``Api``, ``scan_all``); only what two regions need is added here.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session
from aiohttp.test_utils import TestClient

from profile_store.app import REPOSITORY, create_app
from profile_store.config import StoreSettings
from profile_store.key_providers import generate_local_master_key
from profile_store.provisioning import create_table
from profile_store.repository import Repository
from tests.store.conftest import (  # noqa: F401 (ddb: a fixture)
    ALL_ROLES,
    BASE,
    Api,
    ddb,
    make_settings,
    scan_all,
    unique_profile,
)

SOURCE = "us-east-1"
DEST = "eu-west-1"
ACCOUNT = "acme"
TRANSFER = "/_residency/transfer"
MOVE = frozenset({"move"})


@dataclass
class Region:
    name: str
    secret: bytes
    table: str
    ddb: Any  # a DynamoDB client of this region (DynamoDB Local keeps regions apart)
    settings: StoreSettings
    client: TestClient
    api: Api

    @property
    def repo(self) -> Repository:
        return self.client.server.app[REPOSITORY]

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any, dict[str, str]]:
        kw.setdefault("roles", ALL_ROLES)
        return await self.api.call(method, path, region=self.name, key=self.secret, **kw)

    async def create_profile(self, doc: dict[str, Any] | None = None) -> dict[str, Any]:
        status, body, _ = await self.call(
            "POST", f"{BASE}/profiles", json_body=doc or unique_profile()
        )
        assert status == 201, body
        return body  # type: ignore[no-any-return]

    async def move(
        self, path: str, body: Any = None, *, method: str = "POST", account: str = ACCOUNT
    ) -> tuple[int, Any, dict[str, str]]:
        """A transfer call signed as the mover signs it (role move)."""
        return await self.call(
            method, f"{TRANSFER}{path}", json_body=body, roles=MOVE, account=account
        )

    async def ok(self, path: str, body: Any = None, **kw: Any) -> Any:
        status, answer, _ = await self.move(path, body, **kw)
        assert status in {200, 201}, (path, status, answer)
        return answer

    async def items(self, account: str = ACCOUNT) -> list[dict[str, Any]]:
        """Every item of the account in this region's table (raw scan)."""
        prefix = f"A#{account}#"
        return [i for i in await scan_all(self.ddb, self.table) if i["pk"]["S"].startswith(prefix)]


StartRegion = Callable[..., Any]


@pytest.fixture
async def start_region(
    ddb_endpoint: str, tmp_path: Path, aiohttp_client: Any
) -> AsyncIterator[StartRegion]:
    """``await start_region(name, table=None, **settings)``: a store of region ``name``; with
    ``table`` a second instance on that region's table (same master key and secret)."""
    async with AsyncExitStack() as stack:
        made: dict[str, tuple[str, Any, Path]] = {}

        async def start(name: str, *, table: str | None = None, **overrides: Any) -> Region:
            if name not in made:
                ddb = await stack.enter_async_context(
                    get_session().create_client(
                        "dynamodb", region_name=name, endpoint_url=ddb_endpoint
                    )
                )
                new_table = f"profiles-{uuid.uuid4().hex[:12]}"
                await create_table(ddb, new_table, wait_s=30)
                (tmp_path / name).mkdir()
                made[name] = (new_table, ddb, generate_local_master_key(tmp_path / name / "mk"))
            table_name, ddb, key_file = made[name]
            assert table in {None, table_name}
            secret = f"test-secret-{name}-0123456789abcdef".encode()
            settings = make_settings(
                ddb_endpoint,
                table_name,
                key_file,
                region=name,
                assertion_secret=secret,
                instance_id=f"store-{name}-{uuid.uuid4().hex[:4]}",
                **overrides,
            )
            client: TestClient = await aiohttp_client(create_app(settings))
            return Region(name, secret, table_name, ddb, settings, client, Api(client))

        yield start


@pytest.fixture
async def source(start_region: StartRegion) -> Region:
    return await start_region(SOURCE)  # type: ignore[no-any-return]


@pytest.fixture
async def dest(start_region: StartRegion) -> Region:
    return await start_region(DEST)  # type: ignore[no-any-return]
