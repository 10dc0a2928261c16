"""Scanning one account's items: a parallel Scan segment page at a time, or a purge's sweep.

An account's items are every key under the contract's ``data_prefix(account)``; a Scan
filtered on that prefix is the one way to find them all (they live in many partitions). Pages
are strongly consistent. The cursor handed to the mover is the page's LastEvaluatedKey as
base64url JSON, checked to be a table key when it comes back. A purge sweeps every segment a
page per call, so no call's time grows with the account's size.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from residency_contract.tables import data_prefix

from ..errors import BadRequest
from ..layout import Item, Key, key, s
from ..repository import Repository

SEGMENTS = 4  # a purge sweep's parallel segments


def _token(obj: Any) -> str:
    raw = json.dumps(obj, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode("ascii")


def _untoken(token: str) -> Any:
    """``_token``'s object; ValueError, TypeError, binascii.Error or UnicodeError if none."""
    return json.loads(base64.urlsafe_b64decode(token.encode("ascii")))


def _not_ours() -> BadRequest:
    return BadRequest("cursor is not one this store returned", code="invalid_cursor")


def encode_cursor(last: Key | None) -> str | None:
    if not last:
        return None
    return _token({"pk": last["pk"]["S"], "sk": last["sk"]["S"]})


def decode_cursor(cursor: str | None) -> Key | None:
    """A cursor this store handed out, back as the Scan's ExclusiveStartKey. It is the last
    item the Scan EVALUATED, which is as often another account's item (or a marker) as one of
    this account's: any table key is a valid position, and the filter keeps what a page
    returns inside the account whatever the position."""
    if cursor is None:
        return None
    try:
        raw = _untoken(cursor)
        pk, sk = raw["pk"], raw["sk"]
        ok = all(isinstance(x, str) and 0 < len(x) <= 1024 for x in (pk, sk))
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeError):
        ok = False
    if not ok:
        raise _not_ours()
    return key(pk, sk)


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Item]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class Segment:
    """Which page of a parallel Scan to read: segment ``index`` of ``total``, from ``cursor``
    (``None``: its start), evaluating at most ``limit`` items."""

    index: int
    total: int
    cursor: str | None
    limit: int


async def scan_page(repo: Repository, prefix: str, at: Segment, *, keys_only: bool = False) -> Page:
    """One page of a parallel Scan segment, filtered to the items whose pk starts with
    ``prefix`` (an account's, or a part of them)."""
    kwargs: dict[str, Any] = {
        "TableName": repo.table,
        "Segment": at.index,
        "TotalSegments": at.total,
        "Limit": at.limit,
        "ConsistentRead": True,
        "FilterExpression": "begins_with(pk, :p)",
        "ExpressionAttributeValues": {":p": s(prefix)},
    }
    if keys_only:
        kwargs["ProjectionExpression"] = "pk, sk"
    start = decode_cursor(at.cursor)
    if start is not None:
        kwargs["ExclusiveStartKey"] = start
    response = await repo.call("scan", **kwargs)
    return Page(response.get("Items", []), encode_cursor(response.get("LastEvaluatedKey")))


STAGES = {"keys": "DK#", "items": ""}  # stage -> key prefix under the account's, in order
DONE = "done"


@dataclass(frozen=True, slots=True)
class Sweep:
    """Where a purge stands: the stage (every data key first, then every other item) and
    each parallel segment's scan cursor (``None`` not started, ``DONE`` finished). Handed to
    the caller as an opaque base64url token and checked when it comes back."""

    stage: str = "keys"
    segments: tuple[str | None, ...] = (None,) * SEGMENTS

    def encode(self) -> str:
        return _token({"stage": self.stage, "segments": self.segments})

    @classmethod
    def decode(cls, token: str | None) -> Sweep:
        if token is None:
            return cls()
        try:
            raw = _untoken(token)
            stage, segments = raw["stage"], tuple(raw["segments"])
            ok = (
                stage in STAGES
                and len(segments) == SEGMENTS
                and all(c is None or (isinstance(c, str) and len(c) <= 4096) for c in segments)
            )
        except (ValueError, KeyError, TypeError, binascii.Error, UnicodeError):
            ok = False
        if not ok:
            raise _not_ours()
        for c in segments:
            if c != DONE:
                decode_cursor(c)  # a table key, or None
        return cls(stage, segments)


async def sweep_page(
    repo: Repository,
    account: str,
    sweep: Sweep,
    work: Callable[[list[Item]], Awaitable[None]],
    *,
    limit: int,
) -> Sweep | None:
    """``work`` on one keys-only scan page of every unfinished segment of ``sweep``'s stage
    (segments at once), then where the sweep stands; ``None`` once every stage is done. One
    call is bounded (``limit`` items evaluated per segment) whatever the account's size; a
    stage starts only after every segment of the one before has finished."""
    prefix = data_prefix(account) + STAGES[sweep.stage]

    async def segment(i: int, cursor: str | None) -> str | None:
        if cursor == DONE:
            return DONE
        page = await scan_page(repo, prefix, Segment(i, SEGMENTS, cursor, limit), keys_only=True)
        if page.items:
            await work(page.items)
        return page.cursor or DONE

    at = tuple(await asyncio.gather(*(segment(i, c) for i, c in enumerate(sweep.segments))))
    if any(c != DONE for c in at):
        return Sweep(sweep.stage, at)
    stages = list(STAGES)
    following = stages.index(sweep.stage) + 1
    return Sweep(stages[following]) if following < len(stages) else None
