"""The per-instance connection pool: cap, order of waiters, hand-over, idle reuse."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web

from edge_router.config import Timeouts
from edge_router.errors import ConnectFailed, PoolTimeout
from edge_router.wire import ConnectionPool


async def _pool(aiohttp_server, limit: int) -> ConnectionPool:  # type: ignore[no-untyped-def]
    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    server = await aiohttp_server(app)
    return ConnectionPool(
        "127.0.0.1", server.port, limit=limit, timeouts=Timeouts(connect=1.0, idle=30.0)
    )


async def test_cap_and_waiters_served_in_order(aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    pool = await _pool(aiohttp_server, limit=2)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    a = await pool.acquire(deadline)
    b = await pool.acquire(deadline)
    assert pool.open == 2 and pool.take_idle() is None
    order: list[int] = []

    async def wait(i: int) -> None:
        conn = await pool.acquire(deadline)
        order.append(i)
        await asyncio.sleep(0)
        pool.release(conn, True)

    waiters = [asyncio.ensure_future(wait(i)) for i in range(5)]
    await asyncio.sleep(0.01)
    assert order == []
    pool.release(a, True)  # handed to waiter 0, never parked while others wait
    assert pool.take_idle() is None  # a newcomer cannot jump the queue
    pool.release(b, True)
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2, 3, 4]
    assert pool.open == 2  # no socket beyond the cap was ever opened
    assert pool.take_idle() is not None  # and once nobody waits, idle sockets are reused
    pool.close()


async def test_wait_times_out_and_dead_instance_is_connect_failed(aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    pool = await _pool(aiohttp_server, limit=1)
    loop = asyncio.get_running_loop()
    held = await pool.acquire(loop.time() + 5)
    with pytest.raises(PoolTimeout):
        await pool.acquire(loop.time() + 0.05)
    pool.release(held, True)
    assert await pool.acquire(loop.time() + 5) is held
    pool.close()
    dead = ConnectionPool("127.0.0.1", 1, limit=1, timeouts=Timeouts(connect=0.5, idle=1.0))
    with pytest.raises(ConnectFailed):
        await dead.acquire(loop.time() + 1)
    assert dead.open == 0


async def test_deadline_spent_while_connecting_is_a_timeout_not_a_dead_instance() -> None:
    """A request whose own deadline ends mid-connect (say, after waiting for a slot) must not
    be reported as a connect failure: the proxy ejects instances on those."""
    loop = asyncio.get_running_loop()
    # A listener that never accepts, its queue filled: the kernel drops further SYNs, so a
    # connect to it hangs (as to an overloaded host) instead of failing fast.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(s)
        pool = ConnectionPool("127.0.0.1", port, limit=1, timeouts=Timeouts(connect=5.0, idle=1))
        with pytest.raises(PoolTimeout):
            await pool.acquire(loop.time() - 1)  # deadline already passed: no connect tried
        with pytest.raises(PoolTimeout):
            await pool.acquire(loop.time() + 0.2)  # the deadline, not connect_timeout, ends it
        assert pool.open == 0
        # with the connect timeout the shorter bound, the same hang is the instance's fault
        short = ConnectionPool("127.0.0.1", port, limit=1, timeouts=Timeouts(connect=0.2, idle=1))
        with pytest.raises(ConnectFailed):
            await short.acquire(loop.time() + 5)
    finally:
        for s in fillers:
            s.close()
        listener.close()
