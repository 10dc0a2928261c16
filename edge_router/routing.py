"""The routing decision, as pure functions: account's home region + pool state in, a decision out.

Residency is the one rule that outranks availability: a request goes to an instance of the
account's HOME region or nowhere. When the home region has no available instance the answer is
a ``Refusal`` -- never a fallback to another region, whatever a locality-aware balancer would
do. The refusal records whether another region *could* have served (``others_available``), so
the caller can count each fallback we refused (``edge_cross_region_refusals_total``).

Inside the home region: least outstanding requests among available instances not yet tried
for this request, round-robin among ties (``tick`` is a counter the caller advances).

``may_retry`` is the retry policy, over the failure as the pool raised it
(``errors.UpstreamFailed``): a failure before any byte was sent (``ConnectFailed``) may go to
another instance of the same region for any method; a timeout never (a slow region stays
slow); any other failure -- a broken connection, a 502/503/504 answer not yet relayed -- only
for idempotent methods whose body can be replayed; at most ``max_attempts`` in total.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from .errors import ConnectFailed, UpstreamFailed, UpstreamTimeout

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class InstanceView(Protocol):
    name: str
    outstanding: int

    def available(self, now: float) -> bool: ...


@dataclass(frozen=True, slots=True)
class RouteDecision:
    region: str
    index: int  # position of the chosen instance in the region's pool


@dataclass(frozen=True, slots=True)
class Refusal:
    region: str
    reason: str  # region_unavailable | region_not_configured | instances_exhausted
    others_available: bool


def decide(
    home_region: str,
    pools: Mapping[str, Sequence[InstanceView]],
    now: float,
    *,
    tried: Collection[int] = (),
    tick: int = 0,
) -> RouteDecision | Refusal:
    pool = pools.get(home_region)
    if pool is None:
        return Refusal(home_region, "region_not_configured", _others(pools, home_region, now))
    best: list[int] = []
    best_load = -1
    any_available = False
    for i, inst in enumerate(pool):
        if not inst.available(now):
            continue
        any_available = True
        if i in tried:
            continue
        load = inst.outstanding
        if not best or load < best_load:
            best, best_load = [i], load
        elif load == best_load:
            best.append(i)
    if best:
        return _decision(home_region, best[tick % len(best)])
    if any_available:
        return Refusal(home_region, "instances_exhausted", False)
    return unreachable(home_region, pools, now)


# Decisions are immutable and there are only (configured regions x instances) of them: one
# object each, instead of building a frozen dataclass per request.
_decisions: dict[tuple[str, int], RouteDecision] = {}


def _decision(region: str, index: int) -> RouteDecision:
    key = (region, index)
    found = _decisions.get(key)
    if found is None:
        found = _decisions[key] = RouteDecision(region, index)
    return found


def _others(pools: Mapping[str, Sequence[InstanceView]], home: str, now: float) -> bool:
    return any(
        inst.available(now) for region, pool in pools.items() if region != home for inst in pool
    )


def unreachable(
    home_region: str, pools: Mapping[str, Sequence[InstanceView]], now: float
) -> Refusal:
    """No instance of the region is available, or none of those left could be reached: it is
    down for this request."""
    return Refusal(home_region, "region_unavailable", _others(pools, home_region, now))


def may_retry(
    method: str,
    failure: UpstreamFailed,
    *,
    body_replayable: bool,
    attempt: int,
    max_attempts: int,
) -> bool:
    if attempt >= max_attempts:
        return False
    if isinstance(failure, ConnectFailed):
        return body_replayable
    if isinstance(failure, UpstreamTimeout):
        return False  # a slow region stays slow; do not double the wait
    return method in IDEMPOTENT and body_replayable
