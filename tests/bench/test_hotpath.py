"""``python -m bench.hotpath`` drives the real edge pipeline on in-memory transports."""

from __future__ import annotations

from bench import hotpath


async def test_hotpath_answers_every_request_and_reports_cpu() -> None:
    result = await hotpath.measure(300)  # raises on any answer that is not a 200
    assert result["requests"] == 300
    assert 0 < result["cpu_us_per_req"] < 100_000
