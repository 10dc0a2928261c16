"""``python -m bench``: proxy overhead on a static upstream, over loopback, in one run.

Cases (same request mix, same connection counts, same worker count for every proxy):
direct on the static upstream, nginx, the naive aiohttp proxy, and our edge (a clear
"edge not available" row when ``edge_router`` cannot be imported or started).

    python -m bench                      # full run -> docs/benchmarks.md, bench/results/latest.json
    python -m bench --smoke --out /tmp/b.md --json /tmp/b.json   # a few seconds (CI)

Needs ``wrk`` and ``nginx`` on PATH: ``apt-get install -y wrk nginx-light``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench import proc
from bench.accounts import DEFAULT_ACCOUNTS
from bench.cases import CaseResult
from bench.edge_target import EDGE_BENCH_SETTINGS
from bench.goals import all_goals
from bench.judge import evaluate
from bench.nginx_target import nginx_binary
from bench.options import ALL_TARGETS, parse_args
from bench.report import Report, extra_sections, machine_info, write_outputs
from bench.runner import Bench
from bench.wrk import wrk_binary

APT_PACKAGES = "wrk nginx-light"


def missing_tools(targets: Sequence[str] = ALL_TARGETS) -> list[str]:
    """What the chosen targets need that is not installed (``e2e`` alone needs neither: its
    load comes from the bench's own generator)."""
    missing = []
    if wrk_binary() is None and set(targets) - {"e2e"}:
        missing.append("wrk")
    if nginx_binary() is None and "nginx" in targets:
        missing.append("nginx")
    return missing


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds every finally: children are stopped


def _settings(
    args: argparse.Namespace, placement: dict[str, frozenset[int] | None]
) -> dict[str, object]:
    """The report's "Settings" table."""
    return {
        "smoke": args.smoke,
        "connections": args.connections,
        "workers per proxy": args.workers,
        "measured duration per case (s)": args.duration,
        "warm-up per case (s)": args.warmup,
        "rounds of the proxy cases (median reported)": args.repeat,
        "wrk threads": args.wrk_threads,
        "CPU placement": (
            f"wrk and the static upstreams on CPUs {sorted(placement[proc.HARNESS])}, "
            f"the targets on {sorted(placement[proc.TARGET])}"
            if placement[proc.HARNESS] is not None
            else "none (the scheduler's)"
        ),
        "wrk timeout (s)": args.timeout,
        "request mix": "GET /api/storage/profile-system/profiles/<id>, alternating Host "
        + " / ".join(f"{a.host} ({a.region})" for a in DEFAULT_ACCOUNTS)
        + ", with X-VTEX-API-AppKey/AppToken headers",
        "edge settings overridden for the bench": EDGE_BENCH_SETTINGS,
        "end-to-end cases": (
            f"demo-us account, GET masked profile / PATCH firstName / POST unique profile, "
            f"concurrency {args.e2e_concurrency}, {args.e2e_duration:g}s each, "
            f"{args.e2e_repeat} round(s) (median reported), async Python "
            "load generator (aiohttp) in the bench process; direct = one us-east-1 store "
            "instance with a generator-signed assertion; floor = bench.store_floor (the store's "
            "DynamoDB calls, same item sizes, no crypto/masking/validation) on the same table"
            + (f"; before = a store from {args.e2e_before}" if args.e2e_before else "")
            if "e2e" in args.targets
            else "not run"
        ),
    }


def _notes(wall_s: float) -> list[str]:
    """The report's "Notes": how to read the figures."""
    return [
        "Everything runs on this one machine over loopback: wrk, the static upstreams "
        "and the proxy share its cores, and other work on the machine (other test "
        "suites) may load the CPU during the run (see the load averages above).",
        "direct = wrk straight on the us-east-1 static upstream (it ignores Host); "
        "naive has no routing logic, so both accounts reach us-east-1 through it.",
        "errors = HTTP status >= 400 plus socket errors (connect/read/write/timeout), "
        "as counted by wrk; the routing column comes from one probe per account before "
        "the load (X-Upstream-Region of the static upstream).",
        "CPU µs/req = utime+stime of the target's process tree (the process and its "
        "workers) during the measured run / requests. Peak RSS = VmHWM summed over "
        "those processes, reset (clear_refs) before the measured run.",
        f"Total wall time {wall_s:.0f}s.",
    ]


def rerender(args: argparse.Namespace) -> int:
    """Rewrite the Markdown (targets, before/after) from an earlier run's JSON."""
    doc = json.loads(args.rerender.read_text())
    fields = set(CaseResult.__dataclass_fields__)
    rows = [CaseResult(**{k: v for k, v in c.items() if k in fields}) for c in doc["cases"]]
    sections = extra_sections(rows, args.baseline)
    # One re-render note, however often a file is re-rendered; the run's own time is kept.
    rerendered = "Report re-rendered from "
    notes = [n for n in doc.get("notes", []) if not n.startswith(rerendered)]
    notes.append(
        f"{rerendered}{args.rerender.name} at {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}."
    )
    report = Report(
        title="Benchmarks",
        machine=doc["machine"],
        settings=doc["settings"],
        rows=rows,
        goals=evaluate(all_goals(), rows),
        notes=notes,
        sections=sections,
        measured_at=datetime.fromisoformat(doc["generated_at"]),
    )
    write_outputs(report, args.out, args.json)
    print(f"bench: re-rendered {args.out} and {args.json} from {args.rerender}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rerender:
        return rerender(args)
    try:
        placement = proc.place(args.harness_cpus)
    except ValueError as exc:
        print(f"bench: --harness-cpus: {exc}", file=sys.stderr)
        return 2
    missing = missing_tools(args.targets)
    if missing:
        print(
            f"bench: missing on this machine: {', '.join(missing)}; install with\n"
            f"  apt-get install -y {APT_PACKAGES}",
            file=sys.stderr,
        )
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    _raise_nofile()
    machine = machine_info(pair_iterations=200_000 if args.smoke else 3_000_000)
    settings = _settings(args, placement)
    print(
        f"bench: {machine['cpu_model']} x{machine['nproc']}, nginx {machine['nginx']}, "
        f"wrk {machine['wrk']}; results -> {args.out}, {args.json}",
        flush=True,
    )
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.work_dir:
            work_dir = args.work_dir
            work_dir.mkdir(parents=True, exist_ok=True)
        else:
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        bench = Bench(args, work_dir)
        try:
            bench.run()
        finally:
            rows = bench.rows
            goals = evaluate(all_goals(), rows)
            machine["loadavg_at_end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            report = Report(
                title="Benchmarks" + (" (smoke)" if args.smoke else ""),
                machine=machine,
                settings=settings,
                rows=rows,
                goals=goals,
                notes=_notes(time.monotonic() - started),
                sections=extra_sections(rows, None if args.smoke else args.baseline),
            )
            write_outputs(report, args.out, args.json)
            print(f"bench: wrote {args.out} and {args.json}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
