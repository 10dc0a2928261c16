"""Shared pieces of the client conformance matrix (issue 15): real clients
(``test_conformance_clients``), raw sockets on what must work (``test_conformance_raw``) and on
what must be refused (``test_conformance_refused``).

Every case runs against both front ends: the production listener (``raw``: ``EdgeRunner`` +
``BatchAcceptSite``) and ``aiohttp.web`` (``web``: ``AppRunner`` + ``TCPSite``), each in front of
one fake store on 127.0.0.1. The ``edge`` fixture checks after every case that nothing was left
in flight and that every connection the case opened is gone from the edge.

``Wire`` is the raw-socket client: it sends byte chunks with small gaps (TCP_NODELAY, so each
chunk is its own segment) and parses the answers itself; every read has a timeout, so an edge
that never answers fails the case instead of hanging it.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from edge_router.app import STATE, EdgeState, create_app
from edge_router.wire import BatchAcceptSite, EdgeRunner

from .conftest import FakeRegistry, FakeStore, Key, make_settings, serve_on_free_port, wait_until

KEY = Key("vtexappkey-acme-C1", "token-acme-conformance-0001")
API = "/api/storage/profile-system"
PROFILES = f"{API}/profiles?an=acme"
AUTH = {"X-VTEX-API-AppKey": KEY.app_key, "X-VTEX-API-AppToken": KEY.token}
STORE_SERVER = "fake-store/9.9 (must not leak)"
READ_TIMEOUT = 5.0  # every socket read of a case
BOUND = 5.0  # every wait for the edge's bookkeeping
TOTAL_TIMEOUT = 3.0  # the edge's deadline per exchange: under READ_TIMEOUT, so it shows


def profile(i: int) -> str:
    return f"{API}/profiles/p-{i}?an=acme"


def _json_of(size: int) -> bytes:
    """A JSON profile of exactly ``size`` bytes."""
    base = {"email": "jane@example.com", "firstName": "Jane", "notes": ""}
    pad = size - len(json.dumps(base, separators=(",", ":")))
    assert pad >= 0, size
    body = json.dumps({**base, "notes": "n" * pad}, separators=(",", ":")).encode()
    assert len(body) == size
    return body


SMALL = _json_of(95)
BIG = _json_of(200 * 1024)  # over buffer_body_bytes (64 KiB): streamed to the store


class NotJson(AssertionError):
    """The refusal's body is not the edge's JSON error (see ``fronts``)."""


class WrongStatus(AssertionError):
    """The status is not the one RFC 9112 names (see ``fronts``)."""


class WrongVersion(AssertionError):
    """The status line's version is not the one RFC 9110 §6.2 names (see ``fronts``)."""


def fronts(web_xfail: str | None = None, raises: type[BaseException] = AssertionError) -> Any:
    """Parametrise ``front`` (overriding the fixture); with ``web_xfail``, the web front end is
    a strict xfail that must fail with ``raises`` -- any other failure is a real one."""
    web_param: Any = "web"
    if web_xfail is not None:
        web_param = pytest.param(
            "web", marks=pytest.mark.xfail(strict=True, reason=web_xfail, raises=raises)
        )
    return pytest.mark.parametrize("front", ["raw", web_param])


@pytest.fixture(params=["raw", "web"])
def front(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


STREAMED_PAD = 512 * 1024  # trailing JSON whitespace: too much to arrive with the head


@web.middleware
async def _store_extras(request: web.Request, handler: Any) -> web.StreamResponse:
    """The fake store names itself in ``Server``, and with ``chunked=1`` in the query (not for
    HEAD) streams a long answer chunked, without Content-Length: the edge has to stream it on
    (its JSON is followed by ``STREAMED_PAD`` spaces, which a JSON parser ignores)."""
    resp = await handler(request)
    streamed = "chunked=1" in request.query_string and request.method != "HEAD"
    if streamed and isinstance(resp, web.Response):
        body = resp.body
        assert isinstance(body, bytes)
        headers = {k: v for k, v in resp.headers.items() if k.lower() != "content-length"}
        stream = web.StreamResponse(status=resp.status, headers=headers)
        stream.headers["Server"] = STORE_SERVER
        stream.enable_chunked_encoding()
        await stream.prepare(request)
        await stream.write(body)
        pad = b" " * 65536
        for _ in range(STREAMED_PAD // len(pad)):
            await stream.write(pad)
        await stream.write_eof()
        return stream
    resp.headers["Server"] = STORE_SERVER
    return resp


@dataclass
class Edge:
    front: str
    port: int
    app: web.Application
    store: FakeStore
    connections: Callable[[], int]
    registry: FakeRegistry
    runner: web.BaseRunner  # a case may shut the edge down itself (the fixture then does not)
    store_runner: web.BaseRunner  # a case may stop the store's site (the port stays known)
    store_port: int

    @property
    def state(self) -> EdgeState:
        return self.app[STATE]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seen(self) -> list[tuple[str, str, bytes]]:
        """What the store received: (method, raw target, body) per request."""
        return [(s.method, s.raw_path, s.body) for s in self.store.seen]

    async def settled(self) -> None:
        """Nothing in flight, and every client connection gone from the edge."""
        await wait_until(lambda: self.state.in_flight == 0, timeout=BOUND)
        await wait_until(lambda: self.connections() == 0, timeout=BOUND)


@pytest.fixture
async def edge(front: str) -> AsyncIterator[Edge]:
    registry = FakeRegistry()
    registry.add("acme", "eu-west-1", [KEY])
    store = FakeStore("eu-west-1", "eu-0")
    store_app = store.app()
    store_app.middlewares.append(_store_extras)
    store_runner, store_port = await serve_on_free_port(store_app)
    settings = make_settings(
        {"eu-west-1": [f"http://127.0.0.1:{store_port}"]},
        rate_limit_rps=100_000.0,
        rate_limit_burst=100_000,
        total_timeout_s=TOTAL_TIMEOUT,
    )
    app = create_app(settings, registry_factory=registry.factory())
    runner: web.BaseRunner
    if front == "raw":
        runner = EdgeRunner(app)
        await runner.setup()
        raw_site = BatchAcceptSite(runner, "127.0.0.1", 0)
        await raw_site.start()
        port = raw_site.port
    else:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def connections() -> int:
        server = runner.server
        return 0 if server is None else len(server.connections)  # type: ignore[attr-defined]

    e = Edge(front, port, app, store, connections, registry, runner, store_runner, store_port)
    try:
        yield e
        await e.settled()
    finally:
        if runner.server is not None:
            await runner.cleanup()
        await store_runner.cleanup()


# -- the raw-socket client ----------------------------------------------------------------------


def request(
    method: str,
    target: str,
    body: bytes = b"",
    *,
    headers: Iterable[str] = (),
    version: str = "HTTP/1.1",
    host: str | None = "api.example.com",
    auth: bool = True,
    length: bool | None = None,
) -> bytes:
    """A request on the wire. ``length``: send Content-Length (default: when there is a body)."""
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    if auth:
        lines += [f"{k}: {v}" for k, v in AUTH.items()]
    lines += list(headers)
    if length or (length is None and body):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Answer:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    interim: list[int] = field(default_factory=list)  # 1xx statuses before this answer

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return ", ".join(values) if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def closes(self) -> bool:
        """The answer says it is the connection's last (RFC 9112 §9.3)."""
        connection = (self.header("Connection") or "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" not in connection
        return "close" in connection

    def error(self) -> str:
        """The edge's JSON error code (``NotJson`` when the body is not one)."""
        ctype = self.header("Content-Type") or ""
        try:
            code = json.loads(self.body)["error"]
        except (ValueError, KeyError, TypeError):
            raise NotJson(f"not a JSON error: {ctype!r} {self.body[:120]!r}") from None
        if not ctype.startswith("application/json"):
            raise NotJson(f"error with Content-Type {ctype!r}")
        return str(code)


class Wire:
    """One client connection, spoken to byte by byte."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout  # of every read
        self.buf = b""
        self.eof = False

    @classmethod
    async def open(cls, port: int, timeout: float = READ_TIMEOUT) -> Wire:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), READ_TIMEOUT
        )
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer, timeout)

    async def send(self, *chunks: bytes, gap: float = 0.005) -> None:
        """Each chunk in its own write; ``gap`` seconds between them (shaping, not syncing)."""
        for i, chunk in enumerate(chunks):
            if i:
                await asyncio.sleep(gap)
            self.writer.write(chunk)
            await self.writer.drain()

    async def _fill(self) -> bool:
        """More bytes into ``buf``; False at end of stream. A read that times out fails."""
        if self.eof:
            return False
        try:
            data = await asyncio.wait_for(self.reader.read(65536), READ_TIMEOUT)
        except TimeoutError:
            raise AssertionError(
                f"no byte from the edge in {READ_TIMEOUT} s: {self.buf!r}"
            ) from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    async def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not await self._fill():
                raise AssertionError(f"connection closed with {len(self.buf)} of {n} bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    async def _line(self, sep: bytes = b"\r\n") -> bytes:
        while sep not in self.buf:
            if not await self._fill():
                raise AssertionError(f"connection closed before {sep!r}: {self.buf!r}")
        line, self.buf = self.buf.split(sep, 1)
        return line

    async def answer(self, *, head: bool = False) -> Answer:
        """The next final answer (1xx before it in ``interim``); ``head``: to a HEAD request."""
        interim: list[int] = []
        while True:
            raw = await self._line(b"\r\n\r\n")
            first, *lines = raw.decode("latin-1").split("\r\n")
            version, status_text, *rest = first.split(" ", 2)
            assert version.startswith("HTTP/"), first
            status = int(status_text)
            headers = [(k, v.strip()) for k, _, v in (line.partition(":") for line in lines)]
            if 100 <= status < 200:
                interim.append(status)
                continue
            break
        answer = Answer(version, status, rest[0] if rest else "", headers, b"", interim)
        if head or status in {204, 304}:
            return answer
        codings = (answer.header("Transfer-Encoding") or "").lower()
        length = answer.header("Content-Length")
        if "chunked" in codings:
            answer.body = await self._chunked()
        elif length is not None:
            answer.body = await self._take(int(length))
        else:  # close-delimited
            while await self._fill():
                pass
            answer.body, self.buf = self.buf, b""
        return answer

    async def _chunked(self) -> bytes:
        body = b""
        while True:
            size = int((await self._line()).split(b";", 1)[0], 16)
            if not size:
                while await self._line():  # trailers, up to the empty line
                    pass
                return body
            body += await self._take(size)
            assert await self._take(2) == b"\r\n"

    async def closed(self) -> bool:
        """Whether the edge closes the connection now (bytes after the answers fail the case);
        False if it is still open after the read timeout."""
        assert not self.buf, f"unexpected bytes: {self.buf!r}"
        if self.eof:
            return True
        try:
            data = await asyncio.wait_for(self.reader.read(65536), self.timeout)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        assert not data, f"unexpected bytes: {data!r}"
        self.eof = True
        return True

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), READ_TIMEOUT)
        except (ConnectionError, TimeoutError):
            pass


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


def chunked(body: bytes, size: int, *, ext: bool = False, trailers: Iterable[str] = ()) -> bytes:
    """``body`` in the chunked coding, ``size`` bytes a chunk (with extensions, trailers)."""
    out = b""
    for i in range(0, len(body), size):
        piece = body[i : i + size]
        out += b"%x%s\r\n%s\r\n" % (len(piece), b';name="v";n=1' if ext else b"", piece)
    return out + b"0\r\n" + b"".join(t.encode() + b"\r\n" for t in trailers) + b"\r\n"


async def exchange(
    port: int, chunks: Iterable[bytes], n: int = 1, *, gap: float = 0.005, head: bool = False
) -> tuple[list[Answer], Wire]:
    """Open a connection, send ``chunks`` with gaps, read ``n`` answers. The caller closes."""
    wire = await Wire.open(port)
    await wire.send(*chunks, gap=gap)
    answers = [await wire.answer(head=head) for _ in range(n)]
    return answers, wire


JSON = "Content-Type: application/json"
CHUNKED_HEAD = request("POST", PROFILES, headers=[JSON, "Transfer-Encoding: chunked"])
