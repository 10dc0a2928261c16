"""The accept loop: a listening socket of our own, accepted in batches.

Since libuv 1.45 ("don't accept() connections in a loop", libuv#3696) a libuv server -- hence
uvloop's ``create_server`` -- accepts ONE connection per event-loop iteration; see
``BatchAcceptSite``.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from aiohttp import web

from .compat import SiteBase

log = logging.getLogger("edge_router.listener")


class BatchAcceptSite(SiteBase):
    """A TCP site that accepts waiting connections in batches, like asyncio's own loop.

    Since libuv 1.45 ("don't accept() connections in a loop", libuv#3696) a libuv server --
    hence uvloop's ``create_server`` -- accepts ONE connection per event-loop iteration. Under
    load an iteration takes tens of milliseconds, so a burst of new connections (wrk opening
    1,000, clients reconnecting after a deploy) waited in the kernel's listen queue for seconds:
    the multi-second tail at 1,000 connections in ``docs/benchmarks.md``, while every request
    took under 140 ms inside the edge. Here the listening socket is ours: its read callback
    accepts up to ``backlog`` connections at once and hands them all to the loop together
    (``connect_accepted_socket``)."""

    __slots__ = ("_accept_paused", "_adopting", "_batch", "_host", "_port", "_reuse_port", "_sock")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        backlog: int = 2048,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._reuse_port = reuse_port
        self._batch = max(1, backlog)
        self._sock: socket.socket | None = None
        self._adopting: set[asyncio.Task[None]] = set()
        self._accept_paused: asyncio.TimerHandle | None = None

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1] if self._sock is not None else self._port

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            self._host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.listen(self.backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        sock = self._sock
        if sock is None:
            return
        accepted: list[socket.socket] = []
        for _ in range(self._batch):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except OSError as exc:
                # Out of descriptors or buffers: stop accepting for a moment rather than spin
                # on a listen socket that stays readable (what asyncio does too).
                log.warning("accept failed (%s); pausing accept for 1 s", exc.strerror)
                self._pause()
                break
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            accepted.append(conn)
        if accepted:
            task = asyncio.get_running_loop().create_task(self._adopt(accepted))
            self._adopting.add(task)
            task.add_done_callback(self._adopting.discard)

    async def _adopt(self, conns: list[socket.socket]) -> None:
        # Side by side: each adoption waits a loop iteration for its connection_made, so one
        # after the other would again admit one connection per iteration.
        loop = asyncio.get_running_loop()
        server = self.runner.server
        if server is None or self._sock is None:  # stopped meanwhile
            for conn in conns:
                conn.close()
            return
        results = await asyncio.gather(
            *(loop.connect_accepted_socket(server, conn) for conn in conns),
            return_exceptions=True,
        )
        for conn, result in zip(conns, results, strict=True):
            if isinstance(result, BaseException):
                conn.close()  # reset before it could be set up: nothing to answer

    def _pause(self) -> None:
        loop = asyncio.get_running_loop()
        if self._sock is not None:
            loop.remove_reader(self._sock.fileno())
        self._accept_paused = loop.call_later(1.0, self._resume_accepting)

    def _resume_accepting(self) -> None:
        self._accept_paused = None
        if self._sock is not None:
            asyncio.get_running_loop().add_reader(self._sock.fileno(), self._accept)

    async def stop(self) -> None:
        sock, self._sock = self._sock, None
        if self._accept_paused is not None:
            self._accept_paused.cancel()
            self._accept_paused = None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        await super().stop()
