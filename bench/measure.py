"""Measure one case: ``run_case`` puts a load on a target and returns its row.

1. probes each request of the mix once (``bench.probes.probe_routing``),
2. runs an unmeasured wrk warm-up,
3. snapshots CPU ticks and resets peak RSS of the target's processes, runs wrk, reads them again,
4. returns a ``CaseResult`` (never raises for a failing target: the row says what went wrong).

``core_shares`` splits the machine's cores during the run by consumer.
"""

from __future__ import annotations

import os
import re
import resource
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import proc
from bench.cases import CaseResult, LoadSpec, Probe, Target, TargetUnavailable
from bench.probes import probe_routing
from bench.wrk import WrkResult, run_wrk


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


def _wrk(target: Target, load: LoadSpec, duration_s: float, script_dir: Path) -> WrkResult:
    """wrk with ``load`` on ``target`` for ``duration_s`` (the warm-up's or the measured run's)."""
    return run_wrk(
        target.url,
        load.mix,
        connections=load.connections,
        threads=load.threads,
        duration_s=duration_s,
        timeout_s=load.timeout_s,
        script_dir=script_dir,
    )


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
            _wrk(target, load, load.warmup_s, script_dir)
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
        res = _wrk(target, load, load.duration_s, script_dir)
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
