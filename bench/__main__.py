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
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path

from bench import proc
from bench.accounts import DEFAULT_ACCOUNTS, request_mix
from bench.cases import CaseResult, LoadSpec, Probe, Target, TargetUnavailable, merge_rounds
from bench.cases import skipped as skipped_row
from bench.e2e import BEFORE, E2E, OPERATIONS, TARGETS, e2e_stack
from bench.edge_target import EDGE_BENCH_SETTINGS, EdgeEnvironment, edge_environment
from bench.goals import e2e_goals, edge_goals, harness_goals
from bench.judge import evaluate
from bench.measure import run_case
from bench.nginx_target import nginx, nginx_binary
from bench.probes import PrometheusDeltaProbe
from bench.report import FLOOR_HEADING, before_after, floor_section, machine_info, write_outputs
from bench.targets import Upstreams, direct, naive, static_upstreams
from bench.wrk import wrk_binary

REPO_ROOT = Path(__file__).resolve().parent.parent
APT_PACKAGES = "wrk nginx-light"
GROUP = "Proxy overhead on a static upstream"
ALL_TARGETS = ("direct", "nginx", "naive", "edge", "edge-web", "e2e")


def _ints(raw: str) -> list[int]:
    return [int(x) for x in raw.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a few seconds of tiny load (CI)")
    ap.add_argument(
        "--out",
        type=Path,
        help="Markdown report (default docs/benchmarks.md; with --smoke bench/results/smoke.md)",
    )
    ap.add_argument(
        "--json",
        type=Path,
        help="JSON results (default bench/results/latest.json;"
        " with --smoke bench/results/smoke.json)",
    )
    ap.add_argument("--connections", type=_ints, help="default 1,64,256,1000 (smoke: 1,8)")
    ap.add_argument(
        "--workers",
        type=_ints,
        help="worker processes per proxy: each proxy is "
        "measured at each count (default 1,2; smoke 1)",
    )
    ap.add_argument("--duration", type=float, help="seconds per measured run (default 10; smoke 1)")
    ap.add_argument(
        "--warmup", type=float, help="unmeasured seconds before each run (default 2; smoke 0)"
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of the proxy cases; each case reports its median round by req/s, with "
        "errors summed and max latency / peak RSS the worst of all rounds (default 1)",
    )
    ap.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1)")
    ap.add_argument(
        "--harness-cpus",
        type=_ints,
        help="run wrk and the static upstreams on these CPUs (e.g. 2,3) and the measured "
        "targets on the others, so the targets' workers have cores to themselves (for 2 "
        "workers vs 1 on a machine with 4 or more cores; default: no pinning)",
    )
    ap.add_argument("--timeout", type=float, default=10.0, help="wrk per-request timeout, s")
    ap.add_argument(
        "--targets", default=",".join(ALL_TARGETS), help=f"comma list of {','.join(ALL_TARGETS)}"
    )
    ap.add_argument("--work-dir", type=Path, help="keep configs/logs here (default: a temp dir)")
    ap.add_argument(
        "--rerender",
        type=Path,
        help="no measuring: re-evaluate the targets on an earlier JSON and rewrite --out",
    )
    ap.add_argument(
        "--baseline",
        type=Path,
        default=REPO_ROOT / "bench/results/before.json",
        help="earlier results to compare the edge rows with (a 'Before / after' section; "
        "default bench/results/before.json when present)",
    )
    ap.add_argument(
        "--e2e-concurrency",
        type=_ints,
        help="end-to-end cases: concurrent requests (default 1,16; smoke 1)",
    )
    ap.add_argument(
        "--e2e-duration", type=float, help="end-to-end cases: seconds per case (default 5)"
    )
    ap.add_argument(
        "--e2e-before",
        type=Path,
        help="end-to-end cases: also run a store from this source tree (a checkout of an "
        "earlier commit) as target 'before', for a before/after in the same run",
    )
    ap.add_argument(
        "--e2e-repeat",
        type=int,
        default=1,
        help="rounds of the end-to-end cases on one stack, each case reporting its median "
        "round like --repeat; the store-floor ratios are the medians of the rounds' own "
        "ratios (store and floor measured in the same round)",
    )
    args = ap.parse_args(argv)
    smoke = args.smoke
    args.out = args.out or REPO_ROOT / ("bench/results/smoke.md" if smoke else "docs/benchmarks.md")
    args.json = args.json or REPO_ROOT / (
        "bench/results/smoke.json" if smoke else "bench/results/latest.json"
    )
    args.connections = args.connections or ([1, 8] if smoke else [1, 64, 256, 1000])
    args.e2e_concurrency = args.e2e_concurrency or ([1] if smoke else [1, 16])
    args.e2e_duration = args.e2e_duration or (1.0 if smoke else 5.0)
    args.workers = args.workers or ([1] if smoke else [1, 2])
    args.duration = args.duration if args.duration is not None else (1.0 if smoke else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (0.0 if smoke else 2.0)
    if args.repeat < 1 or args.e2e_repeat < 1:
        ap.error("--repeat and --e2e-repeat must be at least 1")
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if smoke and "e2e" in args.targets and args.targets == list(ALL_TARGETS):
        args.targets.remove("e2e")  # the smoke run stays a few seconds: no DynamoDB stack
    unknown = set(args.targets) - set(ALL_TARGETS)
    if unknown:
        ap.error(f"unknown targets: {', '.join(sorted(unknown))}")
    return args


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


class Bench:
    """One run: the upstreams stay up; each target is started, measured at every load, stopped."""

    def __init__(self, args: argparse.Namespace, work_dir: Path) -> None:
        self.args = args
        self.work_dir = work_dir
        self.rows: list[CaseResult] = []
        self.mix = request_mix(DEFAULT_ACCOUNTS)
        self._edge_env: EdgeEnvironment | None = None
        self._edge_unavailable: str | None = None
        self.stack = contextlib.ExitStack()
        self._round_start = 0  # rows before this index belong to earlier rounds
        self._upstream_pids: Callable[[], list[int]] | None = None  # the static upstreams

    def loads(self) -> list[LoadSpec]:
        a = self.args
        return [
            LoadSpec(
                mix=self.mix,
                connections=c,
                duration_s=a.duration,
                warmup_s=a.warmup,
                threads=a.wrk_threads,
                timeout_s=a.timeout,
            )
            for c in a.connections
        ]

    def measure(
        self,
        name: str,
        workers: int,
        start: Callable[[], AbstractContextManager[Target]],
        *,
        group: str = GROUP,
        loads: list[LoadSpec] | None = None,
        probes: Sequence[Probe] = (),
    ) -> None:
        """Start a target, run every load on it, stop it; failures become rows.

        This is the hook for more cases (e.g. edge -> Profile System -> DynamoDB Local): pass
        a context manager yielding a ``Target``, a ``group`` (one report table per group), the
        loads (default: this run's connection counts with the profile GET mix) and probes
        (e.g. a ``PrometheusDeltaProbe`` on the stores' ``/metrics`` for DynamoDB cost).
        """
        loads = loads if loads is not None else self.loads()
        t0 = time.monotonic()
        try:
            with start() as target:
                for load in loads:
                    row = run_case(
                        target,
                        load,
                        group=group,
                        work_dir=self.work_dir,
                        probes=probes,
                        upstream_pids=self._upstream_pids,
                    )
                    self.rows.append(row)
                    print(f"  {row.case:<22} {_summary(row)}", flush=True)
        except TargetUnavailable as exc:
            self._fill(name, workers, loads, group, str(exc), "skipped")
        except Exception as exc:
            self._fill(name, workers, loads, group, f"{type(exc).__name__}: {exc}", "error")
        print(f"  ({name} w{workers}: {time.monotonic() - t0:.1f}s)", flush=True)

    def _fill(
        self, name: str, workers: int, loads: list[LoadSpec], group: str, reason: str, status: str
    ) -> None:
        done = {
            r.connections
            for r in self.rows[self._round_start :]
            if r.group == group and r.target == name and r.workers == workers
        }
        for load in loads:
            if load.connections in done:
                continue
            row = skipped_row(
                f"{name}/w{workers}/c{load.connections}",
                group,
                name,
                workers,
                load.connections,
                reason,
                status,
            )
            self.rows.append(row)
            print(f"  {row.case:<22} {status}: {reason}", flush=True)

    def edge(
        self, ups: object, workers: int, listener: str = "raw"
    ) -> AbstractContextManager[Target]:
        if self._edge_unavailable:
            raise TargetUnavailable(self._edge_unavailable)
        if self._edge_env is None:
            try:
                self._edge_env = self.stack.enter_context(edge_environment(ups, self.work_dir))  # type: ignore[arg-type]
            except TargetUnavailable as exc:
                self._edge_unavailable = str(exc)
                raise
            except Exception as exc:
                self._edge_unavailable = f"edge not available: {type(exc).__name__}: {exc}"
                raise TargetUnavailable(self._edge_unavailable) from exc
        return self._edge_env.serve(workers, listener)

    def edge_probes(self) -> list[Probe]:
        return [_EdgeRegistryProbe(self)]

    def e2e(self) -> None:
        """Edge -> Profile System -> DynamoDB Local vs direct store calls (``bench.e2e``)."""
        from bench.e2e import GROUP as E2E_GROUP

        a = self.args
        t0 = time.monotonic()
        first = len(self.rows)
        targets = (*TARGETS, BEFORE) if a.e2e_before else TARGETS
        try:
            with e2e_stack(self.work_dir, EDGE_BENCH_SETTINGS, a.e2e_before) as stack:
                runner = E2E(stack, self.work_dir)
                runner.seed()
                # Whole rounds, like the proxy cases: a drift of the machine's speed falls on
                # the store and its floor alike.
                for rnd in range(a.e2e_repeat):
                    if a.e2e_repeat > 1:
                        print(f"e2e round {rnd + 1} of {a.e2e_repeat}", flush=True)
                    for op in OPERATIONS:
                        for conc in a.e2e_concurrency:
                            for target in targets:
                                row = runner.run(
                                    target, op, conc, a.e2e_duration, min(1.0, a.warmup)
                                )
                                self.rows.append(row)
                                print(f"  {row.case:<22} {_summary(row)}", flush=True)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            status = "skipped" if isinstance(exc, TargetUnavailable) else "error"
            for op in OPERATIONS:
                for conc in a.e2e_concurrency:
                    for target in targets:
                        case = f"e2e-{target}/{op}/c{conc}"
                        if not any(r.case == case for r in self.rows):
                            self.rows.append(
                                skipped_row(
                                    case, E2E_GROUP, f"e2e-{target}", 1, conc, reason, status
                                )
                            )
            print(f"  e2e {status}: {reason}", flush=True)
        self.rows[first:] = merge_rounds(self.rows[first:])
        print(f"  (e2e: {time.monotonic() - t0:.1f}s)", flush=True)

    def proxy_round(self, ups: Upstreams) -> None:
        a = self.args
        if "direct" in a.targets:
            self.measure("direct", 1, lambda: direct(ups))
        for w in a.workers:
            for name in a.targets:
                if name == "nginx":
                    self.measure(name, w, lambda w=w: nginx(ups, w, self.work_dir))
                elif name == "naive":
                    self.measure(name, w, lambda w=w: naive(ups, w, self.work_dir))
                elif name == "edge":
                    self.measure(name, w, lambda w=w: self.edge(ups, w), probes=self.edge_probes())
                elif name == "edge-web":
                    self.measure(
                        name, w, lambda w=w: self.edge(ups, w, "web"), probes=self.edge_probes()
                    )

    def run(self) -> None:
        a = self.args
        if set(a.targets) - {"e2e"}:
            self.proxy_rounds()
        if "e2e" in a.targets:
            self.e2e()

    def proxy_rounds(self) -> None:
        a = self.args
        with self.stack, static_upstreams(["us-east-1", "eu-west-1"], self.work_dir) as ups:
            self._upstream_pids = lambda: [p.pid for p in ups.processes.values()]
            # Whole rounds, not each case N times in a row: a drift of the shared machine's
            # speed then falls on every target alike instead of on whichever ran last.
            for rnd in range(a.repeat):
                if a.repeat > 1:
                    print(f"round {rnd + 1} of {a.repeat}", flush=True)
                self._round_start = len(self.rows)
                self.proxy_round(ups)
            self.rows = merge_rounds(self.rows)


class _EdgeRegistryProbe:
    """``edge_registry_lookups_total`` by result on the edge's admin /metrics (cache hits)."""

    name = "registry"

    def __init__(self, bench: Bench) -> None:
        self._bench = bench
        self._probe: PrometheusDeltaProbe | None = None

    def before(self) -> None:
        env = self._bench._edge_env
        if env is None:
            return
        self._probe = PrometheusDeltaProbe(
            "registry",
            urls=[f"http://127.0.0.1:{env.admin_port}/metrics"],
            metrics=["edge_registry_lookups_total"],
            group_by=("result",),
        )
        self._probe.before()

    def after(self, requests: int) -> dict[str, object]:
        if self._probe is None:
            return {"error": "edge environment not started"}
        return self._probe.after(requests)


def _summary(r: CaseResult) -> str:
    if r.status != "ok":
        return f"{r.status}: {r.reason}"
    cpu = f"{r.cpu_us_per_req:.0f}" if r.cpu_us_per_req is not None else "-"
    rss = f"{r.rss_peak_mib:.0f}" if r.rss_peak_mib is not None else "-"
    return (
        f"{r.rps:>9,.0f} req/s  p50 {r.p50_ms:.3f}  p99 {r.p99_ms:.3f}  max {r.max_ms:.1f} ms"
        f"  err {r.errors}  cpu {cpu} µs/req  rss {rss} MiB  routing {r.routing}"
    )


def rerender(args: argparse.Namespace) -> int:
    """Rewrite the Markdown (targets, before/after) from an earlier run's JSON."""
    doc = json.loads(args.rerender.read_text())
    fields = set(CaseResult.__dataclass_fields__)
    rows = [CaseResult(**{k: v for k, v in c.items() if k in fields}) for c in doc["cases"]]
    sections = []
    if args.baseline and args.baseline.is_file():
        sections.append(
            ("Before / after (edge)", before_after(json.loads(args.baseline.read_text()), rows))
        )
    if floor_lines := floor_section(rows):
        sections.append((FLOOR_HEADING, floor_lines))
    # One re-render note, however often a file is re-rendered; the run's own time is kept.
    rerendered = "Report re-rendered from "
    notes = [n for n in doc.get("notes", []) if not n.startswith(rerendered)]
    notes.append(
        f"{rerendered}{args.rerender.name} at {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}."
    )
    write_outputs(
        sections=sections,
        md_path=args.out,
        json_path=args.json,
        machine=doc["machine"],
        settings=doc["settings"],
        rows=rows,
        goals=evaluate([*harness_goals(), *edge_goals(), *e2e_goals()], rows),
        notes=notes,
        title="Benchmarks",
        measured_at=datetime.fromisoformat(doc["generated_at"]),
    )
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
    settings = {
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
            goals = evaluate([*harness_goals(), *edge_goals(), *e2e_goals()], rows)
            machine["loadavg_at_end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            notes = [
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
                f"Total wall time {time.monotonic() - started:.0f}s.",
            ]
            sections = []
            if not args.smoke and args.baseline and args.baseline.is_file():
                baseline = json.loads(args.baseline.read_text())
                sections.append(("Before / after (edge)", before_after(baseline, rows)))
            if floor_lines := floor_section(rows):
                sections.append((FLOOR_HEADING, floor_lines))
            write_outputs(
                sections=sections,
                md_path=args.out,
                json_path=args.json,
                machine=machine,
                settings=settings,
                rows=rows,
                goals=goals,
                notes=notes,
                title="Benchmarks" + (" (smoke)" if args.smoke else ""),
            )
            print(f"bench: wrote {args.out} and {args.json}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
