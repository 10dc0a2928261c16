"""The client's request body, as the pipeline receives it before admission.

A body with a declared length over ``max_body_bytes`` is refused before anything is read
(``check_length``: 413). Then ``receive_body`` says ``100 Continue`` when asked (only now: the
checks before never invited it) and reads a small body of known length whole, so it can be
replayed on a retry and sent in the same write as the head, and a client that sends its head
and stops holds no admission slot; anything else becomes a ``StreamedBody``, read once while
forwarding, counted against ``max_body_bytes`` as it goes. Every wait is bounded by the
exchange's deadline; the listener also fails the stream on a pause, a bad chunk or a close.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from .errors import ClientClosed, PayloadTooLarge, RequestTimeout
from .exchange import Exchange, Sink
from .wire import StreamReader


class StreamedBody:
    """The client's body as an async iterator, with the size limit and the request's deadline
    enforced while streaming (a client trickling its body cannot hold the exchange past it)."""

    __slots__ = ("_content", "_deadline", "_limit", "started", "too_large")

    def __init__(self, content: StreamReader, limit: int, deadline: float) -> None:
        self._content = content
        self._limit = limit
        self._deadline = deadline
        self.started = False
        self.too_large = False

    async def chunks(self) -> AsyncIterator[bytes]:
        self.started = True
        seen = 0
        content = self._content
        while True:
            try:
                async with asyncio.timeout_at(self._deadline):
                    chunk = await content.readany()
            except TimeoutError:
                raise too_slow() from None
            if not chunk:
                return
            seen += len(chunk)
            if seen > self._limit:
                self.too_large = True
                raise too_large(self._limit)
            yield chunk


Body = bytes | StreamedBody | None


def too_slow() -> RequestTimeout:
    return RequestTimeout("request_timeout", "the request body did not arrive in time")


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge("payload_too_large", f"request body is over {limit} bytes")


def check_length(ex: Exchange, limit: int) -> None:
    """A declared Content-Length over the limit: 413 before a byte of the body is read."""
    length = ex.content_length
    if length is not None and length > limit:
        raise too_large(limit)


async def receive_body(ex: Exchange, sink: Sink, *, buffer_limit: int, limit: int) -> Body:
    """Nothing, the whole body (up to ``buffer_limit`` bytes, declared), or a stream."""
    if not ex.body_exists or ex.body is None:
        return None
    if ex.expect_continue:
        sink.send_continue()
    length = ex.content_length
    if length is not None and length <= buffer_limit:
        if not length:
            return b""
        try:
            async with asyncio.timeout_at(ex.deadline):
                return await ex.body.readexactly(length)
        except TimeoutError:
            raise too_slow() from None
        except asyncio.IncompleteReadError:
            raise ClientClosed("client_closed", "the client closed mid-body") from None
    return StreamedBody(ex.body, limit, ex.deadline)
