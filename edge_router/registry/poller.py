"""Registry changes reach this worker within a second: a poller of the registry's change log.

Every ``registry_poll_interval_s`` one strongly consistent Query reads the change items
(``changelog``) written since the last successful poll started, minus ``registry_change_
overlap_s``: a writer whose clock runs behind, or whose commit took a while, wrote an id a
little in the past, and the overlap still finds it. Ids already seen are skipped (a bounded
memory of the ids inside the window); applying a change twice would only cost a read.

A change is applied by ``CachedLookup.invalidate`` on the account and on the owner-index
entries of its keys (those the change names and those of the record this worker held): the
entry is dropped and, if this worker held it, read again at once. Until that read answers, the
account is read like an unknown one -- requests wait for the read, and if the registry fails
they get 503 ``registry_unavailable``: a key seen revoked never comes back from the stale
fallback (a security change fails closed). ``stale_if_error_s`` keeps serving every account
no change was seen for.

The registry is a global table: a replica receives a transaction's items one by one, so this
worker's replica may show the change item before the items it changed, and the first re-read
may still find the old record. So each change is read once more ``registry_change_settle_s``
later (replication usually takes well under a second; beyond that the TTL is the bound).

A failed poll is counted (``edge_registry_poll_errors_total``) and the next one waits longer
(doubling up to ``registry_poll_max_backoff_s``); the poller never stops on an error, and the
TTL cache stays the fallback for whatever a poll misses. Started on a fresh worker it begins at
"now minus the overlap": its cache is empty, so older changes concern nothing it holds.

The lag of each applied change (the writer's timestamp to the moment the fresh record was in
this worker's cache, or to the invalidation when there was nothing to re-read) goes to
``edge_registry_change_lag_seconds``; the last few are kept in ``recent`` for the admin port's
``/registry/changes`` (per worker: it shows this process's pid).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import RegistryError
from .cache import CachedLookup
from .changelog import Change, cursor
from .records import AccountRecord, KeyOwner

log = logging.getLogger("edge_router")

RECENT = 32  # applied changes kept for the admin view
MAX_SEEN = 100_000  # ids remembered at most; beyond it the oldest are forgotten (re-applied)


class ChangeSource(Protocol):
    async def changes_since(self, after: str) -> list[Change]: ...


@dataclass(slots=True)
class Applied:
    id: str
    kind: str
    lag_s: float
    reloaded: bool


@dataclass(slots=True)
class PollerStatus:
    """What this worker's poller has done: the admin view and tests read it."""

    polls: int = 0
    errors: int = 0
    applied: int = 0
    last_ok_at: float | None = None  # wall clock of the last successful poll
    recent: deque[Applied] = field(default_factory=lambda: deque(maxlen=RECENT))


def _ignore(*_args: object) -> None:
    pass


class ChangePoller:
    def __init__(
        self,
        source: ChangeSource,
        accounts: CachedLookup[AccountRecord],
        key_owners: CachedLookup[KeyOwner],
        *,
        interval_s: float,
        overlap_s: float,
        max_backoff_s: float,
        settle_s: float = 0.0,
        on_applied: Callable[[float], None] = _ignore,
        on_error: Callable[[], None] = _ignore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._source = source
        self._accounts = accounts
        self._key_owners = key_owners
        self._interval = interval_s
        self._overlap_ms = int(overlap_s * 1000)
        self._max_backoff = max(max_backoff_s, interval_s)
        self._settle = settle_s
        self._on_applied = on_applied
        self._on_error = on_error
        self._clock = clock
        # The wall clock (ms) the last successful poll started at: the next one reads from
        # there minus the overlap, so a long outage leaves no gap.
        self._since_ms = int(clock() * 1000)
        self._seen: dict[str, int] = {}  # change id -> its at_ms, for the ids in the window
        self._confirming: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.status = PollerStatus()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="registry-changes")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._confirming) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None

    async def _run(self) -> None:
        delay = self._interval
        while True:
            await asyncio.sleep(delay)
            try:
                await self.poll_once()
            except RegistryError as exc:
                delay = min(delay * 2, self._max_backoff)
                log.warning("registry change log unreadable (%s); next poll in %.2fs", exc, delay)
            except Exception:  # never let the poller die: the TTL is only the fallback
                delay = min(delay * 2, self._max_backoff)
                log.exception("registry change poll failed; next poll in %.2fs", delay)
            else:
                delay = self._interval

    # -- one poll ---------------------------------------------------------------------------

    async def poll_once(self) -> int:
        """One read of the change log; applies what is new. Returns how many changes were new."""
        started_ms = int(self._clock() * 1000)
        self.status.polls += 1
        try:
            changes = await self._source.changes_since(cursor(self._since_ms - self._overlap_ms))
        except Exception:  # not a cancellation: stopping is no error
            self.status.errors += 1
            self._on_error()
            raise
        self.status.last_ok_at = started_ms / 1000
        new = [c for c in changes if c.id not in self._seen]
        for change in new:
            self._seen[change.id] = change.at_ms
            self._apply(change)
        self._since_ms = max(self._since_ms, started_ms)
        self._forget(self._since_ms - 2 * self._overlap_ms)
        return len(new)

    def _forget(self, before_ms: int) -> None:
        """Drop remembered ids no window will return again (and the oldest beyond MAX_SEEN)."""
        if len(self._seen) > MAX_SEEN or any(at < before_ms for at in self._seen.values()):
            keep = {i: at for i, at in self._seen.items() if at >= before_ms}
            if len(keep) > MAX_SEEN:
                keep = dict(sorted(keep.items())[-MAX_SEEN:])
            self._seen = keep

    def _apply(self, change: Change) -> None:
        held = self._accounts.peek(change.account)
        app_keys = set(change.app_keys)
        if held is not None:
            app_keys.update(held.keys)  # their owner entries may say what the account did
        pending = self._reads(change.account, app_keys, keep=False)
        if not pending and not self._settle:
            self._applied(change, reloaded=False)
            return
        task = asyncio.get_running_loop().create_task(self._confirm(change, app_keys, pending))
        self._confirming.add(task)
        task.add_done_callback(self._confirming.discard)

    def _reads(
        self, account: str, app_keys: set[str], *, keep: bool
    ) -> list[Coroutine[Any, Any, object]]:
        """Read the account and its keys' owner entries again: dropping what is cached
        (``invalidate``) or keeping it until the answer comes (``reload``, ``keep``). Returns
        the reads that started (nothing for what this worker does not hold)."""
        accounts, owners = self._accounts, self._key_owners
        reads = [accounts.reload(account) if keep else accounts.invalidate(account)]
        reads += [owners.reload(k) if keep else owners.invalidate(k) for k in app_keys]
        return [r for r in reads if r is not None]

    async def _confirm(
        self, change: Change, app_keys: set[str], pending: list[Coroutine[Any, Any, object]]
    ) -> None:
        """Wait for the fresh reads; the change is applied (its lag measured) when they are in.
        A failed read leaves the entries dropped (fail closed): the next request reads again.
        Then, after the settle time, one more read of whatever is held (a late replica)."""
        if not pending:
            self._applied(change, reloaded=False)
        else:
            await self._first_reads(change, pending)
        if self._settle:
            await asyncio.sleep(self._settle)
            late = self._reads(change.account, app_keys, keep=True)
            await asyncio.gather(*late, return_exceptions=True)

    async def _first_reads(
        self, change: Change, pending: list[Coroutine[Any, Any, object]]
    ) -> None:
        results = await asyncio.gather(*pending, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            log.warning(
                "registry change %s (%s): re-read failed (%s); its account is refused until "
                "the registry answers",
                change.id,
                change.kind,
                type(failed[0]).__name__,
            )
        self._applied(change, reloaded=not failed)

    def _applied(self, change: Change, *, reloaded: bool) -> None:
        lag = max(0.0, self._clock() - change.at_ms / 1000)
        self.status.applied += 1
        self.status.recent.append(Applied(change.id, change.kind, round(lag, 4), reloaded))
        self._on_applied(lag)
