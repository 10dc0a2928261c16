"""Erasure fixtures: the store tier's (fresh table on DynamoDB Local, app with the envelope codec
under a per-test local master key, signing client) plus helpers to look at the raw table."""

from __future__ import annotations

import json
from typing import Any

from tests.store.conftest import (  # noqa: F401 (fixtures)
    api,
    client,
    ddb,
    master_key_file,
    settings,
    table,
)

ERASE = "/api/user-rights/createAndProcessDeleteUserData"
ERASER_ROLES = frozenset({"erase"})


def strings_of(value: Any) -> list[str]:
    """Every text inside a low-level attribute value; binary decoded with errors="ignore"."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings_of(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings_of(v)]
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
        return [raw.decode("utf-8", errors="ignore"), raw.decode("latin-1")]
    return [str(value)]


def item_text(item: dict[str, Any]) -> str:
    return "\n".join([*item.keys(), *strings_of(item), json.dumps(item, default=repr)])
