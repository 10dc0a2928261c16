"""Forwarding: one request to one instance of the home region, bodies streamed both ways.

This is the only module that speaks HTTP to the stores, so it can later be swapped for a
lower-level implementation without touching policy. It:

* forwards the raw request target byte for byte (``yarl.URL(..., encoded=True)``: nothing is
  re-quoted or normalised) -- the signed assertion covers exactly that target;
* streams the request body, counting bytes against ``max_body_bytes`` (413), except that a
  small body with a known length is read first so it can be replayed on a retry;
* asks ``routing.decide`` for an instance and ``routing.may_retry`` whether a failure may be
  retried on another instance of the SAME region;
* converts aiohttp client errors at this boundary: connect refused/timed out -> eject, retry
  or 503/502; read/total timeout -> 504; broken connection -> 502;
* streams the response back; once its headers are sent no JSON error can follow, so a
  failure mid-body aborts the client connection (the client sees a truncated message).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from profile_store.assertion import sign

from .config import EdgeSettings
from .errors import PayloadTooLarge, Unavailable, UpstreamFailed, UpstreamTimeout
from .headers import downstream_response_headers, upstream_request_headers
from .metrics import EdgeMetrics
from .routing import (
    CONNECT_FAILED,
    SEND_FAILED,
    TIMED_OUT,
    UPSTREAM_5XX,
    Refusal,
    RouteDecision,
    decide,
    may_retry,
)
from .upstream import Instance, Pools

log = logging.getLogger("edge_router.proxy")

_RETRY_STATUSES = frozenset({502, 503, 504})
_CONNECT_ERRORS = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
_TIMEOUTS = (aiohttp.ServerTimeoutError, TimeoutError)
_CHUNK = 64 * 1024


class Exchange:
    """What one request carried through the pipeline (also the access-log record)."""

    __slots__ = (
        "account",
        "attempts",
        "error",
        "method",
        "principal",
        "region",
        "request_id",
        "roles",
        "route",
        "started",
        "status",
        "target",
        "upstream",
    )

    def __init__(self, method: str, target: str, request_id: str) -> None:
        self.method = method
        self.target = target
        self.request_id = request_id
        self.account: str | None = None
        self.region = "none"
        self.route = "other"
        self.principal: str | None = None
        self.roles: frozenset[str] = frozenset()
        self.upstream: str | None = None
        self.attempts = 0
        self.status = 0
        self.error: str | None = None
        self.started = False  # response headers sent: no JSON error possible any more


class _StreamedBody:
    """The client's body as an async iterator, with the size limit enforced while streaming."""

    __slots__ = ("_content", "_limit", "started", "too_large")

    def __init__(self, content: aiohttp.StreamReader, limit: int) -> None:
        self._content = content
        self._limit = limit
        self.started = False
        self.too_large = False

    async def chunks(self) -> AsyncIterator[bytes]:
        self.started = True
        seen = 0
        async for chunk in self._content.iter_chunked(_CHUNK):
            seen += len(chunk)
            if seen > self._limit:
                self.too_large = True
                raise PayloadTooLarge("payload_too_large", "request body is over the limit")
            yield chunk


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge("payload_too_large", f"request body is over {limit} bytes")


class Forwarder:
    def __init__(self, settings: EdgeSettings, pools: Pools, metrics: EdgeMetrics) -> None:
        self.settings = settings
        self.pools = pools
        self.metrics = metrics
        self.keys = {r.name: r.assertion_secret for r in settings.regions}
        self._tick = itertools.count()
        self._retry_children = {r.name: metrics.retries.labels(r.name) for r in settings.regions}
        self._refusal_children = {
            r.name: metrics.cross_region_refusals.labels(r.name) for r in settings.regions
        }

    def check_declared_length(self, request: web.Request) -> None:
        length = request.content_length
        if length is not None and length > self.settings.max_body_bytes:
            raise _too_large(self.settings.max_body_bytes)

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

    async def forward(self, request: web.Request, ex: Exchange) -> web.StreamResponse:
        s = self.settings
        method = ex.method
        # Body: nothing, a small buffered (replayable) body, or a stream read at most once.
        body: bytes | None = None
        streamed: _StreamedBody | None = None
        if request.body_exists:
            length = request.content_length
            if length is not None and length <= s.buffer_body_bytes:
                body = await request.content.readexactly(length) if length else b""
            else:
                streamed = _StreamedBody(request.content, s.max_body_bytes)

        assertion = sign(
            self.keys[ex.region],
            account=ex.account or "",
            region=ex.region,
            principal=ex.principal or "",
            roles=ex.roles,
            method=method,
            target=ex.target,
        )
        headers = upstream_request_headers(
            request.headers,
            request_id=ex.request_id,
            peer=request.remote,
            scheme=request.scheme,
            via=s.via,
            assertion=assertion,
        )
        pools = self.pools.by_region
        tried: set[int] = set()
        failure = ""
        while True:
            now = self.pools.clock()
            decision = decide(ex.region, pools, now, tried=tried, tick=next(self._tick))
            if isinstance(decision, Refusal):
                if decision.reason == "instances_exhausted":
                    raise self._error_for(failure)
                raise self._refuse(decision)
            inst = pools[ex.region][decision.index]
            tried.add(decision.index)
            ex.attempts += 1
            ex.upstream = inst.name
            if ex.attempts > 1:
                self._retry_children[ex.region].inc()
            data = body if streamed is None else streamed.chunks()
            outcome = await self._attempt(request, ex, inst, headers, data, streamed, tried)
            if not isinstance(outcome, str):
                return outcome
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
        request: web.Request,
        ex: Exchange,
        inst: Instance,
        headers: CIMultiDict[str],
        data: bytes | AsyncIterator[bytes] | None,
        streamed: _StreamedBody | None,
        tried: set[int],
    ) -> web.StreamResponse | str:
        """One try: the relayed response, or the kind of failure (see ``routing``)."""
        assert inst.session is not None
        url = URL(inst.base + ex.target, encoded=True)
        inst.outstanding += 1
        t0 = time.perf_counter()
        try:
            try:
                resp = await inst.session.request(
                    ex.method, url, headers=headers, data=data, allow_redirects=False
                )
            except _CONNECT_ERRORS:
                self.pools.connect_failed(inst)
                return CONNECT_FAILED
            except PayloadTooLarge:
                raise
            except _TIMEOUTS:
                self._check_body(streamed)
                return TIMED_OUT
            except (aiohttp.ClientError, OSError):
                self._check_body(streamed)
                return SEND_FAILED
            self._check_body(streamed)
            self.metrics.observe_upstream(ex.region, time.perf_counter() - t0)
            status = resp.status
            self.pools.answered(inst, status)
            if status in _RETRY_STATUSES and self._can_retry_status(ex, streamed, tried):
                resp.release()
                return UPSTREAM_5XX
            try:
                return await self._relay(request, ex, resp)
            finally:
                resp.release()
        finally:
            inst.outstanding -= 1

    def _check_body(self, streamed: _StreamedBody | None) -> None:
        # A size overrun inside the body stream surfaces as some client error; say what it was.
        if streamed is not None and streamed.too_large:
            raise _too_large(self.settings.max_body_bytes)

    def _can_retry_status(
        self, ex: Exchange, streamed: _StreamedBody | None, tried: set[int]
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

    async def _relay(
        self, request: web.Request, ex: Exchange, resp: aiohttp.ClientResponse
    ) -> web.StreamResponse:
        out = web.StreamResponse(
            status=resp.status,
            reason=resp.reason,
            headers=downstream_response_headers(
                resp.headers, request_id=ex.request_id, region=ex.region, via=self.settings.via
            ),
        )
        ex.status = resp.status
        await out.prepare(request)
        ex.started = True
        try:
            async for chunk in resp.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # Headers are out: the only honest signal left is to cut the connection.
            ex.error = f"aborted:{type(exc).__name__}"
            resp.close()
            transport = request.transport
            if transport is not None:
                transport.abort()
        return out
