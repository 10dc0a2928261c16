"""The public listener: one client connection, aiohttp's C request parser on a bare protocol.

Why not ``aiohttp.web``: its request/response objects, router, middleware chain and per-request
task machinery cost more CPU per request than the whole proxy budget (a hello-world
``web.Application`` measured ~115 µs/request on the bench machine, the same parser on a plain
protocol ~35 µs). The edge has one route and a fixed pipeline, so ``EdgeProtocol`` feeds bytes
to llhttp, has the ``Service`` (the pipeline) serve each request as an ``Exchange``, one at a
time per connection (pipelined requests are answered in order), and is its own
``exchange.Sink``: a whole answer goes out in ONE ``transport.write``, a streamed one with
``drain`` backpressure. A request body the store does not take fast enough pauses the client
socket (``compat.FlowProtocol``); so does a queue of pipelined requests. The same pipeline
also runs behind ``aiohttp.web`` (``web_front``): ``tests/edge`` runs the component tests and
the conformance matrix against both front ends.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..config import Timeouts
from ..errors import ClientClosed, EdgeError, ErrorAnswer, RequestTimeout, error_response
from ..exchange import Exchange, Sink
from ..headers import Block, request_id
from .compat import (
    EMPTY_PAYLOAD,
    FlowProtocol,
    HttpProcessingError,
    HttpVersion11,
    RawRequestMessage,
    StreamReader,
    request_parser,
)
from .framing import (
    MAX_FIELD_SIZE,
    MAX_REQUEST_LINE,
    answer_head,
    ends_connection,
    parse_error,
    request_exchange,
    whole_answer,
)
from .linger import linger

log = logging.getLogger("edge_router.listener")

_READ_LIMIT = 2**16
_MAX_PIPELINED = 16  # queued requests per connection before the socket is paused
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Service:
    """What the listener serves: ``serve`` answers one exchange through the sink it is given
    (or returns the refusal to write), ``timeouts`` bound the client's side (head, body,
    send, keep-alive), ``timed_out`` counts a client cut off by one (``head``, ``body``,
    ``send``)."""

    serve: Callable[[Exchange, Sink], Awaitable[ErrorAnswer | None]]
    timeouts: Timeouts
    timed_out: Callable[[str], None]


class EdgeProtocol(FlowProtocol):
    """One client connection. Also the ``Sink`` of the request being answered.

    Two flags end a connection, and they are not the same: ``_close`` means "no request after
    the current one" (its body still has to be read, so the parser is still fed), ``_dead``
    means "read nothing more" (the bytes cannot be trusted, or the client is gone). An earlier
    version had only the first and stopped reading at it: a ``Connection: close`` or HTTP/1.0
    request whose body came after its head never got an answer.

    What the client may take its time over, the server's sweep bounds (``check_timeouts``): a
    request head must arrive whole within ``Timeouts.request_head`` of its first byte, body
    bytes may not pause longer than ``request_body`` (both: 408, close), an answer the
    client does not read may not wait longer than ``send`` (close), an idle keep-alive
    connection ends after ``keepalive``.

    A connection the edge ends after an answer (the last request, a refusal before the body
    was read, bad bytes, a timeout) is not closed at once but handed to ``linger``: bytes the
    client is still sending would otherwise make the kernel reset the connection, and the
    reset can destroy the answer before the client reads it. It stays in the server's
    ``connections`` (``lingering``) until it is gone, so shutdown closes it with the others."""

    __slots__ = (
        "_body",
        "_body_since",
        "_chunked",
        "_close",
        "_connections",
        "_dead",
        "_head_only",
        "_head_since",
        "_http10",
        "_idle_waiter",
        "_last",
        "_lingering",
        "_llhttp",
        "_payload",
        "_queue",
        "_service",
        "_task",
        "_write_paused_since",
        "busy",
        "idle_since",
        "peer",
    )

    def __init__(
        self,
        service: Service,
        loop: asyncio.AbstractEventLoop,
        connections: set[EdgeProtocol],
    ) -> None:
        super().__init__(loop)
        self._service = service
        self._connections = connections  # the server's open connections (sweep, shutdown)
        self._llhttp = request_parser(
            self, limit=_READ_LIMIT, max_line_size=MAX_REQUEST_LINE, max_field_size=MAX_FIELD_SIZE
        )
        self.use_parser(self._llhttp)
        self._queue: collections.deque[tuple[RawRequestMessage, StreamReader]] = collections.deque()
        self._task: asyncio.Task[None] | None = None  # created on the first request
        self._idle_waiter: asyncio.Future[None] | None = None
        self.busy = False  # answering a request (not idle between requests)
        self._close = False  # no request after the current one; its body is still read
        self._dead = False  # read nothing more: bad bytes, or the client is gone
        self._last = False  # a request that ends the connection has been parsed
        self._lingering = False  # answered for the last time; ``linger`` has the transport
        self._chunked = False
        self._head_only = False
        self._http10 = False  # the request being answered is HTTP/1.0: no chunked answer
        self._payload: StreamReader = EMPTY_PAYLOAD  # body of the request being answered
        self._body: StreamReader | None = None  # body the parser is filling, until its end
        self._body_since = 0.0  # when a byte of it last arrived
        self._head_since: float | None = None  # first byte of a head not yet whole
        self._write_paused_since: float | None = None
        self.peer: str | None = None
        self.idle_since = 0.0

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        self.idle_since = self.loop.time()
        self._connections.add(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self._connections.discard(self)
        self._close = self._dead = True
        self._wake()  # the connection's task ends
        gone = ClientClosed("client_closed", "the client closed the connection")
        self._fail_bodies(gone)
        self._queue.clear()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._write_paused_since = self.loop.time()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._write_paused_since = None

    def data_received(self, data: bytes) -> None:
        if self._dead:
            return
        try:
            messages, upgraded, _tail = self._llhttp.feed_data(data)
        except HttpProcessingError as exc:
            self._bad_request(parse_error(exc))
            return
        if data:  # b"" is the parser resuming after a pause: no byte from the client
            self._track(bool(messages))
        if messages:
            last = messages[-1][1]
            if last is not EMPTY_PAYLOAD and not last.is_eof():
                self._body = last
                self._body_since = self.loop.time()
            messages = self._until_last(messages)
            if not messages:
                return
        if upgraded:  # no protocol switch through the edge: answer the request, then close
            self.hold_reading()
        if messages:
            self._queue.extend(messages)
            if len(self._queue) > _MAX_PIPELINED:
                self.hold_reading()
            self._kick()

    def _track(self, completed: bool) -> None:
        """Progress for the timeouts: body bytes move the body's clock; bytes outside a body
        start the head's, a whole head stops it."""
        now = self.loop.time()
        body = self._body
        if body is not None:
            if body.is_eof() or body.exception() is not None:
                self._body = None
            else:
                self._body_since = now
                return
        if completed:
            self._head_since = None
        elif self._head_since is None and body is None:
            self._head_since = now

    def _until_last(
        self, messages: list[tuple[RawRequestMessage, StreamReader]]
    ) -> list[tuple[RawRequestMessage, StreamReader]]:
        """The requests to answer: none after one that ends the connection."""
        if self._last:
            return []
        for i, (msg, _payload) in enumerate(messages):
            if ends_connection(msg):
                self._last = True
                return messages[: i + 1]
        return messages

    def _fail_bodies(self, exc: BaseException) -> None:
        """Fail the body being read, so whatever awaits it (the forwarder) stops now."""
        for body in (self._body, self._payload):
            if body is not None and body is not EMPTY_PAYLOAD and not body.is_eof():
                if body.exception() is None:
                    body.set_exception(exc)
        self._body = None

    # -- timeouts (the server's sweep) ---------------------------------------------------------

    def check_timeouts(self, now: float, t: Timeouts) -> None:
        transport = self.transport
        if transport is None or self._lingering:
            return  # (a lingering connection has bounds of its own)
        paused = self._write_paused_since
        if paused is not None and now - paused > t.send:
            # The client reads nothing of what it asked for: nothing more can reach it.
            self._service.timed_out("send")
            self.abort()
            return
        body = self._body
        if body is not None and not self.reading_paused:
            # (Paused reading is the edge's doing -- the store takes the body slowly -- not
            # the client's; the request's deadline bounds that.)
            if body.is_eof() or body.exception() is not None:
                self._body = None
            elif now - self._body_since > t.request_body:
                self._service.timed_out("body")
                self._close = True
                self._fail_bodies(
                    RequestTimeout("request_timeout", "the request body did not arrive in time")
                )
            return
        head = self._head_since
        if head is not None and now - head > t.request_head:
            self._service.timed_out("head")
            self._head_since = None
            self._bad_request(
                RequestTimeout("request_timeout", "the request head did not arrive in time")
            )
            return
        if (
            not self.busy
            and not self._queue
            and head is None
            and now - self.idle_since > t.keepalive
        ):
            transport.close()

    # -- requests -----------------------------------------------------------------------------

    async def _run(self) -> None:
        """The connection's one task: answers queued requests in order, sleeps when idle.

        One long-lived task per connection rather than one per request: a ``Task`` costs more
        than a future to wake it (creation, registration in asyncio's task set, teardown)."""
        queue = self._queue
        loop = self.loop
        try:
            while not self._dead:
                if not queue:
                    if self._close:
                        break
                    self.busy = False
                    self.idle_since = loop.time()
                    self._idle_waiter = loop.create_future()
                    await self._idle_waiter
                    continue
                if self.writing_paused:
                    # The client is not reading its answers: the next one waits for it (the
                    # sweep closes the connection after Timeouts.send), and so does parsing.
                    await self.drain()
                    continue  # the queue may have changed meanwhile (closed, cleared)
                self.busy = True
                msg, payload = queue.popleft()
                if self.reading_held and len(queue) <= _MAX_PIPELINED // 2:
                    self.release_reading()
                await self._serve(msg, payload)
        except ConnectionError:
            pass  # gone while waiting to write
        finally:
            self._idle_waiter = None
            self.busy = False
            self.idle_since = loop.time()
            self._end()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The connection's task (None before its first request)."""
        return self._task

    def stop_keepalive(self) -> None:
        """Shutdown: no request after the current one; an idle connection closes now."""
        self._close = True
        if not self.busy and self.transport is not None:
            self.transport.close()
        self._wake()

    def _kick(self) -> None:
        """Queued requests for the connection's task: start it (the first time) or wake it."""
        if self._task is None:
            self._task = self.loop.create_task(self._run())
        else:
            self._wake()

    def _wake(self) -> None:
        waiter = self._idle_waiter
        if waiter is not None:
            self._idle_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- the general path ----------------------------------------------------------------------

    async def _serve(self, msg: RawRequestMessage, payload: StreamReader) -> None:
        ex = request_exchange(msg, payload, self.peer)
        self._payload = payload
        self._head_only = msg.method == "HEAD"
        self._http10 = msg.version != HttpVersion11
        if ends_connection(msg):
            self._close = True
        try:
            answer = await self._service.serve(ex, self)
        except Exception:
            log.exception("request failed after its answer started; connection cut")
            self.abort()
            return
        if answer is not None:
            self.write_answer(answer.status, None, answer.block, answer.body)
        self._payload = EMPTY_PAYLOAD

    def _bad_request(self, err: EdgeError) -> None:
        """Bytes that cannot be parsed (or a head that never came whole): nothing after them
        can be trusted. A body being read fails with ``err``, so its request is answered with
        it; with no request being answered, the JSON error goes out now. Then close."""
        self._close = self._dead = True
        self._last = True
        self._queue.clear()
        self._fail_bodies(err)
        if self.busy:
            return  # the answer in progress is the last one; the task closes after it
        self._wake()
        answer = error_response(err, request_id(None))
        self._payload = EMPTY_PAYLOAD
        self._head_only = self._http10 = False
        self.write_answer(answer.status, None, answer.block, answer.body)
        self._end()

    def _end(self) -> None:
        """After the connection's last answer: the lingering close (the client may still be
        sending). Not after ``abort`` (the transport is closing already), nor twice."""
        transport = self.transport
        if transport is None or transport.is_closing() or self._lingering:
            return
        self._lingering = True
        self._close = self._dead = True  # nothing more is parsed, nor answered
        linger(transport, self.connection_lost, flush_timeout=self._service.timeouts.send)

    @property
    def lingering(self) -> bool:
        """Answered for the last time, closing in stages (``linger``); still counted."""
        return self._lingering

    # -- exchange.Sink ---------------------------------------------------------------------------

    def send_continue(self) -> None:
        if self.transport is not None:
            self.transport.write(_CONTINUE)

    async def respond(self, status: int, reason: str, block: Block, body: bytes) -> None:
        self.write_answer(status, reason, block, body)

    def write_answer(self, status: int, reason: str | None, block: Block, body: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        if not self._payload.is_eof():
            self._close = True  # the body was not read: the stream cannot be resynced
        transport.write(
            whole_answer(status, reason, block, body, head_only=self._head_only, close=self._close)
        )

    async def start(self, status: int, reason: str, block: Block) -> None:
        transport = self.transport
        if transport is None:
            raise ClientClosed("client_closed", "the client closed the connection")
        head, self._chunked, self._close = answer_head(
            status,
            reason,
            block,
            head_only=self._head_only,
            http10=self._http10,
            close=self._close or not self._payload.is_eof(),
        )
        transport.write(head)

    async def write(self, chunk: bytes) -> None:
        transport = self.transport
        if transport is None:
            raise ClientClosed("client_closed", "the client closed the connection")
        transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if self._chunked else chunk)
        if self.writing_paused:
            try:
                await self.drain()
            except ConnectionError:
                raise ClientClosed("client_closed", "the client closed the connection") from None

    async def end(self) -> None:
        if self._chunked and self.transport is not None:
            self.transport.write(b"0\r\n\r\n")
        self._chunked = False

    def abort(self) -> None:
        self._close = True
        if self.transport is not None:
            self.transport.abort()
