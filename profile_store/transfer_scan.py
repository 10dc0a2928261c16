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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from . import transfer_items as wire
from .errors import BadRequest
from .repository import Item, Key, Repository, key, s

SEGMENTS = 4  # for_each_page's parallel segments


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
    keys_only: bool = False,
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
    if keys_only:
        kwargs["ProjectionExpression"] = "pk, sk"
    start = decode_cursor(cursor, account)
    if start is not None:
        kwargs["ExclusiveStartKey"] = start
    response = await repo.call("scan", **kwargs)
    return Page(response.get("Items", []), encode_cursor(response.get("LastEvaluatedKey")))


async def for_each_page(
    repo: Repository,
    account: str,
    work: Callable[[list[Item]], Awaitable[None]],
    *,
    prefix: str | None = None,
) -> None:
    """``work`` on each page of the account's keys (under ``prefix``), SEGMENTS segments at
    once; pages are keys only and handled as they come, so memory stays one page per segment
    whatever the account's size."""

    async def segment(i: int) -> None:
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
                keys_only=True,
            )
            if page.items:
                await work(page.items)
            cursor = page.cursor
            if cursor is None:
                return

    await asyncio.gather(*(segment(i) for i in range(SEGMENTS)))
