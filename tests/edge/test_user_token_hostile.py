"""User tokens (``VtexIdclientAutCookie``): no token a client can send makes the verifier raise
anything but a refusal (issue 27). An ``alg`` of another key type, an algorithm a key does not
verify, bytes that are not JWS text, and claims an issuer could sign (huge or infinite ``exp``,
lone surrogates) are each a 401 with its code, through the verifier alone and through both
front ends of the edge, where nothing reaches a store.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from edge_router.config import IssuerSettings

from .conftest import P
from .tokens import TestIssuer, b64json, json_answer, new_key, raw_get
from .user_token import (  # noqa: F401  (edge_fixture, idp_fixture: the edge and idp fixtures)
    EMAIL,
    ISS_X,
    USER,
    edge_fixture,
    idp_fixture,
    refusal,
    settings_for,
    started,
)


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
