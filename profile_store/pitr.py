"""Point-in-time recovery (PITR) of a regional profile table: check it, turn it on, restore.

PITR is the Profile System's answer to "a bad deploy overwrote profiles": DynamoDB keeps a
continuous backup for up to 35 days and can restore it into a *new* table (never in place).
The functions take an aiobotocore DynamoDB client; the operator runs them as
``profile-store pitr show|enable|restore`` (``__main__.py``)::

    profile-store pitr show    [--table T] [--region R] [--endpoint URL]
    profile-store pitr enable  ...
    profile-store pitr restore --to 2026-05-01T12:00:00Z|latest --target-table NEW ...

Exit codes: 0 done, 1 AWS refused or failed, 2 usage error or an endpoint without PITR
(DynamoDB Local answers ``UnknownOperationException``).

A restore brings back everything the table held at that time, including data keys of subjects
erased since (see ``crypto.py``): restored tables are as sensitive as the live one, and erasures
made after the restore point must be replayed on them.

Errors::

    PitrError
    ├── PitrUnsupported       the endpoint has no PITR API (DynamoDB Local) -> exit 2
    ├── PitrUnavailable       DynamoDB unreachable, throttled, timed out
    └── PitrRefused           DynamoDB said no: table missing, PITR off, bad time, target exists
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

__all__ = [
    "UNSUPPORTED_MESSAGE",
    "PitrError",
    "PitrRefused",
    "PitrState",
    "PitrUnavailable",
    "PitrUnsupported",
    "RestoreResult",
    "describe_pitr",
    "enable_pitr",
    "parse_restore_time",
    "pitr_status",
    "restore_to_point_in_time",
]

UNSUPPORTED_MESSAGE = "this endpoint does not support point-in-time recovery (DynamoDB Local)"
_RETRYABLE = frozenset(
    {
        "InternalServerError",
        "ServiceUnavailable",
        "ThrottlingException",
        "LimitExceededException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
    }
)
_SERVICE_ERRORS = (ClientError, BotoCoreError, TimeoutError)


class PitrError(Exception):
    """Base of every PITR tooling error."""


class PitrUnsupported(PitrError):
    """The endpoint does not implement the PITR API (DynamoDB Local)."""


class PitrUnavailable(PitrError):
    """DynamoDB could not be reached or asked us to slow down; retrying later may work."""


class PitrRefused(PitrError):
    """DynamoDB refused the request (no such table, PITR off, bad time, target exists ...)."""


def _convert(exc: Exception, what: str) -> PitrError:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        message = error.get("Message") or code
        if code == "UnknownOperationException":
            return PitrUnsupported(UNSUPPORTED_MESSAGE)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _RETRYABLE or status >= 500:
            return PitrUnavailable(f"{what}: {code}: {message}")
        return PitrRefused(f"{what}: {code}: {message}")
    if isinstance(exc, BotoConnectionError | HTTPClientError | TimeoutError):
        return PitrUnavailable(f"{what}: cannot reach DynamoDB ({exc})")
    return PitrRefused(f"{what}: {exc}")


@dataclass(frozen=True, slots=True)
class PitrState:
    table: str
    enabled: bool
    earliest_restorable: datetime | None = None
    latest_restorable: datetime | None = None
    recovery_period_days: int | None = None


@dataclass(frozen=True, slots=True)
class RestoreResult:
    source_table: str
    target_table: str
    target_status: str
    target_arn: str | None
    restore_time: datetime | None


async def describe_pitr(client: Any, table: str) -> PitrState:
    try:
        out = await client.describe_continuous_backups(TableName=table)
    except _SERVICE_ERRORS as exc:
        raise _convert(exc, f"DescribeContinuousBackups {table}") from exc
    pitr = out.get("ContinuousBackupsDescription", {}).get("PointInTimeRecoveryDescription", {})
    return PitrState(
        table=table,
        enabled=pitr.get("PointInTimeRecoveryStatus") == "ENABLED",
        earliest_restorable=pitr.get("EarliestRestorableDateTime"),
        latest_restorable=pitr.get("LatestRestorableDateTime"),
        recovery_period_days=pitr.get("RecoveryPeriodInDays"),
    )


async def pitr_status(
    client: Any, table: str
) -> Literal["enabled", "disabled", "unsupported-endpoint"]:
    """One word for a start-up check; other failures (table missing, no network) raise."""
    try:
        state = await describe_pitr(client, table)
    except PitrUnsupported:
        return "unsupported-endpoint"
    return "enabled" if state.enabled else "disabled"


async def enable_pitr(
    client: Any, table: str, *, verify_timeout_s: float = 60.0, poll_s: float = 1.0
) -> PitrState:
    """Turn PITR on, then confirm with Describe (polled, bounded by ``verify_timeout_s``)."""
    try:
        await client.update_continuous_backups(
            TableName=table,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        )
    except _SERVICE_ERRORS as exc:
        raise _convert(exc, f"UpdateContinuousBackups {table}") from exc
    loop = asyncio.get_running_loop()
    deadline = loop.time() + verify_timeout_s
    while True:
        state = await describe_pitr(client, table)
        if state.enabled:
            return state
        if loop.time() >= deadline:
            raise PitrRefused(f"PITR on {table} still not enabled after {verify_timeout_s:g}s")
        # Polling a remote status, not synchronising with our own code: AWS gives no event.
        await asyncio.sleep(poll_s)


def parse_restore_time(raw: str) -> datetime | Literal["latest"]:
    """``latest`` or an ISO-8601 time with a zone (``Z`` or ``+01:00``).

    A time without a zone is refused: restoring to the wrong hour is the mistake this tool
    exists to undo.
    """
    value = raw.strip()
    if value.lower() == "latest":
        return "latest"
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"--to {raw!r}: not ISO-8601 (e.g. 2026-05-01T12:00:00Z) or 'latest'"
        ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"--to {raw!r}: add a time zone, e.g. {value}Z for UTC")
    return when


async def restore_to_point_in_time(
    client: Any, source_table: str, target_table: str, when: datetime | Literal["latest"]
) -> RestoreResult:
    """Start restoring ``source_table`` as it was at ``when`` into the new ``target_table``."""
    if source_table == target_table:
        raise PitrRefused("restore goes into a new table: --target-table must differ from --table")
    args: dict[str, Any] = {"SourceTableName": source_table, "TargetTableName": target_table}
    if when == "latest":
        args["UseLatestRestorableTime"] = True
    else:
        args["RestoreDateTime"] = when
    try:
        out = await client.restore_table_to_point_in_time(**args)
    except _SERVICE_ERRORS as exc:
        raise _convert(exc, f"RestoreTableToPointInTime {source_table} -> {target_table}") from exc
    desc = out.get("TableDescription", {})
    return RestoreResult(
        source_table=source_table,
        target_table=desc.get("TableName", target_table),
        target_status=desc.get("TableStatus", "UNKNOWN"),
        target_arn=desc.get("TableArn"),
        restore_time=desc.get("RestoreSummary", {}).get("RestoreDateTime"),
    )
