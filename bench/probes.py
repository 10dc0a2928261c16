"""Reading a target from outside, around a measured run.

``probe_routing`` sends each request of the mix once before the load (status, and for routing
targets the region that answered). ``PrometheusDeltaProbe``, a ``bench.cases.Probe``, turns
counters on ``/metrics`` such as ``profile_store_dynamodb_calls_total{operation,call}`` into
per-request costs.
"""

from __future__ import annotations

import http.client
import re
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.cases import Target
from bench.wrk import RequestSpec


def http_get(url: str, headers: dict[str, str], timeout: float = 5.0) -> tuple[int, dict[str, str]]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.putrequest(
            "GET", parts.path + (f"?{parts.query}" if parts.query else ""), skip_host=True
        )
        has_host = any(k.lower() == "host" for k in headers)
        if not has_host:
            conn.putheader("Host", parts.netloc)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def probe_routing(target: Target, mix: Iterable[RequestSpec]) -> str:
    """One request per mix entry: all must be 2xx; a routing target must reach the right region."""
    problems = []
    seen = set()
    for r in mix:
        key = (r.path, tuple(sorted(r.headers.items())))
        if key in seen:
            continue
        seen.add(key)
        status, headers = http_get(target.url.rstrip("/") + r.path, r.headers)
        region = headers.get("x-upstream-region")  # only the static upstream sets it
        who = r.label or r.headers.get("Host", r.path)
        if not 200 <= status < 300:
            problems.append(f"{who}: HTTP {status}")
        elif target.routes and r.expect_region and region and region != r.expect_region:
            problems.append(f"{who}: reached {region}, expected {r.expect_region}")
    if problems:
        return "; ".join(problems)
    return "ok" if target.routes else "n/a (no routing)"


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of a Prometheus text exposition: {(name, sorted label pairs): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = tuple(sorted(_LABEL.findall(m.group(3) or "")))
        try:
            out[(m.group(1), labels)] = float(m.group(4))
        except ValueError:
            continue
    return out


def scrape(url: str, timeout: float = 5.0) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # loopback /metrics only
        return parse_prometheus(resp.read().decode())


@dataclass
class PrometheusDeltaProbe:
    """Per-request increase of counters on one or more ``/metrics`` URLs (summed across them).

    ``group_by`` picks the labels to keep, e.g. for the Profile System's DynamoDB cost::

        PrometheusDeltaProbe(
            "dynamodb", urls=[store_us + "/metrics", store_eu + "/metrics"],
            metrics=["profile_store_dynamodb_calls_total",
                     "profile_store_dynamodb_capacity_units_total"],
            group_by=("operation", "call"))
    """

    name: str
    urls: Sequence[str]
    metrics: Sequence[str]
    group_by: Sequence[str] = ()
    _before: dict[Any, float] = field(default_factory=dict, repr=False)

    def _read(self) -> dict[Any, float]:
        totals: dict[Any, float] = {}
        for url in self.urls:
            for (name, labels), value in scrape(url).items():
                if name not in self.metrics:
                    continue
                d = dict(labels)
                key = (name, tuple(d.get(k, "") for k in self.group_by))
                totals[key] = totals.get(key, 0.0) + value
        return totals

    def before(self) -> None:
        self._before = self._read()

    def after(self, requests: int) -> dict[str, Any]:
        after = self._read()
        out: dict[str, Any] = {}
        for (name, group), value in sorted(after.items()):
            delta = value - self._before.get((name, group), 0.0)
            label = "/".join(group) or "all"
            out.setdefault(name, {})[label] = {
                "total": delta,
                "per_request": delta / requests if requests else None,
            }
        return out
