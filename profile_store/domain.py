"""Profile System rules, free of HTTP: validation, merges, versions, TTL, masking, unmask audit.

Handlers parse a request into plain values and call one method of ``ProfileService``; it
validates *everything* before the first write (so bad input stores nothing), talks to DynamoDB
only through ``Repository`` and documents only through the codec, and returns ``Record``s.

Writes and versions. Every create or update is ONE ``TransactWriteItems``: the new current item,
a new immutable version item (uuid4, returned as ``meta.version``) and, for profiles, the
alternative-key items (put new, delete replaced), so a failure leaves nothing half-written.
Sub-resources (addresses, purchase info) add a ConditionCheck that the profile is alive.

Concurrency. Updates are conditional on the current item's ``version``. A PATCH is a merge, so a
lost race is not the client's problem: the service re-reads the current item and re-applies the
same patch, up to ``settings.update_retries`` times with a small jittered backoff; when that is
exhausted the answer is 409 ``update_conflict``. Inside one process, writers of the same item
queue on a lock first, so only races between instances cost retries. A client that wants
strict optimistic locking sends ``If-Match: <version>``: a different current version answers
412 ``version_mismatch`` and is never retried.

Reads. A profile GET by id is one GetItem (CUR). By alternative key it is two: the key item,
then CUR. Sub-resources and versions are read with one BatchGetItem together with the profile's
CUR item, so nothing is served from a profile that is deleted or expired. An item whose
``expiresAt`` is in the past is never served (404), whether or not DynamoDB's TTL sweeper has
removed it yet.

TTL. ``ttl`` (days) on profile create/update sets ``expiresAt``; without it the account's
custom schema ``documentTTL`` applies; without either a create never expires and an update keeps
the current expiry. Alternative-key items carry the profile's expiry so a swept profile frees
its email and document.

Masking. Reads are masked unless the caller reveals with an ``Reveal`` (the /unmask routes),
which first writes the audit record: no audit, no data.

Encryption. Every document is sealed by ``crypto.EnvelopeCodec`` under its subject's data key
(the profile id for everything in a profile partition, the prospect id for a prospect). A create
makes the subject's key with ``DataKeyStore.prepare_new`` and puts it in the same transaction;
later writes only ever *load* the key, so a subject erased meanwhile answers 404 instead of
getting a fresh key. Deleting a profile or a prospect deletes its key in the same transaction
(crypto-shredding: copies in backups become unreadable).

Suppression. Writes that set an email (profile create/update, prospect create/update) carry a
``ConditionCheck`` that no suppression entry exists for the email's salted hash (``erasure.py``
writes one when the subject is erased): a refused write answers 409 ``subject_suppressed``.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from . import contract, masking
from .altkeys import KINDS, Kind, digest
from .audit import AuditEvent, record
from .crypto import (
    DataKeyStore,
    EnvelopeCodec,
    NewSubjectKey,
    SubjectErased,
    data_key_delete_item,
)
from .errors import (
    BadRequest,
    ConditionFailed,
    Conflict,
    NotFound,
    PreconditionFailed,
    SubjectSuppressed,
)
from .repository import (
    Item,
    Repository,
    alt_key,
    get_n,
    get_s,
    is_live,
    key,
    n,
    profile_pk,
    prospects_pk,
    s,
    suppression_key,
)
from .schema import (
    MAX_TTL_DAYS,
    CustomSchema,
    SchemaError,
    check_profile_fields,
    custom_view,
    full_view,
    parse_custom,
)

T = TypeVar("T")

_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_ALIVE = "attribute_exists(pk) AND (attribute_not_exists(expiresAt) OR expiresAt > :now)"


@dataclass(frozen=True, slots=True)
class Caller:
    account: str
    principal: str
    request_id: str


@dataclass(frozen=True, slots=True)
class Reveal:
    """Permission to return clear data: the audit record is written before the data leaves."""

    reason: str
    on_behalf_of: str | None = None


@dataclass(frozen=True, slots=True)
class Record:
    id: str
    document: dict[str, Any]
    meta: dict[str, Any]

    def body(self) -> dict[str, Any]:
        return {"id": self.id, "document": self.document, "meta": self.meta}


class _LostRace(Exception):
    """The conditional write lost to a concurrent one: re-read and re-apply."""


# ---- pure helpers ---------------------------------------------------------------------------


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def parse_ttl(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit() or not 0 < int(raw) <= MAX_TTL_DAYS:
        raise BadRequest(
            f"ttl must be a whole number of days between 1 and {MAX_TTL_DAYS}", code="invalid_ttl"
        )
    return int(raw)


def expiry(
    ttl_days: int | None, schema: CustomSchema, current: int | None, now: float
) -> int | None:
    days = ttl_days if ttl_days is not None else schema.document_ttl_days
    if days is None:
        return current
    return int(now) + days * 86400


def _iso_from_epoch(epoch: int | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def _require_object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(f"the {what} body must be a JSON object", code="invalid_body")
    return body


def _invalid(message: str) -> BadRequest:
    return BadRequest(message, code="invalid_field")


def _conform(entity: str, doc: dict[str, Any], *, partial: bool = False) -> None:
    try:
        contract.check(entity, doc, partial=partial)
    except contract.ContractViolation as exc:
        raise _invalid(str(exc)) from None


def _custom_fields(doc: dict[str, Any], schema: CustomSchema) -> None:
    try:
        check_profile_fields(doc, schema)
    except SchemaError as exc:
        raise _invalid(str(exc)) from None


def validate_profile(doc: dict[str, Any], schema: CustomSchema) -> None:
    """A complete profile per the spec's schema, email/document non-empty, custom fields typed."""
    _conform("profile", doc)
    for name in ("email", "document"):
        if not doc[name].strip():
            raise _invalid(f"field {name!r} must not be empty")
    _custom_fields(doc, schema)


def validate_profile_patch(patch: dict[str, Any], schema: CustomSchema) -> None:
    _conform("profile", patch, partial=True)
    _custom_fields(patch, schema)


def validate_address(doc: dict[str, Any], *, partial: bool) -> None:
    _conform("address", doc, partial=partial)


def validate_prospect(doc: dict[str, Any]) -> None:
    _conform("prospect", doc)


def validate_purchase_info(doc: dict[str, Any]) -> None:
    _conform("purchase_info", doc)


def _alt_hash(salt: bytes, kind: Kind, doc: dict[str, Any]) -> str | None:
    value = doc.get(kind)
    if not isinstance(value, str) or not value.strip():
        return None
    return digest(salt, kind, value)


def _hash_attrs(salt: bytes, doc: dict[str, Any]) -> dict[str, Any]:
    """The profile's alternative-key hashes, kept on its items so an erasure can find every
    alternative-key item even after the subject's key (and so its document) is gone."""
    attrs = {}
    for kind in KINDS:
        hex_digest = _alt_hash(salt, kind, doc)
        if hex_digest:
            attrs[f"{kind}Hash"] = s(hex_digest)
    return attrs


def _suppressed() -> SubjectSuppressed:
    return SubjectSuppressed(
        "this email belongs to an erased data subject; an operator must lift the suppression "
        "before it can be stored again"
    )


def _meta(item: Item, *, style: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "version": get_s(item, "version"),
        "author": get_s(item, "author"),
        "creationDate": get_s(item, "createdAt"),
    }
    if style == "profile":
        meta["lastUpdate"] = get_s(item, "updatedAt")
    else:
        meta["lastUpdateDate"] = get_s(item, "updatedAt")
    if style == "expiring":
        meta["expirationDate"] = _iso_from_epoch(get_n(item, "expiresAt"))
    return meta


def _versioned_puts(
    current: Item, version: Item, *, replaces: str | None = None
) -> list[dict[str, Any]]:
    """The two writes of every create/update: the current item (new, or replacing exactly the
    version that was read, so a concurrent writer makes this transaction fail) and its
    immutable version."""
    if replaces is None:
        put: dict[str, Any] = {"Item": current, "ConditionExpression": "attribute_not_exists(pk)"}
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


class ProfileService:
    def __init__(self, repo: Repository, keys: DataKeyStore, *, update_retries: int) -> None:
        self.repo = repo
        self.keys = keys
        self.codec = EnvelopeCodec(keys)
        self.update_retries = update_retries
        # Weak values: a lock lives only while some request holds or waits on it.
        self._item_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    # ---- shared machinery -------------------------------------------------------------------

    async def _retrying(self, item: str, attempt: Callable[[], Awaitable[T]]) -> T:
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
                except _LostRace:
                    if n_try >= self.update_retries:
                        break
                    # Jittered, capped backoff: spreads racing writers without adding latency.
                    await asyncio.sleep(random.uniform(0, min(0.05, 0.002 * 2**n_try)))
        raise Conflict(
            "the item kept changing while this update was applied; retry the request",
            code="update_conflict",
        )

    async def _seal(
        self,
        caller: Caller,
        subject: str,
        sk: str,
        doc: dict[str, Any],
        new_key: NewSubjectKey | None,
    ) -> dict[str, Any]:
        # Without a new key the subject must have one: an erased subject gets no fresh key.
        return await self.codec.seal(
            account=caller.account,
            subject_id=subject,
            entity_id=sk,
            doc=doc,
            new_key=new_key,
            create=False,
        )

    async def _open(self, caller: Caller, subject: str, item: Item) -> dict[str, Any]:
        return await self.codec.open(
            account=caller.account, subject_id=subject, entity_id=get_s(item, "sk"), item=item
        )

    async def _items(
        self,
        caller: Caller,
        *,
        pk: str,
        subject: str,
        current_sk: str,
        version_sk: str,
        attrs: dict[str, Any],
        doc: dict[str, Any],
        new_key: NewSubjectKey | None = None,
    ) -> tuple[Item, Item]:
        """The current item and its immutable version, each sealed under its own sort key."""
        current = {
            **key(pk, current_sk),
            **attrs,
            **await self._seal(caller, subject, current_sk, doc, new_key),
        }
        version = {
            **key(pk, version_sk),
            **attrs,
            **await self._seal(caller, subject, version_sk, doc, new_key),
        }
        return current, version

    def _not_suppressed(self, caller: Caller, email_hex: str) -> dict[str, Any]:
        """Transaction entry: the email was not erased (no suppression entry for its hash)."""
        return {
            "ConditionCheck": {
                "Key": suppression_key(caller.account, email_hex),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }

    def _shred(self, caller: Caller, subject: str) -> dict[str, Any]:
        """Transaction entry deleting the subject's data key; ``keys.evict`` after commit."""
        return data_key_delete_item(
            table=self.repo.table, account=caller.account, subject_id=subject
        )

    async def _reveal_or_mask(
        self,
        caller: Caller,
        records: list[Record],
        reveal: Reveal | None,
        *,
        entity_type: str,
        entity_id: str,
        mask: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> list[Record]:
        if reveal is None:
            return [Record(r.id, mask(r.document), r.meta) for r in records]
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

    async def _profile_mask(self, caller: Caller) -> Callable[[dict[str, Any]], dict[str, Any]]:
        schema = await self.repo.custom_schema(caller.account)
        pii = schema.pii_fields
        return lambda doc: masking.mask_profile(doc, pii)

    # ---- profiles ---------------------------------------------------------------------------

    async def resolve(self, caller: Caller, ref: str, kind: Kind | None) -> str:
        """Profile id from a path segment, itself an id or (with alternativeKey) an email or a
        document. Never echo ``ref`` in an error: with an alternative key it is PII."""
        if kind is None:
            if not _ID.match(ref):
                raise NotFound("profile not found")
            return ref
        salt = await self.repo.salt(caller.account, create=False)
        if salt is None:
            raise NotFound("profile not found")
        item = await self.repo.get(alt_key(caller.account, kind, digest(salt, kind, ref)))
        if not is_live(item):
            raise NotFound("profile not found")
        assert item is not None
        return get_s(item, "profileId")

    def _profile_attrs(
        self, pid: str, vid: str, author: str, created: str, updated: str, expires: int | None
    ) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "entityType": s("profile"),
            "id": s(pid),
            "version": s(vid),
            "author": s(author),
            "createdAt": s(created),
            "updatedAt": s(updated),
        }
        if expires is not None:
            attrs["expiresAt"] = n(expires)
        return attrs

    def _alt_put(
        self, caller: Caller, kind: Kind, hex_digest: str, pid: str, expires: int | None, now: int
    ) -> dict[str, Any]:
        item: Item = {**alt_key(caller.account, kind, hex_digest), "profileId": s(pid)}
        if expires is not None:
            item["expiresAt"] = n(expires)
        return {
            "Put": {
                "Item": item,
                # Free, ours already, or left behind by an expired profile not yet swept.
                "ConditionExpression": (
                    "attribute_not_exists(pk) OR profileId = :pid OR expiresAt < :now"
                ),
                "ExpressionAttributeValues": {":pid": s(pid), ":now": n(now)},
            }
        }

    def _alt_delete(self, caller: Caller, kind: Kind, hex_digest: str, pid: str) -> dict[str, Any]:
        return {
            "Delete": {
                "Key": alt_key(caller.account, kind, hex_digest),
                "ConditionExpression": "attribute_not_exists(pk) OR profileId = :pid",
                "ExpressionAttributeValues": {":pid": s(pid)},
            }
        }

    async def create_profile(self, caller: Caller, body: Any, ttl_days: int | None) -> Record:
        doc = _require_object(body, "profile")
        schema = await self.repo.custom_schema(caller.account)
        validate_profile(doc, schema)
        salt = await self.repo.salt(caller.account, create=True)
        assert salt is not None
        now = time.time()
        pid, vid, stamp = str(uuid.uuid4()), str(uuid.uuid4()), now_iso()
        expires = expiry(ttl_days, schema, None, now)
        attrs = self._profile_attrs(pid, vid, caller.principal, stamp, stamp, expires)
        attrs.update(_hash_attrs(salt, doc))
        pk = profile_pk(caller.account, pid)
        new_key = await self.keys.prepare_new(caller.account, pid)
        current, version = await self._items(
            caller,
            pk=pk,
            subject=pid,
            current_sk="CUR",
            version_sk=f"V#{vid}",
            attrs=attrs,
            doc=doc,
            new_key=new_key,
        )
        # One transaction: current, version, the subject's new data key, the alternative keys
        # and the check that the email is not suppressed.
        items: list[dict[str, Any]] = [
            *_versioned_puts(current, version),
            new_key.put,
        ]
        alt_puts: set[int] = set()
        for kind in KINDS:
            hex_digest = _alt_hash(salt, kind, doc)
            if hex_digest:
                alt_puts.add(len(items))
                items.append(self._alt_put(caller, kind, hex_digest, pid, expires, int(now)))
        suppressed_at = len(items)
        items.append(self._not_suppressed(caller, digest(salt, "email", doc["email"])))
        try:
            await self.repo.transact(items)
        except ConditionFailed as exc:
            if suppressed_at in exc.indexes:
                raise _suppressed() from None
            if alt_puts & set(exc.indexes):
                raise _duplicate() from None
            raise Conflict("profile could not be created; retry", code="update_conflict") from None
        self.keys.remember(new_key)
        return Record(pid, doc, _meta(current, style="profile"))

    async def get_profile(
        self, caller: Caller, ref: str, kind: Kind | None, reveal: Reveal | None
    ) -> list[Record]:
        pid = await self.resolve(caller, ref, kind)
        item = await self.repo.get(key(profile_pk(caller.account, pid), "CUR"))
        if not is_live(item):
            raise NotFound("profile not found")
        assert item is not None
        doc = await self._open(caller, pid, item)
        records = [Record(pid, doc, _meta(item, style="profile"))]
        return await self._reveal_or_mask(
            caller,
            records,
            reveal,
            entity_type="profile",
            entity_id=pid,
            mask=await self._profile_mask(caller),
        )

    async def get_profile_version(
        self, caller: Caller, ref: str, kind: Kind | None, vid: str, reveal: Reveal | None
    ) -> list[Record]:
        pid = await self.resolve(caller, ref, kind)
        if not _ID.match(vid):
            raise NotFound("profile version not found")
        pk = profile_pk(caller.account, pid)
        current, item = await self.repo.get_many([key(pk, "CUR"), key(pk, f"V#{vid}")])
        if not is_live(current) or item is None:
            raise NotFound("profile version not found")
        doc = await self._open(caller, pid, item)
        records = [Record(pid, doc, _meta(item, style="profile"))]
        return await self._reveal_or_mask(
            caller,
            records,
            reveal,
            entity_type="profileVersion",
            entity_id=f"{pid}/{vid}",
            mask=await self._profile_mask(caller),
        )

    async def update_profile(
        self,
        caller: Caller,
        ref: str,
        kind: Kind | None,
        body: Any,
        ttl_days: int | None,
        if_match: str | None,
    ) -> Record:
        patch = _require_object(body, "profile")
        schema = await self.repo.custom_schema(caller.account)
        validate_profile_patch(patch, schema)
        pid = await self.resolve(caller, ref, kind)
        salt = await self.repo.salt(caller.account, create=True)
        assert salt is not None
        pk = profile_pk(caller.account, pid)

        async def attempt() -> Record:
            current = await self.repo.get(key(pk, "CUR"))
            if not is_live(current):
                raise NotFound("profile not found")
            assert current is not None
            old_version = get_s(current, "version")
            if if_match is not None and if_match != old_version:
                raise PreconditionFailed("the profile's current version is not the one in If-Match")
            old_doc = await self._open(caller, pid, current)
            doc = {**old_doc, **patch}
            validate_profile(doc, schema)
            now = time.time()
            old_expires = get_n(current, "expiresAt")
            expires = expiry(ttl_days, schema, old_expires, now)
            vid = str(uuid.uuid4())
            attrs = self._profile_attrs(
                pid, vid, get_s(current, "author"), get_s(current, "createdAt"), now_iso(), expires
            )
            attrs.update(_hash_attrs(salt, doc))
            new_current, version = await self._items(
                caller,
                pk=pk,
                subject=pid,
                current_sk="CUR",
                version_sk=f"V#{vid}",
                attrs=attrs,
                doc=doc,
            )
            items = _versioned_puts(new_current, version, replaces=old_version)
            alt_puts: set[int] = set()
            for alt_kind in KINDS:
                old_hash, new_hash = (
                    _alt_hash(salt, alt_kind, old_doc),
                    _alt_hash(salt, alt_kind, doc),
                )
                if new_hash and (new_hash != old_hash or expires != old_expires):
                    alt_puts.add(len(items))
                    items.append(self._alt_put(caller, alt_kind, new_hash, pid, expires, int(now)))
                if old_hash and old_hash != new_hash:
                    items.append(self._alt_delete(caller, alt_kind, old_hash, pid))
            suppressed_at = len(items)
            items.append(self._not_suppressed(caller, digest(salt, "email", doc["email"])))
            try:
                await self.repo.transact(items)
            except ConditionFailed as exc:
                if suppressed_at in exc.indexes:
                    raise _suppressed() from None
                if 0 in exc.indexes or exc.contention:
                    if if_match is not None:
                        raise PreconditionFailed(
                            "the profile changed since the version in If-Match"
                        ) from None
                    raise _LostRace from None
                if alt_puts & set(exc.indexes):
                    raise _duplicate() from None
                raise _LostRace from None
            return Record(pid, doc, _meta(new_current, style="profile"))

        return await self._retrying(f"{pk}|CUR", attempt)

    async def delete_profile(self, caller: Caller, ref: str, kind: Kind | None) -> None:
        pid = await self.resolve(caller, ref, kind)
        pk = profile_pk(caller.account, pid)
        salt = await self.repo.salt(caller.account, create=False)

        async def attempt() -> list[Item]:
            items = await self.repo.query_prefix(pk)
            current = next((i for i in items if get_s(i, "sk") == "CUR"), None)
            if not is_live(current):
                if items:  # expired or half-deleted earlier: finish the cleanup, still 404
                    await self.keys.delete(caller.account, pid)
                    await self.repo.delete_keys(key(pk, get_s(i, "sk")) for i in items)
                raise NotFound("profile not found")
            assert current is not None
            doc = await self._open(caller, pid, current)
            writes: list[dict[str, Any]] = [
                {
                    "Delete": {
                        "Key": key(pk, "CUR"),
                        "ConditionExpression": "version = :v",
                        "ExpressionAttributeValues": {":v": s(get_s(current, "version"))},
                    }
                },
                # The data key goes with the profile: copies in backups become unreadable.
                self._shred(caller, pid),
            ]
            for alt_kind in KINDS:
                hex_digest = _alt_hash(salt, alt_kind, doc) if salt else None
                if hex_digest:
                    writes.append(self._alt_delete(caller, alt_kind, hex_digest, pid))
            try:
                await self.repo.transact(writes)
            except ConditionFailed:
                raise _LostRace from None
            self.keys.evict(caller.account, pid)
            return [i for i in items if get_s(i, "sk") != "CUR"]

        rest = await self._retrying(f"{pk}|CUR", attempt)
        # The profile is gone atomically above; versions and sub-resources are unreachable
        # without it and are removed now (a failure here is finished by a later DELETE).
        await self.repo.delete_keys(key(pk, get_s(i, "sk")) for i in rest)

    # ---- addresses --------------------------------------------------------------------------

    def _alive_check(self, pk: str, now: float) -> dict[str, Any]:
        return {
            "ConditionCheck": {
                "Key": key(pk, "CUR"),
                "ConditionExpression": _ALIVE,
                "ExpressionAttributeValues": {":now": n(int(now))},
            }
        }

    def _child_attrs(
        self, entity: str, eid: str, pid: str, vid: str, author: str, created: str, updated: str
    ) -> dict[str, Any]:
        return {
            "entityType": s(entity),
            "id": s(eid),
            "profileId": s(pid),
            "version": s(vid),
            "author": s(author),
            "createdAt": s(created),
            "updatedAt": s(updated),
        }

    async def create_address(
        self, caller: Caller, ref: str, kind: Kind | None, body: Any
    ) -> Record:
        doc = dict(_require_object(body, "address"))
        validate_address(doc, partial=False)
        pid = await self.resolve(caller, ref, kind)
        doc["profileId"] = pid
        aid = str(uuid.uuid4())
        current = await self._create_child(
            caller,
            pid,
            doc,
            kind="address",
            child_id=aid,
            current_sk=f"ADDR#{aid}",
            version_prefix=f"ADDRV#{aid}#",
            conflict=Conflict("address could not be created; retry", code="update_conflict"),
        )
        return Record(aid, doc, _meta(current, style="address"))

    async def _create_child(
        self,
        caller: Caller,
        pid: str,
        doc: dict[str, Any],
        *,
        kind: str,
        child_id: str,
        current_sk: str,
        version_prefix: str,
        conflict: Conflict,
    ) -> Item:
        """Create a sub-resource (address, purchase info) under a live profile, as one
        transaction: profile-alive check + current item + its first immutable version."""
        vid, stamp, now = str(uuid.uuid4()), now_iso(), time.time()
        pk = profile_pk(caller.account, pid)
        attrs = self._child_attrs(kind, child_id, pid, vid, caller.principal, stamp, stamp)
        current, version = await self._items(
            caller,
            pk=pk,
            subject=pid,
            current_sk=current_sk,
            version_sk=f"{version_prefix}{vid}",
            attrs=attrs,
            doc=doc,
        )
        try:
            await self.repo.transact(
                [
                    self._alive_check(pk, now),
                    *_versioned_puts(current, version),
                ]
            )
        except ConditionFailed as exc:
            if 0 in exc.indexes:
                raise NotFound("profile not found") from None
            raise conflict from None
        return current

    async def list_addresses(
        self, caller: Caller, ref: str, kind: Kind | None, reveal: Reveal | None
    ) -> list[Record]:
        pid = await self.resolve(caller, ref, kind)
        pk = profile_pk(caller.account, pid)
        if not is_live(await self.repo.get(key(pk, "CUR"))):
            raise NotFound("profile not found")
        records = []
        for item in await self.repo.query_prefix(pk, "ADDR#"):
            doc = await self._open(caller, pid, item)
            records.append(Record(get_s(item, "id"), doc, _meta(item, style="address")))
        return await self._reveal_or_mask(
            caller,
            records,
            reveal,
            entity_type="addresses",
            entity_id=pid,
            mask=masking.mask_address,
        )

    async def _child(
        self, caller: Caller, pid: str, sk: str, missing: str
    ) -> tuple[Item, dict[str, Any]]:
        pk = profile_pk(caller.account, pid)
        current, item = await self.repo.get_many([key(pk, "CUR"), key(pk, sk)])
        if not is_live(current) or not is_live(item):
            raise NotFound(missing)
        assert item is not None
        return item, await self._open(caller, pid, item)

    async def get_address(
        self,
        caller: Caller,
        ref: str,
        kind: Kind | None,
        aid: str,
        reveal: Reveal | None,
        vid: str | None = None,
    ) -> Record:
        pid = await self.resolve(caller, ref, kind)
        if not _ID.match(aid) or (vid is not None and not _ID.match(vid)):
            raise NotFound("address not found")
        sk = f"ADDR#{aid}" if vid is None else f"ADDRV#{aid}#{vid}"
        item, doc = await self._child(caller, pid, sk, "address not found")
        records = [Record(aid, doc, _meta(item, style="address"))]
        shown = await self._reveal_or_mask(
            caller,
            records,
            reveal,
            entity_type="address",
            entity_id=aid,
            mask=masking.mask_address,
        )
        return shown[0]

    async def update_address(
        self,
        caller: Caller,
        ref: str,
        kind: Kind | None,
        aid: str,
        body: Any,
        if_match: str | None,
    ) -> Record:
        patch = dict(_require_object(body, "address"))
        patch.pop("profileId", None)
        validate_address(patch, partial=True)
        pid = await self.resolve(caller, ref, kind)
        if not _ID.match(aid):
            raise NotFound("address not found")
        pk = profile_pk(caller.account, pid)

        async def attempt() -> Record:
            item, old_doc = await self._child(caller, pid, f"ADDR#{aid}", "address not found")
            return await self._replace_child(
                caller,
                pk,
                pid,
                item,
                {**old_doc, **patch},
                if_match,
                entity="address",
                eid=aid,
                current_sk=f"ADDR#{aid}",
                version_prefix=f"ADDRV#{aid}#",
                style="address",
            )

        return await self._retrying(f"{pk}|ADDR#{aid}", attempt)

    async def _replace_child(
        self,
        caller: Caller,
        pk: str,
        subject: str,
        item: Item,
        doc: dict[str, Any],
        if_match: str | None,
        *,
        entity: str,
        eid: str,
        current_sk: str,
        version_prefix: str,
        style: str,
        alive_check: bool = True,
        extra: dict[str, Any] | None = None,
        email_hex: str | None = None,
    ) -> Record:
        old_version = get_s(item, "version")
        if if_match is not None and if_match != old_version:
            raise PreconditionFailed(f"the {entity}'s current version is not the one in If-Match")
        vid, now = str(uuid.uuid4()), time.time()
        attrs = self._child_attrs(
            entity,
            eid,
            get_s(item, "profileId"),
            vid,
            get_s(item, "author"),
            get_s(item, "createdAt"),
            now_iso(),
        )
        if not get_s(item, "profileId"):
            del attrs["profileId"]
        if "expiresAt" in item:
            attrs["expiresAt"] = item["expiresAt"]
        attrs.update(extra or {})
        current, version = await self._items(
            caller,
            pk=pk,
            subject=subject,
            current_sk=current_sk,
            version_sk=f"{version_prefix}{vid}",
            attrs=attrs,
            doc=doc,
        )
        writes = _versioned_puts(current, version, replaces=old_version)
        alive_at = suppressed_at = -1
        if alive_check:
            alive_at = len(writes)
            writes.append(self._alive_check(pk, now))
        if email_hex:
            suppressed_at = len(writes)
            writes.append(self._not_suppressed(caller, email_hex))
        try:
            await self.repo.transact(writes)
        except ConditionFailed as exc:
            if alive_at in exc.indexes:
                raise NotFound("profile not found") from None
            if suppressed_at in exc.indexes:
                raise _suppressed() from None
            if if_match is not None:
                raise PreconditionFailed(f"the {entity} changed since If-Match") from None
            raise _LostRace from None
        return Record(eid, doc, _meta(current, style=style))

    async def _delete_child(
        self,
        caller: Caller,
        pk: str,
        current_sk: str,
        version_prefix: str,
        missing: str,
        *,
        shred: str | None = None,
    ) -> None:
        """Delete a current item (and, with ``shred``, that subject's data key, atomically),
        then its versions."""
        items = await self.repo.query_prefix(pk, version_prefix)
        current = await self.repo.get(key(pk, current_sk))
        if current is None:
            raise NotFound(missing)
        writes: list[dict[str, Any]] = [
            {
                "Delete": {
                    "Key": key(pk, current_sk),
                    "ConditionExpression": "attribute_exists(pk)",
                }
            }
        ]
        if shred is not None:
            writes.append(self._shred(caller, shred))
        await self.repo.transact(writes)
        if shred is not None:
            self.keys.evict(caller.account, shred)
        await self.repo.delete_keys(key(pk, get_s(i, "sk")) for i in items)

    async def delete_address(self, caller: Caller, ref: str, kind: Kind | None, aid: str) -> None:
        pid = await self.resolve(caller, ref, kind)
        if not _ID.match(aid):
            raise NotFound("address not found")
        pk = profile_pk(caller.account, pid)
        if not is_live(await self.repo.get(key(pk, "CUR"))):
            raise NotFound("profile not found")
        try:
            await self._delete_child(
                caller, pk, f"ADDR#{aid}", f"ADDRV#{aid}#", "address not found"
            )
        except ConditionFailed:
            raise NotFound("address not found") from None

    # ---- purchase information ---------------------------------------------------------------

    async def create_purchase_info(
        self, caller: Caller, ref: str, kind: Kind | None, body: Any
    ) -> Record:
        doc = _require_object(body, "purchase information")
        validate_purchase_info(doc)
        pid = await self.resolve(caller, ref, kind)
        current = await self._create_child(
            caller,
            pid,
            doc,
            kind="purchaseInfo",
            child_id=pid,
            current_sk="PI",
            version_prefix="PIV#",
            conflict=Conflict(
                "purchase information already exists for this profile; use PATCH",
                code="already_exists",
            ),
        )
        return Record(pid, doc, _meta(current, style="expiring"))

    async def get_purchase_info(
        self, caller: Caller, ref: str, kind: Kind | None, reveal: Reveal | None
    ) -> list[Record]:
        pid = await self.resolve(caller, ref, kind)
        item, doc = await self._child(caller, pid, "PI", "purchase information not found")
        records = [Record(pid, doc, _meta(item, style="expiring"))]
        return await self._reveal_or_mask(
            caller,
            records,
            reveal,
            entity_type="purchaseInfo",
            entity_id=pid,
            mask=masking.mask_purchase_info,
        )

    async def update_purchase_info(
        self, caller: Caller, ref: str, kind: Kind | None, body: Any, if_match: str | None
    ) -> Record:
        patch = _require_object(body, "purchase information")
        validate_purchase_info(patch)
        pid = await self.resolve(caller, ref, kind)
        pk = profile_pk(caller.account, pid)

        async def attempt() -> Record:
            item, old_doc = await self._child(caller, pid, "PI", "purchase information not found")
            return await self._replace_child(
                caller,
                pk,
                pid,
                item,
                {**old_doc, **patch},
                if_match,
                entity="purchaseInfo",
                eid=pid,
                current_sk="PI",
                version_prefix="PIV#",
                style="expiring",
            )

        return await self._retrying(f"{pk}|PI", attempt)

    async def delete_purchase_info(self, caller: Caller, ref: str, kind: Kind | None) -> None:
        pid = await self.resolve(caller, ref, kind)
        pk = profile_pk(caller.account, pid)
        if not is_live(await self.repo.get(key(pk, "CUR"))):
            raise NotFound("profile not found")
        try:
            await self._delete_child(caller, pk, "PI", "PIV#", "purchase information not found")
        except ConditionFailed:
            raise NotFound("purchase information not found") from None

    # ---- prospects --------------------------------------------------------------------------

    async def _email_hash(self, caller: Caller, doc: dict[str, Any]) -> str | None:
        salt = await self.repo.salt(caller.account, create=True)
        assert salt is not None
        return _alt_hash(salt, "email", doc)

    async def create_prospect(self, caller: Caller, body: Any) -> Record:
        doc = _require_object(body, "prospect")
        validate_prospect(doc)
        rid, vid, stamp = str(uuid.uuid4()), str(uuid.uuid4()), now_iso()
        email_hex = await self._email_hash(caller, doc)
        attrs = {
            "entityType": s("prospect"),
            "id": s(rid),
            "version": s(vid),
            "author": s(caller.principal),
            "createdAt": s(stamp),
            "updatedAt": s(stamp),
            **({"emailHash": s(email_hex)} if email_hex else {}),
        }
        new_key = await self.keys.prepare_new(caller.account, rid)
        current, version = await self._items(
            caller,
            pk=prospects_pk(caller.account),
            subject=rid,
            current_sk=f"CUR#{rid}",
            version_sk=f"VER#{rid}#{vid}",
            attrs=attrs,
            doc=doc,
            new_key=new_key,
        )
        writes: list[dict[str, Any]] = [
            *_versioned_puts(current, version),
            new_key.put,
        ]
        if email_hex:
            writes.append(self._not_suppressed(caller, email_hex))
        try:
            await self.repo.transact(writes)
        except ConditionFailed as exc:
            if 3 in exc.indexes:
                raise _suppressed() from None
            raise Conflict("prospect could not be created; retry", code="update_conflict") from None
        self.keys.remember(new_key)
        return Record(rid, doc, _meta(current, style="expiring"))

    async def list_prospects(self, caller: Caller, reveal: Reveal | None) -> list[Record]:
        now = time.time()
        records = []
        for item in await self.repo.query_prefix(prospects_pk(caller.account), "CUR#"):
            if not is_live(item, now):
                continue
            rid = get_s(item, "id")
            try:
                doc = await self._open(caller, rid, item)
            except SubjectErased:  # an erasure is removing it right now: it is gone already
                continue
            records.append(Record(rid, doc, _meta(item, style="expiring")))
        return await self._reveal_or_mask(
            caller,
            records,
            reveal,
            entity_type="prospects",
            entity_id="*",
            mask=masking.mask_prospect,
        )

    async def _prospect(self, caller: Caller, rid: str) -> tuple[Item, dict[str, Any]]:
        if not _ID.match(rid):
            raise NotFound("prospect not found")
        item = await self.repo.get(key(prospects_pk(caller.account), f"CUR#{rid}"))
        if not is_live(item):
            raise NotFound("prospect not found")
        assert item is not None
        return item, await self._open(caller, rid, item)

    async def get_prospect(self, caller: Caller, rid: str, reveal: Reveal | None) -> Record:
        item, doc = await self._prospect(caller, rid)
        records = [Record(rid, doc, _meta(item, style="expiring"))]
        shown = await self._reveal_or_mask(
            caller,
            records,
            reveal,
            entity_type="prospect",
            entity_id=rid,
            mask=masking.mask_prospect,
        )
        return shown[0]

    async def update_prospect(
        self, caller: Caller, rid: str, body: Any, if_match: str | None
    ) -> Record:
        patch = _require_object(body, "prospect")
        validate_prospect(patch)
        pk = prospects_pk(caller.account)

        async def attempt() -> Record:
            item, old_doc = await self._prospect(caller, rid)
            doc = {**old_doc, **patch}
            email_hex = await self._email_hash(caller, doc)
            return await self._replace_child(
                caller,
                pk,
                rid,
                item,
                doc,
                if_match,
                entity="prospect",
                eid=rid,
                current_sk=f"CUR#{rid}",
                version_prefix=f"VER#{rid}#",
                style="expiring",
                alive_check=False,
                extra={"emailHash": s(email_hex)} if email_hex else None,
                email_hex=email_hex,
            )

        return await self._retrying(f"{pk}|CUR#{rid}", attempt)

    async def delete_prospect(self, caller: Caller, rid: str) -> None:
        if not _ID.match(rid):
            raise NotFound("prospect not found")
        try:
            await self._delete_child(
                caller,
                prospects_pk(caller.account),
                f"CUR#{rid}",
                f"VER#{rid}#",
                "prospect not found",
                shred=rid,
            )
        except ConditionFailed:
            raise NotFound("prospect not found") from None

    # ---- schema -----------------------------------------------------------------------------

    async def full_schema(self, caller: Caller) -> dict[str, Any]:
        return full_view(await self.repo.custom_schema(caller.account))

    async def custom_schema(self, caller: Caller) -> dict[str, Any]:
        return custom_view(await self.repo.custom_schema(caller.account))

    async def put_custom_schema(self, caller: Caller, body: Any) -> None:
        try:
            fields, ttl_days = parse_custom(body)
        except SchemaError as exc:
            raise BadRequest(str(exc), code="invalid_schema") from None
        await self.repo.put_custom_schema(caller.account, fields, ttl_days)


def _duplicate() -> Conflict:
    return Conflict(
        "another profile of this account already uses this email or document",
        code="duplicate_alternative_key",
    )
