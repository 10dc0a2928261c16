"""Shared pieces of the definite-outcome write tests (issue 20): the plain tables
(``test_write_outcome_tables``), the store with its transactions wrapped
(``test_write_outcome_replays``) and DynamoDB Local frozen under it
(``test_write_outcome_frozen``).

``call`` bounds every request (``BOUND_S``); ``profiles_with_email`` and ``current_profiles``
say what landed, through the API and in the table.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .conftest import BASE, Api

PROFILES = f"{BASE}/profiles"
BOUND_S = 30.0  # no request of these tests may take longer


async def call(api: Api, *args: Any, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
    return await asyncio.wait_for(api.call(*args, **kwargs), BOUND_S)


def key_header(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def profiles_with_email(api: Api, email: str) -> list[str]:
    status, body, _ = await call(
        api, "GET", f"{PROFILES}/{email}", params={"alternativeKey": "email"}
    )
    assert status in {200, 404}, body
    return [] if status == 404 else [p["id"] for p in body]


def current_profiles(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in items if i["sk"]["S"] == "CUR" and i["pk"]["S"].startswith("A#acme#P#")]
