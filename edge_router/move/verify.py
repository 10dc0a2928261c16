"""Verify: the same items on both sides, item by item.

Each region's stores compute, in that region and with that region's keys, a digest per item
(of the decrypted canonical document for sealed ones) and counts per kind
(``/_residency/transfer/{A}/digests``, parallel segments). The mover only compares: counts
per kind, then digests per key. A mismatch is reported by kind and number of keys -- never a
key (keys hold profile ids), never a value.

The full scan is slow (every document decrypted on both sides), so the mover runs it BEFORE
the freeze, between two replay rounds, and from then on remembers every key the change feed
reports. Those keys are digested again (``redigest``, the digests endpoint's keys form) and
folded into the scan's results: in rounds while the account is still writable, then inside
the freeze only the keys reported since the last round (each freeze round's keys as soon as
it has imported them: exported after the fence, they are final on both sides). That is
exact: a key the feed did not report after the scan began was the same on the source during
the whole scan, and the destination, up to date with the replay when the scan began, was
only written since for reported keys.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from .job import all_of
from .store_api import RegionStores


@dataclass
class Side:
    region: str
    digests: dict[str, str] = field(default_factory=dict)  # "pk\0sk" -> hex
    counts: dict[str, int] = field(default_factory=dict)


class Mismatch(Exception):
    """The copies differ; the message is the report (kinds and counts only)."""


async def collect(
    stores: RegionStores, account: str, segments: int, limit: int, side: Side
) -> None:
    """Every segment's digests and counts into ``side``."""

    async def segment(i: int) -> None:
        cursor: str | None = None
        while True:
            page = await stores.digests(account, i, segments, cursor, limit)
            side.digests.update(page.get("digests", {}))
            for kind, n in page.get("counts", {}).items():
                side.counts[kind] = side.counts.get(kind, 0) + int(n)
            cursor = page.get("cursor")
            if not cursor:
                return

    await all_of(segment(i) for i in range(segments))


# Calls of a few hundred keys, several at once: spread over the region's instances (one
# process each) rather than one instance decrypting a thousand documents in a row.
KEYS_PER_CALL = 250
PARALLEL_CALLS = 8


async def redigest(stores: RegionStores, account: str, keys: list[list[str]], side: Side) -> None:
    """The current digests of ``keys`` folded into ``side`` (gone keys removed, counts kept
    right: a key's kind depends on the key only)."""

    gate = asyncio.Semaphore(PARALLEL_CALLS)

    async def chunk(part: list[list[str]]) -> None:
        async with gate:
            page = await stores.digests_of(account, part)
        digests, kinds = page.get("digests", {}), page.get("kinds", {})
        for pk, sk in part:
            k = f"{pk}\0{sk}"
            kind = kinds.get(k, "other")
            if side.digests.pop(k, None) is not None:
                side.counts[kind] = side.counts.get(kind, 0) - 1
            if k in digests:
                side.digests[k] = digests[k]
                side.counts[kind] = side.counts.get(kind, 0) + 1

    await all_of(chunk(keys[i : i + KEYS_PER_CALL]) for i in range(0, len(keys), KEYS_PER_CALL))
    side.counts = {k: n for k, n in side.counts.items() if n}


def compare(src: Side, dst: Side) -> dict[str, int]:
    """The verified counts per kind, or ``Mismatch`` naming what differs."""
    problems = []
    for kind in sorted(set(src.counts) | set(dst.counts)):
        a, b = src.counts.get(kind, 0), dst.counts.get(kind, 0)
        if a != b:
            problems.append(f"{kind}: {a} in {src.region}, {b} in {dst.region}")
    missing = src.digests.keys() - dst.digests.keys()
    extra = dst.digests.keys() - src.digests.keys()
    differ = sum(
        1 for k in src.digests.keys() & dst.digests.keys() if src.digests[k] != dst.digests[k]
    )
    if missing:
        problems.append(f"{len(missing)} keys missing in {dst.region}")
    if extra:
        problems.append(f"{len(extra)} keys only in {dst.region}")
    if differ:
        problems.append(f"{differ} keys with different content")
    if problems:
        raise Mismatch("verify failed: " + "; ".join(problems))
    return dict(sorted(src.counts.items()))
