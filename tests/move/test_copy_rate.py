"""A copy of a few hundred items through the transfer endpoints, timed: the bulk copy, the
final catch-up (what the account's write freeze waits for) and the verification. Printed for
the README's limits; asserted only for correctness (a loaded 2-core machine sets no speed)."""

from __future__ import annotations

import asyncio
import time

from tests.move import steps
from tests.move.conftest import ACCOUNT, DEST, SOURCE, Region
from tests.store.conftest import ADDRESS, BASE, PURCHASE_INFO

PROFILES = 60
CHANGED = 20


async def test_copy_catch_up_and_verify_are_timed(source: Region, dest: Region) -> None:
    async def one() -> str:
        pid = (await source.create_profile())["id"]
        for path, body in (("addresses", ADDRESS), ("purchase-info", PURCHASE_INFO)):
            got, _, _ = await source.call("POST", f"{BASE}/profiles/{pid}/{path}", json_body=body)
            assert got in {200, 201}
        return pid

    pids: list[str] = []
    for _ in range(PROFILES // 10):
        pids += await asyncio.gather(*(one() for _ in range(10)))
    recipient = await steps.public_key(dest)
    await steps.fence(dest, "incoming", 1, SOURCE)
    checkpoint = (await source.ok(f"/{ACCOUNT}/changes/start"))["checkpoint"]

    started = time.monotonic()
    items = await steps.export_all(source, recipient)
    exported = time.monotonic()
    await steps.import_all(dest, items)
    bulk_s = time.monotonic() - started

    for pid in pids[:CHANGED]:
        got, _, _ = await source.call("PATCH", f"{BASE}/profiles/{pid}", json_body={"n": 1})
        assert got == 200
    frozen = time.monotonic()
    await steps.fence(source, "frozen", 1, DEST)
    keys, _ = await steps.changed_keys(source, checkpoint)
    await steps.replay(source, dest, keys, recipient)
    catch_up_s = time.monotonic() - frozen

    verified = time.monotonic()
    source_side, dest_side = await asyncio.gather(steps.digests_of(source), steps.digests_of(dest))
    verify_s = time.monotonic() - verified
    assert source_side == dest_side
    assert len(keys) == CHANGED * 2  # each PATCH: the current item and a new version
    print(
        f"\naccount copy of {len(items)} items ({PROFILES} profiles): export "
        f"{exported - started:.2f}s, bulk copy {bulk_s:.2f}s ({len(items) / bulk_s:.0f} items/s); "
        f"catch-up of {len(keys)} changed keys after {CHANGED} PATCHes (freeze -> replayed) "
        f"{catch_up_s:.2f}s; digests of both sides {verify_s:.2f}s"
    )
