"""The store's items in its region's table: every key form, and the attribute-value helpers.

Single-table design (other components depend on these exact keys)::

    pk                                    sk                          what
    A#{account}#META                      SALT                        per-account salt (B)
    A#{account}#P#{profileId}             CUR | V#{versionId}         profile current | version
                                          ADDR#{addressId}            address current
                                          ADDRV#{addressId}#{ver}     address version
                                          PI | PIV#{versionId}        purchase info | version
    A#{account}#K#email#{hex}             K                           alternative key -> profileId
    A#{account}#K#document#{hex}          K
    A#{account}#R                         CUR#{id} | VER#{id}#{ver}   prospects
    A#{account}#SCHEMA                    CUSTOM                      custom profile fields
    A#{account}#DK#{subjectId}            DK                          wrapped data key (crypto.py)
    A#{account}#AUDIT                     {iso time}#{uuid}           unmask/erasure audit trail
    A#{account}#SUPPRESS#{emailHex}       S                           erased email: no new writes
    A#{account}#ERASURE                   {requestUuid}               erasure request status
    A#{account}#IDEM#{hash}               IDEM                        Idempotency-Key -> created id

Every key starts with the account taken from the verified edge assertion, so no request can
name another tenant's item: the prefix is the contract's ``data_prefix(account)``
(``residency_contract.tables``, which also holds the salt item, read by the operators' "has
data" check, and the fence and move records kept outside the account's prefix). All of one
subject's data shares one partition, so erasure is a Query plus deletes. Documents (PII) are
attributes sealed by ``crypto.EnvelopeCodec`` under the subject's data key, never top-level
attributes; the TTL attribute is ``expiresAt`` (epoch seconds).

Pure: no I/O here (``repository.py`` does it).
"""

from __future__ import annotations

import time
from typing import Any

from residency_contract.tables import data_prefix, item_key

Item = dict[str, Any]
Key = dict[str, Any]

IDEMPOTENCY_SK = "IDEM"

# ---- key builders ---------------------------------------------------------------------------

key = item_key


def profile_pk(account: str, profile_id: str) -> str:
    return f"{data_prefix(account)}P#{profile_id}"


def alt_key(account: str, kind: str, hex_digest: str) -> Key:
    return key(f"{data_prefix(account)}K#{kind}#{hex_digest}", "K")


def prospects_pk(account: str) -> str:
    return f"{data_prefix(account)}R"


def schema_key(account: str) -> Key:
    return key(f"{data_prefix(account)}SCHEMA", "CUSTOM")


def audit_pk(account: str) -> str:
    return f"{data_prefix(account)}AUDIT"


def suppression_key(account: str, email_hex: str) -> Key:
    return key(f"{data_prefix(account)}SUPPRESS#{email_hex}", "S")


def erasure_key(account: str, request_id: str) -> Key:
    return key(f"{data_prefix(account)}ERASURE", request_id)


def idempotency_pk(account: str, key_hash: str) -> str:
    return f"{data_prefix(account)}IDEM#{key_hash}"


def idempotency_key(account: str, key_hash: str) -> Key:
    return key(idempotency_pk(account, key_hash), IDEMPOTENCY_SK)


# ---- attribute values -----------------------------------------------------------------------


def s(value: str) -> dict[str, str]:
    return {"S": value}


def n(value: int | float) -> dict[str, str]:
    return {"N": str(value)}


def get_s(item: Item, name: str, default: str = "") -> str:
    value = item.get(name)
    return str(value["S"]) if value and "S" in value else default


def get_n(item: Item, name: str) -> int | None:
    value = item.get(name)
    return int(float(value["N"])) if value and "N" in value else None


def is_live(item: Item | None, now: float | None = None) -> bool:
    """An item past its ``expiresAt`` is treated as gone, whether or not TTL swept it yet."""
    if item is None:
        return False
    expires = get_n(item, "expiresAt")
    return expires is None or expires > (time.time() if now is None else now)
