"""The unmask audit trail: who read which subject's clear data, why, and when; no PII inside.

Every unmasked read writes one item to ``A#{account}#AUDIT`` in the same region *before* the
data is returned; if the write fails the caller gets 503 and no data (an unaudited disclosure
is worse than an unavailable one). Items hold ids, never values: principal, account, entity
type and id, action, the operator's free-text reason (truncated to 200 characters), the
optional opaque ``onBehalfOf`` (truncated likewise), time and request id.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from .errors import AuditUnavailable, StoreError
from .repository import Repository, audit_pk, s

MAX_TEXT = 200


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


async def record(repo: Repository, event: AuditEvent) -> None:
    when = datetime.now(UTC)
    stamp = when.isoformat(timespec="microseconds").replace("+00:00", "Z")
    item = {
        "pk": s(audit_pk(event.account)),
        "sk": s(f"{stamp}#{uuid.uuid4()}"),
        "principal": s(event.principal),
        "account": s(event.account),
        "entityType": s(event.entity_type),
        "entityId": s(event.entity_id),
        "action": s(event.action),
        "reason": s(event.reason[:MAX_TEXT]),
        "time": s(stamp),
        "requestId": s(event.request_id[:MAX_TEXT]),
    }
    if event.on_behalf_of:
        item["onBehalfOf"] = s(event.on_behalf_of[:MAX_TEXT])
    try:
        await repo.put(item)
    except StoreError as exc:
        raise AuditUnavailable(
            "the unmask audit record could not be written; no data served"
        ) from exc
