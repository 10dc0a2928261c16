"""``parse_whole_answer`` (the strict fast reader of a whole upstream answer) against llhttp.

The invariant: whenever ``parse_whole_answer(data)`` returns an ``Answer``, a fresh
``HttpResponseParser`` (aiohttp's llhttp parser, configured as ``UpstreamConnection`` configures
it) fed the same bytes parses exactly one message without error, with its payload at EOF, and
both agree on status, reason, body, should_close, the header (name, value) pairs and the
Connection tokens. Equivalently: whenever llhttp rejects the bytes, or reads them as anything
but one complete message, ``parse_whole_answer`` returns None (and the caller falls back to
llhttp).

Header names are compared case-insensitively with ``msg.headers`` (aiohttp's C parser replaces
well-known names by its canonical spelling: ``content-type`` comes out as ``Content-Type``) and
exactly with ``msg.raw_headers`` (the names as received, which is what ``Answer.block`` holds).

The reference is the parser as production runs it: lenient llhttp. Under ``python -X dev`` or
PYTHONASYNCIODEBUG aiohttp makes it strict (e.g. a repeated Content-Type or Server is then an
error), and this test, like the fast path itself, does not follow that switch.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_parser import HttpResponseParser

from edge_router.headers import connection_tokens, split_line
from edge_router.wire import Answer, parse_whole_answer


class LLHttp:
    """Fresh reference parsers, configured as ``UpstreamConnection`` configures its own."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.protocol = BaseProtocol(loop)

    def parser(self) -> HttpResponseParser:
        return HttpResponseParser(
            self.protocol, self.loop, 2**16, read_until_eof=True, auto_decompress=False
        )


@pytest.fixture(scope="module")
def llhttp() -> Iterator[LLHttp]:
    loop = asyncio.new_event_loop()
    try:
        yield LLHttp(loop)
    finally:
        loop.close()


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def disagreement(llhttp: LLHttp, data: bytes, answer: Answer | None) -> str | None:
    """Why ``answer`` (what ``parse_whole_answer`` made of ``data``) disagrees with llhttp, or
    None when it does not. A None ``answer`` never disagrees: llhttp then decides alone."""
    if answer is None:
        return None
    try:
        messages, upgraded, tail = llhttp.parser().feed_data(data)
    except Exception as exc:  # HttpProcessingError and kin: llhttp rejects the bytes
        return f"accepted, but llhttp raised {exc!r}"
    if len(messages) != 1 or upgraded or tail:
        return f"accepted, but llhttp read {len(messages)} message(s), {upgraded=}, {tail=!r}"
    msg, payload = messages[0]
    if not payload.is_eof():
        return "accepted, but llhttp's payload is not at EOF"
    ours = [split_line(line) for line in answer.block.split("\r\n")[1:]]
    raw = [(_text(name), _text(value)) for name, value in msg.raw_headers]
    mine = {
        "status": answer.status,
        "reason": answer.reason,
        "body": answer.body,
        "should_close": answer.should_close,
        "headers": [(name.lower(), value) for name, value in ours],
        "raw_headers": ours,
        "named": answer.named,
    }
    theirs = {
        "status": msg.code,
        "reason": msg.reason,
        "body": payload.read_nowait(-1),
        "should_close": msg.should_close,
        "headers": [(name.lower(), value) for name, value in msg.headers.items()],
        "raw_headers": raw,
        "named": connection_tokens(msg.headers),
    }
    diffs = [f"{k}: {mine[k]!r} != llhttp {theirs[k]!r}" for k in mine if mine[k] != theirs[k]]
    if answer.payload is not None:
        diffs.append("payload is not None")
    return "; ".join(diffs) or None


def check(llhttp: LLHttp, data: bytes) -> str | None:
    return disagreement(llhttp, data, parse_whole_answer(data))


# -- hand-written corpus ---------------------------------------------------------------------

OK_BODY = b"Content-Length: 2\r\n\r\nok"

ACCEPTED = {
    "json-200": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b'Content-Length: 13\r\n\r\n{"a": [1, 2]}',
    "201-created": b"HTTP/1.1 201 Created\r\nLocation: /p/1\r\nContent-Length: 2\r\n\r\n{}",
    "404-text": b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 9\r\n\r\nnot found",
    "500-body-with-lf": b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\noops\n",
    "reason-empty-with-space": b"HTTP/1.1 200 \r\n" + OK_BODY,
    "reason-missing": b"HTTP/1.1 200\r\n" + OK_BODY,
    "reason-two-spaces": b"HTTP/1.1 200  OK\r\n" + OK_BODY,
    "reason-utf8": "HTTP/1.1 200 Très bien\r\n".encode() + OK_BODY,
    "unusual-status": b"HTTP/1.1 299 Whatever\r\n" + OK_BODY,
    "status-999": b"HTTP/1.1 999 Max\r\n" + OK_BODY,
    "content-length-0": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "content-length-leading-zeros": b"HTTP/1.1 200 OK\r\nContent-Length: 002\r\n\r\nok",
    "connection-close": b"HTTP/1.1 200 OK\r\nConnection: close\r\n" + OK_BODY,
    "connection-close-upper": b"HTTP/1.1 503 Busy\r\nConnection: CLOSE\r\n" + OK_BODY,
    "connection-two-headers": b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n"
    b"Connection: close\r\n" + OK_BODY,
    "connection-list-close-last": b"HTTP/1.1 200 OK\r\nConnection: X-Hop ,\tclose\r\n" + OK_BODY,
    "connection-not-quite-close": b"HTTP/1.1 200 OK\r\nConnection: closed, close x\r\n" + OK_BODY,
    "connection-keep-alive-x-hop": b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\n"
    b"X-Hop: secret\r\n" + OK_BODY,
    "connection-upgrade-on-200": b"HTTP/1.1 200 OK\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
    + OK_BODY,
    "duplicate-headers": b"HTTP/1.1 200 OK\r\nVary: Accept\r\nVary: Origin\r\n"
    b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n" + OK_BODY,
    "no-space-after-colon": b"HTTP/1.1 200 OK\r\nContent-Type:text/plain\r\n"
    b"Content-Length:2\r\n\r\nok",
    "trailing-whitespace": b"HTTP/1.1 200 OK\r\nX-Pad: value \t \r\nX-Lead:\t\t v\r\n"
    b"Content-Length: 2 \t\r\n\r\nok",
    "empty-values": b"HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Blank: \t\r\n" + OK_BODY,
    "colon-in-value": b"HTTP/1.1 200 OK\r\nX-Url: http://a:1/b\r\n" + OK_BODY,
    "obs-text-value": b"HTTP/1.1 200 OK\r\nX-Obs: caf\xe9 \xff\x80!\r\n" + OK_BODY,
    "utf8-value": "HTTP/1.1 200 OK\r\nX-Name: Zoë 東京\r\n".encode() + OK_BODY,
    "lower-case-names": b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
    b"connection: close\r\ncontent-length: 2\r\n\r\nok",
    "odd-token-name": b"HTTP/1.1 200 OK\r\nX!#$%&'*+-.^_`|~9: v\r\n" + OK_BODY,
    "binary-body": b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n\r\n\r\n\x00\xff\r\n\n",
    "128-headers": b"HTTP/1.1 200 OK\r\n"
    + b"".join(b"X-N%d: %d\r\n" % (i, i) for i in range(127))
    + OK_BODY,
}

REJECTED = {
    "http-1.0": b"HTTP/1.0 200 OK\r\n" + OK_BODY,
    "http-2": b"HTTP/2 200\r\n" + OK_BODY,
    "lower-case-version": b"http/1.1 200 OK\r\n" + OK_BODY,
    "100-continue": b"HTTP/1.1 100 Continue\r\n\r\n",
    "103-early-hints": b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n" + OK_BODY,
    "100-then-200": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n" + OK_BODY,
    "204": b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
    "304": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n",
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "chunked-and-length": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nok",
    "te-identity": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n" + OK_BODY,
    "two-lengths-equal": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + OK_BODY,
    "two-lengths-differ": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n" + OK_BODY,
    "length-list": b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
    "length-plus": b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
    "length-minus": b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok",
    "length-inner-space": b"HTTP/1.1 200 OK\r\nContent-Length: 1 1\r\n\r\n" + b"x" * 11,
    "length-superscript": "HTTP/1.1 200 OK\r\nContent-Length: ²\r\n\r\nok".encode(),
    "length-arabic-indic": "HTTP/1.1 200 OK\r\nContent-Length: ٢\r\n\r\nok".encode(),
    "length-hex": b"HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nok",
    "length-empty": b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
    "length-huge": b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\nok",
    "length-missing": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nok",
    "no-headers": b"HTTP/1.1 200 OK\r\n\r\nok",
    "body-short": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok",
    "body-long": b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nok",
    "two-messages": b"HTTP/1.1 200 OK\r\n" + OK_BODY + b"HTTP/1.1 200 OK\r\n" + OK_BODY,
    "head-only": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
    "bare-lf-everywhere": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    "bare-lf-one-line": b"HTTP/1.1 200 OK\r\nX-A: b\nContent-Length: 2\r\n\r\nok",
    "bare-lf-end-of-head": b"HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nok",
    "bare-cr-in-value": b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\n" + OK_BODY,
    "bare-cr-in-reason": b"HTTP/1.1 200 O\rK\r\n" + OK_BODY,
    "nul-in-value": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n" + OK_BODY,
    "soh-in-value": b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\n" + OK_BODY,
    "vt-in-value": b"HTTP/1.1 200 OK\r\nX-A: a\x0bb\r\n" + OK_BODY,
    "esc-in-value": b"HTTP/1.1 200 OK\r\nX-A: a\x1bb\r\n" + OK_BODY,
    "del-in-value": b"HTTP/1.1 200 OK\r\nX-A: a\x7fb\r\n" + OK_BODY,
    "nul-in-reason": b"HTTP/1.1 200 O\x00K\r\n" + OK_BODY,
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\n" + OK_BODY,
    "obs-fold-tab": b"HTTP/1.1 200 OK\r\nX-A: a\r\n\tb\r\n" + OK_BODY,
    "space-before-colon": b"HTTP/1.1 200 OK\r\nX-A : b\r\n" + OK_BODY,
    "space-before-colon-length": b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
    "empty-name": b"HTTP/1.1 200 OK\r\n: b\r\n" + OK_BODY,
    "no-colon-new-name": b"HTTP/1.1 200 OK\r\nX-Never-Seen-Before-Qz\r\n" + OK_BODY,
    "name-paren": b"HTTP/1.1 200 OK\r\nX(A): b\r\n" + OK_BODY,
    "name-space": b"HTTP/1.1 200 OK\r\nX A: b\r\n" + OK_BODY,
    "name-quote": b'HTTP/1.1 200 OK\r\n"X": b\r\n' + OK_BODY,
    "name-slash": b"HTTP/1.1 200 OK\r\nX/A: b\r\n" + OK_BODY,
    "name-obs-text": b"HTTP/1.1 200 OK\r\nX\xe9: b\r\n" + OK_BODY,
    "status-letters": b"HTTP/1.1 2OO OK\r\n" + OK_BODY,
    "status-4-digits": b"HTTP/1.1 2000 OK\r\n" + OK_BODY,
    "status-2-digits": b"HTTP/1.1 20 OK\r\n" + OK_BODY,
    "status-unicode-digits": "HTTP/1.1 ٢٠٠ OK\r\n".encode() + OK_BODY,
    "status-superscript": "HTTP/1.1 2²0 OK\r\n".encode() + OK_BODY,
    "status-tab": b"HTTP/1.1 200\tOK\r\n" + OK_BODY,
    "status-leading-space": b"HTTP/1.1  200 OK\r\n" + OK_BODY,
    "leading-crlf": b"\r\nHTTP/1.1 200 OK\r\n" + OK_BODY,
    "request-not-response": b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    "empty": b"",
    "garbage": b"hello world",
    "only-crlfs": b"\r\n\r\n",
    "status-line-only": b"HTTP/1.1 200 OK",
    "binary-garbage": bytes(range(256)),
}


@pytest.mark.parametrize("data", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_common_shapes_are_read_and_agree(llhttp: LLHttp, data: bytes) -> None:
    answer = parse_whole_answer(data)
    assert answer is not None, "expected the fast path to take this answer"
    assert disagreement(llhttp, data, answer) is None


@pytest.mark.parametrize("data", REJECTED.values(), ids=REJECTED.keys())
def test_out_of_shape_or_malformed_is_left_to_llhttp(llhttp: LLHttp, data: bytes) -> None:
    assert parse_whole_answer(data) is None
    assert check(llhttp, data) is None


def test_named_tokens_and_should_close() -> None:
    answer = parse_whole_answer(ACCEPTED["connection-keep-alive-x-hop"])
    assert answer is not None
    assert answer.named == {"keep-alive", "x-hop"}
    assert answer.should_close is False
    assert answer.body == b"ok"
    closing = parse_whole_answer(ACCEPTED["connection-list-close-last"])
    assert closing is not None and closing.should_close is True


def test_the_checker_itself_catches_differences(llhttp: LLHttp) -> None:
    """A doctored Answer must be flagged, field by field (the invariant can fail)."""
    data = ACCEPTED["connection-keep-alive-x-hop"]
    good = parse_whole_answer(data)
    assert good is not None
    assert disagreement(llhttp, data, good) is None
    fields = {
        "status": 201,
        "reason": "Ok",
        "body": b"ko",
        "should_close": True,
        "block": "\r\nConnection: keep-alive, X-Hop\r\nX-Hop: other\r\nContent-Length: 2",
        "named": frozenset({"keep-alive"}),
    }
    for field, wrong in fields.items():
        bad = Answer(good.status, good.reason, good.block, good.named, good.should_close, good.body)
        setattr(bad, field, wrong)
        assert disagreement(llhttp, data, bad) is not None, field
    # llhttp rejecting the bytes is a disagreement whenever an Answer is claimed
    assert disagreement(llhttp, REJECTED["nul-in-value"], good) is not None
    assert disagreement(llhttp, REJECTED["two-messages"], good) is not None


# -- regressions -----------------------------------------------------------------------------
# Inputs an earlier parse_whole_answer accepted while llhttp (as UpstreamConnection configures
# it) rejected them or read them differently; each must now be left to llhttp (or agree).

_WARM_X_EMPTY = b"HTTP/1.1 200 OK\r\nX-Empty:\r\n" + OK_BODY

REGRESSIONS = {
    # WAS: a header line with NO colon whose text minus its last character is a name
    # already in ``_lower_names`` (here "X-Empty", cached by the warm-up message) is accepted:
    # ``i = line.find(":")`` is -1, ``name = line[:-1]`` hits the cache and the ``i <= 0`` /
    # token check is skipped. llhttp: BadHttpMessage "Invalid header token". Found by the fuzz.
    "colonless-line-after-cached-name": (
        _WARM_X_EMPTY,
        b"HTTP/1.1 200 OK\r\nX-Emptyl\r\n" + OK_BODY,
    ),
    # WAS: aiohttp caps headers at max_headers=128; the 129th raises
    # BadHttpMessage "Too many headers received". parse_whole_answer had no cap.
    "129-headers": (
        None,
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-N%d: %d\r\n" % (i, i) for i in range(128)) + OK_BODY,
    ),
    # WAS: name + value longer than max_field_size=8190 -> LineTooLong in aiohttp.
    "header-field-over-8190": (
        None,
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 8190 + b"\r\n" + OK_BODY,
    ),
    # WAS: reason phrase longer than max_line_size=8190 -> LineTooLong in aiohttp.
    "reason-over-8190": (None, b"HTTP/1.1 200 " + b"a" * 8191 + b"\r\n" + OK_BODY),
    # WAS: aiohttp rejects the old-websocket header in any message:
    # InvalidHeader "Sec-WebSocket-Key1".
    "sec-websocket-key1": (None, b"HTTP/1.1 200 OK\r\nSec-WebSocket-Key1: x\r\n" + OK_BODY),
    # WAS (Connection tokens only; status/headers/should_close agree): _tokens strips
    # " \t" only, connection_tokens (what Answer.from_parser uses) strips all Unicode
    # whitespace, so a U+00A0 (bytes C2 A0) next to a token changes it: parse_whole_answer
    # gives named={'keep-alive', 'x-hop\xa0'}, the llhttp path {'keep-alive', 'x-hop'} -- the
    # llhttp path would drop the X-Hop header as hop-by-hop, the fast path forwards it.
    "connection-token-nbsp": (
        None,
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\xc2\xa0\r\nX-Hop: 1\r\n" + OK_BODY,
    ),
}


@pytest.mark.parametrize(("warm", "data"), REGRESSIONS.values(), ids=REGRESSIONS.keys())
def test_regression(llhttp: LLHttp, warm: bytes | None, data: bytes) -> None:
    if warm is not None:
        assert parse_whole_answer(warm) is not None
    assert check(llhttp, data) is None


# -- seeded fuzz -----------------------------------------------------------------------------

_SEEDS = [data for key, data in ACCEPTED.items() if key not in ("128-headers", "binary-body")]
_INSERTS = [b"\r", b"\n", b"\r\n", b"\x00", b" ", b"\t", b":", b",", b"\x7f", b"\x0b"]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    for _ in range(rng.randint(1, 3)):
        end = data.find(b"\r\n\r\n")
        # mostly inside the head: mutations of the body only change its length
        limit = end + 4 if end >= 0 and rng.random() < 0.85 else len(data)
        pos = rng.randrange(max(limit, 1))
        kind = rng.randrange(6)
        if kind == 0:  # replace a byte
            data = data[:pos] + bytes([rng.randrange(256)]) + data[pos + 1 :]
        elif kind == 1:  # flip one bit (a letter's case, a digit...)
            if pos < len(data):
                data = data[:pos] + bytes([data[pos] ^ (1 << rng.randrange(8))]) + data[pos + 1 :]
        elif kind == 2:  # insert a delimiter / control / obs-text byte
            if rng.random() < 0.7:
                ins = rng.choice(_INSERTS)
            else:
                ins = bytes([rng.randrange(0x80, 0x100)])
            data = data[:pos] + ins + data[pos:]
        elif kind == 3:  # delete a byte
            data = data[:pos] + data[pos + 1 :]
        elif kind == 4:  # truncate
            data = data[:pos]
        elif end > 0:  # duplicate a header line
            lines = data[:end].split(b"\r\n")
            if len(lines) > 1:
                i = rng.randrange(1, len(lines))
                lines.insert(i, lines[i])
                data = b"\r\n".join(lines) + data[end:]
    return data


def test_fuzzed_answers_agree_with_llhttp(llhttp: LLHttp) -> None:
    rng = random.Random(1234)
    failures: list[tuple[bytes, str]] = []
    accepted = 0
    for _ in range(5000):
        data = _mutate(rng, rng.choice(_SEEDS))
        answer = parse_whole_answer(data)
        accepted += answer is not None
        why = disagreement(llhttp, data, answer)
        if why is not None:
            failures.append((data, why))
    # the fuzz must exercise both outcomes, or it proves nothing
    assert 250 < accepted < 4500, accepted
    shown = "\n".join(f"{data!r}: {why}" for data, why in failures[:5])
    assert not failures, f"{len(failures)} disagreement(s), first ones:\n{shown}"
