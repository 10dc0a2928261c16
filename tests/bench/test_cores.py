"""``core_shares`` and how the report shows CPU: where a run's cores went, user + sys."""

from __future__ import annotations

from bench.cases import CaseResult
from bench.measure import core_shares
from bench.report import Report, case_row, cores_table, markdown


def test_core_shares_split_the_machine_by_consumer() -> None:
    # 2 cores for 10 s at 100 ticks/s: 2,000 ticks (softirq: inside the processes' own time)
    delta = {"user": 1200, "nice": 0, "system": 400, "idle": 150, "iowait": 50}
    delta |= {"irq": 0, "softirq": 180, "steal": 20}
    shares = core_shares(delta, 2, target_ticks=1000, load_generator_ticks=200, upstream_ticks=300)
    assert shares == {
        "target": 1.0,
        "load generator": 0.2,
        "upstreams": 0.3,
        "other": 0.28,  # 1,780 busy ticks, 1,500 of them charged to a listed process
        "steal": 0.02,
        "idle": 0.2,
    }


def test_core_shares_stay_within_the_machine_when_samples_disagree() -> None:
    # per-process times and /proc/stat are sampled apart: charged may exceed busy a little
    shares = core_shares(
        {"user": 100, "idle": 100}, 2, target_ticks=110, load_generator_ticks=0, upstream_ticks=0
    )
    assert shares["other"] == 0
    assert abs(sum(shares.values()) - 2) < 0.02
    assert core_shares({}, 2, target_ticks=1, load_generator_ticks=0, upstream_ticks=0) == {}
    empty = core_shares({"idle": 5}, 0, target_ticks=0, load_generator_ticks=0, upstream_ticks=0)
    assert empty == {}


def _row(case: str = "edge/w2/c64", **kw: object) -> CaseResult:
    row = CaseResult(case=case, group="g", target="edge", workers=2, connections=64, status="ok")
    row.cpu_us_per_req = 200.0
    for k, v in kw.items():
        setattr(row, k, v)
    return row


def test_report_shows_user_and_sys_and_the_cores_table() -> None:
    row = _row(
        cpu_user_us_per_req=160.4,
        cpu_sys_us_per_req=39.6,
        cores={"target": 1.4, "load generator": 0.15, "upstreams": 0.25, "idle": 0.2},
    )
    assert "200.0 (160 + 40)" in case_row(row)
    table = cores_table([row, _row("old/w1/c64")])  # a row without figures is left out
    assert table[-1] == "| edge/w2/c64 | 1.40 | 0.15 | 0.25 | - | - | 0.20 |"
    assert not any("old/w1/c64" in line for line in table)
    assert cores_table([_row()]) == []  # results from before these figures: no table
    doc = markdown(Report(title="t", machine={}, settings={}, rows=[row], goals=[], notes=[]))
    assert "Where the machine's cores went" in doc
