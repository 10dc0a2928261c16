"""The naive baseline: a plain aiohttp reverse proxy with no routing logic.

One shared ``ClientSession`` per worker, every request forwarded to the one ``--upstream``,
response streamed back. ``--workers N`` forks N processes sharing the port (SO_REUSEPORT).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import aiohttp
from aiohttp import web

HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
}


def make_app(upstream: str) -> web.Application:
    async def start(app: web.Application) -> None:
        conn = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None, keepalive_timeout=60)
        app["session"] = aiohttp.ClientSession(upstream, connector=conn, auto_decompress=False)

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    async def proxy(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        data = request.content if request.body_exists else None
        async with request.app["session"].request(
            request.method, request.rel_url, headers=headers, data=data, allow_redirects=False
        ) as up:
            resp = web.StreamResponse(status=up.status, reason=up.reason)
            for k, v in up.headers.items():
                if k.lower() not in HOP:
                    resp.headers.add(k, v)
            if up.content_length is not None:
                resp.content_length = up.content_length
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def serve(host: str, port: int, upstream: str) -> None:
    import uvloop  # a project dependency on Linux

    web.run_app(
        make_app(upstream),
        host=host,
        port=port,
        reuse_port=True,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:18001")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    if args.workers <= 1:
        serve(args.host, args.port, args.upstream)
        return
    children = []
    for _ in range(args.workers):
        if (pid := os.fork()) == 0:
            serve(args.host, args.port, args.upstream)
            os._exit(0)
        children.append(pid)

    def forward(*_: object) -> None:  # stop every worker (same process group), once
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(0, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for pid in children:
        os.waitpid(pid, 0)
    sys.exit(0)


if __name__ == "__main__":
    main()
