"""Machine facts, the Markdown report and the JSON results."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.core import CaseResult, GoalOutcome
from bench.targets import nginx_version
from bench.wrk import wrk_version


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def machine_info() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "nginx": nginx_version(),
        "wrk": wrk_version(),
        "loadavg_at_start": _loadavg(),
    }


def _f(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


COLUMNS = (
    "case",
    "target",
    "workers",
    "conns",
    "req/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "errors",
    "CPU µs/req",
    "peak RSS MiB sum (max proc)",
    "routing",
)


def case_row(r: CaseResult) -> list[str]:
    if r.status != "ok":
        return [
            r.case,
            r.target,
            str(r.workers),
            str(r.connections),
            f"**{r.status}**: {r.reason}",
            *["-"] * (len(COLUMNS) - 5),
        ]
    return [
        r.case,
        r.target,
        str(r.workers),
        str(r.connections),
        _f(r.rps, ",.0f") + _rounds(r),
        _f(r.p50_ms, ".3f"),
        _f(r.p90_ms, ".3f"),
        _f(r.p99_ms, ".3f"),
        _f(r.max_ms, ".1f"),
        str(r.errors),
        _f(r.cpu_us_per_req, ".1f"),
        f"{_f(r.rss_peak_mib, '.1f')} ({_f(r.rss_peak_max_proc_mib, '.1f')})",
        r.routing,
    ]


def _rounds(r: CaseResult) -> str:
    """With ``--repeat``: every round's req/s after the median's, in run order."""
    rounds = r.extra.get("rounds")
    if not rounds:
        return ""
    return " (rounds: " + " / ".join(_f(v, ",.0f") for v in rounds["rps"]) + ")"


def _table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    esc = [[c.replace("|", "\\|") for c in row] for row in rows]
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in esc),
    ]


def markdown(
    *,
    title: str,
    machine: dict[str, Any],
    settings: dict[str, Any],
    rows: list[CaseResult],
    goals: list[GoalOutcome],
    notes: list[str],
    sections: Sequence[tuple[str, list[str]]] = (),
) -> str:
    out = [
        f"# {title}",
        "",
        f"Generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} by `python -m bench`"
        f"{' --smoke' if settings.get('smoke') else ''}.",
        "",
        "## Machine",
        "",
    ]
    out += _table(["fact", "value"], [[k, str(v)] for k, v in machine.items()])
    out += ["", "## Settings", ""]
    out += _table(["setting", "value"], [[k, str(v)] for k, v in settings.items()])
    groups: dict[str, list[CaseResult]] = {}
    for r in rows:
        groups.setdefault(r.group, []).append(r)
    for group, grows in groups.items():
        out += ["", f"## {group}", ""]
        out += _table(COLUMNS, [case_row(r) for r in grows])
        for r in grows:
            # each round's req/s is in the table; the rest of "rounds" is in the JSON file
            extra = {k: v for k, v in r.extra.items() if k != "rounds"}
            if not extra:
                continue
            out += [
                "",
                f"`{r.case}` extra figures:",
                "",
                "```json",
                json.dumps(extra, indent=2, sort_keys=True),
                "```",
            ]
    for heading, lines in sections:
        out += ["", f"## {heading}", "", *lines]
    if goals:
        out += ["", "## Targets", ""]
        out += _table(
            ["target", "status", "detail"],
            [[f"{g.name}: {g.description}", g.status, g.detail] for g in goals],
        )
    if notes:
        out += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    return "\n".join(out) + "\n"


def write_outputs(
    *,
    md_path: Path,
    json_path: Path,
    machine: dict[str, Any],
    settings: dict[str, Any],
    rows: list[CaseResult],
    goals: list[GoalOutcome],
    notes: list[str],
    title: str,
    sections: Sequence[tuple[str, list[str]]] = (),
) -> None:
    md_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(
        markdown(
            title=title,
            machine=machine,
            settings=settings,
            rows=rows,
            goals=goals,
            notes=notes,
            sections=sections,
        )
    )
    doc = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": settings,
        "cases": [r.to_dict() for r in rows],
        "goals": [asdict(g) for g in goals],
        "notes": notes,
    }
    json_path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")


def before_after(
    baseline: dict[str, Any], rows: list[CaseResult], target: str = "edge"
) -> list[str]:
    """Lines of a "before / after" section: what the baseline was, then its ``target`` rows
    next to this run's at the same workers and connections."""
    lines = [*baseline.get("about", []), ""]
    before = {
        (c["workers"], c["connections"]): c
        for c in baseline.get("cases", [])
        if c.get("target") == target and c.get("status") == "ok"
    }
    table = []
    for r in rows:
        if r.target != target or r.status != "ok":
            continue
        b = before.get((r.workers, r.connections))
        if b is None:
            continue
        table.append(
            [
                f"w{r.workers}/c{r.connections}",
                f"{_f(b['rps'], ',.0f')} → {_f(r.rps, ',.0f')}",
                f"{_f(b['cpu_us_per_req'], '.0f')} → {_f(r.cpu_us_per_req, '.0f')}",
                f"{_f(b['p50_ms'], '.3f')} → {_f(r.p50_ms, '.3f')}",
                f"{_f(b['p99_ms'], '.1f')} → {_f(r.p99_ms, '.1f')}",
                f"{_f(b['max_ms'], '.0f')} → {_f(r.max_ms, '.0f')}",
                f"{_f(b['rss_peak_mib'], '.0f')} → {_f(r.rss_peak_mib, '.0f')}",
            ]
        )
    if table:
        lines += _table(
            [
                f"{target} case",
                "req/s",
                "CPU µs/req",
                "p50 ms",
                "p99 ms",
                "max ms",
                "peak RSS MiB",
            ],
            table,
        )
    else:
        lines.append(f"(no {target} rows in common with the baseline)")
    return lines
