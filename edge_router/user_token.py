"""User tokens: the contract's second credential, a ``VtexIdclientAutCookie`` JWT.

A user token is verified here with PyJWT against the public keys of the issuer it names
(``token_issuers``: a JWK set per issuer, read from a file or fetched from a URL with a bound),
and only ever with that issuer's asymmetric algorithms: ``alg: none`` and HMAC tokens are
refused before any key is touched, and keys are passed as key objects, so a public key can
never serve as an HMAC secret. The token's ``alg`` must also be one its key can verify (the
JWK's own ``alg`` when it states one, else every algorithm of the key's type and curve:
``SigningKey``), checked before PyJWT sees the key: an ``RS256`` header on an EC key (or the
mirror) is a refusal, not a ``TypeError`` from deep inside the library. Only JWS compact text
(three base64url segments) is decoded at all; anything else, a stray byte included, is
``malformed_token``. Checked: signature, ``exp`` and ``nbf`` (``token_leeway_s`` of
clock skew), ``iss``, ``aud``, and the presence of ``sub`` (the e-mail a grant is made for),
the user id claim and the account claim. Whether the account claim names the account the
request is for, and which roles the user has there, is ``auth.authenticate_user``'s question.

Key rotation: an unknown ``kid`` re-reads the issuer's set (at most once per
``jwks_refresh_min_s``, one read at a time), and a set older than ``jwks_max_age_s`` is
re-read in the background, so a new key is accepted on its first token and a removed key is
refused within ``jwks_max_age_s``; when a reload drops a key, every cached verification is
forgotten. A verified token is cached by its SHA-256 for at most ``token_cache_ttl_s``, and
its ``exp`` is checked against the clock on every use, so a repeated token costs a hash and a
dict lookup.

Refusals are ``Unauthorized`` (401) with one of the codes ``malformed_token``,
``unknown_issuer``, ``bad_signature``, ``token_expired``, ``token_not_yet_valid``,
``wrong_audience``; each carries a fixed ``reason`` for ``edge_auth_failures_total``
(``errors.refusal``). No input makes ``verify`` raise anything else (a property test throws
bytes, headers and claims at it). No token content reaches an error message, a log line or a
metric label.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from cachetools import TTLCache
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from multidict import CIMultiDictProxy

from .config import ConfigError, EdgeSettings, IssuerSettings
from .errors import Unauthorized, refusal
from .headers import COOKIE_SEPARATORS, USER_TOKEN
from .registry import user_hash

__all__ = ["USER_TOKEN", "KeySet", "SigningKey", "TokenVerifier", "VerifiedToken", "find_token"]

log = logging.getLogger("edge_router")

MAX_TOKEN_CHARS = 8192
MAX_JWKS_BYTES = 1 << 20
# The user id becomes the assertion's principal as "user:{id}": the assertion's field alphabet.
_USER_ID = re.compile(r"[A-Za-z0-9_.:-]{1,123}")  # fullmatch: "$" would let a "\n" through
_COOKIE_PREFIX = USER_TOKEN + "_"
# JWS compact serialization: three base64url segments (RFC 7515 §7.1), ASCII only.
_JWS = re.compile(r"[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_MALFORMED = "malformed user token"
_BAD_SIGNATURE = "bad token signature"


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What a valid token says, and nothing of the token itself."""

    issuer: str  # the issuer's configured name
    user_id: str
    user_hash: str  # registry key of ``sub`` (the e-mail), hashed once per token
    account: str
    expires_at: float  # unix time (``exp``)


def find_token(headers: CIMultiDictProxy[str], account: str) -> str | None:
    """The user token of a request: the ``VtexIdclientAutCookie`` header, else the cookie
    ``VtexIdclientAutCookie_{account}``, else the cookie ``VtexIdclientAutCookie``. An empty
    one (nothing but blanks or ``""``) counts as absent, header and cookies alike, so it
    never hides the next in that order."""
    token = headers.get(USER_TOKEN, "").strip()
    if token:
        return token
    generic = None
    for cookie in headers.getall("Cookie", ()):
        if USER_TOKEN not in cookie:
            continue
        for part in COOKIE_SEPARATORS.split(cookie)[::2]:
            name, _, value = part.strip().partition("=")
            value = value.strip().strip('"')
            if not value:
                continue
            if name == USER_TOKEN:
                generic = generic or value
            elif name.startswith(_COOKIE_PREFIX) and name[len(_COOKIE_PREFIX) :] == account:
                return value
    return generic


class KeySetError(Exception):
    """A JWK set could not be read or holds no usable signing key (message names no key)."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A public key of an issuer's set, and the ``alg`` values a token may name to be
    verified with it: the JWK's own ``alg`` when it states one, else every algorithm of the
    key's type (RSA: RS*, PS*; EC: the one of its curve; OKP: EdDSA)."""

    jwk: jwt.PyJWK
    algorithms: frozenset[str]


_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def key_algorithms(jwk: jwt.PyJWK, stated: object) -> frozenset[str]:
    """The algorithms ``jwk`` can verify (none for a private or symmetric key, which an
    issuer's published set has no business holding), narrowed to ``stated`` if it is one."""
    key = jwk.key
    if isinstance(key, rsa.RSAPublicKey):
        family = _RSA_ALGORITHMS
    elif isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_ALGORITHMS:
        family = frozenset({_EC_ALGORITHMS[key.curve.name]})
    elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        family = frozenset({"EdDSA"})
    else:
        family = frozenset()
    return family & {stated} if isinstance(stated, str) else family


def parse_jwks(raw: bytes) -> dict[str | None, SigningKey]:
    """Signing keys by ``kid`` (``None``: a key without one). Keys PyJWT cannot use (another
    key type, an encryption key) or that verify nothing (``key_algorithms``) are skipped; a
    set left empty is an error."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise KeySetError("unusable JWK set: not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise KeySetError('not a JWK set ({"keys": [...]})')
    keys: dict[str | None, SigningKey] = {}
    for entry in data["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        if not isinstance(entry.get("kid", ""), str):
            continue  # a kid no token can name (and maybe not even a dict key)
        try:
            jwk = jwt.PyJWK.from_dict(entry)
        except jwt.PyJWTError:
            continue
        algorithms = key_algorithms(jwk, entry.get("alg"))
        if algorithms:
            keys[jwk.key_id] = SigningKey(jwk, algorithms)
    if not keys:
        raise KeySetError("unusable JWK set: no public signing key PyJWT can use")
    return keys


class KeySet:
    """One issuer's public keys, re-read on an unknown ``kid`` (rate-limited) and with age."""

    def __init__(
        self,
        issuer: IssuerSettings,
        *,
        session: aiohttp.ClientSession | None,
        timeout_s: float,
        refresh_min_s: float,
        max_age_s: float,
        on_removed: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._refresh_min_s = refresh_min_s
        self._max_age_s = max_age_s
        self._on_removed = on_removed
        self._clock = clock
        self.keys: dict[str | None, SigningKey] = {}
        self.loaded_at = -math.inf
        self._last_attempt = -math.inf
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[bool] | None = None

    async def _read(self) -> bytes:
        if self.issuer.jwks_file is not None:
            try:
                # A small local file: read in a thread, so a slow disk never stalls the loop.
                return await asyncio.to_thread(Path(self.issuer.jwks_file).read_bytes)
            except OSError as exc:
                raise KeySetError(f"cannot read {self.issuer.jwks_file}: {exc.strerror}") from None
        assert self.issuer.jwks_url is not None and self._session is not None
        try:
            async with self._session.get(self.issuer.jwks_url, timeout=self._timeout) as resp:
                if resp.status != 200:
                    raise KeySetError(f"{self.issuer.jwks_url} answered {resp.status}")
                body = await resp.content.read(MAX_JWKS_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KeySetError(f"{self.issuer.jwks_url}: {type(exc).__name__}") from None
        if len(body) > MAX_JWKS_BYTES:
            raise KeySetError(f"{self.issuer.jwks_url}: JWK set over {MAX_JWKS_BYTES} bytes")
        return body

    async def load(self) -> None:
        """Read the set now (raises ``KeySetError``; the keys held so far stay)."""
        keys = parse_jwks(await self._read())
        removed = self.keys.keys() - keys.keys()
        self.keys = keys
        self.loaded_at = self._last_attempt = self._clock()
        if removed:
            self._on_removed()

    async def refresh(self) -> bool:
        """Re-read, unless one was tried within ``jwks_refresh_min_s``; one read at a time,
        and a caller that waited for another's read takes its result. True: keys re-read."""
        asked = self._clock()
        if asked - self._last_attempt < self._refresh_min_s:
            return False
        async with self._lock:
            if self._last_attempt >= asked:
                return self.loaded_at >= asked
            self._last_attempt = self._clock()
            try:
                await self.load()
            except KeySetError as exc:
                log.warning("token issuer %s: key set not refreshed (%s)", self.issuer.name, exc)
                return False
        return True

    async def key_for(self, kid: str | None) -> SigningKey | None:
        if self._clock() - self.loaded_at > self._max_age_s and self._background is None:
            # Old keys still verify meanwhile; the new set is there for the next token.
            self._background = asyncio.ensure_future(self.refresh())
            self._background.add_done_callback(self._background_done)
        key = self._find(kid)
        if key is None and await self.refresh():
            key = self._find(kid)
        return key

    def _background_done(self, _task: asyncio.Task[bool]) -> None:
        self._background = None

    def _find(self, kid: str | None) -> SigningKey | None:
        key = self.keys.get(kid)
        if key is None and kid is None and len(self.keys) == 1:
            key = next(iter(self.keys.values()))  # an issuer with one key may omit the kid
        return key

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()


_DECODE_ERRORS: tuple[tuple[type[Exception], str, str, str], ...] = (
    # (PyJWT error, code, reason, message); subclasses before their bases.
    (jwt.ExpiredSignatureError, "token_expired", "token_expired", "the user token has expired"),
    (
        jwt.ImmatureSignatureError,
        "token_not_yet_valid",
        "token_not_yet_valid",
        "the user token is not valid yet",
    ),
    (jwt.InvalidAudienceError, "wrong_audience", "wrong_audience", "the token is not for us"),
    (jwt.InvalidIssuerError, "unknown_issuer", "unknown_issuer", "unknown token issuer"),
    (jwt.MissingRequiredClaimError, "malformed_token", "missing_claim", _MALFORMED),
    (jwt.InvalidSignatureError, "bad_signature", "bad_signature", _BAD_SIGNATURE),
    (jwt.InvalidAlgorithmError, "bad_signature", "algorithm_not_allowed", _BAD_SIGNATURE),
    (jwt.InvalidKeyError, "bad_signature", "key_mismatch", _BAD_SIGNATURE),
    (jwt.PyJWTError, "malformed_token", "malformed_token", _MALFORMED),
)


class TokenVerifier:
    """Verifies user tokens for every configured issuer; built and started once (``app``)."""

    def __init__(
        self, settings: EdgeSettings, *, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self._settings = settings
        self._leeway = settings.token_leeway_s
        self._now = wall_clock
        self._cache: TTLCache[bytes, VerifiedToken] = TTLCache(
            settings.token_cache_size, settings.token_cache_ttl_s, timer=time.monotonic
        )
        self._session: aiohttp.ClientSession | None = None
        self.keysets: dict[str, KeySet] = {}

    async def start(self) -> None:
        """Read every issuer's keys: a file that cannot be read stops the start; a URL that
        does not answer is only warned about (app keys work meanwhile; retried on a token)."""
        s = self._settings
        if any(i.jwks_url for i in s.token_issuers):
            self._session = aiohttp.ClientSession()
        for issuer in s.token_issuers:
            ks = KeySet(
                issuer,
                session=self._session,
                timeout_s=s.jwks_timeout_s,
                refresh_min_s=s.jwks_refresh_min_s,
                max_age_s=s.jwks_max_age_s,
                on_removed=self._cache.clear,
            )
            try:
                await ks.load()
            except KeySetError as exc:
                if issuer.jwks_file is not None:
                    where = f"token_issuers.{issuer.name}.jwks_file"
                    raise ConfigError(f"setting {where!r}: {exc}") from None
                log.warning("token issuer %s: no keys yet (%s)", issuer.name, exc)
            self.keysets[issuer.issuer] = ks

    async def close(self) -> None:
        for ks in self.keysets.values():
            await ks.close()
        if self._session is not None:
            await self._session.close()

    async def verify(self, token: str) -> VerifiedToken:
        if len(token) > MAX_TOKEN_CHARS:
            raise refusal(Unauthorized, "malformed_token", "token_too_long", _MALFORMED)
        if not _JWS.fullmatch(token):  # before anything encodes it: it may hold any character
            raise refusal(Unauthorized, "malformed_token", "malformed_token", _MALFORMED)
        digest = hashlib.sha256(token.encode("ascii")).digest()
        verified = self._cache.get(digest)
        if verified is None:
            verified = await self._decode(token)
            self._cache[digest] = verified
        if verified.expires_at + self._leeway < self._now():
            raise refusal(
                Unauthorized, "token_expired", "token_expired", "the user token has expired"
            )
        return verified

    async def _decode(self, token: str) -> VerifiedToken:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise refusal(Unauthorized, "malformed_token", "malformed_token", _MALFORMED) from None
        iss = unverified.get("iss")
        ks = self.keysets.get(iss) if isinstance(iss, str) else None
        if ks is None:
            raise refusal(Unauthorized, "unknown_issuer", "unknown_issuer", "unknown token issuer")
        issuer = ks.issuer
        alg, kid = header.get("alg"), header.get("kid")
        # "none", HS256, ...: before any key is touched
        if not isinstance(alg, str) or alg not in issuer.algorithms:
            raise refusal(Unauthorized, "bad_signature", "algorithm_not_allowed", _BAD_SIGNATURE)
        if kid is not None and not isinstance(kid, str):
            raise refusal(Unauthorized, "malformed_token", "malformed_token", _MALFORMED)
        key = await ks.key_for(kid)
        if key is None:
            raise refusal(Unauthorized, "bad_signature", "unknown_key", _BAD_SIGNATURE)
        if alg not in key.algorithms:  # an RS256 header on an EC key, say: PyJWT would raise
            raise refusal(Unauthorized, "bad_signature", "key_mismatch", _BAD_SIGNATURE)
        try:
            claims = jwt.decode(
                token,
                key.jwk.key,  # a key object of alg's type: PyJWT refuses it as an HMAC secret
                algorithms=[alg],
                audience=list(issuer.audiences),
                issuer=issuer.issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            for cls, code, reason, message in _DECODE_ERRORS:
                if isinstance(exc, cls):
                    raise refusal(Unauthorized, code, reason, message) from None
            raise  # unreachable: PyJWTError is the last row
        return _claims(issuer, claims)


def _claims(issuer: IssuerSettings, claims: Mapping[str, Any]) -> VerifiedToken:
    """What the edge keeps of a verified token's claims. A claim the issuer signed but the
    edge cannot use (an ``exp`` past a float, a ``sub`` that is not UTF-8 text) is refused
    like a missing one, never let through to raise later."""
    user_id, account = claims.get(issuer.user_claim), claims.get(issuer.account_claim)
    sub, exp = claims.get("sub"), claims.get("exp")
    if user_id is None or account is None or sub is None or exp is None:
        raise refusal(Unauthorized, "malformed_token", "missing_claim", _MALFORMED)
    expires_at = _unix_time(exp)
    if (
        not isinstance(user_id, str)
        or not _USER_ID.fullmatch(user_id)
        or not isinstance(account, str)
        or not account
        or not isinstance(sub, str)
        or not sub
        or not _is_utf8(sub)
        or expires_at is None
    ):
        raise refusal(Unauthorized, "malformed_token", "invalid_claim", _MALFORMED)
    return VerifiedToken(issuer.name, user_id, user_hash(sub), account, expires_at)


def _unix_time(value: object) -> float | None:
    """A NumericDate as a finite float, else None (a bool, text, 10**400, NaN...)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON)
        return False
    return True
