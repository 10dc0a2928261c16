"""Serving the listener: the protocol factory with its timeout sweep and graceful shutdown
(``EdgeServer``), and the ``web.BaseRunner`` that runs an edge app behind it (``EdgeRunner``).

``EdgeRunner`` is a ``web.BaseRunner``, so aiohttp's sites (``web.TCPSite``, or
``accept.BatchAcceptSite``: backlog, SO_REUSEPORT) serve it, the ``Application``'s
``cleanup_ctx`` creates and closes the shared state as usual, and shutdown drains in-flight
requests within ``shutdown_timeout``. The app tells the runner what to serve by putting a
``listener.Service`` under ``SERVICE``: the wire code never imports the pipeline.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from .compat import RunnerBase, start_app
from .listener import EdgeProtocol, Service

SERVICE = web.AppKey("edge_service", Service)


class EdgeServer:
    """Protocol factory for ``loop.create_server``, with graceful shutdown (``BaseRunner``)."""

    def __init__(self, service: Service, loop: asyncio.AbstractEventLoop) -> None:
        self.service = service
        self.loop = loop
        self.connections: set[EdgeProtocol] = set()
        t = service.timeouts
        # Often enough that a timeout is enforced within a quarter of itself (1 s at most).
        shortest = min(t.request_head, t.request_body, t.send, t.keepalive)
        self._sweep_s = max(0.05, min(1.0, shortest / 4))
        self._sweeper = loop.call_later(self._sweep_s, self._sweep)

    def __call__(self) -> EdgeProtocol:
        return EdgeProtocol(self.service, self.loop, self.connections)

    def _sweep(self) -> None:
        """One timer for every connection's timeouts, instead of one per request."""
        now = self.loop.time()
        timeouts = self.service.timeouts
        for conn in list(self.connections):
            conn.check_timeouts(now, timeouts)
        self._sweeper = self.loop.call_later(self._sweep_s, self._sweep)

    def pre_shutdown(self) -> None:
        """Stop keep-alive: idle connections close now, busy ones after their answer."""
        for conn in list(self.connections):
            conn.stop_keepalive()

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (BaseRunner's signature)
        self._sweeper.cancel()
        busy: list[asyncio.Future[Any]] = [
            c.task for c in self.connections if c.busy and c.task is not None
        ]
        if busy:
            await asyncio.wait(busy, timeout=timeout)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()


class EdgeRunner(RunnerBase):
    """Runs an edge ``web.Application`` (startup/cleanup) behind ``EdgeServer``: the app's
    ``cleanup_ctx`` puts the ``Service`` under ``SERVICE``."""

    __slots__ = ("_app",)

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.pop("handler_cancellation", None)  # aiohttp.test_utils passes it; not ours
        kwargs.pop("access_log", None)
        super().__init__(**kwargs)
        self._app = app

    @property
    def app(self) -> web.Application:
        return self._app

    async def shutdown(self) -> None:
        await self._app.shutdown()

    async def make_server(self) -> EdgeServer:
        loop = asyncio.get_running_loop()
        await start_app(self._app, loop)
        return EdgeServer(self._app[SERVICE], loop)

    async def cleanup_server(self) -> None:
        await self._app.cleanup()
