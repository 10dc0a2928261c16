"""The lingering close (RFC 9112 §9.6): how a connection ends after its last answer.

A server that closes while the client is still sending -- a refusal written before the request
body was read (413, 408, 400 on bad framing, 431), a pipelined request after the last one --
has unread bytes in its receive buffer, or gets more after the close; the kernel answers them
with RST, and an RST can destroy the answer before the client has read it (aiohttp's client
then reports "Can not write request body" instead of the 413). So the close comes in stages, as
nginx (``lingering_close``, ``lingering_time``, ``lingering_timeout``) and Apache do it: shut
down the write side once the answer is out (``write_eof``: the client sees the end of the
answer), read and discard whatever still comes, and close when the client closes its side, or
when a bound is reached:

    LINGER_TIME    total, from the moment the answer is out
    LINGER_IDLE    since the client's last byte (or since the answer was out)
    LINGER_BYTES   discarded in all

While the answer itself is still going out (a slow reader, a large answer) the clocks have not
started; that wait is bounded by the caller's ``flush_timeout`` (the edge's send timeout),
checked every ``LINGER_IDLE``. Every bound ends with ``abort``: ``close`` would wait for the
write buffer of a client that does not read.

The transport is handed to a ``LingeringClose`` protocol of its own (``set_protocol``), so the
front end's protocol reads nothing more; its ``connection_lost`` is still called when the
connection is gone, so the front end's connection accounting (and graceful shutdown, which
closes every connection it counts at once) sees a lingering connection until then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

LINGER_TIME = 2.0  # nginx's lingering_time is 30 s; an answer needs a round trip, not more
LINGER_IDLE = 0.5  # nginx's lingering_timeout is 5 s; the client is sending, or gone
LINGER_BYTES = 1 << 20  # a client sending more after its answer is not reading it


class LingeringClose(asyncio.Protocol):
    """A connection after its last answer: reads and discards, then closes (see the module)."""

    __slots__ = (
        "_begun",
        "_discarded",
        "_flush_timeout",
        "_last_byte",
        "_loop",
        "_on_lost",
        "_queued",
        "_since",
        "_timer",
        "_transport",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        on_lost: Callable[[BaseException | None], None],
        flush_timeout: float,
    ) -> None:
        self._transport = transport
        self._on_lost = on_lost
        self._flush_timeout = flush_timeout
        self._loop = asyncio.get_running_loop()
        now = self._loop.time()
        self._begun: float | None = None  # when the answer was out: the clocks start
        self._since = now  # the answer's flush last made progress
        self._queued = transport.get_write_buffer_size()
        self._last_byte = now
        self._discarded = 0
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        transport = self._transport
        transport.set_protocol(self)
        transport.write_eof()  # after the buffered answer: the client reads to its end
        if not transport.is_reading():  # paused by the front end (a full body buffer)
            transport.resume_reading()
        self._check()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._discarded += len(data)
        self._last_byte = self._loop.time()
        if self._discarded > LINGER_BYTES:
            self._transport.abort()

    def eof_received(self) -> bool:
        return False  # the client is done too: the transport closes itself

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._on_lost(exc)

    # pause_writing / resume_writing: the answer's flush is watched in ``_check``.

    # -- the bounds -----------------------------------------------------------------------------

    def _check(self) -> None:
        self._timer = None
        transport = self._transport
        now = self._loop.time()
        begun = self._begun
        if begun is None:
            queued = transport.get_write_buffer_size()
            if queued:  # the answer is still going out: no clock runs on the client yet
                if queued < self._queued:
                    self._queued, self._since = queued, now
                elif now - self._since > self._flush_timeout:
                    transport.abort()
                    return
                self._arm(now + LINGER_IDLE)
                return
            begun = self._begun = now
        due = min(begun + LINGER_TIME, max(begun, self._last_byte) + LINGER_IDLE)
        if now >= due:
            transport.abort()
            return
        self._arm(due)

    def _arm(self, when: float) -> None:
        # One timer, re-armed when it fires (not per byte: data only records the time).
        self._timer = self._loop.call_at(when, self._check)


def linger(
    transport: asyncio.Transport,
    on_lost: Callable[[BaseException | None], None],
    *,
    flush_timeout: float,
) -> None:
    """End ``transport`` after the answer already written to it: half-close, discard what the
    client still sends within the bounds, close. ``on_lost`` (the front end's
    ``connection_lost``) is called once it is gone. A transport that cannot half-close (TLS)
    is closed."""
    if transport.is_closing():
        return
    if not transport.can_write_eof():
        transport.close()
        return
    LingeringClose(transport, on_lost, flush_timeout).start()
