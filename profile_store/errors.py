"""One exception tree for the store; botocore/aiohttp failures are mapped into it at the boundary.

Every error the service can answer with is a ``StoreError`` carrying an HTTP status and a stable
machine code; ``app.error_middleware`` is the single place that turns one into a JSON body
``{"error": code, "message": ...}``. Messages are written by us and never contain request values
(an email or a document is PII, and so is an alternative-key path segment)::

    StoreError                          status  code
    ├── BadRequest                      400     invalid_json, invalid_field, missing_reason, ...
    ├── Unauthenticated                 401     missing_assertion, invalid_assertion, ...
    ├── Forbidden                       403     forbidden
    ├── NotFound                        404     not_found
    ├── MethodNotAllowed                405     method_not_allowed
    ├── Conflict                        409     duplicate_alternative_key, update_conflict, ...
    │   ├── SubjectSuppressed           409     subject_suppressed (the email was erased)
    │   └── AlreadyApplied              409     already_applied (this request's token was used)
    ├── Gone                            410     created_then_deleted (an idempotent replay)
    ├── PreconditionFailed              412     version_mismatch
    ├── PayloadTooLarge                 413     payload_too_large
    ├── Misdirected                     421     misdirected_request
    │   └── ResidencyMismatch           421     residency_mismatch (the account moved: fence.py)
    ├── Unprocessable                   422     idempotency_key_reused
    ├── StorageUnavailable              503     dynamodb_unavailable (+ Retry-After)
    ├── WriteOutcomeUnknown             503     write_outcome_unknown (+ Retry-After)
    ├── AuditUnavailable                503     audit_unavailable (+ Retry-After)
    ├── AccountMoving                   503     account_moving (+ Retry-After: 2; fence.py;
    │                                           also an unmask read: its audit record waits)
    ├── KeyUnavailable                  503     key_service_unavailable (+ Retry-After)
    ├── EncryptionFailure               500     encryption_error (no details)
    └── StorageFailure                  502     dynamodb_error

Repository-internal signals (never answered as such, always translated by the domain layer):
``ConditionFailed`` (a conditional write lost: which transaction items failed is in ``indexes``).

``from_botocore`` is the boundary: throttling, timeouts and connection failures become
``StorageUnavailable`` (the caller may retry), anything else unexpected ``StorageFailure``.
``StorageUnavailable.maybe_applied`` tells a write whether DynamoDB may have received and
applied it (a read timeout, a dropped connection, a 5xx, a transaction still in progress) or
surely did not (connection refused, connect timeout, throttling): the write path
(``Repository.transact``) retries the same transaction with the same ``ClientRequestToken``
and, if the outcome is still open when its time is up, answers ``WriteOutcomeUnknown``.
DynamoDB's ``IdempotentParameterMismatchException`` (this token was used, within 10 minutes,
by a transaction with other contents: the same request was already applied) is
``AlreadyApplied``.
``from_crypto`` is the other one, for the envelope-encryption tree (``keys.CryptoError``): an
unreachable key service is ``KeyUnavailable``, an erased subject (its data key was shredded) is
``NotFound`` like any missing record, and a failed unwrap or decryption is ``EncryptionFailure``,
whose message says nothing about which key or item failed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import botocore.exceptions

from .keys import CryptoError, KeyServiceUnavailable, SubjectErased

__all__ = [
    "AccountMoving",
    "AlreadyApplied",
    "AuditUnavailable",
    "BadRequest",
    "ConditionFailed",
    "Conflict",
    "EncryptionFailure",
    "Forbidden",
    "Gone",
    "KeyUnavailable",
    "MethodNotAllowed",
    "Misdirected",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "ResidencyMismatch",
    "StorageFailure",
    "StorageUnavailable",
    "StoreError",
    "SubjectSuppressed",
    "Unauthenticated",
    "Unprocessable",
    "WriteOutcomeUnknown",
    "from_botocore",
    "from_crypto",
]


class StoreError(Exception):
    status = 500
    code = "internal_error"
    headers: dict[str, str] | None = None

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message}


class BadRequest(StoreError):
    status = 400
    code = "invalid_request"


class Unauthenticated(StoreError):
    status = 401
    code = "invalid_assertion"


class Forbidden(StoreError):
    status = 403
    code = "forbidden"


class NotFound(StoreError):
    status = 404
    code = "not_found"


class MethodNotAllowed(StoreError):
    status = 405
    code = "method_not_allowed"


class Conflict(StoreError):
    status = 409
    code = "conflict"


class SubjectSuppressed(Conflict):
    code = "subject_suppressed"


class AlreadyApplied(Conflict):
    code = "already_applied"


class Gone(StoreError):
    status = 410
    code = "created_then_deleted"


class PreconditionFailed(StoreError):
    status = 412
    code = "version_mismatch"


class PayloadTooLarge(StoreError):
    status = 413
    code = "payload_too_large"


class Misdirected(StoreError):
    status = 421
    code = "misdirected_request"


class ResidencyMismatch(Misdirected):
    """The account is not (or no longer, or not yet) served by this region: it moved."""

    code = "residency_mismatch"


class Unprocessable(StoreError):
    status = 422
    code = "idempotency_key_reused"


class StorageUnavailable(StoreError):
    status = 503
    code = "dynamodb_unavailable"
    headers = {"Retry-After": "1"}

    def __init__(self, message: str, *, maybe_applied: bool = False) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied  # a write may have reached DynamoDB


class WriteOutcomeUnknown(StoreError):
    """A write was sent, retried with the same token until its time was up, and DynamoDB never
    said whether it was applied. A retry with the same body and Idempotency-Key is safe."""

    status = 503
    code = "write_outcome_unknown"
    headers = {"Retry-After": "1"}


class AuditUnavailable(StoreError):
    status = 503
    code = "audit_unavailable"
    headers = {"Retry-After": "1"}


class AccountMoving(StoreError):
    """The account's writes are frozen for the final catch-up of a move; retry shortly.

    Audited reads (the ``/unmask`` reads) are refused too: each writes an audit record
    before it answers, and the freeze stops every write to the account's items, so the
    record can be neither written nor carried to the new region. Every other read is served.
    The body says so: ``refused`` names what the freeze refuses."""

    status = 503
    code = "account_moving"
    headers = {"Retry-After": "2"}
    REFUSED = ("writes", "audited_reads")

    def body(self) -> dict[str, Any]:
        return {**super().body(), "refused": list(self.REFUSED)}


class KeyUnavailable(StoreError):
    status = 503
    code = "key_service_unavailable"
    headers = {"Retry-After": "1"}


class EncryptionFailure(StoreError):
    status = 500
    code = "encryption_error"


class StorageFailure(StoreError):
    status = 502
    code = "dynamodb_error"


class ConditionFailed(Exception):
    """A conditional write was rejected; ``indexes`` are the failed TransactItems positions.

    ``contention`` is set when DynamoDB cancelled because of a concurrent transaction on the
    same item (TransactionConflict): the caller treats it like a lost version race.
    """

    def __init__(self, indexes: tuple[int, ...], *, contention: bool = False) -> None:
        super().__init__(f"condition failed at {indexes}")
        self.indexes = indexes
        self.contention = contention


# Error codes DynamoDB uses when the caller should simply come back a little later: refused
# before any work (throttling), or failed on DynamoDB's side, where a write may have landed.
_THROTTLED_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "LimitExceededException",
    }
)
_SERVER_CODES = frozenset(
    {
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        # An earlier send of this very transaction (same token) is still being applied.
        "TransactionInProgressException",
    }
)
_RETRYABLE_CODES = _THROTTLED_CODES | _SERVER_CODES
# Failures before the request left this process: nothing reached DynamoDB.
_NOT_SENT = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    aiohttp.ClientConnectorError,
    ConnectionRefusedError,
)


def client_error_code(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def from_botocore(exc: BaseException, *, call: str) -> StoreError | ConditionFailed:
    """Translate an exception raised by the DynamoDB client into the package tree."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code = client_error_code(exc)
        if code == "ConditionalCheckFailedException":
            return ConditionFailed((0,))
        if code == "TransactionCanceledException":
            reasons = exc.response.get("CancellationReasons") or []
            codes = [str(r.get("Code") or "None") for r in reasons]
            failed = tuple(i for i, c in enumerate(codes) if c == "ConditionalCheckFailed")
            if failed:
                return ConditionFailed(failed)
            if "TransactionConflict" in codes:
                return ConditionFailed((), contention=True)
            if any(c in _RETRYABLE_CODES or c == "ThrottlingError" for c in codes):
                return StorageUnavailable(f"DynamoDB throttled {call}; retry later")
            return StorageFailure(f"DynamoDB cancelled {call}")
        if code == "TransactionConflictException":
            return ConditionFailed((), contention=True)
        if code == "IdempotentParameterMismatchException":
            return AlreadyApplied(
                "a request with this Idempotency-Key (or X-Request-Id) and this body was "
                "already applied in the last minutes; read the resource for its state, or send "
                "a new key for a new write"
            )
        if code in _RETRYABLE_CODES:
            return StorageUnavailable(
                f"DynamoDB is throttling or unavailable ({call})",
                maybe_applied=code in _SERVER_CODES,
            )
        if code == "ResourceNotFoundException":
            return StorageUnavailable(f"DynamoDB table is not available ({call})")
        return StorageFailure(f"DynamoDB rejected {call} ({code or 'unknown error'})")
    if isinstance(
        exc,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectTimeoutError
        | botocore.exceptions.ReadTimeoutError
        | botocore.exceptions.ConnectionClosedError
        | botocore.exceptions.HTTPClientError
        | aiohttp.ClientError
        | asyncio.TimeoutError
        | ConnectionError,
    ):
        return StorageUnavailable(
            f"DynamoDB is unreachable ({call})", maybe_applied=not isinstance(exc, _NOT_SENT)
        )
    return StorageFailure(f"unexpected DynamoDB client failure ({call}: {type(exc).__name__})")


def from_crypto(exc: CryptoError) -> StoreError:
    """Translate an envelope-encryption error; messages never say which key or item failed."""
    if isinstance(exc, KeyServiceUnavailable):
        return KeyUnavailable("the key service is unavailable; retry later")
    if isinstance(exc, SubjectErased):
        return NotFound("not found")
    return EncryptionFailure("stored data could not be decrypted or encrypted")
