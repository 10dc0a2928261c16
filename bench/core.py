"""The reusable part: describe a target and a load, run one case, judge goals.

A *target* is something already listening (started by a context manager in ``bench.targets`` or
by the caller): a base URL, the root pids whose process trees are charged for CPU and memory, and
whether it routes by account. ``run_case`` then:

1. probes each request of the mix once (status, and for routing targets the region that answered),
2. runs an unmeasured wrk warm-up,
3. snapshots CPU ticks and resets peak RSS of the target's processes, runs wrk, reads them again,
4. returns a ``CaseResult`` (never raises for a failing target: the row says what went wrong).

``Probe`` hooks add figures read around the measured run (``PrometheusDeltaProbe`` turns counters
such as ``profile_store_dynamodb_calls_total{operation,call}`` into per-request costs).
``Goal`` objects judge the collected rows as met / not met / n/a.
"""

from __future__ import annotations

import http.client
import os
import re
import resource
import time
import traceback
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench import proc
from bench.wrk import RequestSpec, run_wrk


class TargetUnavailable(RuntimeError):
    """The target cannot be started here (not installed, not importable, failed to start)."""


@dataclass
class Target:
    name: str  # short id used in case names: direct, nginx, naive, edge, ...
    url: str  # base URL wrk connects to
    pids: Callable[[], Sequence[int]]  # root pids whose sessions are measured
    workers: int = 1
    routes: bool = True  # False: no routing logic, the region probe is not applicable
    description: str = ""


@dataclass
class LoadSpec:
    mix: list[RequestSpec]
    connections: int
    duration_s: float = 10.0
    warmup_s: float = 2.0
    threads: int = 1
    timeout_s: float = 10.0


class Probe(Protocol):
    """Reads extra figures around the measured run; results land in ``CaseResult.extra``."""

    name: str

    def before(self) -> None: ...

    def after(self, requests: int) -> dict[str, Any]: ...


@dataclass
class CaseResult:
    case: str
    group: str
    target: str
    workers: int
    connections: int
    status: str  # ok | error | skipped
    reason: str = ""
    rps: float | None = None
    requests: int | None = None
    duration_s: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    max_ms: float | None = None
    errors: int | None = None
    errors_detail: dict[str, int] = field(default_factory=dict)
    cpu_s: float | None = None
    cpu_us_per_req: float | None = None
    cpu_user_us_per_req: float | None = None  # of which in the process (utime)
    cpu_sys_us_per_req: float | None = None  # of which in the kernel on its behalf (stime)
    # The machine's cores during the measured run, by consumer (``core_shares``).
    cores: dict[str, float] = field(default_factory=dict)
    rss_peak_mib: float | None = None  # VmHWM summed over the target's processes
    rss_peak_max_proc_mib: float | None = None  # the largest single process
    processes: int | None = None
    cpus: str = ""  # the CPUs the target's processes may run on (--harness-cpus), "" if any
    routing: str = ""  # ok | n/a | what was wrong
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def merge_rounds(rows: list[CaseResult]) -> list[CaseResult]:
    """One row per case from several rounds of the same cases (``python -m bench --repeat N``).

    Throughput, CPU and percentiles come from the median round by req/s (the lower median for
    an even count), so one disturbed run on a shared machine neither makes nor breaks a
    target. Everything a target must hold in *every* run stays strict: errors are summed over
    all rounds, max latency and peak RSS are the worst round's, and a routing fault in any
    round shows. ``extra["rounds"]`` lists each round's req/s, CPU and p50, in run order."""
    by_case: dict[str, list[CaseResult]] = {}
    for r in rows:
        by_case.setdefault(r.case, []).append(r)
    merged = []
    for runs in by_case.values():
        if len(runs) == 1:
            merged.append(runs[0])
            continue
        ok = sorted((r for r in runs if r.status == "ok" and r.rps is not None), key=_rps)
        if not ok:
            merged.append(runs[0])
            continue
        row = ok[(len(ok) - 1) // 2]
        row.extra = dict(row.extra)
        row.extra["rounds"] = {
            "rps": [r.rps for r in runs],
            "cpu_us_per_req": [r.cpu_us_per_req for r in runs],
            "p50_ms": [r.p50_ms for r in runs],
            "median_round": runs.index(row) + 1,
            "failed": [f"{r.status}: {r.reason}" for r in runs if r.status != "ok"],
        }
        row.errors = sum(r.errors or 0 for r in ok)
        detail: dict[str, int] = {}
        for r in ok:
            for k, v in r.errors_detail.items():
                detail[k] = detail.get(k, 0) + v
        row.errors_detail = detail
        row.max_ms = _worst(r.max_ms for r in ok)
        row.rss_peak_mib = _worst(r.rss_peak_mib for r in ok)
        row.rss_peak_max_proc_mib = _worst(r.rss_peak_max_proc_mib for r in ok)
        bad_routing = [r.routing for r in ok if r.routing != row.routing]
        if bad_routing:
            row.routing = bad_routing[0]
        if len(ok) < len(runs):  # a round that failed outright is an error of the case
            row.errors += len(runs) - len(ok)
            row.errors_detail["failed rounds"] = len(runs) - len(ok)
        merged.append(row)
    return merged


def _rps(r: CaseResult) -> float:
    return r.rps or 0.0


def _worst(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def skipped(
    case: str,
    group: str,
    target: str,
    workers: int,
    connections: int,
    reason: str,
    status: str = "skipped",
) -> CaseResult:
    return CaseResult(
        case=case,
        group=group,
        target=target,
        workers=workers,
        connections=connections,
        status=status,
        reason=reason,
    )


# ---- probes -----------------------------------------------------------------------------------


def http_get(url: str, headers: dict[str, str], timeout: float = 5.0) -> tuple[int, dict[str, str]]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.putrequest(
            "GET", parts.path + (f"?{parts.query}" if parts.query else ""), skip_host=True
        )
        has_host = any(k.lower() == "host" for k in headers)
        if not has_host:
            conn.putheader("Host", parts.netloc)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def probe_routing(target: Target, mix: Iterable[RequestSpec]) -> str:
    """One request per mix entry: all must be 2xx; a routing target must reach the right region."""
    problems = []
    seen = set()
    for r in mix:
        key = (r.path, tuple(sorted(r.headers.items())))
        if key in seen:
            continue
        seen.add(key)
        status, headers = http_get(target.url.rstrip("/") + r.path, r.headers)
        region = headers.get("x-upstream-region")  # only the static upstream sets it
        who = r.label or r.headers.get("Host", r.path)
        if not 200 <= status < 300:
            problems.append(f"{who}: HTTP {status}")
        elif target.routes and r.expect_region and region and region != r.expect_region:
            problems.append(f"{who}: reached {region}, expected {r.expect_region}")
    if problems:
        return "; ".join(problems)
    return "ok" if target.routes else "n/a (no routing)"


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of a Prometheus text exposition: {(name, sorted label pairs): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = tuple(sorted(_LABEL.findall(m.group(3) or "")))
        try:
            out[(m.group(1), labels)] = float(m.group(4))
        except ValueError:
            continue
    return out


def scrape(url: str, timeout: float = 5.0) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # loopback /metrics only
        return parse_prometheus(resp.read().decode())


@dataclass
class PrometheusDeltaProbe:
    """Per-request increase of counters on one or more ``/metrics`` URLs (summed across them).

    ``group_by`` picks the labels to keep, e.g. for the Profile System's DynamoDB cost::

        PrometheusDeltaProbe(
            "dynamodb", urls=[store_us + "/metrics", store_eu + "/metrics"],
            metrics=["profile_store_dynamodb_calls_total",
                     "profile_store_dynamodb_capacity_units_total"],
            group_by=("operation", "call"))
    """

    name: str
    urls: Sequence[str]
    metrics: Sequence[str]
    group_by: Sequence[str] = ()
    _before: dict[Any, float] = field(default_factory=dict, repr=False)

    def _read(self) -> dict[Any, float]:
        totals: dict[Any, float] = {}
        for url in self.urls:
            for (name, labels), value in scrape(url).items():
                if name not in self.metrics:
                    continue
                d = dict(labels)
                key = (name, tuple(d.get(k, "") for k in self.group_by))
                totals[key] = totals.get(key, 0.0) + value
        return totals

    def before(self) -> None:
        self._before = self._read()

    def after(self, requests: int) -> dict[str, Any]:
        after = self._read()
        out: dict[str, Any] = {}
        for (name, group), value in sorted(after.items()):
            delta = value - self._before.get((name, group), 0.0)
            label = "/".join(group) or "all"
            out.setdefault(name, {})[label] = {
                "total": delta,
                "per_request": delta / requests if requests else None,
            }
        return out


# ---- where the cores went ------------------------------------------------------------------------


def core_shares(
    machine_delta: dict[str, int],
    nproc: int,
    *,
    target_ticks: int,
    load_generator_ticks: int,
    upstream_ticks: int,
) -> dict[str, float]:
    """The machine's cores during a run, split by consumer (in cores, summing to ``nproc``).

    ``machine_delta``: /proc/stat's ticks by kind over the run (``proc.machine_ticks``); the
    others: clock ticks of the target's processes, the load generator and the static
    upstreams. Softirq time is not a consumer of its own: on loopback the receiving side of
    TCP runs in the sending process's context and is charged to it (its stime). "other" is
    whatever else kept a core busy; per-process times and /proc/stat are sampled apart, so it
    is clamped at zero."""
    total = sum(machine_delta.values())
    if total <= 0 or nproc <= 0:
        return {}
    idle = machine_delta.get("idle", 0) + machine_delta.get("iowait", 0)
    steal = machine_delta.get("steal", 0)
    charged = target_ticks + load_generator_ticks + upstream_ticks
    parts = {
        "target": target_ticks,
        "load generator": load_generator_ticks,
        "upstreams": upstream_ticks,
        "other": max(total - idle - steal - charged, 0),
        "steal": steal,
        "idle": idle,
    }
    scale = nproc / max(total, charged + idle + steal)
    return {k: round(v * scale, 2) for k, v in parts.items()}


def _children_cpu_ticks() -> int:
    """CPU of the waited-for children so far (wrk, once it has exited), in clock ticks."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round((ru.ru_utime + ru.ru_stime) * proc.CLK_TCK)


# ---- run one case -----------------------------------------------------------------------------


def run_case(
    target: Target,
    load: LoadSpec,
    *,
    group: str,
    case: str | None = None,
    work_dir: Path,
    probes: Sequence[Probe] = (),
    upstream_pids: Callable[[], Sequence[int]] | None = None,
) -> CaseResult:
    """Measure one target under one load; failures come back as an ``error`` row, not raised.

    ``upstream_pids``: the processes behind the target (static upstreams), charged in
    ``cores`` beside the target and wrk."""
    name = case or f"{target.name}/w{target.workers}/c{load.connections}"
    row = CaseResult(
        case=name,
        group=group,
        target=target.name,
        workers=target.workers,
        connections=load.connections,
        status="ok",
    )
    script_dir = work_dir / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    try:
        row.routing = probe_routing(target, load.mix)
        if load.warmup_s > 0:
            run_wrk(
                target.url,
                load.mix,
                connections=load.connections,
                threads=load.threads,
                duration_s=load.warmup_s,
                timeout_s=load.timeout_s,
                script_dir=script_dir,
            )
        pids = proc.session_members(target.pids())
        if not pids:
            raise TargetUnavailable(f"{target.name}: no live process to measure")
        proc.reset_peak_rss(pids)
        for p in probes:
            p.before()
        ups: list[int] = []
        if upstream_pids is not None:
            # not the target's own (the direct case's target is a static upstream)
            ups = [u for u in proc.session_members(upstream_pids()) if u not in pids]
        ups0 = proc.cpu_ticks(ups)
        machine0 = proc.machine_ticks()
        wrk0 = _children_cpu_ticks()
        cpu0 = proc.cpu_times(pids)
        started = time.monotonic()
        res = run_wrk(
            target.url,
            load.mix,
            connections=load.connections,
            threads=load.threads,
            duration_s=load.duration_s,
            timeout_s=load.timeout_s,
            script_dir=script_dir,
        )
        pids_after = proc.session_members(target.pids())
        cpu1 = proc.cpu_times(pids_after)
        wrk1 = _children_cpu_ticks()
        machine1 = proc.machine_ticks()
        ups1 = proc.cpu_ticks(ups)
        rss = proc.peak_rss_kib(pids_after)
        row.duration_s = res.duration_s or (time.monotonic() - started)
        row.requests = res.requests
        row.rps = res.rps
        row.p50_ms, row.p90_ms, row.p99_ms = res.p50_ms, res.p90_ms, res.p99_ms
        row.p999_ms, row.max_ms = res.p999_ms, res.max_ms
        row.errors, row.errors_detail = res.errors, res.errors_detail
        user_s, sys_s = proc.user_system_between(cpu0, cpu1)
        row.cpu_s = user_s + sys_s
        if res.requests:
            row.cpu_us_per_req = row.cpu_s * 1e6 / res.requests
            row.cpu_user_us_per_req = user_s * 1e6 / res.requests
            row.cpu_sys_us_per_req = sys_s * 1e6 / res.requests
        row.cores = core_shares(
            {k: machine1[k] - machine0.get(k, 0) for k in machine1},
            os.cpu_count() or 1,
            target_ticks=round(row.cpu_s * proc.CLK_TCK),
            load_generator_ticks=wrk1 - wrk0,
            upstream_ticks=round(proc.cpu_seconds_between(ups0, ups1) * proc.CLK_TCK),
        )
        row.rss_peak_mib = sum(rss.values()) / 1024 if rss else None
        row.rss_peak_max_proc_mib = max(rss.values()) / 1024 if rss else None
        row.processes = len(pids_after)
        if proc.placed():
            row.cpus = " ".join(sorted({proc.cpus_allowed(pid) for pid in pids_after} - {""}))
        for p in probes:
            try:
                row.extra[p.name] = p.after(res.requests)
            except Exception as exc:
                row.extra[p.name] = {"error": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:
        row.status = "error"
        row.reason = f"{type(exc).__name__}: {exc}"
        (work_dir / "errors.log").open("a").write(f"== {name}\n{traceback.format_exc()}\n")
    return row


# ---- goals ------------------------------------------------------------------------------------

Selector = dict[str, Any]


def select(rows: Iterable[CaseResult], where: Selector) -> list[CaseResult]:
    """Rows with status ok whose fields equal every item of ``where``."""
    return [
        r for r in rows if r.status == "ok" and all(getattr(r, k) == v for k, v in where.items())
    ]


@dataclass
class GoalOutcome:
    name: str
    description: str
    status: str  # met | not met | n/a
    detail: str


@dataclass
class Goal:
    name: str
    description: str
    check: Callable[[list[CaseResult]], tuple[bool | None, str]]

    def evaluate(self, rows: list[CaseResult]) -> GoalOutcome:
        try:
            verdict, detail = self.check(rows)
        except Exception as exc:
            verdict, detail = None, f"could not evaluate: {type(exc).__name__}: {exc}"
        status = "n/a" if verdict is None else ("met" if verdict else "not met")
        return GoalOutcome(self.name, self.description, status, detail)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def metric_at_most(
    name: str, description: str, where: Selector, metric: str, limit: float, unit: str = ""
) -> Goal:
    """Every selected row has ``metric`` <= ``limit``."""

    def check(rows: list[CaseResult]) -> tuple[bool | None, str]:
        sel = [r for r in select(rows, where) if getattr(r, metric) is not None]
        if not sel:
            return None, f"no successful case matches {where}"
        worst = max(sel, key=lambda r: getattr(r, metric))
        v = getattr(worst, metric)
        return v <= limit, f"worst {worst.case}: {_fmt(v)}{unit} (limit {_fmt(limit)}{unit})"

    return Goal(name, description, check)


def _one(rows: list[CaseResult], where: Selector) -> CaseResult | None:
    sel = select(rows, where)
    return sel[0] if sel else None


def difference_at_most(
    name: str,
    description: str,
    case: Selector,
    baseline: Selector,
    metric: str,
    limit: float,
    unit: str = "",
) -> Goal:
    """metric(case row) - metric(baseline row) <= limit (e.g. p50 overhead over direct)."""

    def check(rows: list[CaseResult]) -> tuple[bool | None, str]:
        a, b = _one(rows, case), _one(rows, baseline)
        if a is None or b is None or getattr(a, metric) is None or getattr(b, metric) is None:
            return None, f"needs successful cases {case} and {baseline}"
        d = getattr(a, metric) - getattr(b, metric)
        return d <= limit, (f"{a.case} - {b.case} = {d:.3f}{unit} (limit {limit}{unit})")

    return Goal(name, description, check)


def evaluate(goals: Iterable[Goal], rows: list[CaseResult]) -> list[GoalOutcome]:
    return [g.evaluate(rows) for g in goals]
