"""``residency-ops account ...``: move an account's data to another region, as a resumable job.

::

    residency-ops account move ACCOUNT --to REGION [--segments N] [--metrics-file F]
    residency-ops account status ACCOUNT
    residency-ops account resume ACCOUNT [--metrics-file F]
    residency-ops account abort ACCOUNT [--metrics-file F]

Runs with the edge's own settings (registry; each region's store instances and assertion
secret). Exit codes: 0 done (``status``: the job was shown), 1 failed (verify mismatch, a
store or the registry failing: the job keeps its phase, ``resume`` or ``abort`` it), 2 refused
(bad input, a job already running, abort after the flip). The last line on stdout is the
job's summary as JSON, with ``freeze_s``: how long writes were refused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import aiohttp

from edge_router.config import EdgeSettings
from edge_router.errors import RegistryError
from edge_router.resolve import valid_account

from ..move.job import FINISHED, MoveJob, next_step, refusal
from ..move.metrics_file import record_move
from ..move.mover import MoveFailed, MoveOptions, Mover
from ..move.progress import Progress, for_terminal
from ..move.registry_state import JobTakenOver, MoveRefused, MoveRegistry
from ..move.store_api import RegionStores, StoreRefused, StoreUnavailable
from ..registry_writer import RegistryWriter

log = logging.getLogger("residency_ops.move")
EXIT_DONE, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="account_command", required=True)
    p = sub.add_parser("move", help="move the account's data and home region to REGION")
    p.add_argument("account")
    p.add_argument("--to", required=True, dest="to", metavar="REGION")
    p.add_argument("--segments", type=int, default=4, help="parallel scan segments (1-64)")
    p.add_argument("--metrics-file", default=None, help="Prometheus textfile to count moves in")
    p = sub.add_parser("status", help="the account's move job (one JSON line)")
    p.add_argument("account")
    for name, text in (("resume", "continue the move from its phase"), ("abort", "undo it")):
        p = sub.add_parser(name, help=text + " (abort: only before the flip)")
        p.add_argument("account")
        p.add_argument("--metrics-file", default=None)


def _out(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, separators=(",", ":"), sort_keys=True), flush=True)


async def _plan(settings: EdgeSettings, state: MoveRegistry, args: argparse.Namespace) -> MoveJob:
    if settings.region(args.to) is None:
        names = ", ".join(r.name for r in settings.regions)
        raise MoveRefused(f"region {args.to!r} is not configured on this edge ({names})")
    if not 1 <= args.segments <= 64:
        raise MoveRefused("--segments must be between 1 and 64")
    record, job = await state.read(args.account)
    if record is None:
        raise MoveRefused(f"no account {args.account!r}")
    if job is not None and job.phase not in FINISHED:
        raise MoveRefused(
            f"account {args.account!r} has a move in phase {job.phase}; resume or abort it"
        )
    source = record.region
    if source == args.to:
        raise MoveRefused(f"account {args.account!r} already lives in {args.to}")
    if settings.region(source) is None:
        raise MoveRefused(f"its home region {source!r} is not configured on this edge")
    job = MoveJob(
        account=args.account,
        source=source,
        dest=args.to,
        from_generation=record.generation,
        segments=args.segments,
    )
    await state.create(job)
    return job


async def _existing(state: MoveRegistry, account: str) -> MoveJob:
    _, job = await state.read(account)
    if job is None:
        raise MoveRefused(f"account {account!r} has no move job")
    return job


async def _run(
    settings: EdgeSettings,
    args: argparse.Namespace,
    progress: Progress,
    hook: Callable[[str], None] | None,
    options: MoveOptions,
) -> int:
    cmd = args.account_command
    if not valid_account(args.account):
        raise MoveRefused(f"{args.account!r} is not a valid account name")
    async with RegistryWriter.from_settings(
        settings, max_attempts=max(settings.registry_max_attempts, 4)
    ) as reg:
        state = MoveRegistry(reg)
        if cmd == "status":
            _out((await _existing(state, args.account)).summary())
            return EXIT_DONE
        if cmd == "move":
            job = await _plan(settings, state, args)
        else:
            job = await _existing(state, args.account)
        src, dst = settings.region(job.source), settings.region(job.dest)
        if src is None or dst is None:
            raise MoveRefused("the job's regions are not both configured on this edge")
        if cmd != "move":
            # Every refusal before the take-over: a refused command leaves the job, and the
            # mover that may be running it, untouched.
            refused = refusal(cmd, job)
            if refused:
                raise MoveRefused(refused)
            await state.take_over(job, job.phase)
        async with aiohttp.ClientSession() as session:
            mover = Mover(
                job,
                state,
                RegionStores(src, session, job_id=job.job_id),
                RegionStores(dst, session, job_id=job.job_id),
                progress,
                options,
                **({"hook": hook} if hook else {}),
            )
            try:
                job = await (mover.abort() if cmd == "abort" else mover.run())
            except JobTakenOver as exc:
                _stopped(job, f"stopped: {exc}")
                return EXIT_FAILED
            except (MoveFailed, StoreRefused, StoreUnavailable, RegistryError) as exc:
                if not isinstance(exc, MoveFailed):
                    job.error = str(exc)
                    await _save_error(state, job)
                progress.result({**job.summary(), "result": "failed"})
                _stopped(job, f"failed in phase {job.phase}")
                return EXIT_FAILED
        progress.result({**job.summary(), "result": job.phase})
        return EXIT_DONE


def _stopped(job: MoveJob, why: str) -> None:
    print(f"residency-ops account: {why}; {next_step(job)}", file=sys.stderr)


async def _save_error(state: MoveRegistry, job: MoveJob) -> None:
    try:
        await state.save(job)
    except (RegistryError, JobTakenOver):
        log.warning("move: could not record the failure in the registry")


async def execute(
    settings: EdgeSettings,
    args: argparse.Namespace,
    *,
    progress: Progress | None = None,
    hook: Callable[[str], None] | None = None,
    options: MoveOptions | None = None,
) -> int:
    """The ``account`` command in a running loop; ``hook`` and ``options`` are for tests."""
    progress = progress or for_terminal()
    try:
        code = await _run(settings, args, progress, hook, options or MoveOptions())
    except MoveRefused as exc:
        print(f"residency-ops account: refused: {exc}", file=sys.stderr)
        code = EXIT_REFUSED
    except JobTakenOver as exc:
        print(f"residency-ops account: stopped: {exc}", file=sys.stderr)
        code = EXIT_FAILED
    except RegistryError as exc:
        print(f"residency-ops account: {exc}", file=sys.stderr)
        code = EXIT_FAILED
    finally:
        progress.close()
    metrics_file = getattr(args, "metrics_file", None)
    if metrics_file and args.account_command != "status":
        ok = "aborted" if args.account_command == "abort" else "done"
        result = {EXIT_DONE: ok, EXIT_FAILED: "failed"}.get(code, "refused")
        record_move(metrics_file, result)
    return code


def run(settings: EdgeSettings, args: argparse.Namespace) -> int:
    logging.basicConfig(level=settings.log_level, stream=sys.stderr)
    return asyncio.run(execute(settings, args))
