"""Forwarding: one request to one instance of the home region, bodies streamed both ways.

This is the only module that speaks HTTP to the stores. It works on an ``Exchange`` (what the
front end parsed) and answers through a ``Sink`` (how the front end writes), so the same code
serves behind the production listener (``http_server``) and behind ``aiohttp.web``
(``app.handle``). It:

* forwards the raw request target byte for byte -- the signed assertion covers exactly it;
* streams the request body, counting bytes against ``max_body_bytes`` (413), except that a
  small body with a known length is read first so it can be replayed on a retry (and sent in
  the same write as the head);
* asks ``routing.decide`` for an instance and ``routing.may_retry`` whether a failure may be
  retried on another instance of the SAME region;
* talks to the instance over ``upstream_conn`` (pooled keep-alive sockets, aiohttp's C response
  parser) and converts its errors at this boundary: connect failed -> eject, retry or 503/502;
  read gap / deadline / no free socket -> 504; broken connection -> 502. A reused keep-alive
  socket that the store had already closed is retried once on a fresh socket when the request
  is idempotent and replayable (that is not a routing retry: nothing reached the store);
* streams the response back; once its head is out no JSON error can follow, so a failure
  mid-body aborts the client connection (the client sees a truncated message). A response
  that arrived whole (the common case) goes out in one write.
"""

from __future__ import annotations

import asyncio
import logging
import time

from residency_contract.signer import Signer

from .auth import Principal
from .body import Body, StreamedBody, too_large
from .config import EdgeSettings
from .errors import (
    ClientClosed,
    EdgeError,
    Unavailable,
    UpstreamFailed,
    UpstreamTimeout,
)
from .exchange import Exchange, Sink
from .headers import downstream_response_block, encode_head, upstream_request_items
from .metrics import EdgeMetrics
from .routing import (
    CONNECT_FAILED,
    IDEMPOTENT,
    SEND_FAILED,
    TIMED_OUT,
    UPSTREAM_5XX,
    Refusal,
    RouteDecision,
    decide,
    may_retry,
)
from .upstream import Instance, Pools
from .wire import (
    ConnectFailed,
    ConnectionBroken,
    HttpProcessingError,
    PoolTimeout,
    UpstreamConnection,
)

log = logging.getLogger("edge_router.proxy")

_RETRY_STATUSES = frozenset({502, 503, 504})
_BROKEN = (ConnectionError, OSError, HttpProcessingError)


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
        self._retry_children = {r.name: metrics.retries.labels(r.name) for r in settings.regions}
        self._refusal_children = {
            r.name: metrics.cross_region_refusals.labels(r.name) for r in settings.regions
        }

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
            principal=principal.app_key,
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

    async def forward(self, ex: Exchange, principal: Principal, received: Body, sink: Sink) -> None:
        """Forward ``ex`` for ``principal`` with the body ``receive_body`` gave, retrying inside
        its home region as ``may_retry`` allows."""
        s = self.settings
        method = ex.method
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
        failure = ""
        while True:
            now = self.pools.clock()
            tick = self._ticks.get(ex.region, 0)
            decision = decide(ex.region, pools, now, tried=tried, tick=tick)
            if isinstance(decision, Refusal):
                if decision.reason == "instances_exhausted":
                    raise self._error_for(failure)
                raise self._refuse(decision)
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
            outcome = await self._attempt(ex, inst, head, body, streamed, chunked, tried, sink)
            if outcome is None:
                return
            failure = outcome
            replayable = streamed is None or not streamed.started
            if not may_retry(
                method,
                failure,
                body_replayable=replayable,
                attempt=ex.attempts,
                max_attempts=s.max_attempts,
            ):
                if failure == CONNECT_FAILED:
                    # If that emptied the region, say so (503), not "bad gateway".
                    after = decide(ex.region, pools, self.pools.clock())
                    if isinstance(after, Refusal) and after.reason == "region_unavailable":
                        raise self._refuse(after)
                raise self._error_for(failure)

    def _error_for(self, failure: str) -> Exception:
        if failure == TIMED_OUT:
            return UpstreamTimeout("upstream_timeout", "the home region did not answer in time")
        return UpstreamFailed("upstream_failed", "the home region's instance failed to answer")

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
    ) -> str | None:
        """One try: None once the answer was relayed, else the kind of failure (``routing``)."""
        s = self.settings
        pool = inst.pool
        deadline = ex.deadline
        inst.outstanding += 1
        t0 = time.perf_counter()
        try:
            fresh = False
            head_only = ex.method == "HEAD"
            while True:
                conn = None if fresh else pool.take_idle()
                if conn is None:
                    try:
                        conn = await pool.acquire(deadline, fresh=fresh)
                    except ConnectFailed:
                        self.pools.connect_failed(inst)
                        return CONNECT_FAILED
                    except PoolTimeout:
                        return TIMED_OUT
                reused = conn.served > 0
                try:
                    if streamed is None:
                        answer = await conn.send(
                            head,
                            body,
                            head_only=head_only,
                            deadline=deadline,
                            read_timeout=s.read_timeout_s,
                        )
                    else:
                        answer = await conn.send_stream(
                            head,
                            streamed.chunks(),
                            chunked=chunked,
                            head_only=head_only,
                            deadline=deadline,
                            read_timeout=s.read_timeout_s,
                        )
                    break
                except EdgeError:
                    # The client's side failed (body too large, too slow, malformed, gone):
                    # the store saw part of a request, so this socket is done.
                    pool.release(conn, False)
                    raise
                except TimeoutError:
                    pool.release(conn, False)
                    self._check_body(streamed)
                    self._timed_out(inst, conn)
                    return TIMED_OUT
                except _BROKEN as exc:
                    pool.release(conn, False)
                    self._check_body(streamed)
                    if conn.timed_out:
                        self._timed_out(inst, conn)
                        return TIMED_OUT
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
                    return SEND_FAILED
            self.metrics.observe_upstream(ex.region, time.perf_counter() - t0)
            status = answer.status
            if status == 503:  # is it the instance's failure or its dependency's?
                self.pools.answered(inst, status, answer.block, answer.body)
            else:
                self.pools.answered(inst, status)
            if status in _RETRY_STATUSES and self._can_retry_status(ex, streamed, tried):
                pool.release(conn, False)
                return UPSTREAM_5XX
            block = downstream_response_block(
                answer.block, answer.named, request_id=ex.request_id, region=ex.region, via=s.via
            )
            ex.status = status
            payload = answer.payload
            if payload is None or (payload.is_eof() and payload.exception() is None):
                # The whole answer is here (read whole, or llhttp's payload already complete):
                # give the socket back, then one write to the client.
                data = answer.body if payload is None else payload.read_nowait(-1)
                pool.release(conn, conn.finish() and not answer.should_close)
                ex.started = True
                await sink.respond(status, answer.reason, block, data)
                return None
            ex.started = True
            try:
                await sink.start(status, answer.reason, block)
                while True:
                    chunk = await payload.readany()
                    if not chunk:
                        break
                    await sink.write(chunk)
                await sink.end()
            except (*_BROKEN, TimeoutError, ClientClosed) as exc:
                # Head is out: the only honest signal left is to cut the connection.
                ex.error = f"aborted:{type(exc).__name__}"
                if isinstance(exc, ClientClosed):
                    ex.status = ClientClosed.status
                pool.release(conn, False)
                sink.abort()
                return None
            pool.release(conn, conn.finish() and not answer.should_close)
            return None
        finally:
            inst.outstanding -= 1

    def _timed_out(self, inst: Instance, conn: UpstreamConnection) -> None:
        # The instance's own failure only when it was silent for the whole read timeout; an
        # attempt that the request's deadline cut short says little about the instance.
        if self._loop_time() >= conn.last_data + self.settings.read_timeout_s - 0.001:
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
            UPSTREAM_5XX,
            body_replayable=streamed is None,
            attempt=ex.attempts,
            max_attempts=self.settings.max_attempts,
        ):
            return False
        # Only give up this answer if another instance could actually take the retry.
        nxt = decide(ex.region, self.pools.by_region, self.pools.clock(), tried=tried)
        return isinstance(nxt, RouteDecision)
