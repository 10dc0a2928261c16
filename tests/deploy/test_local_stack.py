"""The README's first command, run as a user would: start the stack, paste the printed curl
session into a shell, check every answer, run the printed operator commands from a shell with
nothing in its environment, press Ctrl-C, and find nothing left running."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from residency_dev.dynamodb_local import free_port

REPO = Path(__file__).resolve().parents[2]
BEGIN = "# ---- curl session (copy-paste) ----"
END = "# ---- end of session ----"
OPS_BEGIN = "# ---- operator commands (residency-ops, as they run against this stack) ----"
OPS_END = "# ---- end of operator commands ----"

pytestmark = pytest.mark.slow


def read_until_ready(proc: subprocess.Popen[str], timeout: float) -> str:
    # A reader thread, because select() on a buffered text pipe misses lines already buffered.
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if not line:
            break
        out.append(line)
        if line.startswith("READY."):
            return "".join(out)
    raise AssertionError("stack did not print READY in time:\n" + "".join(out))


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            blob = (entry / "environ").read_bytes() + (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in blob:
            found.append(int(entry.name))
    return found


def start_stack(
    edge_port: int, admin_port: int, workdir: Path, stderr: IO[str] | int
) -> subprocess.Popen[str]:
    """``deploy/local/stack.py`` on these ports, its stdout piped for the banner."""
    # Started as from a non-interactive shell's background job, which is how CI may run it:
    # SIGINT inherited ignored (``trap '' INT``, then exec: the same pid, the disposition
    # kept; a preexec_fn would be unsafe in this threaded process). Ctrl-C (the tests'
    # SIGINT) must stop the stack anyway.
    argv = [
        sys.executable,
        str(REPO / "deploy/local/stack.py"),
        "--port",
        str(edge_port),
        "--admin-port",
        str(admin_port),
        "--workdir",
        str(workdir),
    ]
    return subprocess.Popen(
        ["bash", "-c", "trap '' INT; exec \"$@\"", "stack", *argv],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        cwd=REPO,
    )


def bare_env(home: Path) -> dict[str, str]:
    """A new shell's environment with nothing of AWS or of the edge in it (and a HOME without
    ``~/.aws``): what a user has who only read the banner."""
    return {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8"}


def in_bare_shell(command: str, home: Path) -> subprocess.CompletedProcess[str]:
    """``command`` as pasted into a new shell that has nothing but PATH and HOME."""
    argv = ["bash", "-c", command]
    return subprocess.run(argv, env=bare_env(home), capture_output=True, text=True, timeout=120)


def run_operator_commands(banner: str, home: Path) -> list[subprocess.CompletedProcess[str]]:
    """Each printed operator command, exactly as printed, in a bare shell."""
    block = banner[banner.index(OPS_BEGIN) : banner.index(OPS_END)]
    commands = [c for c in block.splitlines() if c and not c.startswith("#")]
    verbs = [c.split(" --config ", 1)[1].split(" ", 2)[1:] for c in commands]
    assert verbs == [
        ["registry", "list"],
        ["residency", "report"],
        ["account", "move demo-eu --to us-east-1"],
        ["account", "status demo-eu"],
    ]
    done = []
    for command in commands:
        done.append(in_bare_shell(command, home))
        assert done[-1].returncode == 0, command + "\n" + done[-1].stderr[-3000:]
    return done


def last_json(out: str) -> dict[str, object]:
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.timeout(360)  # the stack's start, the session, three clients and a whole move
def test_one_command_stack_serves_the_printed_session(tmp_path: Path) -> None:
    edge_port, admin_port = free_port(), free_port()
    workdir = tmp_path / "stack"
    proc = start_stack(edge_port, admin_port, workdir, subprocess.DEVNULL)
    try:
        banner = read_until_ready(proc, timeout=150)
        session = banner[banner.index(BEGIN) : banner.index(END)]
        config = tomllib.loads((workdir / "edge.toml").read_text())
        ports = [edge_port, admin_port]
        for region in config["regions"].values():
            ports += [int(u.rsplit(":", 1)[1]) for u in region["instances"]]
            ports.append(int(region["dynamodb_endpoint"].rsplit(":", 1)[1]))

        # Run the session one command at a time in one shell, so variables carry over.
        commands = [c for c in session.splitlines() if c and not c.startswith("#")]
        script = "set -e\n" + "\n".join(
            f"echo '=== step {i}'\n{c}\necho" for i, c in enumerate(commands)
        )
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        steps = re.split(r"^=== step \d+$", done.stdout, flags=re.M)[1:]
        assert len(steps) == len(commands) == 9

        us_read, eu_read, eu_unmask = steps[2], steps[3], steps[4]
        patch, old_version, cross, user_unmask = steps[5], steps[6], steps[7], steps[8]
        assert re.search(r"(?m)^HTTP/1.1 200", us_read)
        assert re.search(r"(?im)^x-data-region: us-east-1", us_read)
        assert re.search(r"(?im)^x-data-region: eu-west-1", eu_read)
        assert "J***" in us_read and "jane.roe@example.com" not in us_read
        assert "jean.dupont@example.eu" in eu_unmask
        assert re.search(r"(?m)^HTTP/1.1 200", patch) and '"firstName":"Janet"' in patch
        assert re.search(r"(?m)^HTTP/1.1 200", old_version)
        assert '"firstName":"Jane"' in old_version
        assert re.search(r"(?m)^HTTP/1.1 403", cross)
        # a user token from the demo issuer: the same unmask, and its key stays in the work dir
        assert re.search(r"(?m)^HTTP/1.1 200", user_unmask), user_unmask
        assert "jean.dupont@example.eu" in user_unmask
        assert (workdir / "demo-issuer-private.pem").stat().st_mode & 0o077 == 0

        # Clients other than aiohttp, as a user would write them, through the same stack.
        base = f"http://127.0.0.1:{edge_port}/api/storage/profile-system"
        for client in (curl_call, urllib_call, requests_call):
            create_patch_delete(client, base)

        # The operator commands, as printed, from a shell with no AWS_* nor EDGE_* variable:
        # the stack's config carries what they need.
        listed, report, move, status = run_operator_commands(banner, tmp_path)
        rows = [json.loads(line) for line in listed.stdout.splitlines()]
        assert {r["account"]: r["region"] for r in rows} == {
            "demo-us": "us-east-1",
            "demo-eu": "eu-west-1",
        }
        assert last_json(report.stdout)["summary"]["ok"] is True  # type: ignore[index]
        assert last_json(move.stdout)["result"] == "done"
        job = last_json(status.stdout)
        assert (job["phase"], job["from"], job["to"]) == ("done", "eu-west-1", "us-east-1")
        _wait("demo-eu served from its new home", lambda: _read_eu(edge_port)[1] == "us-east-1", 15)
        # and the proof of residency holds after the move (the source was purged)
        again = in_bare_shell(report.args[-1], tmp_path)
        assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.terminate()  # so a failed stop does not leave the stack running after the test
            proc.wait(timeout=60)
            raise
    assert code == 0
    leftovers = [p for p in ports if port_open(p)]
    assert leftovers == [], f"ports still open after Ctrl-C: {leftovers}"
    assert processes_mentioning(str(workdir)) == []


# -- create, patch and delete a profile with three clients that are not aiohttp ---------------

LOCAL_DEMO_KEY = ("vtexappkey-demo-eu-LOCALDEMO", "LOCAL-DEMO-TOKEN-eu-not-a-secret")  # demo only
Call = Callable[[str, str, bytes | None], tuple[int, bytes]]


def _headers() -> dict[str, str]:
    key, token = LOCAL_DEMO_KEY
    return {
        "X-VTEX-API-AppKey": key,
        "X-VTEX-API-AppToken": token,
        "Content-Type": "application/json",
        "Accept": "application/json",
    }


def curl_call(method: str, url: str, body: bytes | None) -> tuple[int, bytes]:
    args = ["curl", "-s", "--max-time", "10", "-X", method, "-w", "\n%{http_code}"]
    for name, value in _headers().items():
        args += ["-H", f"{name}: {value}"]
    if body is not None:
        args += ["--data-binary", "@-"]
    done = subprocess.run([*args, url], input=body or b"", capture_output=True, timeout=15)
    assert done.returncode == 0, done.stderr
    payload, _, code = done.stdout.rpartition(b"\n")
    return int(code), payload


def urllib_call(method: str, url: str, body: bytes | None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=_headers())  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 (loopback)
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def requests_call(method: str, url: str, body: bytes | None) -> tuple[int, bytes]:
    import requests

    resp = requests.request(method, url, data=body, headers=_headers(), timeout=10)
    return resp.status_code, resp.content


def create_patch_delete(call: Call, base: str) -> None:
    who = call.__name__
    email = f"{who.replace('_', '.')}@example.eu"
    profile = {
        "email": email,
        "firstName": "Ana",
        "lastName": "Lima",
        "document": "",
        "documentType": "CPF",
    }
    profile["document"] = str(zlib.crc32(who.encode())).zfill(11)
    body = json.dumps(profile).encode()
    status, created = call("POST", f"{base}/profiles?an=demo-eu", body)
    assert status in (200, 201), (who, status, created)
    pid = json.loads(created)["id"]
    patch = json.dumps({"firstName": "Anna"}).encode()
    status, patched = call("PATCH", f"{base}/profiles/{pid}?an=demo-eu", patch)
    assert status == 200, (who, status, patched)
    status, read = call("GET", f"{base}/profiles/{pid}/unmask?an=demo-eu&reason=client-test", None)
    assert status == 200 and b'"Anna"' in read, (who, status)
    status, _ = call("DELETE", f"{base}/profiles/{pid}?an=demo-eu", None)
    assert status in (200, 204), (who, status)
    status, _ = call("GET", f"{base}/profiles/{pid}?an=demo-eu", None)
    assert status == 404, (who, status)


# -- supervision: a dead store is said, the rest keeps running, and it can be restarted -------


def _stack_command(edge_port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "deploy/local/stack.py"), *args, "--port", str(edge_port)],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=REPO,
    )


def _status(edge_port: int) -> dict[str, tuple[int, str]]:
    done = _stack_command(edge_port, "status")
    assert done.returncode == 0, done.stdout + done.stderr
    out = {}
    for line in done.stdout.splitlines():
        m = re.match(r"^(\S+)\s.*\bpid (\d+)\s+(.+)$", line)
        assert m, line
        out[m[1]] = (int(m[2]), m[3].strip())
    return out


def _read_eu(edge_port: int) -> tuple[int, str | None]:
    """A read of demo-eu through the edge: its status, and the region that served it."""
    key, token = LOCAL_DEMO_KEY
    url = f"http://127.0.0.1:{edge_port}/api/storage/profile-system/profiles/none?an=demo-eu"
    request = urllib.request.Request(
        url, headers={"X-VTEX-API-AppKey": key, "X-VTEX-API-AppToken": token}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310
            return int(resp.status), resp.headers.get("X-Data-Region")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.headers.get("X-Data-Region")


def _get_eu(edge_port: int) -> int:
    return _read_eu(edge_port)[0]


def _wait(what: str, pred: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.1)


def test_a_dead_store_is_said_the_rest_keeps_running_and_it_restarts(tmp_path: Path) -> None:
    edge_port, admin_port = free_port(), free_port()
    workdir = tmp_path / "stack"
    stderr = tmp_path / "stack.stderr"
    with stderr.open("w") as err:
        proc = start_stack(edge_port, admin_port, workdir, err)
    try:
        banner = read_until_ready(proc, timeout=150)
        assert f"restart NAME --port {edge_port}" in banner
        before = _status(edge_port)
        assert set(before) == {
            "store-us-east-1-1",
            "store-us-east-1-2",
            "store-eu-west-1-1",
            "store-eu-west-1-2",
            "edge",
        }
        assert all(state == "running" for _pid, state in before.values()), before
        # a store dies (SIGKILL, as in a crash): one line says which, in which region
        os.kill(before["store-eu-west-1-1"][0], signal.SIGKILL)
        _wait(
            "the death is said",
            lambda: "store-eu-west-1-1 (eu-west-1) exited with code -9" in stderr.read_text(),
            10,
        )
        said = [line for line in stderr.read_text().splitlines() if "exited" in line]
        assert len(said) == 1 and "keep running" in said[0], said
        assert proc.poll() is None  # the stack goes on
        now = _status(edge_port)
        assert now["store-eu-west-1-1"][1] == "exited (code -9)"
        assert all(s == "running" for n, (_p, s) in now.items() if n != "store-eu-west-1-1")
        # eu-west-1 still serves through its other store (404: no such profile, but served)
        assert [_get_eu(edge_port) for _ in range(6)] == [404] * 6
        # restart it from another shell: same port, ready when the command returns
        done = _stack_command(edge_port, "restart", "store-eu-west-1-1")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "restarted" in done.stdout
        after = _status(edge_port)
        assert after["store-eu-west-1-1"][1] == "running"
        assert after["store-eu-west-1-1"][0] != before["store-eu-west-1-1"][0]
        # stop / restart on request are not reported as deaths; unknown names are refused
        assert _stack_command(edge_port, "stop", "eu-west-1-2").returncode == 0
        assert _status(edge_port)["store-eu-west-1-2"][1].startswith("exited")
        assert _stack_command(edge_port, "restart", "eu-west-1-2").returncode == 0
        bad = _stack_command(edge_port, "restart", "store-mars-1-1")
        assert bad.returncode == 1 and "no such process" in bad.stdout
        assert len([line for line in stderr.read_text().splitlines() if "exited" in line]) == 1
        _wait("eu served by both again", lambda: _get_eu(edge_port) == 404, 10)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    assert code == 0
    assert processes_mentioning(str(workdir)) == []
    assert _stack_command(edge_port, "status").returncode == 2  # no stack any more
