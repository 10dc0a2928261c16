"""The registry behind a cache: fresh hits, negative hits, single flight, stale-while-revalidate.

Each entry records what the registry last said (a value, or "no such thing") and until when
that answer is fresh. Entries live in a ``cachetools.TTLCache`` whose TTL is the longest an
answer may ever be used (fresh TTL + ``stale_if_error``), so memory and staleness are both
bounded. A request never waits for the registry about a key it has an answer for:

* fresh entry                       -> ``hit`` (or ``negative_hit`` for "no such account")
* fresh, in the last ``REFRESH_AHEAD`` of its TTL -> still a ``hit``, and one background read
                                       refreshes it (single flight): in steady state no request
                                       ever waits for the registry. Without this, every request
                                       in flight when a hot account expired waited for the read
                                       (and counted a miss): 99.7% hits at 256-1,000 connections
                                       on the bench, and a latency step every TTL.
* past its TTL (stale-while-revalidate) -> the last answer is served at once (``stale``) while
                                       ONE background read per key refreshes it. Up to
                                       ``stale_while_revalidate`` past the TTL while the registry
                                       is answering; beyond that the request waits for the read
                                       (and still gets the old answer if the read fails).
* the registry is failing (``breaker`` not closed) -> the last answer is served at once for
                                       as long as TTLCache keeps it (``stale_if_error``); the
                                       half-open probe is a background read, never waited for.
* no entry, or only an expired "no such thing" -> one registry read per key however many
                                       requests wait (single flight), ``miss``; when the
                                       breaker is open: ``error`` at once (503
                                       ``registry_unavailable``), and so when the read fails.
                                       A request waits at most ``wait_s``: a read still out
                                       then counts as failed for the breaker (a hanging
                                       registry opens it after a few such waits).

"The last answer" is exactly that: an entry is replaced only by a newer registry answer, so
staleness can never turn "no such key" or a revoked key (an ``ApiKey`` with ``active=False``)
into an accept -- a stale entry refuses what it refused when it was fresh.

A change seen in the registry's change log (``poller``) calls ``invalidate``: the
entry is dropped -- not kept as a stale fallback, so a key revoked or an account suspended or
moved never answers from its pre-change record again, even while the registry fails (then the
account gets 503 ``registry_unavailable`` until a read succeeds: a security change fails
closed) -- and, if this worker held it, one read starts at once. A read that was already out
when the change was seen may have read the old record: it is *superseded*, its answer is
never cached, and its waiters wait for the new read instead.

Results are reported through callbacks so metrics stay out of this module: ``on_result``
(hit / miss / negative_hit / stale / error) and ``on_stale`` (why a stale answer was served:
``revalidating`` / ``registry_error`` / ``breaker_open``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

from cachetools import TTLCache

from ..errors import RegistryError, Unavailable
from .breaker import Breaker

V = TypeVar("V")

HIT, MISS, NEGATIVE_HIT, STALE, ERROR = "hit", "miss", "negative_hit", "stale", "error"
REVALIDATING, REGISTRY_ERROR, BREAKER_OPEN = "revalidating", "registry_error", "breaker_open"
STALE_REASONS = (REVALIDATING, REGISTRY_ERROR, BREAKER_OPEN)
_MISSING = object()  # nothing that may be served without asking the registry


REFRESH_AHEAD = 0.2  # fraction of the TTL before expiry when a hit also refreshes the entry


class _Entry(Generic[V]):
    __slots__ = ("fresh_until", "refresh_at", "value")

    def __init__(self, value: V | None, fresh_until: float, refresh_at: float) -> None:
        self.value = value
        self.fresh_until = fresh_until
        # No background read before this: a hit after it refreshes ahead; after a failed read
        # it is pushed back by ``error_retry_s``, so a failing key is not re-read per request.
        self.refresh_at = refresh_at


class _Load(Generic[V]):
    """One registry read of one key, shared by everyone waiting for that key (single flight)."""

    __slots__ = ("future", "superseded")

    def __init__(self, future: asyncio.Future[V | None]) -> None:
        self.future = future
        # A change to the key was seen after this read started: its answer may predate the
        # change, so it is neither cached nor handed to anyone who can wait for a newer one.
        self.superseded = False


def _ignore(_result: str) -> None:
    pass


class CachedLookup(Generic[V]):
    def __init__(
        self,
        loader: Callable[[str], Awaitable[V | None]],
        *,
        maxsize: int,
        ttl_s: float,
        negative_ttl_s: float,
        stale_if_error_s: float,
        stale_while_revalidate_s: float | None = None,
        error_retry_s: float = 1.0,
        wait_s: float | None = None,
        on_result: Callable[[str], None] | None = None,
        on_stale: Callable[[str], None] | None = None,
        breaker: Breaker | None = None,
        clock: Callable[[], float] = time.monotonic,
        retry_after_s: int = 1,
    ) -> None:
        self._loader = loader
        self._ttl = ttl_s
        self._negative_ttl = negative_ttl_s
        # None: as long as the stale bound itself (a known key never waits for the registry).
        self._swr = (
            stale_if_error_s if stale_while_revalidate_s is None else stale_while_revalidate_s
        )
        self._error_retry = min(error_retry_s, ttl_s)
        self._clock = clock
        self._breaker = breaker
        self._wait_s = wait_s  # the longest a request waits for a read (None: the read's own)
        self._slow_reads: set[asyncio.Future[V | None]] = set()  # outlived a waiter: counted
        self._cache: TTLCache[Hashable, _Entry[V]] = TTLCache(
            maxsize=maxsize, ttl=ttl_s + stale_if_error_s, timer=clock
        )
        self._inflight: dict[str, _Load[V]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_result = on_result or _ignore
        self._on_stale = on_stale or _ignore
        self._retry_after = retry_after_s
        self.last_ok: bool = True  # did the last registry read succeed? (readiness)

    def __len__(self) -> int:
        return len(self._cache)

    def forget(self, key: str) -> None:
        """Drop what is known of ``key``: the next ``get`` reads the registry."""
        self._cache.pop(key, None)

    def values(self) -> list[V]:
        """The known values (fresh or stale, not the negative entries), for gauges."""
        return [e.value for e in list(self._cache.values()) if e.value is not None]

    async def get(self, key: str) -> V | None:
        """The value for ``key`` (None: the registry says there is no such thing), from the
        cache when it may serve it, else from a registry read this request waits for (at
        most ``wait_s``); ``Unavailable`` when there is neither. Every call is counted
        (``on_result``) and starts whatever background read is due."""
        found = self._cached(key)
        if found is not _MISSING:
            return found  # type: ignore[return-value]
        breaker = self._breaker
        if breaker is not None and not breaker.closed:
            # The registry is failing: nobody waits for it. The probe, if one is due, is a
            # background read whose answer the next request for this key will find.
            self._refresh(key)
            return self._on_error(key, BREAKER_OPEN)
        load = self._inflight.get(key) or self._start_load(key)
        try:
            async with asyncio.timeout(self._wait_s):
                # A change that arrives while the read is out: wait for the read after it.
                value = await self._newest(key, load)
        except TimeoutError:
            # Slower than any healthy registry read: the request stops waiting (the read goes
            # on, and its answer is cached), and the read counts as a failure for the breaker
            # now -- so a registry that hangs opens it within a few waits, not a few timeouts.
            self._slow(load.future)
            return self._on_error(key, REGISTRY_ERROR)
        except RegistryError:
            return self._on_error(key, REGISTRY_ERROR)
        self._on_result(MISS)
        return value

    def _cached(self, key: str) -> V | object | None:
        """The answer to serve without asking the registry (counted; starts whatever
        background read is due), or ``_MISSING``."""
        try:
            # Indexing, not .get(): TTLCache.get() checks the expiry twice (``in``, then ``[]``).
            entry = self._cache[key]
        except KeyError:
            return _MISSING
        now = self._clock()
        if now < entry.fresh_until:
            if entry.value is None:
                self._on_result(NEGATIVE_HIT)
            else:
                self._on_result(HIT)
                if now >= entry.refresh_at:
                    self._refresh(key)  # refresh ahead; this request does not wait
            return entry.value
        # Past its TTL; TTLCache still holds it, so it is within the stale bound.
        if entry.value is None:
            return _MISSING  # "no such thing" is never served stale (a new account shows up)
        breaker = self._breaker
        if breaker is None or breaker.closed:
            if now < entry.fresh_until + self._swr:
                reason = REVALIDATING
            elif now < entry.refresh_at:
                reason = REGISTRY_ERROR  # its read failed a moment ago: not again per request
            else:
                return _MISSING  # too old to serve unasked while the registry answers: ``get``
        else:
            reason = BREAKER_OPEN
        if now >= entry.refresh_at:
            self._refresh(key)
        self._served_stale(reason)
        return entry.value

    def _slow(self, future: asyncio.Future[V | None]) -> None:
        if future not in self._slow_reads and not future.done():
            self._slow_reads.add(future)  # its outcome, when it comes, is not reported again
            if self._breaker is not None:
                self._breaker.failure()

    def _refresh(self, key: str) -> None:
        """One background read for ``key`` unless one is running or the breaker says no."""
        if key not in self._inflight and (self._breaker is None or self._breaker.allow()):
            self._start_load(key)

    def peek(self, key: str) -> V | None:
        """The value cached for ``key`` however old, without counting or reading (None: none)."""
        entry = self._cache.get(key)
        return entry.value if entry is not None else None

    def invalidate(self, key: str) -> Coroutine[Any, Any, V | None] | None:
        """The registry changed ``key``: forget what this worker knew and, if it knew
        something (an entry or a read out), read it again now. Returns a coroutine that ends
        when a read started after this call has answered (its value, or its RegistryError);
        None when this worker held nothing of ``key``, so there is nothing to refresh."""
        load = self._inflight.pop(key, None)
        if load is not None:
            load.superseded = True
        held = self._cache.pop(key, None) is not None
        if not held and load is None:
            return None
        # Not gated by the breaker: the change log was just read, so the registry answers.
        return self._newest(key, self._start_load(key))

    def reload(self, key: str) -> Coroutine[Any, Any, V | None] | None:
        """Read ``key`` again now, keeping what is cached until the answer replaces it (a read
        still out is superseded). For a second look after a change: a global table's replica
        may hold the change item before the items it changed. None when nothing is held."""
        load = self._inflight.pop(key, None)
        if load is not None:
            load.superseded = True
        elif self._cache.get(key) is None:
            return None
        return self._newest(key, self._start_load(key))

    async def _newest(self, key: str, load: _Load[V]) -> V | None:
        """The answer of ``load``, or of the read that superseded it, and so on."""
        while True:
            try:
                value = await asyncio.shield(load.future)
            except RegistryError:
                if not load.superseded:
                    raise
            else:
                if not load.superseded:
                    return value
            # Superseded: whatever the cache holds now was read after the change.
            entry = self._cache.get(key)
            if entry is not None:
                return entry.value
            load = self._inflight.get(key) or self._start_load(key)

    def _start_load(self, key: str) -> _Load[V]:
        loop = asyncio.get_running_loop()
        load: _Load[V] = _Load(loop.create_future())
        self._inflight[key] = load
        # The read runs in its own task: a waiter that gives up must not cancel the read the
        # others are waiting for.
        task = loop.create_task(self._load(key, load))
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)
        return load

    async def _load(self, key: str, load: _Load[V]) -> None:
        future = load.future
        try:
            value = await self._loader(key)
        except RegistryError as exc:
            self._failed(key, load)
            future.set_exception(exc)
        except BaseException as exc:  # never leave waiters hanging
            self._failed(key, load)
            future.set_exception(RegistryError(f"registry read failed: {type(exc).__name__}"))
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            self.last_ok = True
            if self._breaker is not None and future not in self._slow_reads:
                self._breaker.success()
            if not load.superseded:  # else it may predate a change: the newer read decides
                ttl = self._ttl if value is not None else self._negative_ttl
                now = self._clock()
                self._cache[key] = _Entry(value, now + ttl, now + ttl * (1 - REFRESH_AHEAD))
            future.set_result(value)
        finally:
            if self._inflight.get(key) is load:  # not the read that superseded this one
                del self._inflight[key]
            self._slow_reads.discard(future)
            if future.done() and not future.cancelled():
                future.exception()  # mark retrieved: no "never retrieved" warnings

    def _failed(self, key: str, load: _Load[V]) -> None:
        self.last_ok = False
        if self._breaker is not None and load.future not in self._slow_reads:
            self._breaker.failure()
        # The next background read of this key waits a little (not one per request).
        entry = self._cache.get(key)
        if entry is not None and not load.superseded:
            entry.refresh_at = self._clock() + self._error_retry

    def _served_stale(self, reason: str) -> None:
        self._on_result(STALE)
        self._on_stale(reason)

    def _on_error(self, key: str, reason: str) -> V | None:
        entry = self._cache.get(key)
        if entry is not None and entry.value is not None:
            # The last answer the registry gave, within the stale bound (TTLCache's expiry).
            self._served_stale(reason)
            return entry.value
        self._on_result(ERROR)
        raise Unavailable(
            "registry_unavailable",
            "the account registry cannot be read; try again shortly",
            retry_after=self._retry_after,
        )
