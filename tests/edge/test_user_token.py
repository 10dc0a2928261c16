"""User tokens (``VtexIdclientAutCookie``): real RS256/ES256 tokens made in the test.

Two tiers: the verifier alone (a JWK set file, no servers), and the real edge in front of fake
stores of both regions, which check the signed assertion the edge sends them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from edge_router import auth
from edge_router.admin import create_admin_app
from edge_router.app import create_app
from edge_router.config import ConfigError, EdgeSettings, IssuerSettings
from edge_router.errors import EdgeError, Forbidden, Unauthorized
from edge_router.headers import strip_token_cookies
from edge_router.registry import AccountRecord, UserGrant, user_hash
from edge_router.user_token import TokenVerifier, find_token

from .conftest import FakeRegistry, FakeStore, Key, make_settings
from .test_listener import EdgeTestServer
from .tokens import TestIssuer, b64json, json_answer, new_key, raw_get

P = "/api/storage/profile-system"
ISS_X = "https://id.example"
USER = "8f1c7a52-2f4e-4c1e-9d43-5b3c0c1d2e3f"
EMAIL = "ops.person@acme.example"
EU_KEY = Key("vtexappkey-acme-A1", "token-acme-0123456789", frozenset({"read", "write"}))
US_KEY = Key("vtexappkey-bolt-B1", "token-bolt-0123456789", frozenset({"read"}))


def settings_for(*issuers: IssuerSettings, **over: Any) -> EdgeSettings:
    over.setdefault("jwks_refresh_min_s", 0.0)
    return make_settings({"eu-west-1": ["http://127.0.0.1:1"]}, token_issuers=issuers, **over)


@pytest.fixture
def idp(tmp_path: Path) -> TestIssuer:
    issuer = TestIssuer(tmp_path / "jwks.json")
    issuer.add_key("rsa-1", "RS256")
    issuer.add_key("ec-1", "ES256")
    return issuer


async def started(settings: EdgeSettings, **kw: Any) -> TokenVerifier:
    v = TokenVerifier(settings, **kw)
    await v.start()
    return v


async def refusal(v: TokenVerifier, token: str) -> tuple[int, str, str]:
    with pytest.raises(EdgeError) as info:
        await v.verify(token)
    exc = info.value
    return exc.status, exc.code, exc.reason


# -- the verifier ------------------------------------------------------------------------------


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1"])
async def test_rs256_and_es256_tokens_are_accepted(idp: TestIssuer, kid: str) -> None:
    v = await started(settings_for(idp.settings()))
    token = idp.mint(kid, idp.claims("acme", USER, EMAIL))
    got = await v.verify(token)
    assert (got.user_id, got.account, got.issuer) == (USER, "acme", "test-idp")
    assert got.user_hash == user_hash(EMAIL) and EMAIL not in repr(got)
    assert await v.verify(token) is got  # the second time from the cache
    await v.close()


async def test_refusals(idp: TestIssuer, tmp_path: Path) -> None:
    v = await started(settings_for(idp.settings(), token_leeway_s=5))
    now = int(time.time())
    c = idp.claims
    cases = {
        "expired": (idp.mint("rsa-1", c("acme", USER, EMAIL, exp=now - 60)), "token_expired"),
        "nbf in the future": (
            idp.mint("ec-1", c("acme", USER, EMAIL, nbf=now + 120)),
            "token_not_yet_valid",
        ),
        "wrong audience": (
            idp.mint("rsa-1", c("acme", USER, EMAIL, aud="other")),
            "wrong_audience",
        ),
        "no audience": (idp.mint("rsa-1", c("acme", USER, EMAIL, aud=None)), "malformed_token"),
        "no exp": (idp.mint("rsa-1", c("acme", USER, EMAIL, exp=None)), "malformed_token"),
        "no user id": (idp.mint("rsa-1", c("acme", USER, EMAIL, userId=None)), "malformed_token"),
        "bad user id": (idp.mint("rsa-1", c("acme", "a;b", EMAIL)), "malformed_token"),
        "no account": (idp.mint("rsa-1", c("acme", USER, EMAIL, account=None)), "malformed_token"),
        "unknown issuer": (
            idp.mint("rsa-1", c("acme", USER, EMAIL, iss="https://evil.invalid")),
            "unknown_issuer",
        ),
        "unknown kid": (idp.mint("rsa-1", c("acme", USER, EMAIL), kid="nope"), "bad_signature"),
        "garbage": ("not-a-jwt", "malformed_token"),
        "three dots of garbage": ("a.b.c", "malformed_token"),
        "too long": ("a" * 9000, "malformed_token"),
    }
    # A token signed by a key of the same kid that is not the issuer's: a forged signature.
    forger = TestIssuer(tmp_path / "forger.json")
    forger.add_key("rsa-1", "RS256")
    cases["forged signature"] = (forger.mint("rsa-1", c("acme", USER, EMAIL)), "bad_signature")
    # A tampered payload under a genuine signature.
    h, _, s = idp.mint("ec-1", c("acme", USER, EMAIL)).split(".")
    other = base64.urlsafe_b64encode(json.dumps(c("bolt", USER, EMAIL)).encode()).rstrip(b"=")
    cases["tampered payload"] = (f"{h}.{other.decode()}.{s}", "bad_signature")
    for what, (token, code) in cases.items():
        status, got, _reason = await refusal(v, token)
        assert (status, got) == (401, code), what
    await v.close()


async def test_alg_none_and_hmac_with_the_public_key_are_refused(idp: TestIssuer) -> None:
    v = await started(settings_for(idp.settings()))
    claims = idp.claims("acme", USER, EMAIL)
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": "rsa-1"})
    assert await refusal(v, unsigned) == (401, "bad_signature", "algorithm_not_allowed")
    # The classic confusion: an HS256 token keyed with the issuer's public key (PEM) as the
    # secret. PyJWT itself refuses to sign so; forge the signature by hand.
    public_pem = (
        idp.keys["rsa-1"][0]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    import hashlib
    import hmac

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = b64(hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    assert await refusal(v, f"{head}.{body}.{sig}") == (
        401,
        "bad_signature",
        "algorithm_not_allowed",
    )
    # Even an issuer wrongly allowed HS256 cannot be configured: the start refuses.
    with pytest.raises(ConfigError, match="asymmetric only"):
        EdgeSettings.from_env(
            {
                "EDGE_REGIONS_JSON": json.dumps(
                    {
                        "eu-west-1": {
                            "instances": ["http://127.0.0.1:1"],
                            "assertion_secret": "x" * 20,
                            "table": "profiles",
                        }
                    }
                ),
                "EDGE_TOKEN_ISSUERS_JSON": json.dumps(
                    {
                        "idp": {
                            "issuer": ISS_X,
                            "audiences": ["a"],
                            "jwks_url": "http://x",
                            "algorithms": ["HS256"],
                        }
                    }
                ),
            }
        )
    await v.close()


async def test_an_alg_outside_the_issuers_list_is_refused(idp: TestIssuer) -> None:
    v = await started(settings_for(idp.settings(algorithms=("RS256",))))
    token = idp.mint("ec-1", idp.claims("acme", USER, EMAIL))
    assert (await refusal(v, token))[:2] == (401, "bad_signature")
    assert (await v.verify(idp.mint("rsa-1", idp.claims("acme", USER, EMAIL)))).user_id == USER
    await v.close()


async def test_key_rotation_new_kid_accepted_removed_kid_refused(idp: TestIssuer) -> None:
    v = await started(settings_for(idp.settings()))
    old = idp.mint("rsa-1", idp.claims("acme", USER, EMAIL))
    assert (await v.verify(old)).user_id == USER  # cached from now on
    # The provider publishes a new key and signs with it: the unknown kid re-reads the set.
    idp.add_key("rsa-2", "RS256")
    new = idp.mint("rsa-2", idp.claims("acme", USER, EMAIL))
    assert (await v.verify(new)).user_id == USER
    # The provider drops the old key; the next unknown kid re-reads the set, which forgets
    # every cached verification: the old key's token is refused although it was cached.
    idp.remove_key("rsa-1")
    idp.add_key("ec-2", "ES256")
    assert (await v.verify(idp.mint("ec-2", idp.claims("acme", USER, EMAIL)))).user_id == USER
    assert await refusal(v, old) == (401, "bad_signature", "unknown_key")
    assert (await v.verify(new)).user_id == USER
    await v.close()


async def test_unknown_kids_re_read_the_set_at_most_once_per_interval(idp: TestIssuer) -> None:
    clock = [1000.0]
    v = TokenVerifier(settings_for(idp.settings(), jwks_refresh_min_s=60, jwks_max_age_s=3600))
    await v.start()
    reads = 0
    ks = v.keysets[idp.iss]
    ks._clock = lambda: clock[0]  # type: ignore[method-assign]
    ks.loaded_at = ks._last_attempt = clock[0]
    original = ks.load

    async def counting() -> None:
        nonlocal reads
        reads += 1
        await original()

    ks.load = counting  # type: ignore[method-assign]
    for i in range(5):
        token = idp.mint("rsa-1", idp.claims("acme", USER, EMAIL), kid=f"unknown-{i}")
        assert (await refusal(v, token))[1] == "bad_signature"
    assert reads == 0  # the start's read was just now: no re-read within the interval
    clock[0] += 61
    for i in range(3):
        token = idp.mint("rsa-1", idp.claims("acme", USER, EMAIL), kid=f"later-{i}")
        assert (await refusal(v, token))[1] == "bad_signature"
    assert reads == 1  # one re-read, then the interval again
    await v.close()


async def test_a_removed_key_is_refused_once_the_set_is_old(idp: TestIssuer) -> None:
    """Without any unknown kid: a set older than jwks_max_age_s is re-read in the background."""
    clock = [1000.0]
    s = settings_for(idp.settings(), jwks_max_age_s=60, token_cache_ttl_s=3600)
    v = TokenVerifier(s)
    await v.start()
    ks = v.keysets[idp.iss]
    ks._clock = lambda: clock[0]  # type: ignore[method-assign]
    # Both instants on the test's clock: the start's read stamped them with the real monotonic
    # clock, whose value (the host's uptime) must not decide the test.
    ks.loaded_at = ks._last_attempt = clock[0]
    token = idp.mint("rsa-1", idp.claims("acme", USER, EMAIL))
    assert (await v.verify(token)).user_id == USER
    idp.remove_key("rsa-1")
    clock[0] += 61
    other = idp.mint("ec-1", idp.claims("acme", USER, "b@acme.example"))
    assert (await v.verify(other)).user_id == USER  # old set still used; re-read started
    assert ks._background is not None
    await ks._background
    assert await refusal(v, token) == (401, "bad_signature", "unknown_key")
    await v.close()


async def test_cached_verification_checks_exp_on_every_use(idp: TestIssuer) -> None:
    now = [time.time()]
    v = TokenVerifier(settings_for(idp.settings(), token_leeway_s=0), wall_clock=lambda: now[0])
    await v.start()
    token = idp.mint("rsa-1", idp.claims("acme", USER, EMAIL, exp=int(now[0]) + 30))
    assert (await v.verify(token)).user_id == USER
    now[0] += 31
    assert await refusal(v, token) == (401, "token_expired", "token_expired")
    await v.close()


async def test_a_missing_jwks_file_stops_the_start(tmp_path: Path) -> None:
    issuer = IssuerSettings("x", "https://x", ("a",), jwks_file=str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match=r"token_issuers\.x\.jwks_file"):
        await started(settings_for(issuer))


# -- pure parts: where the token is found, what crosses -----------------------------------------


def _headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_find_token_header_then_account_cookie_then_cookie() -> None:
    assert find_token(_headers(("VtexIdclientAutCookie", "h")), "acme") == "h"
    assert find_token(_headers(("vtexidclientautcookie", "h")), "acme") == "h"
    both = ("Cookie", "a=1; VtexIdclientAutCookie=g; VtexIdclientAutCookie_acme=s; b=2")
    assert find_token(_headers(both), "acme") == "s"
    assert find_token(_headers(both), "bolt") == "g"
    assert find_token(_headers(("Cookie", "VtexIdclientAutCookie_bolt=x")), "acme") is None
    assert (
        find_token(_headers(("Cookie", "a=1"), ("Cookie", "VtexIdclientAutCookie=g")), "x") == "g"
    )
    assert find_token(_headers(("VtexIdclientAutCookie", "h"), both), "acme") == "h"
    assert find_token(_headers(("Cookie", "a=1")), "acme") is None


def test_token_cookies_are_stripped_others_kept() -> None:
    assert strip_token_cookies("a=1; VtexIdclientAutCookie=t; b=2") == "a=1; b=2"
    assert strip_token_cookies("VtexIdclientAutCookie_acme=t") == ""
    assert strip_token_cookies("a=1;b=2") == "a=1;b=2"


def test_authenticate_user_grants_and_account() -> None:
    from edge_router.user_token import VerifiedToken

    grant = UserGrant(frozenset({"read", "unmask"}), True)
    rec = AccountRecord("acme", "eu-west-1", "active", {}, {user_hash(EMAIL): grant})
    tok = VerifiedToken("idp", USER, user_hash(EMAIL), "acme", time.time() + 60)
    p = auth.authenticate_user(rec, tok)
    assert (p.name, p.roles) == (f"user:{USER}", frozenset({"read", "unmask"}))
    cases = [
        (VerifiedToken("idp", USER, user_hash(EMAIL), "bolt", 0), "token_not_for_account"),
        (VerifiedToken("idp", USER, user_hash("other@x.example"), "acme", 0), "user_not_granted"),
    ]
    for token, code in cases:
        with pytest.raises(Forbidden) as info:
            auth.authenticate_user(rec, token)
        assert info.value.code == code
    revoked = AccountRecord(
        "acme", "eu-west-1", "active", {}, {user_hash(EMAIL): UserGrant(frozenset({"read"}), False)}
    )
    with pytest.raises(Forbidden, match="no roles"):
        auth.authenticate_user(revoked, tok)
    suspended = AccountRecord("acme", "eu-west-1", "suspended", {}, {user_hash(EMAIL): grant})
    with pytest.raises(Forbidden) as info:
        auth.authenticate_user(suspended, tok)
    assert info.value.code == "account_suspended"
    assert not issubclass(Forbidden, Unauthorized)


# -- through the edge, to fake stores of both regions -------------------------------------------


@pytest.fixture
def edge(aiohttp_server, aiohttp_client, registry: FakeRegistry, idp: TestIssuer):  # type: ignore[no-untyped-def]
    async def make(front: str = "web", **over: Any) -> tuple[Any, Any, dict[str, FakeStore]]:
        """``front``: "web" (``web_front``) or "wire" (the production listener)."""
        registry.add("acme", "eu-west-1", [EU_KEY])
        registry.add("bolt", "us-east-1", [US_KEY])
        registry.grant("acme", EMAIL, frozenset({"read", "unmask"}))
        registry.grant("bolt", EMAIL, frozenset({"read", "write"}))
        stores, urls = {}, {}
        for region in ("eu-west-1", "us-east-1"):
            stores[region] = FakeStore(region, f"{region}-0")
            server = await aiohttp_server(stores[region].app())
            urls[region] = [f"http://127.0.0.1:{server.port}"]
        settings = make_settings(urls, token_issuers=(idp.settings(),), **over)
        app = create_app(settings, registry_factory=registry.factory())
        client = await aiohttp_client(app if front == "web" else EdgeTestServer(app))
        return client, await aiohttp_client(create_admin_app(app)), stores

    return make


async def test_user_token_through_the_edge_to_both_regions(edge, idp: TestIssuer, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    client, admin, stores = await edge(access_log=True)
    tokens = {
        "acme": idp.mint("rsa-1", idp.claims("acme", USER, EMAIL)),
        "bolt": idp.mint("ec-1", idp.claims("bolt", USER, EMAIL)),
    }
    sent = [
        ("acme", "eu-west-1", {"VtexIdclientAutCookie": tokens["acme"]}, {"read", "unmask"}),
        (
            "bolt",
            "us-east-1",
            {"Cookie": f"x=1; VtexIdclientAutCookie={tokens['bolt']}"},
            {"read", "write"},
        ),
        (
            "acme",
            "eu-west-1",
            {"Cookie": f"VtexIdclientAutCookie_acme={tokens['acme']}; y=2"},
            {"read", "unmask"},
        ),
    ]
    for account, region, headers, roles in sent:
        resp = await client.get(URL(f"{P}/profiles/p1?an={account}", encoded=True), headers=headers)
        assert resp.status == 200, await resp.text()
        assert resp.headers["X-Data-Region"] == region
        seen = stores[region].seen[-1]
        assert seen.assertion is not None, seen.assertion_error
        assert (seen.assertion.account, seen.assertion.principal) == (account, f"user:{USER}")
        assert seen.assertion.roles == frozenset(roles)
        # the token never crosses to the store; other cookies do
        assert "vtexidclientautcookie" not in seen.headers
        assert all("VtexIdclientAutCookie" not in c for c in seen.headers.get("cookie", []))
    assert stores["us-east-1"].seen[-1].headers["cookie"] == ["x=1"]
    assert stores["eu-west-1"].seen[-1].headers["cookie"] == ["y=2"]

    # refusals: JSON, right status and code, nothing forwarded
    before = sum(s.proxied for s in stores.values())
    refusals = [
        ("bolt", {"VtexIdclientAutCookie": tokens["acme"]}, 403, "token_not_for_account"),
        (
            "acme",
            {
                "VtexIdclientAutCookie": idp.mint(
                    "rsa-1", idp.claims("acme", USER, "x@acme.example")
                )
            },
            403,
            "user_not_granted",
        ),
        ("acme", {"VtexIdclientAutCookie": "garbage"}, 401, "malformed_token"),
        (
            "acme",
            {"VtexIdclientAutCookie": idp.mint("rsa-1", idp.claims("acme", USER, EMAIL, exp=1))},
            401,
            "token_expired",
        ),
        ("acme", {}, 401, "missing_credentials"),
    ]
    for account, headers, status, code in refusals:
        resp = await client.get(URL(f"{P}/profiles/p1?an={account}", encoded=True), headers=headers)
        assert resp.status == status, code
        assert resp.content_type == "application/json"
        assert (await resp.json())["error"] == code
    assert sum(s.proxied for s in stores.values()) == before

    # app key headers take precedence over a user token
    resp = await client.get(
        URL(f"{P}/profiles/p1?an=acme", encoded=True),
        headers={
            "X-VTEX-API-AppKey": EU_KEY.app_key,
            "X-VTEX-API-AppToken": EU_KEY.token,
            "VtexIdclientAutCookie": tokens["bolt"],
        },
    )
    assert resp.status == 200
    assert stores["eu-west-1"].seen[-1].assertion.principal == EU_KEY.app_key  # type: ignore[union-attr]

    metrics = await (await admin.get("/metrics")).text()
    for reason in ("wrong_account", "user_not_granted", "malformed_token", "token_expired"):
        assert f'edge_auth_failures_total{{reason="{reason}"}} 1.0' in metrics, reason
    # no token, no e-mail, in logs or metrics
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "edge_router.access" in {r.name for r in caplog.records}
    for secret in (*tokens.values(), EMAIL, tokens["acme"].split(".")[1]):
        assert secret not in logged
        assert secret not in metrics


# -- a JWK set fetched from a URL --------------------------------------------------------------


async def test_jwks_url_fetched_with_a_bound_and_rotated(aiohttp_server, idp: TestIssuer) -> None:  # type: ignore[no-untyped-def]
    from aiohttp import web

    state = {"hang": False, "fetches": 0}

    async def jwks(_request: web.Request) -> web.Response:
        state["fetches"] += 1
        if state["hang"]:
            await asyncio.sleep(30)
        return web.Response(body=idp.path.read_bytes(), content_type="application/json")

    app = web.Application()
    app.router.add_get("/jwks.json", jwks)
    server = await aiohttp_server(app)
    url = f"http://127.0.0.1:{server.port}/jwks.json"
    issuer = IssuerSettings("url-idp", idp.iss, (idp.aud,), jwks_url=url)
    # A fetch bound a loaded machine cannot miss where the fetches must succeed (a 0.3 s one
    # could time out the start's fetch: a third fetch, a refused token).
    v = await started(settings_for(issuer, jwks_timeout_s=10.0))
    assert (await v.verify(idp.mint("rsa-1", idp.claims("acme", USER, EMAIL)))).user_id == USER
    idp.add_key("rsa-2", "RS256")
    assert (await v.verify(idp.mint("rsa-2", idp.claims("acme", USER, EMAIL)))).user_id == USER
    assert state["fetches"] == 2
    # a provider that does not answer: known keys keep working (no fetch for a known kid)
    state["hang"] = True
    idp.add_key("rsa-3", "RS256")
    assert (await v.verify(idp.mint("rsa-1", idp.claims("acme", USER, "c@acme.example")))).user_id
    assert state["fetches"] == 2
    await v.close()
    # and, with a short fetch bound, an unknown kid is refused within it, not after the hang
    short = await started(settings_for(issuer, jwks_timeout_s=0.3))  # its own fetch hangs too
    t0 = time.monotonic()
    token = idp.mint("rsa-3", idp.claims("acme", USER, EMAIL))
    assert await refusal(short, token) == (401, "bad_signature", "unknown_key")
    assert time.monotonic() - t0 < 10  # the hang is 30 s
    await short.close()


async def test_jwks_url_down_at_start_is_not_fatal(idp: TestIssuer) -> None:
    from residency_dev.dynamodb_local import free_port

    url = f"http://127.0.0.1:{free_port()}/jwks.json"
    v = await started(settings_for(IssuerSettings("down", idp.iss, (idp.aud,), jwks_url=url)))
    token = idp.mint("rsa-1", idp.claims("acme", USER, EMAIL))
    assert await refusal(v, token) == (401, "bad_signature", "unknown_key")
    await v.close()


# -- settings ------------------------------------------------------------------------------------


def _env(issuers: Any) -> dict[str, str]:
    region = {"instances": ["http://127.0.0.1:1"], "assertion_secret": "x" * 20, "table": "p"}
    return {
        "EDGE_REGIONS_JSON": json.dumps({"eu-west-1": {**region, "table": "profiles"}}),
        "EDGE_TOKEN_ISSUERS_JSON": json.dumps(issuers),
    }


def test_issuer_settings(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": []}')
    s = EdgeSettings.from_env(
        _env({"idp": {"issuer": ISS_X, "audience": "a", "jwks_file": str(jwks)}})
    )
    assert s.token_issuers == (
        IssuerSettings("idp", ISS_X, ("a",), jwks_file=str(jwks), algorithms=("RS256", "ES256")),
    )
    assert EdgeSettings.from_env(_env({})).token_issuers == ()
    bad = {
        "no issuer": ({"audiences": ["a"], "jwks_file": str(jwks)}, "issuer"),
        "no audience": ({"issuer": ISS_X, "jwks_file": str(jwks)}, "audiences"),
        "both sources": (
            {"issuer": ISS_X, "audiences": ["a"], "jwks_file": str(jwks), "jwks_url": "http://x"},
            "exactly one",
        ),
        "no source": ({"issuer": ISS_X, "audiences": ["a"]}, "exactly one"),
        "missing file": (
            {"issuer": ISS_X, "audiences": ["a"], "jwks_file": str(tmp_path / "nope")},
            "not a readable file",
        ),
        "url scheme": ({"issuer": ISS_X, "audiences": ["a"], "jwks_url": "ftp://x"}, "http"),
        "alg none": (
            {"issuer": ISS_X, "audiences": ["a"], "jwks_url": "http://x", "algorithms": ["none"]},
            "asymmetric only",
        ),
        "claim name": (
            {"issuer": ISS_X, "audiences": ["a"], "jwks_url": "http://x", "user_claim": "a b"},
            "user_claim",
        ),
    }
    for spec, message in bad.values():
        with pytest.raises(ConfigError, match=message):
            EdgeSettings.from_env(_env({"idp": spec}))
    twice = {"a": {"issuer": ISS_X, "audiences": ["a"], "jwks_url": "http://x"}}
    twice["b"] = twice["a"]
    with pytest.raises(ConfigError, match="twice"):
        EdgeSettings.from_env(_env(twice))


# -- no token a client can send makes the verifier raise anything but a refusal (issue 27) -----


def _jwks(path: Path, *keys: tuple[Any, str, str | None]) -> IssuerSettings:
    """A JWK set of (private key, kid, alg or None: the JWK states no ``alg``)."""
    entries = []
    for key, kid, alg in keys:
        algo = ECAlgorithm if isinstance(key, ec.EllipticCurvePrivateKey) else RSAAlgorithm
        entry = {**algo.to_jwk(key.public_key(), as_dict=True), "kid": kid, "use": "sig"}
        if alg is not None:
            entry["alg"] = alg
        entries.append(entry)
    path.write_text(json.dumps({"keys": entries}))
    return IssuerSettings(
        "test-idp",
        ISS_X,
        ("aud-x",),
        jwks_file=str(path),
        algorithms=("RS256", "PS256", "ES256", "ES384"),
    )


@pytest.mark.parametrize(("key_alg", "token_alg"), [("ES256", "RS256"), ("RS256", "ES256")])
async def test_an_alg_of_another_key_type_is_refused_before_verification(
    tmp_path: Path, key_alg: str, token_alg: str
) -> None:
    """The issue's token: an RS256 header on an EC issuer (and the mirror) made PyJWT's
    prepare_key raise a TypeError: a 500 for anyone who knows the issuer's URL."""
    idp = TestIssuer(tmp_path / "jwks.json")
    idp.add_key("k1", key_alg)
    v = await started(settings_for(idp.settings()))
    claims = idp.claims("acme", USER, EMAIL)
    other = TestIssuer(tmp_path / "other.json")
    other.add_key("k1", token_alg)
    tokens = {
        "no kid, the issuer's only key": f"{b64json({'alg': token_alg})}."
        f"{b64json({'iss': idp.iss})}.AAAA",
        "the key's kid": f"{b64json({'alg': token_alg, 'kid': 'k1'})}.{b64json(claims)}.AAAA",
        "signed by a key of that type": other.mint("k1", claims),
    }
    for what, token in tokens.items():
        assert await refusal(v, token) == (401, "bad_signature", "key_mismatch"), what
    assert (await v.verify(idp.mint("k1", claims))).user_id == USER
    await v.close()


async def test_the_algs_a_key_verifies_its_stated_alg_else_its_type_and_curve(
    tmp_path: Path,
) -> None:
    rsa_key, ec_key = new_key("RS256"), new_key("ES256")
    issuer = _jwks(
        tmp_path / "jwks.json",
        (rsa_key, "rsa-any", None),
        (rsa_key, "rsa-rs256", "RS256"),
        (ec_key, "p256", None),
    )
    v = await started(settings_for(issuer))
    claims = {"iss": ISS_X, "aud": "aud-x", "sub": EMAIL, "userId": USER, "account": "acme"}
    claims["exp"] = int(time.time()) + 60

    def mint(key: Any, alg: str, kid: str) -> str:
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})

    # A JWK without "alg": every algorithm of its key type (RSA: RS* and PS*).
    assert (await v.verify(mint(rsa_key, "PS256", "rsa-any"))).user_id == USER
    assert (await v.verify(mint(rsa_key, "RS256", "rsa-any"))).user_id == USER
    # A JWK that states its "alg": that one only.
    assert await refusal(v, mint(rsa_key, "PS256", "rsa-rs256")) == (
        401,
        "bad_signature",
        "key_mismatch",
    )
    # An EC key: the algorithm of its curve only (P-256: ES256, not ES384).
    assert (await v.verify(mint(ec_key, "ES256", "p256"))).user_id == USER
    forged = f"{b64json({'alg': 'ES384', 'kid': 'p256'})}.{b64json(claims)}.AAAA"
    assert await refusal(v, forged) == (401, "bad_signature", "key_mismatch")
    await v.close()


async def test_a_token_that_is_not_jws_text_is_malformed(idp: TestIssuer) -> None:
    """A ``\\xff`` byte in the header or cookie arrives as the surrogate ``\\udcff``, which
    PyJWT's ``encode("utf-8")`` raised on (a 500)."""
    v = await started(settings_for(idp.settings()))
    good = idp.mint("rsa-1", idp.claims("acme", USER, EMAIL))
    for token in (
        "\udcff.e30.e30",
        good + "\udcff",
        "\ud800",
        "é.e30.e30",
        good.replace(".", " .", 1),
        good + "\n",
        good + ".x",
        good.rsplit(".", 1)[0],
        "",
    ):
        assert await refusal(v, token) == (401, "malformed_token", "malformed_token"), token
    await v.close()


async def test_claims_an_issuer_could_sign_are_refused_not_raised(idp: TestIssuer) -> None:
    """Signed by the issuer's own key: exp = 10^400 overflowed the edge's float(exp), a lone
    surrogate in sub failed user_hash; both a 500."""
    v = await started(settings_for(idp.settings()))
    c = idp.claims
    cases = {
        "exp 10^400": (c("acme", USER, EMAIL, exp=10**400), "malformed_token"),
        "exp infinite": (c("acme", USER, EMAIL, exp=math.inf), "malformed_token"),
        "exp -10^400": (c("acme", USER, EMAIL, exp=-(10**400)), "token_expired"),
        "nbf 10^400": (c("acme", USER, EMAIL, nbf=10**400), "token_not_yet_valid"),
        "sub a lone surrogate": (c("acme", USER, "\ud800"), "malformed_token"),
        "sub not a string": (c("acme", USER, EMAIL, sub=12), "malformed_token"),
        "account a lone surrogate": (c("\ud800", USER, EMAIL), None),
    }
    for what, (claims, code) in cases.items():
        for kid in ("rsa-1", "ec-1"):
            token = idp.mint(kid, claims)
            if code is None:  # verified; the account claim is authenticate_user's question
                assert (await v.verify(token)).account == claims["account"], what
                continue
            status, got, _reason = await refusal(v, token)
            assert (status, got) == (401, code), what
    await v.close()


@pytest.mark.parametrize("front", ["web", "wire"])
async def test_hostile_tokens_are_a_counted_json_401_through_the_edge(  # type: ignore[no-untyped-def]
    edge, idp: TestIssuer, front: str
) -> None:
    """Each of these was a 500 (counted as the region's 5xx); each is a JSON 401 with its
    reason counted, and nothing reaches a store."""
    client, admin, stores = await edge(front)
    rs256_on_ec = f"{b64json({'alg': 'RS256', 'kid': 'ec-1'})}.{b64json({'iss': idp.iss})}.AA"
    es256_on_rsa = f"{b64json({'alg': 'ES256', 'kid': 'rsa-1'})}.{b64json({'iss': idp.iss})}.AA"
    huge_exp = idp.mint("rsa-1", idp.claims("acme", USER, EMAIL, exp=10**400))
    surrogate_sub = idp.mint("ec-1", idp.claims("acme", USER, "\ud800"))
    sent = [
        (f"VtexIdclientAutCookie: {rs256_on_ec}".encode(), "bad_signature"),
        (f"Cookie: VtexIdclientAutCookie={es256_on_rsa}".encode(), "bad_signature"),
        (b"VtexIdclientAutCookie: \xff.e30.e30", "malformed_token"),
        (b"Cookie: a=1; VtexIdclientAutCookie=\xff.e30.e30", "malformed_token"),
        (b"Cookie: VtexIdclientAutCookie_acme=e30.\xff.e30", "malformed_token"),
        (f"VtexIdclientAutCookie: {huge_exp}".encode(), "malformed_token"),
        (f"VtexIdclientAutCookie: {surrogate_sub}".encode(), "malformed_token"),
    ]
    for line, code in sent:
        raw = await raw_get(client.server.port, f"{P}/profiles/p1?an=acme", line + b"\r\n")
        status, ctype, body = json_answer(raw)
        assert (status, body["error"]) == (401, code), line
        assert ctype.startswith("application/json"), line
    assert sum(s.proxied for s in stores.values()) == 0
    metrics = await (await admin.get("/metrics")).text()
    counted = {
        m[1]: float(m[2])
        for m in re.finditer(r'edge_auth_failures_total\{reason="([a-z_]+)"\} (\S+)', metrics)
    }
    assert counted == {"key_mismatch": 2.0, "malformed_token": 3.0, "invalid_claim": 2.0}
    requests = [ln for ln in metrics.splitlines() if ln.startswith("edge_requests_total{")]
    assert requests and all('status_class="4xx"' in ln for ln in requests), requests


def test_token_cookies_are_stripped_however_cookies_are_joined() -> None:
    """Cookies joined with ", " (a proxy merging two Cookie headers) hid the token from a
    split on ";" only: it was forwarded whole."""
    cases = {
        "a=1, VtexIdclientAutCookie=SECRET": "a=1",
        "a=1,VtexIdclientAutCookie=SECRET": "a=1",
        "VtexIdclientAutCookie=SECRET, a=1": "a=1",
        "a=1, VtexIdclientAutCookie_acme=SECRET; b=2": "a=1; b=2",
        "a=1; b=2, VtexIdclientAutCookie=SECRET,c=3": "a=1; b=2,c=3",
        "a=x,y; VtexIdclientAutCookie=SECRET": "a=x,y",
        "x=1 VtexIdclientAutCookie=SECRET": "",  # not separated at all: nothing kept
        " vtexidclientautcookie=SECRET ,": "",
        "a=1, b=2": "a=1, b=2",  # nothing to cut: left as it came
    }
    for cookie, kept in cases.items():
        assert strip_token_cookies(cookie) == kept, cookie
    # find_token reads the same cookies as the ones cut out
    assert find_token(_headers(("Cookie", "a=1, VtexIdclientAutCookie=g")), "acme") == "g"
    assert find_token(_headers(("Cookie", "a=1,VtexIdclientAutCookie_acme=s")), "acme") == "s"
    # Whatever the separator, no part of a token cookie is left.
    for sep in (";", ",", ", ", " ,", "\t,", ";,", ",;"):
        got = strip_token_cookies(f"a=1{sep}VtexIdclientAutCookie=SECRET{sep}b=2")
        assert "SECRET" not in got and "vtexidclientautcookie" not in got.lower(), sep
        assert "a=1" in got and "b=2" in got, sep


async def test_joined_token_cookies_never_reach_the_store(edge, idp: TestIssuer) -> None:  # type: ignore[no-untyped-def]
    client, _admin, stores = await edge()
    token = idp.mint("rsa-1", idp.claims("acme", USER, EMAIL))
    deciding = [
        {"X-VTEX-API-AppKey": EU_KEY.app_key, "X-VTEX-API-AppToken": EU_KEY.token},
        {"VtexIdclientAutCookie": token},
    ]
    for headers in deciding:
        for cookie in (
            "a=1, VtexIdclientAutCookie=SECRET",
            "a=1,VtexIdclientAutCookie_acme=SECRET",
            "VtexIdclientAutCookie_acme=SECRET, a=1",
        ):
            resp = await client.get(
                URL(f"{P}/profiles/p1?an=acme", encoded=True),
                headers={**headers, "Cookie": cookie},
            )
            assert resp.status == 200, await resp.text()
            seen = stores["eu-west-1"].seen[-1]
            assert seen.headers.get("cookie") == ["a=1"], cookie
            assert not any("SECRET" in v for vs in seen.headers.values() for v in vs)


def test_an_empty_token_is_no_token() -> None:
    """An empty ``VtexIdclientAutCookie_{account}`` cookie blocked the fallback to the plain
    cookie (401 missing_credentials) while an empty header fell back: empty = absent."""
    for headers in (
        [("Cookie", "VtexIdclientAutCookie_acme=; VtexIdclientAutCookie=g")],
        [("Cookie", 'VtexIdclientAutCookie_acme=""; VtexIdclientAutCookie=g')],
        [("Cookie", "VtexIdclientAutCookie=g; VtexIdclientAutCookie_acme= ")],
        [("Cookie", "VtexIdclientAutCookie_acme="), ("Cookie", "VtexIdclientAutCookie=g")],
        [("VtexIdclientAutCookie", ""), ("Cookie", "VtexIdclientAutCookie=g")],
        [("VtexIdclientAutCookie", "  "), ("Cookie", "VtexIdclientAutCookie=g")],
    ):
        assert find_token(_headers(*headers), "acme") == "g", headers
    for headers in (
        [("VtexIdclientAutCookie", " ")],
        [("Cookie", "VtexIdclientAutCookie_acme=; VtexIdclientAutCookie=")],
        [("Cookie", 'VtexIdclientAutCookie=""')],
    ):
        assert find_token(_headers(*headers), "acme") is None, headers


async def test_an_empty_account_cookie_falls_back_through_the_edge(edge, idp: TestIssuer) -> None:  # type: ignore[no-untyped-def]
    client, _admin, stores = await edge()
    token = idp.mint("rsa-1", idp.claims("acme", USER, EMAIL))
    resp = await client.get(
        URL(f"{P}/profiles/p1?an=acme", encoded=True),
        headers={"Cookie": f"VtexIdclientAutCookie_acme=; VtexIdclientAutCookie={token}"},
    )
    assert resp.status == 200, await resp.text()
    assert stores["eu-west-1"].seen[-1].assertion.principal == f"user:{USER}"  # type: ignore[union-attr]
    resp = await client.get(
        URL(f"{P}/profiles/p1?an=acme", encoded=True),
        headers={"Cookie": "VtexIdclientAutCookie_acme=; VtexIdclientAutCookie="},
    )
    assert resp.status == 401 and (await resp.json())["error"] == "missing_credentials"
