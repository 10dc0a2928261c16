"""One measuring run of ``python -m bench``: ``Bench`` starts each target, measures it at every
load and stops it, in whole rounds; the rows it collects make the report.

The static upstreams stay up for the whole run; the proxies (nginx, naive, the edge on both its
listeners) are measured at each worker count, and the end-to-end cases (``bench.e2e``) on a
stack of their own. A target that cannot start gives ``skipped`` or ``error`` rows.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from bench.accounts import DEFAULT_ACCOUNTS, request_mix
from bench.cases import CaseResult, LoadSpec, Probe, Target, TargetUnavailable, merge_rounds
from bench.cases import skipped as skipped_row
from bench.e2e import BEFORE, E2E, OPERATIONS, TARGETS, e2e_stack
from bench.edge_target import EDGE_BENCH_SETTINGS, EdgeEnvironment, edge_environment
from bench.measure import run_case
from bench.nginx_target import nginx
from bench.probes import PrometheusDeltaProbe
from bench.targets import Upstreams, direct, naive, static_upstreams

GROUP = "Proxy overhead on a static upstream"


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
