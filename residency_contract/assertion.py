"""The signed edge assertion: the second wall between clients and a regional store.

The edge authenticates the caller, then tells the store *who* is calling, *for which account*,
*for which region* and *with which roles* in a single header, ``X-Residency-Assertion``, signed
with HMAC-SHA256 under a secret that belongs to the target region. The store trusts nothing
else: a request reaching a store directly, bypassing the edge, carries no valid assertion and is
served nothing.

Wire format (one header value, ``;``-separated, no spaces)::

    v1;{account};{region};{principal};{role,role,...};{issued_at_unix};{signature_b64url}

The signature covers the fields above plus the HTTP method and the raw request target (path and
query, byte for byte as forwarded), so an assertion cannot be replayed on another request
within its freshness window. Fields are restricted to a small safe alphabet so no separator can
be smuggled inside one.

This module is pure (no I/O): the edge signs with it (through ``signer.Signer``), the stores
verify with it, and tests mint assertions with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

VERSION = "v1"

# ``move`` is the account mover's role: the stores' transfer endpoints need it and it grants
# nothing else. Only the mover signs it; app keys and users are never granted it.
MOVER_ROLE = "move"
ROLES = frozenset({"read", "write", "delete", "unmask", "erase", MOVER_ROLE})
GRANTABLE_ROLES = ROLES - {MOVER_ROLE}

_FIELD = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class AssertionError_(Exception):
    """Base: the request carries no acceptable assertion (maps to 401)."""

    code = "invalid_assertion"


class MissingAssertion(AssertionError_):
    code = "missing_assertion"


class BadAssertion(AssertionError_):
    code = "invalid_assertion"


class StaleAssertion(AssertionError_):
    code = "stale_assertion"


class WrongRegion(AssertionError_):
    """A valid assertion for another region: the request was misrouted (maps to 421)."""

    code = "misdirected_request"


@dataclass(frozen=True, slots=True)
class Assertion:
    account: str
    region: str
    principal: str
    roles: frozenset[str]
    issued_at: int


def _mac(key: bytes, signed: str, method: str, target: str) -> str:
    msg = f"{signed}\n{method.upper()}\n{target}".encode()
    digest = hmac.new(key, msg, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign(
    key: bytes,
    *,
    account: str,
    region: str,
    principal: str,
    roles: frozenset[str] | set[str] | tuple[str, ...],
    method: str,
    target: str,
    now: int | None = None,
) -> str:
    """Return the header value asserting this caller for this exact request."""
    for name, value in (("account", account), ("region", region), ("principal", principal)):
        if not _FIELD.match(value):
            raise ValueError(f"assertion field {name} has characters outside [A-Za-z0-9_.:-]")
    role_list = ",".join(sorted(roles))
    if any(r not in ROLES for r in roles):
        raise ValueError("unknown role in assertion")
    issued_at = int(time.time() if now is None else now)
    signed = f"{VERSION};{account};{region};{principal};{role_list};{issued_at}"
    return f"{signed};{_mac(key, signed, method, target)}"


def verify(
    header: str | None,
    *,
    key: bytes,
    region: str,
    method: str,
    target: str,
    max_age_s: float,
    now: float | None = None,
) -> Assertion:
    """Check region, signature and freshness; raise a subclass of AssertionError_ otherwise.

    The region is checked first: an assertion minted for another region is signed with that
    region's secret, which this store does not hold (secrets are per region), so the only
    answer it can give is "misrouted" (421). That answer serves no data and names no secret.
    """
    if not header:
        raise MissingAssertion("request carries no edge assertion")
    parts = header.split(";")
    if len(parts) != 7 or parts[0] != VERSION:
        raise BadAssertion("malformed edge assertion")
    _, account, asserted_region, principal, role_list, issued, signature = parts
    if asserted_region != region:
        raise WrongRegion("assertion is for another region")
    signed = header[: header.rfind(";")]
    expected = _mac(key, signed, method, target)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise BadAssertion("edge assertion signature does not verify")
    try:
        issued_at = int(issued)
    except ValueError:
        raise BadAssertion("malformed edge assertion timestamp") from None
    current = time.time() if now is None else now
    if abs(current - issued_at) > max_age_s:
        raise StaleAssertion("edge assertion is not fresh")
    roles = frozenset(r for r in role_list.split(",") if r)
    return Assertion(account, asserted_region, principal, roles, issued_at)
