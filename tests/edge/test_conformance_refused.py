"""Raw sockets through both front ends (issue 15's conformance matrix, part 3: what must be
refused, and never forwarded).

Request smuggling shapes (RFC 9112 §6.3, §5.2, §2.2, RFC 9110 §5.5: 400 and close), invalid Host
values and targets, requests after the connection's last one, a client gone mid-body, 501, 505,
414, 431, and a malformed chunk arriving while the body is already streaming. Where the two
front ends differ, RFC 9112 is the expectation; the web front end is a strict xfail only where
``aiohttp.web`` itself cannot meet it, and then only for the one assertion it cannot meet
(``raises=`` ``NotJson`` / ``WrongStatus`` / ``WrongVersion``: any other failure is a real one).
"""

from __future__ import annotations

import pytest

from .conformance import (  # noqa: F401  (edge, front: fixtures)
    AUTH,
    BIG,
    CHUNKED_HEAD,
    JSON,
    PROFILES,
    READ_TIMEOUT,
    SMALL,
    TOTAL_TIMEOUT,
    Edge,
    NotJson,
    Wire,
    WrongStatus,
    WrongVersion,
    chunked,
    edge,
    exchange,
    front,
    fronts,
    ok,
    profile,
    request,
    status,
    still_usable,
)
from .conftest import wait_until

# aiohttp.web answers what its parser refuses itself (web_protocol.RequestHandler.handle_error:
# text/plain, always 400) before any handler or middleware of the application runs.
WEB_PARSER_400 = (
    "aiohttp.web answers a parser error itself (RequestHandler.handle_error: 400 text/plain) "
    "before any handler or middleware runs; the status and close are right, the body is not JSON"
)
WEB_PARSER_STATUS = (
    "aiohttp.web answers every parser error with 400 (RequestHandler.handle_error) before any "
    "handler runs, where RFC 9112 names {}"
)


# -- hosts, targets, the connection's last request, a client gone ---------------------------------


@pytest.mark.parametrize(
    "host", ["bad host", "user@api.example.com", "api.example.com/x", "api.example.com:80x"]
)
async def test_invalid_host_is_400(edge: Edge, host: str) -> None:  # noqa: F811
    """RFC 9112 §3.2: a Host that is not ``uri-host [":" port]`` is a 400."""
    (answer,), wire = await exchange(edge.port, [request("GET", profile(1), host=host)])
    try:
        status(answer, 400)
        assert answer.error() == "invalid_host"
        await still_usable(wire)
    finally:
        await wire.close()
    assert edge.seen() == [("GET", profile(99), b"")]


async def test_userinfo_in_an_absolute_target_is_400(edge: Edge) -> None:  # noqa: F811
    data = request("GET", "http://user@acme.localhost" + profile(1), host="acme.localhost")
    (answer,), wire = await exchange(edge.port, [data])
    try:
        status(answer, 400)
        assert answer.error() == "invalid_host"
    finally:
        await wire.close()
    assert edge.seen() == []


@pytest.mark.parametrize(
    "data",
    [
        request("GET", profile(1) + "#frag"),
        request("OPTIONS", "*"),
        request("CONNECT", "api.example.com:443"),
    ],
    ids=["fragment", "asterisk-form", "authority-form"],
)
async def test_targets_that_are_not_origin_or_absolute_form(edge: Edge, data: bytes) -> None:  # noqa: F811
    """No fragment in a request target (RFC 9112 §3.2); ``OPTIONS *`` and CONNECT's authority
    form name no resource of the APIs: refused as JSON by the edge's own steps, on both front
    ends (aiohttp's router would give its plain-text 404), and never forwarded."""
    (answer,), wire = await exchange(edge.port, [data])
    try:
        status(answer, 400)
        assert answer.error() == "invalid_path"
    finally:
        await wire.close()
    assert edge.seen() == []


@pytest.mark.parametrize("when", ["same-segment", "while-forwarding", "after-the-answer"])
@pytest.mark.parametrize("last", ["connection-close", "http/1.0"])
async def test_nothing_after_the_last_request_is_processed(
    edge: Edge,  # noqa: F811
    last: str,
    when: str,
) -> None:
    """RFC 9112 §9.6: after a request with ``close`` (or HTTP/1.0 without keep-alive) the server
    processes no further request and closes after its answer. In the same segment the parser
    refuses the bytes after it as a whole (llhttp: data after ``Connection: close``, a client's
    violation of §9.6 too): a 400 and close on both front ends, and nothing is forwarded."""
    if last == "connection-close":
        first = request("GET", profile(1), headers=["Connection: close"])
    else:
        first = request("GET", profile(1), version="HTTP/1.0")
    more = request("GET", profile(2))
    wire = await Wire.open(edge.port)
    try:
        if when == "same-segment":
            await wire.send(first + more)
            answer = await wire.answer()
            status(answer, 400)
        else:
            if when == "while-forwarding":
                edge.store.delay = 0.2  # the answer waits at the store while `more` arrives
            await wire.send(first)
            if when == "while-forwarding":
                await wait_until(lambda: edge.store.proxied == 1)
                await wire.send(more)
            answer = await wire.answer()
            ok(answer, "GET", profile(1))
            if when == "after-the-answer":
                await wire.send(more)
        assert answer.closes and await wire.closed()
    finally:
        await wire.close()
    assert ("GET", profile(2), b"") not in edge.seen()


async def test_client_gone_mid_body(edge: Edge) -> None:  # noqa: F811
    """A client that closes halfway through a streamed body: nothing complete reaches the store
    and nothing stays in flight."""
    data = request("POST", PROFILES, BIG, headers=[JSON])
    wire = await Wire.open(edge.port)
    await wire.send(data[: len(data) // 2])
    await wait_until(lambda: edge.state.in_flight == 1)  # admitted, streaming to the store
    await wire.close()
    await wait_until(lambda: edge.state.in_flight == 0)
    assert edge.seen() == []


# -- refused, closed, never forwarded --------------------------------------------------------------


def _post(*lines: str, body: bytes = b"", line_end: bytes = b"\r\n") -> bytes:
    head = [
        f"POST {PROFILES} HTTP/1.1",
        "Host: api.example.com",
        *(f"{k}: {v}" for k, v in AUTH.items()),
        *lines,
    ]
    return line_end.join(h.encode("latin-1") for h in head) + line_end + line_end + body


CHUNKED_SMALL = chunked(SMALL, 32)
REFUSED = {
    "missing-host": request("GET", profile(1), host=None),
    "missing-host-absolute-form": request("GET", "http://acme.localhost" + profile(1), host=None),
    "two-host-lines": request("GET", profile(1), headers=["Host: other.example.com"]),
    "duplicate-content-length": _post(
        "Content-Length: 95", "Content-Length: 96", body=SMALL + b"x"
    ),
    "content-length-then-chunked": _post(
        "Content-Length: 95", "Transfer-Encoding: chunked", body=CHUNKED_SMALL
    ),
    "chunked-then-content-length": _post(
        "Transfer-Encoding: chunked", "Content-Length: 95", body=CHUNKED_SMALL
    ),
    "chunked-not-final": _post("Transfer-Encoding: chunked, identity", body=CHUNKED_SMALL),
    "leading-space-te-line": _post(
        "Content-Length: 95", " Transfer-Encoding: chunked", body=CHUNKED_SMALL
    ),
    "space-before-colon": _post("Transfer-Encoding : chunked", body=CHUNKED_SMALL),
    "obs-fold": _post("X-Note: first", " folded", "Content-Length: 95", body=SMALL),
    "bare-lf": _post("Content-Length: 95", body=SMALL, line_end=b"\n"),
    "nul-in-value": _post("X-Note: a\x00b", "Content-Length: 95", body=SMALL),
    "bare-cr-in-value": _post("X-Note: a\rb", "Content-Length: 95", body=SMALL),
}


@fronts(WEB_PARSER_400, raises=NotJson)
@pytest.mark.parametrize("shape", list(REFUSED))
async def test_refused_and_closed_never_forwarded(edge: Edge, shape: str) -> None:  # noqa: F811
    (answer,), wire = await exchange(edge.port, [REFUSED[shape]])
    try:
        status(answer, 400)
        assert answer.closes and await wire.closed()
    finally:
        await wire.close()
    assert edge.seen() == []
    assert answer.error()  # NotJson on the web front end: the last check


async def test_unknown_transfer_coding_is_501(edge: Edge) -> None:  # noqa: F811
    data = _post("Transfer-Encoding: gzip, chunked", body=CHUNKED_SMALL)
    (answer,), wire = await exchange(edge.port, [data])
    try:
        status(answer, 501)
        assert answer.error() == "unsupported_transfer_coding"
        if answer.closes:
            assert await wire.closed()
        else:
            await still_usable(wire)
    finally:
        await wire.close()
    assert edge.seen() in ([], [("GET", profile(99), b"")])


@fronts(
    "aiohttp.web writes the request's version in the status line (StreamResponse."
    "_write_headers): a 505 to HTTP/2.0 says HTTP/2.0, where RFC 9110 §6.2 wants the highest "
    "version the server conforms to (HTTP/1.1)",
    raises=WrongVersion,
)
async def test_http2_request_line_is_505(edge: Edge) -> None:  # noqa: F811
    (answer,), wire = await exchange(edge.port, [request("GET", profile(1), version="HTTP/2.0")])
    try:
        status(answer, 505)
        assert answer.error() == "http_version_not_supported"
    finally:
        await wire.close()
    assert edge.seen() == []
    if answer.version != "HTTP/1.1":
        raise WrongVersion(answer.version)


@fronts(WEB_PARSER_STATUS.format("414 (URI Too Long)"), raises=WrongStatus)
async def test_long_uri_is_414(edge: Edge) -> None:  # noqa: F811
    target = profile(1) + "&q=" + "x" * 8200
    (answer,), wire = await exchange(edge.port, [request("GET", target)])
    try:
        status(answer, 414)
        assert answer.error() == "uri_too_long"
        assert answer.closes and await wire.closed()
    finally:
        await wire.close()
    assert edge.seen() == []


@pytest.mark.parametrize(
    ("front", "lines"),
    [
        ("raw", 125),
        ("web", 125),
        ("raw", 200),
        pytest.param(
            "web",
            200,
            marks=pytest.mark.xfail(
                strict=True,
                raises=WrongStatus,
                reason=WEB_PARSER_STATUS.format("431 (over its parser's max_headers, 128)"),
            ),
        ),
    ],
)
async def test_too_many_header_lines_is_431(edge: Edge, lines: int) -> None:  # noqa: F811
    pad = [f"X-Pad-{i}: {i}" for i in range(lines - 3)]  # + Host and the two auth lines
    (answer,), wire = await exchange(edge.port, [_request(pad)])
    try:
        status(answer, 431)
        assert answer.error() == "too_many_headers"
    finally:
        await wire.close()
    assert edge.seen() == []


@fronts(WEB_PARSER_STATUS.format("431 (Request Header Fields Too Large)"), raises=WrongStatus)
async def test_header_line_too_long_is_431(edge: Edge) -> None:  # noqa: F811
    (answer,), wire = await exchange(edge.port, [_request(["X-Big: " + "b" * 8200])])
    try:
        status(answer, 431)
        assert answer.error() == "header_too_large"
    finally:
        await wire.close()
    assert edge.seen() == []


def _request(headers: list[str]) -> bytes:
    return request("GET", profile(1), headers=headers)


# -- a body gone bad later ------------------------------------------------------------------------


@fronts(
    "aiohttp.web's RequestHandler.data_received queues its parser's refusal of a later chunk as "
    "the next message and fails nothing: the body being read just stops, and the exchange ends "
    "at its deadline (408, then close: web_front._last_answer), not at once with a 400",
    raises=WrongStatus,
)
async def test_malformed_chunk_size_in_a_later_segment(edge: Edge) -> None:  # noqa: F811
    """The body is already streaming to the store when a bad chunk size arrives: the client
    gets a 400 and a close, the store never gets a complete request, nothing stays in flight."""
    wire = await Wire.open(edge.port, timeout=TOTAL_TIMEOUT + READ_TIMEOUT)  # (web: 408)
    try:
        await wire.send(CHUNKED_HEAD, b"10\r\n" + SMALL[:16] + b"\r\n")
        await wait_until(lambda: edge.state.in_flight == 1)  # admitted, forwarding
        await wire.send(b"zz\r\n" + SMALL[16:32] + b"\r\n0\r\n\r\n")
        answer = await wire.answer()
        status(answer, 400)
        assert answer.error() == "bad_request"
        assert answer.closes and await wire.closed()
    finally:
        await wire.close()
    await wait_until(lambda: edge.state.in_flight == 0)
    assert edge.seen() == []
