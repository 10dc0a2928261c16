"""Forwarding: one request to one instance of the home region, bodies streamed both ways.

The ``forward`` step of the pipeline, and the only code that speaks HTTP to the stores. It
works on an ``Exchange`` (what the front end parsed) and answers through a ``Sink`` (how the
front end writes), so it serves behind both front ends the same. Per attempt it:

* asks ``routing.decide`` for an instance of the home region (never another region: 503);
* signs the assertion and builds the request head once: the raw request target byte for byte
  (the assertion covers exactly it), the headers as ``headers`` says the store must see them;
* asks the instance's pool for a connection and sends on it: a small body already read goes in
  the same write as the head, a larger one is streamed (``body.StreamedBody``);
* relays the answer. A whole answer (the common case) goes out in one write; otherwise once
  its head is out no JSON error can follow, so a failure mid-body aborts the client connection
  (the client sees a truncated message).

The pool and its connections raise one exception type, ``errors.UpstreamFailed``: an attempt
that fails returns it, ``routing.may_retry`` says whether another instance of the SAME region
may take the request, and a failure that is not retried is raised as it is -- it is the answer
(502, or 504 for a timeout). A reused keep-alive socket that the store had already closed is
retried once on a fresh socket when the request is idempotent and replayable (that is not a
routing retry: nothing reached the store).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from residency_contract.signer import Signer

from .auth import Principal
from .body import Body, StreamedBody, too_large
from .config import EdgeSettings
from .errors import (
    ClientClosed,
    ConnectFailed,
    ConnectionBroken,
    EdgeError,
    PoolTimeout,
    Unavailable,
    UpstreamFailed,
    UpstreamTimeout,
)
from .exchange import Exchange, Sink
from .headers import downstream_response_block, encode_head, upstream_request_items
from .metrics import EdgeMetrics
from .routing import IDEMPOTENT, Refusal, RouteDecision, decide, may_retry, unreachable
from .upstream import Instance, Pools
from .wire import Answer, UpstreamConnection

_RETRY_STATUSES = frozenset({502, 503, 504})


def _ignore(_account: str) -> None:
    pass


class Forwarder:
    def __init__(self, settings: EdgeSettings, pools: Pools, metrics: EdgeMetrics) -> None:
        self.settings = settings
        self.pools = pools
        self.metrics = metrics
        self.signer = Signer({r.name: r.assertion_secret for r in settings.regions})
        # Round-robin position per region: one shared counter would hand a region only the
        # ticks the other regions' traffic leaves it (strictly alternating accounts of two
        # regions: every eu request got an even tick, so one eu instance took them all).
        self._ticks: dict[str, int] = dict.fromkeys(self.pools.by_region, 0)
        # The loop's clock, looked up once (get_running_loop() costs a getpid() per call).
        self._loop_time = asyncio.get_running_loop().time
        self._read_timeout = settings.timeouts.read
        self._retry_children = {r.name: metrics.retries.labels(r.name) for r in settings.regions}
        # What a store's 421 tells the registry cache (app: ``accounts.forget``).
        self.misrouted: Callable[[str], None] = _ignore
        self._refusal_children = {
            r.name: metrics.cross_region_refusals.labels(r.name) for r in settings.regions
        }

    async def forward(self, ex: Exchange, principal: Principal, received: Body, sink: Sink) -> None:
        """Forward ``ex`` for ``principal`` with the body ``receive_body`` gave, retrying inside
        its home region as ``may_retry`` allows."""
        s = self.settings
        # Body: nothing, a small buffered (replayable) body, or a stream read at most once.
        body: bytes | None = None
        streamed: StreamedBody | None = None
        if isinstance(received, StreamedBody):
            streamed = received
        else:
            body = received
        chunked = streamed is not None and ex.content_length is None
        line = rest = b""
        pools = self.pools.by_region
        tried: set[int] = set()
        failure: UpstreamFailed | None = None
        while True:
            tick = self._ticks.get(ex.region, 0)
            decision = decide(ex.region, pools, self.pools.clock(), tried=tried, tick=tick)
            if isinstance(decision, Refusal):
                if decision.reason != "instances_exhausted":
                    raise self._refuse(decision)
                raise self._final(ex, failure or UpstreamFailed(), tried)
            if not ex.attempts:
                # Only a first try moves the rotation: if retries did, the instance that
                # fails (and is retried away from) would get every first try.
                self._ticks[ex.region] = tick + 1
            inst = pools[ex.region][decision.index]
            tried.add(decision.index)
            ex.attempts += 1
            ex.upstream = inst.name
            if ex.attempts > 1:
                self._retry_children[ex.region].inc()
            if not line:
                line, rest = self._request_parts(ex, principal, chunked)
            head = line + inst.host_line + rest
            failure = await self._attempt(ex, inst, head, body, streamed, chunked, tried, sink)
            if failure is None:
                return
            replayable = streamed is None or not streamed.started
            if not may_retry(
                ex.method,
                failure,
                body_replayable=replayable,
                attempt=ex.attempts,
                max_attempts=s.max_attempts,
            ):
                raise self._final(ex, failure, tried)

    def _final(self, ex: Exchange, failure: UpstreamFailed, tried: set[int]) -> EdgeError:
        """The answer to a failure that is not retried: the failure itself, except a connect
        failure that left no instance of the region to try (ejected, or tried), which is the
        region unavailable (503), not "bad gateway"."""
        if isinstance(failure, ConnectFailed):
            now = self.pools.clock()
            if isinstance(decide(ex.region, self.pools.by_region, now, tried=tried), Refusal):
                return self._refuse(unreachable(ex.region, self.pools.by_region, now))
        return failure

    def _refuse(self, refusal: Refusal) -> Unavailable:
        if refusal.others_available:
            child = self._refusal_children.get(refusal.region)
            if child is None:
                child = self.metrics.cross_region_refusals.labels(refusal.region)
            child.inc()
        if refusal.reason == "region_not_configured":
            return Unavailable(
                "region_not_configured",
                "this edge does not serve the account's home region",
                retry_after=self.settings.retry_after_s,
            )
        return Unavailable(
            "region_unavailable",
            "the account's home region has no healthy instance; it is never served elsewhere",
            retry_after=self.settings.retry_after_s,
        )

    def _request_parts(
        self, ex: Exchange, principal: Principal, chunked: bool
    ) -> tuple[bytes, bytes]:
        """The request line and everything after "Host: ...\\r\\n" (the Host line depends on
        the instance): headers as the store must see them, the signed assertion among them."""
        assertion = self.signer.sign(
            account=ex.account or "",
            region=ex.region,
            principal=principal.name,
            roles=principal.roles,
            method=ex.method,
            target=ex.target,
        )
        items = upstream_request_items(
            ex.headers,
            request_id=ex.request_id,
            peer=ex.peer,
            scheme=ex.scheme,
            via=self.settings.via,
            assertion=assertion,
            host=ex.host,
        )
        if chunked:
            items.append(("Transfer-Encoding", "chunked"))
        line = f"{ex.method} {ex.target} HTTP/1.1\r\n".encode("utf-8", "surrogateescape")
        return line, encode_head("", items)

    async def _attempt(
        self,
        ex: Exchange,
        inst: Instance,
        head: bytes,
        body: bytes | None,
        streamed: StreamedBody | None,
        chunked: bool,
        tried: set[int],
        sink: Sink,
    ) -> UpstreamFailed | None:
        """One try: None once the answer was relayed, else how it failed."""
        inst.outstanding += 1
        t0 = time.perf_counter()
        try:
            answer = await self._exchange(ex, inst, head, body, streamed, chunked)
            if isinstance(answer, UpstreamFailed):
                return answer
            conn, answer = answer
            self.metrics.observe_upstream(ex.region, time.perf_counter() - t0)
            status = answer.status
            if status == 503:  # is it the instance's failure or its dependency's?
                self.pools.answered(inst, status, answer.block, answer.body)
            else:
                self.pools.answered(inst, status)
            if status == 421 and ex.account:
                # The store says the account is not (or no longer) its region's: this
                # edge's registry entry is stale (a move flipped). The answer stands; the
                # next request reads the registry instead of waiting out the TTL.
                self.misrouted(ex.account)
            if status in _RETRY_STATUSES and self._can_retry_status(ex, streamed, tried):
                inst.pool.release(conn, False)
                return UpstreamFailed(f"{inst.name} answered {status}")
            await self._relay(ex, inst, conn, answer, sink)
            return None
        finally:
            inst.outstanding -= 1

    async def _exchange(
        self,
        ex: Exchange,
        inst: Instance,
        head: bytes,
        body: bytes | None,
        streamed: StreamedBody | None,
        chunked: bool,
    ) -> tuple[UpstreamConnection, Answer] | UpstreamFailed:
        """A connection from the pool, the request sent on it and the answer's head, or how
        that failed (the pool's and the connection's own exceptions, bookkept)."""
        pool = inst.pool
        deadline = ex.deadline
        head_only = ex.method == "HEAD"
        fresh = False
        while True:
            conn = None if fresh else pool.take_idle()
            if conn is None:
                try:
                    conn = await pool.acquire(deadline, fresh=fresh)
                except ConnectFailed as exc:
                    self.pools.connect_failed(inst, exc)
                    return exc
                except PoolTimeout as exc:
                    return exc
            reused = conn.served > 0
            try:
                if streamed is None:
                    answer = await conn.send(head, body, head_only=head_only, deadline=deadline)
                else:
                    answer = await conn.send_stream(
                        head,
                        streamed.chunks(),
                        chunked=chunked,
                        head_only=head_only,
                        deadline=deadline,
                    )
                return conn, answer
            except UpstreamFailed as exc:
                pool.release(conn, False)
                self._check_body(streamed)
                if isinstance(exc, UpstreamTimeout) or conn.timed_out:
                    self._timed_out(inst, conn)
                    return exc if isinstance(exc, UpstreamTimeout) else UpstreamTimeout(str(exc))
                stale = (
                    reused
                    and not fresh
                    and isinstance(exc, ConnectionBroken)
                    and not exc.answered
                    and ex.method in IDEMPOTENT
                    and streamed is None
                )
                if stale:  # the store had closed this idle socket: nothing reached it
                    fresh = True
                    continue
                self.pools.failed(inst, "broken connections")
                return exc
            except EdgeError:
                # The client's side failed (body too large, too slow, malformed, gone):
                # the store saw part of a request, so this socket is done.
                pool.release(conn, False)
                raise

    async def _relay(
        self, ex: Exchange, inst: Instance, conn: UpstreamConnection, answer: Answer, sink: Sink
    ) -> None:
        """The answer to the client; the socket back to the pool when it was read whole."""
        pool = inst.pool
        block = downstream_response_block(
            answer.block,
            answer.named,
            request_id=ex.request_id,
            region=ex.region,
            via=self.settings.via,
        )
        ex.status = answer.status
        data = answer.whole()
        if data is not None:
            # The whole answer is here: give the socket back, then one write to the client.
            pool.release(conn, conn.finish() and not answer.should_close)
            ex.started = True
            await sink.respond(answer.status, answer.reason, block, data)
            return
        ex.started = True
        try:
            await sink.start(answer.status, answer.reason, block)
            async for chunk in answer.chunks():
                await sink.write(chunk)
            await sink.end()
        except (UpstreamFailed, ClientClosed, OSError) as exc:
            # The store's side failed mid-body, or the client's (a sink raises ClientClosed,
            # or aiohttp.web's an OSError). Head is out: the only honest signal left is to
            # cut the connection.
            ex.error = f"aborted:{type(exc).__name__}"
            if isinstance(exc, ClientClosed):
                ex.status = ClientClosed.status
            pool.release(conn, False)
            sink.abort()
            return
        pool.release(conn, conn.finish() and not answer.should_close)

    def _timed_out(self, inst: Instance, conn: UpstreamConnection) -> None:
        # The instance's own failure only when it was silent for the whole read timeout; an
        # attempt that the request's deadline cut short says little about the instance.
        if self._loop_time() >= conn.last_data + self._read_timeout - 0.001:
            self.pools.failed(inst, "timeouts")

    def _check_body(self, streamed: StreamedBody | None) -> None:
        # A size overrun inside the body stream surfaces as some send error; say what it was.
        if streamed is not None and streamed.too_large:
            raise too_large(self.settings.max_body_bytes)

    def _can_retry_status(
        self, ex: Exchange, streamed: StreamedBody | None, tried: set[int]
    ) -> bool:
        if not may_retry(
            ex.method,
            _ANSWERED_5XX,
            body_replayable=streamed is None,
            attempt=ex.attempts,
            max_attempts=self.settings.max_attempts,
        ):
            return False
        # Only give up this answer if another instance could actually take the retry.
        nxt = decide(ex.region, self.pools.by_region, self.pools.clock(), tried=tried)
        return isinstance(nxt, RouteDecision)


_ANSWERED_5XX = UpstreamFailed("a 502, 503 or 504 answer")  # what may_retry judges it as
