"""``python -m bench --smoke`` end to end: real wrk, nginx, static upstreams and naive proxy.

Needs the Debian packages ``wrk`` and ``nginx-light`` (``apt-get install -y wrk nginx-light``);
skipped with that reason when they are missing. The edge row may say "edge not available".
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
APT_HINT = "apt-get install -y wrk nginx-light"


def _nginx() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
    )


@pytest.mark.timeout(150)
def test_smoke_run_writes_report_and_json(tmp_path: Path) -> None:
    missing = [
        name for name, found in (("wrk", shutil.which("wrk")), ("nginx", _nginx())) if not found
    ]
    if missing:
        print(f"bench smoke needs Debian packages: {APT_HINT}")
        pytest.skip(f"{', '.join(missing)} not installed ({APT_HINT})")

    out, js = tmp_path / "benchmarks.md", tmp_path / "latest.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "AWS_"))}
    argv = [sys.executable, "-m", "bench", "--smoke", "--out", str(out), "--json", str(js)]
    argv += ["--work-dir", str(tmp_path / "work")]
    proc = subprocess.Popen(
        argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the bench stops its children and writes what it has
        try:
            stdout, stderr = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        pytest.fail(f"python -m bench --smoke took over 120 s:\n{stdout[-3000:]}{stderr[-3000:]}")
    done = subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert out.is_file() and js.is_file(), done.stdout[-3000:]

    doc = json.loads(js.read_text())
    machine = doc["machine"]
    facts = {"nproc", "cpu_model", "kernel", "python", "python build", "nginx", "wrk"}
    assert facts <= machine.keys()
    assert machine["python build"].endswith(("libpython shared", "libpython static"))
    cases = doc["cases"]
    by_target: dict[str, list[dict]] = {}
    for c in cases:
        by_target.setdefault(c["target"], []).append(c)
    for target in ("direct", "nginx", "naive"):
        rows = by_target.get(target, [])
        assert rows, f"no {target} rows: {done.stdout[-3000:]}"
        for r in rows:
            assert r["status"] == "ok", r
            assert r["requests"] > 0 and r["rps"] > 0, r
            assert r["errors"] == 0, r
            assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"], r
            assert r["cpu_us_per_req"] is not None and r["rss_peak_mib"] > 0, r
            # user + sys is the total (rounding apart), and the cores add up to the machine's
            split = r["cpu_user_us_per_req"] + r["cpu_sys_us_per_req"]
            assert abs(split - r["cpu_us_per_req"]) <= 0.02 * r["cpu_us_per_req"] + 1, r
            # (a 1-s smoke window is 100 ticks a core: a few ticks of sampling apart)
            assert abs(sum(r["cores"].values()) - doc["machine"]["nproc"]) < 0.1, r
            assert r["cores"]["target"] > 0 and r["cores"]["load generator"] > 0, r
            if target != "direct":
                assert r["cores"]["upstreams"] > 0, r
    assert all(r["routing"] == "ok" for r in by_target["nginx"]), by_target["nginx"]
    # The edge is always reported: measured, or a clear skipped/error row.
    edge = by_target.get("edge", [])
    assert edge and all(r["status"] == "ok" or r["reason"] for r in edge), edge
    # The same pipeline on aiohttp.web's server (EDGE_LISTENER=web) is measured beside it,
    # routed like the production listener whenever the edge itself could be measured.
    web_rows = by_target.get("edge-web", [])
    assert web_rows and all(r["status"] == "ok" or r["reason"] for r in web_rows), web_rows
    if all(r["status"] == "ok" for r in edge):
        assert all(r["status"] == "ok" and r["errors"] == 0 for r in web_rows), web_rows
        assert all(r["routing"] == "ok" for r in web_rows), web_rows

    report = out.read_text()
    for needle in (
        "## Machine",
        "nginx",
        "wrk",
        "direct/w1/c1",
        "nginx/w1/c1",
        "naive/w1/c1",
        "## Targets",
        "Where the machine's cores went",
    ):
        assert needle in report
    # Nothing left running from this run (upstreams, nginx, proxies, wrk).
    leftovers = subprocess.run(
        ["pgrep", "-f", str(tmp_path / "work")], capture_output=True, text=True, check=False
    ).stdout.split()
    assert not leftovers, leftovers
