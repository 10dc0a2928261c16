"""The registry's change log: one item per registry write, in the registry table itself.

Every write to the registry (the operators' writer, ``residency_ops.registry_writer``) puts,
in the same transaction, one item in the ``CHANGES`` partition::

    pk CHANGES   sk {epoch_ms:013d}#{8 hex}   {account, kind, at (ms), keys [app keys], ttl}

The sort key orders the log by the writer's clock and makes each change unique; readers ask for
``sk > {since_ms:013d}`` (``cursor``), so one strongly consistent Query returns every change
written since then. Writers' clocks and commit latency are absorbed by the reader's overlap
window (``poller``). ``ttl`` lets DynamoDB drop items after a day: the edge only ever
reads the last seconds. No PII: account names, app keys (identifiers, never tokens), kinds.

One partition holds the whole log. Registry writes are operator actions (a few per second at
most) and each edge worker reads it a few times a second, far below a partition's limits.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from residency_contract.tables import CHANGES_PK

CHANGE_TTL_S = 86_400  # a day: room to look at recent changes by hand
TTL_ATTRIBUTE = "ttl"


@dataclass(frozen=True, slots=True)
class Change:
    """Which account changed, how (``kind``: create_key, revoke_key, set_region, ...), when
    by the writer's clock, and which app keys' owner-index entries changed with it."""

    id: str
    account: str
    kind: str
    at_ms: int
    app_keys: tuple[str, ...] = ()


def change_id(epoch_ms: int) -> str:
    return f"{epoch_ms:013d}#{uuid.uuid4().hex[:8]}"


def cursor(epoch_ms: int) -> str:
    """A sort-key bound: every change id written at ``epoch_ms`` or later sorts above it."""
    return f"{max(epoch_ms, 0):013d}"


def change_put(
    table: str,
    *,
    account: str,
    kind: str,
    app_keys: Sequence[str] = (),
    now: float | None = None,
) -> dict[str, Any]:
    """The TransactWriteItems entry that records one change."""
    at = time.time() if now is None else now
    at_ms = int(at * 1000)
    item: dict[str, Any] = {
        "pk": {"S": CHANGES_PK},
        "sk": {"S": change_id(at_ms)},
        "account": {"S": account},
        "kind": {"S": kind},
        "at": {"N": str(at_ms)},
        TTL_ATTRIBUTE: {"N": str(int(at) + CHANGE_TTL_S)},
    }
    if app_keys:
        item["keys"] = {"SS": sorted(set(app_keys))}
    return {"Put": {"TableName": table, "Item": item}}


def parse_change(item: Mapping[str, Any]) -> Change:
    sk = item["sk"]["S"]
    try:
        at_ms = int(item["at"]["N"]) if "at" in item else int(sk.split("#", 1)[0])
    except (KeyError, ValueError):
        at_ms = 0
    return Change(
        id=sk,
        account=item.get("account", {}).get("S", ""),
        kind=item.get("kind", {}).get("S", ""),
        at_ms=at_ms,
        app_keys=tuple(item.get("keys", {}).get("SS", ())),
    )
