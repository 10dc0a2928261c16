"""Plain values and pure rules the entity families share: no I/O here.

``Caller`` (who asks, from the verified assertion), ``Reveal`` (permission to see clear data,
audited first), ``Record`` (what a family answers: id, document, meta), and the checks every
body goes through before anything is written: JSON object, the spec's own schema
(``contract``), the account's custom fields, the ``ttl`` parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import contract
from ..errors import BadRequest, Conflict, SubjectSuppressed
from ..idempotency import WriteIntent
from ..layout import Item, get_n, get_s
from ..schema import MAX_TTL_DAYS, CustomSchema, SchemaError, check_profile_fields

# Ids in paths: anything else cannot name an item, so it is 404 before any read.
ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Caller:
    account: str
    principal: str
    request_id: str
    # A write request's token source and Idempotency-Key (``idempotency.py``); None: a read,
    # or a write from a tool (random tokens, no record).
    write: WriteIntent | None = None


@dataclass(frozen=True, slots=True)
class Reveal:
    """Permission to return clear data: the audit record is written before the data leaves."""

    reason: str
    on_behalf_of: str | None = None


@dataclass(frozen=True, slots=True)
class Record:
    id: str
    document: dict[str, Any]
    meta: dict[str, Any]

    def body(self) -> dict[str, Any]:
        return {"id": self.id, "document": self.document, "meta": self.meta}


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def parse_ttl(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit() or not 0 < int(raw) <= MAX_TTL_DAYS:
        raise BadRequest(
            f"ttl must be a whole number of days between 1 and {MAX_TTL_DAYS}", code="invalid_ttl"
        )
    return int(raw)


def expiry(
    ttl_days: int | None, schema: CustomSchema, current: int | None, now: float
) -> int | None:
    days = ttl_days if ttl_days is not None else schema.document_ttl_days
    if days is None:
        return current
    return int(now) + days * 86400


def _iso_from_epoch(epoch: int | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def meta(item: Item, *, style: str) -> dict[str, Any]:
    """The ``meta`` of an answer; the spec spells it three ways (profile, address, expiring)."""
    out: dict[str, Any] = {
        "version": get_s(item, "version"),
        "author": get_s(item, "author"),
        "creationDate": get_s(item, "createdAt"),
    }
    if style == "profile":
        out["lastUpdate"] = get_s(item, "updatedAt")
    else:
        out["lastUpdateDate"] = get_s(item, "updatedAt")
    if style == "expiring":
        out["expirationDate"] = _iso_from_epoch(get_n(item, "expiresAt"))
    return out


def require_object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(f"the {what} body must be a JSON object", code="invalid_body")
    return body


def invalid(message: str) -> BadRequest:
    return BadRequest(message, code="invalid_field")


def conform(entity: str, doc: dict[str, Any], *, partial: bool = False) -> None:
    try:
        contract.check(entity, doc, partial=partial)
    except contract.ContractViolation as exc:
        raise invalid(str(exc)) from None


def custom_fields(doc: dict[str, Any], schema: CustomSchema) -> None:
    try:
        check_profile_fields(doc, schema)
    except SchemaError as exc:
        raise invalid(str(exc)) from None


def suppressed() -> SubjectSuppressed:
    return SubjectSuppressed(
        "this email belongs to an erased data subject; an operator must lift the suppression "
        "before it can be stored again"
    )


def duplicate() -> Conflict:
    return Conflict(
        "another profile of this account already uses this email or document",
        code="duplicate_alternative_key",
    )
