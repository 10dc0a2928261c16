"""The command line of ``python -m bench``: its flags, and the defaults of a full run and of a
``--smoke`` run (a few seconds, what CI runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DESCRIPTION = "``python -m bench``: proxy overhead on a static upstream, over loopback, in one run."
ALL_TARGETS = ("direct", "nginx", "naive", "edge", "edge-web", "e2e")
# --out and --json: what each holds, its default path, its default path with --smoke
OUTPUTS = {
    "out": ("Markdown report", "docs/benchmarks.md", "bench/results/smoke.md"),
    "json": ("JSON results", "bench/results/latest.json", "bench/results/smoke.json"),
}


def _ints(raw: str) -> list[int]:
    return [int(x) for x in raw.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=DESCRIPTION)
    ap.add_argument("--smoke", action="store_true", help="a few seconds of tiny load (CI)")
    for dest, (what, full, smoke) in OUTPUTS.items():
        ap.add_argument(
            f"--{dest}", type=Path, help=f"{what} (default {full}; with --smoke {smoke})"
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
    for dest, (_, full, smoke_path) in OUTPUTS.items():
        setattr(args, dest, getattr(args, dest) or REPO_ROOT / (smoke_path if smoke else full))
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
