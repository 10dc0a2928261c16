"""The account's custom profile schema: its two views, its replacement, and what profiles ask.

The declaration itself (parsing, the full schema, type checks) is pure and lives in
``schema.py``; this family reads and writes it, and is where profiles ask for it (which fields
are ``pii: true`` and masked, which custom fields are typed, the default ``documentTTL``).

Read-your-writes across the instances of a region. Each instance keeps the schemas it has seen
for ``SCHEMA_CACHE_S`` (a profile read must not cost a second GetItem), so the cache may be
behind a replacement made through another instance. What must never be behind is decided this
way:

- the two schema views (``GET .../schemas/profileSystem[/custom]``) read the item itself
  (consistent), so a GET right after a PUT anywhere answers the new fields;
- a profile write carries, in its transaction, a ConditionCheck that the schema is still the
  version it was validated with (``unchanged``); if another instance replaced it meanwhile the
  write fails, this instance forgets its copy, and the write is re-applied with the new one
  (``Core.commit``). So every profile is validated, and its TTL chosen, by the schema current
  at its commit, and its items are stamped with that version (``schemaVersion``);
- a profile read whose items carry a stamp newer than the cached schema re-reads the schema
  first (``current(at_least=)``), so a field declared ``pii: true`` is masked on every instance
  in any read of a profile written after the declaration.

What remains bounded by ``SCHEMA_CACHE_S`` on another instance is only the masking of a value
written *before* its field was declared ``pii: true`` (it was stored as a plain custom field).
A replacement is conditional on the version it replaces, so two never share a version number.
"""

from __future__ import annotations

import json
import time
from typing import Any

from cachetools import TTLCache

from ..errors import BadRequest, ConditionFailed, Conflict
from ..layout import Item, get_n, get_s, n, s, schema_key
from ..repository import Repository
from ..schema import EMPTY, CustomSchema, SchemaError, custom_view, full_view, parse_custom
from .values import Caller

SCHEMA_CACHE_S = 5.0
# Replacements racing on one account re-read and retry this many times, then 409.
_REPLACE_ATTEMPTS = 8


class CustomSchemas:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._cache: TTLCache[str, CustomSchema] = TTLCache(maxsize=10_000, ttl=SCHEMA_CACHE_S)

    async def current(self, account: str, *, at_least: int = 0) -> CustomSchema:
        """The schema as this instance knows it, re-read if that is older than ``at_least``
        (the stamp of an item written under a newer one)."""
        cached = self._cache.get(account)
        if cached is not None and cached.version >= at_least:
            return cached
        return await self.fresh(account)

    async def fresh(self, account: str) -> CustomSchema:
        """The account's schema as stored now (a consistent read; ``EMPTY`` if none)."""
        item = await self.repo.get(schema_key(account))
        schema = EMPTY
        if item is not None:
            schema = CustomSchema(
                fields=json.loads(get_s(item, "fields", "{}")),
                document_ttl_days=get_n(item, "documentTTL"),
                version=get_n(item, "version") or 0,
            )
        self._cache[account] = schema
        return schema

    def forget(self, account: str) -> None:
        self._cache.pop(account, None)

    def unchanged(self, account: str, schema: CustomSchema) -> dict[str, Any]:
        """Transaction entry: the stored schema is still ``schema``'s version."""
        return {"ConditionCheck": {"Key": schema_key(account), **_stored_at(schema.version)}}

    async def full_view(self, caller: Caller) -> dict[str, Any]:
        return full_view(await self.fresh(caller.account))

    async def custom_view(self, caller: Caller) -> dict[str, Any]:
        return custom_view(await self.fresh(caller.account))

    async def replace(self, caller: Caller, body: Any) -> None:
        try:
            fields, ttl_days = parse_custom(body)
        except SchemaError as exc:
            raise BadRequest(str(exc), code="invalid_schema") from None
        for _ in range(_REPLACE_ATTEMPTS):
            stored = await self.fresh(caller.account)
            schema = CustomSchema(
                fields=fields, document_ttl_days=ttl_days, version=stored.version + 1
            )
            try:
                await self._write(caller.account, schema)
            except ConditionFailed:
                continue  # another replacement won: build on top of it
            self._cache[caller.account] = schema
            return
        raise Conflict(
            "the custom schema kept changing while it was replaced; retry the request",
            code="update_conflict",
        )

    async def _write(self, account: str, schema: CustomSchema) -> None:
        """Store ``schema`` if the stored one is still its predecessor (``version - 1``), so two
        concurrent replacements never share a version number; else ``ConditionFailed``."""
        item: Item = {
            **schema_key(account),
            "fields": s(json.dumps(schema.fields, separators=(",", ":"))),
            "version": n(schema.version),
            "updatedAt": n(int(time.time())),
        }
        if schema.document_ttl_days is not None:
            item["documentTTL"] = n(schema.document_ttl_days)
        await self.repo.transact([{"Put": {"Item": item, **_stored_at(schema.version - 1)}}])


def _stored_at(version: int) -> dict[str, Any]:
    """Condition parameters: the account's schema item is at ``version`` (0: there is none)."""
    if version == 0:
        return {"ConditionExpression": "attribute_not_exists(pk)"}
    return {"ConditionExpression": "version = :v", "ExpressionAttributeValues": {":v": n(version)}}
