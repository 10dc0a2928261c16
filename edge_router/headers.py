"""Which headers cross the edge, in each direction. Pure functions over multidicts.

Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection, not the message: Connection and
every header it names, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade, Proxy-*. They are
never forwarded. ``Expect`` is answered by our own server, so it is not forwarded either.
Every client-sent ``x-residency-*`` header is dropped: only the edge speaks that language to the
stores. Everything else, ``Content-Encoding`` and ``traceparent`` included, passes untouched.
"""

from __future__ import annotations

import os
import re

from multidict import CIMultiDict, CIMultiDictProxy

from profile_store.assertion import ASSERTION_HEADER, INTERNAL_HEADER_PREFIX

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
_EDGE_SET = frozenset({"host", "x-forwarded-proto", "x-forwarded-host", "x-request-id"})

REQUEST_ID = "X-Request-Id"
DATA_REGION = "X-Data-Region"
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9_.:-]{8,128}$")


def connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> frozenset[str]:
    """Header names listed in Connection: they are hop-by-hop for this message."""
    values = headers.getall("Connection", ())
    if not values:
        return frozenset()
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


def is_hop_by_hop(lname: str, named: frozenset[str]) -> bool:
    return lname in HOP_BY_HOP or lname.startswith("proxy-") or lname in named


def request_id(incoming: str | None) -> str:
    """Propagate a well-formed client request id; otherwise mint one."""
    if incoming and _REQUEST_ID_OK.match(incoming):
        return incoming
    return os.urandom(16).hex()


def upstream_request_headers(
    incoming: CIMultiDictProxy[str],
    *,
    request_id: str,
    peer: str | None,
    scheme: str,
    via: str,
    assertion: str,
) -> CIMultiDict[str]:
    named = connection_tokens(incoming)
    out: CIMultiDict[str] = CIMultiDict()
    xff = None
    vias = []
    for name, value in incoming.items():
        lname = name.lower()
        if is_hop_by_hop(lname, named) or lname in _EDGE_SET:
            continue
        if lname.startswith(INTERNAL_HEADER_PREFIX):
            continue
        if lname == "x-forwarded-for":
            xff = value if xff is None else f"{xff}, {value}"
            continue
        if lname == "via":
            vias.append(value)
            continue
        out.add(name, value)
    if peer:
        xff = peer if xff is None else f"{xff}, {peer}"
    if xff is not None:
        out["X-Forwarded-For"] = xff
    out["X-Forwarded-Proto"] = scheme
    host = incoming.get("Host")
    if host is not None:
        out["X-Forwarded-Host"] = host
    vias.append(f"1.1 {via}")
    out["Via"] = ", ".join(vias)
    out[REQUEST_ID] = request_id
    out[ASSERTION_HEADER] = assertion
    return out


def downstream_response_headers(
    upstream: CIMultiDictProxy[str], *, request_id: str, region: str, via: str
) -> CIMultiDict[str]:
    named = connection_tokens(upstream)
    out: CIMultiDict[str] = CIMultiDict()
    vias = []
    for name, value in upstream.items():
        lname = name.lower()
        if is_hop_by_hop(lname, named):
            continue
        if lname == "via":
            vias.append(value)
            continue
        out.add(name, value)
    vias.append(f"1.1 {via}")
    out["Via"] = ", ".join(vias)
    out[REQUEST_ID] = request_id
    out[DATA_REGION] = region
    return out
