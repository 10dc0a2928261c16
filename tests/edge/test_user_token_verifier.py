"""User tokens (``VtexIdclientAutCookie``), the verifier alone: real RS256/ES256 tokens made in
the test and a JWK set file, no servers. Good tokens are accepted (and cached, their ``exp``
checked on every use); expired, early, foreign, unsigned, forged or tampered ones are refused
with the right code, ``alg: none`` and HMAC keyed with the public key included.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from edge_router.config import ConfigError, EdgeSettings
from edge_router.registry import user_hash
from edge_router.user_token import TokenVerifier

from .tokens import TestIssuer
from .user_token import (  # noqa: F401  (idp_fixture: the idp fixture)
    EMAIL,
    ISS_X,
    USER,
    idp_fixture,
    refusal,
    settings_for,
    started,
)


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


async def test_cached_verification_checks_exp_on_every_use(idp: TestIssuer) -> None:
    now = [time.time()]
    v = TokenVerifier(settings_for(idp.settings(), token_leeway_s=0), wall_clock=lambda: now[0])
    await v.start()
    token = idp.mint("rsa-1", idp.claims("acme", USER, EMAIL, exp=int(now[0]) + 30))
    assert (await v.verify(token)).user_id == USER
    now[0] += 31
    assert await refusal(v, token) == (401, "token_expired", "token_expired")
    await v.close()
