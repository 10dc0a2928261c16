"""Prometheus metrics for the edge, in their own registry, with bounded label sets.

Labels are only ever: region names from config (or ``none``), HTTP methods (unknown ones
become ``other``), route templates from ``routes.TEMPLATES`` (or ``other``), status classes,
configured instance names and small fixed reason sets. Never a raw path, an account name
(tenants are unbounded) or anything personal.

Label children are bound once per label tuple and kept in dicts, so the hot path is a dict
lookup and an ``inc``. With several worker processes (``serve --workers N``) the values live
in prometheus_client's multiprocess files and any worker's ``/metrics`` reports all of them.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "POST", "PATCH"})
_STATUS_CLASS = ("1xx", "2xx", "3xx", "4xx", "5xx")
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


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
        self.auth_failures = Counter(
            "edge_auth_failures_total", "Refused credentials", ["reason"], registry=r
        )
        self.cross_region_refusals = Counter(
            "edge_cross_region_refusals_total",
            "Requests refused because the home region had no healthy instance while another did",
            ["home_region"],
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
        self._req: dict[tuple[str, str, str, int], Any] = {}
        self._dur: dict[tuple[str, str], Any] = {}
        self._up: dict[str, Any] = {}
        self._lookup = {
            k: self.registry_lookups.labels(k)
            for k in ("hit", "miss", "negative_hit", "stale", "error")
        }
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
        m = method if method in METHODS else "other"
        key = (region, m, route, status // 100)
        child = self._req.get(key)
        if child is None:
            child = self._req[key] = self.requests.labels(region, m, route, status_class(status))
        child.inc()
        dkey = (region, route)
        dur = self._dur.get(dkey)
        if dur is None:
            dur = self._dur[dkey] = self.request_duration.labels(region, route)
        dur.observe(seconds)

    def observe_upstream(self, region: str, seconds: float) -> None:
        child = self._up.get(region)
        if child is None:
            child = self._up[region] = self.upstream_duration.labels(region)
        child.observe(seconds)

    def lookup(self, result: str) -> None:
        self._lookup[result].inc()

    def exposition(self) -> bytes:
        return generate_latest(self._exposition_registry)
