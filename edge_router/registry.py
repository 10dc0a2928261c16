"""The account registry: account -> home region, status, API keys and user grants. No PII
lives here.

One DynamoDB table, one partition per account, so one Query returns everything the edge needs
to route and authenticate a request for that account::

    pk ACCOUNT#{name}   sk META          {region, status, createdAt, generation, moving}
    pk ACCOUNT#{name}   sk KEY#{appKey}  {tokenHash (sha256 hex), roles [..], status, createdAt}
    pk ACCOUNT#{name}   sk USER#{sha256(lower-cased e-mail) hex}  {roles [..], status, createdAt}
    pk APPKEY#{appKey}  sk KEY           {account, tokenHash, status}   (owner index)

``generation`` (absent = 0) rises by one with every completed move of the account's home
region; ``moving`` is true only during a move's final catch-up, when the edge refuses writes.

    pk CHANGES          sk {epoch_ms:013d}#{8 hex}       (the change log: ``changelog``)

Every write is one TransactWriteItems that also appends a change item to the change log; the
edge's ``registry_changes`` poller reads it a few times a second and invalidates what changed,
so a revocation, a suspension or a move reaches every edge worker within a second instead of
after the cache TTL. New writers call ``DynamoRegistry.write``, so that nothing changes the
registry without a change item.

The owner index lets the edge tell "your key belongs to another account" (403) from "no such
key" (401) without scanning, and only when the caller also holds that key's token.

User grants (roles of a user-token caller) are keyed by a hash of the e-mail, the identity the
operator grants (``registry grant-user ACCOUNT EMAIL``) and the token's ``sub``: the e-mail
itself is PII and never stored. A plain SHA-256 is pseudonymous, not anonymous -- someone who
can read the table and guesses an address can confirm it -- which is acceptable for this
internal table; it keeps the grant readable by the edge with no secret to distribute.

``DynamoRegistry`` is the boundary: every botocore/aiobotocore failure becomes
``RegistryError`` here and nowhere else (``RegistryConflict`` when a write's condition failed).
Reads are strongly consistent: a read that follows a change item must see that change. It
holds one long-lived client. The write operations (used by ``registry_cli``) live beside the
reads so the item layout is defined in one file.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from residency_contract.tables import PK_SK_KEYS

from .changelog import CHANGES_PK, TTL_ATTRIBUTE, Change, change_put, parse_change
from .errors import RegistryConflict, RegistryError

ACTIVE = "active"
SUSPENDED = "suspended"
REVOKED = "revoked"


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def user_hash(email: str) -> str:
    """The registry's key for a user: SHA-256 hex of the trimmed, lower-cased e-mail."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class UserGrant:
    roles: frozenset[str]
    active: bool


@dataclass(frozen=True, slots=True)
class ApiKey:
    app_key: str
    token_sha256: bytes
    roles: frozenset[str]
    active: bool


@dataclass(frozen=True, slots=True)
class AccountRecord:
    name: str
    region: str
    status: str
    keys: Mapping[str, ApiKey] = field(default_factory=dict)
    users: Mapping[str, UserGrant] = field(default_factory=dict)  # by ``user_hash``
    generation: int = 0
    moving: bool = False  # a move's final catch-up: writes are refused (503 account_moving)

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


@dataclass(frozen=True, slots=True)
class KeyOwner:
    """Owner-index entry: whose key this is, to tell 403 from 401."""

    account: str
    token_sha256: bytes
    active: bool


class RegistryReader(Protocol):
    async def get_account(self, name: str) -> AccountRecord | None: ...

    async def get_key_owner(self, app_key: str) -> KeyOwner | None: ...


def _s(item: Mapping[str, Any], name: str, default: str = "") -> str:
    v = item.get(name)
    return v["S"] if v and "S" in v else default


def _roles(item: Mapping[str, Any]) -> frozenset[str]:
    roles_attr = item.get("roles", {})
    return frozenset(roles_attr.get("SS") or [r["S"] for r in roles_attr.get("L", [])])


def parse_account(name: str, items: list[Mapping[str, Any]]) -> AccountRecord | None:
    meta = None
    keys: dict[str, ApiKey] = {}
    users: dict[str, UserGrant] = {}
    for item in items:
        sk = _s(item, "sk")
        if sk == "META":
            meta = item
        elif sk.startswith("KEY#"):
            app_key = sk[4:]
            keys[app_key] = ApiKey(
                app_key=app_key,
                token_sha256=bytes.fromhex(_s(item, "tokenHash")),
                roles=_roles(item),
                active=_s(item, "status", ACTIVE) == ACTIVE,
            )
        elif sk.startswith("USER#"):
            users[sk[5:]] = UserGrant(_roles(item), _s(item, "status", ACTIVE) == ACTIVE)
    if meta is None:
        return None
    return AccountRecord(
        name=name,
        region=_s(meta, "region"),
        status=_s(meta, "status", ACTIVE),
        keys=keys,
        users=users,
        generation=int(meta.get("generation", {}).get("N", "0")),
        moving=bool(meta.get("moving", {}).get("BOOL", False)),
    )


class DynamoRegistry:
    """Reads (and, for the CLI, writes) the registry table through one aiobotocore client."""

    def __init__(
        self,
        *,
        table: str,
        endpoint: str | None,
        region: str,
        connect_timeout_s: float = 1.0,
        read_timeout_s: float = 2.0,
        max_attempts: int = 2,
    ) -> None:
        self.table = table
        self._endpoint = endpoint
        self._region = region
        self._config = AioConfig(
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            max_pool_connections=50,
        )
        self._stack = AsyncExitStack()
        self._client: Any = None

    async def __aenter__(self) -> DynamoRegistry:
        session = get_session()
        self._client = await self._stack.enter_async_context(
            session.create_client(
                "dynamodb",
                region_name=self._region,
                endpoint_url=self._endpoint,
                config=self._config,
            )
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._client = None
        await self._stack.aclose()

    async def _call(self, op: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return await getattr(self._client, op)(**kwargs)  # type: ignore[no-any-return]
        except (BotoCoreError, ClientError, OSError) as exc:
            raise RegistryError(f"registry {op} failed: {type(exc).__name__}") from exc

    # -- reads (the edge's hot path, behind the cache) ---------------------------------------

    async def get_account(self, name: str) -> AccountRecord | None:
        return parse_account(name, await self.account_items(name))

    async def account_items(self, name: str) -> list[Mapping[str, Any]]:
        """Every item of the account's partition (META, keys, the move job), as stored."""
        items: list[Mapping[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": f"ACCOUNT#{name}"}},
            "ConsistentRead": True,
        }
        while True:
            page = await self._call("query", **kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return items

    async def get_key_owner(self, app_key: str) -> KeyOwner | None:
        page = await self._call(
            "get_item",
            TableName=self.table,
            Key={"pk": {"S": f"APPKEY#{app_key}"}, "sk": {"S": "KEY"}},
            ConsistentRead=True,
        )
        item = page.get("Item")
        if not item:
            return None
        return KeyOwner(
            account=_s(item, "account"),
            token_sha256=bytes.fromhex(_s(item, "tokenHash")),
            active=_s(item, "status", ACTIVE) == ACTIVE,
        )

    async def changes_since(self, after: str) -> list[Change]:
        """Change-log items with a sort key above ``after`` (a ``change_id`` or a prefix of
        one), oldest first; a consistent read, so every committed change is there."""
        changes: list[Change] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND sk > :after",
            "ExpressionAttributeValues": {":pk": {"S": CHANGES_PK}, ":after": {"S": after}},
            "ConsistentRead": True,
        }
        while True:
            page = await self._call("query", **kwargs)
            changes.extend(parse_change(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return changes
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- writes (registry_cli, the mover) ----------------------------------------------------

    async def write_unseen(self, entries: list[dict[str, Any]]) -> None:
        """Apply ``entries`` (TransactWriteItems entries, ``TableName`` included) WITHOUT a
        change item: only for items no edge reads (the account mover's job, ``MOVE#{A}``), so
        a job's progress does not make every edge drop and re-read the account. Anything an
        edge reads goes through ``write``. ``RegistryConflict`` when a condition failed."""
        try:
            await self._client.transact_write_items(TransactItems=entries)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") == "TransactionCanceledException":
                reasons = [
                    r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])
                ]
                if "ConditionalCheckFailed" in reasons:
                    raise RegistryConflict("registry move job: a condition failed") from exc
            raise RegistryError(f"registry move job failed: {error.get('Code', 'error')}") from exc
        except (BotoCoreError, OSError) as exc:
            raise RegistryError(f"registry move job failed: {type(exc).__name__}") from exc

    async def get_item(self, pk: str, sk: str) -> dict[str, Any] | None:
        """One item, consistent read (the mover's job)."""
        page = await self._call(
            "get_item",
            TableName=self.table,
            Key={"pk": {"S": pk}, "sk": {"S": sk}},
            ConsistentRead=True,
        )
        item = page.get("Item")
        return dict(item) if item else None

    async def write(
        self,
        entries: list[dict[str, Any]],
        *,
        account: str,
        kind: str,
        app_keys: Sequence[str] = (),
    ) -> str:
        """Apply ``entries`` (TransactWriteItems entries, ``TableName`` included) and append
        one change item for ``account`` in the same transaction, so every edge worker reloads
        the account (and the owner-index entries of ``app_keys``) within a second. All or
        nothing: ``RegistryConflict`` (with a code per entry) when a condition failed,
        ``RegistryError`` for any other failure. Returns the change id. At most 99 entries."""
        if not entries or len(entries) > 99:
            raise ValueError("a registry write has 1-99 entries (one more is the change item)")
        change = change_put(self.table, account=account, kind=kind, app_keys=app_keys)
        try:
            await self._client.transact_write_items(TransactItems=[*entries, change])
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") == "TransactionCanceledException":
                reasons = [
                    r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])
                ]
                if "ConditionalCheckFailed" in reasons:
                    raise RegistryConflict(
                        f"registry {kind} refused: a condition failed",
                        tuple(reasons[: len(entries)]),
                    ) from exc
            raise RegistryError(f"registry {kind} failed: {error.get('Code', 'error')}") from exc
        except (BotoCoreError, OSError) as exc:
            raise RegistryError(f"registry {kind} failed: {type(exc).__name__}") from exc
        return str(change["Put"]["Item"]["sk"]["S"])

    async def create_table(self) -> bool:
        """Create the table (and its TTL on change items); False when it already existed.
        Either way TTL ends up enabled, so re-running it upgrades an older table."""
        created = True
        try:
            await self._client.create_table(
                TableName=self.table,
                **PK_SK_KEYS,
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
                raise RegistryError(f"create_table failed: {exc}") from exc
            created = False
        except (BotoCoreError, OSError) as exc:
            raise RegistryError(f"create_table failed: {type(exc).__name__}") from exc
        if created:
            waiter = self._client.get_waiter("table_exists")
            await waiter.wait(TableName=self.table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        await self._enable_ttl()
        return created

    async def _enable_ttl(self) -> None:
        ttl = await self._call("describe_time_to_live", TableName=self.table)
        status = ttl.get("TimeToLiveDescription", {}).get("TimeToLiveStatus")
        if status in ("ENABLED", "ENABLING"):
            return
        await self._call(
            "update_time_to_live",
            TableName=self.table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )

    async def create_account(self, name: str, region: str) -> bool:
        """False (nothing written) when the account exists."""
        put = {
            "Put": {
                "TableName": self.table,
                "Item": {
                    "pk": {"S": f"ACCOUNT#{name}"},
                    "sk": {"S": "META"},
                    "region": {"S": region},
                    "status": {"S": ACTIVE},
                    "createdAt": {"N": str(int(time.time()))},
                },
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        try:
            await self.write([put], account=name, kind="create_account")
        except RegistryConflict:
            return False
        return True

    async def list_accounts(self) -> list[AccountRecord]:
        items: dict[str, list[Mapping[str, Any]]] = {}
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "begins_with(pk, :p)",
            "ExpressionAttributeValues": {":p": {"S": "ACCOUNT#"}},
        }
        while True:
            page = await self._call("scan", **kwargs)
            for item in page.get("Items", []):
                items.setdefault(_s(item, "pk")[len("ACCOUNT#") :], []).append(item)
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        records = [parse_account(name, its) for name, its in sorted(items.items())]
        return [r for r in records if r is not None]

    async def create_key(self, account: str, app_key: str, token: str, roles: list[str]) -> None:
        digest = token_hash(token).hex()
        now = str(int(time.time()))
        entries: list[dict[str, Any]] = [
            {
                "ConditionCheck": {
                    "TableName": self.table,
                    "Key": {"pk": {"S": f"ACCOUNT#{account}"}, "sk": {"S": "META"}},
                    "ConditionExpression": "attribute_exists(pk)",
                }
            },
            {
                "Put": {
                    "TableName": self.table,
                    "Item": {
                        "pk": {"S": f"ACCOUNT#{account}"},
                        "sk": {"S": f"KEY#{app_key}"},
                        "tokenHash": {"S": digest},
                        "roles": {"SS": sorted(roles)},
                        "status": {"S": ACTIVE},
                        "createdAt": {"N": now},
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {
                "Put": {
                    "TableName": self.table,
                    "Item": {
                        "pk": {"S": f"APPKEY#{app_key}"},
                        "sk": {"S": "KEY"},
                        "account": {"S": account},
                        "tokenHash": {"S": digest},
                        "status": {"S": ACTIVE},
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ]
        try:
            await self.write(entries, account=account, kind="create_key", app_keys=[app_key])
        except RegistryConflict as exc:
            raise RegistryError(
                "create-key refused: the account must exist and the app key must be new"
            ) from exc

    async def revoke_key(self, account: str, app_key: str) -> None:
        update = {
            "UpdateExpression": "SET #s = :r",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {":r": {"S": REVOKED}},
            "ConditionExpression": "attribute_exists(pk)",
        }
        entries: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self.table,
                    "Key": {"pk": {"S": f"ACCOUNT#{account}"}, "sk": {"S": f"KEY#{app_key}"}},
                    **update,
                }
            },
            {
                "Update": {
                    "TableName": self.table,
                    "Key": {"pk": {"S": f"APPKEY#{app_key}"}, "sk": {"S": "KEY"}},
                    **update,
                }
            },
        ]
        try:
            await self.write(entries, account=account, kind="revoke_key", app_keys=[app_key])
        except RegistryConflict as exc:
            raise RegistryError(f"revoke-key refused: no key {app_key} on {account}") from exc

    async def grant_user(self, account: str, email: str, roles: list[str]) -> None:
        """Give a user (by e-mail, stored hashed) these roles on the account; replaces a grant."""
        entries: list[dict[str, Any]] = [
            {
                "ConditionCheck": {
                    "TableName": self.table,
                    "Key": {"pk": {"S": f"ACCOUNT#{account}"}, "sk": {"S": "META"}},
                    "ConditionExpression": "attribute_exists(pk)",
                }
            },
            {
                "Put": {
                    "TableName": self.table,
                    "Item": {
                        "pk": {"S": f"ACCOUNT#{account}"},
                        "sk": {"S": f"USER#{user_hash(email)}"},
                        "roles": {"SS": sorted(roles)},
                        "status": {"S": ACTIVE},
                        "createdAt": {"N": str(int(time.time()))},
                    },
                }
            },
        ]
        try:
            await self.write(entries, account=account, kind="grant_user")
        except RegistryConflict as exc:
            raise RegistryError(f"grant-user refused: no account {account!r}") from exc

    async def revoke_user(self, account: str, email: str) -> None:
        update = {
            "Update": {
                "TableName": self.table,
                "Key": {"pk": {"S": f"ACCOUNT#{account}"}, "sk": {"S": f"USER#{user_hash(email)}"}},
                "UpdateExpression": "SET #s = :r",
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": {":r": {"S": REVOKED}},
                "ConditionExpression": "attribute_exists(pk)",
            }
        }
        try:
            await self.write([update], account=account, kind="revoke_user")
        except RegistryConflict as exc:  # (the e-mail is not repeated: it is PII)
            raise RegistryError(
                f"revoke-user refused: no grant for that user on {account}"
            ) from exc

    async def set_status(self, account: str, status: str) -> None:
        await self._update_meta(account, "status", status, kind="set_status")

    async def set_region(self, account: str, region: str) -> None:
        await self._update_meta(account, "region", region, kind="set_region")

    async def _update_meta(self, account: str, attr: str, value: str, *, kind: str) -> None:
        update = {
            "Update": {
                "TableName": self.table,
                "Key": {"pk": {"S": f"ACCOUNT#{account}"}, "sk": {"S": "META"}},
                "UpdateExpression": "SET #a = :v",
                "ExpressionAttributeNames": {"#a": attr},
                "ExpressionAttributeValues": {":v": {"S": value}},
                "ConditionExpression": "attribute_exists(pk)",
            }
        }
        try:
            await self.write([update], account=account, kind=kind)
        except RegistryConflict as exc:
            raise RegistryError(f"no account {account!r} in the registry") from exc


async def account_has_data(
    *, table: str, endpoint: str | None, region: str, account: str, timeout_s: float = 3.0
) -> bool:
    """Does the store's table in ``region`` already hold this account (its salt marker item)?"""
    config = AioConfig(
        connect_timeout=timeout_s, read_timeout=timeout_s, retries={"max_attempts": 2}
    )
    try:
        async with get_session().create_client(
            "dynamodb", region_name=region, endpoint_url=endpoint, config=config
        ) as client:
            page = await client.get_item(
                TableName=table,
                Key={"pk": {"S": f"A#{account}#META"}, "sk": {"S": "SALT"}},
                ConsistentRead=True,
            )
    except ClientError as exc:
        # A missing table is refused too: we cannot prove the account has no data there.
        raise RegistryError(f"cannot check {region} table {table}: {exc}") from exc
    except (BotoCoreError, OSError) as exc:
        raise RegistryError(f"cannot check {region} table {table}: {type(exc).__name__}") from exc
    return "Item" in page
