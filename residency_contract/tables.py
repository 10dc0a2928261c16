"""The key schema every table of the project has: regional profile tables and the registry.

Both a store's ``create-table`` and the edge's ``registry create-table`` build their tables
from ``PK_SK_KEYS``, and both address items as ``{"pk": {"S": ...}, "sk": {"S": ...}}``.
"""

from __future__ import annotations

from typing import Any

# A string partition key ``pk`` and a string sort key ``sk``.
PK_SK_KEYS: dict[str, Any] = {
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
    ],
    "KeySchema": [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ],
}
