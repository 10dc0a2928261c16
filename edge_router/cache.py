"""The registry behind a cache: fresh hits, negative hits, single flight, stale-if-error.

Each entry records what the registry said (a value, or "no such thing") and until when that
answer is fresh. Entries live in a ``cachetools.TTLCache`` whose TTL is the longest an answer
may ever be used (fresh TTL + ``stale_if_error``), so memory and staleness are both bounded:

* fresh entry                      -> ``hit`` (or ``negative_hit`` for "no such account")
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


class _Entry(Generic[V]):
    __slots__ = ("fresh_until", "stale", "value")

    def __init__(self, value: V | None, fresh_until: float) -> None:
        self.value = value
        self.fresh_until = fresh_until
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
        self._on_result = on_result or (lambda _r: None)
        self._retry_after = retry_after_s
        self.last_ok: bool = True  # did the last registry read succeed? (readiness)

    def __len__(self) -> int:
        return len(self._cache)

    async def get(self, key: str) -> V | None:
        now = self._clock()
        entry = self._cache.get(key)
        if entry is not None and now < entry.fresh_until:
            if entry.value is None:
                self._on_result(NEGATIVE_HIT)
            else:
                self._on_result(STALE if entry.stale else HIT)
            return entry.value
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._inflight[key] = future
            # The read runs in its own task: a waiter that gives up must not cancel the
            # read the others are waiting for.
            asyncio.get_running_loop().create_task(self._load(key, future))
        try:
            value = await asyncio.shield(future)
        except RegistryError:
            return self._on_error(key)
        self._on_result(MISS)
        return value

    async def _load(self, key: str, future: asyncio.Future[V | None]) -> None:
        try:
            value = await self._loader(key)
        except RegistryError as exc:
            self.last_ok = False
            future.set_exception(exc)
        except BaseException as exc:  # never leave waiters hanging
            self.last_ok = False
            future.set_exception(RegistryError(f"registry read failed: {type(exc).__name__}"))
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            self.last_ok = True
            ttl = self._ttl if value is not None else self._negative_ttl
            self._cache[key] = _Entry(value, self._clock() + ttl)
            future.set_result(value)
        finally:
            self._inflight.pop(key, None)
            if future.done() and not future.cancelled():
                future.exception()  # mark retrieved: no "never retrieved" warnings

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
