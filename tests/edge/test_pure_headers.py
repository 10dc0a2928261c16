"""Tier (a), pure decision tables (no I/O, no servers): the headers the edge forwards -- what a
request to a store keeps, drops and adds (hop-by-hop, internal, ``X-Forwarded-*``, ``Via``), and
what an answer to the client keeps and gets (``X-Data-Region``).
"""

from __future__ import annotations

from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from edge_router.headers import (
    connection_tokens,
    downstream_response_block,
    split_line,
    to_block,
    upstream_request_items,
)


def upstream_request_headers(
    incoming: CIMultiDictProxy[str] | CIMultiDict[str], **kwargs: Any
) -> CIMultiDict[str]:
    """``upstream_request_items`` as a multidict, to look headers up by name."""
    return CIMultiDict(upstream_request_items(incoming, **kwargs))


def downstream_response_headers(
    upstream: CIMultiDictProxy[str] | CIMultiDict[str], *, request_id: str, region: str, via: str
) -> CIMultiDict[str]:
    """``downstream_response_block`` of a store's headers, as a multidict."""
    block = downstream_response_block(
        to_block(upstream.items()),
        connection_tokens(upstream),
        request_id=request_id,
        region=region,
        via=via,
    )
    return CIMultiDict(split_line(line) for line in block.split("\r\n")[1:])


def test_forwarded_host_is_the_absolute_targets_authority() -> None:
    incoming = CIMultiDictProxy(CIMultiDict([("Host", "other.localhost")]))
    args = dict(request_id="rid-12345678", peer=None, scheme="http", via="e", assertion="a")
    assert upstream_request_headers(incoming, **args)["X-Forwarded-Host"] == "other.localhost"
    out = upstream_request_headers(incoming, host="acme.localhost", **args)
    assert out.getall("X-Forwarded-Host") == ["acme.localhost"]


def _proxy(h: dict[str, str] | list[tuple[str, str]]) -> CIMultiDictProxy[str]:
    items = h.items() if isinstance(h, dict) else h
    return CIMultiDictProxy(CIMultiDict(items))


def test_request_headers_drop_hop_by_hop_and_internal() -> None:
    incoming = _proxy(
        [
            ("Host", "acme.localhost:8080"),
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("X-Secret-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Trailer", "X-T"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "websocket"),
            ("Proxy-Authorization", "Basic x"),
            ("Proxy-Foo", "1"),
            ("Expect", "100-continue"),
            ("X-Residency-Assertion", "forged"),
            ("x-residency-anything", "forged"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Forwarded-Proto", "https"),
            ("X-Request-Id", "client-id-xyz"),
            ("Content-Encoding", "gzip"),
            ("Content-Length", "10"),
            ("traceparent", "00-abc-def-01"),
            ("Via", "1.0 upstream-lb"),
            ("Accept", "application/json"),
        ]
    )
    out = upstream_request_headers(
        incoming,
        request_id="rid-12345678",
        peer="127.0.0.9",
        scheme="http",
        via="edge",
        assertion="v1;signed",
    )
    names = {k.lower() for k in out}
    for dropped in (
        "connection",
        "x-secret-hop",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-foo",
        "expect",
        "x-residency-anything",
        "host",
    ):
        assert dropped not in names, dropped
    assert out.getall("X-Residency-Assertion") == ["v1;signed"]
    assert out["X-Forwarded-For"] == "10.0.0.1, 127.0.0.9"
    assert out["X-Forwarded-Proto"] == "http"
    assert out["X-Forwarded-Host"] == "acme.localhost:8080"
    assert out["X-Request-Id"] == "rid-12345678"
    assert out["Content-Encoding"] == "gzip"
    assert out["Content-Length"] == "10"
    assert out["traceparent"] == "00-abc-def-01"
    assert out["Via"] == "1.0 upstream-lb, 1.1 edge"
    assert out["Accept"] == "application/json"


def test_response_headers_drop_hop_by_hop_and_add_region() -> None:
    upstream = _proxy(
        [
            ("Connection", "close, X-Hop"),
            ("X-Hop", "1"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Encoding", "br"),
            ("Content-Type", "application/json"),
            ("X-Data-Region", "spoofed"),
        ]
    )
    out = downstream_response_headers(upstream, request_id="r" * 16, region="eu-west-1", via="e")
    assert "X-Hop" not in out and "Connection" not in out and "Transfer-Encoding" not in out
    assert out["Content-Encoding"] == "br"
    assert out.getall("X-Data-Region") == ["eu-west-1"]
    assert out["Via"] == "1.1 e"
