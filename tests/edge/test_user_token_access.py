"""User tokens (``VtexIdclientAutCookie``), what a verified token lets in: ``authenticate_user``
(the registry's grant for the user, the token's account, a suspended account), and the real edge
in front of fake stores of both regions, which check the signed assertion it sends them -- the
user's roles reach the right region, refusals are JSON and counted, app keys take precedence,
and no token or e-mail shows in logs or metrics.
"""

from __future__ import annotations

import logging
import time

import pytest
from yarl import URL

from edge_router import auth
from edge_router.errors import Forbidden, Unauthorized
from edge_router.registry import AccountRecord, UserGrant, user_hash

from .conftest import EU_KEY, P
from .tokens import TestIssuer
from .user_token import (  # noqa: F401  (edge_fixture, idp_fixture: the edge and idp fixtures)
    EMAIL,
    USER,
    edge_fixture,
    idp_fixture,
)


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
