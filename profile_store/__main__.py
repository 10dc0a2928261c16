"""Command line: ``profile-store serve`` runs one regional store; ``create-table`` provisions it.

Both read the ``PROFILE_STORE_*`` environment (see ``config.StoreSettings``); ``create-table``
needs only the region, table and endpoint, and takes them as options too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import ConfigError, ConfigSource, StoreSettings, region_name
from .keys import generate_local_master_key
from .provisioning import PitrRequired, create_table


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


def create_table_command(args: argparse.Namespace) -> int:
    src = ConfigSource("PROFILE_STORE_")
    region = region_name(args.region) if args.region else src.get("region", region_name)
    table = args.table or src.get("table", str)
    endpoint = args.endpoint or src.get("dynamodb_endpoint", str, None) or None
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s %(message)s")
    done = asyncio.run(_create_table(region, table, endpoint))
    print(json.dumps({"region": region, "table": table, **done}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="profile-store", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="serve this region's Profile System API (env: PROFILE_STORE_*)")
    create = sub.add_parser("create-table", help="create the region's table (SSE, TTL, PITR)")
    create.add_argument("--region", help="defaults to PROFILE_STORE_REGION")
    create.add_argument("--table", help="defaults to PROFILE_STORE_TABLE")
    create.add_argument("--endpoint", help="defaults to PROFILE_STORE_DYNAMODB_ENDPOINT")
    keygen = sub.add_parser(
        "generate-local-key",
        help="write a local master key file (DEV/TESTS ONLY; production uses key_provider=kms)",
    )
    keygen.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return serve()
        if args.command == "generate-local-key":
            print(json.dumps({"local_master_key_file": str(generate_local_master_key(args.path))}))
            return 0
        return create_table_command(args)
    except (ConfigError, ValueError) as exc:
        print(f"profile-store: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
