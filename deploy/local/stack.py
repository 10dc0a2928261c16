"""The whole local stack in one process tree: DynamoDB Local per region, two Profile System
instances per region, the account registry with two demo accounts, and the edge.

Run through ``deploy/local/run-stack`` (which installs what is missing first). Ctrl-C (SIGINT)
or SIGTERM stops every process this started; nothing is left behind.

The running stack supervises its processes: when a store (or the edge) exits, it says so in
one line naming the process and its region, and everything else keeps running -- so a failover
can be tried locally (``kill -9`` a store, watch its region carry on with the other one). From
another shell, talking to the running stack over a control socket (found by the edge port)::

    run-stack status                       the processes, their ports, pids and state
    run-stack stop store-eu-west-1-1       stop one store (SIGTERM); the others keep running
    run-stack restart store-eu-west-1-1    start it again (same port, same settings), wait ready

``--port`` names the stack when it is not on the default edge port. Once ready it prints
where everything is, a curl session and the operator commands (``residency-ops --config
<workdir>/edge.toml ...``), each runnable as printed from any shell.

This file is ``Stack`` (the processes, their settings, the demo data) and ``main``; its
siblings are ``stack_control.py`` (supervision, the control socket) and ``stack_text.py`` (what
it prints). The reliability tests and the bench load this file by path for ``Stack`` alone, so
the siblings are imported by ``main``, which runs only as a script (its directory is then on
``sys.path``).

LOCAL DEMO ONLY: the secrets and API keys below are clearly-marked demo values. The demo
user-token issuer's key pair is made at each start in the work dir (``python -m residency_dev
token demo-keys``), never committed; ``python -m residency_dev token issue`` signs tokens with
it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from residency_dev import dynamodb_local

REGIONS = ("us-east-1", "eu-west-1")
DEMO_ACCOUNTS = {"demo-us": "us-east-1", "demo-eu": "eu-west-1"}
# LOCAL DEMO credentials: printed to the console on purpose, valid only in this local stack.
DEMO_KEYS = {
    "demo-us": ("vtexappkey-demo-us-LOCALDEMO", "LOCAL-DEMO-TOKEN-us-not-a-secret"),
    "demo-eu": ("vtexappkey-demo-eu-LOCALDEMO", "LOCAL-DEMO-TOKEN-eu-not-a-secret"),
}
DEMO_SECRETS = {r: f"demo-only-assertion-secret-{r}" for r in REGIONS}
# LOCAL DEMO user (user tokens): granted read + unmask on both demo accounts.
DEMO_USER_ID = "0d3c5e8a-4b1f-4c2d-9e7a-000000de0001"
DEMO_USER_EMAIL = "demo.operator@example.com"
DEMO_USER_ROLES = "read,unmask"
TABLE = "profiles"
REGISTRY_TABLE = "account-registry"


def say(msg: str) -> None:
    print(f"[stack] {msg}", file=sys.stderr, flush=True)


def wait_http_ok(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 (our http URLs)
                if resp.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s ({last})")


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group of ``proc`` (each service runs in its own session)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Wait for a terminated ``proc``; SIGKILL its group after 15 s."""
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@dataclass
class Stack:
    workdir: Path
    edge_port: int
    admin_port: int
    python: str = sys.executable
    ddbs: dict[str, dynamodb_local.DynamoDBLocal] = field(default_factory=dict)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    # what ``spawn`` started under each name, to start it again (``restart``)
    specs: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict)
    ready_urls: dict[str, str] = field(default_factory=dict)  # name -> its readiness URL
    region_of: dict[str, str] = field(default_factory=dict)  # store name -> region
    demo_issuer: dict[str, str] = field(default_factory=dict)  # token demo-keys' answer

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PROFILE_STORE_", "EDGE_"))}
        env.update(
            AWS_ACCESS_KEY_ID="local",
            AWS_SECRET_ACCESS_KEY="local",  # noqa: S106 (DynamoDB Local ignores credentials)
            AWS_EC2_METADATA_DISABLED="true",
            PYTHONUNBUFFERED="1",
        )
        return env

    def store_env(self, region: str, instance: str = "provision", port: int = 0) -> dict[str, str]:
        env = self.base_env()
        env.update(
            PROFILE_STORE_REGION=region,
            PROFILE_STORE_TABLE=TABLE,
            PROFILE_STORE_DYNAMODB_ENDPOINT=self.ddbs[region].endpoint,
            PROFILE_STORE_ASSERTION_SECRET=DEMO_SECRETS[region],
            PROFILE_STORE_REQUIRE_PITR="false",
            PROFILE_STORE_INSTANCE_ID=instance,
            PROFILE_STORE_LOCAL_MASTER_KEY_FILE=str(self.workdir / f"demo-master-{region}.key"),
        )
        if port:
            env["PROFILE_STORE_PORT"] = str(port)
        return env

    @property
    def edge_config(self) -> Path:
        return self.workdir / "edge.toml"

    def edge_env(self) -> dict[str, str]:
        env = self.base_env()
        env["EDGE_CONFIG"] = str(self.edge_config)
        return env

    def ops(self, *args: str) -> list[str]:
        """``residency-ops`` against this stack: its config carries all it needs (the
        registry, the regions, dummy credentials), so it runs with nothing in the environment."""
        return [self.python, "-m", "residency_ops", "--config", str(self.edge_config), *args]

    def run(self, what: str, argv: list[str], env: dict[str, str]) -> str:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        return done.stdout

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.procs.append((name, proc))
        self.specs[name] = (argv, env)
        return proc

    def current(self) -> dict[str, subprocess.Popen[bytes]]:
        """The latest process started under each name (a restart adds a newer one)."""
        return dict(self.procs)

    def stop_process(self, name: str) -> int | None:
        """SIGTERM ``name``'s process group (SIGKILL after 15 s); its exit code."""
        proc = self.current()[name]
        _terminate(proc)
        _reap(proc)
        return proc.returncode

    def restart_process(self, name: str) -> subprocess.Popen[bytes]:
        """Start ``name`` again with the argv and environment it was first started with (so
        the same port), stopping it first if it still runs; returns once it is ready."""
        self.stop_process(name)
        argv, env = self.specs[name]
        proc = self.spawn(name, argv, env)
        wait_http_ok(self.ready_urls[name], 60, proc)
        return proc

    def up(self) -> None:
        for region in REGIONS:
            say(f"starting DynamoDB Local for {region} ...")
            self.ddbs[region] = dynamodb_local.start(
                timeout=90, log_path=self.workdir / f"dynamodb-{region}.log"
            )
            say(f"  DynamoDB Local {region} on {self.ddbs[region].endpoint}")
        for region in REGIONS:
            say(f"creating table {TABLE!r} in {region}")
            env = self.store_env(region)
            self.run(
                "generate demo master key",
                [
                    self.python,
                    "-m",
                    "profile_store",
                    "generate-local-key",
                    env["PROFILE_STORE_LOCAL_MASTER_KEY_FILE"],
                ],
                env,
            )
            self.run("create-table", [self.python, "-m", "profile_store", "create-table"], env)
        say("making the LOCAL DEMO user-token issuer's key pair")
        self.demo_issuer = json.loads(
            self.run(
                "token demo-keys",
                [
                    self.python,
                    "-m",
                    "residency_dev",
                    "token",
                    "demo-keys",
                    "--dir",
                    str(self.workdir),
                ],
                self.base_env(),
            )
        )
        self.write_edge_config(store_ports := self.pick_store_ports())
        say("creating the account registry and demo accounts")
        env = self.base_env()
        self.run("registry create-table", self.ops("registry", "create-table"), env)
        for account, region in DEMO_ACCOUNTS.items():
            key, token = DEMO_KEYS[account]
            self.run(
                "create-account",
                self.ops("registry", "create-account", account, "--region", region),
                env,
            )
            self.create_key(account, "read,write,delete,unmask,erase", key, token)
            self.run(
                "grant-user",
                self.ops(
                    "registry", "grant-user", account, DEMO_USER_EMAIL, "--roles", DEMO_USER_ROLES
                ),
                env,
            )
        for region in REGIONS:
            for i, port in enumerate(store_ports[region], start=1):
                name = f"store-{region}-{i}"
                say(f"starting {name} on 127.0.0.1:{port}")
                proc = self.spawn(
                    name,
                    [self.python, "-m", "profile_store", "serve"],
                    self.store_env(region, name, port),
                )
                self.region_of[name] = region
                self.ready_urls[name] = f"http://127.0.0.1:{port}/readyz"
                wait_http_ok(self.ready_urls[name], 60, proc)
        say(f"starting the edge on 127.0.0.1:{self.edge_port} (admin {self.admin_port})")
        proc = self.spawn("edge", [self.python, "-m", "edge_router", "serve"], self.edge_env())
        self.ready_urls["edge"] = f"http://127.0.0.1:{self.admin_port}/readyz"
        wait_http_ok(self.ready_urls["edge"], 60, proc)

    def create_key(self, account: str, roles: str, app_key: str, token: str) -> None:
        argv = ["create-key", account, "--roles", roles, "--app-key", app_key]
        self.run("create-key", self.ops("registry", *argv, "--app-token", token), self.base_env())

    def pick_store_ports(self) -> dict[str, list[int]]:
        ports: dict[str, list[int]] = {}
        for region in REGIONS:
            ports[region] = [dynamodb_local.free_port(), dynamodb_local.free_port()]
        return ports

    def write_edge_config(self, store_ports: dict[str, list[int]]) -> None:
        lines = [
            "# LOCAL DEMO ONLY: generated by deploy/local/stack.py",
            'host = "127.0.0.1"',
            f"port = {self.edge_port}",
            f"admin_port = {self.admin_port}",
            'host_suffixes = ["localhost"]',
            f'registry_table = "{REGISTRY_TABLE}"',
            f'registry_endpoint = "{self.ddbs["us-east-1"].endpoint}"',
            'registry_region = "us-east-1"',
        ]
        for region in REGIONS:
            instances = ", ".join(f'"http://127.0.0.1:{p}"' for p in store_ports[region])
            lines += [
                "",
                f'[regions."{region}"]',
                f"instances = [{instances}]",
                f'assertion_secret = "{DEMO_SECRETS[region]}"',
                f'table = "{TABLE}"',
                f'dynamodb_endpoint = "{self.ddbs[region].endpoint}"',
            ]
        issuer = self.demo_issuer
        lines += [
            "",
            "# LOCAL DEMO user-token issuer (python -m residency_dev token issue signs for it)",
            '[token_issuers."local-demo"]',
            f'issuer = "{issuer["issuer"]}"',
            f'audiences = ["{issuer["audience"]}"]',
            f'jwks_file = "{issuer["jwks_file"]}"',
            "",
            "# LOCAL DEMO: residency-ops signs its DynamoDB calls with these (DynamoDB Local",
            "# ignores credentials); the edge does not read this table.",
            "[operator_credentials]",
            'aws_access_key_id = "local"',
            'aws_secret_access_key = "local"',
        ]
        self.edge_config.write_text("\n".join(lines) + "\n")

    def down(self) -> None:
        # All are told at once, then reaped: the stops overlap instead of adding up.
        for _name, proc in reversed(self.procs):
            _terminate(proc)
        for _name, proc in reversed(self.procs):
            _reap(proc)
        for ddb in self.ddbs.values():
            ddb.stop()


def main(argv: list[str] | None = None) -> int:
    # Siblings of this script (see the module's docstring): importable when it runs as one.
    import stack_control
    import stack_text

    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="commands: up (default) | status | stop NAME | restart NAME "
        "(the last three talk to the stack running on --port)",
    )
    parser.add_argument(
        "command", nargs="?", default="up", choices=["up", "status", "stop", "restart"]
    )
    parser.add_argument("name", nargs="?", help="process for stop/restart, e.g. store-eu-west-1-1")
    parser.add_argument("--port", type=int, default=8080, help="edge port (default 8080)")
    parser.add_argument("--admin-port", type=int, default=9090, help="admin port (default 9090)")
    parser.add_argument("--workdir", type=Path, default=None, help="logs and generated config")
    args = parser.parse_args(argv)
    if args.command != "up":
        if args.command != "status" and not args.name:
            parser.error(f"{args.command} needs a process name, e.g. store-eu-west-1-1")
        return stack_control.control(args.port, {"command": args.command, "name": args.name or ""})

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="residency-stack-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(workdir=workdir, edge_port=args.port, admin_port=args.admin_port)
    demo = stack_text.Demo(DEMO_ACCOUNTS, DEMO_KEYS, DEMO_USER_ID, DEMO_USER_EMAIL, DEMO_USER_ROLES)
    hint = "" if args.port == 8080 else f" --port {args.port}"
    stopping = False
    server = None

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    # SIGINT too, explicitly: a process started from a non-interactive shell's background job
    # inherits SIGINT ignored, and Python then leaves it ignored (Ctrl-C / the test's SIGINT
    # did nothing under CI and the whole stack outlived it).
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server = stack_control.listen(args.port)
        stack.up()
        print(stack_text.banner(stack, demo, hint), flush=True)
        return stack_control.supervise(stack, server, workdir, hint)
    except KeyboardInterrupt:
        say("stopping ...")
        return 0
    except Exception as exc:  # any start failure: say what, then clean up
        say(f"start failed: {exc}")
        return 1
    finally:
        if server is not None:
            server.close()
            with contextlib.suppress(OSError):
                stack_control.control_path(args.port).unlink()
        stack.down()
        say("all processes stopped")


if __name__ == "__main__":
    sys.exit(main())
