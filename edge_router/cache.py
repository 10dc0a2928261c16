"""The registry behind a cache: fresh hits, negative hits, single flight, stale-if-error.

Each entry records what the registry said (a value, or "no such thing") and until when that
answer is fresh. Entries live in a ``cachetools.TTLCache`` whose TTL is the longest an answer
may ever be used (fresh TTL + ``stale_if_error``), so memory and staleness are both bounded:

* fresh entry                      -> ``hit`` (or ``negative_hit`` for "no such account")
* fresh entry in the last ``REFRESH_AHEAD`` of its TTL -> still a ``hit``, and one background
                                      read refreshes it (single flight): in steady state no
                                      request ever waits for the registry. Without this, every
                                      request in flight when a hot account expired waited for
                                      the read (and counted a miss): 99.7% hits at 256-1,000
                                      connections on the bench, and a latency step every TTL.
* missing or expired entry         -> one registry read per key however many requests wait
                                      (single flight), ``miss``
* registry read fails, known value -> the last value is served (``stale``) while it is within
                                      the stale bound; the next retry is delayed a little so an
                                      outage does not add a failed read to every request
* registry read fails, nothing known (or only "no such account") -> ``error``: fail closed.

Results are reported through a callback so metrics stay out of this module.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from cachetools import TTLCache

from .errors import RegistryError, Unavailable

V = TypeVar("V")

HIT, MISS, NEGATIVE_HIT, STALE, ERROR = "hit", "miss", "negative_hit", "stale", "error"
MISSING = object()  # peek(): not cached (or not fresh)


REFRESH_AHEAD = 0.2  # fraction of the TTL before expiry when a hit also refreshes the entry


class _Entry(Generic[V]):
    __slots__ = ("fresh_until", "refresh_at", "stale", "value")

    def __init__(self, value: V | None, fresh_until: float, refresh_at: float) -> None:
        self.value = value
        self.fresh_until = fresh_until
        self.refresh_at = refresh_at  # a hit after this starts a background refresh
        self.stale = False  # served past its TTL because the registry failed


class CachedLookup(Generic[V]):
    def __init__(
        self,
        loader: Callable[[str], Awaitable[V | None]],
        *,
        maxsize: int,
        ttl_s: float,
        negative_ttl_s: float,
        stale_if_error_s: float,
        error_retry_s: float = 1.0,
        on_result: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        retry_after_s: int = 1,
    ) -> None:
        self._loader = loader
        self._ttl = ttl_s
        self._negative_ttl = negative_ttl_s
        self._error_retry = min(error_retry_s, ttl_s)
        self._clock = clock
        self._cache: TTLCache[Hashable, _Entry[V]] = TTLCache(
            maxsize=maxsize, ttl=ttl_s + stale_if_error_s, timer=clock
        )
        self._inflight: dict[str, asyncio.Future[V | None]] = {}
        # The last entry loaded per key, in a plain dict for ``fresh`` (TTLCache's lookup is
        # several Python calls). Only ever read for entries still fresh by their own clock,
        # which TTLCache (expiring at fresh TTL + stale bound) would also still hold.
        self._latest: dict[Hashable, _Entry[V]] = {}
        self._maxsize = maxsize
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_result = on_result or (lambda _r: None)
        self._retry_after = retry_after_s
        self.last_ok: bool = True  # did the last registry read succeed? (readiness)

    def __len__(self) -> int:
        return len(self._cache)

    def peek(self, key: str) -> V | object | None:
        """The fresh answer without awaiting (counted like ``get``), or ``MISSING``: the hot
        path needs no coroutine for a hit."""
        try:
            # Indexing, not .get(): TTLCache.get() checks the expiry twice (``in``, then ``[]``).
            entry = self._cache[key]
        except KeyError:
            return MISSING
        if entry is not None:
            now = self._clock()
            if now < entry.fresh_until:
                if entry.value is None:
                    self._on_result(NEGATIVE_HIT)
                elif entry.stale:
                    self._on_result(STALE)
                else:
                    self._on_result(HIT)
                    if now >= entry.refresh_at and key not in self._inflight:
                        self._start_load(key)  # refresh ahead; this request does not wait
                return entry.value
        return MISSING

    def fresh(self, key: str) -> V | None:
        """A fresh, known value with no effect at all (not counted, no refresh started), or
        None -- also when a refresh-ahead is due: ``peek`` or ``get`` then does what is due."""
        entry = self._latest.get(key)
        if entry is None or entry.stale or self._clock() >= entry.refresh_at:
            return None
        return entry.value

    async def get(self, key: str) -> V | None:
        found = self.peek(key)
        if found is not MISSING:
            return found  # type: ignore[return-value]
        future = self._inflight.get(key) or self._start_load(key)
        try:
            value = await asyncio.shield(future)
        except RegistryError:
            return self._on_error(key)
        self._on_result(MISS)
        return value

    def _start_load(self, key: str) -> asyncio.Future[V | None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V | None] = loop.create_future()
        self._inflight[key] = future
        # The read runs in its own task: a waiter that gives up must not cancel the read the
        # others are waiting for.
        task = loop.create_task(self._load(key, future))
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)
        return future

    async def _load(self, key: str, future: asyncio.Future[V | None]) -> None:
        try:
            value = await self._loader(key)
        except RegistryError as exc:
            self.last_ok = False
            self._delay_refresh(key)
            future.set_exception(exc)
        except BaseException as exc:  # never leave waiters hanging
            self.last_ok = False
            self._delay_refresh(key)
            future.set_exception(RegistryError(f"registry read failed: {type(exc).__name__}"))
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            self.last_ok = True
            ttl = self._ttl if value is not None else self._negative_ttl
            now = self._clock()
            entry = _Entry(value, now + ttl, now + ttl * (1 - REFRESH_AHEAD))
            self._cache[key] = entry
            if len(self._latest) >= self._maxsize:
                self._latest.clear()
            self._latest[key] = entry
            future.set_result(value)
        finally:
            self._inflight.pop(key, None)
            if future.done() and not future.cancelled():
                future.exception()  # mark retrieved: no "never retrieved" warnings

    def _delay_refresh(self, key: str) -> None:
        # A failed refresh-ahead is retried after a pause, not on the very next hit.
        entry = self._cache.get(key)
        if entry is not None:
            entry.refresh_at = self._clock() + self._error_retry

    def _on_error(self, key: str) -> V | None:
        entry = self._cache.get(key)
        if entry is not None and entry.value is not None:
            # Keep serving the last known value; do not retry on every request meanwhile.
            # The entry's TTLCache expiry (set at insertion) still bounds how long.
            entry.fresh_until = self._clock() + self._error_retry
            entry.stale = True
            self._on_result(STALE)
            return entry.value
        self._on_result(ERROR)
        raise Unavailable(
            "registry_unavailable",
            "the account registry cannot be read; try again shortly",
            retry_after=self._retry_after,
        )
