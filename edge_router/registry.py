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
holds one long-lived client. The records it returns are ``registry_records``; the operator
writes (``registry_cli``) are the ``registry_admin`` mixin, over this class's ``write``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from .config import EdgeSettings

from .changelog import CHANGES_PK, Change, change_put, parse_change
from .errors import RegistryConflict, RegistryError
from .registry_admin import RegistryAdmin, account_has_data
from .registry_records import (
    ACTIVE,
    REVOKED,
    SUSPENDED,
    AccountRecord,
    ApiKey,
    KeyOwner,
    RegistryReader,
    UserGrant,
    attr_s,
    parse_account,
    token_hash,
    user_hash,
)

__all__ = [
    "ACTIVE",
    "REVOKED",
    "SUSPENDED",
    "AccountRecord",
    "ApiKey",
    "DynamoRegistry",
    "KeyOwner",
    "RegistryReader",
    "UserGrant",
    "account_has_data",
    "parse_account",
    "token_hash",
    "user_hash",
]


class DynamoRegistry(RegistryAdmin):
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

    @classmethod
    def for_operator(cls, settings: EdgeSettings, *, max_attempts: int = 2) -> DynamoRegistry:
        """The registry as the operator CLIs open it (``registry``, ``residency``, ``account``):
        the edge's settings, with a read timeout long enough for a scan page."""
        return cls(
            table=settings.registry_table,
            endpoint=settings.registry_endpoint,
            region=settings.registry_region,
            connect_timeout_s=settings.registry_connect_timeout_s,
            read_timeout_s=max(settings.registry_read_timeout_s, 5.0),
            max_attempts=max_attempts,
        )

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
            account=attr_s(item, "account"),
            token_sha256=bytes.fromhex(attr_s(item, "tokenHash")),
            active=attr_s(item, "status", ACTIVE) == ACTIVE,
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
        await self._transact(entries, what="move job", owned=len(entries))

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
        await self._transact([*entries, change], what=kind, owned=len(entries))
        return str(change["Put"]["Item"]["sk"]["S"])

    async def _transact(self, items: list[dict[str, Any]], *, what: str, owned: int) -> None:
        """TransactWriteItems; a lost condition is ``RegistryConflict`` with the codes of the
        first ``owned`` entries (the caller's), anything else ``RegistryError``."""
        try:
            await self._client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") == "TransactionCanceledException":
                reasons = [
                    r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])
                ]
                if "ConditionalCheckFailed" in reasons:
                    raise RegistryConflict(
                        f"registry {what} refused: a condition failed", tuple(reasons[:owned])
                    ) from exc
            raise RegistryError(f"registry {what} failed: {error.get('Code', 'error')}") from exc
        except (BotoCoreError, OSError) as exc:
            raise RegistryError(f"registry {what} failed: {type(exc).__name__}") from exc
