"""``python -m bench.hotpath`` drives the real edge pipeline on in-memory transports."""

from __future__ import annotations

import pytest

from bench import hotpath


@pytest.mark.parametrize("auth", ["key", "token"])
async def test_hotpath_answers_every_request_and_reports_cpu(auth: str) -> None:
    result = await hotpath.measure(300, auth=auth)  # raises on any answer that is not a 200
    assert result["requests"] == 300
    assert 0 < result["cpu_us_per_req"] < 100_000


def test_collected_instructions_reads_callgrinds_summary() -> None:
    err = b"==41== Events    : Ir\n==41== Collected : 2302041413\n==41==\n==41== I refs: 2,302\n"
    assert hotpath.collected_instructions(err) == 2_302_041_413
    with pytest.raises(RuntimeError):
        hotpath.collected_instructions(b"==41== Command: python\n")


def test_per_request_cancels_what_both_runs_share() -> None:
    # 1,000 instructions of start-up in both, 7 per request.
    assert hotpath.per_request((10, 1_070), (30, 1_210)) == 7.0
    with pytest.raises(ValueError):
        hotpath.per_request((30, 1_210), (10, 1_070))
