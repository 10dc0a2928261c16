"""All DynamoDB I/O of the store: one long-lived client, counted calls, the fenced writes.

The items and their keys are ``layout.py``'s.

Every call goes through ``Repository.call``, which asks for ``ReturnConsumedCapacity=TOTAL`` on
data calls, counts the call and its capacity in the metrics, and maps botocore/aiohttp failures
into the package's exception tree (``errors.from_botocore``). Reads are strongly consistent:
the store runs several instances per region and a client must read its own writes.

Writes that change entities are one ``transact`` each, with the request's
``ClientRequestToken`` (``idempotency.py``): a send that may have reached DynamoDB (timeout,
dropped connection, 5xx) or was throttled is re-sent, the same transaction with the same
token, at most ``write_attempts`` times and for at most ``write_budget_s`` after its first send
(the store's answer must reach the client before the edge's read timeout); DynamoDB applies it
once. If the last send still leaves the outcome open, ``WriteOutcomeUnknown`` (503
``write_outcome_unknown``); if no send can have reached DynamoDB, ``StorageUnavailable``.

The fence (``fence.py``): every write of an account's items is a transaction that carries a
ConditionCheck on the account's ``FENCE#{account}`` marker, appended by ``transact`` (``put``
and ``delete_keys`` are transactions too). A write that loses it stores nothing and answers
503 ``account_moving`` or 421 ``residency_mismatch``. ``call`` refuses a bare PutItem,
DeleteItem, UpdateItem or BatchWriteItem on an account's items, so no write path can skip the
check; only the transfer endpoints write past it (``transfer_batch_write``).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import Iterable
from typing import Any

import aiobotocore
import botocore
from aiobotocore.config import AioConfig
from cachetools import LRUCache

from residency_contract.tables import salt_key

from . import fence
from .config import StoreSettings
from .errors import ConditionFailed, StorageUnavailable, WriteOutcomeUnknown, from_botocore
from .idempotency import WriteIntent
from .layout import Item, Key, key, n, s
from .metrics import StoreMetrics

# Calls that accept ReturnConsumedCapacity.
_DATA_CALLS = frozenset(
    {
        "get_item",
        "put_item",
        "delete_item",
        "update_item",
        "query",
        "batch_get_item",
        "batch_write_item",
        "transact_write_items",
        "transact_get_items",
    }
)
# Single-item writes: never sent bare for an account's items (the fence check needs a
# transaction); ``call`` refuses them.
_SINGLE_WRITES = frozenset({"put_item", "delete_item", "update_item"})
_BATCH_RETRIES = 8
# TransactWriteItems takes 100 entries: 99 deletes and the fence check.
_DELETES_PER_TRANSACTION = 99
_UNKNOWN = "DynamoDB did not confirm this write in time; it may or may not have been applied. "
_RETRY_KEYED = "Sending the same request again with the same body and Idempotency-Key is safe"
_RETRY_BARE = (
    "Read the resource before sending the request again "
    "(with an Idempotency-Key the same request is safe to repeat)"
)


# A fixed User-Agent: without one botocore rebuilds its string (SDK, OS, language, feature and
# config metadata) on every request, ~45 µs of a GET's ~0.9 ms of CPU here.
USER_AGENT = f"profile-store aiobotocore/{aiobotocore.__version__} botocore/{botocore.__version__}"


def client_config(settings: StoreSettings) -> AioConfig:
    """The store's AWS clients (DynamoDB, KMS). Every call's parameters are built by this
    package, never passed through from a request, so botocore's client-side parameter
    validation would only re-check our own code on each call (what the tests check once);
    the service still validates every request it receives."""
    return AioConfig(
        connect_timeout=settings.ddb_connect_timeout_s,
        read_timeout=settings.ddb_read_timeout_s,
        retries={"max_attempts": settings.ddb_max_attempts, "mode": "standard"},
        max_pool_connections=64,
        parameter_validation=False,
        user_agent=USER_AGENT,
    )


class Repository:
    def __init__(
        self,
        client: Any,
        table: str,
        metrics: StoreMetrics,
        *,
        write_attempts: int = 4,
        write_budget_s: float = 8.0,
    ) -> None:
        self.client = client
        self.table = table
        self.metrics = metrics
        self.write_attempts = write_attempts
        self.write_budget_s = write_budget_s
        self._salts: LRUCache[str, bytes] = LRUCache(maxsize=100_000)

    async def call(self, call: str, **kwargs: Any) -> dict[str, Any]:
        if call in _SINGLE_WRITES or call == "batch_write_item":
            _refuse_unfenced(call, kwargs)
        return await self._send(call, **kwargs)

    async def _send(self, call: str, **kwargs: Any) -> dict[str, Any]:
        if call in _DATA_CALLS:
            kwargs["ReturnConsumedCapacity"] = "TOTAL"
        method = getattr(self.client, call)
        try:
            response: dict[str, Any] = await method(**kwargs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.metrics.dynamodb_call(call, getattr(exc, "response", None))
            mapped = from_botocore(exc, call=call)
            raise mapped from None
        self.metrics.dynamodb_call(call, response)
        return response

    # ---- generic operations ---------------------------------------------------------------

    async def get(self, k: Key) -> Item | None:
        response = await self.call("get_item", TableName=self.table, Key=k, ConsistentRead=True)
        return response.get("Item")

    async def get_many(self, keys: list[Key]) -> list[Item | None]:
        """BatchGetItem (one call for up to 100 keys); results in the order of ``keys``."""
        found: dict[tuple[str, str], Item] = {}
        pending: list[Key] = list(keys)
        for attempt in range(_BATCH_RETRIES):
            response = await self.call(
                "batch_get_item",
                RequestItems={self.table: {"Keys": pending, "ConsistentRead": True}},
            )
            for item in response.get("Responses", {}).get(self.table, []):
                found[(item["pk"]["S"], item["sk"]["S"])] = item
            pending = response.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
            if not pending:
                break
            await asyncio.sleep(min(0.5, 0.02 * 2**attempt) * random.random())
        else:
            raise StorageUnavailable("DynamoDB left keys unprocessed (throttled)")
        return [found.get((k["pk"]["S"], k["sk"]["S"])) for k in keys]

    async def query_prefix(
        self, pk: str, prefix: str | None = None, *, limit_pages: int = 1000
    ) -> list[Item]:
        """All items of partition ``pk`` (whose sk starts with ``prefix``), every page."""
        items: list[Item] = []
        condition = "pk = :pk"
        values: dict[str, Any] = {":pk": s(pk)}
        if prefix:
            condition += " AND begins_with(sk, :prefix)"
            values[":prefix"] = s(prefix)
        start: Key | None = None
        for _ in range(limit_pages):
            kwargs: dict[str, Any] = {
                "TableName": self.table,
                "KeyConditionExpression": condition,
                "ExpressionAttributeValues": values,
                "ConsistentRead": True,
            }
            if start:
                kwargs["ExclusiveStartKey"] = start
            response = await self.call("query", **kwargs)
            items.extend(response.get("Items", []))
            start = response.get("LastEvaluatedKey")
            if not start:
                break
        return items

    async def put(
        self,
        item: Item,
        *,
        condition: str | None = None,
        values: dict[str, Any] | None = None,
    ) -> None:
        """One item, as a transaction (so it carries the fence check); ``ConditionFailed``."""
        body: dict[str, Any] = {"Item": item}
        if condition:
            body["ConditionExpression"] = condition
        if values:
            body["ExpressionAttributeValues"] = values
        await self.transact([{"Put": body}])

    async def transact(
        self, items: list[dict[str, Any]], *, intent: WriteIntent | None = None
    ) -> None:
        """TransactWriteItems; each entry is {"Put"|"Delete"|"ConditionCheck": {...}}.

        The table name is filled in here, and the fence check of every account the entries
        touch is appended (``fence.py``): losing it raises the fence's refusal, never
        ``ConditionFailed``. Raises ``ConditionFailed`` naming failed positions of ``items``.
        Sent with the request's next token and re-sent with the same one (module docstring).
        """
        accounts = fence.accounts_in(items)
        entries = [*items, *(fence.fence_check(a) for a in accounts)]
        for entry in entries:
            for body in entry.values():
                body["TableName"] = self.table
        try:
            await self._transact(entries, intent)
        except ConditionFailed as exc:
            fenced = [accounts[i - len(items)] for i in exc.indexes if i >= len(items)]
            if fenced:
                raise fence.refusal(await self.read_fence(fenced[0])) from None
            raise

    async def read_fence(self, account: str) -> fence.Fence | None:
        """The account's fence marker as stored now (a consistent read)."""
        return fence.parse(await self.get(fence.fence_key(account)))

    async def _transact(self, items: list[dict[str, Any]], intent: WriteIntent | None) -> None:
        loop = asyncio.get_running_loop()
        token = str(uuid.uuid4()) if intent is None else intent.next_token()
        deadline = loop.time() + self.write_budget_s
        unknown = False
        last: StorageUnavailable | None = None
        for attempt in range(self.write_attempts):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    await self.call(
                        "transact_write_items", TransactItems=items, ClientRequestToken=token
                    )
                return
            except TimeoutError:  # the deadline, mid-send: DynamoDB may have it
                unknown = True
                break
            except StorageUnavailable as exc:
                unknown = unknown or exc.maybe_applied
                last = exc
            pause = min(1.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0)
            if loop.time() + pause >= deadline:
                break
            await asyncio.sleep(pause)
        if unknown:
            keyed = intent is not None and intent.key_hash is not None
            raise WriteOutcomeUnknown(_UNKNOWN + (_RETRY_KEYED if keyed else _RETRY_BARE))
        raise last or StorageUnavailable("no time left to write to DynamoDB")

    async def delete_keys(self, keys: Iterable[Key]) -> None:
        """Deletes, up to 99 per transaction with the fence check (a BatchWriteItem could not
        carry it); each transaction is all-or-nothing, a later call finishes the rest."""
        unique = list(dict.fromkeys((k["pk"]["S"], k["sk"]["S"]) for k in keys))
        for start in range(0, len(unique), _DELETES_PER_TRANSACTION):
            chunk = unique[start : start + _DELETES_PER_TRANSACTION]
            await self.transact([{"Delete": {"Key": key(pk, sk)}} for pk, sk in chunk])

    async def transfer_transact(self, items: list[dict[str, Any]]) -> None:
        """TransactWriteItems EXEMPT from the fence (no check appended), for the transfer
        endpoints' own records; ``ConditionFailed`` names the failed positions."""
        for entry in items:
            for body in entry.values():
                body["TableName"] = self.table
        await self._transact(items, None)

    async def transfer_batch_write(self, requests: list[dict[str, Any]]) -> None:
        """BatchWriteItem (Put/DeleteRequest), 25 per call, unprocessed items retried a bounded
        number of times. EXEMPT from the fence: only the transfer endpoints (import, purge)
        call it, after checking the fence state they require."""
        for start in range(0, len(requests), 25):
            pending = requests[start : start + 25]
            for attempt in range(_BATCH_RETRIES):
                response = await self._send("batch_write_item", RequestItems={self.table: pending})
                pending = response.get("UnprocessedItems", {}).get(self.table, [])
                if not pending:
                    break
                await asyncio.sleep(min(0.5, 0.02 * 2**attempt) * random.random())
            else:
                raise StorageUnavailable("DynamoDB left writes unprocessed (throttled)")

    async def describe_table(self) -> dict[str, Any]:
        response = await self.call("describe_table", TableName=self.table)
        return dict(response.get("Table", {}))

    # ---- per-account state ------------------------------------------------------------------

    async def salt(self, account: str, *, create: bool) -> bytes | None:
        """The account's salt for alternative-key hashes; created on the first write.

        The conditional put makes concurrent first writes on several instances agree on one
        salt: the loser reads the winner's. The item also marks "this account has data here".
        """
        cached = self._salts.get(account)
        if cached is not None:
            return cached
        item = await self.get(salt_key(account))
        if item is None and create:
            salt = os.urandom(32)
            candidate = {
                **salt_key(account),
                "salt": {"B": salt},
                "account": s(account),
                "createdAt": n(int(time.time())),
            }
            try:
                await self.put(candidate, condition="attribute_not_exists(pk)")
                item = candidate
            except ConditionFailed:
                item = await self.get(salt_key(account))
        if item is None:
            return None
        salt_value = bytes(item["salt"]["B"])
        self._salts[account] = salt_value
        return salt_value

    def forget_account(self, account: str) -> None:
        """Drop what this instance caches about the account (after a purge)."""
        self._salts.pop(account, None)


def _refuse_unfenced(call: str, kwargs: dict[str, Any]) -> None:
    """A bare write to an account's items would skip the fence: a bug, never a request."""
    if call == "batch_write_item":
        requests = [r for rs in kwargs.get("RequestItems", {}).values() for r in rs]
        bodies = [r.get("PutRequest") or r.get("DeleteRequest") or {} for r in requests]
    else:
        bodies = [{"Item": kwargs["Item"]} if "Item" in kwargs else {"Key": kwargs.get("Key")}]
    if fence.accounts_in([{"x": b} for b in bodies]):
        raise RuntimeError(f"{call} on an account's items must be a fenced transaction")
