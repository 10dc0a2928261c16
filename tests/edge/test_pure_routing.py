"""Tier (a), pure decision tables (no I/O, no servers): where a request goes -- the instance
``decide`` picks inside the home region (never another region), when ``may_retry`` lets a failed
attempt go again, and which store answers report a failed dependency rather than the instance's
own failure.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from edge_router.errors import (
    ConnectFailed,
    ConnectionBroken,
    PoolTimeout,
    UpstreamFailed,
    UpstreamTimeout,
)
from edge_router.routing import Refusal, RouteDecision, decide, may_retry
from edge_router.upstream import reports_dependency

# The failures the pool raises, as routing.may_retry sees them.
CONNECT_FAILED = ConnectFailed("connect refused")  # nothing was sent
SEND_FAILED = ConnectionBroken("reset", answered=False)  # broke after (maybe) sending
UPSTREAM_5XX = UpstreamFailed("answered 503")  # a 502/503/504 status, body not forwarded yet
TIMED_OUT = UpstreamTimeout("silent")
POOL_TIMED_OUT = PoolTimeout("no free socket")


@dataclass
class Inst:
    name: str
    outstanding: int = 0
    up: bool = True

    def available(self, now: float) -> bool:
        return self.up


def pools(**regions: list[Inst]) -> dict[str, list[Inst]]:
    return {k.replace("_", "-"): v for k, v in regions.items()}


@pytest.mark.parametrize(
    ("state", "home", "tried", "tick", "expected"),
    [
        # least outstanding wins
        (
            pools(eu_west_1=[Inst("a", 3), Inst("b", 1)]),
            "eu-west-1",
            (),
            0,
            RouteDecision("eu-west-1", 1),
        ),
        # ties: round robin by tick
        (
            pools(eu_west_1=[Inst("a"), Inst("b")]),
            "eu-west-1",
            (),
            0,
            RouteDecision("eu-west-1", 0),
        ),
        (
            pools(eu_west_1=[Inst("a"), Inst("b")]),
            "eu-west-1",
            (),
            1,
            RouteDecision("eu-west-1", 1),
        ),
        # unhealthy skipped
        (
            pools(eu_west_1=[Inst("a", up=False), Inst("b", 9)]),
            "eu-west-1",
            (),
            0,
            RouteDecision("eu-west-1", 1),
        ),
        # tried skipped
        (
            pools(eu_west_1=[Inst("a"), Inst("b", 5)]),
            "eu-west-1",
            (0,),
            0,
            RouteDecision("eu-west-1", 1),
        ),
        # home down, other region up: refused, never routed elsewhere, fallback noted
        (
            pools(eu_west_1=[Inst("a", up=False)], us_east_1=[Inst("u")]),
            "eu-west-1",
            (),
            0,
            Refusal("eu-west-1", "region_unavailable", True),
        ),
        (
            pools(eu_west_1=[Inst("a", up=False)], us_east_1=[Inst("u", up=False)]),
            "eu-west-1",
            (),
            0,
            Refusal("eu-west-1", "region_unavailable", False),
        ),
        # all available instances already tried
        (
            pools(eu_west_1=[Inst("a")], us_east_1=[Inst("u")]),
            "eu-west-1",
            (0,),
            0,
            Refusal("eu-west-1", "instances_exhausted", False),
        ),
        # home region not configured on this edge
        (
            pools(us_east_1=[Inst("u")]),
            "eu-west-1",
            (),
            0,
            Refusal("eu-west-1", "region_not_configured", True),
        ),
    ],
)
def test_decide(state, home, tried, tick, expected) -> None:  # type: ignore[no-untyped-def]
    assert decide(home, state, 0.0, tried=tried, tick=tick) == expected


def test_decide_never_leaves_the_home_region() -> None:
    # Exhaustive over small pool states: a decision always names the home region.
    import itertools

    for eu_up, us_up in itertools.product(itertools.product([True, False], repeat=2), repeat=2):
        state = {
            "eu-west-1": [Inst("e0", up=eu_up[0]), Inst("e1", up=eu_up[1])],
            "us-east-1": [Inst("u0", up=us_up[0]), Inst("u1", up=us_up[1])],
        }
        for home in state:
            for tick in range(3):
                d = decide(home, state, 0.0, tick=tick)
                if isinstance(d, RouteDecision):
                    assert d.region == home
                    assert state[home][d.index].up
                else:
                    assert not any(i.up for i in state[home])


@pytest.mark.parametrize(
    ("method", "failure", "replayable", "attempt", "expected"),
    [
        ("GET", CONNECT_FAILED, True, 1, True),
        ("POST", CONNECT_FAILED, True, 1, True),  # nothing was sent
        ("POST", CONNECT_FAILED, False, 1, False),  # body stream already consumed
        ("POST", SEND_FAILED, True, 1, False),
        ("PATCH", UPSTREAM_5XX, True, 1, False),
        ("PUT", SEND_FAILED, True, 1, True),
        ("DELETE", UPSTREAM_5XX, True, 1, True),
        ("GET", UPSTREAM_5XX, True, 2, False),  # bounded
        ("GET", SEND_FAILED, False, 1, False),
        ("GET", TIMED_OUT, True, 1, False),
        ("GET", POOL_TIMED_OUT, True, 1, False),
    ],
)
def test_may_retry(
    method: str, failure: UpstreamFailed, replayable: bool, attempt: int, expected: bool
) -> None:
    assert (
        may_retry(method, failure, body_replayable=replayable, attempt=attempt, max_attempts=2)
        is expected
    )


@pytest.mark.parametrize(
    ("status", "block", "body", "dependency"),
    [
        (503, "\r\nRetry-After: 1", b'{"error":"dynamodb_unavailable"}', True),
        (503, "\r\nretry-after: 5\r\nContent-Type: application/json", b"", True),
        (503, "\r\nRetry-After: 1", b'{"error":"audit_unavailable"}', True),  # any, with R-A
        (503, "", b'{"error":"key_service_unavailable","message":"m"}', True),
        (503, "", b'{"error":"dynamodb_unavailable"}', True),
        (503, "", b'{"error":"overloaded"}', False),  # no Retry-After, not a dependency code
        (503, "", b"<html>busy</html>", False),
        (503, "", b"[1, 2]", False),
        (503, "\r\nX-Retry-After-Ish: 1", b"", False),
        (500, "\r\nRetry-After: 1", b'{"error":"dynamodb_unavailable"}', False),  # its own
        (502, "", b'{"error":"dynamodb_error"}', False),
        (504, "\r\nRetry-After: 1", b"", False),
        (200, "", b"", False),
    ],
)
def test_which_answers_report_a_dependency(
    status: int, block: str, body: bytes, dependency: bool
) -> None:
    assert reports_dependency(status, block, body) is dependency
