"""Raw sockets through both front ends (issue 15's conformance matrix, part 2).

Requests split at every boundary and sent byte by byte, HTTP/1.0, ``Expect: 100-continue``,
chunked bodies with extensions and trailers, pipelining, requests after a refusal, HEAD and
OPTIONS, absolute-form targets, and the shapes a proxy must refuse and never forward (RFC 9112
§6.3, §5.2, §2.2, RFC 9110 §5.5). Where the two front ends differ, RFC 9112 is the expectation;
the web front end is a strict xfail only where ``aiohttp.web`` itself cannot meet it, and then
only for the one assertion it cannot meet (``conformance.NotJson`` / ``WrongStatus``).
"""

from __future__ import annotations

import pytest

from .conformance import (  # noqa: F401  (edge, front: fixtures)
    AUTH,
    PROFILES,
    SMALL,
    STORE_SERVER,
    Answer,
    Edge,
    NotJson,
    Wire,
    WrongStatus,
    WrongVersion,
    edge,
    exchange,
    front,
    fronts,
    profile,
    request,
)
from .conftest import wait_until

JSON = "Content-Type: application/json"
POST = request("POST", PROFILES, SMALL, headers=[JSON])
HEAD_END = POST.index(b"\r\n\r\n")

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


def status(answer: Answer, expected: int) -> None:
    if answer.status != expected:
        raise WrongStatus(f"{answer.status} {answer.reason}, not {expected}: {answer.body[:200]!r}")


def ok(answer: Answer, method: str, target: str, body: bytes = b"") -> None:
    """A 200 relayed from the store, for this request."""
    status(answer, 200)
    assert answer.header("X-Data-Region") == "eu-west-1"
    if method != "HEAD":
        echo = answer.json()
        assert (echo["raw_path"], echo["body_len"]) == (target, len(body)), echo


async def still_usable(wire: Wire) -> None:
    """The connection serves another request."""
    target = profile(99)
    await wire.send(request("GET", target))
    ok(await wire.answer(), "GET", target)


# -- splits, bytes, gaps ------------------------------------------------------------------------


def split_points(data: bytes, body_len: int) -> dict[str, int]:
    """Where to cut a request with a ``body_len``-byte body in two."""
    end = data.index(b"\r\n\r\n")
    return {
        "after-request-line": data.index(b"\r\n") + 2,
        "mid-header": data.index(b"X-VTEX-API-AppToken") + 10,
        "before-crlfcrlf": end,
        "inside-crlfcrlf": end + 2,
        "after-head": end + 4,
        "mid-body": end + 4 + body_len // 2,
    }


SPLITS = split_points(POST, len(SMALL))
ENDINGS = {
    "keep-alive": ("HTTP/1.1", []),
    "close": ("HTTP/1.1", ["Connection: close"]),
    "http/1.0": ("HTTP/1.0", []),
}


@pytest.mark.parametrize("ending", list(ENDINGS))
@pytest.mark.parametrize("where", list(SPLITS))
async def test_split_request(edge: Edge, where: str, ending: str) -> None:  # noqa: F811
    """Head and body in two segments, wherever the split falls, however the connection ends
    (an earlier listener never answered a Connection: close or HTTP/1.0 request whose body came
    after its head)."""
    version, extra = ENDINGS[ending]
    data = request("POST", PROFILES, SMALL, headers=[JSON, *extra], version=version)
    i = split_points(data, len(SMALL))[where]
    (answer,), wire = await exchange(edge.port, [data[:i], data[i:]], gap=0.02)
    try:
        ok(answer, "POST", PROFILES, SMALL)
        if ending == "keep-alive":
            await still_usable(wire)
        else:
            assert answer.closes and await wire.closed()
    finally:
        await wire.close()
    assert edge.seen()[0] == ("POST", PROFILES, SMALL)


async def test_split_at_every_boundary_at_once(edge: Edge) -> None:  # noqa: F811
    cuts = sorted(SPLITS.values())
    pieces = [POST[a:b] for a, b in zip([0, *cuts], [*cuts, len(POST)], strict=True)]
    (answer,), wire = await exchange(edge.port, pieces, gap=0.02)
    try:
        ok(answer, "POST", PROFILES, SMALL)
        await still_usable(wire)
    finally:
        await wire.close()
    assert edge.seen()[0] == ("POST", PROFILES, SMALL)


async def test_byte_by_byte(edge: Edge) -> None:  # noqa: F811
    body = b'{"a":1}'
    data = request("PUT", profile(1), body, headers=[JSON])
    (answer,), wire = await exchange(
        edge.port, [data[i : i + 1] for i in range(len(data))], gap=0.001
    )
    try:
        ok(answer, "PUT", profile(1), body)
        await still_usable(wire)
    finally:
        await wire.close()
    assert edge.seen()[0] == ("PUT", profile(1), body)


async def test_long_gaps_between_pieces(edge: Edge) -> None:  # noqa: F811
    cut = SPLITS["mid-header"]
    pieces = [POST[:cut], POST[cut : HEAD_END + 4], POST[HEAD_END + 4 :]]
    (answer,), wire = await exchange(edge.port, pieces, gap=0.25)
    try:
        ok(answer, "POST", PROFILES, SMALL)
    finally:
        await wire.close()
    assert edge.seen() == [("POST", PROFILES, SMALL)]


# -- HTTP/1.0 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_http10_without_keep_alive_is_answered_and_closed(edge: Edge, method: str) -> None:  # noqa: F811
    body = SMALL if method == "POST" else b""
    target = PROFILES if method == "POST" else profile(1)
    data = request(method, target, body, headers=[JSON] if body else [], version="HTTP/1.0")
    (answer,), wire = await exchange(edge.port, [data])
    try:
        ok(answer, method, target, body)
        assert await wire.closed()  # HTTP/1.0 without keep-alive: the answer is the last
    finally:
        await wire.close()
    assert edge.seen() == [(method, target, body)]


async def test_http10_keep_alive(edge: Edge) -> None:  # noqa: F811
    """RFC 9112 §9.3 / Appendix C.2.2: a server may keep an HTTP/1.0 keep-alive connection, and
    then says so (``Connection: keep-alive``); else it closes after the answer."""
    data = request(
        "POST", PROFILES, SMALL, headers=[JSON, "Connection: keep-alive"], version="HTTP/1.0"
    )
    (answer,), wire = await exchange(edge.port, [data])
    try:
        ok(answer, "POST", PROFILES, SMALL)
        if "keep-alive" in (answer.header("Connection") or "").lower():
            await wire.send(
                request("GET", profile(2), version="HTTP/1.0", headers=["Connection: keep-alive"])
            )
            ok(await wire.answer(), "GET", profile(2))
        else:
            assert await wire.closed()
    finally:
        await wire.close()
    assert edge.seen()[0] == ("POST", PROFILES, SMALL)


async def test_http10_gets_a_streamed_answer_without_chunked(edge: Edge) -> None:  # noqa: F811
    """RFC 9112 §6.1: no Transfer-Encoding in an answer to an HTTP/1.0 request."""
    target = profile(1) + "&chunked=1"
    (answer,), wire = await exchange(edge.port, [request("GET", target, version="HTTP/1.0")])
    try:
        assert answer.header("Transfer-Encoding") is None, answer.headers
        ok(answer, "GET", target)
    finally:
        await wire.close()
    assert edge.seen() == [("GET", target, b"")]


# -- Expect: 100-continue -------------------------------------------------------------------------

EXPECT = request("POST", PROFILES, SMALL, headers=[JSON, "Expect: 100-continue"])


async def test_expect_continue_then_body(edge: Edge) -> None:  # noqa: F811
    wire = await Wire.open(edge.port)
    try:
        await wire.send(EXPECT[: EXPECT.index(b"\r\n\r\n") + 4])
        raw = await wire._line(b"\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 100 "), raw
        await wire.send(SMALL)
        answer = await wire.answer()
        ok(answer, "POST", PROFILES, SMALL)
        await still_usable(wire)
    finally:
        await wire.close()
    assert edge.seen()[0] == ("POST", PROFILES, SMALL)


async def test_expect_continue_body_sent_without_waiting(edge: Edge) -> None:  # noqa: F811
    (answer,), wire = await exchange(edge.port, [EXPECT])
    try:
        assert answer.interim in ([], [100]), answer.interim
        ok(answer, "POST", PROFILES, SMALL)
        await still_usable(wire)
    finally:
        await wire.close()
    assert edge.seen()[0] == ("POST", PROFILES, SMALL)


@pytest.mark.parametrize("refusal", ["401-bad-key", "413-declared-length"])
async def test_refused_before_the_body_is_sent(edge: Edge, refusal: str) -> None:  # noqa: F811
    """Refused on its head alone, the body never sent: the answer says the connection ends
    (RFC 9110 §10.1.1), and it does -- the body the edge did not read cannot be skipped."""
    if refusal == "401-bad-key":
        lines = [JSON, "Expect: 100-continue", "X-VTEX-API-AppKey: nope", "X-VTEX-API-AppToken: x"]
        head = request("POST", PROFILES, auth=False, headers=[*lines, "Content-Length: 95"])
        expected = 401
    else:
        head = request("POST", PROFILES, headers=[JSON, f"Content-Length: {1024 * 1024}"])
        expected = 413
    (answer,), wire = await exchange(edge.port, [head])
    try:
        status(answer, expected)
        assert answer.error()
        assert answer.closes and await wire.closed()
    finally:
        await wire.close()
    assert edge.seen() == []


# -- chunked bodies -------------------------------------------------------------------------------


def chunked(body: bytes, size: int, *, ext: bool = False, trailers: list[str] = ()) -> bytes:  # type: ignore[assignment]
    out = b""
    for i in range(0, len(body), size):
        piece = body[i : i + size]
        out += b"%x%s\r\n%s\r\n" % (len(piece), b';name="v";n=1' if ext else b"", piece)
    return out + b"0\r\n" + b"".join(t.encode() + b"\r\n" for t in trailers) + b"\r\n"


CHUNKED_HEAD = request("POST", PROFILES, headers=[JSON, "Transfer-Encoding: chunked"])


@pytest.mark.parametrize(
    "shape", ["plain", "extensions", "trailers", "extensions+trailers", "200KiB-in-8KiB"]
)
async def test_chunked_body(edge: Edge, shape: str) -> None:  # noqa: F811
    body = SMALL
    size = 10
    if shape == "200KiB-in-8KiB":
        body = SMALL * (200 * 1024 // len(SMALL))
        size = 8192
    encoded = chunked(
        body,
        size,
        ext="extensions" in shape,
        trailers=["X-Checksum: abc", "X-Other: 1"] if "trailers" in shape else [],
    )
    half = len(encoded) // 2
    (answer,), wire = await exchange(edge.port, [CHUNKED_HEAD, encoded[:half], encoded[half:]])
    try:
        ok(answer, "POST", PROFILES, body)
        await still_usable(wire)
    finally:
        await wire.close()
    assert edge.seen()[0] == ("POST", PROFILES, body)
    assert "x-checksum" not in edge.store.seen[0].headers


# -- several requests on one connection -----------------------------------------------------------


@pytest.mark.parametrize("with_head", [False, True])
async def test_pipelined_mixed_requests_answered_in_order(edge: Edge, with_head: bool) -> None:  # noqa: F811
    reqs = [
        ("GET", profile(1), b""),
        ("POST", PROFILES, SMALL),
        *([("HEAD", profile(2), b"")] if with_head else []),
        ("POST", PROFILES + "&chunked-body", SMALL),
        ("DELETE", profile(3), b""),
    ]
    data = b""
    for method, target, body in reqs:
        if target.endswith("&chunked-body"):
            data += request(method, target, headers=["Transfer-Encoding: chunked"])
            data += chunked(body, 16)
        else:
            data += request(method, target, body)
    wire = await Wire.open(edge.port)
    try:
        await wire.send(data)
        for method, target, body in reqs:
            ok(await wire.answer(head=method == "HEAD"), method, target, body)
    finally:
        await wire.close()
    assert edge.seen() == reqs


@pytest.mark.parametrize("refusal", ["404-unknown-route", "401-bad-key", "401-post-with-body"])
async def test_request_after_a_refusal_on_the_same_connection(edge: Edge, refusal: str) -> None:  # noqa: F811
    if refusal == "404-unknown-route":
        first, expected = request("GET", "/nope/route?an=acme"), (404, "not_found")
    elif refusal == "401-bad-key":
        bad = request(
            "GET",
            profile(1),
            auth=False,
            headers=["X-VTEX-API-AppKey: nope", "X-VTEX-API-AppToken: nope"],
        )
        first, expected = bad, (401, None)
    else:
        bad = request(
            "POST",
            PROFILES,
            SMALL,
            auth=False,
            headers=[JSON, "X-VTEX-API-AppKey: nope", "X-VTEX-API-AppToken: x"],
        )
        first, expected = bad, (401, None)
    (answer,), wire = await exchange(edge.port, [first])
    try:
        status(answer, expected[0])
        code = answer.error()
        if expected[1] is not None:
            assert code == expected[1]
        assert not answer.closes
        await still_usable(wire)
    finally:
        await wire.close()
    assert edge.seen() == [("GET", profile(99), b"")]


# -- methods and targets --------------------------------------------------------------------------


async def test_head(edge: Edge) -> None:  # noqa: F811
    target = profile(1)
    (answer,), wire = await exchange(edge.port, [request("HEAD", target)], head=True)
    try:
        ok(answer, "HEAD", target)
        await still_usable(wire)  # no stray body bytes before the next answer
    finally:
        await wire.close()
    assert edge.seen() == [("HEAD", target, b""), ("GET", profile(99), b"")]


async def test_options(edge: Edge) -> None:  # noqa: F811
    (answer,), wire = await exchange(edge.port, [request("OPTIONS", profile(1))])
    try:
        ok(answer, "OPTIONS", profile(1))
        await still_usable(wire)
    finally:
        await wire.close()
    assert edge.seen()[0] == ("OPTIONS", profile(1), b"")


@pytest.mark.parametrize("host", ["same", "other"])
async def test_absolute_form_target_is_accepted(edge: Edge, host: str) -> None:  # noqa: F811
    """RFC 9112 §3.2.2: a server MUST accept the absolute form; the target's authority wins over
    Host (here ``acme.localhost`` names the account; another Host must not change that)."""
    target = "/api/storage/profile-system/profiles"
    data = request(
        "POST",
        f"http://acme.localhost{target}",
        SMALL,
        host="acme.localhost" if host == "same" else "zz-unknown.localhost",
        headers=[JSON],
    )
    (answer,), wire = await exchange(edge.port, [data])
    try:
        ok(answer, "POST", target, SMALL)
        await still_usable(wire)
    finally:
        await wire.close()
    assert edge.seen()[0] == ("POST", target, SMALL)


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


# -- what the store says of itself, and a body gone bad later -------------------------------------


@pytest.mark.parametrize("streamed", [False, True])
async def test_store_server_header_never_reaches_the_client(edge: Edge, streamed: bool) -> None:  # noqa: F811
    target = profile(1) + ("&chunked=1" if streamed else "")
    (answer,), wire = await exchange(edge.port, [request("GET", target)])
    try:
        ok(answer, "GET", target)
        assert STORE_SERVER not in answer.all("Server"), answer.headers
        if streamed:
            assert answer.header("Transfer-Encoding") == "chunked"
    finally:
        await wire.close()
    assert edge.seen() == [("GET", target, b"")]


@fronts(
    "aiohttp.web's RequestHandler.data_received queues its parser's refusal of a later chunk as "
    "the next message and fails nothing: the body being read just stops, and the exchange ends "
    "at its deadline (408, then close: app._last_answer), not at once with a 400",
    raises=WrongStatus,
)
async def test_malformed_chunk_size_in_a_later_segment(edge: Edge) -> None:  # noqa: F811
    """The body is already streaming to the store when a bad chunk size arrives: the client
    gets a 400 and a close, the store never gets a complete request, nothing stays in flight."""
    wire = await Wire.open(edge.port)
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
