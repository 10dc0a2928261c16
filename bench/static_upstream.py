"""A minimal fixed-response HTTP/1.1 upstream, fast enough never to be the bottleneck.

One raw asyncio protocol (on uvloop when present), no routing, no parsing beyond finding the end
of each request head (and skipping a ``Content-Length`` body): every request gets the same small
JSON body naming the region, with keep-alive. Pipelined requests are answered in order. Headers
such as ``Host`` or ``X-Residency-Assertion`` are ignored.

Run one per region, each on its own port::

    python -m bench.static_upstream --port 18001 --region us-east-1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
from collections.abc import Coroutine
from typing import Any

_HEAD_END = b"\r\n\r\n"
_MAX_HEAD = 64 * 1024


def build_response(region: str, *, body: bytes | None = None) -> bytes:
    if body is None:
        body = json.dumps(
            {"id": "static", "region": region, "email": "shopper@example.com"},
            separators=(",", ":"),
        ).encode()
    head = (
        "HTTP/1.1 200 OK\r\n"
        "Content-Type: application/json\r\n"
        f"X-Upstream-Region: {region}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    ).encode("latin-1")
    return head + body


def _content_length(head: bytes) -> int:
    lower = head.lower()
    i = lower.find(b"\r\ncontent-length:")
    if i < 0:
        return 0
    j = lower.find(b"\r\n", i + 2)
    try:
        return int(head[i + 17 : j if j >= 0 else None].strip())
    except ValueError:
        return 0


class StaticProtocol(asyncio.Protocol):
    __slots__ = ("buf", "response", "skip", "transport")

    def __init__(self, response: bytes) -> None:
        self.response = response
        self.buf = b""
        self.skip = 0  # request-body bytes still to discard
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        answers = 0
        while True:
            if self.skip:
                taken = min(self.skip, len(buf))
                self.skip -= taken
                buf = buf[taken:]
                if self.skip:
                    break
            end = buf.find(_HEAD_END)
            if end < 0:
                break
            head = buf[:end]
            buf = buf[end + 4 :]
            answers += 1
            if b"ength:" in head or b"ENGTH:" in head:
                self.skip = _content_length(head)
        if len(buf) > _MAX_HEAD:
            assert self.transport is not None
            self.transport.close()
            return
        self.buf = buf
        if answers and self.transport is not None:
            self.transport.write(self.response * answers)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(host: str, port: int, region: str) -> None:
    loop = asyncio.get_running_loop()
    response = build_response(region)
    server = await loop.create_server(
        lambda: StaticProtocol(response), host, port, backlog=4096, reuse_address=True
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--region", default="us-east-1")
    args = ap.parse_args(argv)
    run(serve(args.host, args.port, args.region))


def run(coro: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` on uvloop when it is installed (it is a project dependency on Linux)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(coro)
    else:
        uvloop.run(coro)


if __name__ == "__main__":
    main()
