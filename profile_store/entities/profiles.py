"""Profiles and their versions, found by id or by an alternative key (email, document).

A profile lives in its own partition (``A#{account}#P#{id}``: CUR, ``V#{version}``, and its
sub-resources), sealed under the profile's own data key; a create makes that key in the same
transaction as the profile, a delete removes it in the same transaction (crypto-shredding).

Alternative keys. The email and the document are stored only as SHA-256 of the account's salt
plus the normalised value (``altkeys.py``), one item each pointing at the profile; a create or
an update puts the new ones and deletes replaced ones in the profile's transaction, so a value
taken by another profile of the account is 409 ``duplicate_alternative_key`` and nothing is
written. The hashes are also kept on the profile's items, so an erasure can find every
alternative-key item even after the subject's key (and so its document) is gone.

TTL. ``ttl`` (days) on create/update sets ``expiresAt``; without it the account's custom schema
``documentTTL`` applies; without either a create never expires and an update keeps the current
expiry. Alternative-key items carry the profile's expiry so a swept profile frees its email and
document.

Masking follows the built-in PII fields plus the account's custom fields declared ``pii: true``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from .. import masking
from ..altkeys import KINDS, Kind, digest
from ..errors import ConditionFailed, NotFound
from ..layout import Item, alt_key, get_n, get_s, is_live, key, n, profile_pk, s
from ..schema import CustomSchema
from .core import Core
from .custom_schema import CustomSchemas
from .family import Change, Entry, Family, Lookup, LostRace, Masker, Place
from .values import (
    ID,
    Caller,
    Record,
    Reveal,
    conform,
    custom_fields,
    expiry,
    invalid,
    require_object,
)


def validate_profile(doc: dict[str, Any], schema: CustomSchema) -> None:
    """A complete profile per the spec's schema, email/document non-empty, custom fields typed."""
    conform("profile", doc)
    for name in ("email", "document"):
        if not doc[name].strip():
            raise invalid(f"field {name!r} must not be empty")
    custom_fields(doc, schema)


def validate_profile_patch(patch: dict[str, Any], schema: CustomSchema) -> None:
    conform("profile", patch, partial=True)
    custom_fields(patch, schema)


def alt_hash(salt: bytes, kind: Kind, doc: dict[str, Any] | None) -> str | None:
    value = None if doc is None else doc.get(kind)
    if not isinstance(value, str) or not value.strip():
        return None
    return digest(salt, kind, value)


class Profiles:
    def __init__(self, core: Core, schemas: CustomSchemas) -> None:
        self.core = core
        self.repo = core.repo
        self.schemas = schemas
        self.family = Family(
            "profile", style="profile", missing="profile not found", masker=self._mask
        )
        self.versions = Family(
            "profile", style="profile", missing="profile version not found", masker=self._mask
        )

    async def _mask(self, caller: Caller, schema_version: int) -> Masker:
        schema = await self.schemas.current(caller.account, at_least=schema_version)
        pii = schema.pii_fields
        return lambda doc: masking.mask_profile(doc, pii)

    @staticmethod
    def place(caller: Caller, pid: str) -> Place:
        return Place(profile_pk(caller.account, pid), "CUR", "V#", subject=pid, eid=pid)

    async def resolve(self, caller: Caller, ref: str, kind: Kind | None) -> str:
        """Profile id from a path segment, itself an id or (with alternativeKey) an email or a
        document. Never echo ``ref`` in an error: with an alternative key it is PII."""
        if kind is None:
            if not ID.match(ref):
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

    async def create(self, caller: Caller, body: Any, ttl_days: int | None) -> Record:
        doc = require_object(body, "profile")
        pid = str(uuid.uuid4())

        async def attempt() -> Record:
            # Re-run whole when the schema changed under it (Core.commit): validation and the
            # default TTL both depend on it.
            schema = await self.schemas.current(caller.account)
            validate_profile(doc, schema)
            salt = await self.repo.salt(caller.account, create=True)
            assert salt is not None
            now = time.time()
            expires = expiry(ttl_days, schema, None, now)
            new_key = await self.core.keys.prepare_new(caller.account, pid)
            change = self._change(caller, salt, pid, doc, schema, expires, now)
            change.new_key = new_key
            return await self.core.commit(caller, self.family, self.place(caller, pid), change)

        pk = profile_pk(caller.account, pid)
        return await self.core.create(caller, self.family, f"{pk}|CUR", attempt)

    async def get(
        self, caller: Caller, ref: str, kind: Kind | None, reveal: Reveal | None
    ) -> list[Record]:
        pid = await self.resolve(caller, ref, kind)
        place = self.place(caller, pid)
        return await self.core.read(
            caller, self.family, place.lookup(), reveal, subject=pid, audit_as=("profile", pid)
        )

    async def get_version(
        self, caller: Caller, ref: str, kind: Kind | None, vid: str, reveal: Reveal | None
    ) -> list[Record]:
        pid = await self.resolve(caller, ref, kind)
        if not ID.match(vid):
            raise NotFound("profile version not found")
        lookup = Lookup(
            profile_pk(caller.account, pid), f"V#{vid}", under_profile=True, honour_expiry=False
        )
        return await self.core.read(
            caller,
            self.versions,
            lookup,
            reveal,
            subject=pid,
            audit_as=("profileVersion", f"{pid}/{vid}"),
        )

    async def update(
        self,
        caller: Caller,
        ref: str,
        kind: Kind | None,
        body: Any,
        ttl_days: int | None,
        if_match: str | None,
    ) -> Record:
        patch = require_object(body, "profile")
        validate_profile_patch(patch, await self.schemas.current(caller.account))
        pid = await self.resolve(caller, ref, kind)
        salt = await self.repo.salt(caller.account, create=True)
        assert salt is not None

        async def revise(current: Item, old_doc: dict[str, Any]) -> Change:
            # Asked on every attempt: a lost race may have been a schema replaced meanwhile.
            schema = await self.schemas.current(caller.account)
            doc = {**old_doc, **patch}
            validate_profile(doc, schema)
            now = time.time()
            old_expires = get_n(current, "expiresAt")
            expires = expiry(ttl_days, schema, old_expires, now)
            return self._change(caller, salt, pid, doc, schema, expires, now, old_doc, old_expires)

        return await self.core.update(
            caller, self.family, self.place(caller, pid), if_match, revise
        )

    def _change(
        self,
        caller: Caller,
        salt: bytes,
        pid: str,
        doc: dict[str, Any],
        schema: CustomSchema,
        expires: int | None,
        now: float,
        old_doc: dict[str, Any] | None = None,
        old_expires: int | None = None,
    ) -> Change:
        """The profile's attributes and alternative-key entries for a create (no ``old_doc``)
        or an update: put new or re-dated keys, delete replaced ones."""
        # Each value hashed once: the email's hash is also its suppression key, and a value the
        # update leaves as it was keeps its hash.
        hashes = {kind: alt_hash(salt, kind, doc) for kind in KINDS}
        email_hex = hashes["email"] or digest(salt, "email", doc["email"])
        change = Change(doc, email_hex=email_hex, schema=schema)
        if expires is not None:
            change.attrs["expiresAt"] = n(expires)
        for kind in KINDS:
            new_hash = hashes[kind]
            if old_doc is not None and old_doc.get(kind) == doc.get(kind):
                old_hash = new_hash
            else:
                old_hash = alt_hash(salt, kind, old_doc)
            if new_hash:
                change.attrs[f"{kind}Hash"] = s(new_hash)
                if new_hash != old_hash or expires != old_expires:
                    change.alt_keys.append(self._alt_put(caller, kind, new_hash, pid, expires, now))
            if old_hash and old_hash != new_hash:
                change.alt_keys.append(self._alt_delete(caller, kind, old_hash, pid))
        return change

    async def delete(self, caller: Caller, ref: str, kind: Kind | None) -> None:
        pid = await self.resolve(caller, ref, kind)
        pk = profile_pk(caller.account, pid)
        salt = await self.repo.salt(caller.account, create=False)

        async def attempt() -> list[Item]:
            items = await self.repo.query_prefix(pk)
            current = next((i for i in items if get_s(i, "sk") == "CUR"), None)
            if not is_live(current):
                if items:  # expired or half-deleted earlier: finish the cleanup, still 404
                    await self.core.keys.delete(caller.account, pid)
                    await self.repo.delete_keys(key(pk, get_s(i, "sk")) for i in items)
                raise NotFound("profile not found")
            assert current is not None
            doc = await self.core.open(caller, pid, current)
            writes: list[Entry] = [
                {
                    "Delete": {
                        "Key": key(pk, "CUR"),
                        "ConditionExpression": "version = :v",
                        "ExpressionAttributeValues": {":v": s(get_s(current, "version"))},
                    }
                },
                # The data key goes with the profile: copies in backups become unreadable.
                self.core.shred(caller, pid),
            ]
            for alt_kind in KINDS:
                hex_digest = alt_hash(salt, alt_kind, doc) if salt else None
                if hex_digest:
                    writes.append(self._alt_delete(caller, alt_kind, hex_digest, pid))
            try:
                await self.repo.transact(writes, intent=caller.write)
            except ConditionFailed:
                raise LostRace from None
            self.core.keys.evict(caller.account, pid)
            return [i for i in items if get_s(i, "sk") != "CUR"]

        rest = await self.core.retrying(f"{pk}|CUR", attempt)
        # The profile is gone atomically above; versions and sub-resources are unreachable
        # without it and are removed now (a failure here is finished by a later DELETE).
        await self.repo.delete_keys(key(pk, get_s(i, "sk")) for i in rest)

    def _alt_put(
        self, caller: Caller, kind: Kind, hex_digest: str, pid: str, expires: int | None, now: float
    ) -> Entry:
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
                "ExpressionAttributeValues": {":pid": s(pid), ":now": n(int(now))},
            }
        }

    def _alt_delete(self, caller: Caller, kind: Kind, hex_digest: str, pid: str) -> Entry:
        return {
            "Delete": {
                "Key": alt_key(caller.account, kind, hex_digest),
                "ConditionExpression": "attribute_not_exists(pk) OR profileId = :pid",
                "ExpressionAttributeValues": {":pid": s(pid)},
            }
        }
