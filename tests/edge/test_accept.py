"""``BatchAcceptSite``: a burst of waiting connections is accepted in one go, not one per
event-loop iteration (libuv's behaviour since 1.45, hence uvloop's ``create_server``)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web

from edge_router.wire import BatchAcceptSite

from .conftest import count_calls, wait_until

N = 200


async def _ok(_request: web.BaseRequest) -> web.Response:
    return web.Response(text="ok")


async def test_a_burst_is_accepted_in_one_batch_and_served(monkeypatch: pytest.MonkeyPatch) -> None:
    callbacks = count_calls(monkeypatch, BatchAcceptSite, "_accept")
    server = web.Server(_ok)
    runner = web.ServerRunner(server)
    await runner.setup()
    site = BatchAcceptSite(runner, "127.0.0.1", 0, backlog=512)
    await site.start()
    port = site.port
    clients: list[socket.socket] = []
    try:
        # The kernel completes every handshake while this coroutine holds the loop: all N
        # connections are waiting in the listen queue when the loop next polls.
        for _ in range(N):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        await wait_until(lambda: len(server.connections) == N)
        assert len(callbacks) <= 2, f"{N} connections took {len(callbacks)} accept callbacks"
        streams = [await asyncio.open_connection(sock=c) for c in clients]
        for _reader, writer in streams:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = await asyncio.wait_for(
            asyncio.gather(*(reader.readuntil(b"ok") for reader, _ in streams)), 10
        )
        assert all(a.startswith(b"HTTP/1.1 200 ") for a in answers)
        for _reader, writer in streams:
            writer.close()
    finally:
        await runner.cleanup()
        for c in clients:
            c.close()
    with pytest.raises(OSError):  # stopped: the listening socket is closed
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
