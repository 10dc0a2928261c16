"""Property tests of the user-token step: whatever a client sends, it is refused (401/403) or
accepted, never an exception of another kind (each of which was a 500: issue 27).

Thrown at the verifier (and ``find_token`` and ``authenticate_user`` around it): arbitrary
bytes as a header or cookie would carry them, any number of segments, JOSE headers with odd
``alg``, ``kid``, ``crit``, ``jku``, ``x5u``, ``typ``, ``b64`` values, and claims of every
JSON type, huge, negative, fractional, infinite, NaN, or holding lone surrogates; with a
garbage signature, and signed for real by the issuer's keys (what an issuer that signs
anything it is asked to could produce), so the claim checks are reached too.

Deterministic (``derandomize``, no example database) and bounded (``max_examples``), so the
suite cannot fail now and then; the verifier's clock is the real one, since PyJWT reads it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from multidict import CIMultiDict, CIMultiDictProxy

from edge_router import auth
from edge_router.errors import EdgeError
from edge_router.registry import AccountRecord, UserGrant, user_hash
from edge_router.user_token import TokenVerifier, VerifiedToken, find_token

from .conftest import make_settings
from .tokens import AUD, ISS, TestIssuer

EMAIL = "fuzz.person@acme.example"
USER = "fuzz-user-1"
DROP = object()  # a member to remove
NOW = int(time.time())  # for odd values only (a stale NOW is as odd as a fresh one)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Every reason a refusal of the token step may be counted under (edge_auth_failures_total).
REASONS = {
    "malformed_token",
    "token_too_long",
    "unknown_issuer",
    "algorithm_not_allowed",
    "key_mismatch",
    "unknown_key",
    "bad_signature",
    "token_expired",
    "token_not_yet_valid",
    "wrong_audience",
    "missing_claim",
    "invalid_claim",
    "wrong_account",
    "user_not_granted",
}


class Verifier:
    """One started verifier and its issuer, driven from synchronous hypothesis tests."""

    def __init__(self, tmp: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.idp = TestIssuer(tmp / "jwks.json")
        self.idp.add_key("rsa-1", "RS256")
        self.idp.add_key("ec-1", "ES256")
        s = make_settings(
            {"eu-west-1": ["http://127.0.0.1:1"]},
            token_issuers=(self.idp.settings(),),
            jwks_refresh_min_s=3600.0,  # an unknown kid never re-reads the file here
            token_cache_ttl_s=0.0001,  # every example decoded, not served from the cache
        )
        self.v = TokenVerifier(s)
        self.loop.run_until_complete(self.v.start())
        grant = UserGrant(frozenset({"read"}), True)
        self.record = AccountRecord("acme", "eu-west-1", "active", {}, {user_hash(EMAIL): grant})

    def check(self, token: str) -> VerifiedToken | None:
        """Verify and authenticate ``token``: the verified token, or None when refused with a
        401/403 and a known reason; anything else fails the test."""
        try:
            verified = self.loop.run_until_complete(self.v.verify(token))
            assert math.isfinite(verified.expires_at)
            auth.authenticate_user(self.record, verified)
            return verified
        except EdgeError as exc:
            assert exc.status in {401, 403}, (exc.status, exc.code)
            assert exc.reason in REASONS, exc.code
            return None

    def close(self) -> None:
        self.loop.run_until_complete(self.v.close())
        self.loop.close()


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Verifier]:
    verifier = Verifier(tmp_path_factory.mktemp("fuzz"))
    yield verifier
    verifier.close()


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# -- strategies --------------------------------------------------------------------------------

# Past a float, past an int64, infinite, NaN: each has made a time check raise somewhere.
ODD_NUMBERS = (
    *(10**400, -(10**400), 10**309, 2**1024, 2**64, -1, 0, NOW - 600, NOW + 10**9),
    *(math.inf, -math.inf, math.nan, NOW + 600.5, 1e308, -0.0),
)
ALGS = ("RS256", "ES256", "PS256", "RS512", "ES384", "ES512", "EdDSA", "HS256", "none", "")
ALGS += ("rs256", "RS256 ", "ES256\x00")
# Text with lone surrogates and other odd code points; JSON keeps them as \\uXXXX escapes.
odd_text = st.one_of(
    st.text(st.characters(categories=["Cs", "Cc", "Cf", "L", "N", "P", "S", "Z"]), max_size=12),
    st.sampled_from(["", "\ud800", "\udcff", "a\x00b", "é", "\u2028", "acme", EMAIL, USER]),
)
numbers = st.one_of(
    st.sampled_from(ODD_NUMBERS),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, odd_text),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(odd_text, inner, max_size=3)
    ),
    max_leaves=6,
)
HEADER_EXTRAS = {
    "alg": st.one_of(st.sampled_from(ALGS), json_values),
    "kid": st.one_of(st.sampled_from(["rsa-1", "ec-1", "nope", ""]), json_values),
    "typ": st.one_of(st.sampled_from(["JWT", "at+jwt"]), json_values),
    "crit": st.one_of(st.lists(st.sampled_from(["b64", "exp", "x"]), max_size=3), json_values),
    "b64": st.one_of(st.booleans(), json_values),
    "jku": st.one_of(st.just("http://169.254.169.254/jwks"), json_values),
    "x5u": st.one_of(st.just("file:///etc/passwd"), json_values),
    "jwk": json_values,
    "x5c": json_values,
    "cty": json_values,
    "zip": st.one_of(st.just("DEF"), json_values),
}
CLAIM_VALUES = {
    "iss": json_values,
    "aud": st.one_of(st.just([AUD, 1]), st.just([]), json_values),
    "sub": st.one_of(odd_text, json_values),
    "exp": numbers,
    "nbf": numbers,
    "iat": numbers,
    "jti": json_values,
    "userId": st.one_of(odd_text, json_values),
    "account": st.one_of(odd_text, json_values),
}


def _changes(
    values: dict[str, st.SearchStrategy[Any]], min_size: int = 0
) -> st.SearchStrategy[dict[str, Any]]:
    """Up to three members set to odd values (``DROP``: removed)."""
    names = st.lists(st.sampled_from(sorted(values)), min_size=min_size, max_size=3, unique=True)
    return names.flatmap(
        lambda names: st.fixed_dictionaries({n: st.one_of(st.just(DROP), values[n]) for n in names})
    )


def changed(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = {**base, **changes}
    return {k: v for k, v in out.items() if v is not DROP}


def valid_claims() -> dict[str, Any]:
    now = int(time.time())  # PyJWT checks exp against the real clock: not the import's time
    return {
        "iss": ISS,
        "aud": AUD,
        "sub": EMAIL,
        "exp": now + 600,
        "iat": now,
        "userId": USER,
        "account": "acme",
    }


jose_headers = st.fixed_dictionaries({}, optional=HEADER_EXTRAS)
claims = st.fixed_dictionaries({}, optional={**CLAIM_VALUES, "iss": st.just(ISS)})
payloads = st.one_of(claims, json_values)


def segment(value: Any) -> str:
    # json.dumps writes NaN/Infinity and escapes lone surrogates: as a careless issuer would.
    return b64(json.dumps(value).encode())


# -- the properties ----------------------------------------------------------------------------


@FUZZ
@given(raw=st.binary(max_size=300), where=st.sampled_from(["header", "cookie", "account"]))
def test_arbitrary_bytes_as_a_header_or_cookie(fuzz: Verifier, raw: bytes, where: str) -> None:
    # What a header value becomes after aiohttp's parser (no CR, LF or NUL reach a value).
    value = raw.translate(None, b"\r\n\x00").decode("utf-8", "surrogateescape")
    headers: CIMultiDict[str] = CIMultiDict()
    if where == "header":
        headers["VtexIdclientAutCookie"] = value
    else:
        name = "VtexIdclientAutCookie" if where == "cookie" else "VtexIdclientAutCookie_acme"
        headers["Cookie"] = f"a=1; {name}={value}"
    token = find_token(CIMultiDictProxy(headers), "acme")
    if token is not None:
        assert fuzz.check(token) is None  # no byte string is a valid signed token


@FUZZ
@given(
    parts=st.lists(
        st.one_of(
            st.text(alphabet="ABCDEFabcdef0123456789-_=+/", max_size=20),
            st.builds(segment, json_values),
            st.builds(segment, jose_headers),
            st.text(max_size=8),
        ),
        max_size=6,
    )
)
def test_any_number_of_segments(fuzz: Verifier, parts: list[str]) -> None:
    assert fuzz.check(".".join(parts)) is None


@FUZZ
@given(header=jose_headers, payload=payloads, signature=st.binary(max_size=80))
def test_any_jose_header_and_claims_with_a_garbage_signature(
    fuzz: Verifier, header: dict[str, Any], payload: Any, signature: bytes
) -> None:
    token = f"{segment(header)}.{segment(payload)}.{b64(signature)}"
    assert fuzz.check(token) is None


@settings(FUZZ, max_examples=400)
@given(
    key=st.sampled_from(["rsa-1", "ec-1"]),
    # Mostly the issuer's own header, so that most examples reach the claim checks.
    header_changes=st.one_of(st.just({}), st.just({}), _changes(HEADER_EXTRAS)),
    claim_changes=_changes(CLAIM_VALUES, min_size=1),
    payload=st.one_of(st.none(), st.none(), st.none(), json_values),
)
def test_any_jose_header_and_claims_signed_by_the_issuer(
    fuzz: Verifier,
    key: str,
    header_changes: dict[str, Any],
    claim_changes: dict[str, Any],
    payload: Any,
) -> None:
    """Signed for real by the issuer's key, so the claim checks are reached: a well-formed
    token with up to three header members and three claims changed (or a payload that is no
    claim set at all); an accepted one is exactly a well-formed one."""
    private, alg = fuzz.idp.keys[key]
    header = changed({"alg": alg, "kid": key, "typ": "JWT"}, header_changes)
    claims = changed(valid_claims(), claim_changes) if payload is None else payload
    verified = fuzz.check(signed(private, alg, header, claims))
    if verified is not None:  # granted: the issuer's alg and claims, the granted user
        assert header.get("alg") == alg and isinstance(claims, dict)
        assert claims.get("iss") == ISS and user_hash(claims["sub"]) == user_hash(EMAIL)
        assert (verified.user_id, verified.account) == (claims["userId"], "acme")


def signed(private: Any, alg: str, header: Any, claims: Any) -> str:
    signing_input = f"{segment(header)}.{segment(claims)}".encode()
    algo = RSAAlgorithm(RSAAlgorithm.SHA256) if alg == "RS256" else ECAlgorithm(ECAlgorithm.SHA256)
    return f"{signing_input.decode()}.{b64(algo.sign(signing_input, private))}"


def test_the_signed_property_can_accept(fuzz: Verifier) -> None:
    """The property's unchanged token is accepted: the signed property is not all refusals."""
    for key in ("rsa-1", "ec-1"):
        private, alg = fuzz.idp.keys[key]
        token = signed(private, alg, {"alg": alg, "kid": key, "typ": "JWT"}, valid_claims())
        verified = fuzz.check(token)
        assert verified is not None and verified.user_id == USER
