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

``--port`` names the stack when it is not on the default edge port.

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
import select
import signal
import socket
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
SESSION_BEGIN = "# ---- curl session (copy-paste) ----"
SESSION_END = "# ---- end of session ----"


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

    def edge_env(self) -> dict[str, str]:
        env = self.base_env()
        env["EDGE_CONFIG"] = str(self.workdir / "edge.toml")
        return env

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
        edge = [self.python, "-m", "residency_ops", "registry"]
        self.run("registry create-table", [*edge, "create-table"], self.edge_env())
        for account, region in DEMO_ACCOUNTS.items():
            key, token = DEMO_KEYS[account]
            self.run(
                "create-account",
                [*edge, "create-account", account, "--region", region],
                self.edge_env(),
            )
            self.run(
                "create-key",
                [
                    *edge,
                    "create-key",
                    account,
                    "--roles",
                    "read,write,delete,unmask,erase",
                    "--app-key",
                    key,
                    "--app-token",
                    token,
                ],
                self.edge_env(),
            )
            self.run(
                "grant-user",
                [*edge, "grant-user", account, DEMO_USER_EMAIL, "--roles", DEMO_USER_ROLES],
                self.edge_env(),
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
        ]
        (self.workdir / "edge.toml").write_text("\n".join(lines) + "\n")

    def down(self) -> None:
        # All are told at once, then reaped: the stops overlap instead of adding up.
        for _name, proc in reversed(self.procs):
            _terminate(proc)
        for _name, proc in reversed(self.procs):
            _reap(proc)
        for ddb in self.ddbs.values():
            ddb.stop()

    def session(self) -> str:
        base = f"http://127.0.0.1:{self.edge_port}/api/storage/profile-system"
        json_h = "-H 'Content-Type: application/json' -H 'Accept: application/json'"
        auth = {
            account: f"-H 'X-VTEX-API-AppKey: {key}' -H 'X-VTEX-API-AppToken: {token}' {json_h}"
            for account, (key, token) in DEMO_KEYS.items()
        }
        issue = (
            f"{self.python} -m residency_dev token issue --key {self.demo_issuer['key_file']} "
            f"--account demo-eu --user {DEMO_USER_ID} --email {DEMO_USER_EMAIL}"
        )
        pick = (
            "python3 -c 'import json,sys; d=json.load(sys.stdin); "
            'print(d["id"], d["meta"]["version"])\''
        )

        def create(var: str, account: str, profile: dict[str, str]) -> str:
            body = json.dumps(profile, separators=(",", ":"))
            post = f"curl -sf -X POST '{base}/profiles?an={account}' {auth[account]} -d '{body}'"
            return f'read -r {var}_ID {var}_V1 <<< "$({post} | {pick})"'

        def get(path: str, account: str) -> str:
            sep = "&" if "?" in path else "?"
            return f"curl -si '{base}/{path}{sep}an={account}' {auth[account]}"

        jane = {
            "firstName": "Jane",
            "lastName": "Roe",
            "email": "jane.roe@example.com",
            "document": "12345678900",
            "documentType": "CPF",
        }
        jean = {
            "firstName": "Jean",
            "lastName": "Dupont",
            "email": "jean.dupont@example.eu",
            "document": "98765432100",
            "documentType": "CPF",
        }
        return "\n".join(
            [
                SESSION_BEGIN,
                "# 1. create a profile for the us-east-1 account and one for the eu-west-1 account",
                create("US", "demo-us", jane),
                create("EU", "demo-eu", jean),
                "# 2. read them back masked; note the X-Data-Region header",
                get("profiles/'$US_ID'", "demo-us"),
                get("profiles/'$EU_ID'", "demo-eu"),
                "# 3. unmask with a reason (audited in the account's region)",
                get("profiles/'$EU_ID'/unmask?reason=support-ticket", "demo-eu"),
                "# 4. update a profile, then read its first version (unmasked, with a reason)",
                f"curl -si -X PATCH '{base}/profiles/'$US_ID'?an=demo-us' {auth['demo-us']} "
                '-d \'{"firstName":"Janet"}\'',
                get("profiles/'$US_ID'/versions/'$US_V1'/unmask?reason=audit-check", "demo-us"),
                "# 5. one account's key on the other account is refused (403)",
                get("profiles/'$EU_ID'", "demo-eu").replace(auth["demo-eu"], auth["demo-us"]),
                "# 6. the same unmask as a signed-in user: a VtexIdclientAutCookie user token from",
                "#    the LOCAL DEMO issuer (audited as user:<userId>)",
                f"curl -si '{base}/profiles/'$EU_ID'/unmask?reason=support-ticket&an=demo-eu' "
                f'{json_h} -H "VtexIdclientAutCookie: $({issue})"',
                SESSION_END,
            ]
        )


# -- supervision and the control socket --------------------------------------------------------


def control_path(edge_port: int) -> Path:
    """Where the stack on ``edge_port`` listens for ``status``/``stop``/``restart``."""
    return Path(tempfile.gettempdir()) / f"residency-stack-{edge_port}.sock"


def _what(stack: Stack, name: str) -> str:
    region = stack.region_of.get(name)
    return f"{name} ({region})" if region else name


def _status(stack: Stack) -> list[str]:
    lines = []
    for name, proc in stack.current().items():
        code = proc.poll()
        state = "running" if code is None else f"exited (code {code})"
        url = stack.ready_urls.get(name, "").removesuffix("/readyz")
        lines.append(
            f"{name:<20} {stack.region_of.get(name, '-'):<10} {url:<24} pid {proc.pid:<8} {state}"
        )
    return lines


def _name(stack: Stack, raw: str) -> str | None:
    for name in (raw, f"store-{raw}"):
        if name in stack.specs and name in stack.ready_urls:
            return name
    return None


def _command(stack: Stack, request: dict[str, str], reported: set[int]) -> dict[str, object]:
    command = request.get("command")
    if command == "status":
        return {"ok": True, "lines": _status(stack)}
    name = _name(stack, request.get("name") or "")
    if name is None:
        known = ", ".join(n for n in stack.current() if n in stack.ready_urls)
        return {"ok": False, "lines": [f"no such process {request.get('name')!r}; one of: {known}"]}
    reported.add(stack.current()[name].pid)  # stopped on request: not news when it exits
    if command == "stop":
        code = stack.stop_process(name)
        say(f"{_what(stack, name)} stopped on request (code {code})")
        return {"ok": True, "lines": [f"{name} stopped (code {code})"]}
    if command == "restart":
        say(f"restarting {_what(stack, name)} on request ...")
        try:
            proc = stack.restart_process(name)
        except RuntimeError as exc:
            say(f"{_what(stack, name)} did not start: {exc}")
            return {"ok": False, "lines": [f"{name} did not start: {exc}"]}
        say(f"{_what(stack, name)} is running again (pid {proc.pid})")
        return {"ok": True, "lines": [f"{name} restarted (pid {proc.pid}) and ready"]}
    return {"ok": False, "lines": [f"unknown command {command!r}"]}


def _recv_line(conn: socket.socket) -> bytes:
    """What the peer sends up to its newline (the control protocol's one JSON line each way),
    or until it closes (then without the newline)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _serve_one(stack: Stack, server: socket.socket, reported: set[int]) -> None:
    conn, _ = server.accept()
    with conn:
        conn.settimeout(5)
        try:
            data = _recv_line(conn)
            if not data.endswith(b"\n"):
                return
            answer = _command(stack, json.loads(data), reported)
            conn.settimeout(None)
            conn.sendall(json.dumps(answer).encode() + b"\n")
        except (OSError, ValueError) as exc:
            say(f"control request failed: {exc}")


def supervise(stack: Stack, server: socket.socket, workdir: Path, hint: str) -> int:
    """Watch the processes and answer control requests until Ctrl-C / SIGTERM. A store or the
    edge exiting is said once (and again after each restart); the others keep running. A
    DynamoDB Local exiting ends the stack: its data is gone."""
    reported: set[int] = set()
    while True:
        ready, _, _ = select.select([server], [], [], 0.5)
        if ready:
            _serve_one(stack, server, reported)
        for name, proc in stack.current().items():
            if proc.poll() is not None and proc.pid not in reported:
                reported.add(proc.pid)
                say(
                    f"{_what(stack, name)} exited with code {proc.returncode}; the other "
                    f"processes keep running (log: {workdir}/{name}.log; "
                    f"start it again: ./deploy/local/run-stack restart {name}{hint})"
                )
        for region, ddb in stack.ddbs.items():
            if ddb.process.poll() is not None:
                say(f"DynamoDB Local for {region} exited; its data is gone: stopping the stack")
                return 1


def control(edge_port: int, request: dict[str, str]) -> int:
    """``status`` / ``stop`` / ``restart``: ask the running stack, print its answer."""
    path = control_path(edge_port)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(120)  # a restart waits up to 60 s for the store to be ready
            conn.connect(str(path))
            conn.sendall(json.dumps(request).encode() + b"\n")
            data = _recv_line(conn)
    except OSError as exc:
        say(
            f"no running stack on edge port {edge_port} ({path}: {exc}); start one with "
            "./deploy/local/run-stack"
        )
        return 2
    answer = json.loads(data)
    for line in answer["lines"]:
        print(line, flush=True)
    return 0 if answer["ok"] else 1


def _listen(edge_port: int) -> socket.socket:
    path = control_path(edge_port)
    if path.exists():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # left by a stack that did not stop cleanly
            else:
                raise RuntimeError(f"another stack already runs on edge port {edge_port}")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0o600)
    server.listen(4)
    return server


def main(argv: list[str] | None = None) -> int:
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
        return control(args.port, {"command": args.command, "name": args.name or ""})

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="residency-stack-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(workdir=workdir, edge_port=args.port, admin_port=args.admin_port)
    hint = "" if args.port == 8080 else f" --port {args.port}"
    stopping = False
    server: socket.socket | None = None

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
        server = _listen(args.port)
        stack.up()
        print(
            f"\nEdge:    http://127.0.0.1:{args.port}   (accounts resolve from Host "
            f"'<account>.localhost' or ?an=<account>)\n"
            f"Admin:   http://127.0.0.1:{args.admin_port}/metrics  /healthz  /readyz\n"
            f"Logs:    {workdir}\n"
            f"Demo accounts (LOCAL DEMO keys): demo-us -> us-east-1, demo-eu -> eu-west-1\n"
            f"Demo user (LOCAL DEMO issuer, roles {DEMO_USER_ROLES}): {DEMO_USER_EMAIL}; a token:"
            f" {stack.python} -m residency_dev token issue --key "
            f"{stack.demo_issuer.get('key_file')} --account demo-eu --user {DEMO_USER_ID}"
            f" --email {DEMO_USER_EMAIL}\n"
            f"Failover: ./deploy/local/run-stack status|stop NAME|restart NAME{hint} "
            f"(from another shell)\n\n"
            f"{stack.session()}\n\nREADY. Ctrl-C stops everything.",
            flush=True,
        )
        return supervise(stack, server, workdir, hint)
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
                control_path(args.port).unlink()
        stack.down()
        say("all processes stopped")


if __name__ == "__main__":
    sys.exit(main())
