"""An early error answer survives the body still coming: the lingering close (RFC 9112 §9.6).

A refusal the edge writes before it has read the whole request (413 on a chunked body that grows
past ``max_body_bytes`` or on a declared length, 400 on bad framing after the head, 431) ends the
connection. Closing the socket at once while the client still sends makes the kernel answer
those bytes with RST, which can destroy the answer before the client reads it: aiohttp's client
then reports "Can not write request body" instead of the 413 (the flaky
``tests/reliability/test_hostile.py`` case). Here the client's bytes keep coming after the answer,
and the answer must arrive whole every time, with every real client; a client that keeps sending
is cut off within the bounds (``wire.linger``); one that closes at once frees the connection at
once; and graceful shutdown does not wait for a lingering connection.

Sync clients run in a thread, since the edge runs in the test's loop; every socket has a timeout.
"""

from __future__ import annotations

import asyncio
import http.client
import importlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import requests

from edge_router.wire.linger import LINGER_IDLE, LINGER_TIME

from .conformance import (  # noqa: F401  (edge, front: fixtures)
    AUTH,
    JSON,
    PROFILES,
    READ_TIMEOUT,
    STREAMED_PAD,
    Edge,
    edge,
    front,
    profile,
    request,
)
from .conftest import wait_until

LIMIT = 256 * 1024  # the edge's max_body_bytes (the settings' default)
PIECE = 64 * 1024
PIECES = 8  # 512 KiB: twice the limit, well under the lingering's byte bound
ROUNDS = 50
CUT_OFF = LINGER_TIME + 3.0  # the lingering's bound, and slack for a busy machine
# The module whose bounds the listener reads when it lingers (``edge_router.wire.linger`` is
# also the name of the function the package exports).
linger = importlib.import_module("edge_router.wire.linger")


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> tuple[float, float]:
    """The lingering's bounds (time, idle) made ten times wider, for the cases that tell which
    of two ways ended a connection by how long it took: with the real 0.5 s idle bound, a
    loaded machine's pause of half a second could pass for the other way."""
    time_s, idle_s = LINGER_TIME * 10, LINGER_IDLE * 10
    monkeypatch.setattr(linger, "LINGER_TIME", time_s)
    monkeypatch.setattr(linger, "LINGER_IDLE", idle_s)
    return time_s, idle_s


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


CHUNKED_HEAD = request("POST", PROFILES, headers=[JSON, "Transfer-Encoding: chunked"])
LENGTH_HEAD = request("POST", PROFILES, headers=[JSON, f"Content-Length: {PIECE * PIECES}"])
BODY_PIECE = b" " * PIECE  # JSON whitespace: the edge never gets to parse it
# What the client writes, head first, each item in its own sendall.
SHAPES: dict[str, list[bytes]] = {
    # the edge answers once the body passes the limit, with half of it still to come
    "413-chunked": [CHUNKED_HEAD, *[_chunk(BODY_PIECE)] * PIECES, b"0\r\n\r\n"],
    # answered on the head alone, the head and the first body bytes in one write
    "413-length": [LENGTH_HEAD + BODY_PIECE, *[BODY_PIECE] * (PIECES - 1)],
    # a chunk size that is no number, after 128 KiB of good chunks, more bytes after it
    "400-bad-chunk": [
        CHUNKED_HEAD,
        _chunk(BODY_PIECE),
        _chunk(BODY_PIECE) + b"zz\r\n",
        *[BODY_PIECE] * (PIECES - 2),
    ],
    # a header line over the parser's limit, then a body
    "431-header-line": [
        request("POST", PROFILES, headers=[JSON, "X-Long: " + "a" * 9000, "Content-Length: 1"])
        + BODY_PIECE,
        *[BODY_PIECE] * (PIECES - 1),
    ],
}
EXPECTED = {
    "413-chunked": (413, "payload_too_large"),
    "413-length": (413, "payload_too_large"),
    "400-bad-chunk": (400, "bad_request"),
    "431-header-line": (431, "header_too_large"),
}
WEB_OWN_400 = {
    # aiohttp.web refuses bad framing itself (RequestHandler.handle_error, text/plain) and closes
    # at once, before the edge's code runs: its lingering close is not the edge's to give.
    "400-bad-chunk",
    "431-header-line",
}


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One answer with a Content-Length: status, headers (lower-cased names), body."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise AssertionError(f"closed before the answer's head: {buf!r}")
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    first, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
    length = int(headers["content-length"])
    while len(body) < length:
        data = sock.recv(65536)
        if not data:
            raise AssertionError(f"closed with {len(body)} of {length} body bytes")
        body += data
    assert len(body) == length, (len(body), length)
    return int(first.split(" ", 2)[1]), headers, body


def _send_all_then_read(port: int, writes: list[bytes]) -> tuple[int, str, str, str | None]:
    """Every write, then the answer, then (when it says close) the end of the stream:
    (status, error code, Connection header, what failed on the way or None)."""
    with _connect(port) as sock:
        failed = None
        try:
            for data in writes:
                sock.sendall(data)
        except OSError as exc:  # the edge reset the connection under our writes
            failed = f"send: {exc!r}"
        try:
            status, headers, body = _read_answer(sock)
            closes = headers.get("connection", "").lower() == "close"
            rest = sock.recv(65536) if closes else b""  # the end, right after the answer
        except OSError as exc:
            return 0, "", "", failed or f"read: {exc!r}"
        if rest:
            failed = failed or f"bytes after the answer: {rest[:80]!r}"
        ctype = headers.get("content-type", "")
        code = json.loads(body)["error"] if ctype.startswith("application/json") else ctype
        return status, code, headers.get("connection", "").lower(), failed


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_an_early_error_answer_arrives_whole_while_the_body_keeps_coming(
    edge: Edge,  # noqa: F811
    shape: str,
) -> None:
    if edge.front == "web" and shape in WEB_OWN_400:
        pytest.skip(
            "aiohttp.web refuses these itself (400 text/plain; a chunk its parser refused "
            "leaves the body waiting: 408) and closes at once; see test_conformance_refused"
        )
    # aiohttp.web may have buffered the whole body before the edge refused it: then the
    # connection is not over, and stays open (keep-alive, no Connection header).
    endings = {"close", ""} if edge.front == "web" else {"close"}
    for i in range(ROUNDS):
        status, code, connection, failed = await asyncio.to_thread(
            _send_all_then_read, edge.port, SHAPES[shape]
        )
        assert (status, code, failed) == (*EXPECTED[shape], None), (i, status, code, failed)
        assert connection in endings, (i, connection)
    await edge.settled()
    assert edge.seen() == [] or shape in {"413-chunked", "400-bad-chunk"}  # (streamed, cut short)


# -- real clients -----------------------------------------------------------------------------


def _url(e: Edge) -> str:
    return f"http://127.0.0.1:{e.port}{PROFILES}"


def _pieces() -> Iterator[bytes]:
    for _ in range(PIECES):
        yield BODY_PIECE


def _http_client(port: int, chunked: bool) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=READ_TIMEOUT)
    try:
        headers = {**AUTH, "Host": "api.example.com", "Content-Type": "application/json"}
        body = _pieces() if chunked else BODY_PIECE * PIECES  # an iterable is sent chunked
        conn.request("POST", PROFILES, body=body, headers=headers)
        resp = conn.getresponse()
        assert json.loads(resp.read())["error"] == "payload_too_large"
        return resp.status
    finally:
        conn.close()


def _requests(url: str, chunked: bool) -> int:
    headers = {**AUTH, "Host": "api.example.com", "Content-Type": "application/json"}
    body = _pieces() if chunked else BODY_PIECE * PIECES  # a generator is sent chunked
    with requests.Session() as session:
        resp = session.post(url, data=body, headers=headers, timeout=READ_TIMEOUT)
        assert resp.json()["error"] == "payload_too_large"
        return resp.status_code


async def _aiohttp(session: aiohttp.ClientSession, url: str, chunked: bool) -> int:
    """The client of the flaky reliability test: it reports a reset under its body writes as
    "Can not write request body", whatever the answer was."""

    async def pieces() -> AsyncIterator[bytes]:
        for piece in _pieces():
            yield piece

    headers = {**AUTH, "Host": "api.example.com", "Content-Type": "application/json"}
    body = pieces() if chunked else BODY_PIECE * PIECES
    timeout = aiohttp.ClientTimeout(total=READ_TIMEOUT)
    async with session.post(url, data=body, headers=headers, timeout=timeout) as resp:
        assert (await resp.json())["error"] == "payload_too_large"
        return resp.status


@pytest.mark.parametrize("client", ["http.client", "requests", "aiohttp"])
@pytest.mark.parametrize("framing", ["chunked", "content-length"])
async def test_real_clients_get_the_413_not_a_reset(
    edge: Edge,  # noqa: F811
    client: str,
    framing: str,
) -> None:
    chunked = framing == "chunked"
    async with aiohttp.ClientSession() as session:
        for i in range(ROUNDS // 2):
            try:
                if client == "http.client":
                    got = await asyncio.to_thread(_http_client, edge.port, chunked)
                elif client == "requests":
                    got = await asyncio.to_thread(_requests, _url(edge), chunked)
                else:
                    got = await _aiohttp(session, _url(edge), chunked)
            except (
                OSError,
                requests.ConnectionError,
                http.client.HTTPException,
                aiohttp.ClientError,
            ) as exc:
                raise AssertionError(f"round {i}: {exc!r} instead of the 413") from exc
            assert got == 413, (i, got)


# -- bounded ----------------------------------------------------------------------------------


def _answer_then_keep_sending(port: int, gap: float, started: threading.Event) -> float:
    """Read the 413 to a declared over-limit body, then send body bytes (``gap`` seconds
    apart, 0: as fast as possible) until the edge cuts the connection off; return how long
    after the answer that was."""
    with _connect(port) as sock:
        sock.sendall(LENGTH_HEAD)
        status, _headers, _body = _read_answer(sock)
        assert status == 413, status
        answered = time.monotonic()
        started.set()
        piece = BODY_PIECE[:1024] if gap else BODY_PIECE
        try:
            while time.monotonic() - answered < CUT_OFF + 5:
                sock.sendall(piece)
                if gap:
                    time.sleep(gap)  # shaping the sender, not synchronising
        except OSError:
            return time.monotonic() - answered
        raise AssertionError(f"still accepting bytes {CUT_OFF + 5} s after the answer")


@pytest.mark.parametrize("pace", ["trickle", "flood"])
async def test_a_client_that_keeps_sending_is_cut_off_within_the_bound(
    edge: Edge,  # noqa: F811
    pace: str,
) -> None:
    # trickle: 1 KiB every 50 ms (under the idle timeout: only the total time bounds it);
    # flood: as fast as it can (the byte bound, or the time)
    gap = 0.05 if pace == "trickle" else 0.0
    elapsed = await asyncio.to_thread(_answer_then_keep_sending, edge.port, gap, threading.Event())
    assert elapsed <= CUT_OFF, elapsed
    if pace == "trickle":  # each byte put the idle timeout off: the edge did linger
        assert elapsed > LINGER_IDLE, elapsed
    await wait_until(lambda: edge.connections() == 0, timeout=CUT_OFF)


def _read_answer_then_close(port: int, writes: list[bytes]) -> float:
    """The over-limit request, its answer, close at once; when that close happened."""
    with _connect(port) as sock:
        for data in writes:
            sock.sendall(data)
        status, _headers, _body = _read_answer(sock)
        assert status == 413, status
    return time.monotonic()


@pytest.mark.parametrize("shape", ["413-chunked", "413-length"])
async def test_a_client_that_closes_after_the_answer_frees_the_connection_at_once(
    edge: Edge,  # noqa: F811
    shape: str,
    wide: tuple[float, float],
) -> None:
    _time_s, idle_s = wide
    for i in range(10):
        closed = await asyncio.to_thread(_read_answer_then_close, edge.port, SHAPES[shape])
        await wait_until(lambda: edge.connections() == 0, timeout=idle_s)
        # the client's close ends the lingering, not the idle timeout (5 s here)
        assert time.monotonic() - closed < idle_s, i


async def test_a_client_that_goes_quiet_is_closed_after_the_idle_timeout(
    edge: Edge,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The answer read, the socket left open, nothing more sent: the edge lets go after the
    idle timeout, well before the total bound (made 20 s here, so that a loaded machine's
    pause cannot make the one look like the other)."""
    time_s = LINGER_TIME * 10
    monkeypatch.setattr(linger, "LINGER_TIME", time_s)
    with _connect(edge.port) as sock:
        await asyncio.to_thread(sock.sendall, LENGTH_HEAD)
        status, _headers, _body = await asyncio.to_thread(_read_answer, sock)
        assert status == 413
        t0 = time.monotonic()
        assert await asyncio.to_thread(sock.recv, 1) == b""  # the edge's write side is shut
        await wait_until(lambda: edge.connections() == 0, timeout=time_s)
        assert time.monotonic() - t0 < time_s / 2


def _read_slowly_to_the_end(port: int, data: bytes) -> tuple[bytes, float]:
    """Send ``data``, then read the answer 2 KiB at a time, 10 ms apart (a slow reader:
    shaping, not synchronising) to the end of the stream; the bytes and how long it took."""
    with _connect(port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        t0 = time.monotonic()
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(2048):
            received += chunk
            time.sleep(0.01)
        return received, time.monotonic() - t0


async def test_an_answer_still_going_out_is_not_cut_by_the_bounds(edge: Edge) -> None:  # noqa: F811
    """HTTP/1.0 and a long streamed answer: its end is the connection's close. The lingering's
    clocks start once the answer is out, so a slow reader gets all of it, however long it
    reads (the send timeout bounds a client that stops reading)."""
    target = profile(1) + "&chunked=1"
    data = request("GET", target, version="HTTP/1.0")
    received, took = await asyncio.to_thread(_read_slowly_to_the_end, edge.port, data)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"200", head[:200]  # (web: "HTTP/1.0 200", raw: 1.1)
    assert json.loads(body)["raw_path"] == target  # the JSON and every byte of its padding
    assert len(body) > STREAMED_PAD
    assert took > LINGER_TIME, took  # (it did outlast the bounds)


async def test_graceful_shutdown_is_not_delayed_by_a_lingering_connection(
    edge: Edge,  # noqa: F811
    wide: tuple[float, float],
) -> None:
    time_s, _idle_s = wide  # the shutdown, not the lingering's bound (20 s here), cuts it off
    started = threading.Event()
    sender = asyncio.ensure_future(
        asyncio.to_thread(_answer_then_keep_sending, edge.port, 0.05, started)
    )
    try:
        assert await asyncio.to_thread(started.wait, READ_TIMEOUT)
        assert edge.connections() == 1  # lingering, and counted
        if edge.front == "raw":
            assert [c.lingering for c in edge.runner.server.connections] == [True]  # type: ignore[union-attr]
        t0 = time.monotonic()
        await edge.runner.cleanup()
        assert time.monotonic() - t0 < time_s / 2
        # the shutdown cut it off, not the lingering's bound
        assert await asyncio.wait_for(sender, time_s) < time_s / 2
    finally:
        sender.cancel()
