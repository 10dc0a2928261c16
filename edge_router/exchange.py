"""The exchange record: one request as a front end parsed it, what the pipeline decided about
it (also the access-log record), and the ``Sink`` the front end answers it through.

Both front ends (the listener in ``wire`` and ``web_front``) build an ``Exchange`` and a
``Sink`` and hand them to the pipeline; the pipeline and the forwarder never see a front end.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import StreamReader
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .headers import Block

_EMPTY: CIMultiDict[str] = CIMultiDict()


class Exchange:
    """One request through the pipeline: what the front end parsed, what the steps decided
    (also the access-log record)."""

    __slots__ = (
        "absolute",
        "account",
        "attempts",
        "body",
        "body_exists",
        "content_length",
        "deadline",
        "error",
        "expect_continue",
        "header_lines",
        "headers",
        "host",
        "method",
        "peer",
        "region",
        "request_id",
        "route",
        "scheme",
        "started",
        "status",
        "target",
        "upstream",
        "url",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: str,
        request_id: str,
        headers: CIMultiDictProxy[str] | None = None,
        *,
        url: URL | None = None,
        body: StreamReader | None = None,
        body_exists: bool = False,
        content_length: int | None = None,
        peer: str | None = None,
        scheme: str = "http",
        expect_continue: bool = False,
        version: tuple[int, int] = (1, 1),
        header_lines: int = 0,
        host: str | None = None,
    ) -> None:
        self.method = method
        # The raw request target, byte for byte as received (origin form: an absolute-form
        # target comes here as its path and query, its authority as ``host``).
        self.target = target
        self.request_id = request_id
        self.headers = headers if headers is not None else CIMultiDictProxy(_EMPTY)
        self.url = url  # the target as a yarl URL (its query is parsed only when asked for)
        self.body = body
        self.body_exists = body_exists
        self.content_length = content_length
        self.peer = peer
        self.scheme = scheme
        self.expect_continue = expect_continue
        self.version = version
        self.header_lines = header_lines
        self.absolute = host is not None  # the target was in absolute form
        self.host = host if host is not None else self.headers.get("Host")
        self.deadline = 0.0  # loop time by which the whole answer must be out (total timeout)
        self.account: str | None = None
        self.region = "none"
        self.route = "other"
        self.upstream: str | None = None
        self.attempts = 0
        self.status = 0
        self.error: str | None = None
        self.started = False  # response head sent: no JSON error possible any more


class Sink(Protocol):
    """How a front end writes the answer (its headers as a ``headers.Block``).
    ``respond`` is a whole answer in one go; ``start`` /
    ``write`` / ``end`` stream one; ``abort`` cuts the client connection (mid-body failure)."""

    def send_continue(self) -> None: ...

    async def respond(self, status: int, reason: str, block: Block, body: bytes) -> None: ...

    async def start(self, status: int, reason: str, block: Block) -> None: ...

    async def write(self, chunk: bytes) -> None: ...

    async def end(self) -> None: ...

    def abort(self) -> None: ...
