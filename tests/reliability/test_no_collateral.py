"""Faults without collateral damage (issue 20): what is not broken keeps working at full speed.

* The registry's DynamoDB Local is SIGSTOPped for longer than the cache TTL under steady load
  of both regions' accounts: every request of a known account is still answered, with p99
  under 100 ms (no request waits for the registry); once the circuit breaker has opened, a
  request for an account the edge never saw is refused (503 ``registry_unavailable`` with
  ``Retry-After``) in under 50 ms; after SIGCONT the breaker closes by itself.
* eu-west-1's DynamoDB Local is SIGSTOPped for 8 s and continued under load: the stores answer
  503 ``dynamodb_unavailable`` for the requests they held when it stopped, which never ejects
  an instance; the region serves again within one health interval of the edge's health check
  seeing it up, with no refusal after that.

Figures go to the reliability summary (``STATS.figure``). Every wait polls against a deadline.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass, field

import pytest

from .conftest import STATS, Client, Load, Pii, poll
from .stack import ACCOUNT_OF, API, EDGE_OVERRIDES, ReliabilityStack, auth_headers
from .test_faults import create_profile

pytestmark = pytest.mark.slow

EU, US = "eu-west-1", "us-east-1"
# Per worker between requests: a steady load (~35 requests/s per worker; the drill
# ran ~14/s per region), not a flood whose own CPU use sets the tail on a shared 2-core box.
PACE_S = 0.02
OUTAGE_S = 8.0  # eu DynamoDB stopped: longer than the stores' DynamoDB timeouts (2 x 2 s)


@dataclass
class Sample:
    sent: float
    done: float
    status: int
    error: str | None

    @property
    def seconds(self) -> float:
        return self.done - self.sent


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


@dataclass
class TimedLoad:
    """GETs of one profile per region from ``workers`` clients each; every answer recorded."""

    client: Client
    targets: dict[str, str]
    workers: dict[str, int]
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def _worker(self, region: str) -> None:
        account = ACCOUNT_OF[region]
        path = f"{API}/profiles/{self.targets[region]}"
        out = self.samples.setdefault(region, [])
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                answer = await self.client.call(
                    "GET", path, headers=auth_headers(account), expect=(200, 503)
                )
                code = answer.body.get("error") if isinstance(answer.body, dict) else None
                out.append(Sample(sent, time.monotonic(), answer.status, code))
            except Exception as exc:  # recorded as a failure, never swallowed silently
                out.append(Sample(sent, time.monotonic(), 0, type(exc).__name__))
            await asyncio.sleep(PACE_S)

    def start(self) -> TimedLoad:
        for region in self.targets:
            for _ in range(self.workers[region]):
                self._tasks.append(asyncio.create_task(self._worker(region)))
        return self

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), 30)

    def between(self, region: str, t0: float, t1: float) -> list[Sample]:
        return [s for s in self.samples.get(region, []) if t0 <= s.sent < t1]


async def edge_metrics(client: Client, stack: ReliabilityStack) -> str:
    async with client.session.get(stack.admin_url + "/metrics") as resp:
        return await resp.text()


def metric(text: str, pattern: str) -> float:
    m = re.search(pattern + r" ([0-9.e+]+)", text)
    return float(m.group(1)) if m else 0.0


MISSES = r'edge_registry_lookups_total\{result="miss"\}'
STALE_AFTER_ERROR = r'edge_registry_stale_served_total\{lookup="account",reason="registry_error"\}'
BREAKER_OPEN = r'edge_registry_breaker_state\{state="open"\}'
BREAKER_CLOSED = r'edge_registry_breaker_state\{state="closed"\}'


async def test_registry_outage_stalls_nothing(
    stack: ReliabilityStack, client: Client, pii: Pii, load: Load
) -> None:
    assert stack.registry_ddb is not None
    targets = {EU: await create_profile(client, pii, EU), US: await create_profile(client, pii, US)}
    outage_s = 40.0 if load.long else 8.0
    assert outage_s > 4 * EDGE_OVERRIDES["cache_ttl_s"]
    timed = TimedLoad(client, targets, {EU: 2, US: 2}).start()
    refusals: list[tuple[float, Sample, dict[str, str]]] = []  # (breaker seen open?, ...)
    try:
        await poll(
            "load running",
            lambda: all(len(timed.samples.get(r, [])) >= 20 for r in (EU, US)),
            20,
        )
        t_base = time.monotonic()
        await asyncio.sleep(2.0)  # a measurement window: the same load before the fault
        STATS.fault(f"SIGSTOP the registry's DynamoDB Local for {outage_s:.0f} s under load")
        m_before = await edge_metrics(client, stack)
        t_stop = time.monotonic()
        stack.pause(stack.registry_ddb)
        try:
            t_open = 0.0
            while time.monotonic() < t_stop + outage_s:
                # a never-seen account, every time a new one: it has no cached answer at all
                unknown = f"never-seen-{uuid.uuid4().hex[:10]}"
                sent = time.monotonic()
                answer = await client.call(
                    "GET",
                    f"{API}/profiles/{targets[EU]}",
                    headers={**auth_headers(ACCOUNT_OF[EU]), "Host": f"{unknown}.localhost"},
                    expect=(503,),
                )
                code = answer.body.get("error") if isinstance(answer.body, dict) else None
                sample = Sample(sent, time.monotonic(), answer.status, code)
                refusals.append((t_open, sample, answer.headers))
                if not t_open and metric(await edge_metrics(client, stack), BREAKER_OPEN) == 1:
                    t_open = time.monotonic()
                await asyncio.sleep(0.05)
        finally:
            stack.resume(stack.registry_ddb)
        t_cont = time.monotonic()
        m_during = await edge_metrics(client, stack)
        # recovery: the half-open probe notices the registry is back, no restart needed
        await poll(
            "the breaker closes after the registry returns",
            lambda: _closed(client, stack),
            15,
            interval=0.1,
        )
        t_closed = time.monotonic()
        t_after = time.monotonic()
        await poll(
            "load after the recovery",
            lambda: all(len(timed.between(r, t_after, 1e18)) >= 10 for r in (EU, US)),
            20,
        )
    finally:
        await timed.stop()

    # No request waited for the registry, whatever the machine's noise: a request that waits
    # for a read counts a miss (the read answered) or a stale serve for a registry_error (it
    # failed); a never-seen account's wait is an error, counted apart.
    for name in (MISSES, STALE_AFTER_ERROR):
        assert metric(m_during, name) == metric(m_before, name), name
    # every request of a known account was answered, fast
    figures = []
    noise_p99 = 0.0
    for region in (EU, US):
        during = timed.between(region, t_stop, t_cont)
        base = timed.between(region, t_base, t_stop)
        assert len(during) >= 50, (region, len(during))
        bad = [s for s in during if s.status != 200]
        assert bad == [], (region, bad[:5])
        p99 = pct([s.seconds for s in during], 0.99)
        figures.append(
            f"{region} p50 {ms(pct([s.seconds for s in during], 0.5))} p99 {ms(p99)} "
            f"max {ms(max(s.seconds for s in during))} (n={len(during)}; before: p99 "
            f"{ms(pct([s.seconds for s in base], 0.99))})"
        )
        # The bound is the 100 ms, or twice the same load's p99 before the fault when
        # a loaded CI machine is itself slower than that: the fault must add nothing beyond the
        # machine's own noise (that no request waited is asserted above, timing-free).
        base_p99 = pct([s.seconds for s in base], 0.99)
        noise_p99 = max(noise_p99, base_p99)
        assert p99 < max(0.100, 2 * base_p99), (
            figures[-1],
            sorted(s.seconds for s in during)[-10:],
        )
    STATS.figure(f"registry DynamoDB stopped {outage_s:.0f} s, known accounts", "; ".join(figures))

    assert t_open, "the breaker never opened"
    assert all(s.status == 503 and s.error == "registry_unavailable" for _o, s, _h in refusals)
    assert all(int(h["Retry-After"]) >= 1 for _o, _s, h in refusals)
    before_open = [s.seconds for o, s, _h in refusals if not o]
    after_open = [s.seconds for o, s, _h in refusals if o]
    assert len(after_open) >= 20, len(after_open)
    STATS.figure(
        "registry DynamoDB stopped, unknown accounts refused (breaker open)",
        f"p50 {ms(pct(after_open, 0.5))} max {ms(max(after_open))} (n={len(after_open)}); "
        f"breaker open {t_open - t_stop:.1f} s after the stop; the {len(before_open)} sent "
        f"before that waited up to {ms(max(before_open, default=0.0))}; closed "
        f"{t_closed - t_cont:.1f} s after SIGCONT",
    )
    # p99 under 50 ms; and none near a registry wait (registry_wait_s): a CPU hiccup of the
    # shared machine may cost one refusal tens of ms (rarely ~100), waiting for the registry 500
    assert pct(after_open, 0.99) < max(0.050, noise_p99), sorted(after_open)[-5:]
    assert max(after_open) < EDGE_OVERRIDES["registry_wait_s"] * 0.8, sorted(after_open)[-5:]
    text = await edge_metrics(client, stack)
    assert (
        metric(text, r'edge_registry_stale_served_total\{lookup="account",reason="breaker_open"\}')
        > 0
    )

    # and the registry answers again: an unknown account is "no such account" now (polled:
    # the just-continued JVM may take longer than registry_wait_s for its first reads)
    async def unknown_is_404() -> bool:
        answer = await client.call(
            "GET",
            f"{API}/profiles/x",
            headers={**auth_headers(ACCOUNT_OF[EU]), "Host": "never-seen-account.localhost"},
            expect=(404, 503),
        )
        return answer.status == 404 and answer.body["error"] == "unknown_account"

    await poll("an unknown account is 404 again", unknown_is_404, 15, interval=0.1)


async def _eu_up(
    client: Client, stack: ReliabilityStack, into: list[tuple[float, float]] | None
) -> bool:
    """With ``into``: is an eu-west-1 instance healthy (recorded)? Without: are none?"""
    text = await edge_metrics(client, stack)
    up = metric(text, r'edge_region_healthy_instances\{region="eu-west-1"\}')
    if into is None:
        return up == 0
    into.append((time.monotonic(), up))
    return up >= 1


async def _closed(client: Client, stack: ReliabilityStack) -> bool:
    return metric(await edge_metrics(client, stack), BREAKER_CLOSED) == 1


async def test_store_dynamodb_recovers_without_ejections(
    stack: ReliabilityStack, client: Client, pii: Pii
) -> None:
    targets = {EU: await create_profile(client, pii, EU), US: await create_profile(client, pii, US)}
    log = stack.workdir / "edge.log"
    log_from = log.stat().st_size
    interval = EDGE_OVERRIDES["health_interval_s"]
    # enough eu clients that several requests are with each store when DynamoDB stops: their
    # 503 dynamodb_unavailable answers (once the stores' DynamoDB timeouts pass, ~4 s) are
    # what used to eject the region's instances
    timed = TimedLoad(client, targets, {EU: 8, US: 2}).start()
    verdicts: list[tuple[float, float]] = []  # (time, eu instances the edge calls healthy)
    try:
        await poll(
            "load running",
            lambda: all(len(timed.samples.get(r, [])) >= 20 for r in (EU, US)),
            20,
        )
        STATS.fault(
            f"SIGSTOP eu-west-1 DynamoDB Local for {OUTAGE_S:.0f} s under load, then SIGCONT"
        )
        t_stop = time.monotonic()
        stack.pause(stack.ddbs[EU])
        try:
            await poll(
                "edge sees eu-west-1 down",
                lambda: _eu_up(client, stack, into=None),
                10,
            )
            while time.monotonic() < t_stop + OUTAGE_S:
                await asyncio.sleep(0.05)  # the outage lasts; the load goes on
        finally:
            stack.resume(stack.ddbs[EU])
        t_cont = time.monotonic()

        await poll("edge sees eu-west-1 up", lambda: _eu_up(client, stack, into=verdicts), 30, 0.02)
        t_verdict = verdicts[-1][0]
        await poll(
            "eu answers after the recovery",
            lambda: sum(s.status == 200 for s in timed.between(EU, t_verdict, 1e18)) >= 20,
            20,
        )
        # a measurement window: late answers of requests queued during the outage arrive
        await asyncio.sleep(2 * EDGE_OVERRIDES["eject_cooldown_s"])
    finally:
        await timed.stop()
    eu = timed.samples[EU]
    late_503 = [s for s in eu if s.error == "dynamodb_unavailable"]
    first_ok = min(s.done for s in eu if s.status == 200 and s.sent >= t_cont)
    after = [s for s in eu if s.sent >= t_verdict]
    refused_after = [s for s in after if s.error == "region_unavailable"]
    lag = max(0.0, first_ok - t_verdict)
    STATS.figure(
        f"eu DynamoDB stopped {OUTAGE_S:.0f} s, recovery",
        f"edge saw eu up {t_verdict - t_cont:.2f} s after SIGCONT, first 200 {ms(lag)} later "
        f"(health interval {ms(interval)}); {len(late_503)} dependency 503s, "
        f"{len(refused_after)} region_unavailable after the edge saw it up",
    )
    assert late_503, "no store reported its DynamoDB down: the test did not test ejection"
    # the region serves within one health interval of the edge's health check saying so
    assert lag <= interval, (lag, interval)
    assert refused_after == [], refused_after[:5]
    # no ejection for what the stores reported about their DynamoDB
    text = log.read_bytes()[log_from:].decode(errors="replace")
    ejections = [line for line in text.splitlines() if "ejecting" in line]
    assert ejections == [], ejections[:5]
    assert [s for s in timed.samples[US] if s.status != 200] == []  # the other region untouched
