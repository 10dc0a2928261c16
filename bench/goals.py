"""Targets judged on the collected rows: harness sanity now, the edge's targets as a draft.

Build new ones with the helpers of ``bench.core`` (``metric_at_most``, ``metric_at_least``,
``ratio_at_least``, ``difference_at_most``) or any ``Goal(name, description, check)`` whose
``check(rows)`` returns ``(True | False | None, detail)``; ``None`` reports "n/a".
"""

from __future__ import annotations

from bench.core import (
    CaseResult,
    Goal,
    difference_at_most,
    metric_at_most,
    ratio_at_least,
    select,
)

BASELINES = ("direct", "nginx", "naive")


def _upstream_headroom(rows: list[CaseResult]) -> tuple[bool | None, str]:
    """The static upstream must outrun every proxy in front of it at the same concurrency."""
    worst = None
    for d in select(rows, {"target": "direct"}):
        for p in rows:
            if p.status != "ok" or p.target == "direct" or p.connections != d.connections:
                continue
            if not p.rps or d.rps is None:
                continue
            ratio = d.rps / p.rps
            if worst is None or ratio < worst[0]:
                worst = (ratio, d.case, p.case)
    if worst is None:
        return None, "needs a direct case and a proxied case at the same concurrency"
    ratio, dcase, pcase = worst
    return ratio >= 1.5, f"lowest: {dcase} / {pcase} = {ratio:.2f}x (want >= 1.5x)"


def _no_errors(target: str) -> Goal:
    def check(rows: list[CaseResult]) -> tuple[bool | None, str]:
        sel = select(rows, {"target": target})
        if not sel:
            return None, f"no successful {target} case"
        bad = [f"{r.case}: {r.errors} ({r.errors_detail})" for r in sel if r.errors]
        return not bad, "; ".join(bad) if bad else f"{len(sel)} cases, 0 errors"

    return Goal(f"{target}-errors", f"{target}: no HTTP >= 400 or socket error", check)


def _routing_ok(rows: list[CaseResult]) -> tuple[bool | None, str]:
    sel = [r for r in rows if r.status == "ok" and r.routing and not r.routing.startswith("n/a")]
    if not sel:
        return None, "no routing target measured"
    bad = [f"{r.case}: {r.routing}" for r in sel if r.routing != "ok"]
    return not bad, "; ".join(bad) if bad else f"{len(sel)} cases routed every account right"


def harness_goals() -> list[Goal]:
    return [
        Goal(
            "upstream-headroom",
            "static upstream is not the bottleneck (direct >= 1.5x any "
            "proxy's req/s at the same concurrency)",
            _upstream_headroom,
        ),
        Goal("routing", "routing targets send each account to its home region", _routing_ok),
        *(_no_errors(t) for t in BASELINES),
    ]


def edge_goals(workers: int = 1) -> list[Goal]:
    """DRAFT of the issue's edge targets; the lead owns the final wording and selectors.

    Rows needed: edge and direct at 1 connection, edge with 1 and 2 workers at 64 connections,
    edge at 256 connections, edge at 1,000 connections (``--connections ...,1000``).
    """
    w = {"target": "edge", "workers": workers}
    return [
        metric_at_most(
            "edge-cpu", "edge CPU per request <= 150 µs", w, "cpu_us_per_req", 150.0, " µs"
        ),
        difference_at_most(
            "edge-p50-overhead",
            "edge p50 overhead <= 0.25 ms at 1 connection",
            {**w, "connections": 1},
            {"target": "direct", "connections": 1},
            "p50_ms",
            0.25,
            " ms",
        ),
        ratio_at_least(
            "edge-scaling",
            "2 workers >= 1.5x one worker (req/s, 64 connections)",
            {"target": "edge", "workers": 2, "connections": 64},
            {"target": "edge", "workers": 1, "connections": 64},
            "rps",
            1.5,
        ),
        metric_at_most(
            "edge-256-open",
            "no request over 1 s with 256 connections opened at once",
            {"target": "edge", "connections": 256},
            "max_ms",
            1000.0,
            " ms",
        ),
        metric_at_most(
            "edge-rss-1000",
            "peak RSS <= 100 MiB with 1,000 concurrent connections",
            {"target": "edge", "connections": 1000},
            "rss_peak_mib",
            100.0,
            " MiB",
        ),
    ]
