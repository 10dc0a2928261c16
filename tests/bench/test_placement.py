"""``--harness-cpus``: wrk and the static upstreams on some CPUs, the targets on the rest."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import proc
from bench.__main__ import main


def _cpu_set(kernel_list: str) -> set[int]:
    """ "0-2,5" -> {0, 1, 2, 5} (the kernel's Cpus_allowed_list)."""
    out: set[int] = set()
    for part in kernel_list.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


@pytest.fixture
def unplaced() -> Iterator[None]:
    yield
    proc.place(None)


def test_placement_refuses_sets_that_leave_a_side_empty(unplaced: None) -> None:
    allowed = os.sched_getaffinity(0)
    for bad in ([], sorted(allowed), [max(allowed) + 1]):
        with pytest.raises(ValueError, match="must be some, not all"):
            proc.place(bad)
    assert not proc.placed()


def test_cli_reports_a_bad_cpu_list(capsys: pytest.CaptureFixture[str], unplaced: None) -> None:
    assert main(["--smoke", "--harness-cpus", "4096"]) == 2
    assert "--harness-cpus" in capsys.readouterr().err


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to split")
def test_children_run_where_their_role_says(tmp_path: Path, unplaced: None) -> None:
    allowed = os.sched_getaffinity(0)
    harness = {max(allowed)}
    placement = proc.place(harness)
    assert placement == {proc.HARNESS: harness, proc.TARGET: allowed - harness}
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    upstream = proc.ManagedProcess("h", sleeper, tmp_path / "h.log", role=proc.HARNESS).start()
    target = proc.ManagedProcess("t", sleeper, tmp_path / "t.log").start()
    try:
        assert _cpu_set(proc.cpus_allowed(upstream.pid)) == harness
        assert _cpu_set(proc.cpus_allowed(target.pid)) == allowed - harness
        # wrk's way in: a short command run to completion
        done = proc.run_bounded(
            ["grep", "Cpus_allowed_list", "/proc/self/status"], timeout=10, role=proc.HARNESS
        )
        assert _cpu_set(done.stdout.split(":", 1)[1].strip()) == harness
    finally:
        upstream.stop(timeout=5)
        target.stop(timeout=5)
    proc.place(None)
    assert not proc.placed()
    free = proc.ManagedProcess("f", sleeper, tmp_path / "f.log").start()
    try:
        assert _cpu_set(proc.cpus_allowed(free.pid)) == allowed
    finally:
        free.stop(timeout=5)
