"""The change-log poller and the cache: a change seen is never undone by a read that predates
it, the overlap window finds late ids once, and a change fails closed while the registry is down.

Pure-ish tier: the cache and the poller on an in-memory registry and change source, with
controlled clocks; the DynamoDB side (the change item in the same transaction) is at the end,
on DynamoDB Local.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from edge_router.errors import RegistryError, Unavailable
from edge_router.registry import (
    AccountRecord,
    ApiKey,
    CachedLookup,
    ChangePoller,
    KeyOwner,
    token_hash,
)
from edge_router.registry.changelog import Change, change_id
from residency_ops.registry_writer import RegistryConflict, RegistryWriter

from .conftest import FakeRegistry, Key, wait_until

KEY = Key("k1", "token-k1-000000000000")
BOUND = 10.0  # generous: a loaded 2-core machine


def _cache(loader: Any, clock: list[float] | None = None) -> CachedLookup[Any]:
    c = [0.0] if clock is None else clock
    return CachedLookup(
        loader,
        maxsize=100,
        ttl_s=30,
        negative_ttl_s=5,
        stale_if_error_s=300,
        clock=lambda: c[0],
    )


class ChangeLog:
    """An in-memory change log behind ``changes_since``, with a failure switch."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.fail = False
        self.asked: list[str] = []

    def add(self, account: str, kind: str, at_s: float, app_keys: tuple[str, ...] = ()) -> Change:
        at_ms = int(at_s * 1000)
        change = Change(change_id(at_ms), account, kind, at_ms, app_keys)
        self.changes.append(change)
        return change

    async def changes_since(self, after: str) -> list[Change]:
        self.asked.append(after)
        if self.fail:
            raise RegistryError("change log down (test)")
        return sorted((c for c in self.changes if c.id > after), key=lambda c: c.id)


def _poller(
    log: ChangeLog, accounts: CachedLookup[Any], owners: CachedLookup[Any], wall: list[float]
) -> ChangePoller:
    return ChangePoller(
        log,
        accounts,
        owners,
        interval_s=0.01,
        overlap_s=5.0,
        max_backoff_s=0.05,
        clock=lambda: wall[0],
    )


def _revoke(registry: FakeRegistry, name: str) -> None:
    rec = registry.accounts[name]
    keys = {k: ApiKey(k, v.token_sha256, v.roles, False) for k, v in rec.keys.items()}
    registry.accounts[name] = AccountRecord(rec.name, rec.region, rec.status, keys)
    for k in keys:
        registry.owners[k] = KeyOwner(name, token_hash(KEY.token), False)


# -- the cache: a read that predates a change never installs its answer ---------------------


async def test_a_read_started_before_the_change_is_discarded() -> None:
    answers: list[asyncio.Future[str]] = []

    async def loader(_key: str) -> str:
        answers.append(asyncio.get_running_loop().create_future())
        return await answers[-1]

    cache = _cache(loader)
    waiter = asyncio.ensure_future(cache.get("acme"))  # a read goes out (it will answer "old")
    await wait_until(lambda: len(answers) == 1)
    reread = cache.invalidate("acme")  # the change is seen while that read is out
    assert reread is not None
    confirmed = asyncio.ensure_future(reread)
    await wait_until(lambda: len(answers) == 2)
    answers[1].set_result("new")  # the read after the change answers first ...
    assert await asyncio.wait_for(confirmed, BOUND) == "new"
    answers[0].set_result("old")  # ... then the late answer of the read before it
    # The request that waited on the old read gets the new answer, and the cache keeps it.
    assert await asyncio.wait_for(waiter, BOUND) == "new"
    assert await cache.get("acme") == "new"
    assert cache.peek("acme") == "new"
    assert len(answers) == 2


async def test_a_failed_read_before_the_change_does_not_fail_its_waiters() -> None:
    answers: list[asyncio.Future[str]] = []

    async def loader(_key: str) -> str:
        answers.append(asyncio.get_running_loop().create_future())
        return await answers[-1]

    cache = _cache(loader)
    waiter = asyncio.ensure_future(cache.get("acme"))
    await wait_until(lambda: len(answers) == 1)
    reread = cache.invalidate("acme")
    assert reread is not None
    reread.close()  # this test follows the request, not the poller
    answers[0].set_exception(RegistryError("old read failed (test)"))
    await wait_until(lambda: len(answers) == 2)
    answers[1].set_result("new")
    assert await asyncio.wait_for(waiter, BOUND) == "new"


async def test_invalidate_of_a_key_this_worker_never_read_reads_nothing(
    registry: FakeRegistry,
) -> None:
    cache = _cache(registry.get_account)
    assert cache.invalidate("never-seen") is None
    assert registry.calls == 0


# -- the poller ------------------------------------------------------------------------------


async def test_change_reloads_the_account_and_its_key_owners(registry: FakeRegistry) -> None:
    registry.add("shop", "eu-west-1", [KEY])
    accounts, owners = _cache(registry.get_account), _cache(registry.get_key_owner)
    wall = [1_000.0]
    log = ChangeLog()
    poller = _poller(log, accounts, owners, wall)
    old = await accounts.get("shop")
    assert old is not None and old.keys["k1"].active
    assert (await owners.get("k1")).active  # type: ignore[union-attr]

    _revoke(registry, "shop")
    log.add("shop", "revoke_key", wall[0], ("k1",))
    wall[0] += 0.2
    assert await poller.poll_once() == 1
    await wait_until(lambda: poller.status.applied == 1, BOUND)
    # Fresh records, read at once (not at the next request), and the lag measured.
    assert not accounts.peek("shop").keys["k1"].active  # type: ignore[union-attr]
    assert not owners.peek("k1").active  # type: ignore[union-attr]
    applied = poller.status.recent[-1]
    assert applied.kind == "revoke_key" and applied.reloaded
    assert 0.15 <= applied.lag_s <= 0.25


async def test_overlap_finds_a_late_id_once_and_skips_what_it_applied(
    registry: FakeRegistry,
) -> None:
    registry.add("shop", "eu-west-1", [KEY])
    accounts, owners = _cache(registry.get_account), _cache(registry.get_key_owner)
    wall = [1_000.0]
    log = ChangeLog()
    poller = _poller(log, accounts, owners, wall)
    await accounts.get("shop")
    log.add("shop", "set_status", wall[0] + 0.1)
    wall[0] += 1.0
    assert await poller.poll_once() == 1
    await wait_until(lambda: poller.status.applied == 1, BOUND)
    calls = registry.calls
    # A writer whose clock is 3 s behind commits after that poll: its id sorts in the past.
    log.add("shop", "set_region", wall[0] - 3.0)
    wall[0] += 0.25
    assert await poller.poll_once() == 1  # found through the overlap, the first one skipped
    await wait_until(lambda: poller.status.applied == 2, BOUND)
    wall[0] += 0.25
    assert await poller.poll_once() == 0  # both still in the window: neither applied again
    assert poller.status.applied == 2
    assert registry.calls == calls + 1
    # The query bound trails the last successful poll by the overlap.
    assert log.asked[-1] == f"{int((wall[0] - 0.25 - 5.0) * 1000):013d}"


async def test_a_failed_poll_leaves_no_gap(registry: FakeRegistry) -> None:
    registry.add("shop", "eu-west-1", [KEY])
    accounts, owners = _cache(registry.get_account), _cache(registry.get_key_owner)
    wall = [1_000.0]
    log = ChangeLog()
    poller = _poller(log, accounts, owners, wall)
    await accounts.get("shop")
    assert await poller.poll_once() == 0
    log.fail = True
    wall[0] += 30.0  # a 30 s outage of the change log, longer than the overlap
    log.add("shop", "revoke_key", wall[0] - 20.0, ("k1",))
    with pytest.raises(RegistryError):
        await poller.poll_once()
    assert poller.status.errors == 1
    log.fail = False
    wall[0] += 1.0
    assert await poller.poll_once() == 1  # read from the last success, not from "now"


async def test_a_revocation_fails_closed_while_the_registry_is_down(
    registry: FakeRegistry,
) -> None:
    registry.add("shop", "eu-west-1", [KEY])
    registry.add("other", "eu-west-1", [Key("k2", "token-k2-000000000000")])
    clock = [0.0]
    accounts = _cache(registry.get_account, clock)
    owners = _cache(registry.get_key_owner, clock)
    wall = [1_000.0]
    log = ChangeLog()
    poller = _poller(log, accounts, owners, wall)
    await accounts.get("shop")
    await accounts.get("other")

    # The revocation is committed and logged; the registry fails before the edge re-reads.
    _revoke(registry, "shop")
    log.add("shop", "revoke_key", wall[0], ("k1",))
    registry.fail = True
    assert await poller.poll_once() == 1
    await wait_until(lambda: poller.status.applied == 1, BOUND)
    assert not poller.status.recent[-1].reloaded
    clock[0] = 60.0  # past the TTL: only the stale fallback could answer now
    with pytest.raises(Unavailable) as refused:
        await accounts.get("shop")  # never the pre-revocation record
    assert refused.value.code == "registry_unavailable"
    # An account no change was seen for is still served from the stale fallback.
    other = await accounts.get("other")
    assert other is not None and other.keys["k2"].active

    registry.fail = False  # the registry answers again: the new record, key revoked
    shop = await accounts.get("shop")
    assert shop is not None and not shop.keys["k1"].active


async def test_a_replica_behind_its_change_item_is_read_again_after_the_settle_time(
    registry: FakeRegistry,
) -> None:
    registry.add("shop", "eu-west-1", [KEY])
    accounts, owners = _cache(registry.get_account), _cache(registry.get_key_owner)
    log = ChangeLog()
    poller = ChangePoller(
        log, accounts, owners, interval_s=0.01, overlap_s=5.0, max_backoff_s=0.05, settle_s=0.05
    )
    await accounts.get("shop")
    await owners.get("k1")
    # The change item replicated, the revoked key item not yet: the first re-read is old.
    log.add("shop", "revoke_key", time.time(), ("k1",))
    assert await poller.poll_once() == 1
    await wait_until(lambda: poller.status.applied == 1, BOUND)
    assert accounts.peek("shop").keys["k1"].active  # type: ignore[union-attr]
    _revoke(registry, "shop")  # the replica catches up; no new change item, no new poll
    await wait_until(lambda: not accounts.peek("shop").keys["k1"].active, BOUND)  # type: ignore[union-attr]
    await wait_until(lambda: not owners.peek("k1").active, BOUND)  # type: ignore[union-attr]
    await poller.stop()


async def test_the_poller_backs_off_on_errors_and_stops_cleanly(
    registry: FakeRegistry,
) -> None:
    accounts, owners = _cache(registry.get_account), _cache(registry.get_key_owner)
    log = ChangeLog()
    errors: list[int] = []
    poller = ChangePoller(
        log,
        accounts,
        owners,
        interval_s=0.01,
        overlap_s=5.0,
        max_backoff_s=0.05,
        on_error=lambda: errors.append(1),
    )
    log.fail = True
    poller.start()
    try:
        await wait_until(lambda: len(errors) >= 3, BOUND)
        log.fail = False
        polls = poller.status.polls
        await wait_until(lambda: poller.status.polls >= polls + 3, BOUND)  # alive, not dead
    finally:
        await asyncio.wait_for(poller.stop(), BOUND)
    assert poller.status.errors == len(errors)
    assert poller._task is None


# -- DynamoDB: the change item is written with the change, and only with it -----------------


async def test_every_write_logs_one_change_in_the_same_transaction(ddb_endpoint: str) -> None:
    table = f"registry-{uuid.uuid4().hex[:10]}"
    async with RegistryWriter(table=table, endpoint=ddb_endpoint, region="us-east-1") as reg:
        assert await reg.create_table()
        start = "0"
        assert await reg.create_account("shop", "eu-west-1")
        assert not await reg.create_account("shop", "us-east-1")  # refused: nothing logged
        await reg.create_key("shop", "k1", KEY.token, ["read"])
        await reg.revoke_key("shop", "k1")
        await reg.set_region("shop", "us-east-1")
        await reg.set_status("shop", "suspended")
        with pytest.raises(RegistryError):
            await reg.set_status("nobody", "suspended")
        changes = await reg.changes_since(start)
        assert [(c.account, c.kind, c.app_keys) for c in changes] == [
            ("shop", "create_account", ()),
            ("shop", "create_key", ("k1",)),
            ("shop", "revoke_key", ("k1",)),
            ("shop", "set_region", ()),
            ("shop", "set_status", ()),
        ]
        assert [c.id for c in changes] == sorted(c.id for c in changes)
        # The public writer: a failed condition names the entry that failed, writes nothing.
        check = {
            "ConditionCheck": {
                "TableName": table,
                "Key": {"pk": {"S": "ACCOUNT#shop"}, "sk": {"S": "META"}},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        with pytest.raises(RegistryConflict) as conflict:
            await reg.write([check], account="shop", kind="test")
        assert conflict.value.reasons == ("ConditionalCheckFailed",)
        assert len(await reg.changes_since(start)) == 5
        put = {
            "Put": {
                "TableName": table,
                "Item": {"pk": {"S": "ACCOUNT#shop"}, "sk": {"S": "MOVE"}, "phase": {"S": "x"}},
            }
        }
        change = await reg.write([put], account="shop", kind="move")
        last = (await reg.changes_since(changes[-1].id))[-1]
        assert last.id == change and last.kind == "move"
        # the edge reads only the change items after a bound; accounts never see them
        assert [r.name for r in await reg.list_accounts()] == ["shop"]
        ttl = await reg._client.describe_time_to_live(TableName=table)
        assert ttl["TimeToLiveDescription"]["AttributeName"] == "ttl"
