"""Raw sockets through both front ends (issue 15's conformance matrix, part 2: what must work).

Requests split at every boundary and sent byte by byte, HTTP/1.0, ``Expect: 100-continue``,
chunked bodies with extensions and trailers, pipelining, requests after a refusal on the same
connection, HEAD and OPTIONS, absolute-form targets, the store's ``Server`` header. What must be
refused is in ``test_conformance_refused``; the helpers are in ``conformance``.
"""

from __future__ import annotations

import pytest

from .conformance import (  # noqa: F401  (edge, front: fixtures)
    BIG,
    CHUNKED_HEAD,
    JSON,
    PROFILES,
    SMALL,
    STORE_SERVER,
    Edge,
    Wire,
    chunked,
    edge,
    exchange,
    front,
    ok,
    profile,
    request,
    status,
    still_usable,
)

POST = request("POST", PROFILES, SMALL, headers=[JSON])
HEAD_END = POST.index(b"\r\n\r\n")


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
        assert answer.interim == []  # refused on the head: the body was never invited
        assert answer.error()
        assert answer.closes and await wire.closed()
    finally:
        await wire.close()
    assert edge.seen() == []


# -- chunked bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [
        "plain",
        "extensions",
        "trailers",
        "extensions+trailers",
        "extensions+trailers-byte-by-byte",
        "200KiB-in-8KiB",
    ],
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
    pieces = [encoded[:half], encoded[half:]]
    gap = 0.005
    if shape.endswith("byte-by-byte"):
        pieces, gap = [encoded[i : i + 1] for i in range(len(encoded))], 0.001
    (answer,), wire = await exchange(edge.port, [CHUNKED_HEAD, *pieces], gap=gap)
    try:
        ok(answer, "POST", PROFILES, body)
        await still_usable(wire)
    finally:
        await wire.close()
    assert edge.seen()[0] == ("POST", PROFILES, body)
    assert "x-checksum" not in edge.store.seen[0].headers


# -- several requests on one connection -----------------------------------------------------------


@pytest.mark.parametrize("variant", ["plain", "with-head", "200KiB-and-expect"])
async def test_pipelined_mixed_requests_answered_in_order(edge: Edge, variant: str) -> None:  # noqa: F811
    reqs = [
        ("GET", profile(1), b""),
        ("POST", PROFILES, SMALL),
        *([("HEAD", profile(2), b"")] if variant == "with-head" else []),
        *([("PUT", profile(4) + "&expect", BIG)] if variant == "200KiB-and-expect" else []),
        ("POST", PROFILES + "&chunked-body", SMALL),
        ("DELETE", profile(3), b""),
    ]
    data = b""
    for method, target, body in reqs:
        if target.endswith("&chunked-body"):
            data += request(method, target, headers=["Transfer-Encoding: chunked"])
            data += chunked(body, 16)
        elif target.endswith("&expect"):  # sent without waiting for 100 Continue
            data += request(method, target, body, headers=["Expect: 100-continue"])
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
    assert edge.store.seen[0].headers["x-forwarded-host"] == ["acme.localhost"]


async def test_empty_host_is_an_empty_authority(edge: Edge) -> None:  # noqa: F811
    """RFC 9112 §3.2: an empty Host is valid (no authority); the account comes from ``an``."""
    (answer,), wire = await exchange(edge.port, [request("GET", profile(1), host="")])
    try:
        ok(answer, "GET", profile(1))
    finally:
        await wire.close()
    assert edge.seen() == [("GET", profile(1), b"")]


# -- what the store says of itself ---------------------------------------------------------------


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
