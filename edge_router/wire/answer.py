"""The store's answer: its head, and its body whole or as a stream; the whole-answer reader.

Nearly every answer of a store is one small message that arrives in one read: HTTP/1.1, a
status >= 200 with a body, Content-Length, no Transfer-Encoding. For that shape one regular
expression and a few byte searches (``parse_whole_answer``) replace llhttp plus aiohttp's
per-message ``StreamReader`` (about a third of the cost of relaying an answer): the expression
validates the whole head (status line, token names, no CR, LF or other control character
inside a line); the framing headers are found in its lower-cased copy. Anything else -- a
message cut short or followed by more bytes, obs-fold, a second Content-Length, a head near
aiohttp's limits -- goes to llhttp, which parses it (or rejects it) exactly as before.
``tests/edge/test_whole_answer.py`` holds it to llhttp's reading.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from ..errors import ConnectionBroken, UpstreamFailed
from ..headers import connection_tokens, to_block
from .compat import HttpProcessingError, RawResponseMessage, StreamReader


class Answer:
    """The store's answer: its head and either the whole body (``payload`` None) or a payload
    ``StreamReader`` that streams it. ``block`` holds the header lines as received, each led by
    its CRLF (``headers.Block``); ``named`` the tokens of its Connection headers."""

    __slots__ = ("block", "body", "named", "payload", "reason", "should_close", "status")

    def __init__(
        self,
        status: int,
        reason: str,
        block: str,
        named: frozenset[str],
        should_close: bool,
        body: bytes = b"",
        payload: StreamReader | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.block = block
        self.named = named
        self.should_close = should_close
        self.body = body
        self.payload = payload

    def whole(self) -> bytes | None:
        """The whole body when all of it is here (read whole, or llhttp's payload already
        complete), else None: then ``chunks`` streams it."""
        payload = self.payload
        if payload is None:
            return self.body
        if payload.is_eof() and payload.exception() is None:
            return payload.read_nowait(-1)
        return None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (backpressure: the socket pauses while the payload is
        full). The store's side failing is an ``errors.UpstreamFailed`` here, whatever the
        parser or the socket raised."""
        payload = self.payload
        assert payload is not None
        while True:
            try:
                chunk = await payload.readany()
            except UpstreamFailed:
                raise
            except (OSError, HttpProcessingError) as exc:
                raise ConnectionBroken(f"the answer's body failed: {exc!r}", True) from exc
            if not chunk:
                return
            yield chunk

    @classmethod
    def from_parser(cls, msg: RawResponseMessage, payload: StreamReader) -> Answer:
        block = to_block(msg.headers.items())
        named = connection_tokens(msg.headers)
        return cls(msg.code, msg.reason, block, named, msg.should_close, payload=payload)


_VALUE = rb"[^\x00-\x08\x0a-\x1f\x7f]*"  # HTAB and visible bytes (obs-text included)
_HEAD = re.compile(
    rb"HTTP/1\.1 ([0-9]{3})(?: ("
    + _VALUE
    + rb"))?((?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:"
    + _VALUE
    + rb")*)"
)
_CONNECTION = re.compile(r"\r\nconnection:([^\r\n]*)", re.ASCII | re.IGNORECASE)
_CL = b"\r\ncontent-length:"
# aiohttp's limits (max_line_size, max_field_size, max_headers): a head near them is llhttp's.
_MAX_HEAD = 8190
_MAX_HEADERS = 128
_NO_TOKENS: frozenset[str] = frozenset()


def parse_whole_answer(data: bytes) -> Answer | None:
    """``data`` as one complete answer in the common shape, or None (then llhttp decides)."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or end > _MAX_HEAD:
        return None
    m = _HEAD.fullmatch(data, 0, end)
    if m is None:
        return None
    status = int(m[1])
    if status < 200 or status == 204 or status == 304:
        return None
    raw = m[3]
    lower = raw.lower()
    i = lower.find(_CL)
    if i < 0 or lower.find(_CL, i + 17) >= 0:
        return None  # no Content-Length, or two
    j = lower.find(b"\r\n", i + 17)
    value = raw[i + 17 : j if j >= 0 else len(raw)].strip(b" \t")
    if (
        not value.isdigit()  # ASCII digits only, for bytes
        or len(data) - end - 4 != int(value)
        # find(), not ``in``: bytes.__contains__ first tries its argument as an int and
        # builds a TypeError to discard, a cost on every answer
        or lower.find(b"\r\ntransfer-encoding:") >= 0  # llhttp frames it
        or lower.find(b"\r\nsec-websocket-key1:") >= 0  # aiohttp refuses it
        or raw.count(b"\r\n") > _MAX_HEADERS
    ):
        return None
    block = raw.decode("utf-8", "surrogateescape")
    named = _NO_TOKENS
    if lower.find(b"\r\nconnection:") >= 0:
        for c in _CONNECTION.finditer(block):
            named = named | _tokens(c[1])
    reason = m[2]
    return Answer(
        status,
        reason.decode("utf-8", "surrogateescape") if reason else "",
        block,
        named,
        "close" in named,
        data[end + 4 :],
    )


def _tokens(value: str) -> frozenset[str]:
    return frozenset(t.strip().lower() for t in value.split(",") if t.strip())  # as llhttp's
