"""Key providers: make, wrap and unwrap the 32-byte data keys that encrypt one data subject's PII.

A provider never sees a document. It hands out a fresh data key together with its *wrapped*
(encrypted) form, and turns a wrapped key back into the plaintext key. Every wrap is bound to a
``KeyContext`` (region, account, subject): a wrapped key copied to another subject, account or
region does not unwrap. ``crypto.py`` stores the wrapped keys in the table and does the rest.

Two providers, chosen by ``StoreSettings.key_provider``:

* ``LocalKeyProvider`` — AES-256-GCM under a master key read from a file. **For development
  and tests only, never for production**: the master key sits on disk next to the service, so
  anyone who can read the box can read every subject's data. ``generate_local_master_key``
  writes one (mode 0600).
* ``KmsKeyProvider`` — AWS KMS (``GenerateDataKey`` / ``Decrypt``, EncryptionContext
  ``{account, subject, region}``). The master key never leaves KMS. A key from another region
  is refused before the first request: residency covers the key as much as the data.

``provider_from_settings(settings, kms_client=...)`` picks one from ``StoreSettings``.

Errors, one tree for keys and ``crypto.py`` (which re-exports it); the app maps it in one place::

    CryptoError
    ├── KeyConfigError         bad key setting; also a config.ConfigError -> refuse to start
    ├── KeyServiceUnavailable  KMS or the data-key table unreachable, throttled, timed out -> 503
    ├── KeyServiceError        KMS or the table refused (access denied, key disabled ...) -> 500
    ├── DecryptionFailed       a wrapped key or a document fails authentication -> 500
    └── SubjectErased          the subject's data key is gone (crypto-shredded) -> 404/410
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from residency_contract.settings import ConfigError

__all__ = [
    "DATA_KEY_BYTES",
    "CryptoError",
    "DecryptionFailed",
    "GeneratedKey",
    "KeyConfigError",
    "KeyContext",
    "KeyProvider",
    "KeyServiceError",
    "KeyServiceUnavailable",
    "KmsKeyProvider",
    "LocalKeyProvider",
    "SubjectErased",
    "generate_local_master_key",
    "kms_key_region",
    "length_prefixed",
    "provider_from_settings",
    "service_error",
]

log = logging.getLogger(__name__)

DATA_KEY_BYTES = 32
_NONCE_BYTES = 12
_LOCAL_WRAP_VERSION = b"\x01"
_LOCAL_WRAP_LABEL = b"profile-store/data-key/v1"
_KMS_ARN = re.compile(r"^arn:aws[a-z-]*:kms:(?P<region>[a-z0-9-]+):\d{12}:(?:key|alias)/.+$")


class CryptoError(Exception):
    """Base of every key and envelope-encryption error."""


class KeyConfigError(CryptoError, ConfigError):
    """A key setting is unusable (missing file, wrong length, key in another region)."""


class KeyServiceUnavailable(CryptoError):
    """KMS or the data-key table could not be reached in time; retrying later may work."""


class KeyServiceError(CryptoError):
    """KMS or the data-key table answered with a refusal that retrying will not fix."""


class DecryptionFailed(CryptoError):
    """Ciphertext or wrapped key failed authentication: tampered, moved, or the wrong key."""


class SubjectErased(CryptoError):
    """The data subject has no data key any more: its data was crypto-shredded."""


def length_prefixed(*parts: str | bytes) -> bytes:
    """Canonical, unambiguous bytes for a tuple of fields (4-byte big-endian length + bytes).

    Plain joining would let ``("a#b", "c")`` and ``("a", "b#c")`` collide; a length prefix
    cannot.
    """
    out = bytearray()
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


@dataclass(frozen=True, slots=True)
class KeyContext:
    """Who a data key belongs to; every wrap and unwrap is bound to exactly this."""

    region: str
    account: str
    subject: str

    def aad(self) -> bytes:
        return _LOCAL_WRAP_LABEL + length_prefixed(self.region, self.account, self.subject)

    def encryption_context(self) -> dict[str, str]:
        return {"account": self.account, "subject": self.subject, "region": self.region}


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    """A fresh data key and its wrapped form, as a provider hands it out."""

    plaintext: bytes = field(repr=False)
    wrapped: bytes
    provider: str
    key_id: str


class KeyProvider(Protocol):
    """What ``crypto.py`` needs from a key provider."""

    name: str

    @property
    def key_id(self) -> str:
        """The master key in use (an ARN for KMS, a fingerprint for the local key)."""
        ...

    async def start(self) -> None:
        """Resolve and check the master key once, before the first request."""
        ...

    async def generate_data_key(self, ctx: KeyContext) -> GeneratedKey: ...

    async def wrap_data_key(self, plaintext: bytes, ctx: KeyContext) -> bytes: ...

    async def unwrap_data_key(self, wrapped: bytes, ctx: KeyContext, *, key_id: str) -> bytes: ...


# --- local (dev/test only) ------------------------------------------------------------------

_LOCAL_SETTING = "setting 'local_master_key_file' (PROFILE_STORE_LOCAL_MASTER_KEY_FILE)"


def _decode_master_key(text: str) -> bytes:
    value = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]+", value) and len(value) % 2 == 0:
        raw = bytes.fromhex(value)
    else:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise KeyConfigError(
                f"{_LOCAL_SETTING}: the file must hold a 32-byte key as base64 or hex"
            ) from None
    if len(raw) != DATA_KEY_BYTES:
        raise KeyConfigError(
            f"{_LOCAL_SETTING}: master key is {len(raw)} bytes, need exactly {DATA_KEY_BYTES}"
        )
    return raw


def generate_local_master_key(path: str | os.PathLike[str]) -> Path:
    """Write a new random 32-byte master key (base64) to ``path`` with mode 0600.

    Refuses to overwrite: replacing a master key makes every wrapped data key, hence every
    subject's data, unreadable. Dev/test only, like ``LocalKeyProvider``.
    """
    target = Path(path)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(secrets.token_bytes(DATA_KEY_BYTES)).decode() + "\n")
    return target


class LocalKeyProvider:
    """Wraps data keys with AES-256-GCM under a file-held master key. Dev/tests only."""

    name = "local"

    def __init__(self, master_key_file: str | os.PathLike[str]) -> None:
        path = Path(master_key_file)
        try:
            text = path.read_text()
            mode = path.stat().st_mode
        except OSError as exc:
            raise KeyConfigError(f"{_LOCAL_SETTING}: cannot read {path} ({exc})") from None
        master = _decode_master_key(text)
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("local master key %s is readable by group/others; chmod 600 it", path)
        log.warning("key_provider=local: master key on disk, for development and tests only")
        self._aead = AESGCM(master)
        # A fingerprint, not the key: lets a record wrapped under another master key be told
        # apart from a tampered one.
        digest = hashlib.sha256(b"profile-store/local-master-key-id\x00" + master).hexdigest()
        self._key_id = f"local:{digest[:16]}"

    @property
    def key_id(self) -> str:
        return self._key_id

    async def start(self) -> None:
        return None

    async def generate_data_key(self, ctx: KeyContext) -> GeneratedKey:
        plaintext = secrets.token_bytes(DATA_KEY_BYTES)
        wrapped = await self.wrap_data_key(plaintext, ctx)
        return GeneratedKey(plaintext, wrapped, self.name, self._key_id)

    async def wrap_data_key(self, plaintext: bytes, ctx: KeyContext) -> bytes:
        if len(plaintext) != DATA_KEY_BYTES:
            raise ValueError(f"data keys are {DATA_KEY_BYTES} bytes")
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return _LOCAL_WRAP_VERSION + nonce + self._aead.encrypt(nonce, plaintext, ctx.aad())

    async def unwrap_data_key(self, wrapped: bytes, ctx: KeyContext, *, key_id: str) -> bytes:
        if key_id != self._key_id:
            raise KeyServiceError(
                f"data key was wrapped under master key {key_id}, this store has {self._key_id}"
            )
        if len(wrapped) < 1 + _NONCE_BYTES + 16 or wrapped[:1] != _LOCAL_WRAP_VERSION:
            raise DecryptionFailed("wrapped data key is malformed")
        nonce, body = wrapped[1 : 1 + _NONCE_BYTES], wrapped[1 + _NONCE_BYTES :]
        try:
            plaintext = self._aead.decrypt(nonce, body, ctx.aad())
        except InvalidTag:
            raise DecryptionFailed("wrapped data key failed authentication") from None
        if len(plaintext) != DATA_KEY_BYTES:
            raise DecryptionFailed("wrapped data key has the wrong length")
        return plaintext


# --- AWS KMS --------------------------------------------------------------------------------

# Answers (KMS or DynamoDB) that mean "try again later" (-> 503); anything else that is not a bad
# ciphertext is a refusal (-> 500).
_RETRYABLE = frozenset(
    {
        "DependencyTimeoutException",
        "KMSInternalException",
        "KeyUnavailableException",
        "LimitExceededException",
        "ThrottlingException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalServerError",
        "RequestTimeout",
        "RequestTimeoutException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "TransactionConflictException",
    }
)
_BAD_CIPHERTEXT = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})


def service_error(exc: Exception, what: str) -> CryptoError:
    """Convert a botocore/aiobotocore failure into this module's tree (the one boundary)."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _BAD_CIPHERTEXT:
            return DecryptionFailed(f"{what}: {code}")
        if code in _RETRYABLE or status >= 500:
            return KeyServiceUnavailable(f"{what}: {code or status}")
        return KeyServiceError(f"{what}: {code or status}")
    if isinstance(exc, BotoConnectionError | HTTPClientError | TimeoutError):
        return KeyServiceUnavailable(f"{what}: {type(exc).__name__}")
    if isinstance(exc, BotoCoreError):
        return KeyServiceError(f"{what}: {exc}")
    raise TypeError(f"not a service error: {exc!r}") from exc


_SERVICE_ERRORS = (ClientError, BotoCoreError, TimeoutError)


def kms_key_region(key_id: str) -> str | None:
    """The region in a KMS key or alias ARN; ``None`` for a bare key id or alias name."""
    m = _KMS_ARN.match(key_id)
    return m.group("region") if m else None


class KmsKeyProvider:
    """Data keys from AWS KMS, bound to ``{account, subject, region}`` by EncryptionContext.

    ``client`` is an aiobotocore KMS client for ``region``, owned (and closed) by the caller.
    A key ARN in another region is refused here; a bare key id or alias is resolved with
    ``DescribeKey`` in ``start()`` and its ARN's region checked the same way.
    """

    name = "kms"

    def __init__(self, kms_key_id: str, region: str, client: Any) -> None:
        if not kms_key_id:
            raise KeyConfigError("key_provider=kms needs PROFILE_STORE_KMS_KEY_ID")
        client_region = getattr(getattr(client, "meta", None), "region_name", region)
        if client_region != region:
            raise KeyConfigError(
                f"KMS client is for region {client_region}, this store serves {region}"
            )
        self._configured = kms_key_id
        self._region = region
        self._client = client
        self._arn: str | None = None
        self._check_region(kms_key_id)
        if kms_key_id.startswith("arn:") and ":key/" in kms_key_id:
            self._arn = kms_key_id

    def _check_region(self, key_id: str) -> None:
        key_region = kms_key_region(key_id)
        if key_id.startswith("arn:") and key_region is None:
            raise KeyConfigError(
                f"setting 'kms_key_id' (PROFILE_STORE_KMS_KEY_ID): {key_id!r} is not a KMS ARN"
            )
        if key_region is not None and key_region != self._region:
            raise KeyConfigError(
                f"setting 'kms_key_id' (PROFILE_STORE_KMS_KEY_ID): key is in {key_region}, "
                f"this store serves {self._region}; PII keys must stay in the data's region"
            )

    @property
    def key_id(self) -> str:
        return self._arn or self._configured

    async def start(self) -> None:
        if self._arn is not None:
            return
        try:
            meta = (await self._client.describe_key(KeyId=self._configured))["KeyMetadata"]
        except _SERVICE_ERRORS as exc:
            raise service_error(exc, f"KMS DescribeKey {self._configured}") from exc
        arn = str(meta["Arn"])
        if kms_key_region(arn) is None:
            raise KeyConfigError(f"KMS DescribeKey returned no usable ARN for {self._configured}")
        self._check_region(arn)
        self._arn = arn

    async def _key_arn(self, ctx: KeyContext) -> str:
        if ctx.region != self._region:
            raise ValueError(f"key context for {ctx.region} given to the {self._region} provider")
        if self._arn is None:
            await self.start()
        assert self._arn is not None
        return self._arn

    async def generate_data_key(self, ctx: KeyContext) -> GeneratedKey:
        arn = await self._key_arn(ctx)
        try:
            out = await self._client.generate_data_key(
                KeyId=arn, KeySpec="AES_256", EncryptionContext=ctx.encryption_context()
            )
        except _SERVICE_ERRORS as exc:
            raise service_error(exc, "KMS GenerateDataKey") from exc
        plaintext = bytes(out["Plaintext"])
        if len(plaintext) != DATA_KEY_BYTES:
            raise KeyServiceError("KMS GenerateDataKey returned a key of the wrong length")
        return GeneratedKey(plaintext, bytes(out["CiphertextBlob"]), self.name, arn)

    async def wrap_data_key(self, plaintext: bytes, ctx: KeyContext) -> bytes:
        arn = await self._key_arn(ctx)
        try:
            out = await self._client.encrypt(
                KeyId=arn, Plaintext=plaintext, EncryptionContext=ctx.encryption_context()
            )
        except _SERVICE_ERRORS as exc:
            raise service_error(exc, "KMS Encrypt") from exc
        return bytes(out["CiphertextBlob"])

    async def unwrap_data_key(self, wrapped: bytes, ctx: KeyContext, *, key_id: str) -> bytes:
        arn = await self._key_arn(ctx)
        # Only ever decrypt under the configured key: a keyId read from the table is data, and
        # trusting it would let a table writer point us at a key of their choosing.
        if key_id != arn:
            raise KeyServiceError(f"data key was wrapped under {key_id}, this store uses {arn}")
        try:
            out = await self._client.decrypt(
                CiphertextBlob=wrapped, KeyId=arn, EncryptionContext=ctx.encryption_context()
            )
        except _SERVICE_ERRORS as exc:
            raise service_error(exc, "KMS Decrypt") from exc
        plaintext = bytes(out["Plaintext"])
        if len(plaintext) != DATA_KEY_BYTES:
            raise DecryptionFailed("KMS returned a data key of the wrong length")
        return plaintext


def provider_from_settings(settings: Any, *, kms_client: Any = None) -> KeyProvider:
    """The provider ``StoreSettings`` asks for; KMS needs the app's aiobotocore KMS client."""
    if settings.key_provider == "local":
        if not settings.local_master_key_file:
            raise KeyConfigError(f"key_provider=local needs {_LOCAL_SETTING}")
        return LocalKeyProvider(settings.local_master_key_file)
    if settings.key_provider == "kms":
        if kms_client is None:
            raise KeyConfigError("key_provider=kms needs a KMS client for the store's region")
        return KmsKeyProvider(settings.kms_key_id or "", settings.region, kms_client)
    raise KeyConfigError(
        f"setting 'key_provider' (PROFILE_STORE_KEY_PROVIDER): {settings.key_provider!r}, "
        "expected local or kms"
    )
