"""The issue-6 goals and the before/after section, on synthetic rows (no processes)."""

from __future__ import annotations

from bench.cases import CaseResult, merge_rounds
from bench.goals import e2e_goals, edge_goals
from bench.report import before_after, floor_section


def _row(target: str, workers: int, conns: int, **kw: object) -> CaseResult:
    r = CaseResult(
        case=f"{target}/w{workers}/c{conns}",
        group="g",
        target=target,
        workers=workers,
        connections=conns,
        status="ok",
    )
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def _goal(goals: list, name: str):  # type: ignore[no-untyped-def,type-arg]
    return next(g for g in goals if g.name == name)


def test_registry_hit_ratio_from_probe_deltas() -> None:
    def reg(hit: float, miss: float) -> dict[str, object]:
        return {
            "registry": {
                "edge_registry_lookups_total": {
                    "hit": {"total": hit, "per_request": None},
                    "miss": {"total": miss, "per_request": None},
                }
            }
        }

    goal = _goal(edge_goals(), "registry-hit-ratio")
    rows = [_row("edge", 1, 1, extra=reg(0, 50)), _row("edge", 1, 64, extra=reg(99_990, 2))]
    out = goal.evaluate(rows)
    assert out.status == "met", out.detail  # the cold 1-connection run is not steady state
    rows.append(_row("edge", 1, 256, extra=reg(1000, 500)))
    assert goal.evaluate(rows).status == "not met"


def test_ddb_cost_goals() -> None:
    def ddb(op: str, calls: dict[str, float]) -> dict[str, object]:
        return {
            "store_operation": op,
            "dynamodb": {
                "profile_store_dynamodb_calls_total": {
                    f"{op}/{c}": {"total": v * 100, "per_request": v} for c, v in calls.items()
                }
            },
        }

    goals = e2e_goals()
    rows = [
        _row("e2e-edge", 1, 1, extra=ddb("GetProfile", {"get_item": 1.0})),
        _row("e2e-edge", 1, 1, extra=ddb("CreateClientProfile", {"transact_write_items": 1.0})),
        _row(
            "e2e-edge",
            1,
            1,
            extra=ddb("UpdateClientProfile", {"get_item": 1.0, "transact_write_items": 1.0}),
        ),
    ]
    assert _goal(goals, "ddb-get").evaluate(rows).status == "met"
    assert _goal(goals, "ddb-create").evaluate(rows).status == "met"
    assert _goal(goals, "ddb-patch").evaluate(rows).status == "met"  # read to merge + 1 write
    extra_read = ddb("UpdateClientProfile", {"get_item": 2.0, "transact_write_items": 1.0})
    assert _goal(goals, "ddb-patch").evaluate(
        [_row("e2e-edge", 1, 1, extra=extra_read)]
    ).status == ("not met")
    retried = ddb("UpdateClientProfile", {"get_item": 1.0, "transact_write_items": 2.0})
    assert _goal(goals, "ddb-patch").evaluate([_row("e2e-edge", 1, 1, extra=retried)]).status == (
        "not met"
    )


def test_before_after_pairs_rows_by_workers_and_connections() -> None:
    baseline = {
        "about": ["baseline text"],
        "cases": [
            {
                "target": "edge",
                "status": "ok",
                "workers": 1,
                "connections": 64,
                "rps": 1000.0,
                "cpu_us_per_req": 700.0,
                "p50_ms": 40.0,
                "p99_ms": 200.0,
                "max_ms": 500.0,
                "rss_peak_mib": 65.0,
            }
        ],
    }
    rows = [
        _row(
            "edge",
            1,
            64,
            rps=3000.0,
            cpu_us_per_req=280.0,
            p50_ms=15.0,
            p99_ms=40.0,
            max_ms=90.0,
            rss_peak_mib=60.0,
        )
    ]
    text = "\n".join(before_after(baseline, rows))
    assert "baseline text" in text
    assert "| w1/c64 | 1,000 → 3,000 | 700 → 280 |" in text


def test_scaling_goal_takes_the_ratio_apart() -> None:
    goal = _goal(edge_goals(), "edge-scaling")
    assert goal.evaluate([_row("edge", 1, 64, rps=5000.0)]).status == "n/a"
    one = _row("edge", 1, 64, rps=5000.0, cpu_us_per_req=180.0, cores={"target": 0.9})
    two = _row(
        "edge",
        2,
        64,
        rps=6750.0,
        cpu_us_per_req=200.0,
        cores={"target": 1.35, "load generator": 0.2, "upstreams": 0.3, "idle": 0.15},
    )
    out = goal.evaluate([one, two])
    assert out.status == "not met"
    # 1.35x = 1.50x the cores x 0.90x the CPU per request
    assert "= 1.35x (want >= 1.5x)" in out.detail
    assert "1.35 / 0.90 (1.50x)" in out.detail and "180 / 200 µs (0.90x)" in out.detail
    assert "load generator 0.20, upstreams 0.30, idle 0.15" in out.detail
    # the harness: 0.5 cores for 6,750 req/s = 74 µs a request; 2 x 180 / (180 + 74) = 1.42x
    assert "harness costs 74 µs" in out.detail and "reach 1.42x at best" in out.detail
    two.rps = 7500.0
    assert goal.evaluate([one, two]).status == "met"


def test_store_floor_goals_are_ratios_of_direct_to_floor_cpu() -> None:
    def e2e(target: str, op: str, conns: int, cpu: float) -> CaseResult:
        row = _row(target, 1, conns, cpu_us_per_req=cpu)
        row.case = f"{target}/{op}/c{conns}"
        return row

    goals = e2e_goals()
    get = _goal(goals, "store-floor-get")
    assert get.evaluate([e2e("e2e-direct", "get", 1, 900.0)]).status == "n/a"
    rows = [
        e2e("e2e-direct", "get", 1, 600.0),
        e2e("e2e-floor", "get", 1, 500.0),
        e2e("e2e-direct", "get", 16, 520.0),
        e2e("e2e-floor", "get", 16, 400.0),
        # another operation's rows are not this goal's
        e2e("e2e-direct", "create", 1, 5000.0),
        e2e("e2e-floor", "create", 1, 1000.0),
    ]
    out = get.evaluate(rows)
    assert out.status == "met", out.detail  # 1.20x and 1.30x
    assert "c1: 1.20x (600 vs 500 µs/req)" in out.detail and "c16: 1.30x" in out.detail
    rows[2].cpu_us_per_req = 530.0  # 1.325x at c16: the worst concurrency decides
    assert get.evaluate(rows).status == "not met"
    create = _goal(goals, "store-floor-create").evaluate(rows)
    assert create.status == "not met" and "5.00x" in create.detail and "limit 1.5x" in create.detail


def test_before_after_goal_compares_the_earlier_store_in_the_same_run() -> None:
    def e2e(target: str, conns: int, cpu: float) -> CaseResult:
        row = _row(target, 1, conns, cpu_us_per_req=cpu)
        row.case = f"{target}/get/c{conns}"
        return row

    goal = _goal(e2e_goals(), "store-before-after-get")
    assert goal.evaluate([e2e("e2e-direct", 1, 900.0)]).status == "n/a"
    out = goal.evaluate(
        [e2e("e2e-before", 1, 1200.0), e2e("e2e-direct", 1, 900.0), e2e("e2e-floor", 1, 800.0)]
    )
    assert out.status == "n/a"  # informational
    assert "c1: 1200 -> 900 µs/req (0.75x), over the floor 1.50x -> 1.12x" in out.detail


def _rounds(target: str, op: str, conns: int, cpus: list[float]) -> list[CaseResult]:
    """One row per round, as the e2e runner appends them (req/s falls as CPU rises)."""
    out = []
    for cpu in cpus:
        row = _row(target, 1, conns, cpu_us_per_req=cpu, rps=1e6 / cpu)
        row.case = f"{target}/{op}/c{conns}"
        out.append(row)
    return out


def test_floor_ratio_is_the_median_of_the_rounds_ratios() -> None:
    # A slow second round (the machine busy) falls on the store and the floor alike; the ratio
    # of the median rows (store round 1, floor round 3) would say 1.50x, the rounds say 1.20x.
    rows = merge_rounds(
        [
            *_rounds("e2e-direct", "get", 16, [600.0, 1200.0, 660.0]),
            *_rounds("e2e-floor", "get", 16, [500.0, 1000.0, 400.0]),
        ]
    )
    out = _goal(e2e_goals(), "store-floor-get").evaluate(rows)
    assert out.status == "met", out.detail
    assert "c16: 1.20x (660 vs 500 µs/req; rounds 1.20 / 1.20 / 1.65)" in out.detail
    rows = merge_rounds(
        [
            *_rounds("e2e-direct", "get", 16, [600.0, 1320.0, 700.0]),
            *_rounds("e2e-floor", "get", 16, [500.0, 1000.0, 400.0]),
        ]
    )
    assert _goal(e2e_goals(), "store-floor-get").evaluate(rows).status == "not met"  # 1.32x


def test_floor_section_lists_each_operation_against_its_target() -> None:
    assert floor_section([_row("e2e-direct", 1, 1, cpu_us_per_req=900.0)]) == []
    rows = merge_rounds(
        [
            *_rounds("e2e-direct", "get", 1, [600.0, 660.0]),
            *_rounds("e2e-floor", "get", 1, [500.0, 500.0]),
            *_rounds("e2e-direct", "create", 1, [1800.0]),
            *_rounds("e2e-floor", "create", 1, [1000.0]),
        ]
    )
    text = "\n".join(floor_section(rows))
    assert "| get | 1 | 630 | 500 | 1.26x | 1.20 / 1.32 | <= 1.3x | met |" in text
    assert "| create | 1 | 1800 | 1000 | 1.80x | 1.80 | <= 1.5x | **not met** |" in text
    assert "before" not in text.split("\n")[2]  # no --e2e-before: no such columns
    rows += _rounds("e2e-before", "get", 1, [900.0])
    text = "\n".join(floor_section(rows))
    assert "| operation | conns | before CPU µs/req | store CPU µs/req |" in text
    assert "| get | 1 | 900 | 630 | 500 | 1.80x | 1.26x |" in text  # before: round 1 only
    assert "| create | 1 | - | 1800 | 1000 | - | 1.80x |" in text
