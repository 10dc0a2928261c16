"""Reliability fixtures: one two-region stack per session, a counting client, the summary.

* ``stack`` -- ``tests/reliability/stack.py`` (real processes), healed before each test so a
  fault one test leaves behind never leaks into the next;
* ``client`` -- an aiohttp client to the edge that counts every request and every unexpected
  answer by kind into ``STATS``;
* ``pii`` -- every e-mail and document a test sends is registered here; at the end of the
  session the edge's and the stores' log files are scanned for them (asserted zero in
  ``test_zz_logs.py`` and shown in the summary);
* ``load`` -- how much load to run: small by default, more with ``--long``.

The summary (faults tried, requests sent, errors by kind, measured figures such as latencies
under a fault, cross-region requests, PII found in logs) is printed by
``pytest_terminal_summary`` at the end of the run.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from yarl import URL

from residency_dev import dynamodb_local

from .stack import ReliabilityStack


@dataclass
class Stats:
    faults: list[str] = field(default_factory=list)
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    cross_region: int = 0
    cross_region_checks: int = 0
    pii_values: set[str] = field(default_factory=set)
    pii_found: list[str] | None = None  # None: logs not scanned yet
    figures: dict[str, str] = field(default_factory=dict)  # measured figures, by name

    def fault(self, name: str) -> None:
        self.faults.append(name)

    def figure(self, name: str, value: str) -> None:
        self.figures[name] = value


STATS = Stats()


@dataclass(frozen=True)
class Load:
    long: bool
    workers: int
    seconds: float
    patches: int
    creates: int
    max_examples: int
    max_time: int


@pytest.fixture(scope="session")
def load(pytestconfig: pytest.Config) -> Load:
    if pytestconfig.getoption("--long"):
        return Load(
            True, workers=16, seconds=6.0, patches=100, creates=60, max_examples=60, max_time=600
        )
    return Load(False, workers=6, seconds=1.5, patches=50, creates=20, max_examples=5, max_time=45)


@pytest.fixture(scope="session")
def _session_stack() -> Iterator[ReliabilityStack]:
    workdir = Path(tempfile.mkdtemp(prefix="reliability-stack-"))
    stack = ReliabilityStack(
        workdir=workdir, edge_port=dynamodb_local.free_port(), admin_port=dynamodb_local.free_port()
    )
    try:
        stack.up()
    except BaseException:
        stack.down()
        raise
    try:
        yield stack
    finally:
        STATS.pii_found = scan_logs(stack)
        stack.down()


@pytest.fixture
def stack(_session_stack: ReliabilityStack) -> ReliabilityStack:
    _session_stack.heal()
    return _session_stack


def scan_logs(stack: ReliabilityStack) -> list[str]:
    """Every (log file, PII value) pair where a test's e-mail or document shows up."""
    found = []
    texts = {p.name: p.read_text(errors="replace") for p in stack.log_files()}
    for value in sorted(STATS.pii_values):
        spellings = {value, quote(value, safe=""), quote(value, safe="@"), value.lower()}
        for name, text in texts.items():
            if any(s in text for s in spellings):
                found.append(f"{name}: {value[:3]}...")
    return found


class Pii:
    """Makes unique test e-mails and documents and remembers them for the log scan."""

    def email(self) -> str:
        value = f"rel.{uuid.uuid4().hex[:12]}@example.test"
        STATS.pii_values.add(value)
        return value

    def document(self) -> str:
        value = str(uuid.uuid4().int)[:11]
        STATS.pii_values.add(value)
        return value

    def profile(self, **extra: Any) -> dict[str, Any]:
        return {
            "firstName": "Rel",
            "lastName": "Iability",
            "email": self.email(),
            "document": self.document(),
            "documentType": "CPF",
            **extra,
        }


@pytest.fixture
def pii() -> Pii:
    return Pii()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any
    seconds: float


class Client:
    """The edge, seen by a client: every request is counted; errors are counted by kind."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def call(
        self,
        method: str,
        target: str,
        *,
        headers: dict[str, str] | None = None,
        json: Any = None,
        data: bytes | None = None,
        expect: tuple[int, ...] = (),
        timeout: float = 15.0,
    ) -> Answer:
        STATS.requests += 1
        t0 = time.monotonic()
        try:
            async with self.session.request(
                method,
                URL(self.base + target, encoded=True),
                headers=headers,
                json=json,
                data=data,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                raw = await resp.read()
                try:
                    body: Any = await resp.json(content_type=None) if raw else None
                except ValueError:
                    body = raw
                answer = Answer(resp.status, dict(resp.headers), body, time.monotonic() - t0)
        except (aiohttp.ClientError, TimeoutError) as exc:
            STATS.errors[f"client:{type(exc).__name__}"] += 1
            raise
        if answer.status >= 400:
            code = answer.body.get("error") if isinstance(answer.body, dict) else "?"
            kind = "expected" if answer.status in expect else "unexpected"
            STATS.errors[f"{kind} {answer.status} {code}"] += 1
        return answer


@pytest.fixture
async def client(stack: ReliabilityStack) -> AsyncIterator[Client]:
    connector = aiohttp.TCPConnector(limit=64, force_close=False)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        yield Client(session, stack.edge_url)


async def poll(what: str, pred: Any, timeout: float, interval: float = 0.05) -> None:
    """Async poll with a deadline (never sleep as synchronisation)."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout}s")
        await asyncio.sleep(interval)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not (STATS.requests or STATS.faults):
        return
    tr = terminalreporter
    tr.section("reliability summary")
    tr.write_line(f"faults tried ({len(STATS.faults)}): " + ", ".join(STATS.faults))
    tr.write_line(f"requests sent through the edge: {STATS.requests}")
    if STATS.errors:
        tr.write_line("errors by kind:")
        for kind, n in sorted(STATS.errors.items()):
            tr.write_line(f"  {n:6d}  {kind}")
    else:
        tr.write_line("errors by kind: none")
    if STATS.figures:
        tr.write_line("figures:")
        for name, value in STATS.figures.items():
            tr.write_line(f"  {name}: {value}")
    tr.write_line(
        f"cross-region requests (stores' own counters, {STATS.cross_region_checks} checks): "
        f"{STATS.cross_region}"
    )
    if STATS.pii_found is None:
        tr.write_line("PII found in logs: not scanned")
    else:
        tr.write_line(
            f"PII found in logs ({len(STATS.pii_values)} values searched): "
            f"{len(STATS.pii_found)}" + (f" {STATS.pii_found[:5]}" if STATS.pii_found else "")
        )
