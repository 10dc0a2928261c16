"""Start the things under test, each as a context manager that yields a ``Target`` and always stops.

- ``static_upstreams``: one ``bench.static_upstream`` process per region, each on its own port.
- ``direct``: the load goes straight to one static upstream (the ``us-east-1`` one).
- ``nginx``: generated config, ``map`` from the account (``{account}.localhost`` Host, or the
  ``an`` query parameter) to the regional upstream, keep-alive upstream pools, run in the
  foreground with pid/error log and temp paths in a private directory.
- ``naive``: ``bench.naive_proxy`` (aiohttp, one ClientSession, no routing) to the us upstream.
- ``edge``: our ``edge-router serve --workers N`` with a generated ``EDGE_CONFIG``, accounts and
  keys created through its registry CLI against a DynamoDB Local. Raises ``TargetUnavailable``
  with a clear reason if ``edge_router`` cannot be imported or started.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.core import Target, TargetUnavailable
from bench.proc import HARNESS, ManagedProcess, ProcessFailed, free_port, run_bounded
from bench.wrk import RequestSpec

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILE_PATH = "/api/storage/profile-system/profiles/{id}"


@dataclass(frozen=True)
class Account:
    name: str
    region: str
    profile_id: str
    app_key: str
    app_token: str

    @property
    def host(self) -> str:
        return f"{self.name}.localhost"


DEFAULT_ACCOUNTS = (
    Account(
        "acme-us",
        "us-east-1",
        "7f3c2a10-0000-4000-8000-000000000001",
        "vtexappkey-acme-us-bench",
        "bench-token-acme-us-0123456789",
    ),
    Account(
        "acme-eu",
        "eu-west-1",
        "7f3c2a10-0000-4000-8000-000000000002",
        "vtexappkey-acme-eu-bench",
        "bench-token-acme-eu-0123456789",
    ),
)


def request_mix(
    accounts: tuple[Account, ...] = DEFAULT_ACCOUNTS, with_credentials: bool = True
) -> list[RequestSpec]:
    """``GET /api/storage/profile-system/profiles/<id>`` alternating the accounts (by Host)."""
    mix = []
    for a in accounts:
        headers = {"Host": a.host}
        if with_credentials:
            headers["X-VTEX-API-AppKey"] = a.app_key
            headers["X-VTEX-API-AppToken"] = a.app_token
        mix.append(
            RequestSpec(
                path=PROFILE_PATH.format(id=a.profile_id),
                headers=headers,
                expect_region=a.region,
                label=a.name,
            )
        )
    return mix


@dataclass
class Upstreams:
    ports: dict[str, int]  # region -> port
    processes: dict[str, ManagedProcess] = field(default_factory=dict)

    def url(self, region: str) -> str:
        return f"http://127.0.0.1:{self.ports[region]}"


@contextlib.contextmanager
def static_upstreams(regions: list[str], work_dir: Path) -> Iterator[Upstreams]:
    ups = Upstreams(ports={})
    try:
        for region in regions:
            port = free_port()
            p = ManagedProcess(
                f"static-upstream-{region}",
                [
                    sys.executable,
                    "-m",
                    "bench.static_upstream",
                    "--port",
                    str(port),
                    "--region",
                    region,
                ],
                work_dir / f"upstream-{region}.log",
                cwd=REPO_ROOT,
                role=HARNESS,
            ).start()
            ups.ports[region] = port
            ups.processes[region] = p
            p.wait_port(port)
        yield ups
    finally:
        for p in ups.processes.values():
            p.stop()


@contextlib.contextmanager
def direct(ups: Upstreams, region: str = "us-east-1") -> Iterator[Target]:
    p = ups.processes[region]
    yield Target(
        name="direct",
        url=ups.url(region),
        pids=lambda: [p.pid],
        workers=1,
        routes=False,
        description=f"static upstream ({region}) hit directly, no proxy",
    )


# ---- naive aiohttp proxy ------------------------------------------------------------------------


@contextlib.contextmanager
def naive(
    ups: Upstreams, workers: int, work_dir: Path, region: str = "us-east-1"
) -> Iterator[Target]:
    port = free_port()
    p = ManagedProcess(
        "naive-proxy",
        [
            sys.executable,
            "-m",
            "bench.naive_proxy",
            "--port",
            str(port),
            "--upstream",
            ups.url(region),
            "--workers",
            str(workers),
        ],
        work_dir / f"naive-w{workers}.log",
        cwd=REPO_ROOT,
    )
    try:
        p.start().wait_port(port)
        yield Target(
            name="naive",
            url=f"http://127.0.0.1:{port}",
            pids=lambda: [p.pid],
            workers=workers,
            routes=False,
            description="bench/naive_proxy.py: aiohttp, one ClientSession, "
            f"no routing (everything to {region})",
        )
    finally:
        p.stop()


# ---- nginx ------------------------------------------------------------------------------------


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (c for c in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(c, os.X_OK)), None
    )


def nginx_version() -> str:
    exe = nginx_binary()
    if exe is None:
        return "not installed"
    out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=10, check=False)
    m = re.search(r"nginx/(\S+)", out.stderr + out.stdout)
    return m.group(1) if m else (out.stderr + out.stdout).strip()


def nginx_config(
    *,
    port: int,
    workers: int,
    ups: Upstreams,
    accounts: tuple[Account, ...],
    prefix: Path,
    keepalive: int = 256,
) -> str:
    pools = {r: "region_" + re.sub(r"[^a-z0-9]", "_", r) for r in ups.ports}
    upstream_blocks = "\n".join(
        f"    upstream {pools[r]} {{\n"
        f"        server 127.0.0.1:{ups.ports[r]};\n"
        f"        keepalive {keepalive};\n"
        f"        keepalive_requests 1000000;\n"
        f"    }}"
        for r in ups.ports
    )
    account_lines = "\n".join(
        f"        {a.name} {pools[a.region]};" for a in accounts if a.region in pools
    )
    return f"""# generated by bench/targets.py
worker_processes {workers};
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_rlimit_nofile 65536;

events {{
    worker_connections 16384;
}}

http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server_tokens off;

    # account from the Host ({{account}}.localhost) unless the `an` query parameter names one
    map $host $account_from_host {{
        ~^(?<acct>[a-z0-9-]+)\\.localhost$ $acct;
        default "";
    }}
    map $arg_an $account {{
        "" $account_from_host;
        default $arg_an;
    }}
    map $account $region_pool {{
{account_lines}
        default "";
    }}

{upstream_blocks}

    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            if ($region_pool = "") {{
                return 404;
            }}
            proxy_pass http://$region_pool;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx(
    ups: Upstreams, workers: int, work_dir: Path, accounts: tuple[Account, ...] = DEFAULT_ACCOUNTS
) -> Iterator[Target]:
    exe = nginx_binary()
    if exe is None:
        raise TargetUnavailable("nginx is not installed (apt-get install -y nginx-light)")
    prefix = work_dir / f"nginx-w{workers}"
    prefix.mkdir(parents=True, exist_ok=True)
    prefix.chmod(0o755)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(
        nginx_config(port=port, workers=workers, ups=ups, accounts=accounts, prefix=prefix)
    )
    test = run_bounded(
        [exe, "-t", "-q", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)],
        timeout=20,
    )
    if test.returncode != 0:
        raise TargetUnavailable(f"nginx -t rejected the config: {test.stderr.strip()[-600:]}")
    p = ManagedProcess(
        "nginx",
        [exe, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)],
        prefix / "stdout.log",
    )
    try:
        try:
            p.start().wait_port(port)
        except ProcessFailed as exc:
            err = (
                (prefix / "error.log").read_text(errors="replace")[-600:]
                if (prefix / "error.log").exists()
                else ""
            )
            raise TargetUnavailable(f"nginx did not start: {exc} {err}") from exc
        yield Target(
            name="nginx",
            url=f"http://127.0.0.1:{port}",
            pids=lambda: [p.pid],
            workers=workers,
            routes=True,
            description=f"nginx {nginx_version()}: map account -> regional upstream, "
            "keepalive pools",
        )
    finally:
        p.stop()


# ---- our edge ---------------------------------------------------------------------------------

EDGE_SECRET = "bench-assertion-secret-0123456789"


def edge_importable() -> str | None:
    """None if ``python -m edge_router`` can run, else why not."""
    try:
        spec = importlib.util.find_spec("edge_router")
    except Exception as exc:
        return f"edge_router cannot be imported: {type(exc).__name__}: {exc}"
    if spec is None:
        return "edge_router is not installed"
    try:
        main_spec = importlib.util.find_spec("edge_router.__main__")
    except Exception as exc:
        return f"edge_router.__main__ cannot be imported: {type(exc).__name__}: {exc}"
    if main_spec is None:
        return "edge_router has no __main__ (the edge-router CLI) yet"
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
        try:
            try:
                p.start().wait_port(self.port, timeout=30)
            except ProcessFailed as exc:
                raise TargetUnavailable(f"edge did not start: {exc}") from exc
            yield Target(
                name=name,
                url=f"http://127.0.0.1:{self.port}",
                pids=lambda: [p.pid],
                workers=workers,
                routes=True,
                description="edge_router (this project)"
                + ("" if listener == "raw" else f", listener={listener}"),
            )
        finally:
            p.stop()


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
