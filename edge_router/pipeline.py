"""The pipeline: one request, from its parsed head to the last byte of its answer, on one path.

``serve`` runs small named steps in order on an ``Exchange``. Each is a plain function that
returns what the next one needs or raises the ``EdgeError`` that refuses the request; only
``serve`` catches, and only ``errors.error_response`` turns the refusal into JSON, and only if
no byte of an answer was sent yet::

    check_message  HTTP version, transfer coding, header count, Host 505 / 501 / 431 / 400
    check_path     raw target policy -> route template              400 / 404
    find_account   Host / ?an= -> account name                       400
    load_account   registry (cached, single flight, stale-while-revalidate,
                   circuit breaker) -> the account's record          404 / 503
    authenticate   app key + token, else a user token (verified, cached),
                   then grant and account status -> principal       401 / 403
    check_moving   a write while the account's move freezes it       503 account_moving
    rate_limit     per-account token bucket                          429
    check_length   declared Content-Length                           413
    receive_body   100-continue; a small body read whole             408 / 400 / 499
    admit          bound on concurrent forwards                      503 overloaded
    forward        decide (home region only), sign, send, relay      502 / 503 / 504

Admission comes after the body: a client that sends a head and then nothing (or trickles)
holds a connection until the body timeout, never one of ``max_concurrent_requests``. Every
wait from the first step to the last byte of the answer is bounded by one deadline
(``Timeouts.total`` from the start of ``serve``). A client that goes away is a 499 in the
metrics and the access log (nginx's "client closed request"), never a 500.

Two front ends feed it through ``wire.Service``: the production listener (``wire``) and
``web_front`` (``aiohttp.web``). Both run exactly these steps and the same forwarder.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

from residency_contract.protocol import ACCOUNT_MOVING

from . import auth
from .api_paths import RouteTable, split_target
from .auth import APP_KEY_HEADER, APP_TOKEN_HEADER, Principal
from .body import check_length, receive_body
from .config import EdgeSettings
from .errors import (
    ClientClosed,
    EdgeError,
    ErrorAnswer,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
    error_response,
    refusal,
)
from .exchange import Exchange, Sink
from .metrics import EdgeMetrics
from .proxy import Forwarder
from .ratelimit import RateLimiter
from .registry import AccountRecord, CachedLookup, KeyOwner
from .resolve import AccountResolver
from .upstream import Pools
from .user_token import TokenVerifier, find_token
from .wire import check_message as check_framing

access_log = logging.getLogger("edge_router.access")
log = logging.getLogger("edge_router")


@dataclass(slots=True)
class EdgeState:
    """What the steps run on: built once at start (``app``), shared by every request."""

    settings: EdgeSettings
    metrics: EdgeMetrics
    resolver: AccountResolver
    routes: RouteTable
    accounts: CachedLookup[AccountRecord]
    key_owners: CachedLookup[KeyOwner]
    limiter: RateLimiter
    pools: Pools
    forwarder: Forwarder
    loop: asyncio.AbstractEventLoop
    tokens: TokenVerifier | None = None  # user tokens; None: no issuer, every token refused
    access_log: bool = False  # settings.access_log, read once
    in_flight: int = 0  # admitted exchanges not done yet (``serve`` alone counts them)


# -- the steps ----------------------------------------------------------------------------------


def check_message(ex: Exchange) -> None:
    check_framing(ex.version, ex.headers, ex.header_lines, absolute=ex.absolute)


def check_path(st: EdgeState, ex: Exchange) -> str:
    return st.routes.match(split_target(ex.target))


def find_account(st: EdgeState, ex: Exchange) -> str:
    an = ex.url.query.getall("an", ()) if ex.url is not None and "an=" in ex.target else ()
    return st.resolver.resolve(ex.host, an)


async def load_account(st: EdgeState, account: str) -> AccountRecord:
    record = await st.accounts.get(account)
    if record is None:
        raise NotFound("unknown_account", "no such account")
    return record


async def authenticate(st: EdgeState, ex: Exchange, record: AccountRecord) -> Principal:
    h = ex.headers
    try:
        app_key, app_token = h.get(APP_KEY_HEADER), h.get(APP_TOKEN_HEADER)
        if app_key is None and app_token is None:  # app key headers, when present, decide
            user_token = find_token(h, record.name)
            if user_token is not None:
                if st.tokens is None:
                    raise refusal(
                        Unauthorized, "unknown_issuer", "unknown_issuer", "unknown token issuer"
                    )
                return auth.authenticate_user(record, await st.tokens.verify(user_token))
        return await auth.authenticate(record, app_key, app_token, st.key_owners.get)
    except EdgeError as exc:
        st.metrics.auth_failures.labels(exc.reason or exc.code).inc()
        raise


READ_METHODS = frozenset({"GET", "HEAD"})


def check_moving(st: EdgeState, ex: Exchange, record: AccountRecord) -> None:
    """During a move's final catch-up (``move/``) the account is read-only: reads are still
    served by the source region, writes wait (the source store's fence refuses them too,
    for an edge whose cache has not seen the phase yet)."""
    if record.moving and ex.method not in READ_METHODS:
        raise Unavailable(
            ACCOUNT_MOVING,
            "the account is moving to another region; retry shortly",
            retry_after=st.settings.retry_after_s,
        )


def rate_limit(st: EdgeState, account: str, region: str) -> None:
    wait = st.limiter.check(account, time.monotonic())
    if wait:
        st.metrics.rate_limited.labels(region).inc()
        raise RateLimited("rate_limited", "too many requests for this account", retry_after=wait)


def admit(st: EdgeState) -> None:
    if st.in_flight >= st.settings.max_concurrent_requests:
        raise Unavailable("overloaded", "the edge is at its concurrency limit", retry_after=1)


# -- the one path -------------------------------------------------------------------------------


async def serve(st: EdgeState, ex: Exchange, sink: Sink) -> ErrorAnswer | None:
    """Run the steps and forward. Returns the refusal to write, or None once answered."""
    t0 = time.perf_counter()
    s = st.settings
    ex.deadline = st.loop.time() + s.timeouts.total
    admitted = False
    refused: ErrorAnswer | None = None
    try:
        check_message(ex)
        ex.route = check_path(st, ex)
        ex.account = account = find_account(st, ex)
        record = await load_account(st, account)
        ex.region = record.region
        principal = await authenticate(st, ex, record)
        check_moving(st, ex, record)
        rate_limit(st, account, record.region)
        check_length(ex, s.max_body_bytes)
        body = await receive_body(
            ex, sink, buffer_limit=s.buffer_body_bytes, limit=s.max_body_bytes
        )
        admit(st)
        st.in_flight += 1
        admitted = True
        await st.forwarder.forward(ex, principal, body, sink)
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
        if admitted:
            st.in_flight -= 1
        done(st, ex, time.perf_counter() - t0)
    return refused


def done(st: EdgeState, ex: Exchange, elapsed: float) -> None:
    """The end of every exchange, answered or refused: metrics and the access log."""
    st.metrics.observe_request(ex.region, ex.method, ex.route, ex.status or 500, elapsed)
    if st.access_log and access_log.isEnabledFor(logging.INFO):
        _log_access(ex, elapsed)


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
