"""One create or update as ONE ``TransactWriteItems``: its entries, each with the role it plays.

DynamoDB names the entries whose condition failed by their position; what a failure means
depends on what the entry was for. A ``Transaction`` keeps each entry's ``Role`` beside it, so
``Core.commit`` maps a failure to its answer by role (``failed``), whatever the positions of a
given write turn out to be::

    CURRENT           the current item: new, or replacing exactly the version read
    VERSION           the new immutable version item
    DATA_KEY          the subject's new data key (a create of a subject)
    ALT_KEY_PUT       an alternative key taken for this profile (another's: 409 duplicate)
    ALT_KEY_DELETE    a replaced alternative key, deleted while it is still this profile's
    PROFILE_ALIVE     a sub-resource's profile is alive (404 when not)
    NOT_SUPPRESSED    the email is not an erased subject's (409 subject_suppressed)
    SCHEMA_UNCHANGED  the custom schema is the one the document was validated with
    CREATE_RECORD     the create's Idempotency-Key record (a twin won: answer its entity)

``refusal`` is what a lost transaction answers, by those roles. The entry builders of the write
path are here too. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from ..errors import ConditionFailed, Conflict, NotFound, PreconditionFailed
from ..idempotency import Created
from ..layout import Item, key, n, s, suppression_key
from .family import Entry, Family, LostRace
from .values import duplicate, suppressed

_ALIVE = "attribute_exists(pk) AND (attribute_not_exists(expiresAt) OR expiresAt > :now)"


class Role(Enum):
    CURRENT = "current"
    VERSION = "version"
    DATA_KEY = "data_key"
    ALT_KEY_PUT = "alt_key_put"
    ALT_KEY_DELETE = "alt_key_delete"
    PROFILE_ALIVE = "profile_alive"
    NOT_SUPPRESSED = "not_suppressed"
    SCHEMA_UNCHANGED = "schema_unchanged"
    CREATE_RECORD = "create_record"


@dataclass(slots=True)
class Transaction:
    """The entries of one write, in the order they are sent, and the role of each."""

    entries: list[Entry] = field(default_factory=list)
    roles: list[Role] = field(default_factory=list)

    def add(self, role: Role, entry: Entry) -> None:
        self.entries.append(entry)
        self.roles.append(role)

    def failed(self, exc: ConditionFailed) -> set[Role]:
        """The roles of the entries whose condition failed (the fence checks the repository
        appends after them are answered there, never here)."""
        return {self.roles[i] for i in exc.indexes if i < len(self.roles)}


def versioned_puts(current: Item, version: Item, *, replaces: str | None) -> list[Entry]:
    """The two writes of every create/update: the current item (new, or replacing exactly the
    version that was read, so a concurrent writer makes this transaction fail) and its
    immutable version."""
    if replaces is None:
        put: Entry = {"Item": current, "ConditionExpression": "attribute_not_exists(pk)"}
    else:
        put = {
            "Item": current,
            "ConditionExpression": "version = :v",
            "ExpressionAttributeValues": {":v": s(replaces)},
        }
    return [
        {"Put": put},
        {"Put": {"Item": version, "ConditionExpression": "attribute_not_exists(pk)"}},
    ]


def alive_check(pk: str, now: float) -> Entry:
    """The profile of partition ``pk`` exists and has not expired."""
    return {
        "ConditionCheck": {
            "Key": key(pk, "CUR"),
            "ConditionExpression": _ALIVE,
            "ExpressionAttributeValues": {":now": n(int(now))},
        }
    }


def not_suppressed(account: str, email_hex: str) -> Entry:
    """The email was not erased (no suppression entry for its hash)."""
    return {
        "ConditionCheck": {
            "Key": suppression_key(account, email_hex),
            "ConditionExpression": "attribute_not_exists(pk)",
        }
    }


def record_put(created: Created, account: str, key_hash: str, *, now: float, ttl_s: int) -> Entry:
    """The create's Idempotency-Key record: new, or replacing one past its expiry."""
    return {
        "Put": {
            "Item": created.item(account, key_hash, now=int(now), ttl_s=ttl_s),
            "ConditionExpression": "attribute_not_exists(pk) OR expiresAt < :now",
            "ExpressionAttributeValues": {":now": n(int(now))},
        }
    }


def refusal(
    failed: set[Role],
    family: Family,
    *,
    contention: bool,
    replaces: str | None,
    if_match: str | None,
) -> Exception:
    """What a lost transaction answers, by the roles of the entries that failed: ``LostRace``
    when re-reading and re-applying may succeed. ``replaces``: the version an update replaced
    (``None``: a create); ``contention``: DynamoDB cancelled for a concurrent transaction."""
    if Role.PROFILE_ALIVE in failed:
        return NotFound("profile not found")
    if Role.NOT_SUPPRESSED in failed:
        return suppressed()
    if Role.SCHEMA_UNCHANGED in failed:
        return LostRace()  # validated again with the schema that replaced it
    if replaces is not None and (Role.CURRENT in failed or contention):
        if if_match is not None:
            return PreconditionFailed(
                f"the {family.entity_type} changed since the version in If-Match"
            )
        return LostRace()
    if Role.ALT_KEY_PUT in failed:
        return duplicate()
    if replaces is not None:
        return LostRace()
    message, code = family.create_lost or (
        f"{family.entity_type} could not be created; retry",
        "update_conflict",
    )
    return Conflict(message, code=code)
