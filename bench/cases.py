"""What one measured case is: the target under test, the load put on it, the row it gives.

A *target* is something already listening (started by a context manager of ``bench.targets``,
``bench.nginx_target`` or ``bench.edge_target``, or by the caller): a base URL, the root pids
whose process trees are charged for CPU and memory, and whether it routes by account.
``bench.measure.run_case`` measures a target under a ``LoadSpec`` and returns a ``CaseResult``;
``Probe`` hooks (``bench.probes``) add figures read around the measured run. ``merge_rounds``
makes one row per case of several rounds (``python -m bench --repeat N``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from bench.wrk import RequestSpec


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
    """The row of a case that was not measured (``skipped``, or ``error``), saying why."""
    # the fields in CaseResult's own order
    return CaseResult(case, group, target, workers, connections, status, reason)
