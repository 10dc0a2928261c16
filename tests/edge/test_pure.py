"""Tier (a): pure decision tables -- no I/O, no servers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from edge_router import api_paths
from edge_router.config import ConfigError, EdgeSettings
from edge_router.errors import (
    BadRequest,
    ConnectFailed,
    ConnectionBroken,
    NotFound,
    PoolTimeout,
    UpstreamFailed,
    UpstreamTimeout,
)
from edge_router.headers import (
    connection_tokens,
    downstream_response_block,
    split_line,
    to_block,
    upstream_request_items,
)
from edge_router.ratelimit import RateLimiter, TokenBucket
from edge_router.resolve import AccountResolver
from edge_router.routing import Refusal, RouteDecision, decide, may_retry
from edge_router.upstream import reports_dependency
from edge_router.wire import origin_form

# The failures the pool raises, as routing.may_retry sees them.
CONNECT_FAILED = ConnectFailed("connect refused")  # nothing was sent
SEND_FAILED = ConnectionBroken("reset", answered=False)  # broke after (maybe) sending
UPSTREAM_5XX = UpstreamFailed("answered 503")  # a 502/503/504 status, body not forwarded yet
TIMED_OUT = UpstreamTimeout("silent")
POOL_TIMED_OUT = PoolTimeout("no free socket")


def upstream_request_headers(
    incoming: CIMultiDictProxy[str] | CIMultiDict[str], **kwargs: Any
) -> CIMultiDict[str]:
    """``upstream_request_items`` as a multidict, to look headers up by name."""
    return CIMultiDict(upstream_request_items(incoming, **kwargs))


def downstream_response_headers(
    upstream: CIMultiDictProxy[str] | CIMultiDict[str], *, request_id: str, region: str, via: str
) -> CIMultiDict[str]:
    """``downstream_response_block`` of a store's headers, as a multidict."""
    block = downstream_response_block(
        to_block(upstream.items()),
        connection_tokens(upstream),
        request_id=request_id,
        region=region,
        via=via,
    )
    return CIMultiDict(split_line(line) for line in block.split("\r\n")[1:])


RESOLVER = AccountResolver(["vtexcommercestable.com.br", "localhost"])


@pytest.mark.parametrize(
    ("host", "an", "expected"),
    [
        ("acme.vtexcommercestable.com.br", [], "acme"),
        ("ACME.vtexcommercestable.com.br:443", [], "acme"),
        ("acme.localhost:8080", [], "acme"),
        ("acme.localhost.", [], "acme"),
        ("api.vtex.com", ["acme"], "acme"),
        ("127.0.0.1:8080", ["acme-2"], "acme-2"),
        ("localhost:8080", ["acme"], "acme"),
        ("acme.localhost", ["acme"], "acme"),
        (None, ["a"], "a"),
        ("[::1]:8080", ["acme"], "acme"),
        ("", ["acme"], "acme"),  # an empty Host: a valid, empty authority (RFC 9112 §3.2)
    ],
)
def test_account_resolution_accepts(host: str | None, an: list[str], expected: str) -> None:
    assert RESOLVER.resolve(host, an) == expected


@pytest.mark.parametrize(
    ("host", "an", "code"),
    [
        ("acme.localhost", ["other"], "ambiguous_account"),
        ("127.0.0.1", ["a", "b"], "ambiguous_account"),
        ("127.0.0.1", [], "missing_account"),
        (None, [], "missing_account"),
        ("localhost", [], "missing_account"),
        ("127.0.0.1", ["Acme"], "invalid_account"),
        ("127.0.0.1", ["-acme"], "invalid_account"),
        ("127.0.0.1", [""], "invalid_account"),
        ("127.0.0.1", ["a" * 64], "invalid_account"),
        ("127.0.0.1", ["ac_me"], "invalid_account"),
        ("a.b.localhost", [], "invalid_account"),
        ("-x.localhost", [], "invalid_account"),
        ("bad host", ["acme"], "invalid_host"),
        ("user@acme.localhost", [], "invalid_host"),
        ("acme.localhost/x", [], "invalid_host"),
        ("acme.localhost:80x", [], "invalid_host"),
        ("\u00e9.localhost", ["acme"], "invalid_host"),
    ],
)
def test_account_resolution_refuses(host: str | None, an: list[str], code: str) -> None:
    with pytest.raises(BadRequest) as err:
        RESOLVER.resolve(host, an)
    assert err.value.code == code
    assert err.value.status == 400


P = "/api/storage/profile-system"


@pytest.mark.parametrize(
    ("target", "template"),
    [
        (f"{P}/profiles", f"{P}/profiles"),
        (f"{P}/profiles?an=x", f"{P}/profiles"),
        (f"{P}/profiles/jane%40example.com?alternativeKey=email", f"{P}/profiles/{{profileId}}"),
        (f"{P}/profiles/abc/unmask?reason=x", f"{P}/profiles/{{profileId}}/unmask"),
        (f"{P}/profiles/abc/addresses/unmask", f"{P}/profiles/{{profileId}}/addresses/unmask"),
        (
            f"{P}/profiles/a/addresses/b/versions/c/unmask",
            f"{P}/profiles/{{profileId}}/addresses/{{addressId}}/versions/{{addressVersionId}}/unmask",
        ),
        (f"{P}/prospects/unmask", f"{P}/prospects/unmask"),
        (f"{P}/prospects/p1", f"{P}/prospects/{{prospectId}}"),
        (f"{P}/schemas/profileSystem/custom", f"{P}/schemas/profileSystem/custom"),
        ("/api/user-rights/createAndProcessDeleteUserData?an=x", api_paths.TEMPLATES[-1]),
        (f"{P}/unknown/thing", "other"),
        (f"{P}/profiles//unmask", "other"),
        (f"{P}/profiles/a/b/c/d/e/f/g", "other"),
    ],
)
def test_route_templates(target: str, template: str) -> None:
    table = api_paths.RouteTable()
    assert table.match(api_paths.split_target(target)) == template


@pytest.mark.parametrize(
    ("target", "exc", "code"),
    [
        (f"{P}/../admin", BadRequest, "invalid_path"),
        (f"{P}/profiles/%2e%2e/x", BadRequest, "invalid_path"),
        (f"{P}/profiles/%2E%2e", BadRequest, "invalid_path"),
        (f"{P}/profiles/.%2e/x", BadRequest, "invalid_path"),
        (f"{P}/./profiles", BadRequest, "invalid_path"),
        (f"{P}/profiles/a%2Fb", BadRequest, "invalid_path"),
        (f"{P}/profiles/a%5cb", BadRequest, "invalid_path"),
        (f"{P}/profiles/a\\b", BadRequest, "invalid_path"),
        ("http://evil/api/user-rights/x", BadRequest, "invalid_path"),
        ("//api/user-rights/x", BadRequest, "invalid_path"),
        (f"{P}/profiles#x", BadRequest, "invalid_path"),
        (f"{P}/profiles?an=acme#x", BadRequest, "invalid_path"),  # no fragment in a query either
        ("*", BadRequest, "invalid_path"),
        ("api.example.com:443", BadRequest, "invalid_path"),
        ("/api/other/profiles", NotFound, "not_found"),
        ("/", NotFound, "not_found"),
        ("/api/storage/profile-systemX/profiles", NotFound, "not_found"),
        ("/api/storage/profile-system", NotFound, "not_found"),
    ],
)
def test_path_policy_refuses(target: str, exc: type, code: str) -> None:
    with pytest.raises(exc) as err:
        api_paths.split_target(target)
    assert err.value.code == code


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (f"{P}/profiles?an=x", (f"{P}/profiles?an=x", None)),
        (f"http://acme.localhost{P}/profiles?an=x", (f"{P}/profiles?an=x", "acme.localhost")),
        ("http://acme.localhost:8080", ("/", "acme.localhost:8080")),
        ("api.example.com:443", ("api.example.com:443", None)),  # CONNECT: not absolute form
        ("*", ("*", None)),
    ],
)
def test_origin_form(target: str, expected: tuple[str, str | None]) -> None:
    assert origin_form(target, URL(target, encoded=True)) == expected


def test_forwarded_host_is_the_absolute_targets_authority() -> None:
    incoming = CIMultiDictProxy(CIMultiDict([("Host", "other.localhost")]))
    args = dict(request_id="rid-12345678", peer=None, scheme="http", via="e", assertion="a")
    assert upstream_request_headers(incoming, **args)["X-Forwarded-Host"] == "other.localhost"
    out = upstream_request_headers(incoming, host="acme.localhost", **args)
    assert out.getall("X-Forwarded-Host") == ["acme.localhost"]


def test_dots_inside_a_segment_are_fine() -> None:
    assert api_paths.split_target(f"{P}/profiles/jane.doe..x") == f"{P}/profiles/jane.doe..x"


def test_route_table_matches_the_specs() -> None:
    spec_dir = Path("/work/shared/spec")
    if not spec_dir.is_dir():
        pytest.skip("spec files not available on this machine")
    paths = set()
    for f in spec_dir.glob("*.openapi.json"):
        paths |= set(json.loads(f.read_text())["paths"])
    assert paths == set(api_paths.TEMPLATES)


def _proxy(h: dict[str, str] | list[tuple[str, str]]) -> CIMultiDictProxy[str]:
    items = h.items() if isinstance(h, dict) else h
    return CIMultiDictProxy(CIMultiDict(items))


def test_request_headers_drop_hop_by_hop_and_internal() -> None:
    incoming = _proxy(
        [
            ("Host", "acme.localhost:8080"),
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("X-Secret-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Trailer", "X-T"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "websocket"),
            ("Proxy-Authorization", "Basic x"),
            ("Proxy-Foo", "1"),
            ("Expect", "100-continue"),
            ("X-Residency-Assertion", "forged"),
            ("x-residency-anything", "forged"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Forwarded-Proto", "https"),
            ("X-Request-Id", "client-id-xyz"),
            ("Content-Encoding", "gzip"),
            ("Content-Length", "10"),
            ("traceparent", "00-abc-def-01"),
            ("Via", "1.0 upstream-lb"),
            ("Accept", "application/json"),
        ]
    )
    out = upstream_request_headers(
        incoming,
        request_id="rid-12345678",
        peer="127.0.0.9",
        scheme="http",
        via="edge",
        assertion="v1;signed",
    )
    names = {k.lower() for k in out}
    for dropped in (
        "connection",
        "x-secret-hop",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-foo",
        "expect",
        "x-residency-anything",
        "host",
    ):
        assert dropped not in names, dropped
    assert out.getall("X-Residency-Assertion") == ["v1;signed"]
    assert out["X-Forwarded-For"] == "10.0.0.1, 127.0.0.9"
    assert out["X-Forwarded-Proto"] == "http"
    assert out["X-Forwarded-Host"] == "acme.localhost:8080"
    assert out["X-Request-Id"] == "rid-12345678"
    assert out["Content-Encoding"] == "gzip"
    assert out["Content-Length"] == "10"
    assert out["traceparent"] == "00-abc-def-01"
    assert out["Via"] == "1.0 upstream-lb, 1.1 edge"
    assert out["Accept"] == "application/json"


def test_response_headers_drop_hop_by_hop_and_add_region() -> None:
    upstream = _proxy(
        [
            ("Connection", "close, X-Hop"),
            ("X-Hop", "1"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Encoding", "br"),
            ("Content-Type", "application/json"),
            ("X-Data-Region", "spoofed"),
        ]
    )
    out = downstream_response_headers(upstream, request_id="r" * 16, region="eu-west-1", via="e")
    assert "X-Hop" not in out and "Connection" not in out and "Transfer-Encoding" not in out
    assert out["Content-Encoding"] == "br"
    assert out.getall("X-Data-Region") == ["eu-west-1"]
    assert out["Via"] == "1.1 e"


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


def test_token_bucket() -> None:
    b = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [b.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take(0.0) == pytest.approx(0.5)
    assert b.take(0.5) == 0.0  # one token refilled
    assert b.take(0.5) > 0
    assert b.take(100.0) == 0.0  # refill is capped at burst
    assert b.tokens == pytest.approx(2.0)


def test_rate_limiter_is_per_account() -> None:
    rl = RateLimiter(rate=1.0, burst=1)
    assert rl.check("a", 0.0) == 0
    assert rl.check("a", 0.0) == 1
    assert rl.check("b", 0.0) == 0


def test_settings_from_toml_and_env(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        'port = 8081\nhost_suffixes = ["localhost", "vtexcommercestable.com.br"]\n'
        '[regions."eu-west-1"]\ninstances = ["http://127.0.0.1:8101", '
        '{name = "eu-b", url = "http://127.0.0.1:8102"}]\ntable = "profiles"\n'
    )
    env = {
        "EDGE_CONFIG": str(cfg),
        "EDGE_REGION_SECRET_EU_WEST_1": "x" * 20,
        "EDGE_CACHE_TTL_S": "9",
    }
    s = EdgeSettings.from_env(env)
    assert s.port == 8081 and s.cache_ttl_s == 9.0
    assert s.stale_while_revalidate_s is None  # unset: as long as stale_if_error_s
    assert (s.registry_breaker_failures, s.registry_breaker_open_s) == (3, 5.0)
    s3 = EdgeSettings.from_env(
        {**env, "EDGE_STALE_WHILE_REVALIDATE_S": "0", "EDGE_REGISTRY_BREAKER_OPEN_S": "2.5"}
    )
    assert (s3.stale_while_revalidate_s, s3.registry_breaker_open_s) == (0.0, 2.5)
    assert (s.registry_poll_interval_s, s.registry_change_overlap_s) == (0.25, 10.0)
    off = EdgeSettings.from_env({**env, "EDGE_REGISTRY_POLL_INTERVAL_S": "0"})
    assert off.registry_poll_interval_s == 0.0  # the change log is not read: TTL only
    eu = s.region("eu-west-1")
    assert eu is not None and [i.name for i in eu.instances] == ["127.0.0.1:8101", "eu-b"]
    assert eu.assertion_secret == b"x" * 20
    js = json.dumps(
        {"us-east-1": {"instances": ["http://h:1"], "table": "t-x", "assertion_secret": "y" * 16}}
    )
    s2 = EdgeSettings.from_env({"EDGE_REGIONS_JSON": js})
    assert [r.name for r in s2.regions] == ["us-east-1"]


S16 = "s" * 16


def _rj(**spec: object) -> dict[str, str]:
    return {"EDGE_REGIONS_JSON": json.dumps({"eu-west-1": spec})}


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({}, "regions"),
        ({"EDGE_REGIONS_JSON": "{"}, "EDGE_REGIONS_JSON"),
        ({"EDGE_REGIONS_JSON": '{"mars-1": {}}'}, "regions"),
        (_rj(instances=[], table="ttt"), "instances"),
        (_rj(instances=["ftp://x:1"], table="ttt", assertion_secret=S16), "instances[0]"),
        (_rj(instances=["http://x:1/p"], table="ttt", assertion_secret=S16), "path"),
        (_rj(instances=["http://x:1"], table="ttt"), "EDGE_REGION_SECRET_EU_WEST_1"),
        (_rj(instances=["http://x:1"], table="ttt", assertion_secret="short"), "assertion_secret"),
        (_rj(instances=["http://x:1"], assertion_secret=S16), "table"),
        ({"EDGE_PORT": "0"}, "EDGE_PORT"),
        ({"EDGE_MAX_BODY_BYTES": "abc"}, "EDGE_MAX_BODY_BYTES"),
        ({"EDGE_HOST_SUFFIXES": "bad host!"}, "EDGE_HOST_SUFFIXES"),
        ({"EDGE_BUFFER_BODY_BYTES": "999999999"}, "buffer_body_bytes"),
        ({"EDGE_STALE_WHILE_REVALIDATE_S": "-1"}, "EDGE_STALE_WHILE_REVALIDATE_S"),
        ({"EDGE_STALE_WHILE_REVALIDATE_S": "nan"}, "EDGE_STALE_WHILE_REVALIDATE_S"),
        (
            {"EDGE_STALE_WHILE_REVALIDATE_S": "400", "EDGE_STALE_IF_ERROR_S": "300"},
            "stale_while_revalidate_s",
        ),
        ({"EDGE_REGISTRY_BREAKER_FAILURES": "0"}, "EDGE_REGISTRY_BREAKER_FAILURES"),
        ({"EDGE_REGISTRY_BREAKER_OPEN_S": "0"}, "EDGE_REGISTRY_BREAKER_OPEN_S"),
        ({"EDGE_REGISTRY_MAX_ATTEMPTS": "0"}, "EDGE_REGISTRY_MAX_ATTEMPTS"),
        ({"EDGE_REGISTRY_WAIT_S": "0"}, "EDGE_REGISTRY_WAIT_S"),
        ({"EDGE_LISTENER": "uvicorn"}, "EDGE_LISTENER"),
        ({"EDGE_REGISTRY_POLL_INTERVAL_S": "-0.1"}, "EDGE_REGISTRY_POLL_INTERVAL_S"),
        ({"EDGE_REGISTRY_POLL_INTERVAL_S": "61"}, "EDGE_REGISTRY_POLL_INTERVAL_S"),
        ({"EDGE_REGISTRY_CHANGE_OVERLAP_S": "0.5"}, "EDGE_REGISTRY_CHANGE_OVERLAP_S"),
        (
            {"EDGE_REGISTRY_POLL_INTERVAL_S": "3", "EDGE_REGISTRY_CHANGE_OVERLAP_S": "5"},
            "EDGE_REGISTRY_CHANGE_OVERLAP_S",
        ),
        ({"EDGE_REGISTRY_POLL_MAX_BACKOFF_S": "0.1"}, "EDGE_REGISTRY_POLL_MAX_BACKOFF_S"),
    ],
)
def test_settings_refuse_bad_config(env: dict[str, str], fragment: str) -> None:
    base = (
        '{"eu-west-1": {"instances": ["http://x:1"], "table": "ttt", "assertion_secret": "%s"}}'
        % ("s" * 16)
    )
    if "EDGE_REGIONS_JSON" not in env and env:
        env = {**env, "EDGE_REGIONS_JSON": base}
    with pytest.raises(ConfigError) as err:
        EdgeSettings.from_env(env)
    assert fragment in str(err.value)
