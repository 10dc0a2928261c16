"""The listener's fast lane: the common request is answered from callbacks, without the
connection's task, and hands over to the general path whenever it must wait.

Every component test also runs through the production listener (``test_listener``), so the
lane's answers are checked there; these tests check that the lane is taken at all, and the
ordering and hand-over cases only the lane has.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from edge_router.http_server import EdgeProtocol, EdgeServer

from .conftest import FakeStore, count_calls, wait_until
from .test_component import EU_KEY, P
from .test_listener import build  # noqa: F401  (the EdgeRunner-served stack)


def _req(path: str, extra: str = "") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: acme.localhost\r\nX-VTEX-API-AppKey: {EU_KEY.app_key}\r\n"
        f"X-VTEX-API-AppToken: {EU_KEY.token}\r\n{extra}\r\n"
    ).encode()


def _server(st: Any) -> EdgeServer:
    return st.edge.server.runner.server  # type: ignore[no-any-return]


async def _read_answers(reader: asyncio.StreamReader, n: int) -> bytes:
    got = b""
    while len(re.findall(rb"HTTP/1\.1 \d{3} ", got)) < n or not got.endswith(b"}"):
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        if not chunk:
            break
        got += chunk
    return got


@pytest.fixture
def resumes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts hand-overs from the lane to a task."""
    return count_calls(monkeypatch, EdgeProtocol, "resume")


async def test_common_gets_take_the_lane_without_a_task(build, resumes: list[int]) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    st = await build({"eu-west-1": ["store"], "us-east-1": ["store"]})
    assert (await st.get(f"{P}/profiles/warm?an=acme")).status == 200  # registry + socket warm
    reader, writer = await asyncio.open_connection("127.0.0.1", st.edge.server.port)
    try:
        for i in range(5):
            writer.write(_req(f"{P}/profiles/p{i}"))
            got = await _read_answers(reader, 1)
            assert got.startswith(b"HTTP/1.1 200 ") and f"p{i}".encode() in got
            assert b"\r\nX-Data-Region: eu-west-1\r\n" in got
        conns = [c for c in _server(st).connections if c.peer == "127.0.0.1" and c._task is None]
        assert conns, "the raw connection never needed its task"
        assert resumes == []
    finally:
        writer.close()
    seen = [s.raw_path.rsplit("/", 1)[-1] for s in st.stores["eu-west-1"][0].seen]
    assert seen[-5:] == [f"p{i}" for i in range(5)]
    assert all(s.assertion is not None for s in st.stores["eu-west-1"][0].seen)


async def test_a_request_arriving_during_a_lane_exchange_waits_its_turn(build) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    slow = FakeStore("eu-west-1", "slow", delay=0.3)
    st = await build({"eu-west-1": [slow], "us-east-1": ["store"]})
    assert (await st.get(f"{P}/profiles/warm?an=acme")).status == 200
    reader, writer = await asyncio.open_connection("127.0.0.1", st.edge.server.port)
    try:
        writer.write(_req(f"{P}/profiles/first"))
        await wait_until(lambda: slow.proxied == 2)  # the first is with the store
        writer.write(_req(f"{P}/profiles/second"))
        got = await _read_answers(reader, 2)
    finally:
        writer.close()
    assert [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", got)] == [200, 200]
    assert got.index(b"/first") < got.index(b"/second")
    assert [s.raw_path.rsplit("/", 1)[-1] for s in slow.seen] == ["warm?an=acme", "first", "second"]


async def test_a_retryable_answer_hands_over_and_is_retried_in_region(
    build,  # type: ignore[no-untyped-def]  # noqa: F811
    resumes: list[int],
) -> None:
    bad = FakeStore("eu-west-1", "bad", status=503)
    good = FakeStore("eu-west-1", "good")
    st = await build({"eu-west-1": [bad, good], "us-east-1": ["store"]})
    for _ in range(4):  # warm the registry and a socket to each instance
        await st.get(f"{P}/profiles/warm?an=acme")
    n = len(resumes)
    statuses = [(await st.get(f"{P}/profiles/x?an=acme")).status for _ in range(4)]
    assert statuses == [200] * 4  # the 503s were retried on the other instance
    assert len(resumes) > n  # ... after the lane handed them over
    assert st.stores["us-east-1"][0].proxied == 0  # never another region
