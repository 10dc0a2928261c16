"""The move job's registry writes: each one conditional, each through ``RegistryWriter``.

Items (``residency_contract.tables`` has the layout)::

    pk ACCOUNT#{A}  sk META  {region, generation, moving, ...}   what the edge routes by
    pk MOVE#{A}     sk JOB   {job, phase, runner, state (the MoveJob as JSON)}

The job lives outside the account's partition, which every edge reads whole: its state
(checkpoint, cursors) stays out of the edges' reads, and its progress saves are written
without a change-log item (``RegistryWriter.write_unseen``) -- a change item makes every edge
drop and re-read the account, and fail requests closed if that read fails. The two writes
that change META (``moving`` on/off, the flip) go through ``RegistryWriter.write``, change
item included, so every edge sees them within the change log's bound.

Conditions make the job safe against a second mover and against itself after a crash:

* a new job only where there is none or the last one is finished, and only while META still
  has the region and generation the job was planned from;
* every save of a running job carries ``runner = <this process's token>``: ``resume`` or
  ``abort`` from elsewhere takes the job over (a new token), and the old process's next save
  fails (``JobTakenOver``) instead of both writing;
* the two META changes (``moving`` on, and the flip) are in ONE transaction with the job's
  phase, conditioned on META's region and generation: the flip happens at most once, and a
  crash can never leave META flipped with a job that does not know it.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from edge_router.registry import AccountRecord, parse_account
from edge_router.registry.records import attr_s
from residency_contract.tables import meta_key, move_job_key

from ..registry_writer import RegistryConflict, RegistryWriter
from .job import FINISHED, MoveJob

_NEW_JOB = "attribute_not_exists(pk) OR #p IN (:f0, :f1)"  # none yet, or the last finished


class JobTakenOver(Exception):
    """Another process resumed or aborted this job: this one must stop."""


class MoveRefused(Exception):
    """The move cannot start or continue as asked (bad input, wrong state): exit 2."""


def _meta_is(job: MoveJob, region: str) -> tuple[str, dict[str, Any]]:
    """A condition on META: it still has ``region`` and the job's starting generation."""
    values: dict[str, Any] = {":r": {"S": region}, ":g": {"N": str(job.from_generation)}}
    gen = "#g = :g" if job.from_generation else "(attribute_not_exists(#g) OR #g = :g)"
    return f"attribute_exists(pk) AND #r = :r AND {gen}", values


class MoveRegistry:
    def __init__(self, registry: RegistryWriter) -> None:
        self.registry = registry
        self.runner = secrets.token_hex(8)

    async def read(self, account: str) -> tuple[AccountRecord | None, MoveJob | None]:
        """(the account as its META says, or None; the account's move job, or None)."""
        meta = await self.registry.get_item(meta_key(account))
        item = await self.registry.get_item(move_job_key(account))
        record = parse_account(account, [meta] if meta else [])
        return record, (MoveJob.from_json(attr_s(item, "state")) if item else None)

    def _job_item(self, job: MoveJob) -> dict[str, Any]:
        job.updated = time.time()
        return {
            **move_job_key(job.account),
            "job": {"S": job.job_id},
            "phase": {"S": job.phase},
            "runner": {"S": self.runner},
            "state": {"S": job.to_json()},
        }

    def _put_own(self, job: MoveJob) -> dict[str, Any]:
        return {
            "Put": {
                "Item": self._job_item(job),
                "ConditionExpression": "#j = :j AND #ru = :ru",
                "ExpressionAttributeNames": {"#j": "job", "#ru": "runner"},
                "ExpressionAttributeValues": {":j": {"S": job.job_id}, ":ru": {"S": self.runner}},
            }
        }

    def _tabled(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        table = self.registry.table
        return [{op: {"TableName": table, **body} for op, body in e.items()} for e in entries]

    async def _write(self, entries: list[dict[str, Any]], job: MoveJob, kind: str | None) -> None:
        """``kind`` None: the job alone (no edge reads it, no change item)."""
        try:
            if kind is None:
                await self.registry.write_unseen(self._tabled(entries))
            else:
                await self.registry.write(self._tabled(entries), account=job.account, kind=kind)
        except RegistryConflict:
            raise JobTakenOver(
                f"job {job.job_id} was changed by another process (resume or abort elsewhere) "
                "or the account's registry entry changed"
            ) from None

    async def create(self, job: MoveJob) -> None:
        cond, values = _meta_is(job, job.source)
        finished = sorted(FINISHED)
        try:
            await self.registry.write_unseen(
                self._tabled(
                    [
                        {
                            "ConditionCheck": {
                                "Key": meta_key(job.account),
                                "ConditionExpression": cond,
                                "ExpressionAttributeNames": {"#r": "region", "#g": "generation"},
                                "ExpressionAttributeValues": values,
                            }
                        },
                        {
                            "Put": {
                                "Item": self._job_item(job),
                                "ConditionExpression": _NEW_JOB,
                                "ExpressionAttributeNames": {"#p": "phase"},
                                "ExpressionAttributeValues": {
                                    ":f0": {"S": finished[0]},
                                    ":f1": {"S": finished[1]},
                                },
                            }
                        },
                    ]
                )
            )
        except RegistryConflict:
            raise MoveRefused(
                f"account {job.account!r} has a move in progress or changed meanwhile "
                "(see 'account status')"
            ) from None

    async def take_over(self, job: MoveJob, phase: str) -> None:
        """Make this process the job's runner (``resume`` / ``abort``), if the job is still in
        ``phase`` (the one just read)."""
        item = self._job_item(job)
        await self._write(
            [
                {
                    "Put": {
                        "Item": item,
                        "ConditionExpression": "#j = :j AND #p = :p",
                        "ExpressionAttributeNames": {"#j": "job", "#p": "phase"},
                        "ExpressionAttributeValues": {
                            ":j": {"S": job.job_id},
                            ":p": {"S": phase},
                        },
                    }
                }
            ],
            job,
            None,
        )

    async def save(self, job: MoveJob) -> None:
        await self._write([self._put_own(job)], job, None)

    async def set_moving(self, job: MoveJob, moving: bool) -> None:
        """META ``moving`` on (the final catch-up starts) or off (abort), with the job."""
        cond, values = _meta_is(job, job.source)
        update = "SET #m = :t" if moving else "REMOVE #m"
        if moving:
            values = {**values, ":t": {"BOOL": True}}
        await self._write(
            [
                {
                    "Update": {
                        "Key": meta_key(job.account),
                        "UpdateExpression": update,
                        "ConditionExpression": cond,
                        "ExpressionAttributeNames": {
                            "#r": "region",
                            "#g": "generation",
                            "#m": "moving",
                        },
                        "ExpressionAttributeValues": values,
                    }
                },
                self._put_own(job),
            ],
            job,
            "move",
        )

    async def flip(self, job: MoveJob) -> None:
        """META points at the destination with generation + 1, writes allowed again; the job's
        next phase in the same transaction."""
        cond, values = _meta_is(job, job.source)
        await self._write(
            [
                {
                    "Update": {
                        "Key": meta_key(job.account),
                        "UpdateExpression": "SET #r = :to, #g = :ng REMOVE #m",
                        "ConditionExpression": cond,
                        "ExpressionAttributeNames": {
                            "#r": "region",
                            "#g": "generation",
                            "#m": "moving",
                        },
                        "ExpressionAttributeValues": {
                            **values,
                            ":to": {"S": job.dest},
                            ":ng": {"N": str(job.generation)},
                        },
                    }
                },
                self._put_own(job),
            ],
            job,
            "flip",
        )
