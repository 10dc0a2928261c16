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

from .job import MoveJob, all_of
from .store_api import RegionStores, StoreRefused

Keys = set[tuple[str, str]]


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


class Verifier:
    """What verify compares, for one mover run: the pre-freeze scan of both sides and the keys
    the replay reported since (in memory only: a resumed mover verifies with a full scan)."""

    def __init__(
        self, job: MoveJob, source: RegionStores, dest: RegionStores, digest_limit: int
    ) -> None:
        self.job = job
        self.src = source
        self.dst = dest
        self.digest_limit = digest_limit
        self.scanned: tuple[Side, Side] | None = None
        self.changed: Keys | None = None  # replayed since the scan began (None: no scan)
        self.freeze_digested = 0  # keys re-digested by the freeze's rounds

    def forget(self) -> None:
        """No scan to build on (the copy starts over): verify scans in full."""
        self.scanned = self.changed = None

    def note(self, keys: Keys) -> None:
        """Keys a replay round reported: their digests may have changed since the scan."""
        if self.changed is not None:
            self.changed.update(keys)

    def take(self) -> Keys:
        """The keys noted since the last call (each call starts a new set)."""
        keys, self.changed = self.changed or set(), set()
        return keys

    async def scan(self) -> None:
        """The full digest scan of both sides; the keys replayed from now on are noted."""
        self.changed = set()
        self.scanned = await self.scan_both()

    async def scan_both(self) -> tuple[Side, Side]:
        j = self.job
        src, dst = Side(self.src.name), Side(self.dst.name)
        await all_of(
            [
                collect(self.src, j.account, j.segments, self.digest_limit, src),
                collect(self.dst, j.account, j.segments, self.digest_limit, dst),
            ]
        )
        return src, dst

    async def redigest(self, keys: Keys) -> None:
        """The current digests of ``keys`` on both sides, folded into the scan's results."""
        assert self.scanned is not None
        src, dst = self.scanned
        todo = [list(k) for k in sorted(keys)]
        await all_of(
            [
                redigest(self.src, self.job.account, todo, src),
                redigest(self.dst, self.job.account, todo, dst),
            ]
        )

    async def counts(self) -> dict[str, int]:
        """Counts per kind once both sides match; ``Mismatch`` otherwise. With a scan from
        before the freeze, only the keys changed since are digested again; any doubt (the
        stores lack the keys form, or a difference) is settled by a full scan."""
        j = self.job
        if self.scanned is not None and self.changed is not None:
            src, dst = self.scanned
            try:
                await self.redigest(self.changed)
                j.counts["verified_incrementally"] = self.freeze_digested + len(self.changed)
                return compare(src, dst)
            except StoreRefused as exc:
                if exc.status != 400:
                    raise
            except Mismatch:
                pass
        j.counts["verified_incrementally"] = 0
        return compare(*await self.scan_both())
