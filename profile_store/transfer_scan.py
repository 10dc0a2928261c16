"""Scanning one account's items: a parallel Scan segment page at a time, or all of them.

An account's items are every key under ``A#{account}#``; a Scan filtered on that prefix is the
one way to find them all (they live in many partitions). Pages are strongly consistent. The
cursor handed to the mover is the page's LastEvaluatedKey as base64url JSON, checked to be a
key of the account when it comes back.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from . import transfer_items as wire
from .errors import BadRequest
from .repository import Item, Key, Repository, key, s

SEGMENTS = 4  # scan_account's parallel segments


def encode_cursor(last: Key | None) -> str | None:
    if not last:
        return None
    raw = json.dumps({"pk": last["pk"]["S"], "sk": last["sk"]["S"]}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode("ascii")


def decode_cursor(cursor: str | None, account: str) -> Key | None:
    if cursor is None:
        return None
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        pk, sk = wire.parse_key([raw["pk"], raw["sk"]], account)
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeError, wire.WireError):
        raise BadRequest("cursor is not one this store returned", code="invalid_cursor") from None
    return key(pk, sk)


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Item]
    cursor: str | None


async def scan_page(
    repo: Repository,
    account: str,
    *,
    segment: int,
    total_segments: int,
    cursor: str | None,
    limit: int,
    prefix: str | None = None,
) -> Page:
    """One page of a parallel Scan segment, filtered to the account's items."""
    kwargs: dict[str, Any] = {
        "TableName": repo.table,
        "Segment": segment,
        "TotalSegments": total_segments,
        "Limit": limit,
        "ConsistentRead": True,
        "FilterExpression": "begins_with(pk, :p)",
        "ExpressionAttributeValues": {":p": s(prefix or wire.account_prefix(account))},
    }
    start = decode_cursor(cursor, account)
    if start is not None:
        kwargs["ExclusiveStartKey"] = start
    response = await repo.call("scan", **kwargs)
    return Page(response.get("Items", []), encode_cursor(response.get("LastEvaluatedKey")))


async def scan_account(repo: Repository, account: str, prefix: str | None = None) -> list[Item]:
    """Every item of the account (under ``prefix``), SEGMENTS segments at once."""

    async def segment(i: int) -> list[Item]:
        found: list[Item] = []
        cursor: str | None = None
        while True:
            page = await scan_page(
                repo,
                account,
                segment=i,
                total_segments=SEGMENTS,
                cursor=cursor,
                limit=1000,
                prefix=prefix,
            )
            found.extend(page.items)
            cursor = page.cursor
            if cursor is None:
                return found

    parts = await asyncio.gather(*(segment(i) for i in range(SEGMENTS)))
    return [item for part in parts for item in part]
