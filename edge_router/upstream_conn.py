"""Pooled keep-alive HTTP/1.1 connections to one store instance, parsed by aiohttp's C parser.

Why not ``aiohttp.ClientSession``: per proxied request it builds a ``ClientRequest``, a
``ClientResponse``, a timer context, a new response parser and several tasks' worth of frames;
on this hot path that was most of the edge's CPU (see ``docs/benchmarks.md``). Here a request
is one ``transport.write`` of a pre-built head (+ buffered body) on a pooled socket, and the
answer is parsed by ``aiohttp._http_parser.HttpResponseParser`` -- the same C (llhttp) parser
aiohttp's client uses -- into a ``RawResponseMessage`` and a payload ``StreamReader``.

What the pool guarantees:

* **per-upstream cap**: at most ``limit`` sockets per instance (open or being opened); a
  request that finds none free waits until one is, or until its deadline (``PoolTimeout``).
  Waiters are served strictly in order: a released socket is handed to the longest waiter,
  never taken by a newcomer, so under a burst no request starves (an earlier version let
  newcomers jump the queue: multi-second tails at 256 connections). A slow instance cannot
  take sockets from the others.
* **keep-alive**: a connection goes back to the pool only when its answer was read whole and
  neither side asked to close; idle ones are closed after ``idle_timeout_s``.
* **backpressure**: the payload ``StreamReader`` pauses the socket (via aiohttp's
  ``BaseProtocol``) when the client does not read fast enough, and request bodies are written
  with ``drain`` so a slow store pushes back on the client.
* **timeouts**: one watchdog timer per socket enforces both the read gap (no byte from the
  store for ``read_timeout``) and the exchange deadline; it is not rescheduled per chunk (data
  arrival only records a timestamp) nor cancelled per exchange (it re-arms when it fires early).

Failures are reported as the exceptions below; ``proxy.py`` maps them to routing outcomes::

    ConnectFailed       nothing was sent: refused, unreachable, connect timed out
    PoolTimeout         no socket became free (or connected) before the request's deadline
    ExchangeTimeout     the store went silent (read gap) or the deadline passed
    ConnectionBroken    the connection failed after (maybe) sending; ``answered`` says whether
                        any byte of the answer had arrived
"""

from __future__ import annotations

import asyncio
import collections
import re
from collections.abc import AsyncIterator
from typing import Any

from aiohttp.base_protocol import BaseProtocol
from aiohttp.helpers import set_exception
from aiohttp.http_parser import HttpResponseParser, RawResponseMessage
from aiohttp.streams import StreamReader

from .headers import connection_tokens, to_block

_READ_LIMIT = 2**16  # payload buffer low-water mark; the socket pauses above twice this


class Answer:
    """The store's answer: its head and either the whole body (``payload`` None) or a payload
    ``StreamReader`` that streams it. ``block`` holds the header lines as received, each led by
    its CRLF (``headers.Block``); ``named`` the tokens of its Connection headers."""

    __slots__ = ("block", "body", "named", "payload", "reason", "should_close", "status")

    def __init__(
        self,
        status: int,
        reason: str,
        block: str,
        named: frozenset[str],
        should_close: bool,
        body: bytes = b"",
        payload: StreamReader | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.block = block
        self.named = named
        self.should_close = should_close
        self.body = body
        self.payload = payload

    @property
    def lines(self) -> list[str]:
        return self.block.split("\r\n")[1:]

    @classmethod
    def from_parser(cls, msg: RawResponseMessage, payload: StreamReader) -> Answer:
        block = to_block(msg.headers.items())
        named = connection_tokens(msg.headers)
        return cls(msg.code, msg.reason, block, named, msg.should_close, payload=payload)


# The whole-answer reader. Nearly every answer of a store is one small message that arrives in
# one read: HTTP/1.1, a status >= 200 with a body, Content-Length, no Transfer-Encoding. For that
# shape one regular expression and a few byte searches replace llhttp plus aiohttp's per-message
# StreamReader (about a third of the cost of relaying an answer): the expression validates the
# whole head (status line, token names, no CR, LF or other control character inside a line);
# the framing headers are found in its lower-cased copy. Anything else -- a message cut short or
# followed by more bytes, obs-fold, a second Content-Length, a head near aiohttp's limits -- goes
# to llhttp, which parses it (or rejects it) exactly as before.
# ``tests/edge/test_whole_answer.py`` holds it to llhttp's reading.
_VALUE = rb"[^\x00-\x08\x0a-\x1f\x7f]*"  # HTAB and visible bytes (obs-text included)
_HEAD = re.compile(
    rb"HTTP/1\.1 ([0-9]{3})(?: ("
    + _VALUE
    + rb"))?((?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:"
    + _VALUE
    + rb")*)"
)
_CONNECTION = re.compile(r"\r\nconnection:([^\r\n]*)", re.ASCII | re.IGNORECASE)
_CL = b"\r\ncontent-length:"
# aiohttp's limits (max_line_size, max_field_size, max_headers): a head near them is llhttp's.
_MAX_HEAD = 8190
_MAX_HEADERS = 128
_NO_TOKENS: frozenset[str] = frozenset()


def parse_whole_answer(data: bytes) -> Answer | None:
    """``data`` as one complete answer in the common shape, or None (then llhttp decides)."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or end > _MAX_HEAD:
        return None
    m = _HEAD.fullmatch(data, 0, end)
    if m is None:
        return None
    status = int(m[1])
    if status < 200 or status == 204 or status == 304:
        return None
    raw = m[3]
    lower = raw.lower()
    i = lower.find(_CL)
    if i < 0 or lower.find(_CL, i + 17) >= 0:
        return None  # no Content-Length, or two
    j = lower.find(b"\r\n", i + 17)
    value = raw[i + 17 : j if j >= 0 else len(raw)].strip(b" \t")
    if (
        not value.isdigit()  # ASCII digits only, for bytes
        or len(data) - end - 4 != int(value)
        # find(), not ``in``: bytes.__contains__ first tries its argument as an int and
        # builds a TypeError to discard, a cost on every answer
        or lower.find(b"\r\ntransfer-encoding:") >= 0  # llhttp frames it
        or lower.find(b"\r\nsec-websocket-key1:") >= 0  # aiohttp refuses it
        or raw.count(b"\r\n") > _MAX_HEADERS
    ):
        return None
    block = raw.decode("utf-8", "surrogateescape")
    named = _NO_TOKENS
    if lower.find(b"\r\nconnection:") >= 0:
        for c in _CONNECTION.finditer(block):
            named = named | _tokens(c[1])
    reason = m[2]
    return Answer(
        status,
        reason.decode("utf-8", "surrogateescape") if reason else "",
        block,
        named,
        "close" in named,
        data[end + 4 :],
    )


def _tokens(value: str) -> frozenset[str]:
    return frozenset(t.strip().lower() for t in value.split(",") if t.strip())  # as llhttp's


class ConnectFailed(OSError):
    """The TCP connection could not be made (nothing was sent)."""


class PoolTimeout(TimeoutError):
    """No connection to the instance could be had before the request's deadline."""


class ExchangeTimeout(TimeoutError):
    """The store sent nothing for the read timeout, or the exchange deadline passed."""


class ConnectionBroken(ConnectionError):
    def __init__(self, message: str, answered: bool) -> None:
        super().__init__(message)
        self.answered = answered  # had any byte of the answer arrived?


class UpstreamConnection(BaseProtocol):
    """One socket to a store; one exchange at a time (no pipelining)."""

    __slots__ = (
        "_active",
        "_deadline",
        "_head_only",
        "_main_parser",
        "_payload",
        "_read_timeout",
        "_waiter",
        "_watch",
        "_watch_due",
        "_whole",
        "answered",
        "idle_since",
        "last_data",
        "pool",
        "served",
        "timed_out",
    )

    def __init__(self, pool: ConnectionPool, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.pool = pool
        self._main_parser = HttpResponseParser(
            self, loop, _READ_LIMIT, read_until_eof=True, auto_decompress=False
        )
        self._parser = self._main_parser
        self._waiter: asyncio.Future[Answer] | None = None
        self._payload: StreamReader | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._watch_due = 0.0
        self._active = False  # an exchange is under way (from send until finish)
        self._deadline = 0.0
        self._read_timeout = 0.0
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
            self.last_data = self._loop.time()
            self.answered = True
            if self._whole:  # the first bytes of the answer: maybe all of it, in the usual shape
                self._whole = False
                answer = parse_whole_answer(data)
                if answer is not None:
                    self._deliver(answer)
                    return
        try:
            messages, _upgraded, _tail = self._parser.feed_data(data)
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
            self._parser.feed_eof()  # completes a read-until-close body
        except BaseException as err:
            if payload is not None:
                set_exception(payload, ConnectionBroken(f"store closed mid-answer: {err}", True))
        else:
            if payload is not None and not payload.is_eof():
                set_exception(payload, ConnectionBroken("store closed mid-answer", True))
        self._fail(ConnectionBroken("store closed the connection", self.answered))
        self._cancel_watch()
        self.pool._lost(self)

    def resume_reading(self, resume_parser: bool = True) -> None:
        # aiohttp's StreamReader calls this after every read and at EOF, paused or not; only a
        # paused socket needs the (parser re-feed + transport) work.
        if self._reading_paused:
            super().resume_reading(resume_parser)

    # -- one exchange -------------------------------------------------------------------------

    def send(
        self,
        head: bytes,
        body: bytes | None,
        *,
        head_only: bool,
        deadline: float,
        read_timeout: float,
    ) -> asyncio.Future[Answer]:
        """Send one request whose body (if any) is in memory: one write. The future resolves
        to the answer's head and its (streaming) payload. Not a coroutine: one frame less."""
        waiter = self._begin(head_only, deadline, read_timeout)
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
        read_timeout: float,
    ) -> Answer:
        """Send one request streaming its body (``drain`` backpressure); return the answer."""
        waiter = self._begin(head_only, deadline, read_timeout)
        loop = self._loop
        try:
            self.transport.write(head)  # type: ignore[union-attr]
            async for chunk in stream:
                if self.transport is None:
                    break  # the answer (or the failure) is already in the waiter
                self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                self.last_data = loop.time()  # uploading counts as activity
                if self._paused:
                    await self._drain_helper()
            if chunked and self.transport is not None:
                self.transport.write(b"0\r\n\r\n")
        except BaseException:
            # The body failed (too large, client gone): nobody will await the answer.
            self._waiter = None
            waiter.cancel()
            raise
        return await waiter

    def _begin(
        self, head_only: bool, deadline: float, read_timeout: float
    ) -> asyncio.Future[Answer]:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionBroken("connection closed before sending", False)
        loop = self._loop
        now = loop.time()
        self.answered = False
        self.timed_out = False
        self.last_data = now
        self._deadline = deadline
        self._read_timeout = read_timeout
        self._payload = None
        if head_only:  # a HEAD answer has no body whatever its Content-Length says
            self._parser = HttpResponseParser(
                self, loop, _READ_LIMIT, response_with_body=False, auto_decompress=False
            )
        self._head_only = head_only
        # llhttp is between messages here (a socket is reused only after a whole answer).
        self._whole = not head_only
        waiter = self._waiter = loop.create_future()
        self._active = True
        # The watchdog outlives an exchange: arming and cancelling a timer per request costs
        # more than relaying a small answer. A pending one is due no later than this exchange
        # needs (same timeouts, earlier start); when it fires it re-arms for whatever exchange
        # is current, or lapses if the socket is idle.
        due = min(deadline, now + read_timeout)
        if self._watch is None or self._watch_due > due:
            self._arm(due)
        return waiter

    def finish(self) -> bool:
        """End the exchange (answer fully read); True when the socket may be reused."""
        self._active = False
        payload = self._payload
        self._payload = None
        if self._head_only:
            self._parser = self._main_parser
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
        self._watch = self._loop.call_at(due, self._on_watch)
        self._watch_due = due

    def _on_watch(self) -> None:
        self._watch = None
        if not self._active:
            return  # idle socket: the next exchange arms a new watchdog
        now = self._loop.time()
        due = min(self._deadline, self.last_data + self._read_timeout)
        if now < due - 0.001:  # data arrived meanwhile, or a later exchange: wait until due
            self._arm(due)
            return
        self.timed_out = True
        exc = ExchangeTimeout("the store did not answer in time")
        self._fail(exc)
        if self._payload is not None:
            set_exception(self._payload, exc)
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


class ConnectionPool:
    """Sockets to one instance: capped, reused LIFO (warm sockets first), waiters served FIFO."""

    __slots__ = (
        "_conns",
        "_idle",
        "_open",
        "_waiters",
        "connect_timeout_s",
        "host",
        "idle_timeout_s",
        "limit",
        "port",
    )

    def __init__(
        self, host: str, port: int, *, limit: int, connect_timeout_s: float, idle_timeout_s: float
    ) -> None:
        self.host = host
        self.port = port
        self.limit = limit
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
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
            conn.idle_since = conn._loop.time()
            self._idle.append(conn)
        else:
            conn.close()  # the slot frees in connection_lost

    def close_idle(self, now: float | None = None) -> None:
        """Close idle sockets older than the idle timeout (all of them when ``now`` is None)."""
        keep = []
        for conn in self._idle:
            if now is not None and now - conn.idle_since < self.idle_timeout_s:
                keep.append(conn)
            else:
                conn.close()
        self._idle = keep

    def close(self) -> None:
        """Shutdown: close every socket, busy ones included."""
        self._idle = []
        for conn in list(self._conns):
            conn.close()

    def _lost(self, conn: UpstreamConnection) -> None:
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
        if remaining <= 0:
            raise PoolTimeout("the request's deadline passed before a connection was made")
        try:
            async with asyncio.timeout(min(self.connect_timeout_s, remaining)):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(self, loop), self.host, self.port
                )
        except TimeoutError as exc:
            if remaining < self.connect_timeout_s:
                # The request ran out of time (often after waiting for a slot), not the
                # instance: calling that a connect failure would eject a live instance.
                raise PoolTimeout("the request's deadline passed while connecting") from exc
            raise ConnectFailed(f"connect to {self.host}:{self.port} timed out") from exc
        except OSError as exc:
            raise ConnectFailed(f"connect to {self.host}:{self.port} failed: {exc}") from exc
        return conn


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(PoolTimeout("no free connection to the instance"))
