"""One keep-alive HTTP/1.1 connection to a store instance, answers parsed by llhttp.

Why not ``aiohttp.ClientSession``: per proxied request it builds a ``ClientRequest``, a
``ClientResponse``, a timer context, a new response parser and several tasks' worth of frames;
on this hot path that was most of the edge's CPU (see ``docs/benchmarks.md``). Here a request
is one ``transport.write`` of a pre-built head (+ buffered body) on a pooled socket, and the
answer is read by ``answer.parse_whole_answer`` or aiohttp's C response parser (the one its
client uses) into an ``Answer``.

* **backpressure**: the answer's payload ``StreamReader`` pauses the socket (``FlowProtocol``)
  when the client does not read fast enough, and request bodies are written with ``drain`` so
  a slow store pushes back on the client.
* **timeouts**: one watchdog timer per socket enforces both the read gap (no byte from the
  store for ``Timeouts.read``) and the exchange deadline; it is not rescheduled per chunk (data
  arrival only records a timestamp) nor cancelled per exchange (it re-arms when it fires early).

Every failure of the store's side is one of ``errors.UpstreamFailed``, raised here (and by
the pool) and nowhere converted again::

    ConnectFailed       nothing was sent: refused, unreachable, connect timed out (``pool``)
    PoolTimeout         no socket became free (or connected) before the request's deadline
    UpstreamTimeout     the store went silent (read gap) or the deadline passed (``timed_out``)
    ConnectionBroken    the connection failed after (maybe) sending, or the answer could not
                        be parsed; ``answered`` says whether any byte of the answer had arrived
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from ..errors import ConnectionBroken, UpstreamTimeout
from .answer import Answer, parse_whole_answer
from .compat import FlowProtocol, StreamReader, response_parser

_READ_LIMIT = 2**16  # payload buffer low-water mark; the socket pauses above twice this


class UpstreamConnection(FlowProtocol):
    """One socket to a store; one exchange at a time (no pipelining)."""

    __slots__ = (
        "_active",
        "_deadline",
        "_head_only",
        "_llhttp",
        "_llhttp_main",
        "_on_lost",
        "_payload",
        "_read_timeout",
        "_waiter",
        "_watch",
        "_watch_due",
        "_whole",
        "answered",
        "idle_since",
        "last_data",
        "served",
        "timed_out",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        read_timeout: float,
        on_lost: Callable[[UpstreamConnection], None],
    ) -> None:
        super().__init__(loop)
        self._on_lost = on_lost  # the pool frees this connection's slot
        self._llhttp_main = response_parser(self, limit=_READ_LIMIT)
        self._llhttp = self._llhttp_main
        self.use_parser(self._llhttp_main)
        self._waiter: asyncio.Future[Answer] | None = None
        self._payload: StreamReader | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._watch_due = 0.0
        self._active = False  # an exchange is under way (from send until finish)
        self._deadline = 0.0
        self._read_timeout = read_timeout
        self._head_only = False
        self._whole = False  # may the next bytes be read by ``parse_whole_answer``?
        self.answered = False
        self.timed_out = False
        self.last_data = 0.0
        self.served = 0  # completed exchanges: >0 means this is a reused keep-alive socket
        self.idle_since = 0.0

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._waiter is None and self._payload is None:
            if data:  # unsolicited bytes on an idle socket (e.g. a 408): never reuse it
                self.close()
            return
        if data:
            self.last_data = self.loop.time()
            self.answered = True
            if self._whole:  # the first bytes of the answer: maybe all of it, in the usual shape
                self._whole = False
                answer = parse_whole_answer(data)
                if answer is not None:
                    self._deliver(answer)
                    return
        try:
            messages, _upgraded, _tail = self._llhttp.feed_data(data)
        except BaseException as exc:
            self._fail(ConnectionBroken(f"bad answer from the store: {exc!r}", True))
            self.close()
            return
        for msg, payload in messages:
            if 100 <= msg.code < 200 and msg.code != 101:
                continue  # interim answers (103 Early Hints...): the final one follows
            waiter = self._waiter
            if waiter is None:  # a second answer to one request: protocol violation
                self.close()
                return
            self._payload = payload
            self._deliver(Answer.from_parser(msg, payload))

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        payload = self._payload
        try:
            self._llhttp.feed_eof()  # completes a read-until-close body
        except BaseException as err:
            if payload is not None:
                payload.set_exception(ConnectionBroken(f"store closed mid-answer: {err}", True))
        else:
            if payload is not None and not payload.is_eof():
                payload.set_exception(ConnectionBroken("store closed mid-answer", True))
        self._fail(ConnectionBroken("store closed the connection", self.answered))
        self._cancel_watch()
        self._on_lost(self)

    # -- one exchange -------------------------------------------------------------------------

    def send(
        self,
        head: bytes,
        body: bytes | None,
        *,
        head_only: bool,
        deadline: float,
    ) -> asyncio.Future[Answer]:
        """Send one request whose body (if any) is in memory: one write. The future resolves
        to the answer's head and its (streaming) payload. Not a coroutine: one frame less."""
        waiter = self._begin(head_only, deadline)
        self.transport.write(head + body if body else head)  # type: ignore[union-attr]
        return waiter

    async def send_stream(
        self,
        head: bytes,
        stream: AsyncIterator[bytes],
        *,
        chunked: bool,
        head_only: bool,
        deadline: float,
    ) -> Answer:
        """Send one request streaming its body (``drain`` backpressure); return the answer."""
        waiter = self._begin(head_only, deadline)
        loop = self.loop
        try:
            self.transport.write(head)  # type: ignore[union-attr]
            async for chunk in stream:
                if self.transport is None:
                    break  # the answer (or the failure) is already in the waiter
                self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                self.last_data = loop.time()  # uploading counts as activity
                if self.writing_paused:
                    try:
                        await self.drain()
                    except ConnectionError as exc:
                        raise ConnectionBroken(
                            f"lost while sending: {exc!r}", self.answered
                        ) from exc
            if chunked and self.transport is not None:
                self.transport.write(b"0\r\n\r\n")
        except BaseException:
            # The body failed (too large, client gone): nobody will await the answer.
            self._waiter = None
            waiter.cancel()
            raise
        return await waiter

    def _begin(self, head_only: bool, deadline: float) -> asyncio.Future[Answer]:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionBroken("connection closed before sending", False)
        loop = self.loop
        now = loop.time()
        self.answered = False
        self.timed_out = False
        self.last_data = now
        self._deadline = deadline
        self._payload = None
        if head_only:  # a HEAD answer has no body whatever its Content-Length says
            self._llhttp = response_parser(self, limit=_READ_LIMIT, head_only=True)
            self.use_parser(self._llhttp)
        self._head_only = head_only
        # llhttp is between messages here (a socket is reused only after a whole answer).
        self._whole = not head_only
        waiter = self._waiter = loop.create_future()
        self._active = True
        # The watchdog outlives an exchange: arming and cancelling a timer per request costs
        # more than relaying a small answer. A pending one is due no later than this exchange
        # needs (same timeouts, earlier start); when it fires it re-arms for whatever exchange
        # is current, or lapses if the socket is idle.
        due = min(deadline, now + self._read_timeout)
        if self._watch is None or self._watch_due > due:
            self._arm(due)
        return waiter

    def finish(self) -> bool:
        """End the exchange (answer fully read); True when the socket may be reused."""
        self._active = False
        payload = self._payload
        self._payload = None
        if self._head_only:
            self._llhttp = self._llhttp_main
            self.use_parser(self._llhttp_main)
            self._head_only = False
        self.served += 1
        return (
            not self.timed_out
            and self.transport is not None
            and not self.transport.is_closing()
            and (payload is None or (payload.is_eof() and payload.exception() is None))
        )

    def close(self) -> None:
        self._cancel_watch()
        if self.transport is not None:
            self.transport.abort()

    # -- internals ----------------------------------------------------------------------------

    def _arm(self, due: float) -> None:
        if self._watch is not None:
            self._watch.cancel()
        self._watch = self.loop.call_at(due, self._on_watch)
        self._watch_due = due

    def _on_watch(self) -> None:
        self._watch = None
        if not self._active:
            return  # idle socket: the next exchange arms a new watchdog
        now = self.loop.time()
        due = min(self._deadline, self.last_data + self._read_timeout)
        if now < due - 0.001:  # data arrived meanwhile, or a later exchange: wait until due
            self._arm(due)
            return
        self.timed_out = True
        exc = UpstreamTimeout("the store did not answer in time")
        self._fail(exc)
        if self._payload is not None:
            self._payload.set_exception(exc)
        self.close()

    def _deliver(self, answer: Answer) -> None:
        waiter = self._waiter
        if waiter is None:
            return
        self._waiter = None
        if not waiter.done():
            waiter.set_result(answer)

    def _fail(self, exc: BaseException) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_exception(exc)

    def _cancel_watch(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
