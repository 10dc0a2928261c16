"""The copy's two motions, for the mover (``mover.py``): the bulk copy of every segment, and a
replay round of the changes since the checkpoint.

Both export from the source with every data key re-wrapped for the destination's public key
(``recipient``) and import into the destination in requests the stores accept (at most
``import_max_bytes`` / ``import_max_items`` each). They keep the job's cursors and checkpoint
current and save them as they go (``save``), so a resumed mover goes on where this one was.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .job import SEGMENT_DONE, Hook, MoveJob, all_of
from .options import MoveOptions
from .progress import Progress
from .store_api import RegionStores

Keys = set[tuple[str, str]]


@dataclass
class Copier:
    job: MoveJob
    src: RegionStores
    dst: RegionStores
    opt: MoveOptions
    progress: Progress
    save: Callable[[], Awaitable[None]]  # the job, persisted (the mover's)
    hook: Hook
    _recipient: dict[str, Any] | None = field(default=None, init=False, repr=False)

    async def recipient(self) -> dict[str, Any]:
        """The destination's public key, as the export endpoints take it."""
        if self._recipient is None:
            key = await self.dst.public_key(self.job.account)
            self._recipient = {"kid": key["kid"], "pem": key["pem"]}
        return self._recipient

    async def bulk(self) -> None:
        """Every segment exported and imported, from the cursors the job holds; the change
        checkpoint is taken first."""
        j = self.job
        if j.checkpoint is None:
            # BEFORE the scan: a write the scan misses is then one the replay has.
            j.checkpoint = await self.src.changes_start(j.account)
            j.cursors = {str(i): None for i in range(j.segments)}
            await self.save()
            self.hook("checkpoint")
        recipient = await self.recipient()
        last_save = [time.monotonic()]

        async def segment(i: str) -> None:
            while j.cursors.get(i) != SEGMENT_DONE:
                page = await self.src.export(
                    j.account,
                    int(i),
                    j.segments,
                    j.cursors.get(i),
                    self.opt.export_limit,
                    recipient,
                )
                items = page.get("items", [])
                await self.import_(items, [])
                j.add("copied", len(items))
                j.cursors[i] = page.get("cursor") or SEGMENT_DONE
                self.progress.tick(j, "copied")
                if (
                    j.cursors[i] == SEGMENT_DONE
                    or time.monotonic() - last_save[0] > self.opt.save_every_s
                ):
                    last_save[0] = time.monotonic()
                    await self.save()
                    self.hook(f"segment_page:{i}")

        await all_of(segment(i) for i in sorted(j.cursors))

    async def import_(self, items: list[Any], delete: list[list[str]]) -> None:
        """Import in requests of at most ``import_max_bytes`` of items (the stores bound a
        body), deletes with the last one."""
        batch: list[Any] = []
        size = 0
        for item in items:
            n = len(repr(item))
            if batch and (
                size + n > self.opt.import_max_bytes or len(batch) >= self.opt.import_max_items
            ):
                await self.dst.import_(self.job.account, batch, [])
                batch, size = [], 0
            batch.append(item)
            size += n
        if batch or delete:
            await self.dst.import_(self.job.account, batch, delete)

    async def replay_round(self) -> Keys:
        """Replay every change since the checkpoint; returns the keys replayed."""
        j = self.job
        recipient = await self.recipient()
        keys: dict[tuple[str, str], None] = {}
        checkpoint = j.checkpoint
        while True:
            page = await self.src.changes(j.account, checkpoint)
            for pk, sk in page.get("keys", []):
                keys[(pk, sk)] = None
            checkpoint = page.get("checkpoint", checkpoint)
            if not page.get("more"):
                break
        todo = [list(k) for k in keys]
        gate = asyncio.Semaphore(self.opt.parallel_replays)

        async def replay(chunk: list[list[str]]) -> None:
            async with gate:
                got = await self.src.export_keys(j.account, chunk, recipient)
                await self.import_(got.get("items", []), got.get("missing", []))
            j.add("replayed", len(got.get("items", [])))
            j.add("deleted", len(got.get("missing", [])))

        step = self.opt.keys_per_export
        await all_of(replay(todo[i : i + step]) for i in range(0, len(todo), step))
        # The new position only once its changes are in the destination.
        j.checkpoint = checkpoint
        j.add("rounds", 1)
        await self.save()
        self.progress.tick(j, "replayed")
        return set(keys)
