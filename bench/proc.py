"""Child processes that always stop, and what they cost (CPU time, peak RSS) read from /proc.

Every child runs in its own session (so its own process group): ``stop()`` signals the whole group,
waits (bounded), then SIGKILLs it. An ``atexit`` hook stops whatever is still running, so an
exception, Ctrl-C or SIGTERM in the bench never leaves nginx, an upstream or a proxy behind.

CPU and memory are measured over a process *tree*, identified by the session of its root (every
worker an nginx master or a proxy supervisor forks stays in that session).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
_LIVE: set[ManagedProcess] = set()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.25):
            return True
    except OSError:
        return False


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the bench dies, even by SIGKILL (Linux only)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # never block the start for this
        pass


# CPU placement by role (``place``): "harness" is the load generator and the static upstreams,
# "target" everything measured. None: wherever the scheduler puts them (the default).
HARNESS, TARGET = "harness", "target"
_PLACEMENT: dict[str, frozenset[int] | None] = {HARNESS: None, TARGET: None}


def place(harness_cpus: Iterable[int] | None) -> dict[str, frozenset[int] | None]:
    """Keep the harness on ``harness_cpus`` and the targets on the other CPUs this process may
    use (for a machine with cores to spare: the targets then do not share theirs with wrk and
    the upstreams). None undoes it. Raises ValueError for a set that leaves either side empty."""
    if harness_cpus is None:
        _PLACEMENT.update({HARNESS: None, TARGET: None})
        return dict(_PLACEMENT)
    allowed = frozenset(os.sched_getaffinity(0))
    harness = frozenset(harness_cpus)
    if not harness or not harness <= allowed or harness == allowed:
        raise ValueError(
            f"harness CPUs {sorted(harness)} must be some, not all, of the CPUs this process "
            f"may use ({sorted(allowed)})"
        )
    _PLACEMENT.update({HARNESS: harness, TARGET: allowed - harness})
    return dict(_PLACEMENT)


def placed() -> bool:
    return _PLACEMENT[HARNESS] is not None


def _child_setup(role: str) -> Callable[[], None]:
    cpus = _PLACEMENT[role]

    def setup() -> None:  # in the child before exec: inherited by whatever it forks
        _die_with_parent()
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    return setup


def cpus_allowed(pid: int) -> str:
    """The CPUs ``pid`` may run on, as the kernel lists them ("0-1", "2,3"); "" if gone."""
    for line in _status_lines(pid):
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    return ""


class ProcessFailed(RuntimeError):
    """A child exited early or did not become ready in time; the message quotes its log."""


@dataclass(eq=False)
class ManagedProcess:
    name: str
    argv: Sequence[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    role: str = TARGET  # CPU placement (``place``)
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_child_setup(self.role),
            )
        _LIVE.add(self)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""

    def wait_port(self, port: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                code = self.popen.returncode if self.popen else None
                raise ProcessFailed(
                    f"{self.name} exited with code {code} before listening on {port}: "
                    f"{self.log_tail()}"
                )
            if port_open(port):
                return
            time.sleep(0.05)
        raise ProcessFailed(
            f"{self.name} did not listen on {port} in {timeout}s: {self.log_tail()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        _LIVE.discard(self)
        if self.popen is None:
            return
        pgid = self.popen.pid  # start_new_session: the child leads its own group
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left in the group (workers of a killed master, or a stuck root): SIGKILL.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=timeout)


def stop_all() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            proc.stop(timeout=3.0)


atexit.register(stop_all)


def run_bounded(
    argv: Sequence[str], *, timeout: float, env: dict[str, str] | None = None, role: str = TARGET
) -> subprocess.CompletedProcess[str]:
    """Run a short command in its own process group; kill the whole group on timeout.
    ``role``: its CPU placement (``place``)."""
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        preexec_fn=_child_setup(role),
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise ProcessFailed(f"{argv[0]} timed out after {timeout}s: {err[-800:]}") from None
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def tool_version(exe: str | None, pattern: str) -> str:
    """What ``exe -v`` says its version is: ``pattern``'s first group in its output, else the
    output's first line; "not installed" when ``exe`` is None."""
    if exe is None:
        return "not installed"
    out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=10, check=False)
    text = out.stdout + out.stderr
    m = re.search(pattern, text)
    return m.group(1) if m else next(iter(text.strip().splitlines()), "")


# ---- /proc accounting -------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def session_members(root_pids: Iterable[int]) -> list[int]:
    """All live pids in the sessions led by ``root_pids`` (a child's whole tree, with workers)."""
    sessions = set()
    for pid in root_pids:
        f = _stat_fields(pid)
        if f is not None:
            sessions.add(int(f[3]))
    if not sessions:
        return []
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        f = _stat_fields(int(entry.name))
        if f is not None and int(f[3]) in sessions and f[0] != "Z":
            members.append(int(entry.name))
    return sorted(members)


def cpu_times(pids: Iterable[int]) -> dict[int, tuple[int, int]]:
    """(utime, stime) in clock ticks per pid; pids that vanished are left out."""
    out = {}
    for pid in pids:
        f = _stat_fields(pid)
        if f is not None:
            out[pid] = (int(f[11]), int(f[12]))
    return out


def cpu_ticks(pids: Iterable[int]) -> dict[int, int]:
    """utime+stime (clock ticks) per pid; pids that vanished are left out."""
    return {pid: user + system for pid, (user, system) in cpu_times(pids).items()}


def user_system_between(
    before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]
) -> tuple[float, float]:
    """User and system CPU seconds used between two ``cpu_times`` snapshots; as in
    ``cpu_seconds_between``, a process new in ``after`` counts from zero."""
    user = system = 0
    for pid, (u, s) in after.items():
        u0, s0 = before.get(pid, (0, 0))
        user += u - u0
        system += s - s0
    return max(user, 0) / CLK_TCK, max(system, 0) / CLK_TCK


# /proc/stat's first line, in its order (Linux >= 2.6.33); guest time is inside user already.
MACHINE_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def machine_ticks() -> dict[str, int]:
    """The whole machine's CPU time by kind (clock ticks, all cores) from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return {}
    return {k: int(v) for k, v in zip(MACHINE_FIELDS, first[1:], strict=False)}


def cpu_seconds_between(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU used between two snapshots; a process new in ``after`` counts from zero."""
    ticks = sum(t - before.get(pid, 0) for pid, t in after.items())
    return max(ticks, 0) / CLK_TCK


def _status_lines(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return []


def _status_kib(pid: int, key: str) -> int | None:
    for line in _status_lines(pid):
        if line.startswith(key + ":"):
            try:
                return int(line.split()[1])
            except (ValueError, IndexError):
                return None
    return None


def reset_peak_rss(pids: Iterable[int]) -> bool:
    """Reset VmHWM to the current RSS (``clear_refs`` value 5). False if the kernel refused."""
    ok = True
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def peak_rss_kib(pids: Iterable[int]) -> dict[int, int]:
    out = {}
    for pid in pids:
        v = _status_kib(pid, "VmHWM")
        if v is not None:
            out[pid] = v
    return out
