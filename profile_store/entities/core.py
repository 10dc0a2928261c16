"""The one read path and the one write path every entity family goes through.

A family module (profiles, addresses, purchase info, prospects) only says *what* is read or
written: which items (``Lookup``, ``Place``), which document, which extra attributes and
transaction entries (``Change``), in the values of ``family.py``. ``Core`` does the *how*, once:

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
  A failure leaves nothing half-written, and is mapped to its answer by the role of the entry
  that failed, never by its position (``transaction.py``). Later writes only ever *load* a
  subject's key, so a subject erased meanwhile answers 404 instead of getting a fresh key.

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
from typing import Any, TypeVar

from ..audit import AuditEvent, record
from ..crypto import DataKeyStore, EnvelopeCodec, SubjectErased, data_key_delete_item
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
from ..layout import Item, get_n, get_s, idempotency_key, is_live, key, n, s
from ..repository import Repository
from .custom_schema import CustomSchemas
from .family import Change, Family, Lookup, LostRace, Place, Revise
from .transaction import (
    Entry,
    Role,
    Transaction,
    alive_check,
    not_suppressed,
    record_put,
    refusal,
    versioned_puts,
)
from .values import Caller, Record, Reveal, meta, now_iso

T = TypeVar("T")


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
        replacement of exactly the version ``origin`` carries. A failure is answered by the role
        of the entry that failed (``transaction.py``)."""
        now = time.time()
        vid = str(uuid.uuid4())
        attrs = _attributes(caller, family, place, change, origin, version=vid)
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
        write = Transaction()
        put_current, put_version = versioned_puts(current, version, replaces=replaces)
        write.add(Role.CURRENT, put_current)
        write.add(Role.VERSION, put_version)
        if change.new_key is not None:
            write.add(Role.DATA_KEY, change.new_key.put)
        for entry in change.alt_keys:
            write.add(Role.ALT_KEY_PUT if "Put" in entry else Role.ALT_KEY_DELETE, entry)
        if place.profile_id is not None:
            write.add(Role.PROFILE_ALIVE, alive_check(place.pk, now))
        if change.email_hex:
            write.add(Role.NOT_SUPPRESSED, not_suppressed(caller.account, change.email_hex))
        if change.schema is not None:
            write.add(Role.SCHEMA_UNCHANGED, self.schemas.unchanged(caller.account, change.schema))
        if created is not None:
            write.add(Role.CREATE_RECORD, self._record_put(caller, created, now))
        try:
            await self.repo.transact(write.entries, intent=caller.write)
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
            failed = write.failed(exc)
            if created is not None and (Role.CREATE_RECORD in failed or exc.contention):
                # A concurrent request with the same Idempotency-Key won (or is writing):
                # answer its entity, or try again once it is done (``Core.create``).
                replayed = await self.replay(caller, family)
                if replayed is not None:
                    return replayed
                if exc.contention:
                    raise LostRace from None
            answer = refusal(
                failed, family, contention=exc.contention, replaces=replaces, if_match=if_match
            )
            if isinstance(answer, LostRace) and Role.SCHEMA_UNCHANGED in failed:
                # Another instance replaced the schema: validate again with the new one.
                self.schemas.forget(caller.account)
            raise answer from None
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

    def _record_put(self, caller: Caller, created: Created, now: float) -> Entry:
        assert caller.write is not None and caller.write.key_hash is not None
        return record_put(
            created, caller.account, caller.write.key_hash, now=now, ttl_s=self.idempotency_ttl_s
        )

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


def _attributes(
    caller: Caller,
    family: Family,
    place: Place,
    change: Change,
    origin: Item | None,
    *,
    version: str,
) -> dict[str, Any]:
    """The plaintext attributes of the current item and of its new version."""
    stamp = now_iso()
    attrs: dict[str, Any] = {"entityType": s(family.entity_type), "id": s(place.eid)}
    if place.profile_id is not None:
        attrs["profileId"] = s(place.profile_id)
    attrs["version"] = s(version)
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
    return attrs
