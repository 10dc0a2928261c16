"""Prometheus metrics for the edge, in their own registry, with bounded label sets.

Labels are only ever: region names from config (or ``none``), HTTP methods (unknown ones
become ``other``), route templates from ``routes.TEMPLATES`` (or ``other``), status classes,
configured instance names and small fixed reason sets. Never a raw path, an account name
(tenants are unbounded) or anything personal.

The per-request figures (request count and duration, upstream duration, registry lookups,
in-flight) are not written to prometheus_client on the request path: each ``inc``/``observe``
there takes a lock (and, with several workers, writes an mmap'd file), and a histogram
``observe`` walks its buckets in Python -- together a sizeable share of the edge's per-request
CPU. The hot path instead adds to plain ints in dicts (bucket index by ``bisect``), and
``flush`` moves the totals into the prometheus children: before every exposition and once a
second (``start_flusher``), so another worker's figures in ``/metrics`` lag by at most that.
Rare events (auth failures, refusals, retries, rate limiting) go to prometheus directly.

With several worker processes (``serve --workers N``) the values live in prometheus_client's
multiprocess files and any worker's ``/metrics`` reports all of them.
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from .registry.breaker import CLOSED
from .registry.breaker import STATES as BREAKER_STATES
from .registry.cache import STALE_REASONS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "POST", "PATCH"})
_STATUS_CLASS = ("1xx", "2xx", "3xx", "4xx", "5xx")
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_CHANGE_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0, 10.0, 30.0)
FLUSH_INTERVAL_S = 1.0
STALE_LOOKUPS = ("account", "key_owner")  # the registry caches (app._state_ctx)


class _HistogramTally:
    """Observations not yet in a prometheus histogram child: counts per bucket, and the sum."""

    __slots__ = ("child", "counts", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.counts = [0] * (len(_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def add(self, seconds: float) -> None:
        # bisect_left: the first bound >= value, i.e. Prometheus' "le" bucket
        self.counts[bisect_left(_BUCKETS, seconds)] += 1
        self.total += seconds

    def flush(self) -> None:
        counts = self.counts
        if not any(counts):
            return
        child = self.child
        # prometheus_client keeps per-bucket (non-cumulative) values; add ours the same way.
        for i, n in enumerate(counts):
            if n:
                child._buckets[i].inc(n)
                counts[i] = 0
        child._sum.inc(self.total)
        self.total = 0.0


def status_class(status: int) -> str:
    i = status // 100 - 1
    return _STATUS_CLASS[i] if 0 <= i < 5 else "5xx"


class EdgeMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self.requests = Counter(
            "edge_requests_total",
            "Requests answered by the edge",
            ["region", "method", "route", "status_class"],
            registry=r,
        )
        self.request_duration = Histogram(
            "edge_request_duration_seconds",
            "Time from request received to response finished",
            ["region", "route"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.upstream_duration = Histogram(
            "edge_upstream_duration_seconds",
            "Time from sending upstream to upstream response headers",
            ["region"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.upstream_healthy = Gauge(
            "edge_upstream_healthy",
            "1 when the instance is available for routing",
            ["region", "instance"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.region_healthy = Gauge(
            "edge_region_healthy_instances",
            "Available instances per region",
            ["region"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.registry_lookups = Counter(
            "edge_registry_lookups_total", "Account registry lookups", ["result"], registry=r
        )
        self.registry_stale = Counter(
            "edge_registry_stale_served_total",
            "Answers served from a registry cache entry past its TTL, by lookup and why",
            ["lookup", "reason"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "edge_registry_breaker_state",
            "1 for the registry circuit breaker's current state (closed, open, half_open)",
            ["state"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.breaker_transitions = Counter(
            "edge_registry_breaker_transitions_total",
            "Registry circuit breaker state changes, by the state entered",
            ["state"],
            registry=r,
        )
        self.changes_applied = Counter(
            "edge_registry_changes_applied_total",
            "Registry change-log items applied to this edge's caches",
            registry=r,
        )
        self.poll_errors = Counter(
            "edge_registry_poll_errors_total",
            "Reads of the registry change log that failed (the TTL cache is the fallback)",
            registry=r,
        )
        self.change_lag = Histogram(
            "edge_registry_change_lag_seconds",
            "From a registry write (its writer's clock) to its fresh record in this edge's cache",
            buckets=_CHANGE_LAG_BUCKETS,
            registry=r,
        )
        self.auth_failures = Counter(
            "edge_auth_failures_total", "Refused credentials", ["reason"], registry=r
        )
        self.cross_region_refusals = Counter(
            "edge_cross_region_refusals_total",
            "Requests refused because the home region had no healthy instance while another did",
            ["home_region"],
            registry=r,
        )
        self.client_timeouts = Counter(
            "edge_client_timeouts_total",
            "Client connections cut off by a timeout (head, body, send)",
            ["kind"],
            registry=r,
        )
        self.rate_limited = Counter(
            "edge_rate_limited_total", "Requests refused by the rate limit", ["region"], registry=r
        )
        self.retries = Counter(
            "edge_upstream_retries_total",
            "Upstream attempts after the first (same region)",
            ["region"],
            registry=r,
        )
        self.in_flight = Gauge(
            "edge_in_flight_requests",
            "Requests being handled",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.accounts_moving = Gauge(
            "edge_accounts_moving",
            "Accounts in a move's final catch-up (writes refused), as this edge's registry "
            "cache knows them",
            registry=r,
            multiprocess_mode="livemax",
        )
        # Pending per-request tallies, moved into the children above by flush().
        self._req: dict[tuple[str, str, str, int], list[Any]] = {}  # key -> [child, count]
        self._dur: dict[tuple[str, str], _HistogramTally] = {}
        self._up: dict[str, _HistogramTally] = {}
        self._lookup: dict[str, list[Any]] = {
            k: [self.registry_lookups.labels(k), 0]
            for k in ("hit", "miss", "negative_hit", "stale", "error")
        }
        self._stale: dict[tuple[str, str], list[Any]] = {
            (lookup, reason): [self.registry_stale.labels(lookup, reason), 0]
            for lookup in STALE_LOOKUPS
            for reason in STALE_REASONS
        }
        for state in BREAKER_STATES:
            self.breaker_state.labels(state).set(1 if state == CLOSED else 0)
            self.breaker_transitions.labels(state)
        self.in_flight_source: Callable[[], int] | None = None
        self.moving_source: Callable[[], int] | None = None
        self._flusher: asyncio.TimerHandle | None = None
        self._exposition_registry = r
        if self.multiprocess_dir:
            self._exposition_registry = CollectorRegistry()
            MultiProcessCollector(self._exposition_registry, path=self.multiprocess_dir)

    def bind_regions(self, regions: list[str]) -> None:
        """Create per-region children up front so a region shows 0, not nothing."""
        for region in regions:
            self.cross_region_refusals.labels(region)
            self.rate_limited.labels(region)
            self.retries.labels(region)

    def observe_request(
        self, region: str, method: str, route: str, status: int, seconds: float
    ) -> None:
        key = (region, method, route, status // 100)
        entry = self._req.get(key)
        if entry is None:  # methods are the parser's fixed set, so the keys stay bounded
            m = method if method in METHODS else "other"
            child = self.requests.labels(region, m, route, status_class(status))
            entry = self._req[key] = [child, 0]
        entry[1] += 1
        dkey = (region, route)
        tally = self._dur.get(dkey)
        if tally is None:
            tally = self._dur[dkey] = _HistogramTally(self.request_duration.labels(region, route))
        tally.add(seconds)

    def observe_upstream(self, region: str, seconds: float) -> None:
        tally = self._up.get(region)
        if tally is None:
            tally = self._up[region] = _HistogramTally(self.upstream_duration.labels(region))
        tally.add(seconds)

    def lookup(self, result: str) -> None:
        self._lookup[result][1] += 1

    def stale_served(self, lookup: str) -> Callable[[str], None]:
        """The ``CachedLookup.on_stale`` callback of one lookup (``account``, ``key_owner``):
        during a registry outage every request is a stale serve, so it is tallied, not a
        prometheus ``inc`` each."""
        entries = {reason: self._stale[(lookup, reason)] for reason in STALE_REASONS}

        def count(reason: str) -> None:
            entries[reason][1] += 1

        return count

    def change_applied(self, lag_s: float) -> None:
        """The change poller's ``on_applied`` callback (rare: straight to prometheus)."""
        self.changes_applied.inc()
        self.change_lag.observe(lag_s)

    def breaker_changed(self, old: str, new: str) -> None:
        """The ``Breaker.on_change`` callback (rare: straight to prometheus)."""
        self.breaker_state.labels(old).set(0)
        self.breaker_state.labels(new).set(1)
        self.breaker_transitions.labels(new).inc()

    def flush(self) -> None:
        """Move the pending tallies into prometheus_client (and the in-flight gauge)."""
        for entries in (self._req.values(), self._lookup.values(), self._stale.values()):
            for entry in entries:
                if entry[1]:
                    entry[0].inc(entry[1])
                    entry[1] = 0
        for tallies in (self._dur.values(), self._up.values()):
            for tally in tallies:
                tally.flush()
        if self.in_flight_source is not None:
            self.in_flight.set(self.in_flight_source())
        if self.moving_source is not None:
            self.accounts_moving.set(self.moving_source())

    def start_flusher(self, loop: asyncio.AbstractEventLoop) -> None:
        def tick() -> None:
            self.flush()
            self._flusher = loop.call_later(FLUSH_INTERVAL_S, tick)

        self.stop_flusher()
        self._flusher = loop.call_later(FLUSH_INTERVAL_S, tick)

    def stop_flusher(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        self.flush()

    def exposition(self) -> bytes:
        self.flush()
        return generate_latest(self._exposition_registry)
