"""``residency-ops registry ...``: create and inspect accounts, API keys and user grants in the
registry.

Uses the edge's own settings for the registry table and endpoint and for each region's
Profile System table, which ``set-region`` needs: moving an account's home region is refused
once the account has data in its current home region (its salt item exists there,
``account_has_data``), because moving the pointer would strand that PII where no request
reaches it -- or worse, send new PII elsewhere while old PII stays behind. Migrations are a
separate, deliberate procedure: ``residency-ops account move`` (``move/``).

Output is one JSON object per line so scripts can read it. Generated app tokens are printed
once and never stored (only their SHA-256 is). A user grant names the user by e-mail (the
``sub`` of their tokens); only its SHA-256 is stored, and no output repeats the e-mail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from edge_router.auth import APP_KEY_FORMAT
from edge_router.config import EdgeSettings
from edge_router.errors import RegistryError
from edge_router.registry import ACTIVE, SUSPENDED, user_hash
from edge_router.resolve import valid_account
from residency_contract.assertion import GRANTABLE_ROLES as ROLES
from residency_contract.tables import salt_key

from ..registry_writer import RegistryWriter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="registry_command", required=True)
    sub.add_parser("create-table", help="create the registry table (idempotent)")
    p = sub.add_parser("create-account", help="register an account and its home region")
    p.add_argument("name")
    p.add_argument("--region", required=True)
    sub.add_parser("list", help="list accounts (one JSON line each)")
    p = sub.add_parser("create-key", help="create an API key (token printed once)")
    p.add_argument("account")
    p.add_argument("--roles", required=True, help="comma-separated: " + ",".join(sorted(ROLES)))
    p.add_argument("--app-key", default=None)
    p.add_argument("--app-token", default=None)
    p = sub.add_parser("revoke-key", help="revoke an API key")
    p.add_argument("account")
    p.add_argument("app_key")
    p = sub.add_parser("grant-user", help="give a user (user tokens) roles on an account")
    p.add_argument("account")
    p.add_argument("email", help="the user's e-mail: the sub of their tokens (stored hashed)")
    p.add_argument("--roles", required=True, help="comma-separated: " + ",".join(sorted(ROLES)))
    p = sub.add_parser("revoke-user", help="take a user's roles on an account away")
    p.add_argument("account")
    p.add_argument("email")
    p = sub.add_parser("set-region", help="move the home region (refused once data exists)")
    p.add_argument("account")
    p.add_argument("region")
    p = sub.add_parser("set-status", help="activate or suspend an account")
    p.add_argument("account")
    p.add_argument("status", choices=[ACTIVE, SUSPENDED])


def _out(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, separators=(",", ":")), flush=True)


class Refused(Exception):
    pass


def _check_account(name: str) -> None:
    if not valid_account(name):
        raise Refused(f"{name!r} is not a valid account name ([a-z0-9][a-z0-9-]{{0,62}})")


def _roles(raw: str) -> list[str]:
    roles = sorted({r.strip() for r in raw.split(",") if r.strip()})
    if not roles or set(roles) - ROLES:
        raise Refused(f"--roles must be a non-empty subset of {sorted(ROLES)}")
    return roles


def _check_email(email: str) -> None:
    if "@" not in email or len(email) > 254 or email.strip() != email:
        raise Refused("the user must be named by an e-mail address (the sub of their tokens)")


def _check_region(settings: EdgeSettings, region: str) -> None:
    if settings.region(region) is None:
        configured = ", ".join(r.name for r in settings.regions)
        raise Refused(f"region {region!r} is not configured on this edge ({configured})")


async def _run(settings: EdgeSettings, args: argparse.Namespace) -> None:
    cmd = args.registry_command
    async with RegistryWriter.from_settings(settings) as reg:
        if cmd == "create-table":
            created = await reg.create_table()
            _out({"table": reg.table, "created": created})
        elif cmd == "create-account":
            _check_account(args.name)
            _check_region(settings, args.region)
            if not await reg.create_account(args.name, args.region):
                raise Refused(f"account {args.name!r} already exists")
            _out({"account": args.name, "region": args.region, "status": ACTIVE})
        elif cmd == "list":
            for rec in await reg.list_accounts():
                _out(
                    {
                        "account": rec.name,
                        "region": rec.region,
                        "status": rec.status,
                        "keys": [
                            {"app_key": k.app_key, "roles": sorted(k.roles), "active": k.active}
                            for k in rec.keys.values()
                        ],
                        "users": [
                            {"user_sha256": h, "roles": sorted(u.roles), "active": u.active}
                            for h, u in rec.users.items()
                        ],
                    }
                )
        elif cmd == "create-key":
            _check_account(args.account)
            roles = _roles(args.roles)
            app_key = args.app_key or f"vtexappkey-{args.account}-{secrets.token_hex(8).upper()}"
            if not APP_KEY_FORMAT.match(app_key):
                raise Refused("--app-key must be 1-128 characters of [A-Za-z0-9_.:-]")
            generated = args.app_token is None
            token = args.app_token or secrets.token_urlsafe(48)
            if len(token) < 16:
                raise Refused("--app-token must be at least 16 characters")
            await reg.create_key(args.account, app_key, token, roles)
            out: dict[str, Any] = {"account": args.account, "app_key": app_key, "roles": roles}
            if generated:
                out["app_token"] = token  # shown once; only its hash is stored
            _out(out)
        elif cmd == "revoke-key":
            await reg.revoke_key(args.account, args.app_key)
            _out({"account": args.account, "app_key": args.app_key, "status": "revoked"})
        elif cmd == "grant-user":
            _check_account(args.account)
            _check_email(args.email)
            roles = _roles(args.roles)
            await reg.grant_user(args.account, args.email, roles)
            _out({"account": args.account, "user_sha256": user_hash(args.email), "roles": roles})
        elif cmd == "revoke-user":
            await reg.revoke_user(args.account, args.email)
            _out(
                {"account": args.account, "user_sha256": user_hash(args.email), "status": "revoked"}
            )
        elif cmd == "set-status":
            await reg.set_status(args.account, args.status)
            _out({"account": args.account, "status": args.status})
        elif cmd == "set-region":
            _check_region(settings, args.region)
            record = await reg.get_account(args.account)
            if record is None:
                raise Refused(f"no account {args.account!r}")
            if record.region == args.region:
                _out({"account": args.account, "region": args.region, "changed": False})
                return
            home = settings.region(record.region)
            if home is None:
                raise Refused(
                    f"current home region {record.region!r} is not configured here, so its data "
                    "cannot be checked; refusing"
                )
            if await account_has_data(
                table=home.table,
                endpoint=home.dynamodb_endpoint,
                region=home.name,
                account=args.account,
            ):
                raise Refused(
                    f"account {args.account!r} already has data in {record.region}; its home "
                    "region cannot be changed here; move it with "
                    f"'residency-ops account move {args.account} --to {args.region}'"
                )
            await reg.set_region(args.account, args.region)
            _out({"account": args.account, "region": args.region, "changed": True})


def run(settings: EdgeSettings, args: argparse.Namespace) -> int:
    try:
        asyncio.run(_run(settings, args))
    except Refused as exc:
        print(f"residency-ops registry: refused: {exc}", file=sys.stderr)
        return 1
    except RegistryError as exc:
        print(f"residency-ops registry: {exc}", file=sys.stderr)
        return 1
    return 0


async def account_has_data(
    *, table: str, endpoint: str | None, region: str, account: str, timeout_s: float = 3.0
) -> bool:
    """Does the store's table in ``region`` already hold this account (its salt item, which a
    store writes with the account's first item)?"""
    config = AioConfig(
        connect_timeout=timeout_s, read_timeout=timeout_s, retries={"max_attempts": 2}
    )
    try:
        async with get_session().create_client(
            "dynamodb", region_name=region, endpoint_url=endpoint, config=config
        ) as client:
            page = await client.get_item(
                TableName=table, Key=salt_key(account), ConsistentRead=True
            )
    except ClientError as exc:
        # A missing table is refused too: we cannot prove the account has no data there.
        raise RegistryError(f"cannot check {region} table {table}: {exc}") from exc
    except (BotoCoreError, OSError) as exc:
        raise RegistryError(f"cannot check {region} table {table}: {type(exc).__name__}") from exc
    return "Item" in page
