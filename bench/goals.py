"""Targets judged on the collected rows: harness sanity, the edge's targets, end-to-end cost.

Build new ones with the helpers of ``bench.judge`` (``metric_at_most``,
``difference_at_most``) or any ``Goal(name, description, check)`` whose
``check(rows)`` returns ``(True | False | None, detail)``; ``None`` reports "n/a".
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bench.cases import CaseResult
from bench.e2e import STORE_OPERATION, ddb_cost
from bench.judge import Goal, difference_at_most, metric_at_most, select

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


def _registry_hit_ratio(rows: list[CaseResult]) -> tuple[bool | None, str]:
    """Hits / all lookups, from the edge's own edge_registry_lookups_total during the runs."""
    counts: dict[str, float] = {}
    for r in select(rows, {"target": "edge"}):
        if r.connections < 64:  # steady state: the loaded runs
            continue
        data = r.extra.get("registry", {}).get("edge_registry_lookups_total", {})
        for result, v in data.items():
            counts[result] = counts.get(result, 0.0) + (v.get("total") or 0.0)
    total = sum(counts.values())
    if not total:
        return None, "no edge_registry_lookups_total figures (edge rows at >= 64 connections)"
    ratio = counts.get("hit", 0.0) / total
    detail = ", ".join(f"{k} {v:.0f}" for k, v in sorted(counts.items()))
    return ratio >= 0.999, f"{ratio:.5%} hits ({detail}; target >= 99.9%)"


def _scaling(rows: list[CaseResult], connections: int = 64) -> tuple[bool | None, str]:
    """2 workers vs 1 by req/s, taken apart: req/s = cores the edge got / its CPU per request,
    so the ratio is (cores with 2 / cores with 1) x (CPU per request with 1 / with 2). The
    cores it did not get are listed (wrk, the static upstreams, others, idle).

    And the ceiling the harness leaves: with one worker the edge has a core to itself (wrk and
    the upstreams run on the other); with two, the machine's N cores serve the edge's CPU per
    request c plus the harness's h, so at best N/(c+h) req/s against 1/c: a ratio of
    N*c/(c+h) even if c did not rise at all. h is read off the 2-worker row."""
    one = select(rows, {"target": "edge", "workers": 1, "connections": connections})
    two = select(rows, {"target": "edge", "workers": 2, "connections": connections})
    if not one or not two or not one[0].rps:
        return None, f"needs edge rows with 1 and 2 workers at {connections} connections"
    a, b = one[0], two[0]
    ratio = (b.rps or 0) / a.rps
    detail = f"{b.case} / {a.case} = {ratio:.2f}x (want >= 1.5x)"
    ca, cb = a.cores.get("target"), b.cores.get("target")
    if ca and cb and a.cpu_us_per_req and b.cpu_us_per_req:
        detail += (
            f" = cores the edge got {cb:.2f} / {ca:.2f} ({cb / ca:.2f}x) x CPU per request "
            f"{a.cpu_us_per_req:.0f} / {b.cpu_us_per_req:.0f} µs "
            f"({a.cpu_us_per_req / b.cpu_us_per_req:.2f}x); the rest of the machine with 2 "
            "workers: "
            + ", ".join(
                f"{k} {b.cores[k]:.2f}"
                for k in ("load generator", "upstreams", "other", "steal", "idle")
                if k in b.cores
            )
        )
        harness = b.cores.get("load generator", 0.0) + b.cores.get("upstreams", 0.0)
        nproc = sum(b.cores.values())  # the shares add up to the measuring machine's cores
        if b.rps and harness > 0 and nproc > 1:
            h = harness / b.rps * 1e6
            c = a.cpu_us_per_req
            detail += (
                f"; the harness costs {h:.0f} µs of CPU per request, so on {nproc:.0f} cores "
                f"the ratio could reach {nproc * c / (c + h):.2f}x at best (edge CPU per "
                "request unchanged)"
            )
    return ratio >= 1.5, detail


def _per_worker_vs(baseline: str, factor: float, connections: int = 64) -> Goal:
    def check(rows: list[CaseResult]) -> tuple[bool | None, str]:
        out = []
        ok = True
        for w in (1, 2):
            e = select(rows, {"target": "edge", "workers": w, "connections": connections})
            b = select(rows, {"target": baseline, "workers": w, "connections": connections})
            if e and b and b[0].rps:
                ratio = (e[0].rps or 0) / b[0].rps
                cpu = (
                    f", CPU/req {e[0].cpu_us_per_req:.0f} vs {b[0].cpu_us_per_req:.0f} µs"
                    if e[0].cpu_us_per_req and b[0].cpu_us_per_req
                    else ""
                )
                out.append(f"w{w}: {ratio:.2f}x req/s{cpu}")
                ok = ok and ratio >= factor
        if not out:
            return None, f"needs edge and {baseline} rows at {connections} connections"
        return (ok if factor > 0 else None), "; ".join(out)

    what = f">= {factor}x" if factor > 0 else "ratio (informational)"
    return Goal(
        f"edge-vs-{baseline}",
        f"edge req/s per worker vs {baseline} at {connections} connections: {what}",
        check,
    )


def _ddb_goal(op: str, call: str, expected: float, merge_reads: float = 0.0) -> Goal:
    """Calls per request, judged on the uncontended (1 connection) rows; contended rows are
    listed too, since lost races on one hot item legitimately add retried transactions.
    ``merge_reads``: a PATCH must read the current (encrypted) document to merge into it."""
    store_op = STORE_OPERATION[op]
    total = expected + merge_reads

    def check(rows: list[CaseResult]) -> tuple[bool | None, str]:
        sel = [r for r in select(rows, {}) if r.extra.get("store_operation") == store_op]
        if not sel:
            return None, f"no end-to-end {op} rows"
        worst = []
        ok = True
        for r in sel:
            calls = ddb_cost(r, "profile_store_dynamodb_calls_total")
            wanted = ddb_cost(r, "profile_store_dynamodb_calls_total", call)
            units = ddb_cost(r, "profile_store_dynamodb_capacity_units_total")
            if calls is None or wanted is None:
                continue
            if r.connections == 1:
                ok = ok and abs(calls - total) < 0.05 and abs(wanted - expected) < 0.05
            worst.append(
                f"{r.case}: {calls:.2f} calls/req ({call} {wanted:.2f}), "
                f"{units or 0:.2f} capacity units/req"
            )
        if not worst:
            return None, "no DynamoDB figures in the rows"
        return ok, "; ".join(worst)

    return Goal(
        f"ddb-{op}",
        f"DynamoDB cost of {store_op}: {expected:g} {call} per request"
        + (f" plus {merge_reads:g} get_item to merge" if merge_reads else " and nothing else")
        + " (judged uncontended, at 1 connection)",
        check,
    )


def _added(name: str, description: str, case: dict[str, object], base: dict[str, object]) -> Goal:
    """Informational: p50/p99 of ``case`` minus those of ``base`` (no target, so "n/a")."""

    def check(rows: list[CaseResult]) -> tuple[bool | None, str]:
        a, b = select(rows, case), select(rows, base)
        if not a or not b or a[0].p50_ms is None or b[0].p50_ms is None:
            return None, f"needs successful cases {case} and {base}"
        p50 = a[0].p50_ms - b[0].p50_ms
        p99 = (a[0].p99_ms or 0) - (b[0].p99_ms or 0)
        return None, f"{a[0].case} - {b[0].case}: p50 {p50:+.3f} ms, p99 {p99:+.3f} ms"

    return Goal(name, description, check)


# The store's CPU per request over the floor's (bench.store_floor), per bench operation.
FLOOR_LIMITS = {"get": 1.3, "create": 1.5, "patch": 1.5}


def _round_cpus(row: CaseResult) -> list[float | None]:
    """Each round's CPU per request, in run order (one "round" without --e2e-repeat)."""
    rounds = row.extra.get("rounds")
    if isinstance(rounds, dict) and rounds.get("cpu_us_per_req"):
        return list(rounds["cpu_us_per_req"])
    return [row.cpu_us_per_req]


@dataclass(frozen=True)
class Ratio:
    """``a`` over ``b`` (CPU per request) of two e2e cases measured in the same rounds.

    Every round runs each case once, one after the other on one stack, so a round's two
    figures share the machine's state of that moment; ``ratio`` is the median of the rounds'
    own ratios (``rounds``, run order), and ``a``/``b`` the medians of each case's rounds."""

    a: float
    b: float
    ratio: float
    rounds: tuple[float, ...]

    def rounds_text(self) -> str:
        return " / ".join(f"{r:.2f}" for r in self.rounds)


def paired_ratio(a: CaseResult, b: CaseResult) -> Ratio | None:
    pairs = [(x, y) for x, y in zip(_round_cpus(a), _round_cpus(b), strict=False) if x and y]
    if not pairs:
        return None
    return Ratio(
        a=statistics.median(x for x, _ in pairs),
        b=statistics.median(y for _, y in pairs),
        ratio=statistics.median(x / y for x, y in pairs),
        rounds=tuple(x / y for x, y in pairs),
    )


@dataclass(frozen=True)
class FloorRatio:
    op: str
    connections: int
    store: Ratio  # the direct store over the floor
    before: Ratio | None = None  # the --e2e-before store over the floor


def floor_ratios(rows: list[CaseResult], op: str) -> list[FloorRatio]:
    """The direct store's (and the --e2e-before store's) CPU per request over the floor's,
    for each concurrency at which ``op`` was measured on both."""
    out = []
    for floor in select(rows, {"target": "e2e-floor"}):
        if not floor.case.startswith(f"e2e-floor/{op}/"):
            continue
        store = select(rows, {"case": floor.case.replace("e2e-floor/", "e2e-direct/", 1)})
        ratio = paired_ratio(store[0], floor) if store else None
        if ratio is None:
            continue
        before = select(rows, {"case": floor.case.replace("e2e-floor/", "e2e-before/", 1)})
        out.append(
            FloorRatio(
                op, floor.connections, ratio, paired_ratio(before[0], floor) if before else None
            )
        )
    return out


def _floor_goal(op: str, limit: float) -> Goal:
    """Direct store CPU per request / floor CPU per request (the median of the rounds' ratios),
    at each concurrency measured; met when every one is within ``limit`` (crypto, masking,
    validation all included)."""

    def check(rows: list[CaseResult]) -> tuple[bool | None, str]:
        ratios = floor_ratios(rows, op)
        if not ratios:
            return None, f"needs e2e-direct and e2e-floor {op} rows"
        parts = []
        for f in ratios:
            text = (
                f"c{f.connections}: {f.store.ratio:.2f}x ({f.store.a:.0f} vs {f.store.b:.0f} µs/req"
            )
            if len(f.store.rounds) > 1:
                text += f"; rounds {f.store.rounds_text()}"
            parts.append(text + ")")
        worst = max(f.store.ratio for f in ratios)
        return worst <= limit, "; ".join(parts) + f" (limit {limit:g}x)"

    return Goal(
        f"store-floor-{op}",
        f"store CPU per {op} <= {limit:g}x the floor's (same DynamoDB calls and item sizes, "
        "no crypto/masking/validation; direct store vs bench.store_floor, same run, median of "
        "the rounds' ratios)",
        check,
    )


def _before_after(op: str) -> Goal:
    """Informational: the store from --e2e-before vs this tree's, each over the floor (medians
    of the rounds' ratios)."""

    def check(rows: list[CaseResult]) -> tuple[bool | None, str]:
        parts = []
        for before in select(rows, {"target": "e2e-before"}):
            if not before.case.startswith(f"e2e-before/{op}/"):
                continue
            after = select(rows, {"case": before.case.replace("e2e-before/", "e2e-direct/", 1)})
            floor = select(rows, {"case": before.case.replace("e2e-before/", "e2e-floor/", 1)})
            change = paired_ratio(after[0], before) if after else None
            if change is None:
                continue
            text = (
                f"c{before.connections}: {change.b:.0f} -> {change.a:.0f} µs/req "
                f"({change.ratio:.2f}x)"
            )
            if floor:
                was, now = paired_ratio(before, floor[0]), paired_ratio(after[0], floor[0])
                if was and now:
                    text += f", over the floor {was.ratio:.2f}x -> {now.ratio:.2f}x"
            parts.append(text)
        if not parts:
            return None, "no e2e-before rows (python -m bench --e2e-before TREE)"
        return None, "; ".join(parts)

    return Goal(
        f"store-before-after-{op}",
        f"store CPU per {op}: the --e2e-before tree's store -> this tree's, same run "
        "(informational)",
        check,
    )


def e2e_goals() -> list[Goal]:
    return [
        *(
            _added(
                f"e2e-added-{op}-c{c}",
                f"end to end {op} at {c} concurrent: latency the edge adds over a direct "
                "store call (informational; the edge spreads over 2 instances, direct hits 1)",
                {"target": "e2e-edge", "connections": c, "case": f"e2e-edge/{op}/c{c}"},
                {"target": "e2e-direct", "connections": c, "case": f"e2e-direct/{op}/c{c}"},
            )
            for op in ("get", "patch", "create")
            for c in (1, 16)
        ),
        _ddb_goal("get", "get_item", 1.0),
        _ddb_goal("patch", "transact_write_items", 1.0, merge_reads=1.0),
        _ddb_goal("create", "transact_write_items", 1.0),
        *(_floor_goal(op, limit) for op, limit in FLOOR_LIMITS.items()),
        *(_before_after(op) for op in FLOOR_LIMITS),
    ]


def all_goals() -> list[Goal]:
    """Everything ``python -m bench`` judges a run on (a goal without its rows says "n/a")."""
    return [*harness_goals(), *edge_goals(), *e2e_goals()]


def edge_goals(workers: int = 1) -> list[Goal]:
    """The issue's edge targets (issue 6), judged on the rows of a full run.

    Rows needed: edge and direct at 1 connection, edge with 1 and 2 workers at 64 connections,
    edge at 256 connections, edge at 1,000 connections (``--connections ...,1000``), naive and
    nginx at 64 connections.
    """
    w = {"target": "edge", "workers": workers}
    return [
        metric_at_most(
            "edge-cpu", "edge CPU per request <= 150 µs", w, "cpu_us_per_req", 150.0, " µs"
        ),
        _per_worker_vs("naive", 2.0),
        _per_worker_vs("nginx", 0.0),
        difference_at_most(
            "edge-p50-overhead",
            "edge p50 overhead <= 0.25 ms at 1 connection",
            {**w, "connections": 1},
            {"target": "direct", "connections": 1},
            "p50_ms",
            0.25,
            " ms",
        ),
        _added(
            "edge-added-c64",
            "latency the edge adds over direct at 64 connections (informational)",
            {"target": "edge", "workers": workers, "connections": 64},
            {"target": "direct", "connections": 64},
        ),
        Goal(
            "edge-scaling",
            "2 workers >= 1.5x one worker (req/s, 64 connections)",
            _scaling,
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
            "peak RSS <= 100 MiB with 1,000 concurrent connections (one worker process; with "
            "--workers N every process is in the rows' rss_peak_mib sum)",
            {"target": "edge", "workers": 1, "connections": 1000},
            "rss_peak_mib",
            100.0,
            " MiB",
        ),
        Goal(
            "registry-hit-ratio",
            "registry cache hit ratio >= 99.9% in steady state (edge_registry_lookups_total)",
            _registry_hit_ratio,
        ),
    ]
