"""Who may do what: the edge assertion is verified, then the route's role is required.

Two small, separately testable steps:

1. ``authenticate``: verify the ``X-Residency-Assertion`` header against this region's secret,
   the exact method and raw target. Missing/bad/stale answers 401; an assertion minted for
   another region answers 421 (the request was misrouted; nothing is served).
2. ``authorize``: the roles the operation accepts (any one suffices). Masked reads need
   ``read``; POST/PATCH/PUT ``write``; DELETE ``delete``; any ``/unmask`` read ``unmask``;
   erasure and its status ``erase``; the audit listing ``unmask`` or ``erase``; the transfer
   endpoints of an account move (``/_residency/transfer/*``) ``move``, which is accepted
   nowhere else. Missing role answers 403.

The account an operation works on comes only from the verified assertion, never from the
request, so every key the store touches is inside the caller's own tenant.
"""

from __future__ import annotations

from residency_contract.assertion import (
    MOVER_ROLE,
    Assertion,
    AssertionError_,
    WrongRegion,
    verify,
)
from residency_contract.protocol import ASSERTION_HEADER

from .config import StoreSettings
from .errors import Forbidden, Misdirected, Unauthenticated

__all__ = ["ASSERTION_HEADER", "PUBLIC_PATHS", "authenticate", "authorize", "required_roles"]

# Probes and metrics carry no data and are scraped by infrastructure without assertions.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


# Operations outside the method rule: data-subject rights and the audit trail.
_SPECIAL_ROLES = {
    "CreateAndProcessDeleteUserData": frozenset({"erase"}),
    "GetUserRightsRequest": frozenset({"erase"}),
    "ListAuditRecords": frozenset({"unmask", "erase"}),
}


TRANSFER_PREFIX = "Transfer"  # operation names of transfer.TRANSFER_ROUTES
_MOVE = frozenset({MOVER_ROLE})


def is_transfer(operation: str) -> bool:
    return operation.startswith(TRANSFER_PREFIX)


def required_roles(method: str, operation: str) -> frozenset[str]:
    """The roles that allow ``operation``; holding any one of them is enough."""
    if is_transfer(operation):
        return _MOVE
    special = _SPECIAL_ROLES.get(operation)
    if special is not None:
        return special
    if operation.startswith("GetUnmasked"):
        return frozenset({"unmask"})
    if method in {"GET", "HEAD"}:
        return frozenset({"read"})
    if method == "DELETE":
        return frozenset({"delete"})
    return frozenset({"write"})


def authenticate(
    header: str | None, settings: StoreSettings, *, method: str, target: str
) -> Assertion:
    try:
        return verify(
            header,
            key=settings.assertion_secret,
            region=settings.region,
            method=method,
            target=target,
            max_age_s=settings.assertion_max_age_s,
        )
    except WrongRegion:
        raise Misdirected(
            f"this store serves region {settings.region}; the request was routed to the wrong "
            "region"
        ) from None
    except AssertionError_ as exc:
        raise Unauthenticated(str(exc), code=exc.code) from None


def authorize(assertion: Assertion, roles: frozenset[str]) -> None:
    # The mover's role opens the transfer endpoints and nothing else, even next to others.
    if MOVER_ROLE in assertion.roles and roles != _MOVE:
        raise Forbidden("the move role is accepted on the transfer endpoints only")
    if roles.isdisjoint(assertion.roles):
        raise Forbidden(f"this operation needs one of the roles {sorted(roles)}")
