"""HTTP for data-subject rights and the audit trail: erasure, its status, and audit listing.

* ``POST /api/user-rights/createAndProcessDeleteUserData?an=...`` body ``{"email": ...}``: the
  spec's erasure (role ``erase``); answers 200 with the spec's body, the email masked.
* ``GET /api/user-rights/requests/{uuid}``: the stored status of an erasure (role ``erase``);
  the same body without ``email`` (the request item keeps no PII).
* ``GET /admin/audit?account=A[&since=ISO][&until=ISO][&limit=N][&after=CURSOR]``: the account's
  audit records (role ``unmask`` or ``erase``, and the assertion's account must be ``A``);
  ``{"items": [...], "next": cursor-or-null}``, at most ``limit`` (default and maximum 1000).

The account always comes from the verified assertion; ``an`` only steered the edge.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from . import audit
from .erasure import Eraser, parse_email
from .errors import BadRequest, Forbidden
from .handlers import CALLER, SERVICE, Handler, read_json, respond

ERASER: web.AppKey[Eraser] = web.AppKey("eraser", Eraser)
MAX_AUDIT_PAGE = 1000


async def erase(request: web.Request) -> web.Response:
    email = parse_email(await read_json(request))
    return respond(await request.app[ERASER].erase(request[CALLER], email))


async def erasure_status(request: web.Request) -> web.Response:
    eraser = request.app[ERASER]
    return respond(await eraser.status(request[CALLER], request.match_info["requestId"]))


def _time(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an ISO-8601 time", code="invalid_time") from None


async def list_audit(request: web.Request) -> web.Response:
    caller = request[CALLER]
    account = request.query.get("account", "")
    if not account:
        raise BadRequest("the account query parameter is required", code="missing_account")
    if account != caller.account:
        raise Forbidden("the assertion is for another account")
    raw_limit = request.query.get("limit", str(MAX_AUDIT_PAGE))
    if not raw_limit.isdigit() or not 0 < int(raw_limit) <= MAX_AUDIT_PAGE:
        raise BadRequest(f"limit must be 1..{MAX_AUDIT_PAGE}", code="invalid_limit")
    limit = int(raw_limit)
    repo = request.app[SERVICE].repo
    items = []
    more = False
    async for entry in audit.iter_records(
        repo,
        account,
        since=_time(request, "since"),
        until=_time(request, "until"),
        after=request.query.get("after") or None,
    ):
        if len(items) == limit:
            more = True
            break
        items.append(entry)
    return respond({"items": items, "next": items[-1]["cursor"] if more else None})


# (method, path, operation name, handler), registered next to ``handlers.ROUTES``.
RIGHTS_ROUTES: tuple[tuple[str, str, str, Handler], ...] = (
    (
        "POST",
        "/api/user-rights/createAndProcessDeleteUserData",
        "CreateAndProcessDeleteUserData",
        erase,
    ),
    ("GET", "/api/user-rights/requests/{requestId}", "GetUserRightsRequest", erasure_status),
    ("GET", "/admin/audit", "ListAuditRecords", list_audit),
)
