"""``merge_rounds``: the median round for throughput, the worst for what must always hold."""

from __future__ import annotations

from bench.cases import CaseResult, merge_rounds


def _row(case: str, rps: float, *, errors: int = 0, max_ms: float = 1.0, status: str = "ok"):  # type: ignore[no-untyped-def]
    return CaseResult(
        case=case,
        group="g",
        target=case.split("/")[0],
        workers=1,
        connections=64,
        status=status,
        rps=rps if status == "ok" else None,
        cpu_us_per_req=1e6 / rps,
        p50_ms=1000 / rps,
        max_ms=max_ms if status == "ok" else None,
        errors=errors if status == "ok" else None,
        errors_detail={"status 502": errors} if errors else {},
        rss_peak_mib=rps / 100,
        routing="ok",
    )


def test_median_round_with_worst_tail_and_summed_errors() -> None:
    rows = [
        _row("edge/w1/c64", 5000, max_ms=20),
        _row("naive/w1/c64", 3000),
        _row("edge/w1/c64", 6000, errors=2, max_ms=900),
        _row("naive/w1/c64", 3100),
        _row("edge/w1/c64", 5500, max_ms=30),
        _row("naive/w1/c64", 2900),
    ]
    merged = merge_rounds(rows)
    assert [r.case for r in merged] == ["edge/w1/c64", "naive/w1/c64"]
    edge = merged[0]
    assert edge.rps == 5500 and edge.cpu_us_per_req == 1e6 / 5500  # the median round
    assert edge.errors == 2 and edge.errors_detail == {"status 502": 2}  # from another round
    assert edge.max_ms == 900  # the worst round's tail
    assert edge.rss_peak_mib == 60  # and its peak memory
    assert edge.extra["rounds"]["rps"] == [5000, 6000, 5500]
    assert edge.extra["rounds"]["median_round"] == 3
    assert merged[1].rps == 3000


def test_even_count_takes_the_lower_median_and_a_failed_round_is_an_error() -> None:
    merged = merge_rounds(
        [
            _row("edge/w2/c64", 8000),
            _row("edge/w2/c64", 1, status="error"),
            _row("edge/w2/c64", 7000),
        ]
    )
    (edge,) = merged
    assert edge.rps == 7000  # lower median of the two that ran
    assert edge.errors == 1 and edge.errors_detail["failed rounds"] == 1
    assert edge.extra["rounds"]["failed"] == ["error: "]


def test_a_single_round_is_left_as_measured() -> None:
    row = _row("edge/w1/c1", 4000)
    assert merge_rounds([row]) == [row]
    assert "rounds" not in row.extra
