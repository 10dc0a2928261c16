"""Verify: the same items on both sides, item by item.

Each region's stores compute, in that region and with that region's keys, a digest per item
(of the decrypted canonical document for sealed ones) and counts per kind
(``/_residency/transfer/{A}/digests``, parallel segments). The mover only compares: counts
per kind, then digests per key. A mismatch is reported by kind and number of keys -- never a
key (keys hold profile ids), never a value.
"""

from __future__ import annotations

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
