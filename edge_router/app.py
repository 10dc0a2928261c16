"""The edge as aiohttp applications: the public proxy app and the admin app.

``serve_exchange`` is a list of small named policy steps, run in order on an ``Exchange``; each
may raise an ``EdgeError`` and only ``serve_exchange`` turns one into JSON
(``errors.error_parts``), and only if no response byte was sent yet::

    check_message  HTTP version, transfer coding, header count, Host 505 / 501 / 431 / 400
    check_path     raw target policy + route template                400 / 404
    find_account   Host / ?an= -> account name                       400
    load_account   registry (cached, single flight, stale-while-revalidate,
                   circuit breaker)                                  404 / 503
                   (``cached_account``: the same without awaiting, on a fresh hit)
    authenticate   app key + token, then account status              401 / 403
                   (``authenticated``: the success path, pure)
    rate_limit     per-account token bucket                          429
    check_length   declared Content-Length                           413
    receive_body   100-continue; a small body read whole             408 / 400 / 499
    admit          bound on concurrent forwards                      503 overloaded
    forward        home-region instance, streamed                    502 / 503 / 504

Admission comes after the body: a client that sends a head and then nothing (or trickles)
holds a connection until the body timeout, never one of ``max_concurrent_requests``. Every
wait from the first step to the last byte of the answer is bounded by one deadline
(``Forwarder.start_clock``: ``total_timeout_s``). A client that goes away is a 499 in the
metrics and the access log (nginx's "client closed request"), never a 500.

Two front ends feed it: the production listener (``http_server``: aiohttp's C request parser
on a bare asyncio protocol, no per-request ``web.Request``) and ``handle`` below, which adapts
an ``aiohttp.web`` request so ``create_app`` works anywhere an ``Application`` does (tests,
embedding). Both run exactly the same steps and the same forwarder.

Shared state lives under typed ``web.AppKey``s and is created and closed in ``cleanup_ctx``:
the registry client, the cache, the per-instance connection pools and the health checker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from . import logfilter
from .auth import APP_KEY_HEADER, APP_TOKEN_HEADER, authenticate, check_key
from .breaker import CLOSED, OPEN, Breaker
from .cache import MISSING, CachedLookup
from .config import EdgeSettings
from .errors import (
    ClientClosed,
    EdgeError,
    ErrorAnswer,
    NotFound,
    RateLimited,
    Unavailable,
    error_response,
)
from .exchange import Exchange, Sink
from .headers import REQUEST_ID, Block, request_id, split_line
from .metrics import CONTENT_TYPE, EdgeMetrics
from .proxy import Forwarder
from .ratelimit import RateLimiter
from .registry import AccountRecord, DynamoRegistry, KeyOwner, RegistryReader
from .resolve import AccountResolver
from .routes import RouteTable, split_target
from .upstream import Pools
from .wire import SERVICE, Service, close_after_answer, origin_form
from .wire import check_message as check_framing

access_log = logging.getLogger("edge_router.access")
log = logging.getLogger("edge_router")

RegistryFactory = Callable[[EdgeSettings], AbstractAsyncContextManager[RegistryReader]]


@dataclass(slots=True)
class EdgeState:
    settings: EdgeSettings
    metrics: EdgeMetrics
    resolver: AccountResolver
    routes: RouteTable
    accounts: CachedLookup[AccountRecord]
    key_owners: CachedLookup[KeyOwner]
    limiter: RateLimiter
    pools: Pools
    forwarder: Forwarder
    access_log: bool = False  # settings.access_log, read once
    in_flight: int = 0


SETTINGS = web.AppKey("edge_settings", EdgeSettings)
METRICS = web.AppKey("edge_metrics", EdgeMetrics)
STATE = web.AppKey("edge_state", EdgeState)


def default_registry(settings: EdgeSettings) -> DynamoRegistry:
    return DynamoRegistry(
        table=settings.registry_table,
        endpoint=settings.registry_endpoint,
        region=settings.registry_region,
        connect_timeout_s=settings.registry_connect_timeout_s,
        read_timeout_s=settings.registry_read_timeout_s,
        max_attempts=settings.registry_max_attempts,
    )


def _state_ctx(
    registry_factory: RegistryFactory, clock: Callable[[], float]
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        s = app[SETTINGS]
        metrics = app[METRICS]
        metrics.bind_regions([r.name for r in s.regions])
        lookup = metrics.lookup
        async with registry_factory(s) as registry:
            # One breaker for both lookups: they read the same registry table.
            breaker = Breaker(
                failure_threshold=s.registry_breaker_failures,
                open_s=s.registry_breaker_open_s,
                clock=clock,
                on_change=_breaker_changed(metrics),
            )
            cache_args = dict(
                maxsize=s.cache_size,
                ttl_s=s.cache_ttl_s,
                negative_ttl_s=s.negative_ttl_s,
                stale_if_error_s=s.stale_if_error_s,
                stale_while_revalidate_s=s.stale_while_revalidate_s,
                breaker=breaker,
                wait_s=s.registry_wait_s,
                clock=clock,
                retry_after_s=s.retry_after_s,
            )
            accounts: CachedLookup[AccountRecord] = CachedLookup(
                registry.get_account,
                on_result=lookup,
                on_stale=metrics.stale_served("account"),
                **cache_args,
            )
            key_owners: CachedLookup[KeyOwner] = CachedLookup(
                registry.get_key_owner, on_stale=metrics.stale_served("key_owner"), **cache_args
            )
            pools = Pools(s, metrics, clock)
            await pools.start()
            try:
                app[STATE] = EdgeState(
                    settings=s,
                    metrics=metrics,
                    resolver=AccountResolver(s.host_suffixes),
                    routes=RouteTable(),
                    accounts=accounts,
                    key_owners=key_owners,
                    limiter=RateLimiter(s.rate_limit_rps, s.rate_limit_burst, s.cache_size * 10),
                    pools=pools,
                    forwarder=Forwarder(s, pools, metrics),
                    access_log=s.access_log,
                )
                state = app[STATE]
                app[SERVICE] = Service(
                    serve=lambda ex, sink: serve_exchange(state, ex, sink),
                    settings=s,
                    timed_out=lambda kind: metrics.client_timeouts.labels(kind).inc(),
                )
                metrics.in_flight_source = lambda: state.in_flight
                metrics.start_flusher(asyncio.get_running_loop())
                yield
            finally:
                metrics.stop_flusher()
                await pools.close()

    return ctx


def _breaker_changed(metrics: EdgeMetrics) -> Callable[[str, str], None]:
    def changed(old: str, new: str) -> None:
        metrics.breaker_changed(old, new)
        if new == OPEN:
            log.warning(
                "registry circuit open (was %s): known accounts are served from cache, "
                "unknown ones get 503 registry_unavailable at once",
                old,
            )
        elif new == CLOSED:
            log.warning("registry circuit closed: the registry answers again")

    return changed


# -- the policy steps ----------------------------------------------------------------------


def admit(st: EdgeState) -> None:
    if st.in_flight >= st.settings.max_concurrent_requests:
        raise Unavailable("overloaded", "the edge is at its concurrency limit", retry_after=1)


def check_message(ex: Exchange) -> None:
    check_framing(ex.version, ex.headers, ex.header_lines, absolute=ex.absolute)


def check_path(st: EdgeState, ex: Exchange) -> None:
    ex.route = st.routes.match(split_target(ex.target))


def find_account(st: EdgeState, ex: Exchange) -> None:
    an = ex.url.query.getall("an", ()) if ex.url is not None and "an=" in ex.target else ()
    ex.account = st.resolver.resolve(ex.host, an)


def cached_account(st: EdgeState, ex: Exchange) -> AccountRecord | None:
    """``load_account`` without awaiting when the cache has a fresh answer; None otherwise."""
    assert ex.account is not None
    found = st.accounts.peek(ex.account)
    if found is MISSING:
        return None
    return _found(ex, found)  # type: ignore[arg-type]


async def load_account(st: EdgeState, ex: Exchange) -> AccountRecord:
    assert ex.account is not None
    return _found(ex, await st.accounts.get(ex.account))


def _found(ex: Exchange, record: AccountRecord | None) -> AccountRecord:
    if record is None:
        raise NotFound("unknown_account", "no such account")
    ex.region = record.region
    return record


def authenticated(ex: Exchange, record: AccountRecord) -> bool:
    """The success path of ``authenticate_step``, pure and without awaiting."""
    h = ex.headers
    principal, _reason, _digest = check_key(record, h.get(APP_KEY_HEADER), h.get(APP_TOKEN_HEADER))
    if principal is None or not record.active:
        return False
    ex.principal = principal.app_key
    ex.roles = principal.roles
    return True


async def authenticate_step(st: EdgeState, ex: Exchange, record: AccountRecord) -> None:
    h = ex.headers
    try:
        principal = await authenticate(
            record, h.get(APP_KEY_HEADER), h.get(APP_TOKEN_HEADER), st.key_owners.get
        )
    except EdgeError as exc:
        st.metrics.auth_failures.labels(getattr(exc, "reason", exc.code)).inc()
        raise
    ex.principal = principal.app_key
    ex.roles = principal.roles


def rate_limit(st: EdgeState, ex: Exchange) -> None:
    assert ex.account is not None
    wait = st.limiter.check(ex.account, time.monotonic())
    if wait:
        st.metrics.rate_limited.labels(ex.region).inc()
        raise RateLimited("rate_limited", "too many requests for this account", retry_after=wait)


# -- the pipeline ----------------------------------------------------------------------------


async def serve_exchange(st: EdgeState, ex: Exchange, sink: Sink) -> ErrorAnswer | None:
    """Run the steps and forward. Returns the refusal to render, or None once answered."""
    forwarder = st.forwarder
    ex.t0 = time.perf_counter()
    forwarder.start_clock(ex)
    counted = False
    refused: ErrorAnswer | None = None
    try:
        check_message(ex)
        check_path(st, ex)
        find_account(st, ex)
        record = cached_account(st, ex) or await load_account(st, ex)
        if not authenticated(ex, record):
            await authenticate_step(st, ex, record)  # failures: 401/403 and their reasons
        rate_limit(st, ex)
        forwarder.check_declared_length(ex)
        body = await forwarder.receive_body(ex, sink)
        admit(st)
        st.in_flight += 1
        counted = True
        await forwarder.forward(ex, sink, body)
    except ClientClosed:
        # Nobody to answer; not the edge's failure, and not an error worth a traceback.
        ex.error = ClientClosed.code
        ex.status = ClientClosed.status
    except EdgeError as exc:
        if ex.started:  # cannot happen by construction; never write JSON after streaming
            raise
        ex.error = exc.code
        ex.status = exc.status
        refused = error_response(exc, ex.request_id, ex.region)
    except Exception as exc:
        if ex.started:
            raise
        log.exception("unexpected error while handling a request")
        ex.error = f"internal:{type(exc).__name__}"
        ex.status = 500
        refused = error_response(EdgeError(), ex.request_id)
    finally:
        if counted:
            st.in_flight -= 1
        done(st, ex)
    return refused


def done(st: EdgeState, ex: Exchange) -> None:
    """The end of every exchange, answered or refused: metrics and the access log."""
    elapsed = time.perf_counter() - ex.t0
    st.metrics.observe_request(ex.region, ex.method, ex.route, ex.status or 500, elapsed)
    if st.access_log and access_log.isEnabledFor(logging.INFO):
        _log_access(ex, elapsed)


# -- the aiohttp.web front end ---------------------------------------------------------------


class _WebSink:
    """``Sink`` over an ``aiohttp.web`` request (``StreamResponse``)."""

    __slots__ = ("request", "response")

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response: web.StreamResponse | None = None

    def send_continue(self) -> None:
        pass  # aiohttp's expect handler answered "100 Continue" already

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


async def handle(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
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
        version=tuple(request.version),  # type: ignore[arg-type]
        header_lines=len(request.raw_headers),
        host=authority,
    )
    sink = _WebSink(request)
    refused = await serve_exchange(st, ex, sink)
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
    the listener. ``force_close`` after the answer is out: otherwise aiohttp would linger up to
    ``lingering_time`` reading a body that may never end (a chunk its parser refused fails
    nothing), then answer that parser error as one more message."""
    resp.force_close()
    await resp.prepare(request)
    await resp.write_eof()
    close_after_answer(request)


@web.middleware
async def _every_target(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's router matches only targets that start with "/"; the others (``OPTIONS *``,
    CONNECT's authority form) go through the same steps too, and are refused as JSON there,
    not with aiohttp's plain-text 404."""
    if request.match_info.http_exception is not None:
        return await handle(request)
    return await handler(request)


def _log_access(ex: Exchange, elapsed: float) -> None:
    # The route template, never the raw path: ids may be e-mails or documents.
    access_log.info(
        json.dumps(
            {
                "ts": round(time.time(), 3),
                "request_id": ex.request_id,
                "account": ex.account,
                "region": ex.region,
                "method": ex.method,
                "route": ex.route,
                "status": ex.status,
                "duration_ms": round(elapsed * 1000, 3),
                "upstream": ex.upstream,
                "attempts": ex.attempts,
                "error": ex.error,
            },
            separators=(",", ":"),
        )
    )


def create_app(
    settings: EdgeSettings,
    *,
    registry_factory: RegistryFactory = default_registry,  # type: ignore[assignment]
    clock: Callable[[], float] = time.monotonic,
    metrics: EdgeMetrics | None = None,
) -> web.Application:
    settings.validate()
    # aiohttp logs a malformed request with the offending bytes quoted: keep PII out of logs.
    logfilter.install()
    # Bodies are streamed by the proxy; this bound only guards any full read by aiohttp itself.
    # auto_decompress=False: a gzip request body must reach the store exactly as sent.
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        handler_args={"auto_decompress": False},
        middlewares=[_every_target],
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics or EdgeMetrics()
    app.cleanup_ctx.append(_state_ctx(registry_factory, clock))
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


# -- admin ---------------------------------------------------------------------------------


def create_admin_app(edge: web.Application) -> web.Application:
    """/metrics, /healthz (process alive), /readyz (can serve: a healthy region + registry)."""
    admin = web.Application()
    metrics = edge[METRICS]

    async def metrics_view(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        st = edge.get(STATE)
        if st is None:
            return web.json_response({"status": "starting"}, status=503)
        upstream_ok = st.pools.has_available()
        registry_ok = st.accounts.last_ok or len(st.accounts) > 0
        ok = upstream_ok and registry_ok
        return web.json_response(
            {
                "status": "ready" if ok else "not_ready",
                "upstream": upstream_ok,
                "registry": registry_ok,
            },
            status=200 if ok else 503,
        )

    admin.router.add_get("/metrics", metrics_view)
    admin.router.add_get("/healthz", healthz)
    admin.router.add_get("/readyz", readyz)
    return admin
