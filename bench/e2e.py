"""End to end: edge -> Profile System -> DynamoDB Local, against direct calls to a store.

The stack is ``deploy/local/stack.py`` (DynamoDB Local per region, two Profile System instances
per region, the registry with the demo accounts, the edge), with the bench's edge overrides
(no rate limit, no access log). Operations, for the ``demo-us`` account (us-east-1):

* ``get``    GET a masked profile (one seeded profile, read over and over)
* ``patch``  PATCH ``{"firstName": ...}`` on that profile
* ``create`` POST a new profile with a unique e-mail and document per request

wrk cannot make unique bodies, so the load comes from an async Python generator
(``aiohttp``, ``concurrency`` workers in a loop for ``duration`` seconds) running in the bench
process. "direct" sends the same requests to one us-east-1 store instance, with the
``X-Residency-Assertion`` the edge would have signed (signed by the generator), so
direct vs edge is the edge's added cost on real traffic. Each row also carries the DynamoDB
calls and capacity units per request, read from the stores' own ``/metrics``
(``profile_store_dynamodb_calls_total`` / ``..._capacity_units_total`` by operation and call).

"floor" sends the same requests to ``bench.store_floor`` on the same us-east-1 DynamoDB Local
table: the store's DynamoDB calls with items of the same sizes and nothing else (no crypto,
masking, validation or assertion check), on a profile of its own. The direct store's CPU per
request over the floor's is the cost of our code (``store-floor-*`` targets).

"before" (with ``--e2e-before TREE``, a checkout of an earlier commit, e.g. a git worktree)
runs one more us-east-1 store from that tree's ``profile_store`` on the same table, sent the
same requests as "direct": the store before and after a change, measured in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import proc
from bench.cases import CaseResult, TargetUnavailable
from bench.probes import PrometheusDeltaProbe

REPO_ROOT = Path(__file__).resolve().parent.parent
GROUP = "End to end: edge → Profile System → DynamoDB Local"
OPERATIONS = ("get", "patch", "create")
TARGETS = ("direct", "edge", "floor")
BEFORE = "before"  # the extra target of --e2e-before
API = "/api/storage/profile-system"
ACCOUNT = "demo-us"
REGION = "us-east-1"
# Store operation names (profile_store.handlers.ROUTES) of each bench operation.
STORE_OPERATION = {
    "get": "GetProfile",
    "patch": "UpdateClientProfile",
    "create": "CreateClientProfile",
}
DDB_METRICS = ("profile_store_dynamodb_calls_total", "profile_store_dynamodb_capacity_units_total")


def _load_stack_module() -> Any:
    path = REPO_ROOT / "deploy" / "local" / "stack.py"
    spec = importlib.util.spec_from_file_location("bench_local_stack", path)
    if spec is None or spec.loader is None:
        raise TargetUnavailable(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_local_stack", module)
    spec.loader.exec_module(module)
    return module


@dataclass
class E2EStack:
    edge_url: str
    admin_url: str
    store_urls: dict[str, list[str]]  # region -> instance URLs
    edge_pid: Callable[[], list[int]]
    store_pids: dict[str, list[int]]  # url -> [pid]
    secret: bytes
    app_key: str
    app_token: str
    floor_url: str = ""
    floor_pids: list[int] = field(default_factory=list)
    before_url: str = ""
    before_pids: list[int] = field(default_factory=list)
    profile_id: str = ""
    floor_profile_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def e2e_stack(
    work_dir: Path, edge_settings: dict[str, object], before: Path | None = None
) -> Iterator[E2EStack]:
    """Start the local stack with the bench's edge overrides (and, with ``before``, a store
    from that source tree); always stop it."""
    try:
        local = _load_stack_module()
    except Exception as exc:
        raise TargetUnavailable(f"local stack not loadable: {type(exc).__name__}: {exc}") from exc

    class BenchStack(local.Stack):  # type: ignore[misc,name-defined]
        def write_edge_config(self, store_ports: dict[str, list[int]]) -> None:
            super().write_edge_config(store_ports)
            conf = self.workdir / "edge.toml"
            lines = conf.read_text().splitlines()
            extra = [f"{k} = {_toml(v)}" for k, v in edge_settings.items()]
            at = next(i for i, line in enumerate(lines) if line.startswith("["))
            conf.write_text("\n".join(lines[:at] + extra + lines[at:]) + "\n")
            self.bench_store_ports = store_ports

    stack_dir = work_dir / "e2e-stack"
    stack_dir.mkdir(parents=True, exist_ok=True)
    edge_port, admin_port = proc.free_port(), proc.free_port()
    stack = BenchStack(workdir=stack_dir, edge_port=edge_port, admin_port=admin_port)
    floor_port = proc.free_port()
    floor = proc.ManagedProcess(
        "store-floor",
        [
            sys.executable,
            "-m",
            "bench.store_floor",
            "--port",
            str(floor_port),
            "--table",
            local.TABLE,
            "--account",
            ACCOUNT,
            "--region",
            REGION,
        ],
        stack_dir / "store-floor.log",
        cwd=REPO_ROOT,
    )
    before_port = proc.free_port()
    earlier = proc.ManagedProcess(
        "store-before",
        [sys.executable, "-m", "profile_store", "serve"],
        stack_dir / "store-before.log",
        cwd=before,
    )
    try:
        try:
            stack.up()
        except Exception as exc:
            raise TargetUnavailable(f"local stack did not start: {exc}") from exc
        floor.argv = [*floor.argv, "--endpoint", stack.ddbs[REGION].endpoint]
        floor.env = stack.store_env(REGION)
        floor.start().wait_port(floor_port, timeout=30)
        if before is not None:
            # The earlier tree's package comes first on the path; same table, key and secret.
            earlier.env = {
                **stack.store_env(REGION, "store-before", before_port),
                "PYTHONPATH": str(before),
            }
            earlier.start().wait_port(before_port, timeout=60)
        procs = dict(stack.procs)
        store_urls: dict[str, list[str]] = {}
        store_pids: dict[str, list[int]] = {}
        for region, ports in stack.bench_store_ports.items():
            for i, port in enumerate(ports, start=1):
                url = f"http://127.0.0.1:{port}"
                store_urls.setdefault(region, []).append(url)
                store_pids[url] = [procs[f"store-{region}-{i}"].pid]
        key, token = local.DEMO_KEYS[ACCOUNT]
        yield E2EStack(
            edge_url=f"http://127.0.0.1:{edge_port}",
            admin_url=f"http://127.0.0.1:{admin_port}",
            store_urls=store_urls,
            edge_pid=lambda: [procs["edge"].pid],
            store_pids=store_pids,
            secret=local.DEMO_SECRETS[REGION].encode(),
            app_key=key,
            app_token=token,
            floor_url=f"http://127.0.0.1:{floor_port}",
            floor_pids=[floor.pid],
            before_url=f"http://127.0.0.1:{before_port}" if before is not None else "",
            before_pids=[earlier.pid] if before is not None else [],
        )
    finally:
        earlier.stop()
        floor.stop()
        stack.down()


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(str(v))


# ---- the load generator ------------------------------------------------------------------------

_counter = itertools.count()


def _profile_body() -> dict[str, str]:
    n = next(_counter)
    u = uuid.uuid4().hex[:12]
    return {
        "firstName": "Bench",
        "lastName": f"User{n}",
        "email": f"bench.{u}.{n}@example.com",
        "document": f"{int(u, 16) % 10**11:011d}",
        "documentType": "CPF",
    }


@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    errors_detail: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0


async def _generate(
    base: str,
    op: str,
    headers_for: Callable[[str, str], dict[str, str]],
    profile_id: str,
    concurrency: int,
    duration: float,
) -> Load:
    import aiohttp

    load = Load()
    target_get = f"{API}/profiles/{profile_id}"
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(base, connector=connector) as session:
        stop = time.monotonic() + duration

        async def worker() -> None:
            while time.monotonic() < stop:
                if op == "get":
                    method, path, body = "GET", target_get, None
                elif op == "patch":
                    method, path = "PATCH", target_get
                    body = {"firstName": f"Bench{next(_counter)}"}
                else:
                    method, path, body = "POST", f"{API}/profiles", _profile_body()
                t0 = time.perf_counter()
                try:
                    async with session.request(
                        method, path, json=body, headers=headers_for(method, path)
                    ) as resp:
                        await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status = 0
                    key = type(exc).__name__
                    load.errors_detail[key] = load.errors_detail.get(key, 0) + 1
                load.latencies.append(time.perf_counter() - t0)
                if status >= 400 or status == 0:
                    load.errors += 1
                    if status:
                        k = f"http_{status}"
                        load.errors_detail[k] = load.errors_detail.get(k, 0) + 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        load.elapsed = time.monotonic() - t0
    return load


def _pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[i] * 1000


class E2E:
    """Runs every (target, operation, concurrency) case on one started stack."""

    def __init__(self, stack: E2EStack, work_dir: Path) -> None:
        self.stack = stack
        self.work_dir = work_dir
        self.direct_url = stack.store_urls[REGION][0]

    def _edge_headers(self, _method: str, path: str) -> dict[str, str]:
        return {
            "Host": f"{ACCOUNT}.localhost",
            "X-VTEX-API-AppKey": self.stack.app_key,
            "X-VTEX-API-AppToken": self.stack.app_token,
            "Accept": "application/json",
        }

    def _direct_headers(self, method: str, path: str) -> dict[str, str]:
        from residency_contract.assertion import sign
        from residency_contract.protocol import ASSERTION_HEADER

        return {
            ASSERTION_HEADER: sign(
                self.stack.secret,
                account=ACCOUNT,
                region=REGION,
                principal=self.stack.app_key,
                roles=frozenset({"read", "write"}),
                method=method,
                target=path,
            ),
            "Accept": "application/json",
        }

    def seed(self) -> None:
        """One profile to read and patch, created through the edge; one for the floor."""

        async def go(base: str, headers: Callable[[str, str], dict[str, str]]) -> str:
            import aiohttp

            async with (
                aiohttp.ClientSession(base) as s,
                s.post(
                    f"{API}/profiles",
                    json=_profile_body(),
                    headers=headers("POST", f"{API}/profiles"),
                ) as resp,
            ):
                text = await resp.text()
                if resp.status != 201:
                    raise TargetUnavailable(f"seeding a profile failed: {resp.status} {text[:300]}")
                return str(json.loads(text)["id"])

        self.stack.profile_id = asyncio.run(go(self.stack.edge_url, self._edge_headers))
        # The floor writes filler, not sealed documents: it must never touch the store's own.
        self.stack.floor_profile_id = asyncio.run(go(self.stack.floor_url, self._direct_headers))

    def run(
        self, target: str, op: str, concurrency: int, duration: float, warmup: float
    ) -> CaseResult:
        case = f"e2e-{target}/{op}/c{concurrency}"
        row = CaseResult(
            case=case,
            group=GROUP,
            target=f"e2e-{target}",
            workers=1,
            connections=concurrency,
            status="ok",
        )
        profile_id = self.stack.profile_id
        if target == "edge":
            base, headers, pids = self.stack.edge_url, self._edge_headers, self.stack.edge_pid()
        elif target == "floor":
            base, headers, pids = self.stack.floor_url, self._direct_headers, self.stack.floor_pids
            profile_id = self.stack.floor_profile_id
        elif target == BEFORE:
            base, headers = self.stack.before_url, self._direct_headers
            pids = self.stack.before_pids
        else:
            base, headers = self.direct_url, self._direct_headers
            pids = self.stack.store_pids[self.direct_url]
        store_pids = [p for ps in self.stack.store_pids.values() for p in ps]
        probe = PrometheusDeltaProbe(
            "dynamodb",
            urls=[f"{u}/metrics" for us in self.stack.store_urls.values() for u in us],
            metrics=DDB_METRICS,
            group_by=("operation", "call"),
        )
        try:
            if warmup > 0:
                asyncio.run(_generate(base, op, headers, profile_id, concurrency, warmup))
            members = proc.session_members(pids)
            stores = proc.session_members(store_pids)
            proc.reset_peak_rss(members)
            probe.before()
            cpu0, scpu0 = proc.cpu_ticks(members), proc.cpu_ticks(stores)
            load = asyncio.run(_generate(base, op, headers, profile_id, concurrency, duration))
            cpu1, scpu1 = proc.cpu_ticks(members), proc.cpu_ticks(stores)
            rss = proc.peak_rss_kib(members)
            n = len(load.latencies)
            lat = sorted(load.latencies)
            row.requests = n
            row.duration_s = load.elapsed
            row.rps = n / load.elapsed if load.elapsed else None
            row.p50_ms, row.p90_ms, row.p99_ms = _pct(lat, 50), _pct(lat, 90), _pct(lat, 99)
            row.p999_ms, row.max_ms = _pct(lat, 99.9), (lat[-1] * 1000 if lat else None)
            row.errors, row.errors_detail = load.errors, load.errors_detail
            row.cpu_s = proc.cpu_seconds_between(cpu0, cpu1)
            row.cpu_us_per_req = row.cpu_s * 1e6 / n if n else None
            row.rss_peak_mib = sum(rss.values()) / 1024 if rss else None
            row.processes = len(members)
            row.routing = "n/a (one account)"
            stores_cpu = proc.cpu_seconds_between(scpu0, scpu1)
            row.extra["cpu_us_per_req_all_stores"] = stores_cpu * 1e6 / n if n else None
            if target == "floor":
                row.extra["floor_of"] = STORE_OPERATION[op]  # the stores' metrics say nothing
            else:
                row.extra["dynamodb"] = {
                    metric: {k: v for k, v in per_label.items() if v.get("total")}
                    for metric, per_label in probe.after(n).items()
                }
                row.extra["store_operation"] = STORE_OPERATION[op]
        except Exception as exc:
            row.status = "error"
            row.reason = f"{type(exc).__name__}: {exc}"
        return row


def ddb_cost(row: CaseResult, metric: str, call_prefix: str = "") -> float | None:
    """Per-request DynamoDB figure of the row's store operation (summed over its calls)."""
    data = row.extra.get("dynamodb", {}).get(metric)
    op = row.extra.get("store_operation")
    if not isinstance(data, dict) or not op:
        return None
    total = 0.0
    for label, v in data.items():
        operation, _, call = label.partition("/")
        if operation == op and call.startswith(call_prefix) and v.get("per_request") is not None:
            total += v["per_request"]
    return total
