"""Every private or undocumented aiohttp name the edge relies on, and nowhere else.

The wire code runs aiohttp's C HTTP parsers (llhttp, ``aiohttp._http_parser``) on bare asyncio
protocols and serves them through aiohttp's runner and site machinery. None of that is
aiohttp's documented API, so it is named here only, under names of our own, and
``pyproject.toml`` pins aiohttp to the minor range the tests ran on. ``tests/edge`` (the
conformance matrix in particular) exercises each of these; a new aiohttp minor is adopted by
moving the pin once that suite passes against it::

    BaseProtocol (aiohttp.base_protocol)      flow control both ways: ``FlowProtocol``
      ._parser ._reading_paused ._buffer_paused ._drain_helper ._pause_reading_for_buffer
      ._resume_reading_for_buffer
    HttpRequestParser / HttpResponseParser    llhttp via aiohttp (its C build when present),
      .feed_data .feed_eof, RawRequestMessage, RawResponseMessage, and the parser's errors
      (LineTooLong's args, the "Too many headers" message): ``request_parser``,
      ``response_parser``, ``line_too_long``, ``too_many_headers``
    web.BaseRunner._make_server / ._cleanup_server: ``RunnerBase``
    web.Application._set_loop (what AppRunner does to start an app): ``start_app``
    web.BaseSite._runner ._backlog: ``SiteBase``
    web.Request.protocol (web_protocol.RequestHandler) ._force_close .transport
      .connection_lost: ``take_connection``

Everything else the wire code takes from aiohttp (``StreamReader``, ``EMPTY_PAYLOAD``,
``HttpVersion11``) is public; it is re-exported here so that the wire code has one door to
aiohttp.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import EMPTY_PAYLOAD, HttpVersion11, StreamReader, web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.http_parser import (
    HttpRequestParser,
    HttpResponseParser,
    RawRequestMessage,
    RawResponseMessage,
)

__all__ = [
    "EMPTY_PAYLOAD",
    "FlowProtocol",
    "HttpProcessingError",
    "HttpRequestParser",
    "HttpResponseParser",
    "HttpVersion11",
    "RawRequestMessage",
    "RawResponseMessage",
    "RunnerBase",
    "SiteBase",
    "StreamReader",
    "line_too_long",
    "request_parser",
    "response_parser",
    "start_app",
    "take_connection",
    "too_many_headers",
]


class FlowProtocol(BaseProtocol):
    """aiohttp's ``BaseProtocol`` under public names: the transport paused while a parser's
    ``StreamReader`` is full (``pause_reading``/``resume_reading``, called by the reader), a
    writer that awaits ``drain`` while the transport's buffer is full, and a hold on reading
    for a buffer of the protocol's own (``hold_reading``)."""

    __slots__ = ("loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.loop = loop

    def use_parser(self, parser: Any) -> None:
        """The parser ``pause_reading`` pauses (and ``resume_reading`` re-feeds)."""
        self._parser = parser

    @property
    def reading_paused(self) -> bool:
        """A payload reader is full: the protocol's consumer, not the peer, is slow."""
        return self._reading_paused

    @property
    def reading_held(self) -> bool:
        return self._buffer_paused

    def hold_reading(self) -> None:
        self._pause_reading_for_buffer()

    def release_reading(self) -> None:
        self._resume_reading_for_buffer()

    async def drain(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        await self._drain_helper()

    def resume_reading(self, resume_parser: bool = True) -> None:
        # aiohttp's StreamReader calls this after every read and at EOF, paused or not; only a
        # paused protocol needs the (parser re-feed + transport) work.
        if self._reading_paused:
            super().resume_reading(resume_parser)


def request_parser(
    protocol: FlowProtocol, *, limit: int, max_line_size: int, max_field_size: int
) -> HttpRequestParser:
    """llhttp for requests; bodies are passed on as received (no decompression)."""
    return HttpRequestParser(
        protocol,
        protocol.loop,
        limit,
        max_line_size=max_line_size,
        max_field_size=max_field_size,
        auto_decompress=False,
    )


def response_parser(
    protocol: FlowProtocol, *, limit: int, head_only: bool = False
) -> HttpResponseParser:
    """llhttp for answers: a body framed by Content-Length, chunks or the end of the
    connection; ``head_only``: the answer to a HEAD, which has no body whatever it says."""
    if head_only:
        return HttpResponseParser(
            protocol, protocol.loop, limit, response_with_body=False, auto_decompress=False
        )
    return HttpResponseParser(
        protocol, protocol.loop, limit, read_until_eof=True, auto_decompress=False
    )


def line_too_long(exc: HttpProcessingError) -> int | None:
    """For a ``LineTooLong``: the limit the line broke (0 when not said; llhttp does not say
    which line it was); None for any other parser error."""
    if not isinstance(exc, LineTooLong):
        return None
    limit = exc.args[1] if len(exc.args) > 1 else 0
    return limit if isinstance(limit, int) else 0


def too_many_headers(exc: HttpProcessingError) -> bool:
    return "Too many headers" in str(exc)


class RunnerBase(web.BaseRunner):
    """A ``web.BaseRunner`` whose server comes from ``make_server``: aiohttp's sites, backlog,
    SO_REUSEPORT and graceful shutdown (``pre_shutdown``/``shutdown`` of that server) serve
    a protocol factory of our own."""

    __slots__ = ()

    async def make_server(self) -> Any:
        raise NotImplementedError

    async def cleanup_server(self) -> None:
        raise NotImplementedError

    async def _make_server(self) -> Any:
        return await self.make_server()

    async def _cleanup_server(self) -> None:
        await self.cleanup_server()


async def start_app(app: web.Application, loop: asyncio.AbstractEventLoop) -> None:
    """What ``web.AppRunner`` does to start an application: bind it to the loop, run its
    startup (``cleanup_ctx`` included), freeze it."""
    app._set_loop(loop)
    app.on_startup.freeze()
    await app.startup()
    app.freeze()


class SiteBase(web.BaseSite):
    """A ``web.BaseSite`` with its runner and backlog readable."""

    __slots__ = ()

    @property
    def runner(self) -> web.BaseRunner:
        return self._runner

    @property
    def backlog(self) -> int:
        return self._backlog


def take_connection(
    request: web.BaseRequest,
) -> tuple[asyncio.Transport, Callable[[BaseException | None], None]] | None:
    """Take an ``aiohttp.web`` connection from its ``RequestHandler`` once the answer is
    written: the handler reads nothing more, does not linger itself (it would read a body that
    may never end, then answer a parser error on it as one more message) and does not close
    the transport -- the caller does. Returns the transport and the handler's
    ``connection_lost``, to be called once it is gone (aiohttp's connection accounting, which
    graceful shutdown closes); None when the connection is gone already."""
    protocol = request.protocol
    transport = protocol.transport
    if transport is None or transport.is_closing():
        return None
    protocol._force_close = True  # what ``force_close`` sets, without its ``transport.close``
    return transport, protocol.connection_lost
