"""The codec seam: how a document (all of an entity's PII) becomes DynamoDB attributes and back.

Every piece of PII the store keeps (profiles, profile versions, addresses, purchase info,
prospects) goes through a ``DocumentCodec``; nothing personal is ever written as a top-level
attribute. ``PlainJsonCodec`` stores the document as JSON in attribute ``doc``; envelope
encryption with per-subject data keys plugs in here later without touching the repository.

``subject_id`` is the person the data belongs to (the profileId for every item in a profile
partition, the prospectId for prospects), so a per-subject key can be shredded on erasure;
``entity_id`` names the item inside that subject (profile, address or version id).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

AttributeValue = dict[str, Any]


class DocumentCodec(Protocol):
    async def seal(
        self, *, account: str, subject_id: str, entity_id: str, doc: dict[str, Any]
    ) -> dict[str, AttributeValue]:
        """Return the attributes to store for ``doc`` (merged into the item)."""
        ...

    async def open(
        self, *, account: str, subject_id: str, entity_id: str, item: dict[str, AttributeValue]
    ) -> dict[str, Any]:
        """Return the document held by ``item`` (a raw DynamoDB item)."""
        ...


class PlainJsonCodec:
    """No encryption: the document is compact JSON in attribute ``doc`` (S)."""

    attribute = "doc"

    async def seal(
        self, *, account: str, subject_id: str, entity_id: str, doc: dict[str, Any]
    ) -> dict[str, AttributeValue]:
        return {self.attribute: {"S": json.dumps(doc, separators=(",", ":"), ensure_ascii=False)}}

    async def open(
        self, *, account: str, subject_id: str, entity_id: str, item: dict[str, AttributeValue]
    ) -> dict[str, Any]:
        value = json.loads(item[self.attribute]["S"])
        if not isinstance(value, dict):
            raise ValueError("stored document is not an object")
        return value
