"""The two-region stack for reliability tests: ``deploy/local/stack.py`` plus fault switches.

Reuses the local stack runner (real processes: DynamoDB Local per region, two Profile System
instances per region, the edge, the registry with the demo accounts), with three changes that
fault tests need:

* the registry lives on its OWN DynamoDB Local, so it can be made unreachable without touching
  a region's data;
* the edge probes health often and gives up on the registry quickly (settings below), so a
  fault is seen within a second or two and every wait in the tests stays short;
* switches: kill / restart one store instance (SIGKILL, then the same port and settings),
  pause / resume a DynamoDB Local (SIGSTOP / SIGCONT: a blackhole, harder than a refused
  connection, and the data survives), read a store's own ``/metrics``.

Every process listens on 127.0.0.1 on a free port and is stopped by ``down``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from residency_dev import dynamodb_local

REPO = Path(__file__).resolve().parents[2]


def _load_local_stack() -> Any:
    spec = importlib.util.spec_from_file_location(
        "local_stack", REPO / "deploy" / "local" / "stack.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("local_stack", module)
    spec.loader.exec_module(module)
    return module


local_stack = _load_local_stack()

REGIONS: tuple[str, ...] = local_stack.REGIONS
DEMO_ACCOUNTS: dict[str, str] = local_stack.DEMO_ACCOUNTS  # account -> home region
DEMO_KEYS: dict[str, tuple[str, str]] = local_stack.DEMO_KEYS
ACCOUNT_OF = {region: account for account, region in DEMO_ACCOUNTS.items()}
API = "/api/storage/profile-system"

# Edge settings for fault tests (top-level keys of the edge TOML). Timeouts are short so that
# a fault is detected, and a 504 produced, well inside the tests' deadlines.
EDGE_OVERRIDES: dict[str, Any] = {
    "health_interval_s": 0.25,
    "health_timeout_s": 0.5,
    "eject_cooldown_s": 1.0,
    "connect_timeout_s": 0.5,
    # 50 concurrent PATCHes of ONE profile serialise on its version check in the store; on
    # DynamoDB Local on 2 cores the last ones take ~8-10 s (see test_concurrency.py).
    "read_timeout_s": 20.0,
    "total_timeout_s": 25.0,
    "registry_connect_timeout_s": 0.3,
    "registry_read_timeout_s": 0.5,
    "cache_ttl_s": 1.0,
    "negative_ttl_s": 0.5,
    "stale_if_error_s": 120.0,
    # the registry's circuit breaker: a probe a second after it opened, so a test sees the
    # recovery quickly (the failures that open it are the default, 3 in a row)
    "registry_breaker_open_s": 1.0,
    "registry_wait_s": 0.5,  # a refusal that waited is unmistakable beside a loaded machine's noise
    "rate_limit_rps": 100000.0,
    "rate_limit_burst": 100000,
    "max_body_bytes": 64 * 1024,
    "buffer_body_bytes": 16 * 1024,
}
# Store settings: a paused DynamoDB Local must turn into a 503 before the edge's read timeout.
STORE_OVERRIDES = {
    "PROFILE_STORE_DDB_CONNECT_TIMEOUT_S": "0.5",
    "PROFILE_STORE_DDB_READ_TIMEOUT_S": "2",
    "PROFILE_STORE_DDB_MAX_ATTEMPTS": "2",
    "PROFILE_STORE_MAX_BODY_BYTES": str(64 * 1024),
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def http_status(url: str, timeout: float = 1.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback)
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def wait_for(what: str, pred: Any, timeout: float, interval: float = 0.05) -> None:
    """Poll ``pred`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout}s")
        time.sleep(interval)


@dataclass
class StoreProc:
    region: str
    index: int
    port: int
    name: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class ReliabilityStack(local_stack.Stack):  # type: ignore[misc,name-defined]
    stores: dict[str, list[StoreProc]] = field(default_factory=dict)
    registry_ddb: dynamodb_local.DynamoDBLocal | None = None

    # -- building: the local stack's own steps, with the overrides above ---------------------

    def up(self) -> None:
        self.registry_ddb = dynamodb_local.start(
            timeout=90, log_path=self.workdir / "dynamodb-registry.log"
        )
        super().up()
        by_name = {name: proc for name, proc in self.procs}
        for region in REGIONS:
            for i, port in enumerate(self._ports[region], start=1):
                name = f"store-{region}-{i}"
                sp = StoreProc(region, i, port, name, by_name[name])
                self.stores.setdefault(region, []).append(sp)

    def pick_store_ports(self) -> dict[str, list[int]]:
        self._ports: dict[str, list[int]] = super().pick_store_ports()
        return self._ports

    def store_env(self, region: str, instance: str = "provision", port: int = 0) -> dict[str, str]:
        env: dict[str, str] = super().store_env(region, instance, port)
        env.update(STORE_OVERRIDES)
        return env

    def write_edge_config(self, store_ports: dict[str, list[int]]) -> None:
        super().write_edge_config(store_ports)
        path = self.workdir / "edge.toml"
        assert self.registry_ddb is not None
        overrides = {**EDGE_OVERRIDES, "registry_endpoint": self.registry_ddb.endpoint}
        lines = path.read_text().splitlines()
        first_table = next(i for i, line in enumerate(lines) if line.startswith("["))
        top = [
            line for line in lines[:first_table] if line.split("=", 1)[0].strip() not in overrides
        ]
        top += [f"{k} = {_toml_value(v)}" for k, v in overrides.items()]
        path.write_text("\n".join([*top, "", *lines[first_table:]]) + "\n")

    def down(self) -> None:
        for ddb in self.all_ddbs():
            self._resume(ddb)  # a stopped JVM ignores SIGTERM until continued
        try:  # restarted stores were spawned through ``spawn``, so ``procs`` has them too
            super().down()
        finally:
            if self.registry_ddb is not None:
                self.registry_ddb.stop()

    # -- reading -------------------------------------------------------------------------------

    @property
    def edge_url(self) -> str:
        return f"http://127.0.0.1:{self.edge_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def all_ddbs(self) -> list[dynamodb_local.DynamoDBLocal]:
        out = list(self.ddbs.values())
        if self.registry_ddb is not None:
            out.append(self.registry_ddb)
        return out

    def log_files(self) -> list[Path]:
        return sorted(p for p in self.workdir.glob("*.log") if not p.name.startswith("dynamodb"))

    def store_metrics(self, sp: StoreProc) -> dict[tuple[str, str], float]:
        """(operation, status_class) -> count, from the store's own counter; probes excluded."""
        with urllib.request.urlopen(sp.url + "/metrics", timeout=2) as resp:  # noqa: S310
            text = resp.read().decode()
        out: dict[tuple[str, str], float] = {}
        for line in text.splitlines():
            if not line.startswith("profile_store_requests_total{"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            assert labels["region"] == sp.region, line
            if labels["operation"] in {"readyz", "healthz", "metrics"}:
                continue
            key = (labels["operation"], labels["status_class"])
            out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
        return out

    def region_requests(self, region: str) -> float:
        """Data requests the live stores of ``region`` counted (their own counters)."""
        return sum(sum(self.store_metrics(sp).values()) for sp in self.stores[region] if sp.alive())

    # -- faults --------------------------------------------------------------------------------

    def kill_store(self, region: str, index: int) -> None:
        sp = self.stores[region][index]
        assert sp.proc is not None and sp.alive(), f"{sp.name} is not running"
        os.killpg(sp.proc.pid, signal.SIGKILL)
        sp.proc.wait(timeout=10)

    def start_store(self, region: str, index: int) -> None:
        sp = self.stores[region][index]
        if sp.alive():
            return
        sp.proc = self.spawn(
            sp.name,
            [self.python, "-m", "profile_store", "serve"],
            self.store_env(region, sp.name, sp.port),
        )
        local_stack.wait_http_ok(sp.url + "/readyz", 60, sp.proc)

    @staticmethod
    def _signal(ddb: dynamodb_local.DynamoDBLocal, sig: int) -> None:
        if ddb.process.poll() is None:
            os.killpg(ddb.process.pid, sig)

    def pause(self, ddb: dynamodb_local.DynamoDBLocal) -> None:
        self._signal(ddb, signal.SIGSTOP)

    def _resume(self, ddb: dynamodb_local.DynamoDBLocal) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._signal(ddb, signal.SIGCONT)

    def resume(self, ddb: dynamodb_local.DynamoDBLocal) -> None:
        self._resume(ddb)

    def heal(self, timeout: float = 60.0) -> None:
        """Undo any fault a test left: DynamoDB Locals running, all four stores up and ready."""
        for ddb in self.all_ddbs():
            self._resume(ddb)
        for region in REGIONS:
            for i in range(len(self.stores[region])):
                self.start_store(region, i)
        for region in REGIONS:
            for sp in self.stores[region]:
                wait_for(
                    f"{sp.name} ready",
                    lambda sp=sp: http_status(sp.url + "/readyz") == 200,
                    timeout,
                )
        wait_for(
            "edge sees every instance healthy",
            lambda: self.edge_healthy_instances() == {r: 2.0 for r in REGIONS},
            timeout,
        )

    def edge_healthy_instances(self) -> dict[str, float]:
        try:
            with urllib.request.urlopen(self.admin_url + "/metrics", timeout=2) as resp:  # noqa: S310
                text = resp.read().decode()
        except OSError:
            return {}
        found = re.findall(r'edge_region_healthy_instances\{region="([^"]+)"\} ([0-9.]+)', text)
        return {region: float(v) for region, v in found}


def auth_headers(account: str, *, host: bool = True) -> dict[str, str]:
    key, token = DEMO_KEYS[account]
    headers = {
        "X-VTEX-API-AppKey": key,
        "X-VTEX-API-AppToken": token,
        "Accept": "application/json",
    }
    if host:
        headers["Host"] = f"{account}.localhost"
    return headers
