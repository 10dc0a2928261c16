"""The fence: the marker that stops a region from serving an account that is moving or moved.

An account move (``transfer/``, driven by the mover) copies the account to another
region, freezes it, catches up and flips the registry. The registry flip alone cannot stop an
edge with a stale cache from writing in the old region; the fence does, in the store itself::

    pk  FENCE#{account}   sk  F     state S  ("incoming" | "frozen" | "moved_out")
                                    generation N   peer S (the other region)   updatedAt S

It lives outside the account's ``A#{account}#`` prefix, so purging the account never deletes
it. No item means normal service.

Writes. Every account-scoped ``TransactWriteItems`` of the store carries ``fence_check``
(``attribute_not_exists(pk)`` on the marker); ``Repository`` appends it to every transaction
(and every single-item write is a transaction), so a write that loses it stores nothing and
answers ``refusal(marker)``:

    frozen      503 account_moving + Retry-After: 2  (the final catch-up; comes back soon)
                (an unmask read too: its audit record is a write, refused here like any other,
                so it is never written where the final catch-up could miss it)
    moved_out   421 residency_mismatch               (the account lives in ``peer`` now)
    incoming    421 residency_mismatch               (the destination, before the flip)

Reads. ``FenceCache`` keeps each account's marker for ``fence_cache_s`` (<= 1 s) and refuses
reads of accounts that are ``moved_out`` or ``incoming`` (``frozen`` ones keep serving reads).
A cached refusal is re-read before it is answered, so a region never refuses on a stale view;
a cached "normal" may be up to ``fence_cache_s`` old, so reads in the first second after a
flip may still be served by the source. Their data is the data the destination has (writes
were frozen before the flip); writes are never accepted there, whatever the cache says.

The transfer endpoints (``transfer/``) are exempt: they are how the mover works.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from residency_contract.tables import DATA_PREFIX, fence_key

from .errors import AccountMoving, ResidencyMismatch, StoreError


class FenceState(StrEnum):
    INCOMING = "incoming"
    FROZEN = "frozen"
    MOVED_OUT = "moved_out"


@dataclass(frozen=True, slots=True)
class Fence:
    state: FenceState
    generation: int
    peer: str


def fence_check(account: str) -> dict[str, Any]:
    """The TransactWriteItems entry every account write carries: no marker for the account."""
    return {
        "ConditionCheck": {
            "Key": fence_key(account),
            "ConditionExpression": "attribute_not_exists(pk)",
        }
    }


def account_of_pk(pk: str) -> str | None:
    """``A#{account}#...`` -> account (accounts never hold '#'); None for other partitions."""
    if not pk.startswith(DATA_PREFIX):
        return None
    end = pk.find("#", len(DATA_PREFIX))
    return pk[len(DATA_PREFIX) : end] if end > len(DATA_PREFIX) else None


def _entry_pk(body: dict[str, Any]) -> str:
    holder = body.get("Item") or body.get("Key") or {}
    value = holder.get("pk") or {}
    return str(value.get("S", ""))


def accounts_in(entries: Iterable[dict[str, Any]]) -> list[str]:
    """The accounts whose items a transaction touches, sorted (one check each)."""
    found: set[str] = set()
    for entry in entries:
        for body in entry.values():
            account = account_of_pk(_entry_pk(body))
            if account is not None:
                found.add(account)
    return sorted(found)


def parse(item: dict[str, Any] | None) -> Fence | None:
    if not item:
        return None
    try:
        state = FenceState(item["state"]["S"])
    except (KeyError, TypeError, ValueError):
        # An unreadable marker still fences: refusing is the safe side.
        state = FenceState.MOVED_OUT
    generation = int(float(item.get("generation", {}).get("N", "0")))
    return Fence(state, generation, str(item.get("peer", {}).get("S", "")))


def refusal(fence: Fence | None) -> StoreError:
    """The answer to a request the fence stops. ``None``: the marker that stopped a write was
    removed since (a move ended or was aborted): the client retries."""
    if fence is None or fence.state is FenceState.FROZEN:
        return AccountMoving(
            "the account is being moved to another region; writes and audited (unmask) reads "
            "resume in a few seconds, other reads are served"
        )
    return ResidencyMismatch("this account is not served by this region (it moved)")


class FenceCache:
    """Each account's marker for at most ``ttl_s``; concurrent misses share one read."""

    def __init__(
        self,
        read: Callable[[str], Awaitable[Fence | None]],
        *,
        ttl_s: float,
        max_accounts: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._ttl_s = ttl_s
        self._max = max_accounts
        self._clock = clock
        self._entries: dict[str, tuple[float, Fence | None]] = {}
        self._inflight: dict[str, asyncio.Future[Fence | None]] = {}

    def forget(self, account: str) -> None:
        self._entries.pop(account, None)

    def _cached(self, account: str) -> tuple[bool, Fence | None]:
        """(True, the cached marker or None) within the TTL; (False, None) otherwise."""
        entry = self._entries.get(account)
        if entry is not None and self._clock() - entry[0] < self._ttl_s:
            return True, entry[1]
        return False, None

    async def get(self, account: str) -> Fence | None:
        hit, fence = self._cached(account)
        return fence if hit else await self.refresh(account)

    async def refresh(self, account: str) -> Fence | None:
        """Read the marker now; requests that miss together share the one read."""
        pending = self._inflight.get(account)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this request was cancelled
                # The reading request was cancelled, not this one: read again.
                return await self.refresh(account)
        future: asyncio.Future[Fence | None] = asyncio.get_running_loop().create_future()
        self._inflight[account] = future
        try:
            started = self._clock()
            fence = await self._read(account)
            if len(self._entries) >= self._max:
                self._entries.clear()  # crude but bounded; a miss costs one GetItem
            self._entries[account] = (started, fence)
            future.set_result(fence)
            return fence
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            del self._inflight[account]

    async def admit(self, account: str, *, write: bool) -> None:
        """Refuse a request the account's marker stops; a refusal is never from a stale view."""
        hit, fence = self._cached(account)
        if not hit:
            fence = await self.refresh(account)
        if not _stops(fence, write=write):
            return
        if hit:  # never refuse on a view that may be stale: read it now
            fence = await self.refresh(account)
        if _stops(fence, write=write):
            raise refusal(fence)


def _stops(fence: Fence | None, *, write: bool) -> bool:
    if fence is None:
        return False
    return write or fence.state is not FenceState.FROZEN
