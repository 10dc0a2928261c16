"""The account's custom profile schema: its two views and its replacement.

The declaration itself (parsing, the full schema, type checks) is pure and lives in
``schema.py``; this family reads and writes it, and is where profiles ask for it (which fields
are ``pii: true`` and masked, which custom fields are typed, the default ``documentTTL``).
"""

from __future__ import annotations

from typing import Any

from ..errors import BadRequest
from ..repository import Repository
from ..schema import CustomSchema, SchemaError, custom_view, full_view, parse_custom
from .values import Caller


class CustomSchemas:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    async def current(self, account: str) -> CustomSchema:
        return await self.repo.custom_schema(account)

    async def full_view(self, caller: Caller) -> dict[str, Any]:
        return full_view(await self.current(caller.account))

    async def custom_view(self, caller: Caller) -> dict[str, Any]:
        return custom_view(await self.current(caller.account))

    async def replace(self, caller: Caller, body: Any) -> None:
        try:
            fields, ttl_days = parse_custom(body)
        except SchemaError as exc:
            raise BadRequest(str(exc), code="invalid_schema") from None
        await self.repo.put_custom_schema(caller.account, fields, ttl_days)
