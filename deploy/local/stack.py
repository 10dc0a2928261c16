"""The whole local stack in one process tree: DynamoDB Local per region, two Profile System
instances per region, the account registry with two demo accounts, and the edge.

Run through ``deploy/local/run-stack`` (which installs what is missing first). Ctrl-C (SIGINT)
or SIGTERM stops every process this started; nothing is left behind.

LOCAL DEMO ONLY: the secrets and API keys below are clearly-marked demo values.
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

from profile_store import dynamodb_local

REGIONS = ("us-east-1", "eu-west-1")
DEMO_ACCOUNTS = {"demo-us": "us-east-1", "demo-eu": "eu-west-1"}
# LOCAL DEMO credentials: printed to the console on purpose, valid only in this local stack.
DEMO_KEYS = {
    "demo-us": ("vtexappkey-demo-us-LOCALDEMO", "LOCAL-DEMO-TOKEN-us-not-a-secret"),
    "demo-eu": ("vtexappkey-demo-eu-LOCALDEMO", "LOCAL-DEMO-TOKEN-eu-not-a-secret"),
}
DEMO_SECRETS = {r: f"demo-only-assertion-secret-{r}" for r in REGIONS}
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


@dataclass
class Stack:
    workdir: Path
    edge_port: int
    admin_port: int
    python: str = sys.executable
    ddbs: dict[str, dynamodb_local.DynamoDBLocal] = field(default_factory=dict)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

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
        self.write_edge_config(store_ports := self.pick_store_ports())
        say("creating the account registry and demo accounts")
        edge = [self.python, "-m", "edge_router", "registry"]
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
        for region in REGIONS:
            for i, port in enumerate(store_ports[region], start=1):
                name = f"store-{region}-{i}"
                say(f"starting {name} on 127.0.0.1:{port}")
                proc = self.spawn(
                    name,
                    [self.python, "-m", "profile_store", "serve"],
                    self.store_env(region, name, port),
                )
                wait_http_ok(f"http://127.0.0.1:{port}/readyz", 60, proc)
        say(f"starting the edge on 127.0.0.1:{self.edge_port} (admin {self.admin_port})")
        proc = self.spawn("edge", [self.python, "-m", "edge_router", "serve"], self.edge_env())
        wait_http_ok(f"http://127.0.0.1:{self.admin_port}/readyz", 60, proc)

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
        (self.workdir / "edge.toml").write_text("\n".join(lines) + "\n")

    def down(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        for ddb in self.ddbs.values():
            ddb.stop()

    def session(self) -> str:
        base = f"http://127.0.0.1:{self.edge_port}/api/storage/profile-system"
        json_h = "-H 'Content-Type: application/json' -H 'Accept: application/json'"
        auth = {
            account: f"-H 'X-VTEX-API-AppKey: {key}' -H 'X-VTEX-API-AppToken: {token}' {json_h}"
            for account, (key, token) in DEMO_KEYS.items()
        }
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
                SESSION_END,
            ]
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="edge port (default 8080)")
    parser.add_argument("--admin-port", type=int, default=9090, help="admin port (default 9090)")
    parser.add_argument("--workdir", type=Path, default=None, help="logs and generated config")
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="residency-stack-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(workdir=workdir, edge_port=args.port, admin_port=args.admin_port)
    stopping = False

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
        stack.up()
        print(
            f"\nEdge:    http://127.0.0.1:{args.port}   (accounts resolve from Host "
            f"'<account>.localhost' or ?an=<account>)\n"
            f"Admin:   http://127.0.0.1:{args.admin_port}/metrics  /healthz  /readyz\n"
            f"Logs:    {workdir}\n"
            f"Demo accounts (LOCAL DEMO keys): demo-us -> us-east-1, demo-eu -> eu-west-1\n\n"
            f"{stack.session()}\n\nREADY. Ctrl-C stops everything.",
            flush=True,
        )
        while True:
            for name, proc in stack.procs:
                if proc.poll() is not None:
                    say(f"{name} exited with code {proc.returncode}; see {workdir}/{name}.log")
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        say("stopping ...")
        return 0
    except Exception as exc:  # any start failure: say what, then clean up
        say(f"start failed: {exc}")
        return 1
    finally:
        stack.down()
        say("all processes stopped")


if __name__ == "__main__":
    sys.exit(main())
