"""Erasure of a data subject (Data Subject Rights API) and the suppression that follows it.

``Eraser.erase(caller, email)`` removes everything this region holds about the person with that
email in the caller's account, in an order that is safe to interrupt and to retry:

1. find the subjects, reading only: the profile named by the email's alternative-key item, and
   every prospect with an item (current or version) whose ``emailHash`` is the email's hash;
2. store the request item ``A#{account}#ERASURE``/``{uuid}`` (status ``InProgress``, times,
   counts; no PII) and the audit record (principal, request uuid, erased entity ids; never the
   email or its hash): no audit, no erasure;
3. store the suppression entry ``A#{account}#SUPPRESS#{email hash}``/``S``: from then on a write
   that would store this email again (profile or prospect, create or update) is refused with
   409 ``subject_suppressed`` until an operator lifts it (``lift_suppression``; CLI
   ``profile-store suppression lift``);
4. delete every subject's data key FIRST (crypto-shredding: copies in PITR backups, streams and
   old version ids can no longer be decrypted), then its items: versions and sub-resources, the
   document alternative keys, the current item, and the email alternative key last, so a retry
   after a partial failure still finds the profile. Alternative keys are deleted only while they
   still name this profile. The Idempotency-Key records of the subject's creates (found by the
   ``idemHash`` its items carry, ``idempotency.py``) go first, while those items still exist;
5. mark the request ``Completed``; a failure in 3-4 marks it ``Error`` (generic detail) and a
   new request for the same email completes the work. Finding nothing is ``Completed`` too.

A prospect whose email changed is erased whole if any of its versions carried the email. A
profile whose email was changed *before* the request is not found by the old email (its old
versions are sealed under its key, not indexed); erase it by its current email.

The email never leaves this module except masked in the answer, and is never logged.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import masking
from .altkeys import digest
from .audit import AuditEvent, record
from .crypto import CryptoError, DataKeyStore
from .domain import Caller
from .errors import BadRequest, ConditionFailed, NotFound, StoreError
from .layout import (
    Item,
    Key,
    alt_key,
    erasure_key,
    get_n,
    get_s,
    idempotency_key,
    key,
    n,
    profile_pk,
    prospects_pk,
    s,
    suppression_key,
)
from .repository import Repository

log = logging.getLogger("profile_store.erasure")

APPLICATION = "profileSystemV2"
COMPLETED = "Completed"
ERROR = "Error"
IN_PROGRESS = "InProgress"
_REQUEST_ID = re.compile(r"^[0-9a-f-]{36}$")
_MAX_EMAIL = 320


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _update_at(when: datetime) -> str:
    # The spec's example: UTC without offset or fraction.
    return when.strftime("%Y-%m-%dT%H:%M:%S")


@dataclass(slots=True)
class Subject:
    """One data subject to erase: whose key to shred and which items to delete, in order."""

    kind: str  # "profile" | "prospect"
    subject_id: str
    items: list[Key] = field(default_factory=list)
    # alternative-key items, deleted only while they still name this profile
    alt_keys: list[Key] = field(default_factory=list)

    @property
    def entity(self) -> str:
        return f"{self.kind}:{self.subject_id}"


@dataclass(slots=True)
class Counts:
    profiles: int = 0
    prospects: int = 0
    data_keys: int = 0
    items: int = 0


def response_body(item: Item, *, email: str | None) -> dict[str, Any]:
    """The spec's answer for a request item; ``email`` is the masked email, or None on read-back
    (the request item keeps no PII, so a read-back has no email to show)."""
    status = get_s(item, "status")
    counts = {
        "profiles": get_n(item, "profiles") or 0,
        "prospects": get_n(item, "prospects") or 0,
        "dataKeysShredded": get_n(item, "dataKeys") or 0,
        "itemsDeleted": get_n(item, "items") or 0,
    }
    body: dict[str, Any] = {
        "uuid": get_s(item, "sk"),
        "requestType": "Removal",
    }
    if email is not None:
        body["email"] = email
    body.update(
        {
            "status": status,
            "dataResponse": json.dumps(
                {"Profile System PII API": {"status": status, **counts}}, separators=(",", ":")
            ),
            "requestTime": get_s(item, "requestTime"),
            "applications": [
                {
                    "application": APPLICATION,
                    "status": status,
                    "errorDetail": get_s(item, "errorDetail"),
                    "updateAt": get_s(item, "updateAt"),
                }
            ],
        }
    )
    return body


def _records(account: str, items: list[Item]) -> list[Key]:
    """The Idempotency-Key records of the creates that wrote ``items``."""
    hashes = sorted({h for i in items if (h := get_s(i, "idemHash"))})
    return [idempotency_key(account, h) for h in hashes]


def parse_email(body: Any) -> str:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_body")
    email = body.get("email")
    if not isinstance(email, str) or not email.strip() or len(email) > _MAX_EMAIL:
        raise BadRequest(
            "field 'email' is required and must be a non-empty string", code="invalid_field"
        )
    return email


class Eraser:
    def __init__(self, repo: Repository, keys: DataKeyStore) -> None:
        self.repo = repo
        self.keys = keys

    # ---- step 1: find -----------------------------------------------------------------------

    async def _profile(self, account: str, email_hex: str) -> Subject | None:
        email_key = alt_key(account, "email", email_hex)
        alt = await self.repo.get(email_key)
        if alt is None:
            return None
        pid = get_s(alt, "profileId")
        pk = profile_pk(account, pid)
        items = await self.repo.query_prefix(pk)
        subject = Subject("profile", pid)
        hashes: set[tuple[str, str]] = set()
        for item in items:
            for kind in ("email", "document"):
                value = get_s(item, f"{kind}Hash")
                if value:
                    hashes.add((kind, value))
        hashes.discard(("email", email_hex))
        subject.alt_keys = [alt_key(account, kind, h) for kind, h in sorted(hashes)]
        subject.alt_keys.append(email_key)  # last: a retry still finds the profile through it
        rest = [i for i in items if get_s(i, "sk") != "CUR"]
        subject.items = _records(account, items)
        subject.items += [key(pk, get_s(i, "sk")) for i in rest]
        if len(rest) != len(items):
            subject.items.append(key(pk, "CUR"))
        return subject

    async def _prospects(self, account: str, email_hex: str) -> list[Subject]:
        pk = prospects_pk(account)
        items = await self.repo.query_prefix(pk)
        rids = sorted({get_s(i, "id") for i in items if get_s(i, "emailHash") == email_hex})
        subjects = []
        for rid in rids:
            if not rid:
                continue
            own = [i for i in items if get_s(i, "id") == rid]
            mine = [get_s(i, "sk") for i in own]
            current = f"CUR#{rid}"
            ordered = [sk for sk in mine if sk != current] + [sk for sk in mine if sk == current]
            keys = _records(account, own) + [key(pk, sk) for sk in ordered]
            subjects.append(Subject("prospect", rid, keys))
        return subjects

    # ---- step 4: delete ---------------------------------------------------------------------

    async def _delete_alt_key(self, k: Key, pid: str) -> bool:
        try:
            await self.repo.transact(
                [
                    {
                        "Delete": {
                            "Key": k,
                            "ConditionExpression": "profileId = :pid",
                            "ExpressionAttributeValues": {":pid": s(pid)},
                        }
                    }
                ]
            )
        except ConditionFailed:  # gone already, or now another profile's key: not ours
            return False
        return True

    async def _delete(self, account: str, subjects: list[Subject], counts: Counts) -> None:
        # Every key first: from here on no copy of these subjects' documents can be read.
        for subject in subjects:
            if await self.keys.delete(account, subject.subject_id):
                counts.data_keys += 1
        for subject in subjects:
            await self.repo.delete_keys(subject.items)
            counts.items += len(subject.items)
            for k in subject.alt_keys:
                counts.items += await self._delete_alt_key(k, subject.subject_id)

    # ---- the request ------------------------------------------------------------------------

    async def _save(self, account: str, request_id: str, fields: dict[str, Any]) -> None:
        await self.repo.put({**erasure_key(account, request_id), **fields})

    async def erase(self, caller: Caller, email: str) -> dict[str, Any]:
        account = caller.account
        request_id = str(uuid.uuid4())
        started = datetime.now(UTC)
        salt = await self.repo.salt(account, create=True)
        assert salt is not None
        email_hex = digest(salt, "email", email)

        profile = await self._profile(account, email_hex)
        subjects = ([profile] if profile else []) + await self._prospects(account, email_hex)
        counts = Counts(
            profiles=sum(x.kind == "profile" for x in subjects),
            prospects=sum(x.kind == "prospect" for x in subjects),
        )
        fields: dict[str, Any] = {
            "requestType": s("Removal"),
            "status": s(IN_PROGRESS),
            "requestTime": s(_iso(started)),
            "updateAt": s(_update_at(started)),
            "principal": s(caller.principal),
            "requestId": s(caller.request_id[:200]),
            "profiles": n(counts.profiles),
            "prospects": n(counts.prospects),
            "dataKeys": n(0),
            "items": n(0),
            "errorDetail": s(""),
        }
        await self._save(account, request_id, fields)
        # From here on every outcome is stored on the request and answered with its status.
        failure: Exception | None = None
        try:
            await record(
                self.repo,
                AuditEvent(
                    principal=caller.principal,
                    account=account,
                    entity_type="erasure",
                    entity_id=request_id,
                    action="erase",
                    reason="data subject erasure request",
                    request_id=caller.request_id,
                    entities=tuple(x.entity for x in subjects),
                ),
            )
            await self._suppress(account, email_hex, request_id, started)
            await self._delete(account, subjects, counts)
        except (StoreError, CryptoError) as exc:
            failure = exc
        masked = masking.mask_text(email)
        return await self._finish(account, request_id, fields, counts, failure, masked)

    async def _suppress(
        self, account: str, email_hex: str, request_id: str, started: datetime
    ) -> None:
        try:
            await self.repo.put(
                {
                    **suppression_key(account, email_hex),
                    "createdAt": s(_iso(started)),
                    "erasureId": s(request_id),
                },
                condition="attribute_not_exists(pk)",
            )
        except ConditionFailed:
            pass  # suppressed by an earlier erasure already

    async def _finish(
        self,
        account: str,
        request_id: str,
        fields: dict[str, Any],
        counts: Counts,
        failure: Exception | None,
        masked_email: str,
    ) -> dict[str, Any]:
        done = datetime.now(UTC)
        fields.update(
            {
                "status": s(COMPLETED if failure is None else ERROR),
                "updateAt": s(_update_at(done)),
                "completedAt": s(_iso(done)),
                "dataKeys": n(counts.data_keys),
                "items": n(counts.items),
                "errorDetail": s(
                    ""
                    if failure is None
                    else "the erasure could not be finished; send the request again to complete it"
                ),
            }
        )
        if failure is not None:
            log.error("erasure %s failed: %s", request_id, type(failure).__name__)
        try:
            await self._save(account, request_id, fields)
        except StoreError as exc:
            # The answer still says what happened; the stored status stays InProgress.
            log.error("erasure %s: status not stored (%s)", request_id, exc.code)
        item = {**erasure_key(account, request_id), **fields}
        return response_body(item, email=masked_email)

    async def status(self, caller: Caller, request_id: str) -> dict[str, Any]:
        if not _REQUEST_ID.match(request_id):
            raise NotFound("erasure request not found")
        item = await self.repo.get(erasure_key(caller.account, request_id))
        if item is None:
            raise NotFound("erasure request not found")
        return response_body(item, email=None)


async def lift_suppression(
    repo: Repository, account: str, email: str, *, principal: str, reason: str
) -> bool:
    """Let the email be stored again; True if a suppression existed. Audited (ids only)."""
    salt = await repo.salt(account, create=False)
    if salt is None:
        return False
    entry_key = suppression_key(account, digest(salt, "email", email))
    old = await repo.get(entry_key)
    if old is None:
        return False
    try:
        # A transaction, like every account write: it carries the fence check.
        await repo.transact(
            [{"Delete": {"Key": entry_key, "ConditionExpression": "attribute_exists(pk)"}}]
        )
    except ConditionFailed:
        return False  # lifted concurrently
    await record(
        repo,
        AuditEvent(
            principal=principal,
            account=account,
            entity_type="suppression",
            entity_id=get_s(old, "erasureId"),
            action="lift-suppression",
            reason=reason,
            request_id=str(uuid.uuid4()),
        ),
    )
    return True
