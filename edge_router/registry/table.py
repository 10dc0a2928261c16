"""The account registry as the edge reads it: one DynamoDB table, read-only, hot-path reads.

One partition per account, so one Query returns everything the edge needs to route and
authenticate a request for that account (the layout is ``residency_contract.tables``)::

    pk ACCOUNT#{name}   sk META          {region, status, createdAt, generation, moving}
    pk ACCOUNT#{name}   sk KEY#{appKey}  {tokenHash (sha256 hex), roles [..], status, createdAt}
    pk ACCOUNT#{name}   sk USER#{sha256(lower-cased e-mail) hex}  {roles [..], status, createdAt}
    pk APPKEY#{appKey}  sk KEY           {account, tokenHash, status}   (owner index)
    pk CHANGES          sk {epoch_ms:013d}#{8 hex}       (the change log: ``changelog``)

``generation`` (absent = 0) rises by one with every completed move of the account's home
region; ``moving`` is true only during a move's final catch-up, when the edge refuses writes.

The owner index lets the edge tell "your key belongs to another account" (403) from "no such
key" (401) without scanning, and only when the caller also holds that key's token.

User grants (roles of a user-token caller) are keyed by a hash of the e-mail, the identity the
operator grants (``residency-ops registry grant-user ACCOUNT EMAIL``) and the token's ``sub``:
the e-mail itself is PII and never stored. A plain SHA-256 is pseudonymous, not anonymous --
someone who can read the table and guesses an address can confirm it -- which is acceptable
for this internal table; it keeps the grant readable by the edge with no secret to distribute.

``RegistryTable`` is the boundary: every botocore/aiobotocore failure becomes ``RegistryError``
here and nowhere else. Reads are strongly consistent: a read that follows a change item must
see that change. It holds one long-lived client. The records it returns are ``records``; the
operators' writes are ``residency_ops.registry_writer``, a subclass the edge never loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, ClassVar, Self

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from residency_contract.tables import CHANGES_PK, account_pk, appkey_owner_key

from ..errors import RegistryError
from .changelog import Change, parse_change
from .records import ACTIVE, AccountRecord, KeyOwner, attr_s, parse_account

if TYPE_CHECKING:
    from ..config import EdgeSettings


class RegistryTable:
    """Reads the registry table through one aiobotocore client: accounts, key owners, changes."""

    # The shortest read timeout ``from_settings`` gives: a subclass that reads more per call
    # (the operators' scans) raises it.
    min_read_timeout_s: ClassVar[float] = 0.0

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
    def from_settings(cls, settings: EdgeSettings, *, max_attempts: int | None = None) -> Self:
        """The registry of ``settings`` (table, endpoint, region, timeouts, attempts): the one
        way the edge and the operator tools open it."""
        return cls(
            table=settings.registry_table,
            endpoint=settings.registry_endpoint,
            region=settings.registry_region,
            connect_timeout_s=settings.registry_connect_timeout_s,
            read_timeout_s=max(settings.registry_read_timeout_s, cls.min_read_timeout_s),
            max_attempts=settings.registry_max_attempts if max_attempts is None else max_attempts,
        )

    async def __aenter__(self) -> Self:
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

    async def get_account(self, name: str) -> AccountRecord | None:
        return parse_account(name, await self.account_items(name))

    async def account_items(self, name: str) -> list[Mapping[str, Any]]:
        """Every item of the account's partition (META, keys, grants), as stored."""
        items: list[Mapping[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": account_pk(name)}},
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
            Key=appkey_owner_key(app_key),
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
