"""``python -m bench --rerender``: targets re-judged, the run's own time and one note kept."""

from __future__ import annotations

import json
from pathlib import Path

from bench.__main__ import main
from bench.cases import CaseResult


def test_rerender_keeps_the_measurement_time_and_one_note(tmp_path: Path) -> None:
    row = CaseResult(
        case="edge/w1/c64", group="g", target="edge", workers=1, connections=64, status="ok"
    )
    row.rps, row.cpu_us_per_req = 6000.0, 140.0
    src = tmp_path / "run.json"
    src.write_text(
        json.dumps(
            {
                "generated_at": "2026-11-25T08:36:08+00:00",
                "machine": {"nproc": 2},
                "settings": {"smoke": False},
                "cases": [row.to_dict() | {"a field of a later version": 1}],
                "goals": [],
                "notes": ["a note of the run"],
            }
        )
    )
    md = tmp_path / "report.md"
    argv = ["--rerender", str(src), "--out", str(md), "--json", str(src)]
    argv += ["--baseline", str(tmp_path / "none.json")]
    for _ in range(2):  # in place, twice
        assert main(argv) == 0
    doc = json.loads(src.read_text())
    assert doc["generated_at"] == "2026-11-25T08:36:08+00:00"
    assert doc["notes"][0] == "a note of the run"
    assert [n.startswith("Report re-rendered from run.json at ") for n in doc["notes"]] == [
        False,
        True,
    ]
    text = md.read_text()
    assert "Generated 2026-11-25 08:36 UTC" in text
    assert "| edge-cpu: edge CPU per request <= 150 µs | met |" in text  # re-judged
