"""The mover's calls as small steps, for the store-side tests (the real mover is the edge's
``account move``): copy one region's account into another through the transfer endpoints."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.move.conftest import ACCOUNT, Region

PAGE = 50
SEGMENTS = 2
BOUND_CALLS = 200  # no loop here runs unbounded


async def public_key(region: Region) -> dict[str, str]:
    answer = await region.ok("/public-key", method="GET")
    return {"kid": answer["kid"], "pem": answer["pem"]}


async def fence(region: Region, state: str, generation: int, peer: str | None) -> Any:
    body: dict[str, Any] = {"state": state, "generation": generation}
    if peer is not None:
        body["peer"] = peer
    return await region.ok(f"/{ACCOUNT}/fence", body)


async def export_all(source: Region, recipient: dict[str, str]) -> list[dict[str, Any]]:
    """Every exported item, the segments side by side as the mover runs them."""

    async def segment(i: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        for _ in range(BOUND_CALLS):
            page = await source.ok(
                f"/{ACCOUNT}/export",
                {
                    "segment": i,
                    "total_segments": SEGMENTS,
                    "cursor": cursor,
                    "limit": PAGE,
                    "recipient": recipient,
                },
            )
            items.extend(page["items"])
            cursor = page["cursor"]
            if cursor is None:
                return items
        raise AssertionError("export did not end")

    parts = await asyncio.gather(*(segment(i) for i in range(SEGMENTS)))
    return [item for part in parts for item in part]


async def import_all(dest: Region, items: list[dict[str, Any]], delete: Any = ()) -> None:
    for start in range(0, max(len(items), 1), PAGE):
        await dest.ok(
            f"/{ACCOUNT}/import",
            {"items": items[start : start + PAGE], "delete": list(delete) if start == 0 else []},
        )


async def digests_of(region: Region) -> tuple[dict[str, str], dict[str, int]]:
    found: dict[str, str] = {}
    counts: dict[str, int] = {}
    for i in range(SEGMENTS):
        cursor = None
        for _ in range(BOUND_CALLS):
            page = await region.ok(
                f"/{ACCOUNT}/digests",
                {"segment": i, "total_segments": SEGMENTS, "cursor": cursor, "limit": PAGE},
            )
            found.update(page["digests"])
            for kind, n in page["counts"].items():
                counts[kind] = counts.get(kind, 0) + n
            cursor = page["cursor"]
            if cursor is None:
                break
    return found, counts


async def changed_keys(region: Region, checkpoint: Any) -> tuple[list[list[str]], Any]:
    keys: list[list[str]] = []
    for _ in range(BOUND_CALLS):
        page = await region.ok(f"/{ACCOUNT}/changes", {"checkpoint": checkpoint})
        keys.extend(k for k in page["keys"] if k not in keys)
        checkpoint = page["checkpoint"]
        if not page["more"]:
            return keys, checkpoint
    raise AssertionError("changes did not end")


async def replay(source: Region, dest: Region, keys: list[list[str]], recipient: Any) -> None:
    if not keys:
        return
    answer = await source.ok(f"/{ACCOUNT}/export-keys", {"keys": keys, "recipient": recipient})
    await import_all(dest, answer["items"], answer["missing"])


async def copy(source: Region, dest: Region, generation: int = 1) -> Any:
    """Bulk copy while live, then freeze and catch up: what the mover does up to the flip.
    Returns the checkpoint after the catch-up."""
    recipient = await public_key(dest)
    await fence(dest, "incoming", generation, source.name)
    checkpoint = (await source.ok(f"/{ACCOUNT}/changes/start"))["checkpoint"]
    await import_all(dest, await export_all(source, recipient))
    keys, checkpoint = await changed_keys(source, checkpoint)
    await replay(source, dest, keys, recipient)
    await fence(source, "frozen", generation, dest.name)
    keys, checkpoint = await changed_keys(source, checkpoint)
    await replay(source, dest, keys, recipient)
    return checkpoint
