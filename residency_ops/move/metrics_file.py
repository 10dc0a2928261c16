"""``edge_account_moves_total{result}`` for a mover nobody can scrape: a Prometheus textfile.

The mover is a short-lived operator command, so ``--metrics-file PATH`` adds one to the
result's counter in a file that node_exporter's textfile collector (or any scraper reading
it) exposes. The file's previous totals are read back first, so the counter only grows; it is
written to a temporary file and renamed, so a scraper never reads half a file.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

NAME = "edge_account_moves"
RESULTS = ("done", "failed", "aborted", "refused")


def _previous(path: Path) -> dict[str, float]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{NAME}_total" and "result" in sample.labels:
                totals[sample.labels["result"]] = sample.value
    return totals


def record_move(path: str | os.PathLike[str], result: str) -> None:
    p = Path(path)
    totals = _previous(p)
    totals[result] = totals.get(result, 0.0) + 1
    registry = CollectorRegistry()
    counter = Counter(
        NAME,
        "Account moves run by 'residency-ops account', by result",
        ["result"],
        registry=registry,
    )
    for r in sorted(set(RESULTS) | set(totals)):
        counter.labels(r).inc(totals.get(r, 0.0))
    write_to_textfile(str(p), registry)
