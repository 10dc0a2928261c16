"""The component tests again, against the production listener (``wire.EdgeRunner``).

``web_front.handle`` (aiohttp.web) and ``wire.EdgeProtocol`` (aiohttp's C parser on a bare
protocol) run the same pipeline; every test of the ``test_component_*`` modules is collected
here again, unchanged, with a ``build`` fixture that serves the edge through ``EdgeRunner``
instead of aiohttp's ``AppRunner``. Below them, what only the raw listener does.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestClient

from edge_router.admin import create_admin_app
from edge_router.app import STATE, create_app
from edge_router.wire import EdgeRunner

from .conftest import (
    EU_KEY,
    FakeRegistry,
    FakeStore,
    Layout,
    P,
    Stack,
    auth,
    make_settings,
    serve_layout,
    wait_until,
)

# Re-collect every component test here, with this module's ``build``.
from .test_component_admission import *  # noqa: F403
from .test_component_failover import *  # noqa: F403
from .test_component_metrics import *  # noqa: F403
from .test_component_proxy import *  # noqa: F403
from .test_component_registry_cache import *  # noqa: F403


class EdgeTestServer(BaseTestServer):
    """An ``aiohttp.test_utils`` server running an edge app behind the production listener."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app

    async def _make_runner(self, **kwargs: Any) -> EdgeRunner:
        return EdgeRunner(self.app, **kwargs)


@pytest.fixture
async def build(aiohttp_server, aiohttp_client, registry: FakeRegistry) -> AsyncIterator[Any]:  # type: ignore[no-untyped-def]
    """The component tests' ``build`` (``conftest``) with the edge served by ``EdgeRunner``."""
    clients: list[TestClient] = []

    async def make(layout: Layout | None = None, **over: Any) -> Stack:
        stores, servers, urls = await serve_layout(aiohttp_server, registry, layout)
        app = create_app(make_settings(urls, **over), registry_factory=registry.factory())
        edge = TestClient(EdgeTestServer(app), auto_decompress=False)
        await edge.start_server()
        clients.append(edge)
        admin = await aiohttp_client(create_admin_app(app))
        return Stack(edge, admin, app, stores, servers, registry)

    yield make
    for client in clients:
        await client.close()


# -- only the raw listener ---------------------------------------------------------------------


async def _raw(port: int, data: bytes, until: bytes = b"", timeout: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        got = b""
        while not until or until not in got:
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
            if not chunk:
                break
            got += chunk
        return got
    finally:
        writer.close()


def _req(path: str, extra: str = "", host: str = "acme.localhost") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nX-VTEX-API-AppKey: {EU_KEY.app_key}\r\n"
        f"X-VTEX-API-AppToken: {EU_KEY.token}\r\n{extra}\r\n"
    ).encode()


async def test_pipelined_requests_are_answered_in_order(build) -> None:  # type: ignore[no-untyped-def]
    st = await build({"eu-west-1": ["store"], "us-east-1": ["store"]})
    port = st.edge.server.port
    data = _req(f"{P}/profiles/first") + _req("/nope") + _req(f"{P}/profiles/third")
    got = await _raw(port, data + _req(f"{P}/profiles/last", "Connection: close\r\n"))
    statuses = [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", got)]
    assert statuses == [200, 404, 200, 200]
    order = [s.raw_path.rsplit("/", 1)[-1] for s in st.stores["eu-west-1"][0].seen]
    assert order == ["first", "third", "last"]


async def test_garbage_is_a_json_400_and_close(build) -> None:  # type: ignore[no-untyped-def]
    st = await build({"eu-west-1": ["store"], "us-east-1": ["store"]})
    got = await _raw(st.edge.server.port, b"BLAH\x00 / HTTP/1.1\r\n\r\n")
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"Connection: close" in head and b'"error":"bad_request"' in body


async def test_expect_continue_only_after_the_checks(build) -> None:  # type: ignore[no-untyped-def]
    st = await build({"eu-west-1": ["store"], "us-east-1": ["store"]})
    port = st.edge.server.port
    # refused before the body is wanted: no "100 Continue", a 401 and the connection closes
    head = (
        f"POST {P}/profiles HTTP/1.1\r\nHost: acme.localhost\r\nContent-Length: 2\r\n"
        "Expect: 100-continue\r\n\r\n"
    ).encode()
    got = await _raw(port, head)
    assert got.startswith(b"HTTP/1.1 401 ") and b"100 Continue" not in got
    # accepted: "100 Continue" first, then the body is forwarded
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            (
                f"POST {P}/profiles HTTP/1.1\r\nHost: acme.localhost\r\nContent-Length: 2\r\n"
                f"X-VTEX-API-AppKey: {EU_KEY.app_key}\r\nX-VTEX-API-AppToken: {EU_KEY.token}\r\n"
                "Expect: 100-continue\r\n\r\n"
            ).encode()
        )
        line = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert line.startswith(b"HTTP/1.1 100 Continue")
        writer.write(b"{}")
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert answer.startswith(b"HTTP/1.1 200 ")
    finally:
        writer.close()
    assert st.stores["eu-west-1"][0].seen[-1].body == b"{}"


async def test_http10_client_gets_one_answer_and_close(build) -> None:  # type: ignore[no-untyped-def]
    st = await build({"eu-west-1": ["store"], "us-east-1": ["store"]})
    got = await _raw(
        st.edge.server.port, _req(f"{P}/profiles/p1").replace(b"HTTP/1.1", b"HTTP/1.0")
    )
    assert got.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in got
    assert got.endswith(b"}")


async def test_large_streamed_answer_with_backpressure(build, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    big = b"x" * (3 * 1024 * 1024)

    async def chunked(request: web.Request) -> web.StreamResponse:
        if request.path == "/readyz":
            return web.Response()
        resp = web.StreamResponse()
        await resp.prepare(request)  # no length: chunked from the store
        for i in range(0, len(big), 65536):
            await resp.write(big[i : i + 65536])
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", chunked)
    server = await aiohttp_server(app)
    st = await build({"eu-west-1": [f"http://127.0.0.1:{server.port}"], "us-east-1": ["store"]})
    resp = await st.get(f"{P}/profiles/big?an=acme")
    assert resp.status == 200 and resp.headers["Transfer-Encoding"] == "chunked"
    total = 0
    async for chunk in resp.content.iter_chunked(8192):
        total += len(chunk)
        if total < 256 * 1024:
            await asyncio.sleep(0.001)  # a slow reader first: the edge must not buffer it all
    assert total == len(big)
    # the socket to the store went back to the pool and is reused
    resp = await st.get(f"{P}/profiles/again?an=acme")
    assert resp.status == 200 and len(await resp.read()) == len(big)
    pool = st.app[STATE].pools.by_region["eu-west-1"][0].pool
    assert pool.open == 1


async def test_declared_body_streamed_to_store(build) -> None:  # type: ignore[no-untyped-def]
    st = await build({"eu-west-1": ["store"], "us-east-1": ["store"]}, buffer_body_bytes=1024)
    body = bytes(range(256)) * 200  # 51,200 bytes: over the buffer, under the 256 KiB limit
    resp = await st.edge.post(
        f"{P}/profiles?an=acme", data=body, headers={**auth(EU_KEY), "Content-Type": "x/y"}
    )
    assert resp.status == 200
    assert st.stores["eu-west-1"][0].seen[-1].body == body


async def _read_answers(reader: asyncio.StreamReader, n: int) -> bytes:
    got = b""
    while len(re.findall(rb"HTTP/1\.1 \d{3} ", got)) < n or not got.endswith(b"}"):
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        if not chunk:
            break
        got += chunk
    return got


async def test_a_request_arriving_during_an_exchange_waits_its_turn(build) -> None:  # type: ignore[no-untyped-def]
    slow = FakeStore("eu-west-1", "slow", delay=0.3)
    st = await build({"eu-west-1": [slow], "us-east-1": ["store"]})
    assert (await st.get(f"{P}/profiles/warm?an=acme")).status == 200
    reader, writer = await asyncio.open_connection("127.0.0.1", st.edge.server.port)
    try:
        writer.write(_req(f"{P}/profiles/first"))
        await wait_until(lambda: slow.proxied == 2)  # the first is with the store
        writer.write(_req(f"{P}/profiles/second"))
        got = await _read_answers(reader, 2)
    finally:
        writer.close()
    assert [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", got)] == [200, 200]
    assert got.index(b"/first") < got.index(b"/second")
    assert [s.raw_path.rsplit("/", 1)[-1] for s in slow.seen] == ["warm?an=acme", "first", "second"]


async def test_a_retryable_answer_is_retried_in_region(build) -> None:  # type: ignore[no-untyped-def]
    bad = FakeStore("eu-west-1", "bad", status=503)
    good = FakeStore("eu-west-1", "good")
    st = await build({"eu-west-1": [bad, good], "us-east-1": ["store"]})
    for _ in range(4):  # warm the registry and a socket to each instance
        await st.get(f"{P}/profiles/warm?an=acme")
    statuses = [(await st.get(f"{P}/profiles/x?an=acme")).status for _ in range(4)]
    assert statuses == [200] * 4  # the 503s were retried on the other instance
    assert st.stores["us-east-1"][0].proxied == 0  # never another region
