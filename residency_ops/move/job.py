"""One account move as a record: its phase and everything a resumed mover needs.

The job lives in the registry, beside the account's partition (``pk MOVE#{A}``, ``sk JOB``,
``move/registry_state.py``), so ``status`` / ``resume`` / ``abort`` from any machine with the
edge's settings see the same job. Its phases, in order::

    planned    the job exists; nothing else has changed
    incoming   fence the destination "incoming" (it takes imports, refuses everything else)
    bulk_copy  change checkpoint first, then every segment exported and imported (cursors kept)
    catch_up   replay the changes since the checkpoint until the backlog is small
    moving     registry META moving (the edge refuses writes), source fenced "frozen",
               final catch-up until no change is left
    verify     digests and counts per segment on both sides must match (mismatch: back to
               moving with the report in ``error``: writes stay refused, nothing flipped)
    flip       destination fence removed (imports are over), then ONE registry transaction:
               META region=to, generation+1, moving removed
    fence      source fenced "moved_out" (generation), after the edges' propagation bound
    clean      source purged (crypto-shred, then delete), audit records in both regions
    done

    aborting   (abort, before flip only) source fence removed, destination purged
    aborted

A phase names the work to do next; a step's work is idempotent and the phase moves on only
after it, so a crash anywhere leaves a job that ``resume`` continues from its phase.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

PHASES = (
    "planned",
    "incoming",
    "bulk_copy",
    "catch_up",
    "moving",
    "verify",
    "flip",
    "fence",
    "clean",
    "done",
)
# Abort is allowed while the registry still points at the source: up to the flip.
ABORTABLE = frozenset(PHASES[: PHASES.index("flip") + 1]) | {"aborting"}
FINISHED = frozenset({"done", "aborted"})
# The registry points at the destination: only ``resume`` finishes the move.
FLIPPED = frozenset(PHASES[PHASES.index("flip") + 1 :]) - FINISHED
SEGMENT_DONE = "done"  # a segment cursor once its export is complete

# Called with the name of every persisted step (tests crash the mover there, then resume).
Hook = Callable[[str], None]


async def all_of(coros: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run ``coros`` concurrently; the first failure cancels the others and is raised as
    itself (not an ExceptionGroup), so callers handle one exception type either way."""
    try:
        async with asyncio.TaskGroup() as tg:
            for c in coros:
                tg.create_task(c)
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None


def next_phase(phase: str) -> str:
    return PHASES[PHASES.index(phase) + 1]


def refusal(command: str, job: MoveJob) -> str | None:
    """Why ``resume`` or ``abort`` cannot run on ``job`` as it is, or None. Asked before the
    command takes the job over: a refused command changes nothing (a running mover keeps its
    job)."""
    if job.phase in FINISHED:
        return f"the account's last move is {job.phase}; nothing to {command}"
    if command == "abort" and job.phase not in ABORTABLE:
        return f"job is {job.phase}: abort is only possible before the flip"
    if command == "resume" and job.phase not in PHASES:
        return f"job is {job.phase}; nothing to run"
    return None


def next_step(job: MoveJob) -> str:
    """What an operator does about a job that stopped unfinished."""
    again = f"'residency-ops account resume {job.account}'"
    if job.phase in FLIPPED:
        return (
            f"the move has flipped (the account lives in {job.dest} now): {again} finishes "
            "it; abort is no longer possible"
        )
    if job.phase == "aborting":
        return f"'residency-ops account abort {job.account}' finishes the abort"
    return f"{again} continues it, or 'residency-ops account abort {job.account}' undoes it"


@dataclass
class MoveJob:
    account: str
    source: str
    dest: str
    # The account's generation when the job was planned; the flip makes it generation + 1,
    # and every fence this job sets carries that new generation.
    from_generation: int
    job_id: str = field(default_factory=lambda: secrets.token_hex(8))
    phase: str = "planned"
    segments: int = 4
    checkpoint: Any = None  # the source's change position (opaque to the mover)
    cursors: dict[str, str | None] = field(default_factory=dict)  # segment -> export cursor
    counts: dict[str, int] = field(default_factory=dict)  # copied, replayed, deleted, rounds
    verified: dict[str, int] = field(default_factory=dict)  # item counts per kind (verify)
    purged: dict[str, int] = field(default_factory=dict)
    purge_cursor: str | None = None  # the running purge's next step (opaque to the mover)
    cleaned: list[str] = field(default_factory=list)  # clean's steps done (purge, audits)
    started: float = field(default_factory=time.time)
    updated: float = 0.0
    moving_started: float | None = None
    flipped: float | None = None
    finished: float | None = None
    error: str | None = None  # the last failure, ids and counts only
    entered: dict[str, float] = field(default_factory=dict)  # phase -> when it was entered

    def __post_init__(self) -> None:
        if not self.entered:
            self.entered[self.phase] = self.started

    @property
    def generation(self) -> int:
        """The generation this move establishes (fences, the flip)."""
        return self.from_generation + 1

    @property
    def freeze_s(self) -> float | None:
        """Writes refused from the moving phase's start to the flip."""
        if self.moving_started is None or self.flipped is None:
            return None
        return round(self.flipped - self.moving_started, 3)

    def add(self, name: str, n: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> MoveJob:
        data = json.loads(raw)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def summary(self) -> dict[str, Any]:
        """What ``status`` prints: no checkpoint, no cursors' values, no PII (there is none)."""
        return {
            "account": self.account,
            "job": self.job_id,
            "from": self.source,
            "to": self.dest,
            "phase": self.phase,
            "generation": self.generation
            if self.phase in ("fence", "clean", "done")
            else self.from_generation,
            "segments_done": sum(1 for c in self.cursors.values() if c == SEGMENT_DONE),
            "segments": self.segments,
            "counts": self.counts,
            "verified": self.verified,
            "purged": self.purged,
            "freeze_s": self.freeze_s,
            "phase_s": self.phase_durations(),
            "error": self.error,
        }

    def phase_durations(self) -> dict[str, float]:
        """Seconds spent in each phase entered so far (the last one: until now)."""
        order = sorted(self.entered.items(), key=lambda kv: kv[1])
        out = {}
        for (name, t), nxt in zip(order, [*order[1:], ("", time.time())], strict=True):
            out[name] = round(nxt[1] - t, 3)
        return out
