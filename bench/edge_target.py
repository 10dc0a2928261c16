"""Our edge as a target: ``edge-router serve --workers N`` with a generated ``EDGE_CONFIG``.

``edge_environment`` starts DynamoDB Local and creates the registry, the bench accounts and
their keys through the edge's registry CLI, once per run; ``EdgeEnvironment.serve`` then starts
the edge for each case. Raises ``TargetUnavailable`` with a clear reason if ``edge_router``
cannot be imported or started.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.accounts import DEFAULT_ACCOUNTS, Account
from bench.cases import Target, TargetUnavailable
from bench.proc import ManagedProcess, free_port, run_bounded
from bench.targets import REPO_ROOT, Upstreams, served

EDGE_SECRET = "bench-assertion-secret-0123456789"


def edge_importable() -> str | None:
    """None if ``python -m edge_router`` can run, else why not."""
    for module, absent in (
        ("edge_router", "edge_router is not installed"),
        ("edge_router.__main__", "edge_router has no __main__ (the edge-router CLI) yet"),
    ):
        try:
            spec = importlib.util.find_spec(module)
        except Exception as exc:
            return f"{module} cannot be imported: {type(exc).__name__}: {exc}"
        if spec is None:
            return absent
    return None


# Bench overrides of the edge's defaults: no per-account rate limit (the load is one account
# pair at tens of thousands of req/s), no access log, quiet logging, and limits that do not cut
# into the 1,000-connection case (every wrk connection admitted; up to 256 sockets per upstream
# instance, like nginx's keepalive pool). Reported in the settings.
EDGE_BENCH_SETTINGS: dict[str, object] = {
    "rate_limit_rps": 1_000_000.0,
    "rate_limit_burst": 1_000_000,
    "access_log": False,
    "log_level": "WARNING",
    "max_concurrent_requests": 2048,
    "upstream_pool_limit": 256,
}


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def edge_toml(
    *,
    port: int,
    admin_port: int,
    ups: Upstreams,
    registry_endpoint: str,
    registry_table: str = "bench-edge-registry",
    settings: dict[str, object] | None = None,
) -> str:
    top: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "admin_host": "127.0.0.1",
        "admin_port": admin_port,
        "host_suffixes": ["localhost"],
        "registry_table": registry_table,
        "registry_endpoint": registry_endpoint,
        **(EDGE_BENCH_SETTINGS if settings is None else settings),
    }
    lines = [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    for region in ups.ports:
        lines += [
            "",
            f'[regions."{region}"]',
            f"instances = {_toml_value([ups.url(region)])}",
            f"assertion_secret = {_toml_value(EDGE_SECRET)}",
            f"table = {_toml_value('profiles-' + region)}",
        ]
    return "\n".join(lines) + "\n"


@dataclass
class EdgeEnvironment:
    """DynamoDB Local + config + registry with the bench accounts; ``serve(workers)`` per case."""

    ups: Upstreams
    work_dir: Path
    accounts: tuple[Account, ...]
    env: dict[str, str]
    port: int
    admin_port: int

    def cli(self, *args: str, timeout: float = 60) -> None:
        done = run_bounded(
            [sys.executable, "-m", "residency_ops", *args], timeout=timeout, env=self.env
        )
        if done.returncode != 0:
            raise TargetUnavailable(
                f"residency-ops {' '.join(args[:3])} failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-600:]}"
            )

    @contextlib.contextmanager
    def serve(self, workers: int, listener: str = "raw") -> Iterator[Target]:
        """The edge on its production listener (``edge``), or with ``listener="web"`` on
        aiohttp.web's own server running the same pipeline (``edge-web``)."""
        name = "edge" if listener == "raw" else f"edge-{listener}"
        p = ManagedProcess(
            name,
            [sys.executable, "-m", "edge_router", "serve", "--workers", str(workers)],
            self.work_dir / f"{name}-w{workers}.log",
            env={**self.env, "EDGE_LISTENER": listener},
            cwd=REPO_ROOT,
        )
        with served(
            p,
            self.port,
            name=name,
            workers=workers,
            routes=True,
            description="edge_router (this project)"
            + ("" if listener == "raw" else f", listener={listener}"),
            start_timeout=30,
            unavailable=lambda exc: f"edge did not start: {exc}",
        ) as target:
            yield target


@contextlib.contextmanager
def edge_environment(
    ups: Upstreams, work_dir: Path, accounts: tuple[Account, ...] = DEFAULT_ACCOUNTS
) -> Iterator[EdgeEnvironment]:
    why = edge_importable()
    if why:
        raise TargetUnavailable(f"edge not available: {why}")
    try:
        from residency_dev import dynamodb_local
    except Exception as exc:
        raise TargetUnavailable(f"edge not available: no DynamoDB Local launcher ({exc})") from exc
    edge_dir = work_dir / "edge"
    edge_dir.mkdir(parents=True, exist_ok=True)
    try:
        ddb = dynamodb_local.start(timeout=90, log_path=edge_dir / "dynamodb-local.log")
    except Exception as exc:
        raise TargetUnavailable(
            f"edge not available: DynamoDB Local did not start ({exc})"
        ) from exc
    try:
        port, admin_port = free_port(), free_port()
        conf = edge_dir / "edge.toml"
        conf.write_text(
            edge_toml(port=port, admin_port=admin_port, ups=ups, registry_endpoint=ddb.endpoint)
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "AWS_"))}
        env.update(
            EDGE_CONFIG=str(conf),
            AWS_ACCESS_KEY_ID="local",
            AWS_SECRET_ACCESS_KEY="local",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_EC2_METADATA_DISABLED="true",
        )
        e = EdgeEnvironment(
            ups=ups, work_dir=edge_dir, accounts=accounts, env=env, port=port, admin_port=admin_port
        )
        e.cli("registry", "create-table")
        for a in accounts:
            e.cli("registry", "create-account", a.name, "--region", a.region)
            e.cli(
                "registry",
                "create-key",
                a.name,
                "--roles",
                "read",
                "--app-key",
                a.app_key,
                "--app-token",
                a.app_token,
            )
        yield e
    finally:
        ddb.stop()
