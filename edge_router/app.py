"""Wiring: the edge as an ``aiohttp.web.Application`` whose startup builds the shared state.

``create_app`` makes the application; its ``cleanup_ctx`` creates, at start, and closes, at
shutdown, what every request shares -- the registry client, the two registry caches behind one
circuit breaker, the registry change-log poller that invalidates them, the per-instance
connection pools and the health checker, the forwarder -- and puts them under typed
``web.AppKey``s: ``STATE`` (the ``pipeline.EdgeState``), ``CHANGE_POLLER`` (the poller, when
the registry has a change log and ``registry_poll_interval_s`` is not 0) and ``wire.SERVICE`` (the
pipeline as both front ends serve it). The production listener
(``wire.EdgeRunner``) and ``aiohttp.web`` (``web_front``, the app's own route) run the same
``pipeline.serve``. The admin app is ``admin.create_admin_app``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from aiohttp import web

from . import logfilter, web_front
from .api_paths import RouteTable
from .config import EdgeSettings
from .metrics import EdgeMetrics
from .pipeline import EdgeState, serve
from .proxy import Forwarder
from .ratelimit import RateLimiter
from .registry import (
    AccountRecord,
    Breaker,
    CachedLookup,
    ChangePoller,
    KeyOwner,
    RegistryReader,
    RegistryTable,
)
from .registry.breaker import CLOSED, OPEN
from .resolve import AccountResolver
from .upstream import Pools
from .user_token import TokenVerifier
from .wire import SERVICE, Service

__all__ = [
    "CHANGE_POLLER",
    "METRICS",
    "SETTINGS",
    "STATE",
    "EdgeState",
    "create_app",
]

log = logging.getLogger("edge_router")

RegistryFactory = Callable[[EdgeSettings], AbstractAsyncContextManager[RegistryReader]]

SETTINGS = web.AppKey("edge_settings", EdgeSettings)
METRICS = web.AppKey("edge_metrics", EdgeMetrics)
STATE = web.AppKey("edge_state", EdgeState)
CHANGE_POLLER = web.AppKey("edge_registry_changes", ChangePoller)


def _state_ctx(
    registry_factory: RegistryFactory, clock: Callable[[], float]
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        s = app[SETTINGS]
        metrics = app[METRICS]
        metrics.bind_regions([r.name for r in s.regions])
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
                on_result=metrics.lookup,
                on_stale=metrics.stale_served("account"),
                **cache_args,
            )
            key_owners: CachedLookup[KeyOwner] = CachedLookup(
                registry.get_key_owner, on_stale=metrics.stale_served("key_owner"), **cache_args
            )
            pools = Pools(s, metrics, clock)
            await pools.start()
            forwarder = Forwarder(s, pools, metrics)
            forwarder.misrouted = accounts.forget
            tokens = TokenVerifier(s)
            poller = _change_poller(s, registry, accounts, key_owners, metrics)
            try:
                await tokens.start()
                loop = asyncio.get_running_loop()
                state = app[STATE] = EdgeState(
                    settings=s,
                    metrics=metrics,
                    resolver=AccountResolver(s.host_suffixes),
                    routes=RouteTable(),
                    accounts=accounts,
                    key_owners=key_owners,
                    limiter=RateLimiter(s.rate_limit_rps, s.rate_limit_burst, s.cache_size * 10),
                    pools=pools,
                    forwarder=forwarder,
                    loop=loop,
                    tokens=tokens,
                    access_log=s.access_log,
                )
                app[SERVICE] = Service(
                    serve=functools.partial(serve, state),
                    timeouts=s.timeouts,
                    timed_out=lambda kind: metrics.client_timeouts.labels(kind).inc(),
                )
                metrics.in_flight_source = lambda: state.in_flight
                metrics.moving_source = lambda: sum(r.moving for r in accounts.values())
                metrics.start_flusher(loop)
                if poller is not None:
                    app[CHANGE_POLLER] = poller
                    poller.start()
                yield
            finally:
                if poller is not None:
                    await poller.stop()  # before the registry client closes
                metrics.stop_flusher()
                await pools.close()
                await tokens.close()

    return ctx


def _change_poller(
    s: EdgeSettings,
    registry: RegistryReader,
    accounts: CachedLookup[AccountRecord],
    key_owners: CachedLookup[KeyOwner],
    metrics: EdgeMetrics,
) -> ChangePoller | None:
    """The change-log poller, unless it is switched off or the registry has no change log
    (a test's in-memory registry): then the cache TTL alone bounds staleness."""
    if not s.registry_poll_interval_s or not hasattr(registry, "changes_since"):
        return None
    return ChangePoller(
        registry,  # type: ignore[arg-type]
        accounts,
        key_owners,
        interval_s=s.registry_poll_interval_s,
        overlap_s=s.registry_change_overlap_s,
        max_backoff_s=s.registry_poll_max_backoff_s,
        settle_s=s.registry_change_settle_s,
        on_applied=metrics.change_applied,
        on_error=metrics.poll_errors.inc,
    )


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


def create_app(
    settings: EdgeSettings,
    *,
    registry_factory: RegistryFactory = RegistryTable.from_settings,  # type: ignore[assignment]
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
        middlewares=[web_front.every_target],
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics or EdgeMetrics()
    app.cleanup_ctx.append(_state_ctx(registry_factory, clock))
    app.router.add_route(
        "*", "/{tail:.*}", web_front.handle, expect_handler=web_front.continue_later
    )
    return app
