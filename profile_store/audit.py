"""The audit trail: who read clear data or erased a subject, why, and when; no PII inside.

Every unmasked read writes one item to ``A#{account}#AUDIT`` in the same region *before* the
data is returned; if the write fails the caller gets 503 and no data (an unaudited disclosure
is worse than an unavailable one). During a move's freeze that write is refused like any
other (``fence.py``), so an unmask read answers 503 ``account_moving`` until the flip. Every
erasure writes one before anything is deleted, naming the erasure request's uuid and the
erased entity ids (``profile:{id}``, ``prospect:{id}``), never the email or its hash;
lifting a suppression writes one too.

Items hold ids, never values: principal, account, entity type and id, action, the operator's
free-text reason (truncated to 200 characters), the optional opaque ``onBehalfOf`` (truncated
likewise), time and request id. The sort key is ``{ISO time}#{uuid}``, so a time window is one
``Query`` with ``BETWEEN`` (``iter_records``; used by the admin endpoint and the CLI).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import AccountMoving, AuditUnavailable, ResidencyMismatch, StoreError
from .layout import Item, audit_pk, get_s, s
from .repository import Repository

MAX_TEXT = 200
# Above every character of a uuid: "{until}#~" sorts after each record stamped ``until``.
_AFTER_ALL = "#~"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    principal: str
    account: str
    entity_type: str
    entity_id: str
    action: str
    reason: str
    request_id: str
    on_behalf_of: str | None = None
    entities: tuple[str, ...] = ()


def stamp(when: datetime) -> str:
    """The sort-key form of a time: UTC, microseconds, ``Z``."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


async def record(repo: Repository, event: AuditEvent) -> None:
    item = audit_item(event)
    try:
        await repo.put(item)
    except StoreError as exc:
        if isinstance(exc, AccountMoving):
            # A move's freeze: the record cannot be written, nor then carried by the move's
            # final catch-up, so the read waits like a write (AccountMoving.REFUSED).
            raise AccountMoving(
                f"the account is being moved to another region; this {event.action} read "
                "writes an audit record, so it waits like a write: retry in a few seconds "
                "(reads that are not audited are served)"
            ) from exc
        if isinstance(exc, ResidencyMismatch):
            raise  # the account moved: the answer says so, not "audit unavailable"
        raise AuditUnavailable(
            f"the {event.action} audit record could not be written; nothing was done"
        ) from exc


def audit_item(event: AuditEvent, pk: str | None = None) -> Item:
    """The stored form of ``event`` (``pk``: another partition than the account's trail)."""
    when = stamp(datetime.now(UTC))
    item = {
        "pk": s(audit_pk(event.account)),
        "sk": s(f"{when}#{uuid.uuid4()}"),
        "principal": s(event.principal),
        "account": s(event.account),
        "entityType": s(event.entity_type),
        "entityId": s(event.entity_id),
        "action": s(event.action),
        "reason": s(event.reason[:MAX_TEXT]),
        "time": s(when),
        "requestId": s(event.request_id[:MAX_TEXT]),
    }
    if event.on_behalf_of:
        item["onBehalfOf"] = s(event.on_behalf_of[:MAX_TEXT])
    if event.entities:
        item["entities"] = {"L": [s(e) for e in event.entities]}
    if pk is not None:
        item["pk"] = s(pk)
    return item


def as_dict(item: Item) -> dict[str, Any]:
    """An audit item as plain JSON (the admin endpoint's and the CLI's line format)."""
    out: dict[str, Any] = {
        name: get_s(item, attr)
        for name, attr in (
            ("time", "time"),
            ("account", "account"),
            ("principal", "principal"),
            ("action", "action"),
            ("entityType", "entityType"),
            ("entityId", "entityId"),
            ("reason", "reason"),
            ("requestId", "requestId"),
        )
    }
    if "onBehalfOf" in item:
        out["onBehalfOf"] = get_s(item, "onBehalfOf")
    if "entities" in item:
        out["entities"] = [v.get("S", "") for v in item["entities"].get("L", [])]
    out["cursor"] = get_s(item, "sk")
    return out


async def iter_records(
    repo: Repository,
    account: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    after: str | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """The account's audit records in time order, ``since <= time <= until``, page by page.

    ``after`` is the ``cursor`` of the last record already seen (continues a listing).
    """
    low = stamp(since) if since else "0"
    high = stamp(until) + _AFTER_ALL if until else "9999"
    if after:
        # BETWEEN is inclusive: start at the cursor and skip the record it names.
        low = max(low, after)
    if low > high:  # an empty window (DynamoDB refuses BETWEEN with bounds the wrong way round)
        return
    kwargs: dict[str, Any] = {
        "TableName": repo.table,
        "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
        "ExpressionAttributeValues": {
            ":pk": s(audit_pk(account)),
            ":low": s(low),
            ":high": s(high),
        },
        "ConsistentRead": True,
    }
    while True:
        response = await repo.call("query", **kwargs)
        for item in response.get("Items", []):
            if after and get_s(item, "sk") == after:
                continue
            yield as_dict(item)
        start = response.get("LastEvaluatedKey")
        if not start:
            return
        kwargs["ExclusiveStartKey"] = start
