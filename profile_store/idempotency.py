"""Writes with a definite outcome: each write request's DynamoDB token, and a create's record.

Token. Every create/update/delete ``TransactWriteItems`` carries ``ClientRequestToken``:
DynamoDB applies one token's transaction once, for 10 minutes, so ``Repository.transact`` can
re-send the very same transaction after a timeout without doubling it. The token is derived
from the request, so a client's retry of the same request brings the same one::

    base  = sha256(account, operation, path, source, sha256(raw body))   first 32 hex digits
    token = base + "-" + n      n: the request's n-th transaction (a PATCH that lost a race
                                sends another transaction, which needs a token of its own)

``source`` is the client's ``Idempotency-Key`` when given, else the request id: the client's
``X-Request-Id`` as the edge forwards it, or the one the edge (or the store) minted, which is
unique per request. A transaction that differs from the one first sent with its token (the same
request, already applied, retried after its items changed) is refused by DynamoDB
(``IdempotentParameterMismatchException``): 409 ``already_applied``.

Record. A create with an ``Idempotency-Key`` writes, in its own transaction, the item
``A#{account}#IDEM#{sha256(account, operation, path, key)}``/``IDEM``: where the created entity
lives (pk, current sk, its first version's sk, subject, id), the digest of the canonical request
(sorted-key JSON of the body and the query) and ``expiresAt``: ids and digests, no PII. Before
anything else a create looks it up (consistent read): the same request answers the entity it
created, as it was created (same id, same status code); another body with the same key is 422
``idempotency_key_reused``; an entity deleted since is 410 ``created_then_deleted``. The created
items carry the record's hash (``idemHash``), so erasing the subject deletes the record too.

Pure: no I/O here; ``app.authenticate`` builds a ``WriteIntent`` per write request,
``handlers.read_json`` binds the body to it, the write path (``entities/core.py``,
``Repository.transact``) reads it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from .errors import BadRequest
from .layout import idempotency_key

HEADER = "Idempotency-Key"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_KEY_OK = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII, like a token68 or a uuid
_NO_BODY = hashlib.sha256(b"").hexdigest()


def _h(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def canonical_digest(value: Any) -> str:
    """sha256 of ``value`` as sorted-key, compact JSON: equal for equal JSON values."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(slots=True, eq=False)
class WriteIntent:
    """One write request as the write path needs it: where its tokens come from, its record."""

    account: str
    scope: str  # operation and path: a key is only ever compared within one of them
    source: str  # "key:{Idempotency-Key}" or "rid:{request id}"
    key_hash: str | None  # the record's hash; None without an Idempotency-Key
    query: tuple[tuple[str, str], ...] = ()
    body: Any = None
    raw_digest: str = _NO_BODY
    issued: int = 0  # transactions this request sent so far
    _base: str = ""

    def bind_body(self, raw: bytes, body: Any) -> None:
        self.raw_digest = hashlib.sha256(raw).hexdigest()
        self.body = body
        self._base = ""

    def next_token(self) -> str:
        """The ``ClientRequestToken`` of this request's next transaction (36 characters)."""
        if not self._base:
            self._base = _h("token", self.account, self.scope, self.source, self.raw_digest)[:32]
        token = f"{self._base}-{self.issued % 1000:03d}"
        self.issued += 1
        return token

    def request_digest(self) -> str:
        """What a replay must match: the canonical body and the query."""
        return canonical_digest([self.body, [list(pair) for pair in self.query]])


def parse_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not _KEY_OK.match(raw):
        raise BadRequest(
            "Idempotency-Key must be 1-255 visible ASCII characters",
            code="invalid_idempotency_key",
        )
    return raw


def intent(
    *,
    account: str,
    operation: str,
    path: str,
    query: tuple[tuple[str, str], ...],
    key: str | None,
    request_id: str,
) -> WriteIntent:
    scope = f"{operation}\n{path}"
    return WriteIntent(
        account=account,
        scope=scope,
        source=f"key:{key}" if key is not None else f"rid:{request_id}",
        key_hash=None if key is None else _h("record", account, scope, key),
        query=query,
    )


@dataclass(frozen=True, slots=True)
class Created:
    """What a create's record says: where the entity it created lives."""

    pk: str
    current_sk: str
    version_sk: str
    subject: str
    eid: str
    under_profile: bool
    digest: str

    def item(self, account: str, key_hash: str, *, now: int, ttl_s: int) -> dict[str, Any]:
        return {
            **idempotency_key(account, key_hash),
            "entityType": {"S": "idempotency"},
            "targetPk": {"S": self.pk},
            "targetSk": {"S": self.current_sk},
            "versionSk": {"S": self.version_sk},
            "subject": {"S": self.subject},
            "eid": {"S": self.eid},
            "underProfile": {"BOOL": self.under_profile},
            "requestDigest": {"S": self.digest},
            "createdAt": {"N": str(now)},
            "expiresAt": {"N": str(now + ttl_s)},
        }

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Created:
        def text(name: str) -> str:
            return str(item.get(name, {}).get("S", ""))

        return cls(
            pk=text("targetPk"),
            current_sk=text("targetSk"),
            version_sk=text("versionSk"),
            subject=text("subject"),
            eid=text("eid"),
            under_profile=bool(item.get("underProfile", {}).get("BOOL", False)),
            digest=text("requestDigest"),
        )
