"""The registry's operator writes (``registry_cli``, the local stack, tests): accounts, keys,
user grants, status, region; and the store-table check ``set-region`` needs.

A mixin of ``registry.DynamoRegistry``: every write goes through its ``write``, so each one
appends its change item in the same transaction (``changelog``) and reaches every edge
within a second. The item layout is ``registry.py``'s docstring.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from residency_contract.tables import PK_SK_KEYS

from .changelog import TTL_ATTRIBUTE
from .errors import RegistryConflict, RegistryError
from .registry_records import (
    ACTIVE,
    REVOKED,
    AccountRecord,
    attr_s,
    parse_account,
    token_hash,
    user_hash,
)


class RegistryAdmin:
    """The operator writes; needs ``table``, ``_client``, ``_call`` and ``write``
    (``DynamoRegistry``)."""

    table: str
    _client: Any

    async def _call(self, op: str, **kwargs: Any) -> dict[str, Any]:
        raise NotImplementedError

    async def write(
        self, entries: list[dict[str, Any]], *, account: str, kind: str, app_keys: Any = ()
    ) -> str:
        raise NotImplementedError

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
                items.setdefault(attr_s(item, "pk")[len("ACCOUNT#") :], []).append(item)
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
