"""Region pools: the instances of each region, their health, and one connection pool each.

An instance is *available* when its last active health check (``GET /readyz``) passed and it
is not passively ejected. Passive ejection counts only the instance's OWN failures:

* a refused connect ejects at once (nothing listens there); a connect that timed out too,
  except the region's last available instance: a pause of this edge's own loop (a long
  garbage collection, a saturated core) looks the same, and it ejected a lone live instance;
* ``eject_consecutive_5xx`` own failures in a row eject it: its 5xx answers, resets and
  broken answers, and read timeouts it had the whole ``read_timeout_s`` for;
* a dependency error it reports is not its failure and counts neither way: a 503 that says
  its DynamoDB or key service is unavailable (``{"error": "dynamodb_unavailable"}`` or
  ``key_service_unavailable``) or any 503 with ``Retry-After`` -- what ``profile_store.errors``
  sends for every dependency it waits on. Counting them ejected a region's only live instance
  over and over after its DynamoDB came back, on late answers of requests queued meanwhile.
* the repeated-failure rule never ejects the last available instance of a region: ejection
  moves traffic to a sibling, and with none it would only turn answers into refusals; the
  active health check is the judge of a lone instance.

Health checks and ejection agree within one interval: an ejected instance whose next health
check (one that started after the ejection) passes is readmitted then, without waiting out
``eject_cooldown_s``; the cool-down bounds an ejection only when no check says otherwise.

Each instance owns one ``wire.ConnectionPool`` capped at ``upstream_pool_limit``
sockets: the cap is per upstream, a slow instance cannot starve the others of sockets, and
connections are reused across requests. Health probes are off the hot path and use one small
``aiohttp.ClientSession`` for all instances; the same loop closes pooled sockets idle for
longer than ``Timeouts.idle``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

import aiohttp
from yarl import URL

from residency_contract.protocol import DEPENDENCY_ERRORS

from .config import EdgeSettings, InstanceSettings
from .errors import ConnectFailed, ConnectTimedOut
from .metrics import EdgeMetrics
from .wire import ConnectionPool

log = logging.getLogger("edge_router.upstream")



def reports_dependency(status: int, block: str, body: bytes) -> bool:
    """Is this answer a dependency error the instance reports rather than its own failure?
    A 503 with ``Retry-After`` (every dependency 503 of the store carries one), or a 503 whose
    JSON ``error`` names a dependency. ``block``: the answer's header lines (``headers.Block``);
    ``body``: the whole body when it was read whole, else b"" (then the header decides)."""
    if status != 503:
        return False
    if "\r\nretry-after:" in block.lower():
        return True
    if not body or len(body) > 4096:
        return False
    try:
        code = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return False
    return code in DEPENDENCY_ERRORS


class Instance:
    __slots__ = (
        "_gauge",
        "base",
        "consecutive_failures",
        "ejected_at",
        "ejected_until",
        "healthy",
        "host_line",
        "name",
        "outstanding",
        "pool",
        "probe_failures",
        "probed_ok",
        "readyz",
        "region",
        "spared",
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
        self.ejected_at = 0.0
        self.ejected_until = 0.0
        self.consecutive_failures = 0  # own failures in a row (see the module docstring)
        # Health probes failed in a row; before any probe has passed, the first failure is
        # enough (an instance dead at start is down at once).
        self.probe_failures = 0
        self.probed_ok = False
        self.spared = False  # not ejected as its region's last available instance (logged once)
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
                timeouts=s.timeouts,
            )
            inst._gauge = self.metrics.upstream_healthy.labels(inst.region, inst.name)
        self._probe_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=s.timeouts.idle),
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
        started = self.clock()
        ok = False
        try:
            async with self._probe_session.get(
                inst.readyz, timeout=self._health_timeout, allow_redirects=False
            ) as resp:
                ok = resp.status == 200
                await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError):
            ok = False
        inst.probe_failures = 0 if ok else inst.probe_failures + 1
        inst.probed_ok = inst.probed_ok or ok
        threshold = self.settings.health_failures_to_down if inst.probed_ok else 1
        if not ok and inst.healthy and inst.probe_failures < threshold:
            return  # a failed probe of an instance that was up: the next ones decide
        if ok != inst.healthy:
            log.warning(
                "instance %s in %s is now %s", inst.name, inst.region, "up" if ok else "down"
            )
        inst.healthy = ok
        if ok and inst.ejected_until > self.clock() and inst.ejected_at <= started:
            # A check that began after the ejection passed: health and ejection agree now.
            inst.ejected_until = 0.0
            inst.consecutive_failures = 0
            log.warning("readmitting %s in %s: health check passed", inst.name, inst.region)

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

    def connect_failed(self, inst: Instance, exc: ConnectFailed) -> None:
        if isinstance(exc, ConnectTimedOut) and self._is_last(inst):
            self._spare(inst, "connect timeouts")
            return
        self._eject(inst, "connect failed")

    def answered(self, inst: Instance, status: int, block: str = "", body: bytes = b"") -> None:
        """An answer from ``inst``: ``block`` and ``body`` are looked at only for a 503."""
        if status < 500:
            inst.consecutive_failures = 0
            inst.spared = False
            return
        if status == 503 and reports_dependency(status, block, body):
            return  # its dependency failed, not the instance: neither a failure nor a success
        self.failed(inst, f"{status} answers")

    def failed(self, inst: Instance, what: str) -> None:
        """One of the instance's own failures (a 5xx of its own, a reset, a read timeout)."""
        inst.consecutive_failures += 1
        if inst.consecutive_failures < self.settings.eject_consecutive_5xx:
            return
        inst.consecutive_failures = 0
        if not inst.available(self.clock()):
            return
        if self._is_last(inst):
            self._spare(inst, f"repeated {what}")
            return
        self._eject(inst, f"repeated {what}")

    def _is_last(self, inst: Instance) -> bool:
        """Is ``inst`` its region's last available instance? Ejecting it would move no
        traffic, only turn answers into refusals: the health check judges it instead."""
        now = self.clock()
        return not any(o.available(now) for o in self.by_region[inst.region] if o is not inst)

    def _spare(self, inst: Instance, what: str) -> None:
        if not inst.spared:  # logged once, until an answer resets it
            inst.spared = True
            log.warning(
                "not ejecting %s in %s (%s): the region's last available instance",
                inst.name,
                inst.region,
                what,
            )

    def _eject(self, inst: Instance, why: str) -> None:
        now = self.clock()
        inst.ejected_at = now
        inst.ejected_until = now + self.settings.eject_cooldown_s
        inst.consecutive_failures = 0
        log.warning("ejecting %s in %s: %s", inst.name, inst.region, why)
        self.publish()

    def has_available(self) -> bool:
        now = self.clock()
        return any(i.available(now) for i in self.instances())
