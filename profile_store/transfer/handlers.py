"""HTTP of an account move's store side: ``/_residency/transfer/*`` (``docs/move_contract.md``).

Every route needs the ``move`` role (``auth.required_roles``), and the account in the path must
be the assertion's. Bodies are JSON objects validated here completely before anything is
done (bad input: 400 JSON, nothing stored); they may be up to ``transfer_max_body_bytes``. The
routes are exempt from the fence (``fence.py``); import and purge check the state they need.

    GET  /_residency/transfer/public-key           {"kid", "alg": "RSA-OAEP-256", "pem"}
    POST /_residency/transfer/{A}/fence            {"state", "generation", "peer"}
    POST /_residency/transfer/{A}/changes/start    -> {"checkpoint"}
    POST /_residency/transfer/{A}/changes          {"checkpoint"[, "limit"]}
    POST /_residency/transfer/{A}/export           {"segment", "total_segments", "cursor",
                                                    "limit", "recipient": {"kid", "pem"}}
    POST /_residency/transfer/{A}/export-keys      {"keys": [[pk, sk]...], "recipient"}
    POST /_residency/transfer/{A}/import           {"items": [...], "delete": [[pk, sk]...]}
    POST /_residency/transfer/{A}/digests          {"segment", "total_segments", "cursor",
                                                    "limit"} or {"keys": [[pk, sk]...]}
    POST /_residency/transfer/{A}/purge            {"generation", "role"[, "cursor", "limit"]}
                                                    -> {"deleted", "cursor"} (null: all gone)
    POST /_residency/transfer/{A}/audit            {"event", "generation", "peer", "counts",
                                                    "job"} -> 201
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from residency_contract.protocol import REGION_PATTERN, TRANSFER_PUBLIC_KEY_PATH, transfer_path

from ..errors import BadRequest, Forbidden, InvalidRecipient, MalformedItem, PayloadTooLarge
from ..handlers import CALLER, Handler, respond
from .change_feed import ChangeFeed, parse_checkpoint
from .items import parse_key
from .key_pair import ALG, Recipient
from .scan import Page, Segment
from .service import Transfer

TRANSFER: web.AppKey[Transfer] = web.AppKey("transfer", Transfer)
CHANGE_FEED: web.AppKey[ChangeFeed] = web.AppKey("change_feed", ChangeFeed)
MAX_BODY: web.AppKey[int] = web.AppKey("transfer_max_body", int)

MAX_PAGE = 1000
MAX_SEGMENTS = 1000
MAX_GENERATION = 2**53
FENCE_STATES = frozenset({"incoming", "frozen", "moved_out", "none"})
AUDIT_EVENTS = frozenset({"move_out", "move_in", "move_aborted"})
_JOB = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_COUNT_NAME = re.compile(r"^[a-z_]{1,32}$")


def _bad(message: str, code: str = "invalid_field") -> BadRequest:
    return BadRequest(message, code=code)


async def _body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    if request.content_type != "application/json":
        if optional and not request.can_read_body:
            return {}
        raise _bad("the body must be JSON (Content-Type: application/json)", "invalid_body")
    limit = request.app[MAX_BODY]
    if (request.content_length or 0) > limit:
        raise PayloadTooLarge(f"transfer bodies are at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"transfer bodies are at most {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw and optional:
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeError, RecursionError):
        raise _bad("the body is not valid JSON", "invalid_json") from None
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object", "invalid_body")
    return body


def _account(request: web.Request) -> str:
    account = request.match_info["account"]
    if account != request[CALLER].account:
        raise Forbidden("the assertion is for another account")
    return account


def _int(body: dict[str, Any], name: str, low: int, high: int) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(f"{name} must be an integer {low}..{high}")
    return value


def _cursor(body: dict[str, Any], max_len: int) -> str | None:
    cursor = body.get("cursor")
    if cursor is not None and (not isinstance(cursor, str) or len(cursor) > max_len):
        raise _bad("cursor must be a string or null", "invalid_cursor")
    return cursor


def _str(body: dict[str, Any], name: str, pattern: re.Pattern[str]) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not pattern.match(value):
        raise _bad(f"{name} is missing or malformed")
    return value


def _choice(body: dict[str, Any], name: str, choices: frozenset[str]) -> str:
    value = body.get(name)
    if value not in choices:
        raise _bad(f"{name} must be one of {sorted(choices)}")
    return str(value)


def _recipient(body: dict[str, Any]) -> Recipient:
    raw = body.get("recipient")
    if not isinstance(raw, dict) or not isinstance(raw.get("kid"), str):
        raise InvalidRecipient("recipient must be {kid, pem}")
    if not isinstance(raw.get("pem"), str):
        raise InvalidRecipient("recipient must be {kid, pem}")
    return Recipient.from_pem(raw["kid"], raw["pem"])


def _list(body: dict[str, Any], name: str, *, required: bool = True) -> list[Any]:
    value = body.get(name, None if required else [])
    if not isinstance(value, list) or len(value) > MAX_PAGE:
        raise _bad(f"{name} must be a list of at most {MAX_PAGE}")
    return value


def _keys(body: dict[str, Any], account: str) -> list[tuple[str, str]]:
    try:
        return [parse_key(raw, account) for raw in _list(body, "keys")]
    except MalformedItem as exc:
        raise _bad(str(exc), "invalid_key") from None


# ---- routes -----------------------------------------------------------------------------------


async def public_key(request: web.Request) -> web.Response:
    pair = await request.app[TRANSFER].key_pair()
    return respond({"kid": pair.kid, "alg": ALG, "pem": pair.public_pem})


async def set_fence(request: web.Request) -> web.Response:
    account = _account(request)
    body = await _body(request)
    state = _choice(body, "state", FENCE_STATES)
    generation = _int(body, "generation", 0, MAX_GENERATION)
    peer = body.get("peer")
    if state != "none" or peer is not None:
        peer = _str(body, "peer", REGION_PATTERN)
    result = await request.app[TRANSFER].set_fence(account, state, generation, peer)
    return respond(result)


async def changes_start(request: web.Request) -> web.Response:
    _account(request)
    await _body(request, optional=True)
    return respond({"checkpoint": await request.app[CHANGE_FEED].start()})


async def changes(request: web.Request) -> web.Response:
    account = _account(request)
    body = await _body(request)
    checkpoint = parse_checkpoint(body.get("checkpoint"))
    limit = _int(body, "limit", 1, 10_000) if "limit" in body else MAX_PAGE
    found = await request.app[CHANGE_FEED].changes(account, checkpoint, max_records=limit)
    return respond({"keys": found.keys, "checkpoint": found.checkpoint, "more": found.more})


async def export(request: web.Request) -> web.Response:
    account = _account(request)
    transfer = request.app[TRANSFER]
    body = await _body(request)
    recipient = _recipient(body)
    page = await _page_of(body, transfer, account)
    items, counts = await transfer.export(account, page, recipient)
    return respond({"items": items, "cursor": page.cursor, "counts": counts})


async def _page_of(body: dict[str, Any], transfer: Transfer, account: str) -> Page:
    total = _int(body, "total_segments", 1, MAX_SEGMENTS)
    segment = _int(body, "segment", 0, total - 1)
    limit = _int(body, "limit", 1, MAX_PAGE)
    cursor = _cursor(body, 4096)
    return await transfer.scan_page(account, Segment(segment, total, cursor, limit))


async def export_keys(request: web.Request) -> web.Response:
    account = _account(request)
    body = await _body(request)
    recipient = _recipient(body)
    keys = _keys(body, account)
    items, missing = await request.app[TRANSFER].export_keys(account, keys, recipient)
    return respond({"items": items, "missing": missing})


async def import_items(request: web.Request) -> web.Response:
    account = _account(request)
    body = await _body(request)
    items, deletes = _list(body, "items"), _list(body, "delete", required=False)
    return respond(await request.app[TRANSFER].import_items(account, items, deletes))


async def digests(request: web.Request) -> web.Response:
    account = _account(request)
    transfer = request.app[TRANSFER]
    body = await _body(request)
    if "keys" in body:  # the keys form: exactly these keys, instead of a scan page
        keys = _keys(body, account)  # at most MAX_PAGE, like export-keys
        digested, kinds, missing = await transfer.digests_of(account, keys)
        return respond({"digests": digested, "kinds": kinds, "missing": missing})
    page = await _page_of(body, transfer, account)
    found, counts = await transfer.digests(account, page)
    return respond({"digests": found, "counts": counts, "cursor": page.cursor})


async def purge(request: web.Request) -> web.Response:
    account = _account(request)
    body = await _body(request)
    generation = _int(body, "generation", 0, MAX_GENERATION)
    role = body.get("role")
    if role not in {"source", "destination"}:
        raise _bad("role must be source or destination")
    cursor = _cursor(body, 16384)  # a position per segment
    limit = _int(body, "limit", 1, MAX_PAGE) if "limit" in body else MAX_PAGE
    deleted, following = await request.app[TRANSFER].purge(
        account, generation=generation, role=role, cursor=cursor, limit=limit
    )
    return respond({"deleted": deleted, "cursor": following})


async def audit(request: web.Request) -> web.Response:
    account = _account(request)
    body = await _body(request)
    event = _choice(body, "event", AUDIT_EVENTS)
    generation = _int(body, "generation", 0, MAX_GENERATION)
    peer = _str(body, "peer", REGION_PATTERN)
    job = _str(body, "job", _JOB)
    counts = body.get("counts", {})
    if not isinstance(counts, dict) or len(counts) > 64:
        raise _bad("counts must be an object of at most 64 kinds")
    for name, value in counts.items():
        if not _COUNT_NAME.match(name) or isinstance(value, bool) or not isinstance(value, int):
            raise _bad("counts must map kind names to integers")
        if not 0 <= value <= MAX_GENERATION:
            raise _bad("counts must be non-negative")
    caller = request[CALLER]
    await request.app[TRANSFER].audit(
        account,
        event=event,
        generation=generation,
        peer=peer,
        counts=counts,
        job=job,
        principal=caller.principal,
        request_id=caller.request_id,
    )
    return respond({"event": event, "generation": generation}, 201)


# (method, path, operation name, handler); names start with auth.TRANSFER_PREFIX. Every route
# but the public key's is a POST to ``transfer_path(account, op)``.
TRANSFER_ROUTES: tuple[tuple[str, str, str, Handler], ...] = (
    ("GET", TRANSFER_PUBLIC_KEY_PATH, "TransferPublicKey", public_key),
    *(
        ("POST", transfer_path("{account}", op), name, handler)
        for op, name, handler in (
            ("fence", "TransferFence", set_fence),
            ("changes/start", "TransferChangesStart", changes_start),
            ("changes", "TransferChanges", changes),
            ("export", "TransferExport", export),
            ("export-keys", "TransferExportKeys", export_keys),
            ("import", "TransferImport", import_items),
            ("digests", "TransferDigests", digests),
            ("purge", "TransferPurge", purge),
            ("audit", "TransferAudit", audit),
        )
    ),
)
