"""The edge's per-request CPU without sockets: ``python -m bench.hotpath``.

wrk figures mix the edge's own work with the kernel (four loopback syscalls per request), the
load generator and the upstreams sharing the cores. This drives the real pipeline -- the
production listener protocol, every policy step, the signer, the upstream pool and aiohttp's C
parsers -- on one event loop with in-memory transports: a request's bytes go into
``EdgeProtocol.data_received``; the bytes the edge writes to its upstream are answered, on the
next loop turn, with a fixed response fed to ``UpstreamConnection.data_received``; the answer
the edge writes back is checked. The figure (process CPU time / requests, one request in flight)
is repeatable to a few per cent, so a hot-path change can be judged in seconds. It is a
development aid beside ``python -m bench``, not a replacement for it: no syscalls, no epoll.

``--instructions`` counts instead of timing: the same run twice under valgrind's callgrind,
with a small and a large number of measured requests after the same warm-up, and the
difference in instructions executed divided by the difference in requests (start-up, imports
and warm-up cancel out). The count does not drift with the machine's speed or load, so two
versions of the hot path can be compared at any hour to a fraction of a per cent; it takes
about a minute and a half. (Under valgrind the edge's once-a-second chores, such as flushing
metric tallies, fall every few dozen requests instead of every few thousand: a few hundred
instructions per request at most.)

``--auth token`` sends a ``VtexIdclientAutCookie`` user token (ES256, the demo issuer's kind of
key) instead of the app key pair; ``--auth both`` measures the two in alternating rounds of one
run and prints the token's cost over the key's (issue 18's bound: at most +10 %).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.static_upstream import build_response
from edge_router.app import STATE, create_app
from edge_router.config import EdgeSettings, InstanceSettings, IssuerSettings, RegionSettings
from edge_router.registry import AccountRecord, ApiKey, KeyOwner, UserGrant, token_hash, user_hash
from edge_router.wire import (
    ConnectionPool,
    EdgeProtocol,
    EdgeRunner,
    EdgeServer,
    UpstreamConnection,
)
from residency_dev.token_issuer import DEMO_AUDIENCE, DEMO_ISSUER, issue, load_key, make_demo_keys

REGIONS = ("us-east-1", "eu-west-1")
PATH = "/api/storage/profile-system/profiles/7f3c2a10-0000-4000-8000-00000000000{}"
USER_ID = "3a2b1c0d-0000-4000-8000-0000000be4c4"
USER_EMAIL = "bench.user@example.com"


class MemoryTransport(asyncio.Transport):
    """Collects writes; ``on_write`` sees each one."""

    def __init__(self, on_write: Callable[[bytes], None]) -> None:
        super().__init__()
        self._on_write = on_write
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._on_write(bytes(data))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def abort(self) -> None:
        self._closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_reading(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return 0


class _Registry:
    def __init__(self) -> None:
        self.accounts: dict[str, AccountRecord] = {}
        for i, region in enumerate(REGIONS, 1):
            name = f"acme-{i}"
            key = ApiKey(f"key-{i}", token_hash(f"token-{i}"), frozenset({"read"}), True)
            users = {user_hash(USER_EMAIL): UserGrant(frozenset({"read"}), True)}
            self.accounts[name] = AccountRecord(name, region, "active", {key.app_key: key}, users)

    async def get_account(self, name: str) -> AccountRecord | None:
        return self.accounts.get(name)

    async def get_key_owner(self, app_key: str) -> KeyOwner | None:
        return None


def _settings(upstream_url: str, jwks_file: Path) -> EdgeSettings:
    regions = tuple(
        RegionSettings(
            name=r,
            instances=(InstanceSettings(name=f"{r}-0", url=upstream_url),),
            assertion_secret=f"hotpath-secret-{r}".encode(),
            table=f"profiles-{r}",
        )
        for r in REGIONS
    )
    s = EdgeSettings(
        regions=regions,
        host_suffixes=("localhost",),
        health_interval_s=3600.0,
        access_log=False,
        rate_limit_rps=1e9,
        rate_limit_burst=10**9,
        token_issuers=(
            IssuerSettings("bench", DEMO_ISSUER, (DEMO_AUDIENCE,), jwks_file=str(jwks_file)),
        ),
    )
    s.validate()
    return s


async def _health_upstream() -> tuple[web.AppRunner, str]:
    """A real /readyz for the edge's start-up probe; proxied traffic never reaches it."""

    async def readyz(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


class _Served:
    """The edge's protocol factory, and its app (for its state)."""

    def __init__(self, runner: EdgeRunner, user_tokens: list[str]) -> None:
        self.app = runner.app
        self.user_tokens = user_tokens  # one per account (acme-1, acme-2)
        self.factory: EdgeServer = runner.server  # type: ignore[assignment]

    def __call__(self) -> EdgeProtocol:
        return self.factory()


@asynccontextmanager
async def edge_server() -> AsyncIterator[_Served]:
    health, url = await _health_upstream()
    registry = _Registry()

    @asynccontextmanager
    async def factory(_s: EdgeSettings) -> AsyncIterator[_Registry]:
        yield registry

    with tempfile.TemporaryDirectory(prefix="hotpath-issuer-") as tmp:
        key_file, jwks_file = make_demo_keys(Path(tmp), "ES256")
        key = load_key(key_file)
        tokens = [
            issue(key, account=f"acme-{i}", user=USER_ID, email=USER_EMAIL, ttl_s=3600)
            for i in (1, 2)
        ]
        app = create_app(_settings(url, jwks_file), registry_factory=factory)  # type: ignore[arg-type]
        runner = EdgeRunner(app)
        await runner.setup()
        try:
            yield _Served(runner, tokens)
        finally:
            await runner.cleanup()
            await health.cleanup()


def _plug_upstreams(server: _Served, loop: asyncio.AbstractEventLoop) -> None:
    """Replace each pool's sockets by one in-memory connection that answers every request."""
    for instances in server.app[STATE].pools.by_region.values():
        for inst in instances:
            pool: ConnectionPool = inst.pool  # type: ignore[assignment]
            conn = UpstreamConnection(loop, pool.timeouts.read, pool.lost)
            answer = build_response(inst.region)

            def on_write(
                _data: bytes, conn: UpstreamConnection = conn, answer: bytes = answer
            ) -> None:
                loop.call_soon(conn.data_received, answer)

            conn.connection_made(MemoryTransport(on_write))
            pool._conns.add(conn)
            pool._open += 1
            pool._idle.append(conn)


async def measure(requests: int, warmup: int | None = None, auth: str = "key") -> dict[str, float]:
    loop = asyncio.get_running_loop()
    async with edge_server() as server:
        _plug_upstreams(server, loop)
        done: list[asyncio.Future[bytes]] = []

        def on_client_write(data: bytes) -> None:
            fut = done.pop()
            fut.set_result(data)

        proto: EdgeProtocol = server()
        proto.connection_made(MemoryTransport(on_client_write))

        def credentials(i: int) -> str:
            if auth == "token":
                return f"VtexIdclientAutCookie: {server.user_tokens[i - 1]}\r\n"
            return f"X-VTEX-API-AppKey: key-{i}\r\nX-VTEX-API-AppToken: token-{i}\r\n"

        reqs = [
            (
                f"GET {PATH.format(i)} HTTP/1.1\r\nHost: acme-{i}.localhost\r\n"
                f"{credentials(i)}User-Agent: hotpath\r\nAccept: */*\r\n\r\n"
            ).encode()
            for i in (1, 2)
        ]

        async def one(i: int) -> None:
            fut = loop.create_future()
            done.append(fut)
            proto.data_received(reqs[i & 1])
            answer = await fut  # bounded by the timeout around the whole run
            if not answer.startswith(b"HTTP/1.1 200 "):
                raise SystemExit(f"unexpected answer: {answer[:200]!r}")

        # One bound for the whole run (a timer per request would be measured too): an edge
        # that stops answering fails the run instead of hanging it.
        async with asyncio.timeout(60 + requests / 1000):
            for i in range(min(2000, requests) if warmup is None else warmup):
                await one(i)
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(requests):
                await one(i)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        proto.connection_lost(None)
    return {"requests": requests, "cpu_us_per_req": cpu / requests * 1e6, "wall_s": wall}


def best_of(rounds: int, requests: int, warmup: int | None, auths: list[str]) -> dict[str, float]:
    """µs CPU/request, best round of each ``auth``; the kinds alternate round by round so a
    machine's drift falls on both alike."""
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:
        factory = None
    best: dict[str, float] = {}
    for _ in range(rounds):
        for auth in auths:
            with asyncio.Runner(loop_factory=factory) as runner:
                r = runner.run(measure(requests, warmup, auth))
            print(f"{auth:>5}: {r['requests']} requests: {r['cpu_us_per_req']:.1f} µs CPU/request")
            best[auth] = min(best.get(auth, float("inf")), r["cpu_us_per_req"])
    return best


_COLLECTED = re.compile(rb"^==\d+== Collected : (\d+)$", re.MULTILINE)


def collected_instructions(valgrind_stderr: bytes) -> int:
    """The total from callgrind's closing summary ("==PID== Collected : N")."""
    m = _COLLECTED.search(valgrind_stderr)
    if m is None:
        raise RuntimeError("no 'Collected :' line in valgrind's output")
    return int(m.group(1))


def per_request(small: tuple[int, int], large: tuple[int, int]) -> float:
    """Instructions per request from two (requests, instructions) runs that differ only in the
    number of measured requests."""
    (n1, i1), (n2, i2) = small, large
    if n2 <= n1:
        raise ValueError("the large run must measure more requests than the small one")
    return (i2 - i1) / (n2 - n1)


def count_instructions(small: int, large: int, warmup: int, timeout_s: float = 900.0) -> float:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--instructions needs valgrind (Debian package 'valgrind')")
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # same dict probing in both runs
    runs = []
    for n in (small, large):
        cmd = [
            valgrind,
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",  # only the total is wanted: it is in stderr
            sys.executable,
            "-m",
            "bench.hotpath",
            "--requests",
            str(n),
            "--warmup",
            str(warmup),
            "--rounds",
            "1",
        ]
        done = subprocess.run(cmd, capture_output=True, env=env, timeout=timeout_s)
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace")[-2000:]
            raise SystemExit(f"the run under valgrind failed ({done.returncode}):\n{tail}")
        runs.append((n, collected_instructions(done.stderr)))
        print(f"{n} requests after {warmup} warm-up: {runs[-1][1]:,} instructions in all")
    return per_request(runs[0], runs[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=3, help="report the best of this many rounds")
    p.add_argument(
        "--warmup", type=int, default=None, help="unmeasured requests first (default 2,000)"
    )
    p.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per request under callgrind instead of timing (~1.5 min)",
    )
    p.add_argument(
        "--auth",
        choices=["key", "token", "both"],
        default="key",
        help="credential sent: app key + token, a user token, or both in alternating rounds",
    )
    args = p.parse_args()
    if args.instructions:
        small, large = 500, 2500
        per = count_instructions(small, large, 500 if args.warmup is None else args.warmup)
        print(f"{per:,.0f} instructions/request (callgrind, runs of {large} - {small} requests)")
        return
    auths = ["key", "token"] if args.auth == "both" else [args.auth]
    best = best_of(args.rounds, args.requests, args.warmup, auths)
    for auth, us in best.items():
        print(f"best ({auth}): {us:.1f} µs CPU/request (in-memory transports)")
    if len(best) == 2:
        print(f"user token over app key: {(best['token'] / best['key'] - 1) * 100:+.1f} %")


if __name__ == "__main__":
    main()
