"""The sockets to one store instance: capped, reused LIFO, waiters served in order.

* **per-upstream cap**: at most ``limit`` sockets per instance (open or being opened); a
  request that finds none free waits until one is, or until its deadline (``PoolTimeout``).
  Waiters are served strictly in order: a released socket is handed to the longest waiter,
  never taken by a newcomer, so under a burst no request starves (an earlier version let
  newcomers jump the queue: multi-second tails at 256 connections). A slow instance cannot
  take sockets from the others.
* **keep-alive**: a connection goes back to the pool only when its answer was read whole and
  neither side asked to close; idle ones are closed after ``Timeouts.idle`` (``close_idle``).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from ..config import Timeouts
from ..errors import ConnectFailed, ConnectTimedOut, PoolTimeout
from .connection import UpstreamConnection


class ConnectionPool:
    """Sockets to one instance: capped, reused LIFO (warm sockets first), waiters served FIFO."""

    __slots__ = (
        "_conns",
        "_idle",
        "_open",
        "_waiters",
        "host",
        "limit",
        "port",
        "timeouts",
    )

    def __init__(self, host: str, port: int, *, limit: int, timeouts: Timeouts) -> None:
        self.host = host
        self.port = port
        self.limit = limit
        self.timeouts = timeouts  # connect, idle; read for its connections
        self._idle: list[UpstreamConnection] = []
        self._conns: set[UpstreamConnection] = set()
        self._open = 0  # sockets open or being opened (what the cap counts)
        self._waiters: collections.deque[asyncio.Future[UpstreamConnection | None]] = (
            collections.deque()
        )

    @property
    def open(self) -> int:
        return self._open

    def take_idle(self) -> UpstreamConnection | None:
        """A warm idle socket, without awaiting (the common case), or None. Never while
        others wait: released sockets are handed to waiters in order, so none starves."""
        return None if self._waiters else self._pop_idle()

    def _pop_idle(self) -> UpstreamConnection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def acquire(self, deadline: float, *, fresh: bool = False) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        woken = False  # once woken we are first in line (and re-wait at the front)
        while True:
            if woken or not self._waiters:
                if not fresh:
                    conn = self._pop_idle()
                    if conn is not None:
                        return conn
                elif self._idle and self._open >= self.limit:
                    self._idle.pop(0).close()  # make room for the new socket asked for
                if self._open < self.limit:
                    self._open += 1
                    try:
                        conn = await self._connect(loop, deadline)
                    except BaseException:
                        self._open -= 1
                        self._wake(None)
                        raise
                    self._conns.add(conn)
                    return conn
            handed = await self._wait(loop, deadline, front=woken)
            woken = True
            if handed is not None:
                if not fresh:
                    return handed
                self.release(handed, True)  # a warm one, but a fresh one was asked for

    def release(self, conn: UpstreamConnection, reusable: bool) -> None:
        if reusable and conn.transport is not None and not conn.transport.is_closing():
            if self._waiters and self._wake(conn):
                return  # handed straight to the longest waiter
            conn.idle_since = conn.loop.time()
            self._idle.append(conn)
        else:
            conn.close()  # the slot frees in connection_lost

    def close_idle(self, now: float | None = None) -> None:
        """Close idle sockets older than the idle timeout (all of them when ``now`` is None)."""
        keep = []
        for conn in self._idle:
            if now is not None and now - conn.idle_since < self.timeouts.idle:
                keep.append(conn)
            else:
                conn.close()
        self._idle = keep

    def close(self) -> None:
        """Shutdown: close every socket, busy ones included."""
        self._idle = []
        for conn in list(self._conns):
            conn.close()

    def lost(self, conn: UpstreamConnection) -> None:
        """A connection closed (``UpstreamConnection.connection_lost``): its slot is free."""
        self._conns.discard(conn)
        self._open -= 1
        if conn in self._idle:
            self._idle.remove(conn)
        self._wake(None)  # a slot is free: the longest waiter may open a socket

    def _wake(self, conn: UpstreamConnection | None) -> bool:
        """Hand ``conn`` (or, with None, a free slot) to the longest waiter; False if none."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return True
        return False

    async def _wait(
        self, loop: asyncio.AbstractEventLoop, deadline: float, *, front: bool = False
    ) -> UpstreamConnection | None:
        if loop.time() >= deadline:
            raise PoolTimeout("no free connection to the instance")
        fut: asyncio.Future[UpstreamConnection | None] = loop.create_future()
        if front:
            self._waiters.appendleft(fut)
        else:
            self._waiters.append(fut)
        timer = loop.call_at(deadline, _expire, fut)
        try:
            return await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                # Handed a socket or a slot we will not use (cancelled): pass it on.
                handed = fut.result()
                if handed is not None:
                    self.release(handed, True)
                else:
                    self._wake(None)
            raise
        finally:
            timer.cancel()

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, deadline: float
    ) -> UpstreamConnection:
        remaining = deadline - loop.time()
        connect_s = self.timeouts.connect
        if remaining <= 0:
            raise PoolTimeout("the request's deadline passed before a connection was made")
        try:
            async with asyncio.timeout(min(connect_s, remaining)):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(loop, self.timeouts.read, self.lost),
                    self.host,
                    self.port,
                )
        except TimeoutError as exc:
            if remaining < connect_s:
                # The request ran out of time (often after waiting for a slot), not the
                # instance: calling that a connect failure would eject a live instance.
                raise PoolTimeout("the request's deadline passed while connecting") from exc
            raise ConnectTimedOut(f"connect to {self.host}:{self.port} timed out") from exc
        except OSError as exc:
            raise ConnectFailed(f"connect to {self.host}:{self.port} failed: {exc}") from exc
        return conn


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(PoolTimeout("no free connection to the instance"))
