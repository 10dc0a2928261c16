"""The registry as operators change it: accounts, keys, user grants, status, region, and the
mover's job items; a subclass of the edge's read-only ``RegistryTable`` (one client, one
error boundary), loaded by the operator tools only.

Every write an edge reads goes through ``write``, which appends the change item in the same
transaction (``edge_router.registry.changelog``), so it reaches every edge within a second.
Only the mover's job (``MOVE#{account}``, which no edge reads) is written without one
(``write_unseen``). The key layout is ``residency_contract.tables``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from botocore.exceptions import BotoCoreError, ClientError

from edge_router.errors import RegistryError
from edge_router.registry import ACTIVE, REVOKED, AccountRecord, RegistryTable
from edge_router.registry.changelog import TTL_ATTRIBUTE, change_put
from edge_router.registry.records import attr_s, parse_account, token_hash, user_hash
from residency_contract.tables import (
    ACCOUNT_PREFIX,
    PK_SK_KEYS,
    Key,
    account_of_pk,
    account_pk,
    appkey_owner_key,
    item_key,
    key_sk,
    meta_key,
    user_sk,
)


class RegistryConflict(RegistryError):
    """A registry write's condition failed, so nothing was written. ``reasons``: the
    cancellation code of each entry the writer passed, in order (``"None"`` where it held)."""

    def __init__(self, message: str, reasons: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reasons = reasons


# A condition on one item: it exists / it does not.
EXISTS = "attribute_exists(pk)"
NEW = "attribute_not_exists(pk)"


class RegistryWriter(RegistryTable):
    """The operators' registry: the edge's reads plus every write, the scan of all accounts
    and the mover's job storage."""

    # A scan page takes longer than the edge's point reads.
    min_read_timeout_s: ClassVar[float] = 5.0

    # -- the writes every edge sees, and the one it does not ----------------------------------

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

    async def write_unseen(self, entries: list[dict[str, Any]]) -> None:
        """Apply ``entries`` WITHOUT a change item: only for items no edge reads (the account
        mover's job), so a job's progress does not make every edge drop and re-read the
        account. Anything an edge reads goes through ``write``. ``RegistryConflict`` when a
        condition failed."""
        await self._transact(entries, what="move job", owned=len(entries))

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

    async def get_item(self, key: Key) -> dict[str, Any] | None:
        """One item, consistent read (the account's META, the mover's job)."""
        page = await self._call("get_item", TableName=self.table, Key=key, ConsistentRead=True)
        item = page.get("Item")
        return dict(item) if item else None

    # -- the table ------------------------------------------------------------------------------

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

    async def list_accounts(self) -> list[AccountRecord]:
        items: dict[str, list[Mapping[str, Any]]] = {}
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "begins_with(pk, :p)",
            "ExpressionAttributeValues": {":p": {"S": ACCOUNT_PREFIX}},
        }
        while True:
            page = await self._call("scan", **kwargs)
            for item in page.get("Items", []):
                items.setdefault(account_of_pk(attr_s(item, "pk")), []).append(item)
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        records = [parse_account(name, its) for name, its in sorted(items.items())]
        return [r for r in records if r is not None]

    # -- accounts, keys, grants -------------------------------------------------------------

    def _entry(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        return {op: {"TableName": self.table, **body}}

    def _account_exists(self, account: str) -> dict[str, Any]:
        check = {"Key": meta_key(account), "ConditionExpression": EXISTS}
        return self._entry("ConditionCheck", check)

    async def create_account(self, name: str, region: str) -> bool:
        """False (nothing written) when the account exists."""
        item = {
            **meta_key(name),
            "region": {"S": region},
            "status": {"S": ACTIVE},
            "createdAt": {"N": str(int(time.time()))},
        }
        put = self._entry("Put", {"Item": item, "ConditionExpression": NEW})
        try:
            await self.write([put], account=name, kind="create_account")
        except RegistryConflict:
            return False
        return True

    async def create_key(self, account: str, app_key: str, token: str, roles: list[str]) -> None:
        digest = token_hash(token).hex()
        key_item = {
            **item_key(account_pk(account), key_sk(app_key)),
            "tokenHash": {"S": digest},
            "roles": {"SS": sorted(roles)},
            "status": {"S": ACTIVE},
            "createdAt": {"N": str(int(time.time()))},
        }
        owner_item = {
            **appkey_owner_key(app_key),
            "account": {"S": account},
            "tokenHash": {"S": digest},
            "status": {"S": ACTIVE},
        }
        entries = [
            self._account_exists(account),
            self._entry("Put", {"Item": key_item, "ConditionExpression": NEW}),
            self._entry("Put", {"Item": owner_item, "ConditionExpression": NEW}),
        ]
        try:
            await self.write(entries, account=account, kind="create_key", app_keys=[app_key])
        except RegistryConflict as exc:
            raise RegistryError(
                "create-key refused: the account must exist and the app key must be new"
            ) from exc

    def _revoke(self, key: Key) -> dict[str, Any]:
        return self._entry(
            "Update",
            {
                "Key": key,
                "UpdateExpression": "SET #s = :r",
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": {":r": {"S": REVOKED}},
                "ConditionExpression": EXISTS,
            },
        )

    async def revoke_key(self, account: str, app_key: str) -> None:
        entries = [
            self._revoke(item_key(account_pk(account), key_sk(app_key))),
            self._revoke(appkey_owner_key(app_key)),
        ]
        try:
            await self.write(entries, account=account, kind="revoke_key", app_keys=[app_key])
        except RegistryConflict as exc:
            raise RegistryError(f"revoke-key refused: no key {app_key} on {account}") from exc

    async def grant_user(self, account: str, email: str, roles: list[str]) -> None:
        """Give a user (by e-mail, stored hashed) these roles on the account; replaces a grant."""
        grant = {
            **item_key(account_pk(account), user_sk(user_hash(email))),
            "roles": {"SS": sorted(roles)},
            "status": {"S": ACTIVE},
            "createdAt": {"N": str(int(time.time()))},
        }
        entries = [self._account_exists(account), self._entry("Put", {"Item": grant})]
        try:
            await self.write(entries, account=account, kind="grant_user")
        except RegistryConflict as exc:
            raise RegistryError(f"grant-user refused: no account {account!r}") from exc

    async def revoke_user(self, account: str, email: str) -> None:
        update = self._revoke(item_key(account_pk(account), user_sk(user_hash(email))))
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
        update = self._entry(
            "Update",
            {
                "Key": meta_key(account),
                "UpdateExpression": "SET #a = :v",
                "ExpressionAttributeNames": {"#a": attr},
                "ExpressionAttributeValues": {":v": {"S": value}},
                "ConditionExpression": EXISTS,
            },
        )
        try:
            await self.write([update], account=account, kind=kind)
        except RegistryConflict as exc:
            raise RegistryError(f"no account {account!r} in the registry") from exc
