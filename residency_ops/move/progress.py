"""What a person (or a script) sees while a move runs.

On a terminal (stderr is a TTY): a ``tqdm`` bar per phase with the items copied / replayed,
their rate and the elapsed time. Otherwise: JSON lines on stdout, one per phase change and at
most one progress line per ``tick_s`` seconds, then the job's summary. Counts and ids only.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from .job import MoveJob


def _line(out: TextIO, obj: dict[str, Any]) -> None:
    out.write(json.dumps(obj, separators=(",", ":"), sort_keys=True) + "\n")
    out.flush()


class Progress:
    """JSON lines (the base: scripts, CI, logs)."""

    def __init__(self, out: TextIO | None = None, tick_s: float = 1.0) -> None:
        self.out = out or sys.stdout
        self.tick_s = tick_s
        self._last_tick = 0.0
        self._phase_started = time.monotonic()
        self._last_phase: str | None = None

    def phase(self, job: MoveJob) -> None:
        if job.phase == self._last_phase:
            return
        self._last_phase = job.phase
        self._phase_started = time.monotonic()
        _line(self.out, {"event": "phase", **job.summary()})

    def tick(self, job: MoveJob, what: str) -> None:
        now = time.monotonic()
        if now - self._last_tick < self.tick_s:
            return
        self._last_tick = now
        elapsed = max(now - self._phase_started, 1e-6)
        n = job.counts.get(what, 0)
        _line(
            self.out,
            {
                "event": "progress",
                "account": job.account,
                "phase": job.phase,
                what: n,
                "per_s": round(n / elapsed, 1),
            },
        )

    def freeze(self, job: MoveJob) -> None:
        _line(self.out, {"event": "flipped", "account": job.account, "freeze_s": job.freeze_s})

    def result(self, summary: dict[str, Any]) -> None:
        """The job's last line: its summary and result."""
        _line(self.out, summary)

    def close(self) -> None:
        pass


# The count a phase's bar shows.
_COUNTED = {"catch_up": "replayed", "moving": "replayed", "clean": "purged", "aborting": "purged"}


class BarProgress(Progress):
    """A tqdm bar on stderr per phase (the CLI still prints the final summary as JSON)."""

    def __init__(self, out: TextIO | None = None) -> None:
        super().__init__(out, tick_s=0.0)
        from tqdm import tqdm

        self._tqdm = tqdm
        self._bar: Any = None
        self._what = ""

    def phase(self, job: MoveJob) -> None:
        if job.phase == self._last_phase:
            return
        self._last_phase = job.phase
        if self._bar is not None:
            self._bar.close()
        self._what = _COUNTED.get(job.phase, "copied")
        self._bar = self._tqdm(
            desc=f"{job.account} {job.phase}",
            unit=" items",
            initial=job.counts.get(self._what, 0),
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def tick(self, job: MoveJob, what: str) -> None:
        if self._bar is not None and what == self._what:
            self._bar.n = job.counts.get(what, 0)
            self._bar.refresh()

    def freeze(self, job: MoveJob) -> None:
        if self._bar is not None:
            self._bar.write(f"flipped: writes were refused for {job.freeze_s} s")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def for_terminal(out: TextIO | None = None) -> Progress:
    return BarProgress(out) if sys.stderr.isatty() else Progress(out)
