"""The names on the wire between the edge, the operator tools and a store, defined once.

Header names, the error codes one side reacts to when the other sends them, the transfer
endpoints' paths and the region-name pattern. A literal copy of one of these on either side
drifts silently (a renamed dependency error and the edge ejects healthy stores), so both sides
import them from here (``tests/test_contract_literals.py``).
"""

from __future__ import annotations

import re

# --- headers ---------------------------------------------------------------------------------

ASSERTION_HEADER = "X-Residency-Assertion"
# Every client-sent header with this prefix is dropped by the edge before forwarding.
INTERNAL_HEADER_PREFIX = "x-residency-"
# The request id the edge forwards (or mints); a store's write idempotency keys on it.
REQUEST_ID_HEADER = "X-Request-Id"

# --- error codes a store sends and the edge or the mover reacts to -----------------------------

# The store's database or key service is down: the instance is healthy, its dependency is not.
DYNAMODB_UNAVAILABLE = "dynamodb_unavailable"
KEY_SERVICE_UNAVAILABLE = "key_service_unavailable"
DEPENDENCY_ERRORS = frozenset({DYNAMODB_UNAVAILABLE, KEY_SERVICE_UNAVAILABLE})
# The account's writes are frozen by a move (the edge answers it itself too).
ACCOUNT_MOVING = "account_moving"
# A change-feed checkpoint older than the stream's horizon: the mover restarts the copy.
CHECKPOINT_TRIMMED = "checkpoint_trimmed"

# --- the stores' transfer endpoints (role ``move``) -------------------------------------------

TRANSFER_PREFIX = "/_residency/transfer"
TRANSFER_PUBLIC_KEY_PATH = f"{TRANSFER_PREFIX}/public-key"


def transfer_path(account: str, op: str) -> str:
    """``/_residency/transfer/{account}/{op}``: ``op`` is ``fence``, ``export``, ``changes``..."""
    return f"{TRANSFER_PREFIX}/{account}/{op}"


# --- regions ---------------------------------------------------------------------------------

# An AWS region name such as ``eu-west-1``.
REGION_PATTERN = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
