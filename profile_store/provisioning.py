"""Provisioning of a region's table, and the start-time point-in-time-recovery (PITR) check.

``create_table`` makes the table the store expects: keys ``pk``/``sk`` (S), on-demand billing,
server-side encryption, a DynamoDB Stream (``KEYS_ONLY``: an account move replays the keys
changed while it copied, ``transfer/change_feed.py``), TTL on ``expiresAt`` and PITR
(UpdateContinuousBackups). It is idempotent: an existing table is completed (stream via
UpdateTable when it has none, TTL, PITR), not an error.

``check_pitr`` runs when a store starts (DescribeContinuousBackups) and returns a ``PitrState``:

- ``enabled``: PITR is on;
- ``disabled``: PITR is off. With ``require_pitr`` (the default) this raises ``PitrRequired`` and
  the store refuses to start: losing the ability to restore PII after an operator error is not
  something to discover later. With ``require_pitr=false`` it is a warning;
- ``unsupported-endpoint``: the endpoint does not implement the API at all
  (``UnknownOperationException``, which is what Amazon's DynamoDB Local answers). This is not
  a table that lacks PITR but an endpoint that cannot have it, so the store starts even with
  ``require_pitr`` and says so in exactly one warning;
- ``unknown``: DynamoDB could not be asked (unreachable at start). The store starts, reports not
  ready, and asks again from ``/readyz``.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

import botocore.exceptions

from residency_contract.tables import PK_SK_KEYS

from .errors import client_error_code

log = logging.getLogger(__name__)

TTL_ATTRIBUTE = "expiresAt"
STREAM = {"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"}


class PitrState(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"
    UNSUPPORTED = "unsupported-endpoint"
    UNKNOWN = "unknown"


class PitrRequired(RuntimeError):
    """PITR is off on a real endpoint and require_pitr is set: the store must not start."""


async def create_table(client: Any, table: str, *, wait_s: float = 60.0) -> dict[str, str]:
    """Create (or complete) ``table``; return what was done per feature, for the CLI to print."""
    done: dict[str, str] = {}
    try:
        await client.create_table(
            TableName=table,
            **PK_SK_KEYS,
            BillingMode="PAY_PER_REQUEST",
            SSESpecification={"Enabled": True},
            StreamSpecification=STREAM,
        )
        done["table"] = "created"
    except botocore.exceptions.ClientError as exc:
        if client_error_code(exc) != "ResourceInUseException":
            raise
        done["table"] = "exists"
    waiter = client.get_waiter("table_exists")
    await waiter.wait(
        TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": max(1, int(wait_s))}
    )
    if done["table"] == "created":
        done["stream"] = "enabled"
    else:
        done["stream"] = await _ensure_stream(client, table, wait_s=wait_s)
    try:
        await client.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
        done["ttl"] = "enabled"
    except botocore.exceptions.ClientError as exc:
        # Enabling TTL twice is a ValidationException ("already enabled").
        if client_error_code(exc) != "ValidationException":
            raise
        done["ttl"] = "already-enabled"
    try:
        await client.update_continuous_backups(
            TableName=table,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        )
        done["pitr"] = PitrState.ENABLED.value
    except botocore.exceptions.ClientError as exc:
        if client_error_code(exc) != "UnknownOperationException":
            raise
        log.warning(
            "table %s: this DynamoDB endpoint does not implement UpdateContinuousBackups "
            "(DynamoDB Local?): point-in-time recovery cannot be enabled here",
            table,
        )
        done["pitr"] = PitrState.UNSUPPORTED.value
    return done


async def _ensure_stream(client: Any, table: str, *, wait_s: float) -> str:
    """Enable the stream on a table that has none; any view type that includes keys will do."""
    described = (await client.describe_table(TableName=table))["Table"]
    if described.get("StreamSpecification", {}).get("StreamEnabled"):
        return "already-enabled"
    await client.update_table(TableName=table, StreamSpecification=STREAM)
    waiter = client.get_waiter("table_exists")
    await waiter.wait(
        TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": max(1, int(wait_s))}
    )
    return "enabled"


async def warn_without_stream(client: Any, table: str) -> bool:
    """Start-time check: without a stream an account move cannot replay what changed while it
    copied (``changes`` answers 503). A warning, not a refusal: the store serves without it.
    True when the table has a stream (or DynamoDB could not be asked)."""
    try:
        described = (await client.describe_table(TableName=table))["Table"]
    except Exception:  # unreachable at start: check_pitr says so already
        return True
    if described.get("StreamSpecification", {}).get("StreamEnabled"):
        return True
    log.warning(
        "table %s has no DynamoDB Stream: accounts cannot be moved out of this region until "
        "'profile-store create-table' enables it",
        table,
    )
    return False


async def describe_pitr(client: Any, table: str) -> PitrState:
    try:
        response = await client.describe_continuous_backups(TableName=table)
    except botocore.exceptions.ClientError as exc:
        if client_error_code(exc) == "UnknownOperationException":
            return PitrState.UNSUPPORTED
        raise
    status = (
        response.get("ContinuousBackupsDescription", {})
        .get("PointInTimeRecoveryDescription", {})
        .get("PointInTimeRecoveryStatus")
    )
    return PitrState.ENABLED if status == "ENABLED" else PitrState.DISABLED


async def check_pitr(client: Any, table: str, *, require_pitr: bool) -> PitrState:
    """Start-time check; raises ``PitrRequired`` only for a real endpoint with PITR off."""
    try:
        state = await describe_pitr(client, table)
    except Exception as exc:  # unreachable endpoint, missing table, throttling...
        log.warning(
            "could not check point-in-time recovery of table %s (%s); "
            "the store starts but reports not ready until DynamoDB answers",
            table,
            client_error_code(exc) or type(exc).__name__,
        )
        return PitrState.UNKNOWN
    if state is PitrState.UNSUPPORTED:
        log.warning(
            "table %s: the DynamoDB endpoint does not implement DescribeContinuousBackups "
            "(UnknownOperationException, as DynamoDB Local answers). It cannot provide "
            "point-in-time recovery; starting anyway and reporting pitr=unsupported-endpoint. "
            "Never run production data on such an endpoint.",
            table,
        )
    elif state is PitrState.DISABLED:
        if require_pitr:
            raise PitrRequired(
                f"point-in-time recovery is disabled on table {table}: enable it "
                f"(profile-store create-table, or UpdateContinuousBackups) or set "
                f"PROFILE_STORE_REQUIRE_PITR=false to start without it"
            )
        log.warning(
            "table %s: point-in-time recovery is DISABLED (require_pitr=false); "
            "PII written now cannot be restored to a point in time",
            table,
        )
    return state
