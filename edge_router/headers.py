"""Which headers cross the edge, in each direction. Pure functions over multidicts.

Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection, not the message: Connection and
every header it names, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade, Proxy-*. They are
never forwarded. ``Expect`` is answered by our own server, so it is not forwarded either.
Every client-sent ``x-residency-*`` header is dropped: only the edge speaks that language to the
stores. The user token (``VtexIdclientAutCookie``, as a header or as cookies) is verified by the
edge and never crosses: the store learns the user from the signed assertion. Everything else,
``Content-Encoding`` and ``traceparent`` included, passes untouched.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

from residency_contract.protocol import ASSERTION_HEADER, INTERNAL_HEADER_PREFIX
from residency_contract.protocol import REQUEST_ID_HEADER as REQUEST_ID

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "expect",
    }
)
# Request headers the edge sets itself (any client value is replaced, not trusted).
_EDGE_SET = frozenset({"host", "x-forwarded-proto", "x-forwarded-host", REQUEST_ID.lower()})

# The contract's user token: this header, or the cookie of this name (optionally suffixed
# with ``_{account}``, the form a browser holding sessions on several accounts sends).
USER_TOKEN = "VtexIdclientAutCookie"  # noqa: S105 (a header name)
_USER_TOKEN_LOWER = USER_TOKEN.lower()

DATA_REGION = "X-Data-Region"
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9_.:-]{8,128}$")


def connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> frozenset[str]:
    """Header names listed in Connection: they are hop-by-hop for this message."""
    values = headers.getall("Connection", ())
    if not values:
        return frozenset()
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


# Minted ids: a random per-process prefix and a counter -- unique without a getrandom()
# syscall per request (ids need to be unique, not secret).
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count(int.from_bytes(os.urandom(4), "big"))


def request_id(incoming: str | None) -> str:
    """Propagate a well-formed client request id; otherwise mint one (32 hex characters)."""
    if incoming and _REQUEST_ID_OK.match(incoming):
        return incoming
    return _ID_PREFIX + (next(_id_counter) & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big").hex()


Items = list[tuple[str, str]]
_SKIP_PREFIXES = ("proxy-", INTERNAL_HEADER_PREFIX)


def upstream_request_items(
    incoming: CIMultiDictProxy[str] | CIMultiDict[str],
    *,
    request_id: str,
    peer: str | None,
    scheme: str,
    via: str,
    assertion: str,
    host: str | None = None,
) -> Items:
    """Headers for the store, as (name, value) pairs in arrival order (the hot path).
    ``host``: the request's authority when it is not the Host header's (an absolute-form
    target, whose authority wins over Host: RFC 9112 §3.2.2); it becomes X-Forwarded-Host."""
    named = connection_tokens(incoming)
    out: Items = []
    xff = None
    vias = []
    verdicts = _REQUEST_VERDICTS
    for name, value in incoming.items():
        lname = verdicts.get(name)
        if lname is None:
            lname = _verdict(verdicts, name, _REQUEST_DROP, _SKIP_PREFIXES)
        if lname:  # dropped or merged
            if lname == "x-forwarded-for":
                xff = value if xff is None else f"{xff}, {value}"
            elif lname == "via":
                vias.append(value)
            elif lname == "cookie":
                value = strip_token_cookies(value)
                if value and not (named and lname in named):
                    out.append((name, value))
            continue
        if named and name.lower() in named:
            continue
        out.append((name, value))
    if peer:
        xff = peer if xff is None else f"{xff}, {peer}"
    if xff is not None:
        out.append(("X-Forwarded-For", xff))
    out.append(("X-Forwarded-Proto", scheme))
    if host is None:
        host = incoming.get("Host")
    if host is not None:
        out.append(("X-Forwarded-Host", host))
    vias.append(f"1.1 {via}")
    out.append(("Via", ", ".join(vias)))
    out.append((REQUEST_ID, request_id))
    out.append((ASSERTION_HEADER, assertion))
    return out


# Cookies are separated by "; " (RFC 6265 §4.2.1), but a proxy that merges two Cookie
# headers joins them with ", " like any other field: a token cookie can follow either.
COOKIE_SEPARATORS = re.compile(r"([;,])")


def strip_token_cookies(cookie: str) -> str:
    """A Cookie header's value without the user-token cookies ("" when nothing is left),
    whether cookies are separated by ";" or ","; the others are kept with the separator
    that preceded them. Fails closed: if the token cookie's name is still anywhere in what
    is left (cookies separated some other way), none of the header is kept."""
    if _USER_TOKEN_LOWER not in cookie.lower():
        return cookie
    pieces = COOKIE_SEPARATORS.split(cookie)  # cookie, separator, cookie, ...
    kept = ""
    for i in range(0, len(pieces), 2):
        piece = pieces[i].rstrip()
        if not piece.strip() or piece.lstrip().lower().startswith(_USER_TOKEN_LOWER):
            continue
        kept = f"{kept}{pieces[i - 1]}{piece}" if kept else piece.lstrip()
    return "" if _USER_TOKEN_LOWER in kept.lower() else kept


# A header block: the header lines of a message as on the wire, each led by its CRLF
# ("\r\nName: value\r\nOther: value"; "" for none) -- what follows the start line, minus
# the blank line. Relaying a block means copying a string, not a list of pairs.
Block = str


def to_block(pairs: Iterable[tuple[str, str]]) -> Block:
    """A header block from (name, value) pairs (a multidict's ``items()``, say)."""
    return "".join([f"\r\n{name}: {value}" for name, value in pairs])


def split_line(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name, value.strip(" \t")


def downstream_response_block(
    block: Block, named: frozenset[str], *, request_id: str, region: str, via: str
) -> Block:
    """The client's header block from the store's (the hot path): the store's lines are copied
    as received except those to drop or merge, found by one regular expression; the edge's own
    lines are appended. ``named``: the tokens of the store's Connection headers
    (``connection_tokens``); when they name other headers, lines are filtered one by one."""
    vias: list[str] = []
    if named and not named <= _KEEP_ALIVE:
        out = _filter_lines(block, named, vias)
    else:
        pieces = []
        pos = 0
        for m in _RESPONSE_SPECIAL.finditer(block):
            pieces.append(block[pos : m.start()])
            pos = m.end()
            if len(m[1]) == 3 and m[1].lower() == "via":
                vias.append(m[2].strip(" \t"))
        out = block if not pos else "".join(pieces) + block[pos:]
    vias.append(f"1.1 {via}")
    return (
        f"{out}\r\nVia: {', '.join(vias)}\r\n{REQUEST_ID}: {request_id}\r\n{DATA_REGION}: {region}"
    )


def _filter_lines(block: Block, named: frozenset[str], vias: list[str]) -> Block:
    out = []
    for line in block.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        lname = name.lower()
        if lname in _RESPONSE_DROP or lname.startswith("proxy-"):
            if lname == "via":
                vias.append(value.strip(" \t"))
            continue
        if lname in named:
            continue
        out.append(line)
    return "".join(["\r\n" + line for line in out])


# Names handled apart from plain copying: dropped, or merged into what the edge sets.
# (``cookie``: kept, minus the user-token cookies.) The app token is a secret the edge has
# already checked; the store trusts only the assertion, so the token stops here like a user's.
_REQUEST_DROP = (
    HOP_BY_HOP
    | _EDGE_SET
    | {
        "x-forwarded-for",
        "via",
        "cookie",
        _USER_TOKEN_LOWER,
        "x-vtex-api-apptoken",
    }
)
# ``Server``: the store's software and version are nobody's business outside the stack.
_RESPONSE_DROP = HOP_BY_HOP | {"via", REQUEST_ID.lower(), DATA_REGION.lower(), "server"}
# A line of a header block whose name is in _RESPONSE_DROP or starts with "proxy-".
_RESPONSE_SPECIAL = re.compile(
    "\\r\\n("
    + "|".join(
        sorted(
            (re.escape(n) for n in _RESPONSE_DROP if not n.startswith("proxy-")),
            key=len,
            reverse=True,
        )
    )
    + "|proxy-[^:\\r\\n]*):([^\\r\\n]*)",
    re.ASCII | re.IGNORECASE,
)
_KEEP_ALIVE = frozenset({"keep-alive"})

# Header name as received -> "" (copied, unless Connection names it) or its lower-cased form
# (dropped, or merged into what the edge sets). The same few names arrive on every message, so
# the verdict is kept per spelling instead of lower-casing and testing each time (bounded in
# count and in name length, so odd names cannot make it large).
_MAX_VERDICTS = 1024
_MAX_VERDICT_NAME = 64
_REQUEST_VERDICTS: dict[str, str] = {}


def _verdict(
    verdicts: dict[str, str], name: str, drop: frozenset[str], prefixes: tuple[str, ...]
) -> str:
    lname = name.lower()
    verdict = lname if lname in drop or lname.startswith(prefixes) else ""
    if len(name) <= _MAX_VERDICT_NAME:
        if len(verdicts) >= _MAX_VERDICTS:
            verdicts.clear()
        verdicts[name] = verdict
    return verdict


def encode_block(first_line: str, block: Block) -> bytes:
    """A message head on the wire from a header block (see ``encode_head``)."""
    return f"{first_line[:-2]}{block}\r\n\r\n".encode("utf-8", "surrogateescape")


def encode_head(first_line: str, items: Items) -> bytes:
    """A message head on the wire. Values came from the C parser (or are the edge's own, which
    carry no CR/LF), so no re-validation; ``surrogateescape`` gives back the original bytes."""
    if not items:
        return f"{first_line}\r\n".encode("utf-8", "surrogateescape")
    # "name: value" per pair, joined in C (no per-pair Python frame or f-string).
    lines = "\r\n".join(map(": ".join, items))
    return f"{first_line}{lines}\r\n\r\n".encode("utf-8", "surrogateescape")
