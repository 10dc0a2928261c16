"""The one read path and the one write path every entity family goes through.

A family module (profiles, addresses, purchase info, prospects) only says *what* is read or
written: which items (``Lookup``, ``Place``), which document, which extra attributes and
transaction entries (``Change``). ``Core`` does the *how*, once:

Read (``Core.read``): load → open → mask, or (with a ``Reveal``) audit then clear data.
  Loading is one GetItem; or, for a sub-resource or a version, one BatchGetItem together with
  the profile's CUR item, so nothing is served from a profile that is deleted or expired; or a
  Query of a prefix. An item whose ``expiresAt`` is in the past is never served (404), whether
  or not DynamoDB's TTL sweeper removed it yet. Documents are opened by
  ``crypto.EnvelopeCodec`` under the subject's data key. With a ``Reveal`` the audit record is
  written first: no audit, no data.

Write (``Core.commit``): validate (the family, before calling) → seal → ONE
  ``TransactWriteItems``: the new current item, a new immutable version item (uuid4, returned
  as ``meta.version``), the subject's new data key on a create, the family's alternative-key
  entries, a ConditionCheck that the owning profile is alive (sub-resources) and one that the
  email is not suppressed (``erasure.py`` writes a suppression entry when a subject is erased),
  and for profiles one that the custom schema is still the one the document was validated
  with (``custom_schema.py``: if not, the write is validated again and re-applied).
  A failure leaves nothing half-written, and is mapped to its answer by the entry's role, never
  by its position. Later writes only ever *load* a subject's key, so a subject erased meanwhile
  answers 404 instead of getting a fresh key.

Update (``Core.update``): a PATCH is a merge, so a lost race is not the client's problem. The
  current item is read, ``If-Match`` checked (412 ``version_mismatch``, never retried), the
  document opened and revised by the family, and committed conditionally on the version read;
  a lost race re-reads and re-applies, up to ``update_retries`` times with a small jittered
  backoff, then 409 ``update_conflict``. Inside one process, writers of the same item queue on
  a lock first, so only races between instances cost retries.

Remove (``Core.remove``): the current item (and, for a subject of its own, its data key, in
  the same transaction: copies in backups become unreadable), then its versions.

Every transaction carries the request's ``ClientRequestToken`` and is re-sent with it when
  DynamoDB's answer is lost (``Repository.transact``, ``idempotency.py``). A create
  (``Core.create``) with an ``Idempotency-Key`` first looks for the record of an earlier one
  (``Core.replay``: the entity as it was created; 422 for another body; 410 if deleted since)
  and writes its own record in its transaction; losing that record's condition to a concurrent
  twin answers the twin's entity.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..audit import AuditEvent, record
from ..crypto import (
    DataKeyStore,
    EnvelopeCodec,
    NewSubjectKey,
    SubjectErased,
    data_key_delete_item,
)
from ..errors import (
    AlreadyApplied,
    ConditionFailed,
    Conflict,
    Gone,
    NotFound,
    PreconditionFailed,
    Unprocessable,
)
from ..idempotency import Created
from ..layout import Item, get_n, get_s, idempotency_key, is_live, key, n, s, suppression_key
from ..repository import Repository
from ..schema import CustomSchema
from .custom_schema import CustomSchemas
from .values import Caller, Record, Reveal, duplicate, meta, now_iso, suppressed

T = TypeVar("T")

Masker = Callable[[dict[str, Any]], dict[str, Any]]
# Profiles mask by the account's custom schema, so a family's masker is asked per request,
# with the newest schema version the items read were written under (``schemaVersion``).
MaskSource = Callable[[Caller, int], Awaitable[Masker]]
Entry = dict[str, Any]  # one TransactWriteItems entry

_ALIVE = "attribute_exists(pk) AND (attribute_not_exists(expiresAt) OR expiresAt > :now)"


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


class Core:
    def __init__(
        self,
        repo: Repository,
        keys: DataKeyStore,
        schemas: CustomSchemas,
        *,
        update_retries: int,
        idempotency_ttl_s: int = 86400,
    ) -> None:
        self.repo = repo
        self.keys = keys
        self.schemas = schemas
        self.codec = EnvelopeCodec(keys)
        self.update_retries = update_retries
        self.idempotency_ttl_s = idempotency_ttl_s
        # Weak values: a lock lives only while some request holds or waits on it.
        self._item_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    # ---- read ---------------------------------------------------------------------------------

    async def read(
        self,
        caller: Caller,
        family: Family,
        lookup: Lookup,
        reveal: Reveal | None,
        *,
        subject: str | None,
        audit_as: tuple[str, str],
    ) -> list[Record]:
        """Load → open → mask, or audit and reveal. ``subject=None``: each item is a subject of
        its own (prospects), and one being erased right now is already gone from the list."""
        records = []
        items = await self.load(lookup, family.missing)
        for item in items:
            try:
                doc = await self.open(caller, subject or get_s(item, "id"), item)
            except SubjectErased:
                if subject is not None:
                    raise
                continue
            records.append(Record(get_s(item, "id"), doc, meta(item, style=family.style)))
        if reveal is None:
            stamp = max((get_n(i, "schemaVersion") or 0 for i in items), default=0)
            mask = await family.masker(caller, stamp)
            return [Record(r.id, mask(r.document), r.meta) for r in records]
        entity_type, entity_id = audit_as
        await record(
            self.repo,
            AuditEvent(
                principal=caller.principal,
                account=caller.account,
                entity_type=entity_type,
                entity_id=entity_id,
                action="unmask",
                reason=reveal.reason,
                request_id=caller.request_id,
                on_behalf_of=reveal.on_behalf_of,
            ),
        )
        return records

    async def load(self, lookup: Lookup, missing: str) -> list[Item]:
        pk = lookup.pk
        if lookup.sk:
            if lookup.under_profile:
                parent, item = await self.repo.get_many([key(pk, "CUR"), key(pk, lookup.sk)])
                found = is_live(item) if lookup.honour_expiry else item is not None
                found = found and is_live(parent)
            else:
                item = await self.repo.get(key(pk, lookup.sk))
                found = is_live(item)
            if not found:
                raise NotFound(missing)
            assert item is not None
            return [item]
        if lookup.under_profile and not is_live(await self.repo.get(key(pk, "CUR"))):
            raise NotFound("profile not found")
        now = time.time()
        return [i for i in await self.repo.query_prefix(pk, lookup.prefix) if is_live(i, now)]

    async def open(self, caller: Caller, subject: str, item: Item) -> dict[str, Any]:
        return await self.codec.open(
            account=caller.account, subject_id=subject, entity_id=get_s(item, "sk"), item=item
        )

    # ---- write --------------------------------------------------------------------------------

    async def commit(
        self,
        caller: Caller,
        family: Family,
        place: Place,
        change: Change,
        *,
        origin: Item | None = None,
        if_match: str | None = None,
    ) -> Record:
        """Seal and write ``change`` as one transaction: a create (``origin`` None) or the
        replacement of exactly the version ``origin`` carries."""
        stamp, now = now_iso(), time.time()
        vid = str(uuid.uuid4())
        attrs: dict[str, Any] = {"entityType": s(family.entity_type), "id": s(place.eid)}
        if place.profile_id is not None:
            attrs["profileId"] = s(place.profile_id)
        attrs["version"] = s(vid)
        if origin is None:
            attrs.update(author=s(caller.principal), createdAt=s(stamp))
        else:
            attrs.update(author=s(get_s(origin, "author")), createdAt=s(get_s(origin, "createdAt")))
            if "expiresAt" in origin:  # an update keeps the expiry unless the family sets one
                attrs["expiresAt"] = origin["expiresAt"]
        attrs["updatedAt"] = s(stamp)
        attrs.update(change.attrs)
        if change.schema is not None and change.schema.version:
            attrs["schemaVersion"] = n(change.schema.version)
        created: Created | None = None
        if origin is None and caller.write is not None and caller.write.key_hash is not None:
            created = Created(
                pk=place.pk,
                current_sk=place.current_sk,
                version_sk=f"{place.version_prefix}{vid}",
                subject=place.subject,
                eid=place.eid,
                under_profile=place.profile_id is not None,
                digest=caller.write.request_digest(),
            )
            attrs["idemHash"] = s(caller.write.key_hash)  # erasure finds the record by it
        current = await self._sealed(caller, place, place.current_sk, attrs, change)
        version = await self._sealed(caller, place, f"{place.version_prefix}{vid}", attrs, change)
        replaces = None if origin is None else get_s(origin, "version")
        entries = _versioned_puts(current, version, replaces=replaces)
        if change.new_key is not None:
            entries.append(change.new_key.put)
        alt_puts: set[int] = set()
        for entry in change.alt_keys:
            if "Put" in entry:
                alt_puts.add(len(entries))
            entries.append(entry)
        alive_at = suppressed_at = -1
        if place.profile_id is not None:
            alive_at = len(entries)
            entries.append(_alive_check(place.pk, now))
        if change.email_hex:
            suppressed_at = len(entries)
            entries.append(self.not_suppressed(caller, change.email_hex))
        schema_at = -1
        if change.schema is not None:
            schema_at = len(entries)
            entries.append(self.schemas.unchanged(caller.account, change.schema))
        record_at = -1
        if created is not None:
            record_at = len(entries)
            entries.append(self._record_put(caller, created, now))
        try:
            await self.repo.transact(entries, intent=caller.write)
        except AlreadyApplied:
            if created is None:
                raise
            # This request's token was used by a twin (an earlier send of this request) that
            # landed: answer its entity; still being applied: look again (``Core.create``).
            replayed = await self.replay(caller, family)
            if replayed is None:
                raise LostRace from None
            return replayed
        except ConditionFailed as exc:
            failed = set(exc.indexes)
            if created is not None and (record_at in failed or exc.contention):
                # A concurrent request with the same Idempotency-Key won (or is writing):
                # answer its entity, or try again once it is done (``Core.create``).
                replayed = await self.replay(caller, family)
                if replayed is not None:
                    return replayed
                if exc.contention:
                    raise LostRace from None
            if alive_at in failed:
                raise NotFound("profile not found") from None
            if suppressed_at in failed:
                raise suppressed() from None
            if schema_at in failed:
                # Another instance replaced the schema: validate again with the new one.
                self.schemas.forget(caller.account)
                raise LostRace from None
            if replaces is not None and (0 in failed or exc.contention):
                if if_match is not None:
                    raise PreconditionFailed(
                        f"the {family.entity_type} changed since the version in If-Match"
                    ) from None
                raise LostRace from None
            if alt_puts & failed:
                raise duplicate() from None
            if replaces is not None:
                raise LostRace from None
            message, code = family.create_lost or (
                f"{family.entity_type} could not be created; retry",
                "update_conflict",
            )
            raise Conflict(message, code=code) from None
        if change.new_key is not None:
            self.keys.remember(change.new_key)
        return Record(place.eid, change.doc, meta(current, style=family.style))

    async def create(
        self, caller: Caller, family: Family, item: str, attempt: Callable[[], Awaitable[Record]]
    ) -> Record:
        """A create: the answer of an earlier one with this Idempotency-Key, or ``attempt``
        (re-run on a lost race). Requests with one key queue on one lock in this process."""
        if caller.write is not None and caller.write.key_hash is not None:
            item = f"IDEM|{caller.account}|{caller.write.key_hash}"

        async def once() -> Record:
            replayed = await self.replay(caller, family)
            return replayed if replayed is not None else await attempt()

        return await self.retrying(item, once)

    async def replay(self, caller: Caller, family: Family) -> Record | None:
        """The entity an earlier create with this request's Idempotency-Key created, as it was
        created (its first version); None if there is no such create (or no key)."""
        intent = caller.write
        if intent is None or intent.key_hash is None:
            return None
        item = await self.repo.get(idempotency_key(caller.account, intent.key_hash))
        if not is_live(item):
            return None
        assert item is not None
        created = Created.from_item(item)
        if created.digest != intent.request_digest():
            raise Unprocessable(
                "this Idempotency-Key was already used for a create with another body; "
                "send a new key for a new create"
            )
        keys = [key(created.pk, created.current_sk), key(created.pk, created.version_sk)]
        if created.under_profile:
            keys.append(key(created.pk, "CUR"))
        found = await self.repo.get_many(keys)
        version = found[1]
        gone = Gone(f"the {family.entity_type} created with this Idempotency-Key was deleted since")
        if version is None or not all(is_live(i) for i in (found[0], *found[2:])):
            raise gone
        try:
            doc = await self.open(caller, created.subject, version)
        except SubjectErased:
            raise gone from None
        return Record(created.eid, doc, meta(version, style=family.style))

    async def update(
        self,
        caller: Caller,
        family: Family,
        place: Place,
        if_match: str | None,
        revise: Revise,
    ) -> Record:
        """Read the current item, check If-Match, open, let the family revise, commit; a lost
        race re-reads and re-applies."""

        async def attempt() -> Record:
            [item] = await self.load(place.lookup(), family.missing)
            if if_match is not None and if_match != get_s(item, "version"):
                raise PreconditionFailed(
                    f"the {family.entity_type}'s current version is not the one in If-Match"
                )
            change = await revise(item, await self.open(caller, place.subject, item))
            return await self.commit(caller, family, place, change, origin=item, if_match=if_match)

        return await self.retrying(f"{place.pk}|{place.current_sk}", attempt)

    async def retrying(self, item: str, attempt: Callable[[], Awaitable[T]]) -> T:
        # Writers of one item inside this process queue on a lock instead of racing: each
        # lost race costs a re-read and a wasted transaction, so N concurrent PATCHes would
        # cost O(N^2) DynamoDB calls. Races with other instances remain, and are settled by
        # the conditional write and the bounded retry below.
        lock = self._item_locks.get(item)
        if lock is None:
            lock = self._item_locks[item] = asyncio.Lock()
        async with lock:
            for n_try in range(self.update_retries + 1):
                try:
                    return await attempt()
                except LostRace:
                    if n_try >= self.update_retries:
                        break
                    # Jittered, capped backoff: spreads racing writers without adding latency.
                    await asyncio.sleep(random.uniform(0, min(0.05, 0.002 * 2**n_try)))
        raise Conflict(
            "the item kept changing while this update was applied; retry the request",
            code="update_conflict",
        )

    async def remove(
        self, caller: Caller, family: Family, place: Place, *, shred: bool = False
    ) -> None:
        """Delete the current item (with ``shred``, the subject's data key too, atomically),
        then its versions."""
        pk = place.pk
        if place.profile_id is not None and not is_live(await self.repo.get(key(pk, "CUR"))):
            raise NotFound("profile not found")
        versions = await self.repo.query_prefix(pk, place.version_prefix)
        if await self.repo.get(key(pk, place.current_sk)) is None:
            raise NotFound(family.missing)
        writes: list[Entry] = [
            {
                "Delete": {
                    "Key": key(pk, place.current_sk),
                    "ConditionExpression": "attribute_exists(pk)",
                }
            }
        ]
        if shred:
            writes.append(self.shred(caller, place.subject))
        try:
            await self.repo.transact(writes, intent=caller.write)
        except ConditionFailed:
            raise NotFound(family.missing) from None
        if shred:
            self.keys.evict(caller.account, place.subject)
        await self.repo.delete_keys(key(pk, get_s(i, "sk")) for i in versions)

    # ---- transaction entries ------------------------------------------------------------------

    def not_suppressed(self, caller: Caller, email_hex: str) -> Entry:
        """The email was not erased (no suppression entry for its hash)."""
        return {
            "ConditionCheck": {
                "Key": suppression_key(caller.account, email_hex),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }

    def _record_put(self, caller: Caller, created: Created, now: float) -> Entry:
        """The create's Idempotency-Key record: new, or replacing one past its expiry."""
        assert caller.write is not None and caller.write.key_hash is not None
        item = created.item(
            caller.account, caller.write.key_hash, now=int(now), ttl_s=self.idempotency_ttl_s
        )
        return {
            "Put": {
                "Item": item,
                "ConditionExpression": "attribute_not_exists(pk) OR expiresAt < :now",
                "ExpressionAttributeValues": {":now": n(int(now))},
            }
        }

    def shred(self, caller: Caller, subject: str) -> Entry:
        """Delete the subject's data key; ``keys.evict`` after commit."""
        return data_key_delete_item(
            table=self.repo.table, account=caller.account, subject_id=subject
        )

    async def _sealed(
        self, caller: Caller, place: Place, sk: str, attrs: dict[str, Any], change: Change
    ) -> Item:
        # Without a new key the subject must have one: an erased subject gets no fresh key.
        sealed = await self.codec.seal(
            account=caller.account,
            subject_id=place.subject,
            entity_id=sk,
            doc=change.doc,
            new_key=change.new_key,
            create=False,
        )
        return {**key(place.pk, sk), **attrs, **sealed}


def _alive_check(pk: str, now: float) -> Entry:
    return {
        "ConditionCheck": {
            "Key": key(pk, "CUR"),
            "ConditionExpression": _ALIVE,
            "ExpressionAttributeValues": {":now": n(int(now))},
        }
    }


def _versioned_puts(current: Item, version: Item, *, replaces: str | None) -> list[Entry]:
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
