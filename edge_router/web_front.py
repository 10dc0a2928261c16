"""The ``aiohttp.web`` front end: the pipeline behind an ordinary ``web.Application``.

``handle`` adapts a ``web.Request`` into an ``Exchange`` and a ``Sink`` and has the app's
``wire.Service`` (the same pipeline the production listener serves) answer it, so
``app.create_app`` works anywhere an ``Application`` does (tests, embedding). The component
tests and the conformance matrix run against both front ends; where aiohttp.web itself answers
before any handler runs (its parser's refusals), the matrix marks the difference.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from .exchange import Exchange
from .headers import REQUEST_ID, Block, request_id, split_line
from .wire import SERVICE, asks_continue, linger, origin_form, take_connection


class _WebSink:
    """``Sink`` over an ``aiohttp.web`` request (``StreamResponse``)."""

    __slots__ = ("request", "response")

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response: web.StreamResponse | None = None

    def send_continue(self) -> None:
        # Nothing of the answer is out yet (the pipeline invites the body before it forwards),
        # so the interim answer goes straight to the socket, as aiohttp's own handler does.
        transport = self.request.transport
        if transport is not None and not transport.is_closing():
            transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    async def respond(self, status: int, reason: str, block: Block, body: bytes) -> None:
        await self.start(status, reason, block)
        if body:
            await self.write(body)
        await self.end()

    async def start(self, status: int, reason: str, block: Block) -> None:
        self.response = web.StreamResponse(status=status, reason=reason, headers=_multidict(block))
        await self.response.prepare(self.request)

    async def write(self, chunk: bytes) -> None:
        assert self.response is not None
        await self.response.write(chunk)

    async def end(self) -> None:
        assert self.response is not None
        await self.response.write_eof()

    def abort(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.abort()


def _multidict(block: Block) -> CIMultiDict[str]:
    return CIMultiDict(map(split_line, block.split("\r\n")[1:]))


async def continue_later(_request: web.Request) -> None:
    """The route's ``expect_handler``: aiohttp's default one answers ``100 Continue`` before
    any handler runs, inviting a body the edge may refuse on the head alone (a moving
    account, a bad key, a declared length over the limit). The pipeline invites it only
    after those checks, through ``_WebSink.send_continue``, as on the listener. (A target
    the router cannot match, absolute-form or ``*``, still gets aiohttp's own handler.)"""


async def handle(request: web.Request) -> web.StreamResponse:
    headers = request.headers
    raw = request.raw_path
    target, authority = origin_form(raw, None if raw.startswith("/") else URL(raw, encoded=True))
    ex = Exchange(
        request.method,
        target,
        request_id(headers.get(REQUEST_ID)),
        headers,
        url=request.rel_url,
        body=request.content,
        body_exists=request.body_exists,
        content_length=request.content_length,
        peer=request.remote,
        scheme=request.scheme,
        expect_continue=asks_continue(request.version, headers.get("Expect")),
        version=tuple(request.version),  # type: ignore[arg-type]
        header_lines=len(request.raw_headers),
        host=authority,
    )
    sink = _WebSink(request)
    refused = await request.app[SERVICE].serve(ex, sink)
    if refused is not None:
        resp = web.Response(
            status=refused.status,
            body=refused.body,
            headers=_multidict(refused.block),
        )
        if request.body_exists and not request.content.is_eof():
            await _last_answer(request, resp)
        return resp
    assert sink.response is not None
    return sink.response


async def _last_answer(request: web.Request, resp: web.Response) -> None:
    """A refusal before the body was read to its end (too large, too slow, malformed, never
    invited): the stream cannot be resynced, so this answer is the connection's last, as on
    the listener, and it ends with the listener's lingering close (``wire.linger``): the
    client may still be sending, and closing at once would have the kernel reset the
    connection under the answer. Not aiohttp's own lingering: it reads the body up to
    ``lingering_time`` without half-closing, through a parser that then answers a chunk it
    refused as one more message."""
    resp.force_close()
    await resp.prepare(request)
    await resp.write_eof()
    taken = take_connection(request)
    if taken is not None:
        transport, lost = taken
        linger(transport, lost, flush_timeout=request.app[SERVICE].timeouts.send)


@web.middleware
async def every_target(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's router matches only targets that start with "/"; the others (``OPTIONS *``,
    CONNECT's authority form) go through the same steps too, and are refused as JSON there,
    not with aiohttp's plain-text 404."""
    if request.match_info.http_exception is not None:
        return await handle(request)
    return await handler(request)
