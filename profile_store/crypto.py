"""Per-subject envelope encryption of PII documents, and erasure by crypto-shredding.

Every data subject (a profile or a prospect) has its own 32-byte data key. The key is stored in
the subject's region's table only in *wrapped* form (by a ``key_providers.KeyProvider``: KMS in
production), one item per subject::

    pk  A#{account}#DK#{subject_id}    sk  DK
    wrapped B   provider S ("kms"|"local")   keyId S (KMS key ARN / local fingerprint)
    createdAt S (ISO-8601 UTC)

``EnvelopeCodec`` (what the store seals and opens every document with) uses that key::

    doc B = 0x01 | nonce (12 random bytes) | AES-256-GCM(json(doc), aad)
    aad   = "profile-store/doc" + length-prefixed(version, region, account, subject, entity)

The AAD names where a ciphertext belongs, so one copied into another item (other entity id,
subject, account or region) fails to open instead of showing one shopper's data as another's.
An account move copies documents as ciphertext and marks each with the region it was sealed in
(``sealedIn``); its data key moves with it, re-wrapped by the new region's provider.

Erasure deletes the subject's key item (``DataKeyStore.delete``): every copy of the subject's
documents, including those in backups and streams, is then noise. Unwrapped keys are cached
for a short TTL (default 60 s) so reads do not call KMS each time; ``delete`` evicts the key
here, and other instances forget it when their TTL runs out.

Creating a subject can stay one ``TransactWriteItems``: ``DataKeyStore.prepare_new`` makes a
key without writing it and returns the ``Put`` entry (conditional on the key not existing yet);
pass the result to ``EnvelopeCodec.seal(new_key=...)`` and, once the transaction committed, to
``DataKeyStore.remember``.

Errors: the ``CryptoError`` tree drawn in ``key_providers.py`` (re-exported here), mapped
to answers by ``errors.from_crypto``.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from cachetools import TTLCache
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from residency_contract.tables import data_prefix, item_key

from . import fence
from .key_providers import (
    CryptoError,
    DecryptionFailed,
    GeneratedKey,
    KeyConfigError,
    KeyContext,
    KeyProvider,
    KeyServiceError,
    KeyServiceUnavailable,
    SubjectErased,
    length_prefixed,
    service_error,
)

__all__ = [
    "DOC_ATTRIBUTE",
    "SEALED_IN_ATTRIBUTE",
    "CryptoError",
    "DataKeyStore",
    "DecryptionFailed",
    "EnvelopeCodec",
    "KeyConfigError",
    "KeyServiceError",
    "KeyServiceUnavailable",
    "NewSubjectKey",
    "SubjectErased",
    "SubjectKey",
    "data_key_delete_item",
    "data_key_item_key",
    "data_key_put_item",
    "document_aad",
    "open_document",
    "seal_document",
]

DOC_ATTRIBUTE = "doc"
# The region a document was sealed in, when it is not this one (set by an account move).
SEALED_IN_ATTRIBUTE = "sealedIn"
DATA_KEY_SK = "DK"
_FORMAT_V1 = 1
_NONCE_BYTES = 12
_TAG_BYTES = 16
_DOC_LABEL = b"profile-store/doc"
_SERVICE_ERRORS = (ClientError, BotoCoreError, TimeoutError)


def _check_id(name: str, value: str) -> None:
    # Ids become parts of a '#'-separated key: a '#' inside one could name another item.
    if not value or "#" in value:
        raise ValueError(f"{name} must be non-empty and must not contain '#': {value!r}")


def data_key_item_key(account: str, subject_id: str) -> dict[str, Any]:
    """Low-level DynamoDB key of a subject's data-key item."""
    _check_id("account", account)
    _check_id("subject_id", subject_id)
    return item_key(f"{data_prefix(account)}DK#{subject_id}", DATA_KEY_SK)


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def data_key_put_item(
    *,
    table: str,
    account: str,
    subject_id: str,
    wrapped: bytes,
    provider: str,
    key_id: str,
    created_at: str | None = None,
) -> dict[str, Any]:
    """The ``TransactWriteItems`` entry that stores a NEW subject key.

    Conditional on no key existing: overwriting a subject's key would silently shred all of its
    data, so a lost race must fail, never replace.
    """
    item = {
        **data_key_item_key(account, subject_id),
        "wrapped": {"B": wrapped},
        "provider": {"S": provider},
        "keyId": {"S": key_id},
        "createdAt": {"S": created_at or _utc_now()},
    }
    return {
        "Put": {
            "TableName": table,
            "Item": item,
            "ConditionExpression": "attribute_not_exists(pk)",
        }
    }


def data_key_delete_item(*, table: str, account: str, subject_id: str) -> dict[str, Any]:
    """The ``TransactWriteItems`` entry that shreds a subject; call ``evict`` after commit."""
    return {"Delete": {"TableName": table, "Key": data_key_item_key(account, subject_id)}}


@dataclass(frozen=True, slots=True)
class SubjectKey:
    """A subject's unwrapped data key, ready to seal and open (the raw bytes are not kept)."""

    account: str
    subject_id: str
    aead: AESGCM = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class NewSubjectKey:
    """A key made by ``prepare_new`` but not yet stored: ``put`` goes into the transaction."""

    key: SubjectKey
    put: dict[str, Any] = field(repr=False)


def document_aad(region: str, account: str, subject_id: str, entity_id: str) -> bytes:
    return _DOC_LABEL + length_prefixed(bytes([_FORMAT_V1]), region, account, subject_id, entity_id)


def seal_document(key: SubjectKey, *, region: str, entity_id: str, doc: dict[str, Any]) -> bytes:
    """``doc`` as version byte + nonce + AES-256-GCM ciphertext, bound to where it belongs."""
    plaintext = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    nonce = secrets.token_bytes(_NONCE_BYTES)
    aad = document_aad(region, key.account, key.subject_id, entity_id)
    return bytes([_FORMAT_V1]) + nonce + key.aead.encrypt(nonce, plaintext, aad)


def open_document(key: SubjectKey, *, region: str, entity_id: str, blob: bytes) -> dict[str, Any]:
    if len(blob) < 1 + _NONCE_BYTES + _TAG_BYTES:
        raise DecryptionFailed("sealed document is truncated")
    if blob[0] != _FORMAT_V1:
        raise DecryptionFailed(f"sealed document has unknown format version {blob[0]}")
    nonce, body = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
    aad = document_aad(region, key.account, key.subject_id, entity_id)
    try:
        plaintext = key.aead.decrypt(nonce, body, aad)
    except InvalidTag:
        raise DecryptionFailed(
            f"document {entity_id!r} of subject {key.subject_id!r} failed authentication"
        ) from None
    doc = json.loads(plaintext)
    if not isinstance(doc, dict):
        raise DecryptionFailed("sealed document is not a JSON object")
    return doc


class DataKeyStore:
    """Subjects' wrapped data keys in the regional table, with a short in-memory cache.

    ``client`` is the app's aiobotocore DynamoDB client (owned and closed by the app).
    """

    def __init__(
        self,
        client: Any,
        table: str,
        provider: KeyProvider,
        *,
        region: str,
        cache_ttl_s: float = 60.0,
        cache_size: int = 10_000,
    ) -> None:
        if cache_ttl_s <= 0 or cache_size <= 0:
            raise ValueError("cache_ttl_s and cache_size must be > 0")
        self.client = client
        self.table = table
        self.provider = provider
        self.region = region
        self._cache: TTLCache[tuple[str, str], SubjectKey] = TTLCache(cache_size, cache_ttl_s)
        # Subjects erased here recently: a load that raced the delete must not put the old key
        # back into the cache after ``delete`` evicted it.
        self._erased: TTLCache[tuple[str, str], bool] = TTLCache(cache_size, cache_ttl_s)

    def _context(self, account: str, subject_id: str) -> KeyContext:
        return KeyContext(region=self.region, account=account, subject=subject_id)

    def _keep(self, key: SubjectKey) -> SubjectKey:
        ident = (key.account, key.subject_id)
        if ident not in self._erased:
            self._cache[ident] = key
        return key

    async def load(self, account: str, subject_id: str) -> SubjectKey:
        """The subject's key (cache, else one consistent GetItem + unwrap); ``SubjectErased``."""
        cached = self._cache.get((account, subject_id))
        if cached is not None:
            return cached
        found = await self._read(account, subject_id)
        if found is None:
            raise SubjectErased(f"no data key for subject {subject_id!r} of account {account!r}")
        return found

    async def get_or_create(self, account: str, subject_id: str) -> SubjectKey:
        cached = self._cache.get((account, subject_id))
        if cached is not None:
            return cached
        found = await self._read(account, subject_id)
        return found if found is not None else await self.create(account, subject_id)

    async def create(self, account: str, subject_id: str) -> SubjectKey:
        """Store a new key for the subject; if another writer got there first, use theirs."""
        new = await self.prepare_new(account, subject_id)
        if await self._fenced_write(account, new.put, "DynamoDB PutItem data key"):
            return self._keep(new.key)
        # Another writer stored a key first: theirs is the subject's key, ours is dropped.
        winner = await self._read(account, subject_id)
        if winner is None:
            # Created and deleted again between our two calls: an erasure won the race.
            raise SubjectErased(f"subject {subject_id!r} was erased while being created")
        return winner

    async def prepare_new(self, account: str, subject_id: str) -> NewSubjectKey:
        """A new key and its conditional ``Put`` for the caller's transaction; writes nothing."""
        generated: GeneratedKey = await self.provider.generate_data_key(
            self._context(account, subject_id)
        )
        put = data_key_put_item(
            table=self.table,
            account=account,
            subject_id=subject_id,
            wrapped=generated.wrapped,
            provider=generated.provider,
            key_id=generated.key_id,
        )
        key = SubjectKey(account, subject_id, AESGCM(generated.plaintext))
        return NewSubjectKey(key=key, put=put)

    def remember(self, new: NewSubjectKey) -> None:
        """Cache a prepared key once the transaction holding its ``put`` has committed.

        Never before: if the transaction fails (say another writer created the subject first),
        a cached key that is not in the table would seal documents nobody can open later.
        """
        self._keep(new.key)

    async def delete(self, account: str, subject_id: str) -> bool:
        """Crypto-shred the subject: delete its key item and evict it. True if a key existed."""
        ident = (account, subject_id)
        self._erased[ident] = True
        self._cache.pop(ident, None)
        delete = data_key_delete_item(table=self.table, account=account, subject_id=subject_id)
        delete["Delete"]["ConditionExpression"] = "attribute_exists(pk)"
        existed = await self._fenced_write(account, delete, "DynamoDB DeleteItem data key")
        self._cache.pop(ident, None)
        return existed

    async def _fenced_write(self, account: str, entry: dict[str, Any], what: str) -> bool:
        """``entry`` with the account's fence check, as one transaction (``fence.py``); False
        when the entry's own condition failed. The fence's refusal is raised as is."""
        check = fence.fence_check(account)
        check["ConditionCheck"]["TableName"] = self.table
        try:
            await self.client.transact_write_items(TransactItems=[entry, check])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise service_error(exc, what) from exc
            reasons = exc.response.get("CancellationReasons") or []
            codes = [str(r.get("Code") or "None") for r in reasons]
            if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
                raise fence.refusal(await self._read_fence(account)) from None
            if codes and codes[0] == "ConditionalCheckFailed":
                return False
            if any(c in {"TransactionConflict", "ThrottlingError"} for c in codes):
                raise KeyServiceUnavailable(f"{what}: {'/'.join(codes)}") from exc
            raise service_error(exc, what) from exc
        except _SERVICE_ERRORS as exc:
            raise service_error(exc, what) from exc
        return True

    async def _read_fence(self, account: str) -> fence.Fence | None:
        try:
            out = await self.client.get_item(
                TableName=self.table, Key=fence.fence_key(account), ConsistentRead=True
            )
        except _SERVICE_ERRORS as exc:
            raise service_error(exc, "DynamoDB GetItem fence") from exc
        return fence.parse(out.get("Item"))

    def evict(self, account: str, subject_id: str) -> None:
        """Forget a subject's key here (after a transaction that deleted it, say)."""
        ident = (account, subject_id)
        self._erased[ident] = True
        self._cache.pop(ident, None)

    def forget(self, account: str, subject_id: str) -> None:
        """Drop a cached key whose item was replaced (an account move's import)."""
        self._cache.pop((account, subject_id), None)

    def clear_cache(self) -> None:
        self._cache.clear()

    async def _read(self, account: str, subject_id: str) -> SubjectKey | None:
        try:
            out = await self.client.get_item(
                TableName=self.table,
                Key=data_key_item_key(account, subject_id),
                # A key created a moment ago must be seen, or a fresh subject looks erased.
                ConsistentRead=True,
            )
        except _SERVICE_ERRORS as exc:
            raise service_error(exc, "DynamoDB GetItem data key") from exc
        item = out.get("Item")
        if not item:
            return None
        try:
            wrapped = bytes(item["wrapped"]["B"])
            provider = item["provider"]["S"]
            key_id = item["keyId"]["S"]
        except (KeyError, TypeError):
            raise DecryptionFailed(
                f"data-key item of subject {subject_id!r} is malformed"
            ) from None
        if provider != self.provider.name:
            raise KeyServiceError(
                f"data key of subject {subject_id!r} was wrapped by provider {provider!r}, "
                f"this store runs {self.provider.name!r}"
            )
        plaintext = await self.provider.unwrap_data_key(
            wrapped, self._context(account, subject_id), key_id=key_id
        )
        return self._keep(SubjectKey(account, subject_id, AESGCM(plaintext)))


class EnvelopeCodec:
    """Seals and opens each document under its subject's data key."""

    def __init__(self, keys: DataKeyStore) -> None:
        self.keys = keys
        self.region = keys.region

    async def seal(
        self,
        *,
        account: str,
        subject_id: str,
        entity_id: str,
        doc: dict[str, Any],
        new_key: NewSubjectKey | None = None,
        create: bool = True,
    ) -> dict[str, Any]:
        """Attributes to put on the item: ``{"doc": {"B": ...}}``.

        Without ``new_key`` the subject's key is loaded, or (``create``) made by its own
        conditional put if the subject has none; with ``create=False`` a subject without a key
        raises ``SubjectErased`` (a write to an existing subject must never mint a fresh key
        for one that was just erased). With ``new_key`` (from ``keys.prepare_new``) it is used
        as is; its ``put`` must go into the same transaction as these attributes.
        """
        if new_key is not None:
            if (new_key.key.account, new_key.key.subject_id) != (account, subject_id):
                raise ValueError("new_key was prepared for another subject")
            key = new_key.key
        elif create:
            key = await self.keys.get_or_create(account, subject_id)
        else:
            key = await self.keys.load(account, subject_id)
        blob = seal_document(key, region=self.region, entity_id=entity_id, doc=doc)
        return {DOC_ATTRIBUTE: {"B": blob}}

    async def open(
        self, *, account: str, subject_id: str, entity_id: str, item: dict[str, Any]
    ) -> dict[str, Any]:
        """The document sealed on ``item`` (low-level attribute values)."""
        attr = item.get(DOC_ATTRIBUTE)
        blob = attr.get("B") if isinstance(attr, dict) else None
        if not isinstance(blob, bytes | bytearray):
            raise DecryptionFailed(f"item {entity_id!r} has no sealed '{DOC_ATTRIBUTE}' attribute")
        key = await self.keys.load(account, subject_id)
        # An item copied here by an account move was sealed in its old region (``sealedIn``);
        # its data key came along, re-wrapped, so the AAD's region is the one it was sealed in.
        sealed_in = item.get(SEALED_IN_ATTRIBUTE)
        region = str(sealed_in["S"]) if isinstance(sealed_in, dict) and "S" in sealed_in else None
        return open_document(
            key, region=region or self.region, entity_id=entity_id, blob=bytes(blob)
        )
