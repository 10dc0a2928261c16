"""Message framing (RFC 9112): a parsed request as an ``Exchange``, what the edge refuses of a
request message itself before any policy step, and how it frames an answer to the client.

Both front ends (the raw listener and ``aiohttp.web``) parse with aiohttp's llhttp parser, which
already refuses what could smuggle a second request (CL+TE, duplicate lengths, obs-fold, bare
LF, NUL/CR in values: 400 and close). What it lets through but a proxy must not forward, and the
parser's own refusals, are mapped here to the status RFC 9110/9112 names, as one ``EdgeError``::

    HTTP/2.0 (or any major != 1) on an HTTP/1.x connection      505 http_version_not_supported
    Transfer-Encoding other than exactly "chunked"              501 unsupported_transfer_coding
    more header lines than the store can take with ours added   431 too_many_headers
    a header line over the parser's limit                       431 header_too_large
    a request line over the parser's limit                      414 uri_too_long
    HTTP/1.1 without Host (and not in absolute form)            400 missing_host

An absolute-form target (``POST http://host/path HTTP/1.1``, which a server MUST accept, RFC 9112
§3.2.2) is served as its origin form, with the target's authority standing for Host.
"""

from __future__ import annotations

import re
from http import HTTPStatus

from multidict import CIMultiDictProxy
from yarl import URL

from ..errors import (
    BadRequest,
    EdgeError,
    HeadersTooLarge,
    NotImplementedByEdge,
    UriTooLong,
    VersionNotSupported,
)
from ..exchange import Exchange
from ..headers import REQUEST_ID, Block, encode_block, request_id
from .compat import (
    EMPTY_PAYLOAD,
    HttpProcessingError,
    HttpVersion11,
    RawRequestMessage,
    StreamReader,
    line_too_long,
    too_many_headers,
)

# The stores parse with aiohttp's defaults (max_headers=128); the edge adds up to 7 lines of its
# own (X-Forwarded-*, Via, X-Request-Id, the assertion, Transfer-Encoding) and one spare.
MAX_HEADER_LINES = 128 - 8
# The listener's parser limits. llhttp's LineTooLong does not say which line was too long, only
# the limit it broke, so the two limits differ by one byte to tell a request line (414) from a
# header line (431). Both stay within the stores' (aiohttp's default 8190 each).
MAX_REQUEST_LINE = 8190
MAX_FIELD_SIZE = 8189


def origin_form(target: str, url: URL | None) -> tuple[str, str | None]:
    """``target`` in origin form, and the authority an absolute-form target named (else None)."""
    if target.startswith("/") or url is None or not url.absolute or "://" not in target:
        return target, None  # (CONNECT's authority form is no absolute form: refused later)
    path = url.raw_path_qs
    return (path if path.startswith("/") else "/" + path), url.raw_authority


def ends_connection(msg: RawRequestMessage) -> bool:
    """HTTP/1.0, ``Connection: close``, ``Upgrade``: this request's answer is the last."""
    return msg.should_close or msg.version != HttpVersion11 or msg.upgrade


def asks_continue(version: tuple[int, int], expect: str | None) -> bool:
    """``Expect: 100-continue`` on HTTP/1.1: the client waits for an invitation before its
    body (RFC 9110 §10.1.1); other expectations are ignored, as a proxy may."""
    return expect is not None and version == HttpVersion11 and expect.lower() == "100-continue"


def request_exchange(msg: RawRequestMessage, payload: StreamReader, peer: str | None) -> Exchange:
    """The exchange of a request llhttp parsed: its target in origin form, its declared body
    length, whether it asked for ``100 Continue`` (HTTP/1.1 only), its request id."""
    headers = msg.headers
    length = headers.get("Content-Length")
    expect = headers.get("Expect")
    target, authority = origin_form(msg.path, msg.url)
    return Exchange(
        msg.method,
        target,
        request_id(headers.get(REQUEST_ID)),
        headers,
        url=msg.url,
        body=payload,
        body_exists=payload is not EMPTY_PAYLOAD,
        content_length=int(length) if length is not None and length.isdigit() else None,
        peer=peer,
        scheme="http",
        expect_continue=asks_continue(msg.version, expect),
        version=msg.version,
        header_lines=len(msg.raw_headers),
        host=authority,
    )


def check_message(
    version: tuple[int, int],
    headers: CIMultiDictProxy[str],
    header_lines: int,
    *,
    absolute: bool = False,
) -> None:
    """Raise the ``EdgeError`` for a request the edge must not forward as it is."""
    if version[0] != 1:
        raise VersionNotSupported(
            "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1 are served here"
        )
    if header_lines > MAX_HEADER_LINES:
        raise HeadersTooLarge("too_many_headers", f"more than {MAX_HEADER_LINES} header lines")
    if "Transfer-Encoding" in headers:
        codings = ",".join(headers.getall("Transfer-Encoding")).strip(" \t").lower()
        if codings != "chunked":
            raise NotImplementedByEdge(
                "unsupported_transfer_coding", "only the chunked transfer coding is accepted"
            )
    if version == (1, 1) and not absolute and "Host" not in headers:
        raise BadRequest("missing_host", "an HTTP/1.1 request needs a Host header")


def parse_error(exc: HttpProcessingError) -> EdgeError:
    """The parser's refusal as the edge's JSON error (its text, which may quote the request's
    bytes, is never shown)."""
    limit = line_too_long(exc)
    if limit is not None:
        if limit == MAX_REQUEST_LINE:
            return UriTooLong("uri_too_long", "the request line is too long")
        return HeadersTooLarge("header_too_large", "a header line is too long")
    if too_many_headers(exc):
        return HeadersTooLarge("too_many_headers", f"more than {MAX_HEADER_LINES} header lines")
    err = BadRequest("bad_request", "the request could not be parsed")
    if 400 <= exc.code < 500 and exc.code != 400:
        err.status = exc.code
    return err


# -- an answer to the client ---------------------------------------------------------------------

_NO_BODY_STATUS = frozenset({204, 304})
_PHRASES = {s.value: s.phrase for s in HTTPStatus}
_LENGTH = re.compile(r"\r\ncontent-length:", re.ASCII | re.IGNORECASE)


def _status_line(status: int, reason: str | None) -> str:
    return f"HTTP/1.1 {status} {reason or _PHRASES.get(status, '')}\r\n"


def whole_answer(
    status: int, reason: str | None, block: Block, body: bytes, *, head_only: bool, close: bool
) -> bytes:
    """A whole answer as one write: a Content-Length when the block has none, no body where
    the status or a HEAD allows none, ``Connection: close`` when it is the connection's last."""
    no_body = head_only or status in _NO_BODY_STATUS or status < 200
    if not no_body and _LENGTH.search(block) is None:
        block += f"\r\nContent-Length: {len(body)}"
    if close:
        block += "\r\nConnection: close"
    head = encode_block(_status_line(status, reason), block)
    return head if no_body or not body else head + body


def answer_head(
    status: int, reason: str | None, block: Block, *, head_only: bool, http10: bool, close: bool
) -> tuple[bytes, bool, bool]:
    """The head of an answer whose body follows in pieces, and how that body is framed:
    (head, chunked, close). A body of unknown length is chunked -- or, to an HTTP/1.0 client,
    which gets no Transfer-Encoding (RFC 9112 §6.1), ended by closing the connection."""
    no_body = head_only or status in _NO_BODY_STATUS or status < 200
    chunked = False
    if not no_body and _LENGTH.search(block) is None:
        if http10:
            close = True
        else:
            chunked = True
            block += "\r\nTransfer-Encoding: chunked"
    if close:
        block += "\r\nConnection: close"
    return encode_block(_status_line(status, reason), block), chunked, close
