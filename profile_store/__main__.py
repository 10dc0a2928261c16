"""Command line: ``profile-store serve`` runs one regional store; the rest are operator tools.

* ``serve``: this region's API (environment ``PROFILE_STORE_*``, see ``config.StoreSettings``);
* ``create-table``: provision the region's table;
* ``generate-local-key PATH``: a local master key file (dev/tests only);
* ``audit list --account A [--since ISO] [--until ISO]``: the audit trail as JSON lines;
* ``suppression lift --account A --email E [--reason R]``: let an erased email be stored again
  (audited; the email is never printed);
* ``pitr show|enable|restore --to TIME|latest --target-table NEW``: the table's point-in-time
  recovery (``pitr.py``; a restore goes to a new table).

The operator tools need only the region, table and endpoint: options ``--region``, ``--table``
and ``--endpoint`` (``--endpoint-url`` too), else ``PROFILE_STORE_REGION``, ``_TABLE`` and
``_DYNAMODB_ENDPOINT`` (or the ``PROFILE_STORE_CONFIG`` file). Exit codes: 0 done, 1 the
service refused or failed, 2 bad usage or settings (and PITR on an endpoint without it).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from residency_contract.settings import ConfigError, ConfigSource, region_name

from .config import StoreSettings
from .errors import StoreError
from .key_providers import generate_local_master_key
from .pitr import PitrError, PitrUnsupported
from .provisioning import PitrRequired, create_table

T = TypeVar("T")


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # optional: plain asyncio is fine
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve() -> int:
    from aiohttp import web

    from .app import create_app

    settings = StoreSettings.from_env()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    _install_uvloop()
    try:
        # No aiohttp access log: it prints the path, which holds PII on alternative-key routes.
        web.run_app(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            access_log=None,
            print=None,
        )
    except PitrRequired as exc:
        logging.getLogger("profile_store").error("refusing to start: %s", exc)
        return 3
    return 0


def _location(args: argparse.Namespace) -> tuple[str, str, str | None]:
    src = ConfigSource("PROFILE_STORE_")
    region = region_name(args.region) if args.region else src.get("region", region_name)
    table = args.table or src.get("table", str)
    endpoint = args.endpoint or src.get("dynamodb_endpoint", str, None) or None
    return region, table, endpoint


async def _with_client(
    args: argparse.Namespace, work: Callable[[Any, str], Awaitable[T]], config: Any = None
) -> T:
    """``work(client, table)`` with a DynamoDB client of the location the options name."""
    from aiobotocore.session import get_session

    region, table, endpoint = _location(args)
    async with get_session().create_client(
        "dynamodb", region_name=region, endpoint_url=endpoint, config=config
    ) as client:
        return await work(client, table)


def create_table_command(args: argparse.Namespace) -> int:
    region, table, _ = _location(args)
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s %(message)s")
    done = asyncio.run(_with_client(args, create_table))
    print(json.dumps({"region": region, "table": table, **done}))
    return 0


async def _with_repo(args: argparse.Namespace, work: Callable[[Any], Awaitable[T]]) -> T:
    from .metrics import StoreMetrics
    from .repository import Repository

    region = _location(args)[0]

    async def with_repo(client: Any, table: str) -> T:
        return await work(Repository(client, table, StoreMetrics(region=region, instance="cli")))

    return await _with_client(args, with_repo)


def _iso_arg(raw: str) -> datetime:
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {raw!r}") from None


def audit_list_command(args: argparse.Namespace) -> int:
    from . import audit

    async def work(repo: Any) -> None:
        async for entry in audit.iter_records(
            repo, args.account, since=args.since, until=args.until
        ):
            print(json.dumps(entry, separators=(",", ":")), flush=True)

    asyncio.run(_with_repo(args, work))
    return 0


def suppression_lift_command(args: argparse.Namespace) -> int:
    from .erasure import lift_suppression

    principal = f"cli:{getpass.getuser()}"

    async def work(repo: Any) -> bool:
        return await lift_suppression(
            repo, args.account, args.email, principal=principal, reason=args.reason
        )

    lifted = asyncio.run(_with_repo(args, work))
    print(json.dumps({"account": args.account, "lifted": lifted}))
    return 0


def _when(value: datetime | None) -> str:
    return value.isoformat() if value else "-"


async def _pitr(client: Any, table: str, args: argparse.Namespace) -> None:
    from . import pitr

    if args.pitr_command == "show":
        state = await pitr.describe_pitr(client, table)
        print(f"table: {state.table}")
        print(f"point-in-time recovery: {'enabled' if state.enabled else 'disabled'}")
        if state.enabled:
            print(f"earliest restorable: {_when(state.earliest_restorable)}")
            print(f"latest restorable:   {_when(state.latest_restorable)}")
    elif args.pitr_command == "enable":
        state = await pitr.enable_pitr(client, table)
        print(f"point-in-time recovery enabled on {state.table}")
        print(f"earliest restorable: {_when(state.earliest_restorable)}")
    else:
        result = await pitr.restore_to_point_in_time(client, table, args.target_table, args.to)
        print(f"restoring {result.source_table} into {result.target_table}")
        print(f"restore point: {_when(result.restore_time)}")
        print(f"target table status: {result.target_status}")


def pitr_command(args: argparse.Namespace) -> int:
    from aiobotocore.config import AioConfig

    # A restore or an enable may take a while to answer; a read timeout of 30 s, 3 attempts.
    config = AioConfig(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3})
    asyncio.run(_with_client(args, partial(_pitr, args=args), config))
    return 0


def _restore_time(raw: str) -> datetime | str:
    from .pitr import parse_restore_time

    try:
        return parse_restore_time(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_location(parser: argparse.ArgumentParser, default: Any = None) -> None:
    # ``default``: argparse.SUPPRESS on a sub-command whose parent takes the same options, so
    # its defaults do not wipe values given before it.
    parser.add_argument("--region", default=default, help="defaults to PROFILE_STORE_REGION")
    parser.add_argument("--table", default=default, help="defaults to PROFILE_STORE_TABLE")
    parser.add_argument(
        "--endpoint",
        "--endpoint-url",
        dest="endpoint",
        default=default,
        help="defaults to PROFILE_STORE_DYNAMODB_ENDPOINT",
    )


def _add_pitr(sub: Any) -> None:
    """``pitr show|enable|restore``; the location options work before or after the action."""
    pitr_cmd = sub.add_parser("pitr", help="point-in-time recovery: show, enable, restore")
    _add_location(pitr_cmd)
    actions = pitr_cmd.add_subparsers(dest="pitr_command", required=True)
    show = actions.add_parser("show", help="PITR status and restorable window")
    enable = actions.add_parser("enable", help="turn PITR on and verify")
    restore = actions.add_parser("restore", help="restore into a new table")
    for action in (show, enable, restore):
        _add_location(action, argparse.SUPPRESS)
    restore.add_argument(
        "--to", required=True, type=_restore_time, help="ISO-8601 time with zone, or 'latest'"
    )
    restore.add_argument("--target-table", required=True, help="new table to restore into")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="profile-store", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="serve this region's Profile System API (env: PROFILE_STORE_*)")
    create = sub.add_parser("create-table", help="create the region's table (SSE, TTL, PITR)")
    _add_location(create)
    keygen = sub.add_parser(
        "generate-local-key",
        help="write a local master key file (DEV/TESTS ONLY; production uses key_provider=kms)",
    )
    keygen.add_argument("path", type=Path)
    audit_cmd = sub.add_parser("audit", help="read the audit trail (unmasks, erasures)")
    audit_sub = audit_cmd.add_subparsers(dest="audit_command", required=True)
    listing = audit_sub.add_parser("list", help="print an account's audit records as JSON lines")
    listing.add_argument("--account", required=True)
    listing.add_argument("--since", type=_iso_arg, help="ISO-8601 time (inclusive)")
    listing.add_argument("--until", type=_iso_arg, help="ISO-8601 time (inclusive)")
    _add_location(listing)
    suppression = sub.add_parser("suppression", help="manage erased emails' suppression")
    suppression_sub = suppression.add_subparsers(dest="suppression_command", required=True)
    lift = suppression_sub.add_parser("lift", help="let an erased email be stored again")
    lift.add_argument("--account", required=True)
    lift.add_argument("--email", required=True)
    lift.add_argument("--reason", default="suppression lifted by an operator")
    _add_location(lift)
    _add_pitr(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return serve()
        if args.command == "generate-local-key":
            print(json.dumps({"local_master_key_file": str(generate_local_master_key(args.path))}))
            return 0
        if args.command == "audit":
            return audit_list_command(args)
        if args.command == "suppression":
            return suppression_lift_command(args)
        if args.command == "pitr":
            return pitr_command(args)
        return create_table_command(args)
    except (ConfigError, ValueError, PitrUnsupported) as exc:
        print(f"profile-store: {exc}", file=sys.stderr)
        return 2
    except (StoreError, PitrError) as exc:  # a StoreError's text is its message
        print(f"profile-store: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
