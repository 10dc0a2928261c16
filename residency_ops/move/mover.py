"""The account mover: runs a ``MoveJob`` from its phase to ``done`` (or ``aborted``).

Each phase is one method; it does its work (idempotent: fences set twice, items imported
twice, a purge run twice are all the same as once), then the job moves to the next phase in
the registry. The copy itself is ``copier.py``; what verify compares is ``verify.py``.
``hook(step)`` is called after every persisted step: tests raise there to crash the mover at
that exact point and then resume.

Ordering is what makes a crash anywhere safe:

* the change checkpoint is taken BEFORE the bulk scan starts, so every write the scan might
  miss is in the replay;
* ``moving``: registry first (edges refuse writes within the change log's bound), then the
  source fence "frozen" (a stale edge's write is refused by the store itself), then the
  final catch-up; a write the source committed before the fence is in its change stream;
* ``flip``: registry first (one transaction), then the fences; a crash before the source is
  fenced "moved_out" leaves it "frozen", which already refuses writes, and resume re-fences.
  The source stays "frozen" for ``propagation_s`` after the flip, so an edge that has not
  seen the flip yet is told "moving, retry" (503) rather than "misdirected" (421).
"""

from __future__ import annotations

import asyncio
import time

from residency_contract.protocol import CHECKPOINT_TRIMMED

from .copier import Copier
from .job import Hook, MoveJob, next_phase, refusal
from .options import MoveOptions
from .progress import Progress
from .registry_state import MoveRefused, MoveRegistry
from .store_api import RegionStores, StoreRefused
from .verify import Mismatch, Verifier


class MoveFailed(Exception):
    """The move stopped (verify mismatch, a store refused): the job keeps its phase."""


def _no_hook(_step: str) -> None:
    pass


class Mover:
    def __init__(
        self,
        job: MoveJob,
        state: MoveRegistry,
        source: RegionStores,
        dest: RegionStores,
        progress: Progress,
        options: MoveOptions | None = None,
        hook: Hook = _no_hook,
    ) -> None:
        self.job = job
        self.state = state
        self.src = source
        self.dst = dest
        self.progress = progress
        self.opt = options or MoveOptions()
        self.hook = hook
        self._save_lock = asyncio.Lock()
        self.copier = Copier(job, source, dest, self.opt, progress, self._save, hook)
        self.verifier = Verifier(job, source, dest, self.opt.digest_limit)

    # -- driving ------------------------------------------------------------------------------

    async def run(self) -> MoveJob:
        steps = {
            "planned": self._planned,
            "incoming": self._incoming,
            "bulk_copy": self._bulk_copy,
            "catch_up": self._catch_up,
            "moving": self._moving,
            "verify": self._verify,
            "flip": self._flip,
            "fence": self._fence,
            "clean": self._clean,
        }
        while self.job.phase != "done":
            phase = self.job.phase
            if phase not in steps:
                raise MoveRefused(f"job is {phase}; nothing to run")
            self.progress.phase(self.job)
            try:
                await steps[phase]()
            except StoreRefused as exc:
                if exc.code != CHECKPOINT_TRIMMED or phase not in ("catch_up", "moving"):
                    raise
                await self._restart_copy()
        self.progress.phase(self.job)
        return self.job

    async def _restart_copy(self) -> None:
        """The source's change stream no longer reaches back to the checkpoint (a job left
        longer than the stream keeps records, 24 h), so changes may be missing: the partial
        copy is purged and the copy starts over from a new checkpoint."""
        j = self.job
        await self._purge(self.dst, "destination")
        j.checkpoint, j.cursors, j.purged = None, {}, {}
        self.verifier.forget()
        j.add("restarts", 1)
        j.phase = "bulk_copy"
        j.entered[j.phase] = time.time()
        await self._save()

    async def _advance(self, step: str | None = None) -> None:
        self.job.phase = next_phase(self.job.phase)
        self.job.entered[self.job.phase] = time.time()
        self.job.error = None
        await self._save()
        self.hook(step or self.job.phase)

    async def _purge(self, stores: RegionStores, role: str) -> None:
        """Purge the account from ``stores``' region a bounded step at a time (one request
        each, whatever the account's size), the cursor and counts saved after every step:
        a resumed purge goes on where it was. A step redone after a crash between its answer
        and the save counts only what it still found."""
        j = self.job
        while True:
            deleted, j.purge_cursor = await stores.purge(
                j.account, j.generation, role, j.purge_cursor, self.opt.purge_limit
            )
            for kind, n in deleted.items():
                j.purged[kind] = j.purged.get(kind, 0) + n
            j.add("purged", sum(deleted.values()))
            self.progress.tick(j, "purged")
            if j.purge_cursor is None:
                return
            await self._save()
            self.hook("purge_page")

    async def _save(self) -> None:
        async with self._save_lock:
            await self.state.save(self.job)

    # -- phases -------------------------------------------------------------------------------

    async def _planned(self) -> None:
        await self._advance()

    async def _incoming(self) -> None:
        j = self.job
        await self.dst.fence(j.account, "incoming", j.generation, j.source)
        self.hook("fenced_incoming")
        await self._advance()

    async def _bulk_copy(self) -> None:
        await self.copier.bulk()
        await self._advance()

    async def _replay_round(self) -> int:
        """One replay round (``Copier.replay_round``), its keys noted for verify; returns how
        many keys it replayed."""
        keys = await self.copier.replay_round()
        self.verifier.note(keys)
        return len(keys)

    async def _catch_up(self) -> None:
        # Until the backlog is small, or stops shrinking (a steady write rate leaves about
        # one round's worth whatever we do: more rounds only delay the freeze, not shorten it).
        previous: int | None = None
        for _ in range(self.opt.max_catch_up_rounds):
            n = await self._replay_round()
            if self._backlog_settled(n, previous):
                break
            previous = n
        if self.opt.scan_before_freeze:
            # Between two rounds: the destination holds every change up to the checkpoint.
            await self.verifier.scan()
            self.hook("scanned")
            await self._settle_digests()
        await self._advance()

    async def _settle_digests(self) -> None:
        """Keep the scan's digests current while the account is writable, so the freeze
        re-digests only what changed since the last of these rounds, not since the scan (on
        a large account the scan takes long enough for that to be many keys). Each round:
        replay, then re-digest on both sides the keys replayed since the last re-digest. A
        key written on the source after its replay is in a later round's replay, so in the
        set the freeze re-digests: the scan's exactness argument (verify.py) holds."""
        v = self.verifier
        assert v.scanned is not None and v.changed is not None
        j = self.job
        previous: int | None = None
        for _ in range(self.opt.max_catch_up_rounds):
            await self._replay_round()
            keys = v.take()
            n = len(keys)
            if n:
                try:
                    await v.redigest(keys)
                except StoreRefused as exc:
                    if exc.status != 400:
                        raise
                    v.scanned = None  # no keys form: verify scans in full in the freeze
                    return
                j.add("redigested", n)
            if self._backlog_settled(n, previous):
                return
            previous = n

    def _backlog_settled(self, n: int, previous: int | None) -> bool:
        """A round of ``n`` keys ends a series of rounds: small, or not shrinking from the
        ``previous`` round's (a steady write rate leaves about one round's worth)."""
        small = n <= self.opt.small_backlog
        return small or (previous is not None and n > previous * self.opt.shrink_ratio)

    async def _moving(self) -> None:
        j = self.job
        if j.moving_started is None:
            j.moving_started = time.time()
        # Resumed after the destination was opened for the flip (then a crash): imports
        # need it "incoming" again.
        await self.dst.fence(j.account, "incoming", j.generation, j.source)
        await self.state.set_moving(j, True)
        self.hook("registry_moving")
        await self.src.fence(j.account, "frozen", j.generation, j.dest)
        fenced = time.monotonic()
        self.hook("fenced_frozen")
        # Until a round finds nothing, and one started settle_s after the fence has (a write
        # committed just before the fence may reach the change stream a moment later).
        # Every round here began after the fence: what it exported is the key's final state,
        # on both sides once imported, so its keys are re-digested at once, alongside the
        # next rounds (a key that comes back later is digested again, to the same value).
        v = self.verifier
        digesting: list[asyncio.Task[None]] = []
        v.freeze_digested = 0
        try:
            while True:
                started = time.monotonic()
                n = await self._replay_round()
                if v.scanned is not None and v.changed:
                    keys = v.take()
                    v.freeze_digested += len(keys)
                    digesting.append(asyncio.ensure_future(v.redigest(keys)))
                if n == 0 and started - fenced >= self.opt.settle_s:
                    break
                if n == 0:
                    await asyncio.sleep(max(0.0, self.opt.settle_s - (time.monotonic() - fenced)))
            for outcome in await asyncio.gather(*digesting, return_exceptions=True):
                if isinstance(outcome, StoreRefused) and outcome.status == 400:
                    v.scanned = None  # no keys form after all: verify scans in full
                elif isinstance(outcome, BaseException):
                    raise outcome
        finally:
            for task in digesting:
                task.cancel()
        await self._advance()

    async def _verify(self) -> None:
        j = self.job
        try:
            j.verified = await self.verifier.counts()
        except Mismatch as exc:
            # Stay frozen: writes refused, nothing flipped; resume re-runs the final catch-up.
            j.phase = "moving"
            j.error = str(exc)
            await self._save()
            raise MoveFailed(str(exc)) from None
        await self._advance()

    async def _flip(self) -> None:
        j = self.job
        # The destination opens just before the flip: imports are over (verified), and no
        # edge routes there until the flip, so the first read sent there is served, not a
        # 421 of a region still "incoming". Abort re-fences it before purging.
        await self.dst.fence(j.account, "none", j.generation, j.source)
        self.hook("dest_open")
        j.flipped = time.time()
        j.phase = next_phase(j.phase)
        j.entered[j.phase] = j.flipped
        j.error = None
        await self.state.flip(j)  # META region=to, generation+1, moving off; job: fence
        self.progress.freeze(j)
        self.hook("fence")

    async def _fence(self) -> None:
        j = self.job
        if j.flipped is not None:
            await asyncio.sleep(max(0.0, j.flipped + self.opt.propagation_s - time.time()))
        await self.src.fence(j.account, "moved_out", j.generation, j.dest)
        self.hook("fenced_moved_out")
        await self._advance()

    async def _clean(self) -> None:
        j = self.job
        if "purge" not in j.cleaned:
            await self._purge(self.src, "source")
            j.cleaned.append("purge")
            await self._save()
            self.hook("purged")
        if "audit_dest" not in j.cleaned:
            await self.dst.audit(j.account, "move_in", j.generation, j.source, j.verified, j.job_id)
            j.cleaned.append("audit_dest")
            await self._save()
            self.hook("audit_dest")
        if "audit_source" not in j.cleaned:
            await self.src.audit(j.account, "move_out", j.generation, j.dest, j.purged, j.job_id)
            j.cleaned.append("audit_source")
        j.finished = time.time()
        await self._advance()

    # -- abort --------------------------------------------------------------------------------

    async def abort(self) -> MoveJob:
        """Undo a move that has not flipped: writes allowed again on the source, the partial
        destination copy purged, the registry's generation unchanged."""
        j = self.job
        refused = refusal("abort", j)
        if refused:
            raise MoveRefused(refused)
        if j.phase != "aborting":
            j.phase = "aborting"
            await self.state.set_moving(j, False)
            self.hook("abort_registry")
        self.progress.phase(j)
        await self.src.fence(j.account, "none", j.generation, j.dest)
        self.hook("abort_unfenced")
        if j.checkpoint is not None:
            # The copy started, so the destination was fenced "incoming"; the flip phase may
            # have opened it since: fence it again so the purge may run.
            await self.dst.fence(j.account, "incoming", j.generation, j.source)
        try:
            await self._purge(self.dst, "destination")
        except StoreRefused as exc:
            # Aborted before the destination was fenced "incoming": it holds nothing of ours.
            if exc.status != 409 or j.counts.get("copied", 0):
                raise
        self.hook("abort_purged")
        # Not "none": the destination is not the account's home, and it may have held a
        # "moved_out" marker of an earlier move out of it that "incoming" replaced; leaving it
        # fenced keeps a very stale edge's write refused there (a later move re-fences it).
        await self.dst.fence(j.account, "moved_out", j.generation, j.source)
        await self.src.audit(
            j.account, "move_aborted", j.from_generation, j.dest, j.purged, j.job_id
        )
        j.phase = "aborted"
        j.finished = time.time()
        await self._save()
        self.progress.phase(j)
        return j
