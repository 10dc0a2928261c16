"""Real HTTP clients through both front ends (issue 15's conformance matrix, part 1).

Each client sends each operation twice -- over one kept-alive connection where the client keeps
connections (``http.client``, ``requests``, ``httpx``, aiohttp, ``curl``), over two connections
where it does not (``urllib``, ``http.client`` with ``Connection: close``) -- and every answer
and every request the store received is checked. Sync clients run in a thread, since the edge
runs in the test's loop; every client has a timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import pytest
import requests

from .conformance import (  # noqa: F401  (edge, front: fixtures)
    API,
    AUTH,
    BIG,
    READ_TIMEOUT,
    SMALL,
    STORE_SERVER,
    Edge,
    edge,
    front,
    profile,
)
from .conftest import blackhole

OPS: dict[str, tuple[str, str, bytes | None]] = {
    "post-95B": ("POST", f"{API}/profiles?an=acme", SMALL),
    "post-200KiB": ("POST", f"{API}/profiles?an=acme", BIG),
    "put-95B": ("PUT", profile(1), SMALL),
    "put-200KiB": ("PUT", profile(2), BIG),
    "patch-95B": ("PATCH", profile(3), SMALL),
    "patch-200KiB": ("PATCH", profile(4), BIG),
    "get": ("GET", profile(5), None),
    "delete": ("DELETE", profile(6), None),
}


@dataclass
class Got:
    status: int
    region: str | None
    server: str | None
    body: bytes
    connection: int | None = None  # which connection carried it, when the client tells


def _headers(body: bytes | None) -> dict[str, str]:
    return {**AUTH, **({"Content-Type": "application/json"} if body is not None else {})}


def _http_client(port: int, method: str, target: str, body: bytes | None) -> list[Got]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=READ_TIMEOUT)
    try:
        out = []
        for _ in range(2):
            conn.request(method, target, body=body, headers=_headers(body))
            resp = conn.getresponse()
            data = resp.read()
            assert not resp.will_close, resp.getheaders()
            assert conn.sock is not None
            out.append(
                Got(
                    resp.status,
                    resp.getheader("X-Data-Region"),
                    resp.getheader("Server"),
                    data,
                    id(conn.sock),
                )
            )
        return out
    finally:
        conn.close()


def _http_client_close(port: int, method: str, target: str, body: bytes | None) -> list[Got]:
    out = []
    for _ in range(2):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=READ_TIMEOUT)
        probe = None
        try:
            conn.request(
                method, target, body=body, headers={**_headers(body), "Connection": "close"}
            )
            assert conn.sock is not None
            probe = conn.sock.dup()  # http.client closes its socket after a closing answer
            resp = conn.getresponse()
            data = resp.read()
            assert resp.will_close, resp.getheaders()
            # The edge closes its side after the answer: the next read is the end of stream.
            probe.settimeout(READ_TIMEOUT)
            assert probe.recv(1) == b""
            out.append(
                Got(resp.status, resp.getheader("X-Data-Region"), resp.getheader("Server"), data)
            )
        finally:
            if probe is not None:
                probe.close()
            conn.close()
    return out


def _urllib(port: int, method: str, target: str, body: bytes | None) -> list[Got]:
    out = []
    for _ in range(2):
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}{target}", data=body, method=method, headers=_headers(body)
        )
        with urllib.request.urlopen(req, timeout=READ_TIMEOUT) as resp:  # noqa: S310 (http://127.0.0.1)
            out.append(
                Got(resp.status, resp.headers["X-Data-Region"], resp.headers["Server"], resp.read())
            )
    return out


def _requests(port: int, method: str, target: str, body: bytes | None) -> list[Got]:
    with requests.Session() as session:
        out = []
        for _ in range(2):
            resp = session.request(
                method,
                f"http://127.0.0.1:{port}{target}",
                data=body,
                headers=_headers(body),
                timeout=READ_TIMEOUT,
            )
            h = resp.headers
            out.append(Got(resp.status_code, h.get("X-Data-Region"), h.get("Server"), resp.content))
        return out


def _httpx(port: int, method: str, target: str, body: bytes | None) -> list[Got]:
    with httpx.Client(timeout=READ_TIMEOUT) as client:
        out = []
        for _ in range(2):
            resp = client.request(
                method, f"http://127.0.0.1:{port}{target}", content=body, headers=_headers(body)
            )
            h = resp.headers
            out.append(Got(resp.status_code, h.get("X-Data-Region"), h.get("Server"), resp.content))
        return out


SYNC: dict[str, Callable[[int, str, str, bytes | None], list[Got]]] = {
    "http.client": _http_client,
    "http.client-close": _http_client_close,
    "urllib": _urllib,
    "requests": _requests,
    "httpx": _httpx,
}


async def _aiohttp(port: int, method: str, target: str, body: bytes | None) -> list[Got]:
    timeout = aiohttp.ClientTimeout(total=READ_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=1)  # one connection: the second request reuses it
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        out = []
        for _ in range(2):
            async with session.request(
                method,
                f"http://127.0.0.1:{port}{target}",
                data=body,
                headers=_headers(body),
                skip_auto_headers=() if body is not None else ("Content-Type",),
            ) as resp:
                data = await resp.read()
                h = resp.headers
                out.append(Got(resp.status, h.get("X-Data-Region"), h.get("Server"), data))
        return out


async def _curl(
    port: int, method: str, target: str, body: bytes | None, tmp: Path, expect: bool = False
) -> list[Got]:
    """Both requests in one curl run, which keeps the connection between them. ``expect``:
    a body waits for ``100 Continue`` (curl would wait ``--expect100-timeout`` for none)."""
    url = f"http://127.0.0.1:{port}{target}"
    args = ["curl", "-sS", "--max-time", str(READ_TIMEOUT), "-X", method, "-D", str(tmp / "h")]
    headers = _headers(body)
    if expect and body is not None:
        headers["Expect"] = "100-continue"
        args += ["--expect100-timeout", str(READ_TIMEOUT * 2)]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    if body is not None:
        (tmp / "body").write_bytes(body)
        args += ["--data-binary", f"@{tmp / 'body'}"]
    args += ["-w", "%{http_code} %{num_connects}\\n"]
    args += ["-o", str(tmp / "0"), url, "-o", str(tmp / "1"), url]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), READ_TIMEOUT * 3)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, stderr
    codes = [line.split() for line in stdout.decode().splitlines()]
    assert [c[1] for c in codes] == ["1", "0"], codes  # the second reused the connection
    blocks = (tmp / "h").read_bytes().decode("latin-1").split("\r\n\r\n")
    heads = [b for b in blocks if b and not b.startswith("HTTP/1.1 1")]
    continues = [b for b in blocks if b.startswith("HTTP/1.1 100 ")]
    assert len(continues) == (2 if "Expect" in headers else 0), blocks
    out = []
    for i, (code, _connects) in enumerate(codes):
        lines = [line.partition(":") for line in heads[i].split("\r\n")[1:]]
        h = {k.strip().lower(): v.strip() for k, _, v in lines}
        out.append(
            Got(int(code), h.get("x-data-region"), h.get("server"), (tmp / str(i)).read_bytes(), 0)
        )
    return out


CLIENTS = [*SYNC, "aiohttp", "curl", "curl-expect"]


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("client", CLIENTS)
async def test_client_operation(edge: Edge, client: str, op: str, tmp_path: Path) -> None:  # noqa: F811
    method, target, body = OPS[op]
    if client in SYNC:
        got = await asyncio.to_thread(SYNC[client], edge.port, method, target, body)
    elif client == "aiohttp":
        got = await _aiohttp(edge.port, method, target, body)
    else:
        if shutil.which("curl") is None:
            pytest.skip("curl is not on PATH")
        got = await _curl(edge.port, method, target, body, tmp_path, client == "curl-expect")

    sent = body or b""
    assert len(got) == 2
    for answer in got:
        assert answer.status == 200, answer
        assert answer.region == "eu-west-1"
        assert answer.server != STORE_SERVER
        echo = json.loads(answer.body)
        assert (echo["raw_path"], echo["body_len"]) == (target, len(sent))
    if got[0].connection is not None:  # one kept-alive connection carried both
        assert got[0].connection == got[1].connection
    assert edge.seen() == [(method, target, sent)] * 2


WRITES = ["post-95B", "post-200KiB", "patch-200KiB", "delete"]


@dataclass
class Refusal:
    status: int
    retry_after: str | None
    body: bytes
    invited: bool = False  # a "100 Continue" came before it (only curl-expect asks for one)


def _refused_by(client: str, port: int, method: str, target: str, body: bytes | None) -> Refusal:
    """One request by a sync client, a refusal read whole (urllib raises it as HTTPError)."""
    url = f"http://127.0.0.1:{port}{target}"
    if client == "http.client":
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=READ_TIMEOUT)
        try:
            conn.request(method, target, body=body, headers=_headers(body))
            resp = conn.getresponse()
            return Refusal(resp.status, resp.getheader("Retry-After"), resp.read())
        finally:
            conn.close()
    if client == "urllib":
        req = urllib.request.Request(url, data=body, method=method, headers=_headers(body))
        try:
            with urllib.request.urlopen(req, timeout=READ_TIMEOUT) as resp:  # noqa: S310
                return Refusal(resp.status, resp.headers["Retry-After"], resp.read())
        except urllib.error.HTTPError as err:
            return Refusal(err.code, err.headers["Retry-After"], err.read())
    if client == "requests":
        r = requests.request(method, url, data=body, headers=_headers(body), timeout=READ_TIMEOUT)
        return Refusal(r.status_code, r.headers.get("Retry-After"), r.content)
    assert client == "httpx", client
    x = httpx.request(method, url, content=body, headers=_headers(body), timeout=READ_TIMEOUT)
    return Refusal(x.status_code, x.headers.get("Retry-After"), x.content)


async def _curl_refused(
    expect: bool, port: int, method: str, target: str, body: bytes | None, tmp: Path
) -> Refusal:
    """One request by curl, its final answer (after a ``100 Continue``, if one came)."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not on PATH")
    args = ["curl", "-sS", "--max-time", str(READ_TIMEOUT), "-X", method, "-D", "-"]
    headers = _headers(body)
    if expect and body is not None:
        # curl waits for a 100 up to this timeout, longer than --max-time: were neither a 100
        # nor the final answer sent, curl would fail (exit 28), not just be slow
        headers["Expect"] = "100-continue"
        args += ["--expect100-timeout", str(READ_TIMEOUT * 2)]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    if body is not None:
        (tmp / "body").write_bytes(body)
        args += ["--data-binary", f"@{tmp / 'body'}"]
    proc = await asyncio.create_subprocess_exec(
        *args, f"http://127.0.0.1:{port}{target}", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), READ_TIMEOUT * 3)
    assert proc.returncode == 0
    invited = out.startswith(b"HTTP/1.1 100 ")
    if invited:
        out = out.partition(b"\r\n\r\n")[2]
    head, _, answer = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    h = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return Refusal(int(lines[0].split()[1]), h.get("retry-after"), answer, invited)


async def _refusal(
    client: str, port: int, method: str, target: str, body: bytes | None, tmp: Path
) -> Refusal:
    if client.startswith("curl"):
        return await _curl_refused(client == "curl-expect", port, method, target, body, tmp)
    return await asyncio.to_thread(_refused_by, client, port, method, target, body)


REFUSED_TO = ["http.client", "urllib", "requests", "httpx", "curl", "curl-expect"]


@pytest.mark.parametrize("op", WRITES)
@pytest.mark.parametrize("client", REFUSED_TO)
async def test_a_moving_accounts_writes_are_refused_to_every_client(
    edge: Edge,  # noqa: F811
    client: str,
    op: str,
    tmp_path: Path,
) -> None:
    """During a move's freeze the edge refuses writes before the store, often before their
    body has arrived: each client reads the whole 503 and its Retry-After (the edge may close
    the connection after it: a body it did not read is not worth reading). A client that asks
    ``Expect: 100-continue`` gets the 503 instead of a ``100 Continue``, and so never sends
    the body nor waits for its expect timeout."""
    edge.registry.accounts["acme"] = dataclasses.replace(
        edge.registry.accounts["acme"], moving=True
    )
    method, target, body = OPS[op]
    got = [await _refusal(client, edge.port, method, target, body, tmp_path) for _ in range(3)]
    for answer in got:
        assert answer.status == 503, answer
        assert answer.retry_after is not None and int(answer.retry_after) >= 1
        assert json.loads(answer.body)["error"] == "account_moving"
        assert not answer.invited  # refused on the head, never invited
    assert edge.seen() == []  # nothing reached the store


@pytest.mark.parametrize("op", ["post-95B", "post-200KiB"])
@pytest.mark.parametrize("client", REFUSED_TO)
async def test_an_unreachable_region_is_a_503_to_every_client(
    edge: Edge,  # noqa: F811
    client: str,
    op: str,
    tmp_path: Path,
) -> None:
    """The region's only store stops accepting connections (its connects time out). Every
    client reads the whole 503 ``region_unavailable``, whether its body was read first (a small
    one) or not (a streamed one, left to the lingering close); curl asking ``Expect`` was
    invited (every check before the forwarding passed) and still gets the answer. The
    store stays in its pool: a connect timeout never ejects a region's last instance."""
    for site in list(edge.store_runner.sites):
        await site.stop()
    method, target, body = OPS[op]
    with blackhole(edge.store_port):
        answer = await _refusal(client, edge.port, method, target, body, tmp_path)
    assert answer.status == 503, answer
    assert answer.retry_after is not None and int(answer.retry_after) >= 1
    assert json.loads(answer.body)["error"] == "region_unavailable"
    assert answer.invited == (client == "curl-expect")  # the pipeline's checks passed
    (inst,) = edge.state.pools.by_region["eu-west-1"]
    assert inst.available(edge.state.pools.clock())
