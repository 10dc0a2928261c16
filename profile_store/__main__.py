"""Command line: ``profile-store serve`` runs one regional store; the rest are operator tools.

* ``serve``: this region's API (environment ``PROFILE_STORE_*``, see ``config.StoreSettings``);
* ``create-table``: provision the region's table;
* ``generate-local-key PATH``: a local master key file (dev/tests only);
* ``audit list --account A [--since ISO] [--until ISO]``: the audit trail as JSON lines;
* ``suppression lift --account A --email E [--reason R]``: let an erased email be stored again
  (audited; the email is never printed).

The operator tools need only the region, table and endpoint, and take them as options too.
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
from pathlib import Path
from typing import Any, TypeVar

from residency_contract.settings import ConfigError, ConfigSource, region_name

from .config import StoreSettings
from .errors import StoreError
from .key_providers import generate_local_master_key
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


async def _create_table(region: str, table: str, endpoint: str | None) -> dict[str, str]:
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "dynamodb", region_name=region, endpoint_url=endpoint
    ) as client:
        return await create_table(client, table)


def _location(args: argparse.Namespace) -> tuple[str, str, str | None]:
    src = ConfigSource("PROFILE_STORE_")
    region = region_name(args.region) if args.region else src.get("region", region_name)
    table = args.table or src.get("table", str)
    endpoint = args.endpoint or src.get("dynamodb_endpoint", str, None) or None
    return region, table, endpoint


def create_table_command(args: argparse.Namespace) -> int:
    region, table, endpoint = _location(args)
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s %(message)s")
    done = asyncio.run(_create_table(region, table, endpoint))
    print(json.dumps({"region": region, "table": table, **done}))
    return 0


async def _with_repo(args: argparse.Namespace, work: Callable[[Any], Awaitable[T]]) -> T:
    from aiobotocore.session import get_session

    from .metrics import StoreMetrics
    from .repository import Repository

    region, table, endpoint = _location(args)
    async with get_session().create_client(
        "dynamodb", region_name=region, endpoint_url=endpoint
    ) as client:
        return await work(Repository(client, table, StoreMetrics(region=region, instance="cli")))


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


def _add_location(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--region", help="defaults to PROFILE_STORE_REGION")
    parser.add_argument("--table", help="defaults to PROFILE_STORE_TABLE")
    parser.add_argument("--endpoint", help="defaults to PROFILE_STORE_DYNAMODB_ENDPOINT")


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
        return create_table_command(args)
    except (ConfigError, ValueError) as exc:
        print(f"profile-store: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"profile-store: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
