"""User tokens: the contract's second credential, a ``VtexIdclientAutCookie`` JWT.

A user token is verified here with PyJWT against the public keys of the issuer it names
(``token_issuers``: a JWK set per issuer, read from a file or fetched from a URL with a bound),
and only ever with that issuer's asymmetric algorithms: ``alg: none`` and HMAC tokens are
refused before any key is touched, and keys are passed as key objects, so a public key can
never serve as an HMAC secret. Checked: signature, ``exp`` and ``nbf`` (``token_leeway_s`` of
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
``wrong_audience``; each carries a fixed ``reason`` for ``edge_auth_failures_total``. No token
content reaches an error message, a log line or a metric label.
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
from multidict import CIMultiDictProxy

from .config import ConfigError, EdgeSettings, IssuerSettings
from .errors import Unauthorized
from .headers import USER_TOKEN
from .registry import user_hash

__all__ = ["USER_TOKEN", "KeySet", "TokenVerifier", "VerifiedToken", "find_token"]

log = logging.getLogger("edge_router")

MAX_TOKEN_CHARS = 8192
MAX_JWKS_BYTES = 1 << 20
# The user id becomes the assertion's principal as "user:{id}": the assertion's field alphabet.
_USER_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,123}$")
_COOKIE_PREFIX = USER_TOKEN + "_"


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What a valid token says, and nothing of the token itself."""

    issuer: str  # the issuer's configured name
    user_id: str
    user_hash: str  # registry key of ``sub`` (the e-mail), hashed once per token
    account: str
    expires_at: float  # unix time (``exp``)


def refused(code: str, reason: str, message: str) -> Unauthorized:
    exc = Unauthorized(code, message)
    exc.reason = reason  # type: ignore[attr-defined]
    return exc


def find_token(headers: CIMultiDictProxy[str], account: str) -> str | None:
    """The user token of a request: the ``VtexIdclientAutCookie`` header, else the cookie
    ``VtexIdclientAutCookie_{account}``, else the cookie ``VtexIdclientAutCookie``."""
    token = headers.get(USER_TOKEN)
    if token:
        return token.strip()
    generic = None
    for cookie in headers.getall("Cookie", ()):
        if USER_TOKEN not in cookie:
            continue
        for part in cookie.split(";"):
            name, _, value = part.strip().partition("=")
            if name == USER_TOKEN:
                generic = generic or value.strip().strip('"')
            elif name.startswith(_COOKIE_PREFIX) and name[len(_COOKIE_PREFIX) :] == account:
                return value.strip().strip('"') or None
    return generic or None


class KeySetError(Exception):
    """A JWK set could not be read or holds no usable signing key (message names no key)."""


def parse_jwks(raw: bytes) -> dict[str | None, jwt.PyJWK]:
    """Signing keys by ``kid`` (``None``: a key without one). Keys PyJWT cannot use (another
    key type, an encryption key) are skipped; a set left empty is an error."""
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise KeySetError('not a JWK set ({"keys": [...]})')
        usable = [k for k in data["keys"] if isinstance(k, dict) and k.get("use", "sig") == "sig"]
        keyset = jwt.PyJWKSet.from_dict({"keys": usable})
    except (ValueError, jwt.PyJWKSetError, jwt.PyJWKError) as exc:
        raise KeySetError(f"unusable JWK set: {type(exc).__name__}") from None
    return {k.key_id: k for k in keyset.keys}


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
        self.keys: dict[str | None, jwt.PyJWK] = {}
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

    async def key_for(self, kid: str | None) -> jwt.PyJWK | None:
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

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
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
    (jwt.MissingRequiredClaimError, "malformed_token", "missing_claim", "malformed user token"),
    (jwt.InvalidSignatureError, "bad_signature", "bad_signature", "bad token signature"),
    (jwt.InvalidAlgorithmError, "bad_signature", "algorithm_not_allowed", "bad token signature"),
    (jwt.InvalidKeyError, "bad_signature", "key_mismatch", "bad token signature"),
    (jwt.PyJWTError, "malformed_token", "malformed_token", "malformed user token"),
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
            raise refused("malformed_token", "token_too_long", "malformed user token")
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        verified = self._cache.get(digest)
        if verified is None:
            verified = await self._decode(token)
            self._cache[digest] = verified
        if verified.expires_at + self._leeway < self._now():
            raise refused("token_expired", "token_expired", "the user token has expired")
        return verified

    async def _decode(self, token: str) -> VerifiedToken:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise refused("malformed_token", "malformed_token", "malformed user token") from None
        iss = unverified.get("iss")
        ks = self.keysets.get(iss) if isinstance(iss, str) else None
        if ks is None:
            raise refused("unknown_issuer", "unknown_issuer", "unknown token issuer")
        issuer = ks.issuer
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in issuer.algorithms:  # "none", HS256, ...: before any key is touched
            raise refused("bad_signature", "algorithm_not_allowed", "bad token signature")
        if kid is not None and not isinstance(kid, str):
            raise refused("malformed_token", "malformed_token", "malformed user token")
        key = await ks.key_for(kid)
        if key is None:
            raise refused("bad_signature", "unknown_key", "bad token signature")
        try:
            claims = jwt.decode(
                token,
                key.key,  # a key object: PyJWT refuses it as an HMAC secret
                algorithms=[alg],
                audience=list(issuer.audiences),
                issuer=issuer.issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            for cls, code, reason, message in _DECODE_ERRORS:
                if isinstance(exc, cls):
                    raise refused(code, reason, message) from None
            raise  # unreachable: PyJWTError is the last row
        return _claims(issuer, claims)


def _claims(issuer: IssuerSettings, claims: Mapping[str, Any]) -> VerifiedToken:
    user_id, account = claims.get(issuer.user_claim), claims.get(issuer.account_claim)
    sub, exp = claims.get("sub"), claims.get("exp")
    if (
        not isinstance(user_id, str)
        or not _USER_ID.match(user_id)
        or not isinstance(account, str)
        or not account
        or not isinstance(sub, str)
        or not sub
        or not isinstance(exp, int | float)
    ):
        raise refused("malformed_token", "missing_claim", "malformed user token")
    return VerifiedToken(issuer.name, user_id, user_hash(sub), account, float(exp))
