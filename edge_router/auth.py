"""Who is calling? VTEX app key + app token, checked against the account's own keys, or a
user token (``user_token.py``) whose user the account granted roles to.

The two credentials of the contract. App key + token headers, when either is present, decide
alone (a user token beside them is ignored); only a request with neither is looked at for a
user token (``VtexIdclientAutCookie`` header or cookies).

Tokens are never stored: the registry holds their SHA-256, and the comparison of digests is
constant-time. Outcomes, each with a ``reason`` for ``edge_auth_failures_total``:

* no or malformed credentials                      -> 401 missing_credentials / invalid_credentials
* key unknown, wrong token, key revoked            -> 401 invalid_credentials
* key + token valid, but for another account       -> 403 key_not_for_account
* account suspended (checked after authentication) -> 403 account_suspended
* user token valid, its account claim another one  -> 403 token_not_for_account
* user token valid, no active grant for its user   -> 403 user_not_granted
  (user token refusals: 401, see ``user_token``)

401 and 403 are told apart through the registry's app-key owner index, consulted only on the
failure path and only credited when the caller also holds the right token, so the answer never
reveals whether a bare app key exists.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .errors import Forbidden, Unauthorized, refusal
from .registry import AccountRecord, KeyOwner
from .user_token import VerifiedToken

APP_KEY_HEADER = "X-VTEX-API-AppKey"
APP_TOKEN_HEADER = "X-VTEX-API-AppToken"  # noqa: S105 (a header name)
# An app key becomes the assertion's principal, so it must fit the assertion's field alphabet.
APP_KEY_FORMAT = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_MAX_TOKEN = 1024


@dataclass(frozen=True, slots=True)
class Principal:
    name: str  # the assertion's principal: the app key, or "user:{userId}"
    roles: frozenset[str]


def check_key(
    record: AccountRecord, app_key: str | None, app_token: str | None
) -> tuple[Principal | None, str, bytes]:
    """Pure part: (principal, "", digest) on success, else (None, reason, digest)."""
    if not app_key or not app_token:
        return None, "missing_credentials", b""
    if not APP_KEY_FORMAT.match(app_key) or len(app_token) > _MAX_TOKEN:
        return None, "malformed_credentials", b""
    digest = hashlib.sha256(app_token.encode()).digest()
    key = record.keys.get(app_key)
    if key is None:
        return None, "unknown_key", digest
    if not hmac.compare_digest(key.token_sha256, digest):
        return None, "bad_token", digest
    if not key.active:
        return None, "revoked_key", digest
    return _principal(app_key, key.roles), "", digest


# (app key, roles) -> its Principal: immutable, so one object serves every request of a caller
# (a frozen dataclass costs about a microsecond to build). No secret is part of it; bounded.
_MAX_PRINCIPALS = 10_000
_principals: dict[tuple[str, frozenset[str]], Principal] = {}


def _principal(app_key: str, roles: frozenset[str]) -> Principal:
    if type(roles) is not frozenset:
        return Principal(app_key, roles)
    pkey = (app_key, roles)
    principal = _principals.get(pkey)
    if principal is None:
        if len(_principals) >= _MAX_PRINCIPALS:
            _principals.clear()
        principal = _principals[pkey] = Principal(app_key, roles)
    return principal


async def authenticate(
    record: AccountRecord,
    app_key: str | None,
    app_token: str | None,
    key_owner: Callable[[str], Awaitable[KeyOwner | None]],
) -> Principal:
    principal, reason, digest = check_key(record, app_key, app_token)
    if principal is not None:
        if not record.active:
            raise refusal(
                Forbidden, "account_suspended", "account_suspended", "account is suspended"
            )
        return principal
    if reason == "missing_credentials":
        raise refusal(
            Unauthorized,
            "missing_credentials",
            reason,
            "X-VTEX-API-AppKey and AppToken, or a VtexIdclientAutCookie user token, required",
        )
    if reason == "unknown_key" and app_key:
        owner = await key_owner(app_key)
        if (
            owner is not None
            and owner.account != record.name
            and owner.active
            and hmac.compare_digest(owner.token_sha256, digest)
        ):
            raise refusal(
                Forbidden, "key_not_for_account", "wrong_account", "this key is for another account"
            )
    raise refusal(Unauthorized, "invalid_credentials", reason, "invalid app key or token")


def authenticate_user(record: AccountRecord, token: VerifiedToken) -> Principal:
    """A verified user token on ``record``'s account: its principal, with the roles the
    account granted the user (``registry grant-user``)."""
    if token.account != record.name:
        raise refusal(
            Forbidden, "token_not_for_account", "wrong_account", "this token is for another account"
        )
    grant = record.users.get(token.user_hash)
    if grant is None or not grant.active or not grant.roles:
        raise refusal(
            Forbidden, "user_not_granted", "user_not_granted", "this user has no roles here"
        )
    if not record.active:
        raise refusal(Forbidden, "account_suspended", "account_suspended", "account is suspended")
    return _principal("user:" + token.user_id, grant.roles)
