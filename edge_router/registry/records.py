"""What the registry holds, as the edge reads it: account records, keys, grants, owners.

Pure: the items of one account partition (``residency_contract.tables`` has the layout)
turned into frozen records by ``parse_account``, the one parser of those items (the edge's
reads, the operators' listing and the mover's plan all use it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from residency_contract.tables import KEY_SK_PREFIX, META_SK, USER_SK_PREFIX

ACTIVE = "active"
SUSPENDED = "suspended"
REVOKED = "revoked"


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def user_hash(email: str) -> str:
    """The registry's key for a user: SHA-256 hex of the trimmed, lower-cased e-mail."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class UserGrant:
    roles: frozenset[str]
    active: bool


@dataclass(frozen=True, slots=True)
class ApiKey:
    app_key: str
    token_sha256: bytes
    roles: frozenset[str]
    active: bool


@dataclass(frozen=True, slots=True)
class AccountRecord:
    name: str
    region: str
    status: str
    keys: Mapping[str, ApiKey] = field(default_factory=dict)
    users: Mapping[str, UserGrant] = field(default_factory=dict)  # by ``user_hash``
    generation: int = 0
    moving: bool = False  # a move's final catch-up: writes are refused (503 account_moving)

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


@dataclass(frozen=True, slots=True)
class KeyOwner:
    """Owner-index entry: whose key this is, to tell 403 from 401."""

    account: str
    token_sha256: bytes
    active: bool


class RegistryReader(Protocol):
    async def get_account(self, name: str) -> AccountRecord | None: ...

    async def get_key_owner(self, app_key: str) -> KeyOwner | None: ...


def attr_s(item: Mapping[str, Any], name: str, default: str = "") -> str:
    v = item.get(name)
    return v["S"] if v and "S" in v else default


def _roles(item: Mapping[str, Any]) -> frozenset[str]:
    roles_attr = item.get("roles", {})
    return frozenset(roles_attr.get("SS") or [r["S"] for r in roles_attr.get("L", [])])


def parse_account(name: str, items: list[Mapping[str, Any]]) -> AccountRecord | None:
    """The account from the items of its partition (META alone is enough); None without
    META: no such account."""
    meta = None
    keys: dict[str, ApiKey] = {}
    users: dict[str, UserGrant] = {}
    for item in items:
        sk = attr_s(item, "sk")
        if sk == META_SK:
            meta = item
        elif sk.startswith(KEY_SK_PREFIX):
            app_key = sk[len(KEY_SK_PREFIX) :]
            keys[app_key] = ApiKey(
                app_key=app_key,
                token_sha256=bytes.fromhex(attr_s(item, "tokenHash")),
                roles=_roles(item),
                active=attr_s(item, "status", ACTIVE) == ACTIVE,
            )
        elif sk.startswith(USER_SK_PREFIX):
            active = attr_s(item, "status", ACTIVE) == ACTIVE
            users[sk[len(USER_SK_PREFIX) :]] = UserGrant(_roles(item), active)
    if meta is None:
        return None
    return AccountRecord(
        name=name,
        region=attr_s(meta, "region"),
        status=attr_s(meta, "status", ACTIVE),
        keys=keys,
        users=users,
        generation=int(meta.get("generation", {}).get("N", "0")),
        moving=bool(meta.get("moving", {}).get("BOOL", False)),
    )
