"""The region's transfer key pair: how a subject's data key crosses to another region wrapped.

During an account move the source unwraps each data key with its own ``KeyProvider`` and wraps
it again for the destination's *transfer* public key (RSA-OAEP-256: OAEP, SHA-256, MGF1
SHA-256); the destination unwraps it with the private key and wraps it with its own provider.
No data key is ever in an export in clear or under a key of the source region.

What is encrypted binds the key to its owner, so a wrapped key copied onto another subject (or
account) fails to unwrap::

    "residency-transfer/v1" | length-prefixed(account, subject, data key)

The key id (``kid``) is the first 32 hex digits of sha256(SubjectPublicKeyInfo DER).

Where the private key lives:

- local/dev (``key_provider=local``): a PEM file ``<master key file>.transfer-key.DEV.pem``
  next to the local master key, generated on first use (mode 0600, first line a DEV marker).
  Like the local master key, for development and tests only;
- ``transfer_key_file`` set: that PEM file (provisioned like any other secret);
- production seam: a KMS asymmetric key (KeySpec RSA_3072, KeyUsage ENCRYPT_DECRYPT) of the
  region. ``TransferKeyPair`` is the interface: ``public_pem``/``kid`` from KMS GetPublicKey,
  ``unwrap`` as KMS Decrypt with EncryptionAlgorithm RSAES_OAEP_SHA_256 (the payload format
  above needs no OAEP label, which KMS does not take). Not implemented here: with
  ``key_provider=kms`` and no ``transfer_key_file`` the transfer endpoints answer 503.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..errors import InvalidRecipient
from ..key_providers import DATA_KEY_BYTES, DecryptionFailed, KeyConfigError, length_prefixed

ALG = "RSA-OAEP-256"
KEY_BITS = 3072
DEV_SUFFIX = ".transfer-key.DEV.pem"
_LABEL = b"residency-transfer/v1"
_DEV_MARKER = b"# DEV ONLY: local transfer key of profile-store, never for production data\n"
_MAX_PEM = 16 * 1024


class TransferKeyPair(Protocol):
    kid: str
    public_pem: str

    def unwrap(self, wrapped: bytes, *, account: str, subject: str) -> bytes: ...


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def kid_of(public: rsa.RSAPublicKey) -> str:
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:32]


def _payload(account: str, subject: str, data_key: bytes) -> bytes:
    return _LABEL + length_prefixed(account, subject, data_key)


@dataclass(frozen=True, slots=True)
class Recipient:
    """The destination's public transfer key, as the mover passes it to an export."""

    kid: str
    public: rsa.RSAPublicKey = field(repr=False)

    @classmethod
    def from_pem(cls, kid: str, pem: str) -> Recipient:
        if len(pem) > _MAX_PEM:
            raise InvalidRecipient("recipient.pem is too long")
        try:
            public = serialization.load_pem_public_key(pem.encode())
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise InvalidRecipient("recipient.pem is not a PEM public key") from None
        if not isinstance(public, rsa.RSAPublicKey) or public.key_size < 2048:
            raise InvalidRecipient("recipient.pem must be an RSA key of at least 2048 bits")
        if kid_of(public) != kid:
            raise InvalidRecipient("recipient.kid does not match recipient.pem")
        return cls(kid, public)

    def wrap(self, data_key: bytes, *, account: str, subject: str) -> bytes:
        if len(data_key) != DATA_KEY_BYTES:
            raise ValueError(f"data keys are {DATA_KEY_BYTES} bytes")
        return self.public.encrypt(_payload(account, subject, data_key), _oaep())


class LocalTransferKeyPair:
    """An RSA private key from a PEM file (dev: generated; else provisioned)."""

    def __init__(self, private: rsa.RSAPrivateKey) -> None:
        self._private = private
        public = private.public_key()
        self.kid = kid_of(public)
        self.public_pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def unwrap(self, wrapped: bytes, *, account: str, subject: str) -> bytes:
        try:
            payload = self._private.decrypt(wrapped, _oaep())
        except ValueError:
            raise DecryptionFailed("transfer-wrapped data key does not decrypt") from None
        head = _LABEL + length_prefixed(account, subject) + DATA_KEY_BYTES.to_bytes(4, "big")
        if not payload.startswith(head) or len(payload) != len(head) + DATA_KEY_BYTES:
            raise DecryptionFailed("transfer-wrapped data key belongs to another subject")
        return payload[len(head) :]


def dev_key_path(master_key_file: str | os.PathLike[str]) -> Path:
    return Path(f"{master_key_file}{DEV_SUFFIX}")


def _generate_dev_file(path: Path) -> None:
    """Write a new key to ``path`` unless one is there: temp file + link, so concurrent store
    instances of one region never end up with two different keys."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".transfer-key-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_DEV_MARKER + pem)
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another instance made it first: theirs is the region's key
    finally:
        os.unlink(tmp)


def load_key_pair(
    *, transfer_key_file: str | None, local_master_key_file: str | None, key_provider: str
) -> LocalTransferKeyPair:
    """The region's pair from the settings; ``KeyConfigError`` when there is none to use."""
    if transfer_key_file:
        path = Path(transfer_key_file)
    elif key_provider == "local" and local_master_key_file:
        path = dev_key_path(local_master_key_file)
        if not path.exists():
            _generate_dev_file(path)
    else:
        raise KeyConfigError(
            "no transfer key: set PROFILE_STORE_TRANSFER_KEY_FILE (a KMS transfer key is not "
            "implemented yet)"
        )
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyConfigError(
            f"setting 'transfer_key_file' (PROFILE_STORE_TRANSFER_KEY_FILE): cannot load "
            f"{path} ({type(exc).__name__})"
        ) from None
    if not isinstance(private, rsa.RSAPrivateKey) or private.key_size < 2048:
        raise KeyConfigError(f"transfer key {path} must be an RSA key of at least 2048 bits")
    return LocalTransferKeyPair(private)
