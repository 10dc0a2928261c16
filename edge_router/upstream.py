"""Region pools: the instances of each region, their health, and one connection pool each.

An instance is *available* when its last active health check (``GET /readyz``) passed and it
is not in a passive-ejection cool-down. Passive ejection happens at once on a connect failure
and after ``eject_consecutive_5xx`` 5xx answers in a row; a cool-down ends by time alone, so a
flapping instance is not put back by one lucky probe.

Each instance owns one ``upstream_conn.ConnectionPool`` capped at ``upstream_pool_limit``
sockets: the cap is per upstream, a slow instance cannot starve the others of sockets, and
connections are reused across requests. Health probes are off the hot path and use one small
``aiohttp.ClientSession`` for all instances; the same loop closes pooled sockets idle for
longer than ``IDLE_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import aiohttp
from yarl import URL

from .config import EdgeSettings, InstanceSettings
from .metrics import EdgeMetrics
from .upstream_conn import ConnectionPool

log = logging.getLogger("edge_router.upstream")

# Idle keep-alive sockets are closed after this; well under aiohttp's server default (75 s), so
# the store rarely closes a socket we are about to reuse.
IDLE_TIMEOUT_S = 30.0


class Instance:
    __slots__ = (
        "_gauge",
        "base",
        "consecutive_5xx",
        "ejected_until",
        "healthy",
        "host_line",
        "name",
        "outstanding",
        "pool",
        "readyz",
        "region",
    )

    def __init__(self, region: str, spec: InstanceSettings) -> None:
        self.region = region
        self.name = spec.name
        self.base = spec.url  # "http://host:port"; the raw target is appended verbatim
        self.readyz = URL(spec.url + "/readyz", encoded=True)
        url = URL(spec.url)
        host = url.raw_host or "127.0.0.1"
        authority = host if url.port == 80 else f"{host}:{url.port}"
        self.host_line = f"Host: {authority}\r\n".encode("ascii")  # what aiohttp would send
        self.pool: ConnectionPool | None = None
        self.outstanding = 0
        self.healthy = True
        self.ejected_until = 0.0
        self.consecutive_5xx = 0
        self._gauge = None

    def available(self, now: float) -> bool:
        return self.healthy and now >= self.ejected_until


class Pools:
    """All regions' instances; also the health checker and the passive-ejection bookkeeping."""

    def __init__(
        self,
        settings: EdgeSettings,
        metrics: EdgeMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.by_region: dict[str, list[Instance]] = {
            r.name: [Instance(r.name, spec) for spec in r.instances] for r in settings.regions
        }
        self._task: asyncio.Task[None] | None = None
        self._probe_session: aiohttp.ClientSession | None = None
        self._health_timeout = aiohttp.ClientTimeout(
            total=settings.health_timeout_s, sock_connect=settings.health_timeout_s
        )

    def instances(self) -> list[Instance]:
        return [i for pool in self.by_region.values() for i in pool]

    async def start(self) -> None:
        s = self.settings
        for inst in self.instances():
            url = URL(inst.base)
            inst.pool = ConnectionPool(
                url.raw_host or "127.0.0.1",
                url.port or 80,
                limit=s.upstream_pool_limit,
                connect_timeout_s=s.connect_timeout_s,
                idle_timeout_s=IDLE_TIMEOUT_S,
            )
            inst._gauge = self.metrics.upstream_healthy.labels(inst.region, inst.name)
        self._probe_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=IDLE_TIMEOUT_S),
            timeout=self._health_timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        # One probe round before serving, so the first requests see real health.
        await self.check_all()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for inst in self.instances():
            if inst.pool is not None:
                inst.pool.close()
        if self._probe_session is not None:
            await self._probe_session.close()
            self._probe_session = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_interval_s)
            try:
                await self.check_all()
                now = asyncio.get_running_loop().time()
                for inst in self.instances():
                    if inst.pool is not None:
                        inst.pool.close_idle(now)
            except asyncio.CancelledError:
                raise
            except Exception:  # the checker must never die
                log.exception("health check round failed")

    async def check_all(self) -> None:
        await asyncio.gather(*(self._probe(i) for i in self.instances()))
        self.publish()

    async def _probe(self, inst: Instance) -> None:
        assert self._probe_session is not None
        ok = False
        try:
            async with self._probe_session.get(
                inst.readyz, timeout=self._health_timeout, allow_redirects=False
            ) as resp:
                ok = resp.status == 200
                await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError):
            ok = False
        if ok != inst.healthy:
            log.warning(
                "instance %s in %s is now %s", inst.name, inst.region, "up" if ok else "down"
            )
        inst.healthy = ok

    def publish(self) -> None:
        """Push availability to the gauges (also called after passive state changes)."""
        now = self.clock()
        for region, pool in self.by_region.items():
            up = 0
            for inst in pool:
                a = inst.available(now)
                up += a
                if inst._gauge is not None:
                    inst._gauge.set(1 if a else 0)
            self.metrics.region_healthy.labels(region).set(up)

    # -- passive signals from the proxy ------------------------------------------------------

    def connect_failed(self, inst: Instance) -> None:
        inst.ejected_until = self.clock() + self.settings.eject_cooldown_s
        log.warning("ejecting %s in %s: connect failed", inst.name, inst.region)
        self.publish()

    def answered(self, inst: Instance, status: int) -> None:
        if status < 500:
            inst.consecutive_5xx = 0
            return
        inst.consecutive_5xx += 1
        if inst.consecutive_5xx >= self.settings.eject_consecutive_5xx:
            inst.consecutive_5xx = 0
            inst.ejected_until = self.clock() + self.settings.eject_cooldown_s
            log.warning("ejecting %s in %s: repeated 5xx", inst.name, inst.region)
            self.publish()

    def has_available(self) -> bool:
        now = self.clock()
        return any(i.available(now) for i in self.instances())
