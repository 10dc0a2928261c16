"""One exception tree for the store; botocore/aiohttp failures are mapped into it at the boundary.

Every error the service can answer with is a ``StoreError`` carrying an HTTP status and a stable
machine code; ``app.errors`` is the single place that turns one into a JSON body
``{"error": code, "message": ...}``. Messages are written by us and never contain request values
(an email or a document is PII, and so is an alternative-key path segment). The codes another
deployable reacts to are the contract's (``residency_contract.protocol``)::

    StoreError                          status  code
    ├── BadRequest                      400     invalid_json, invalid_field, missing_reason, ...
    │   └── InvalidRecipient            400     invalid_recipient (a move's recipient key)
    ├── Unauthenticated                 401     missing_assertion, invalid_assertion, ...
    ├── Forbidden                       403     forbidden
    ├── NotFound                        404     not_found
    ├── MethodNotAllowed                405     method_not_allowed
    ├── Conflict                        409     duplicate_alternative_key, update_conflict, ...
    │   ├── SubjectSuppressed           409     subject_suppressed (the email was erased)
    │   ├── AlreadyApplied              409     already_applied (this request's token was used)
    │   ├── StaleGeneration             409     stale_generation (a move: the fence is newer)
    │   ├── NotIncoming                 409     not_incoming (a move: no incoming fence)
    │   ├── WrongFenceState             409     wrong_fence_state (a move: another fence state)
    │   └── CheckpointTrimmed           409     checkpoint_trimmed (a move: restart the copy)
    ├── Gone                            410     created_then_deleted (an idempotent replay)
    ├── PreconditionFailed              412     version_mismatch
    ├── PayloadTooLarge                 413     payload_too_large
    ├── Misdirected                     421     misdirected_request
    │   └── ResidencyMismatch           421     residency_mismatch (the account moved: fence.py)
    ├── Unprocessable                   422     idempotency_key_reused
    ├── Unavailable                     503     (+ Retry-After: 1 unless said): retry later
    │   ├── StorageUnavailable          503     dynamodb_unavailable
    │   │   └── StreamUnavailable       503     stream_unavailable (a move: no table stream)
    │   ├── WriteOutcomeUnknown         503     write_outcome_unknown
    │   ├── AuditUnavailable            503     audit_unavailable
    │   ├── AccountMoving               503     account_moving (Retry-After: 2; fence.py; also
    │   │                                       an unmask read: its audit record waits)
    │   ├── KeyUnavailable              503     key_service_unavailable
    │   └── TransferKeyUnavailable      503     transfer_key_unavailable (Retry-After: 5)
    ├── EncryptionFailure               500     encryption_error (no details)
    ├── TransferItemError               500     transfer_item_error (a move: a bad data-key item)
    └── StorageFailure                  502     dynamodb_error

The errors marked "a move" are the account-move endpoints' (``transfer/``).

Internal signals, never answered as such, translated where they are caught: ``ConditionFailed``
(a conditional write lost: which transaction items failed is in ``indexes``; the domain layer
translates it) and ``MalformedItem`` (an item or key of a move's body is not one of the
account's stored items: the transfer handlers answer 400 ``invalid_item`` or ``invalid_key``).

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
``from_crypto`` is the other one, for the envelope-encryption tree
(``key_providers.CryptoError``): an unreachable key service is ``KeyUnavailable``, an erased
subject (its data key was shredded) is ``NotFound`` like any missing record, and a failed unwrap
or decryption is ``EncryptionFailure``, whose message says nothing about which key or item
failed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import botocore.exceptions

from residency_contract.protocol import (
    ACCOUNT_MOVING,
    CHECKPOINT_TRIMMED,
    DYNAMODB_UNAVAILABLE,
    KEY_SERVICE_UNAVAILABLE,
)

from .key_providers import CryptoError, KeyServiceUnavailable, SubjectErased

__all__ = [
    "AccountMoving",
    "AlreadyApplied",
    "AuditUnavailable",
    "BadRequest",
    "CheckpointTrimmed",
    "ConditionFailed",
    "Conflict",
    "EncryptionFailure",
    "Forbidden",
    "Gone",
    "InvalidRecipient",
    "KeyUnavailable",
    "MalformedItem",
    "MethodNotAllowed",
    "Misdirected",
    "NotFound",
    "NotIncoming",
    "PayloadTooLarge",
    "PreconditionFailed",
    "ResidencyMismatch",
    "StaleGeneration",
    "StorageFailure",
    "StorageUnavailable",
    "StoreError",
    "StreamUnavailable",
    "SubjectSuppressed",
    "TransferItemError",
    "TransferKeyUnavailable",
    "Unauthenticated",
    "Unavailable",
    "Unprocessable",
    "WriteOutcomeUnknown",
    "WrongFenceState",
    "client_error_code",
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


class InvalidRecipient(BadRequest):
    """The recipient transfer key of a move's export is unusable (not RSA, too small, its kid
    does not match)."""

    code = "invalid_recipient"


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
    """The email belongs to an erased data subject: an operator lifts the suppression first."""

    code = "subject_suppressed"


class AlreadyApplied(Conflict):
    """This request's token was used, within minutes, by a transaction with other contents: the
    same request, applied already."""

    code = "already_applied"


class StaleGeneration(Conflict):
    """The account's fence carries a higher generation than the request: a newer move owns it."""

    code = "stale_generation"


class NotIncoming(Conflict):
    """An import, or a destination's purge, in an account whose fence is not ``incoming`` (a
    move fences its destination before anything is copied there)."""

    code = "not_incoming"


class WrongFenceState(Conflict):
    """A move's step needs the account's fence in another state (or generation)."""

    code = "wrong_fence_state"


class CheckpointTrimmed(Conflict):
    """The table's stream no longer holds every change since a move's checkpoint (or is another
    stream): the mover restarts the copy."""

    code = CHECKPOINT_TRIMMED


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


class Unavailable(StoreError):
    """Something this store depends on cannot serve now: every 503 says when to retry."""

    status = 503
    code = "unavailable"
    headers = {"Retry-After": "1"}


class StorageUnavailable(Unavailable):
    code = DYNAMODB_UNAVAILABLE

    def __init__(self, message: str, *, maybe_applied: bool = False) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied  # a write may have reached DynamoDB


class StreamUnavailable(StorageUnavailable):
    """DynamoDB Streams cannot be read, or the table has none."""

    code = "stream_unavailable"


class WriteOutcomeUnknown(Unavailable):
    """A write was sent, retried with the same token until its time was up, and DynamoDB never
    said whether it was applied. A retry with the same body and Idempotency-Key is safe."""

    code = "write_outcome_unknown"


class AuditUnavailable(Unavailable):
    code = "audit_unavailable"


class AccountMoving(Unavailable):
    """The account's writes are frozen for the final catch-up of a move; retry shortly.

    Audited reads (the ``/unmask`` reads) are refused too: each writes an audit record
    before it answers, and the freeze stops every write to the account's items, so the
    record can be neither written nor carried to the new region. Every other read is served.
    The body says so: ``refused`` names what the freeze refuses."""

    code = ACCOUNT_MOVING
    headers = {"Retry-After": "2"}
    REFUSED = ("writes", "audited_reads")

    def body(self) -> dict[str, Any]:
        return {**super().body(), "refused": list(self.REFUSED)}


class KeyUnavailable(Unavailable):
    code = KEY_SERVICE_UNAVAILABLE


class TransferKeyUnavailable(Unavailable):
    """The region has no transfer key pair to use (``transfer/key_pair.py``)."""

    code = "transfer_key_unavailable"
    headers = {"Retry-After": "5"}


class EncryptionFailure(StoreError):
    status = 500
    code = "encryption_error"


class TransferItemError(StoreError):
    """An item of this account cannot be exported (a stored data key is malformed)."""

    status = 500
    code = "transfer_item_error"


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


class MalformedItem(ValueError):
    """An item or key in a transfer body is not a valid stored item of the account (the message
    names no value)."""


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
