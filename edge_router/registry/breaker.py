"""A circuit breaker around the account registry: an outage is known once, not per request.

::

    closed ──(failure_threshold failed reads in a row)──▶ open
       ▲                                                  │ open_s passed, a read is wanted
       │                                                  ▼
       └──────────(the probe read succeeds)────────── half-open ──(the probe fails)──▶ open

* closed: reads go to the registry.
* open: no read starts. The cache answers at once from what it knows (a stale entry, within
  ``stale_if_error_s``) or refuses (503 ``registry_unavailable``); nobody waits for a registry
  that just failed ``failure_threshold`` times in a row.
* half-open: the first read wanted after ``open_s`` is let through as the probe -- in the
  background: the cache never makes a request wait for it -- and every other read is refused
  as if open until it reports. Its success closes the breaker; its failure opens it again.

Without it, every request whose entry had expired waited for its own failing read (~4.4 s:
two attempts of 2 s) and was then served stale for a second before the next one waited again.

Pure bookkeeping: a clock in, no I/O and no timers (the next wanted read finds the open period
over), so a test drives it with a fake clock. The caller reports each read's outcome; state
changes go to ``on_change`` (metrics, a log line).
"""

from __future__ import annotations

import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATES = (CLOSED, OPEN, HALF_OPEN)


class Breaker:
    __slots__ = (
        "_clock",
        "_failures",
        "_on_change",
        "_open_s",
        "_open_until",
        "_threshold",
        "state",
    )

    def __init__(
        self,
        *,
        failure_threshold: int,
        open_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        if failure_threshold < 1 or open_s <= 0:
            raise ValueError("failure_threshold must be >= 1 and open_s > 0")
        self._threshold = failure_threshold
        self._open_s = open_s
        self._clock = clock
        self._on_change = on_change or (lambda _old, _new: None)
        self._failures = 0  # failed reads in a row while closed
        self._open_until = 0.0
        self.state = CLOSED

    @property
    def closed(self) -> bool:
        return self.state == CLOSED

    def allow(self) -> bool:
        """May a registry read start now? Always when closed; when open, the first call after
        ``open_s`` gets True and makes that read the half-open probe; otherwise False."""
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN and self._clock() >= self._open_until:
            self._set(HALF_OPEN)
            return True
        return False

    def success(self) -> None:
        """A read answered (found or not found): the registry works."""
        self._failures = 0
        if self.state != CLOSED:
            self._set(CLOSED)

    def failure(self) -> None:
        """A read failed (timeout, throttling, connection refused...)."""
        state = self.state
        if state == HALF_OPEN:
            self._open()
        elif state == CLOSED:
            self._failures += 1
            if self._failures >= self._threshold:
                self._open()
        # open: a read that began while closed and failed late tells nothing new

    def _open(self) -> None:
        self._failures = 0
        self._open_until = self._clock() + self._open_s
        self._set(OPEN)

    def _set(self, state: str) -> None:
        old, self.state = self.state, state
        self._on_change(old, state)
