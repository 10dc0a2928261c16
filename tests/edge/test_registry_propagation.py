"""Registry changes reach every edge worker within a second: measured on a real
``edge-router serve --workers 2`` against the registry on DynamoDB Local.

Both workers first serve the account (so each holds it in its cache, whose TTL here is 300 s:
the TTL cannot be what makes the change show). Then the registry CLI code revokes a key, and
later moves the account's home region. Each worker's admin view ``/registry/changes`` (the
admin port is shared through SO_REUSEPORT, so fresh connections reach both; each answer carries
its pid) says when it applied which change id, and the lag from the write to its fresh record
in that worker's cache. The test asserts that both workers applied each change, within the
bound, and that requests on fresh connections (spread over both workers by the kernel) see the
change: the revoked key is refused, the moved account is served by the new region.

The bound: 1 s (the issue's) plus ``TOLERANCE_S``. A change waits at most one poll interval
(0.25 s) plus one change-log query and one re-read (a few ms each on an idle machine). On the
shared 2-core test machine two workers, DynamoDB Local's JVM, this test and other suites run at
once; one second of slack absorbs the scheduling delays and JVM pauses seen there without
hiding a poller that waits for the TTL (300 s) or polls every few seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest

from edge_router.registry import RegistryTable
from residency_contract.tables import PK_SK_KEYS
from residency_dev.dynamodb_local import free_port
from residency_ops.__main__ import main as ops_main

from .conftest import SECRETS, FakeStore, wait_until

pytestmark = pytest.mark.slow

P = "/api/storage/profile-system"
BOUND_S = 1.0
TOLERANCE_S = 1.0
REVOKED = ("vtexappkey-shop-REVOKED", "token-revoked-0000000000")
KEPT = ("vtexappkey-shop-KEPT", "token-kept-00000000000000")


def _cli(*args: str) -> None:
    assert ops_main(["registry", *args]) == 0, args


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    # The CLI runs its own event loop (asyncio.run): give it a thread of its own.
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


class Workers:
    """Fresh connections to the edge's ports: the kernel spreads them over the workers."""

    def __init__(self, http: aiohttp.ClientSession, port: int, admin: int) -> None:
        self.http = http
        self.port = port
        self.admin = admin

    async def status(self) -> dict[str, Any] | None:
        try:
            async with self.http.get(f"http://127.0.0.1:{self.admin}/registry/changes") as r:
                return await r.json() if r.status == 200 else None  # type: ignore[no-any-return]
        except aiohttp.ClientError:
            return None

    async def statuses(self, want: int = 2, tries: int = 12) -> dict[int, dict[str, Any]]:
        """The latest status of each worker pid answering within ``tries`` connections."""
        seen: dict[int, dict[str, Any]] = {}
        for _ in range(tries):
            st = await self.status()
            if st is not None:
                seen[st["pid"]] = st
            if len(seen) >= want:
                break
        return seen

    async def get(self, key: tuple[str, str]) -> tuple[int, str | None]:
        headers = {"X-VTEX-API-AppKey": key[0], "X-VTEX-API-AppToken": key[1]}
        url = f"http://127.0.0.1:{self.port}{P}/profiles/p1?an=shop"
        async with self.http.get(url, headers=headers) as r:
            await r.read()
            return r.status, r.headers.get("X-Data-Region")


async def _applied_by_both(
    workers: Workers, change_id: str, timeout: float
) -> dict[int, dict[str, Any]]:
    """pid -> the applied entry for ``change_id``, once both workers report it."""
    found: dict[int, dict[str, Any]] = {}

    async def both() -> bool:
        for pid, st in (await workers.statuses()).items():
            for applied in st["recent"]:
                if applied["id"] == change_id:
                    found[pid] = applied
        return len(found) >= 2

    await wait_until(both, timeout=timeout)
    return found


async def _change_id(reg: RegistryTable, kind: str) -> str:
    changes = await reg.changes_since("0")
    return next(c.id for c in reversed(changes) if c.kind == kind and c.account == "shop")


async def test_a_revocation_and_a_flip_reach_both_workers_within_the_bound(
    aiohttp_server: Any,
    ddb_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    stores = {r: FakeStore(r, f"{r}-0") for r in ("eu-west-1", "us-east-1")}
    servers = {r: await aiohttp_server(s.app()) for r, s in stores.items()}
    tables = {r: f"profiles-{r}-{uuid.uuid4().hex[:8]}" for r in stores}
    for region, table in tables.items():  # empty: set-region checks there is no data yet
        boto3.client("dynamodb", endpoint_url=ddb_endpoint, region_name=region).create_table(
            TableName=table, BillingMode="PAY_PER_REQUEST", **PK_SK_KEYS
        )
    regions = {
        r: {
            "instances": [f"http://127.0.0.1:{servers[r].port}"],
            "table": tables[r],
            "assertion_secret": SECRETS[r].decode(),
            "dynamodb_endpoint": ddb_endpoint,
        }
        for r in stores
    }
    port, admin = free_port(), free_port()
    registry_table = f"registry-{uuid.uuid4().hex[:10]}"
    for name, value in {
        "EDGE_HOST": "127.0.0.1",
        "EDGE_PORT": str(port),
        "EDGE_ADMIN_HOST": "127.0.0.1",
        "EDGE_ADMIN_PORT": str(admin),
        "EDGE_REGISTRY_ENDPOINT": ddb_endpoint,
        "EDGE_REGISTRY_TABLE": registry_table,
        "EDGE_REGIONS_JSON": json.dumps(regions),
        "EDGE_CACHE_TTL_S": "300",  # the TTL cannot be what makes a change show
        "EDGE_ACCESS_LOG": "false",
        "EDGE_SHUTDOWN_TIMEOUT_S": "2",
    }.items():
        monkeypatch.setenv(name, value)
    await _in_thread(_cli, "create-table")
    await _in_thread(_cli, "create-account", "shop", "--region", "eu-west-1")
    for key, token in (REVOKED, KEPT):
        await _in_thread(
            _cli, "create-key", "shop", "--roles", "read", "--app-key", key, "--app-token", token
        )

    log = (tmp_path / "edge.log").open("wb")
    edge = subprocess.Popen(
        [sys.executable, "-m", "edge_router", "serve", "--workers", "2"],
        env=dict(os.environ),
        stdout=log,
        stderr=log,
    )
    try:
        connector = aiohttp.TCPConnector(force_close=True)  # one connection per request
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            RegistryTable(table=registry_table, endpoint=ddb_endpoint, region="us-east-1") as reg,
        ):
            workers = Workers(http, port, admin)

            async def both_hold_the_account() -> bool:
                for _ in range(4):
                    try:
                        if await workers.get(REVOKED) != (200, "eu-west-1"):
                            return False
                    except aiohttp.ClientError:
                        return False  # still starting
                seen = await workers.statuses()
                return len(seen) == 2 and all(s["cached_accounts"] >= 1 for s in seen.values())

            await wait_until(both_hold_the_account, timeout=60)

            # -- a key revocation -------------------------------------------------------
            await _in_thread(_cli, "revoke-key", "shop", REVOKED[0])
            written = time.monotonic()
            revoke = await _change_id(reg, "revoke_key")
            revoked_by = await _applied_by_both(workers, revoke, timeout=15)
            observed = time.monotonic() - written
            for _ in range(20):  # whichever worker answers, the key is refused
                assert (await workers.get(REVOKED))[0] == 401
                assert (await workers.get(KEPT))[0] == 200

            # -- the account's home region flips --------------------------------------------
            before = stores["us-east-1"].proxied
            await _in_thread(_cli, "set-region", "shop", "us-east-1")
            written = time.monotonic()
            flip = await _change_id(reg, "set_region")
            flipped_by = await _applied_by_both(workers, flip, timeout=15)
            observed_flip = time.monotonic() - written
            for _ in range(20):
                assert await workers.get(KEPT) == (200, "us-east-1")
            assert stores["us-east-1"].proxied == before + 20

        lags = {
            "revoke_key": {pid: a["lag_s"] for pid, a in revoked_by.items()},
            "set_region": {pid: a["lag_s"] for pid, a in flipped_by.items()},
        }
        print(
            f"\nregistry change propagation, 2 workers (write -> fresh record in each worker's "
            f"cache): {json.dumps(lags)}; seen by the test through the admin port after "
            f"{observed:.3f}s (revoke) and {observed_flip:.3f}s (flip) from the CLI's return"
        )
        for kind, by_pid in lags.items():
            assert len(by_pid) == 2
            for applied in (revoked_by, flipped_by):
                assert all(a["reloaded"] for a in applied.values())
            assert max(by_pid.values()) <= BOUND_S + TOLERANCE_S, (kind, by_pid)
        # Both workers stop cleanly: the pollers are cancelled, nothing is left running.
        edge.terminate()
        assert await _in_thread(edge.wait, 20) == 0
        assert b"Traceback" not in (tmp_path / "edge.log").read_bytes()
    finally:
        if edge.poll() is None:
            edge.terminate()
        try:
            edge.wait(20)
        except subprocess.TimeoutExpired:
            edge.kill()
            edge.wait(10)
        log.close()
