"""Start the things under test, each as a context manager that yields a ``Target`` and always stops.

- ``static_upstreams``: one ``bench.static_upstream`` process per region, each on its own port.
- ``direct``: the load goes straight to one static upstream (the ``us-east-1`` one).
- ``naive``: ``bench.naive_proxy`` (aiohttp, one ClientSession, no routing) to the us upstream.
- ``served``: a started process listening on a port, as a ``Target`` (nginx and the edge too).

nginx is in ``bench.nginx_target``, our edge in ``bench.edge_target``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.cases import Target, TargetUnavailable
from bench.proc import HARNESS, ManagedProcess, ProcessFailed, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent


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


@contextlib.contextmanager
def served(
    p: ManagedProcess,
    port: int,
    *,
    name: str,
    workers: int,
    routes: bool,
    description: str,
    start_timeout: float = 20.0,
    unavailable: Callable[[ProcessFailed], str] | None = None,
) -> Iterator[Target]:
    """Start ``p``, wait until it listens on ``port`` and yield it as a ``Target``; always stop it.

    ``unavailable``: the reason to raise as ``TargetUnavailable`` (its rows say "skipped") when
    the process does not start; without it the ``ProcessFailed`` goes on (rows say "error")."""
    try:
        try:
            p.start().wait_port(port, timeout=start_timeout)
        except ProcessFailed as exc:
            if unavailable is None:
                raise
            raise TargetUnavailable(unavailable(exc)) from exc
        yield Target(
            name=name,
            url=f"http://127.0.0.1:{port}",
            pids=lambda: [p.pid],
            workers=workers,
            routes=routes,
            description=description,
        )
    finally:
        p.stop()


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
    with served(
        p,
        port,
        name="naive",
        workers=workers,
        routes=False,
        description="bench/naive_proxy.py: aiohttp, one ClientSession, "
        f"no routing (everything to {region})",
    ) as target:
        yield target
