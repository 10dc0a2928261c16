"""HTTP only: parse a request into plain values, call one ``ProfileService`` method, shape the
response as the spec says (status code, array or object). No rules live here.

Values that are parsed here: path ids, ``alternativeKey``, ``ttl``, ``reason``/``onBehalfOf``,
``If-Match`` and the JSON body (content type checked, size bounded by ``client_max_size``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .altkeys import Kind, parse_kind
from .domain import Caller, ProfileService, Record, Reveal, parse_ttl
from .errors import BadRequest

SERVICE: web.AppKey[ProfileService] = web.AppKey("profile_service", ProfileService)
CALLER: web.RequestKey[Caller] = web.RequestKey("caller", Caller)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Unmask operations whose ``reason`` parameter the spec marks required. The two list reads
# (addresses/unmask, prospects/unmask) do not declare it: they accept no reason but are
# audited all the same, with an empty reason.
REASON_REQUIRED = frozenset(
    {
        "GetUnmaskedProfile",
        "GetUnmaskedProfileByVersion",
        "GetUnmaskedAddress",
        "GetUnmaskedAddressByVersion",
        "GetUnmaskedProspect",
        "GetUnmaskedPurchaseInformation",
    }
)
MAX_REASON = 200


def dumps(body: Any) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def respond(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=dumps)


def no_content() -> web.Response:
    return web.Response(status=204)


async def read_json(request: web.Request) -> Any:
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        raise BadRequest(
            "the body must be JSON (Content-Type: application/json)",
            code="unsupported_content_type",
        )
    raw = await request.read()  # bounded by client_max_size: larger bodies raise 413
    if not raw:
        raise BadRequest("a JSON body is required", code="invalid_json")
    try:
        body = json.loads(raw)
        # A "\ud800" escape decodes to a lone surrogate that no UTF-8 encoder accepts later
        # (a 500 at storage time): refuse it here. Only escaped input can produce one.
        if b"\\u" in raw and _SURROGATE_ESCAPE.search(raw):
            json.dumps(body, ensure_ascii=False).encode()
        return body
    except (ValueError, UnicodeError, RecursionError):
        # RecursionError: deeply nested JSON (e.g. 10k "[") must be a 400, not a 500.
        raise BadRequest("the body is not valid JSON", code="invalid_json") from None


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _kind(request: web.Request) -> Kind | None:
    try:
        return parse_kind(request.query.get("alternativeKey"))
    except ValueError:
        raise BadRequest(
            "alternativeKey must be email or document", code="invalid_alternative_key"
        ) from None


def _ttl(request: web.Request) -> int | None:
    return parse_ttl(request.query.get("ttl"))


def _if_match(request: web.Request) -> str | None:
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    value = raw.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    return None if value in {"", "*"} else value


def _reveal(request: web.Request) -> Reveal:
    operation = request.match_info.route.name or ""
    reason = request.query.get("reason", "").strip()
    if not reason and operation in REASON_REQUIRED:
        raise BadRequest(
            "unmasked reads need a reason (query parameter reason)", code="missing_reason"
        )
    on_behalf_of = request.query.get("onBehalfOf", "").strip() or None
    return Reveal(reason=reason[:MAX_REASON], on_behalf_of=on_behalf_of)


def _ctx(request: web.Request) -> tuple[ProfileService, Caller]:
    return request.app[SERVICE], request[CALLER]


def _bodies(records: list[Record]) -> list[dict[str, Any]]:
    return [r.body() for r in records]


# ---- profiles -----------------------------------------------------------------------------


async def create_profile(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    ttl = _ttl(request)
    body = await read_json(request)
    return respond((await svc.create_profile(caller, body, ttl)).body(), 201)


async def get_profile(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    records = await svc.get_profile(caller, request.match_info["profileId"], _kind(request), None)
    return respond(_bodies(records))


async def get_unmasked_profile(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    kind, reveal = _kind(request), _reveal(request)
    records = await svc.get_profile(caller, request.match_info["profileId"], kind, reveal)
    return respond(_bodies(records))


async def update_profile(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    kind, ttl, if_match = _kind(request), _ttl(request), _if_match(request)
    body = await read_json(request)
    record = await svc.update_profile(
        caller, request.match_info["profileId"], kind, body, ttl, if_match
    )
    return respond(record.body())


async def delete_profile(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    await svc.delete_profile(caller, request.match_info["profileId"], _kind(request))
    return no_content()


async def get_profile_version(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    records = await svc.get_profile_version(
        caller,
        request.match_info["profileId"],
        _kind(request),
        request.match_info["profileVersionId"],
        None,
    )
    return respond(_bodies(records))


async def get_unmasked_profile_version(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    kind, reveal = _kind(request), _reveal(request)
    records = await svc.get_profile_version(
        caller,
        request.match_info["profileId"],
        kind,
        request.match_info["profileVersionId"],
        reveal,
    )
    return respond(_bodies(records))


# ---- addresses ----------------------------------------------------------------------------


async def create_address(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    kind = _kind(request)
    body = await read_json(request)
    record = await svc.create_address(caller, request.match_info["profileId"], kind, body)
    return respond(record.body(), 201)


async def list_addresses(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    records = await svc.list_addresses(
        caller, request.match_info["profileId"], _kind(request), None
    )
    return respond(_bodies(records))


async def list_unmasked_addresses(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    kind, reveal = _kind(request), _reveal(request)
    records = await svc.list_addresses(caller, request.match_info["profileId"], kind, reveal)
    return respond(_bodies(records))


async def get_address(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    m = request.match_info
    record = await svc.get_address(caller, m["profileId"], _kind(request), m["addressId"], None)
    return respond(record.body())


async def get_unmasked_address(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    m = request.match_info
    kind, reveal = _kind(request), _reveal(request)
    record = await svc.get_address(caller, m["profileId"], kind, m["addressId"], reveal)
    return respond(record.body())


async def get_address_version(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    m = request.match_info
    record = await svc.get_address(
        caller, m["profileId"], _kind(request), m["addressId"], None, m["addressVersionId"]
    )
    return respond(record.body())


async def get_unmasked_address_version(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    m = request.match_info
    kind, reveal = _kind(request), _reveal(request)
    record = await svc.get_address(
        caller, m["profileId"], kind, m["addressId"], reveal, m["addressVersionId"]
    )
    return respond(record.body())


async def update_address(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    m = request.match_info
    kind, if_match = _kind(request), _if_match(request)
    body = await read_json(request)
    record = await svc.update_address(caller, m["profileId"], kind, m["addressId"], body, if_match)
    return respond(record.body())


async def delete_address(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    m = request.match_info
    await svc.delete_address(caller, m["profileId"], _kind(request), m["addressId"])
    return no_content()


# ---- purchase information -----------------------------------------------------------------


async def create_purchase_info(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    kind = _kind(request)
    body = await read_json(request)
    record = await svc.create_purchase_info(caller, request.match_info["profileId"], kind, body)
    return respond(record.body(), 200)  # the spec answers 200 here, not 201


async def get_purchase_info(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    records = await svc.get_purchase_info(
        caller, request.match_info["profileId"], _kind(request), None
    )
    return respond(_bodies(records))


async def get_unmasked_purchase_info(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    kind, reveal = _kind(request), _reveal(request)
    records = await svc.get_purchase_info(caller, request.match_info["profileId"], kind, reveal)
    return respond(_bodies(records))


async def update_purchase_info(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    kind, if_match = _kind(request), _if_match(request)
    body = await read_json(request)
    record = await svc.update_purchase_info(
        caller, request.match_info["profileId"], kind, body, if_match
    )
    return respond(record.body())


async def delete_purchase_info(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    await svc.delete_purchase_info(caller, request.match_info["profileId"], _kind(request))
    return no_content()


# ---- prospects ----------------------------------------------------------------------------


async def create_prospect(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    body = await read_json(request)
    return respond((await svc.create_prospect(caller, body)).body(), 201)


async def list_prospects(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    return respond(_bodies(await svc.list_prospects(caller, None)))


async def list_unmasked_prospects(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    return respond(_bodies(await svc.list_prospects(caller, _reveal(request))))


async def get_prospect(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    record = await svc.get_prospect(caller, request.match_info["prospectId"], None)
    return respond(record.body())


async def get_unmasked_prospect(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    reveal = _reveal(request)
    record = await svc.get_prospect(caller, request.match_info["prospectId"], reveal)
    return respond(record.body())


async def update_prospect(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    if_match = _if_match(request)
    body = await read_json(request)
    record = await svc.update_prospect(caller, request.match_info["prospectId"], body, if_match)
    return respond(record.body())


async def delete_prospect(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    await svc.delete_prospect(caller, request.match_info["prospectId"])
    return no_content()


# ---- schemas ------------------------------------------------------------------------------


async def get_full_schema(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    return respond(await svc.full_schema(caller))


async def get_custom_schema(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    return respond(await svc.custom_schema(caller))


async def put_custom_schema(request: web.Request) -> web.Response:
    svc, caller = _ctx(request)
    await svc.put_custom_schema(caller, await read_json(request))
    return web.Response(status=201)


_BASE = "/api/storage/profile-system"
_P = f"{_BASE}/profiles/{{profileId}}"

# (method, path, operation name, handler). Names are the spec operationIds; the two schema
# reads have none in the spec and get GetFullSchema / GetCustomFields.
ROUTES: tuple[tuple[str, str, str, Handler], ...] = (
    ("POST", f"{_BASE}/profiles", "CreateClientProfile", create_profile),
    ("GET", _P, "GetProfile", get_profile),
    ("PATCH", _P, "UpdateClientProfile", update_profile),
    ("DELETE", _P, "DeleteClientProfile", delete_profile),
    ("GET", f"{_P}/unmask", "GetUnmaskedProfile", get_unmasked_profile),
    ("GET", f"{_P}/versions/{{profileVersionId}}", "GetProfileByVersion", get_profile_version),
    (
        "GET",
        f"{_P}/versions/{{profileVersionId}}/unmask",
        "GetUnmaskedProfileByVersion",
        get_unmasked_profile_version,
    ),
    ("POST", f"{_P}/addresses", "CreateClientAddress", create_address),
    ("GET", f"{_P}/addresses", "GetClientAddresses", list_addresses),
    ("GET", f"{_P}/addresses/unmask", "GetUnmaskedClientAddresses", list_unmasked_addresses),
    ("GET", f"{_P}/addresses/{{addressId}}", "GetAddress", get_address),
    ("PATCH", f"{_P}/addresses/{{addressId}}", "UpdateClientAddress", update_address),
    ("DELETE", f"{_P}/addresses/{{addressId}}", "DeleteAddress", delete_address),
    ("GET", f"{_P}/addresses/{{addressId}}/unmask", "GetUnmaskedAddress", get_unmasked_address),
    (
        "GET",
        f"{_P}/addresses/{{addressId}}/versions/{{addressVersionId}}",
        "GetAddressByVersion",
        get_address_version,
    ),
    (
        "GET",
        f"{_P}/addresses/{{addressId}}/versions/{{addressVersionId}}/unmask",
        "GetUnmaskedAddressByVersion",
        get_unmasked_address_version,
    ),
    ("POST", f"{_BASE}/prospects", "CreateProspect", create_prospect),
    ("GET", f"{_BASE}/prospects", "GetProspects", list_prospects),
    ("GET", f"{_BASE}/prospects/unmask", "GetUnmaskedProspects", list_unmasked_prospects),
    ("GET", f"{_BASE}/prospects/{{prospectId}}", "GetProspect", get_prospect),
    ("PATCH", f"{_BASE}/prospects/{{prospectId}}", "UpdateProspect", update_prospect),
    ("DELETE", f"{_BASE}/prospects/{{prospectId}}", "DeleteProspect", delete_prospect),
    (
        "GET",
        f"{_BASE}/prospects/{{prospectId}}/unmask",
        "GetUnmaskedProspect",
        get_unmasked_prospect,
    ),
    ("POST", f"{_P}/purchase-info", "CreatePurchaseInformation", create_purchase_info),
    ("GET", f"{_P}/purchase-info", "GetPurchaseInformation", get_purchase_info),
    ("PATCH", f"{_P}/purchase-info", "UpdatePurchaseInformation", update_purchase_info),
    ("DELETE", f"{_P}/purchase-info", "DeletePurchaseInformation", delete_purchase_info),
    (
        "GET",
        f"{_P}/purchase-info/unmask",
        "GetUnmaskedPurchaseInformation",
        get_unmasked_purchase_info,
    ),
    ("GET", f"{_BASE}/schemas/profileSystem", "GetFullSchema", get_full_schema),
    (
        "PUT",
        f"{_BASE}/schemas/profileSystem/custom",
        "CreateOrUpdateProfileSchema",
        put_custom_schema,
    ),
    ("GET", f"{_BASE}/schemas/profileSystem/custom", "GetCustomFields", get_custom_schema),
)
