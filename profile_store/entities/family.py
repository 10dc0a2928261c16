"""What a family tells the core: which items, which document, what else a write carries.

A family module (profiles, addresses, purchase info, prospects) describes its entity with these
values and hands them to ``core.Core``, which does the reading and the writing: a ``Family``
(what differs between families on the shared paths: its noun, the shape of ``meta``, its
masking), a ``Lookup`` (which items a read loads), a ``Place`` (where one entity lives), a
``Change`` (what a create or update writes) and a ``Revise`` (how an update turns the current
document into its ``Change``). ``LostRace`` is how either side says "a concurrent write won:
re-read and re-apply".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..crypto import NewSubjectKey
from ..layout import Item
from ..schema import CustomSchema
from .values import Caller

Masker = Callable[[dict[str, Any]], dict[str, Any]]
# Profiles mask by the account's custom schema, so a family's masker is asked per request,
# with the newest schema version the items read were written under (``schemaVersion``).
MaskSource = Callable[[Caller, int], Awaitable[Masker]]
Entry = dict[str, Any]  # one TransactWriteItems entry


def always(mask: Masker) -> MaskSource:
    async def source(caller: Caller, schema_version: int) -> Masker:
        return mask

    return source


@dataclass(frozen=True, slots=True)
class Family:
    """What differs between entity families on the shared paths."""

    entity_type: str  # the items' ``entityType``, and the noun in If-Match messages
    style: str  # the shape of ``meta``: profile | address | expiring
    missing: str  # the 404 message
    masker: MaskSource
    # The answer to a create that lost its transaction (message, code); default: retry.
    create_lost: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Lookup:
    """Which items a read loads: one (``sk``) or every one under ``prefix``."""

    pk: str
    sk: str = ""
    prefix: str = ""
    under_profile: bool = False  # the profile's CUR item must be alive too
    # Profile versions are served while their profile lives, even past their own expiresAt
    # (which is the profile's expiry when the version was written).
    honour_expiry: bool = True


@dataclass(frozen=True, slots=True)
class Place:
    """Where one entity lives: its current item, its versions, whose key seals it."""

    pk: str
    current_sk: str
    version_prefix: str  # a version's sk is this + its version id
    subject: str
    eid: str  # the ``id`` attribute and the answer's id
    profile_id: str | None = None  # a sub-resource: the profile that must be alive

    def lookup(self) -> Lookup:
        return Lookup(self.pk, self.current_sk, under_profile=self.profile_id is not None)


@dataclass(slots=True)
class Change:
    """What one create or update writes besides the versioned pair's standard attributes."""

    doc: dict[str, Any]
    attrs: dict[str, Any] = field(default_factory=dict)  # expiry, hashes: plaintext
    new_key: NewSubjectKey | None = None  # a create of a subject: its data key, same transaction
    alt_keys: list[Entry] = field(default_factory=list)  # Put (-> 409 duplicate) or Delete
    email_hex: str | None = None  # the email must not be suppressed
    # The custom schema the document was validated with: it must still be current at commit.
    schema: CustomSchema | None = None


Revise = Callable[[Item, dict[str, Any]], Awaitable[Change]]


def merging(patch: dict[str, Any]) -> Revise:
    """The revision of a plain PATCH: the patch's fields over the current document."""

    async def revise(item: Item, old_doc: dict[str, Any]) -> Change:
        return Change({**old_doc, **patch})

    return revise


class LostRace(Exception):
    """The conditional write lost to a concurrent one: re-read and re-apply."""
