"""Machine facts, the Markdown report and the JSON results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.cases import CaseResult
from bench.goals import FLOOR_LIMITS, floor_ratios
from bench.judge import GoalOutcome
from bench.nginx_target import nginx_version
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


# A CPU-bound loop of the interpreter's common operations; prints its own duration, so the
# interpreter's start-up is not part of it.
_SPIN = """
import time
t = time.perf_counter()
d = {}
for i in range(%d):
    d[i & 1023] = str(i)
print(time.perf_counter() - t)
"""


def cpu_pair_scaling(iterations: int = 3_000_000, trials: int = 3) -> float | None:
    """Throughput of two CPU-bound Python processes at once over one alone (the median of
    ``trials``). 2.0 when the two cores are independent; lower when the VM's vCPUs share a
    physical core or the host is busy -- a ceiling on what a second edge worker can add,
    before the load generator and the upstreams take their share."""
    code = _SPIN % iterations

    def run(n: int) -> list[float]:
        procs = [
            subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
            for _ in range(n)
        ]
        try:
            return [float(p.communicate(timeout=120)[0]) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()

    ratios = []
    try:
        for _ in range(trials):
            (alone,) = run(1)
            ratios.append(sum(alone / t for t in run(2)))
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    return round(statistics.median(ratios), 2)


def python_build() -> str:
    """Which interpreter runs the bench (and the Python targets), and whether libpython is a
    shared library in it: a default pyenv build (shared, no PGO/LTO) costs this project's hot
    path ~15-20% more CPU than a distribution's or the official images' optimised builds."""
    exe = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    try:
        with open("/proc/self/maps") as maps:
            shared = any("libpython" in line for line in maps)
    except OSError:
        return exe
    return f"{exe}, libpython {'shared' if shared else 'static'}"


def machine_info(*, pair_iterations: int = 3_000_000) -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "python build": python_build(),
        "nginx": nginx_version(),
        "wrk": wrk_version(),
        "loadavg_at_start": _loadavg(),
        "two CPU-bound processes vs one (throughput)": cpu_pair_scaling(pair_iterations),
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
    "CPU µs/req (user + sys)",
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
        _f(r.cpu_us_per_req, ".1f") + _split(r),
        f"{_f(r.rss_peak_mib, '.1f')} ({_f(r.rss_peak_max_proc_mib, '.1f')})",
        r.routing,
    ]


def _split(r: CaseResult) -> str:
    if r.cpu_user_us_per_req is None or r.cpu_sys_us_per_req is None:
        return ""
    return f" ({r.cpu_user_us_per_req:.0f} + {r.cpu_sys_us_per_req:.0f})"


CORE_KINDS = ("target", "load generator", "upstreams", "other", "steal", "idle")


def cores_table(rows: Sequence[CaseResult]) -> list[str]:
    """Where the machine's cores went in each measured run ([] when no row has the figures)."""
    measured = [r for r in rows if r.status == "ok" and r.cores]
    if not measured:
        return []
    return [
        "",
        "Where the machine's cores went during each measured run, in cores (from /proc/stat "
        "and the processes' own CPU time): the target, wrk, the static upstreams, any other "
        "process, the hypervisor's steal, idle. On loopback the receiving side of TCP runs in "
        "the sender's context, so each process's share includes its peers' softirq work.",
        "",
        *_table(
            ["case", *CORE_KINDS],
            [[r.case, *(_f(r.cores.get(k)) for k in CORE_KINDS)] for r in measured],
        ),
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


@dataclass
class Report:
    """What one run's Markdown report and JSON results are made of."""

    title: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    rows: list[CaseResult]
    goals: list[GoalOutcome]
    notes: list[str]
    sections: Sequence[tuple[str, list[str]]] = ()  # (heading, lines) after the case tables
    # when the figures were taken (a re-render keeps the original run's)
    measured_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def markdown(report: Report) -> str:
    settings = report.settings
    out = [
        f"# {report.title}",
        "",
        f"Generated {report.measured_at.strftime('%Y-%m-%d %H:%M UTC')} by `python -m bench`"
        f"{' --smoke' if settings.get('smoke') else ''}.",
        "",
        "## Machine",
        "",
    ]
    out += _table(["fact", "value"], [[k, str(v)] for k, v in report.machine.items()])
    out += ["", "## Settings", ""]
    out += _table(["setting", "value"], [[k, str(v)] for k, v in settings.items()])
    groups: dict[str, list[CaseResult]] = {}
    for r in report.rows:
        groups.setdefault(r.group, []).append(r)
    for group, grows in groups.items():
        out += ["", f"## {group}", ""]
        out += _table(COLUMNS, [case_row(r) for r in grows])
        out += cores_table(grows)
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
    for heading, lines in report.sections:
        out += ["", f"## {heading}", "", *lines]
    if report.goals:
        out += ["", "## Targets", ""]
        out += _table(
            ["target", "status", "detail"],
            [[f"{g.name}: {g.description}", g.status, g.detail] for g in report.goals],
        )
    if report.notes:
        out += ["", "## Notes", "", *(f"- {n}" for n in report.notes)]
    return "\n".join(out) + "\n"


def write_outputs(report: Report, md_path: Path, json_path: Path) -> None:
    """The Markdown report and the JSON results."""
    md_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(markdown(report))
    doc = {
        "generated_at": report.measured_at.isoformat(timespec="seconds"),
        "machine": report.machine,
        "settings": report.settings,
        "cases": [r.to_dict() for r in report.rows],
        "goals": [asdict(g) for g in report.goals],
        "notes": report.notes,
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


FLOOR_HEADING = "Store CPU floor"


def floor_section(rows: Sequence[CaseResult]) -> list[str]:
    """Lines of the "Store CPU floor" section: per operation and concurrency, the direct
    store's CPU per request, the floor's, their ratio and its target; with --e2e-before, the
    earlier store's too. [] when the run has no floor rows."""
    found = [
        (op, limit, f) for op, limit in FLOOR_LIMITS.items() for f in floor_ratios(list(rows), op)
    ]
    if not found:
        return []
    before = any(f.before is not None for _, _, f in found)
    header = ["operation", "conns"]
    header += ["before CPU µs/req"] if before else []
    header += ["store CPU µs/req", "floor CPU µs/req"]
    header += ["before / floor"] if before else []
    header += ["store / floor", "rounds (store / floor each round)", "target", "status"]
    table = []
    for op, limit, f in found:
        line = [op, str(f.connections)]
        line += [_f(f.before.a, ".0f") if f.before else "-"] if before else []
        line += [_f(f.store.a, ".0f"), _f(f.store.b, ".0f")]
        line += [f"{f.before.ratio:.2f}x" if f.before else "-"] if before else []
        line += [
            f"{f.store.ratio:.2f}x",
            f.store.rounds_text(),
            f"<= {limit:g}x",
            "met" if f.store.ratio <= limit else "**not met**",
        ]
        table.append(line)
    return [
        "The direct store (one us-east-1 instance, the edge's assertion signed by the load "
        "generator) against `bench.store_floor`: a minimal aiohttp + aiobotocore service "
        "making the same DynamoDB calls with items of the same sizes, and no crypto, masking, "
        "validation, assertion check or metrics, on the same table in the same run. Each "
        "round measures both one after the other; the ratio is the median of the rounds' "
        "ratios, the CPU figures the medians of each case's rounds"
        + (
            "; before = the store of the --e2e-before tree, measured like the direct store."
            if before
            else "."
        ),
        "",
        *_table(header, table),
    ]


def extra_sections(rows: list[CaseResult], baseline: Path | None) -> list[tuple[str, list[str]]]:
    """The sections after the case tables: the edge before / after against ``baseline`` (an
    earlier run's JSON, when that file exists) and the store CPU floor (when there are floor
    rows)."""
    sections = []
    if baseline and baseline.is_file():
        before = json.loads(baseline.read_text())
        sections.append(("Before / after (edge)", before_after(before, rows)))
    if floor_lines := floor_section(rows):
        sections.append((FLOOR_HEADING, floor_lines))
    return sections
