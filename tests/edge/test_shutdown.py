"""Graceful shutdown of a real `edge-router serve` process: on SIGTERM it stops accepting,
lets the request in flight finish, and exits within its bound."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from residency_dev.dynamodb_local import free_port

from .conftest import SECRETS, wait_until

pytestmark = pytest.mark.slow

P = "/api/storage/profile-system"
KEY, TOKEN = "vtexappkey-drain-TEST", "token-drain-0000000000"


def run_cli(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "residency_ops", "registry", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_sigterm_drains_in_flight_then_exits(
    aiohttp_server: Any, ddb_endpoint: str, tmp_path: Path
) -> None:
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def readyz(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def slow(_request: web.Request) -> web.Response:
        arrived.set()
        await asyncio.wait_for(release.wait(), 10)
        return web.json_response([{"id": "p1"}])

    upstream = web.Application()
    upstream.router.add_get("/readyz", readyz)
    upstream.router.add_route("*", "/{tail:.*}", slow)
    store = await aiohttp_server(upstream)

    port, admin = free_port(), free_port()
    regions = {
        "eu-west-1": {
            "instances": [f"http://127.0.0.1:{store.port}"],
            "table": "profiles-eu",
            "assertion_secret": SECRETS["eu-west-1"].decode(),
        }
    }
    env = {
        **os.environ,
        "EDGE_HOST": "127.0.0.1",
        "EDGE_PORT": str(port),
        "EDGE_ADMIN_HOST": "127.0.0.1",
        "EDGE_ADMIN_PORT": str(admin),
        "EDGE_REGISTRY_ENDPOINT": ddb_endpoint,
        "EDGE_REGISTRY_TABLE": f"registry-{uuid.uuid4().hex[:10]}",
        "EDGE_REGIONS_JSON": json.dumps(regions),
        "EDGE_SHUTDOWN_TIMEOUT_S": "8",
    }
    run_cli(env, "create-table")
    run_cli(env, "create-account", "drain", "--region", "eu-west-1")
    run_cli(env, "create-key", "drain", "--roles", "read", "--app-key", KEY, "--app-token", TOKEN)

    log = (tmp_path / "edge.log").open("wb")
    edge = subprocess.Popen(
        [sys.executable, "-m", "edge_router", "serve"], env=env, stdout=log, stderr=log
    )
    try:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{admin}/readyz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(ready, timeout=30)
            headers = {"X-VTEX-API-AppKey": KEY, "X-VTEX-API-AppToken": TOKEN}
            url = f"http://127.0.0.1:{port}{P}/profiles/p1?an=drain"
            in_flight = asyncio.ensure_future(http.get(url, headers=headers))
            await asyncio.wait_for(arrived.wait(), 10)

            sent_at = time.monotonic()
            edge.send_signal(signal.SIGTERM)
            # stops accepting new connections while the request is still in flight
            await wait_until(lambda: not accepts(port), timeout=5)
            assert not in_flight.done()

            release.set()
            resp = await asyncio.wait_for(in_flight, 10)
            assert resp.status == 200
            assert resp.headers["X-Data-Region"] == "eu-west-1"
            assert await resp.json() == [{"id": "p1"}]
            resp.release()

        code = await asyncio.get_running_loop().run_in_executor(None, edge.wait, 15)
        assert code == 0
        assert time.monotonic() - sent_at < 8 + 5
    finally:
        if edge.poll() is None:
            edge.kill()
            edge.wait(10)
        log.close()
