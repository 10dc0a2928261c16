"""Edge test helpers: settings builders, a fake registry, fake upstream stores, and the
component tier's stack (``build``: the real edge in front of fake stores of both regions).

Fake upstreams verify the edge's assertion with ``residency_contract.assertion.verify`` (the same
check the real store makes) and echo what they received, so tests can assert on exactly what
crossed the edge. Health probes (``/readyz``) are recorded apart from proxied requests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from edge_router.admin import create_admin_app
from edge_router.app import create_app
from edge_router.config import EdgeSettings, InstanceSettings, RegionSettings
from edge_router.errors import RegistryError
from edge_router.registry import AccountRecord, ApiKey, KeyOwner, UserGrant, token_hash, user_hash
from residency_contract import assertion as pa
from residency_contract.protocol import ASSERTION_HEADER
from residency_dev.dynamodb_local import free_port

SECRETS = {"eu-west-1": b"test-secret-eu-west-1-0000", "us-east-1": b"test-secret-us-east-1-0000"}


def make_settings(regions: dict[str, list[str]], **over: Any) -> EdgeSettings:
    regs = tuple(
        RegionSettings(
            name=name,
            instances=tuple(
                InstanceSettings(name=f"{name}-{i}", url=url) for i, url in enumerate(urls)
            ),
            assertion_secret=SECRETS[name],
            table=f"profiles-{name}",
        )
        for name, urls in regions.items()
    )
    args: dict[str, Any] = dict(
        regions=regs,
        host_suffixes=("localhost", "vtexcommercestable.com.br"),
        health_interval_s=30.0,
        health_timeout_s=2.0,  # a first probe on a loaded 2-core machine can take >0.5 s
        connect_timeout_s=0.5,
        total_timeout_s=5.0,
        read_timeout_s=5.0,
        access_log=False,
    )
    args.update(over)
    s = EdgeSettings(**args)
    s.validate()
    return s


async def serve_on_free_port(app: web.Application) -> tuple[web.AppRunner, int]:
    """``app`` served on 127.0.0.1 at a port the kernel picks; the runner (to clean up) and
    the port."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


@contextmanager
def blackhole(port: int) -> Iterator[None]:
    """A listener on ``port`` whose accept queue is full: the kernel drops further SYNs, so a
    connect there times out (an unreachable host, or what a stalled edge loop looks like)."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(0)
        filler.connect(("127.0.0.1", port))  # the one place of the queue, never accepted
        yield


@dataclass
class Key:
    app_key: str
    token: str
    roles: frozenset[str] = frozenset({"read", "write"})


class FakeRegistry:
    """In-memory registry reader with call counting, a gate and a failure switch."""

    def __init__(self) -> None:
        self.accounts: dict[str, AccountRecord] = {}
        self.owners: dict[str, KeyOwner] = {}
        self.calls = 0
        self.fail = False
        self.gate: asyncio.Event | None = None

    def add(self, name: str, region: str, keys: list[Key] = (), status: str = "active") -> None:  # type: ignore[assignment]
        api = {
            k.app_key: ApiKey(k.app_key, token_hash(k.token), frozenset(k.roles), True)
            for k in keys
        }
        self.accounts[name] = AccountRecord(name, region, status, api)
        for k in keys:
            self.owners[k.app_key] = KeyOwner(name, token_hash(k.token), True)

    def grant(self, name: str, email: str, roles: frozenset[str], active: bool = True) -> None:
        """A user grant (``registry grant-user``) on an account already added."""
        rec = self.accounts[name]
        users = {**rec.users, user_hash(email): UserGrant(frozenset(roles), active)}
        self.accounts[name] = dataclasses.replace(rec, users=users)

    async def get_account(self, name: str) -> AccountRecord | None:
        self.calls += 1
        if self.gate is not None:
            await asyncio.wait_for(self.gate.wait(), 5)
        if self.fail:
            raise RegistryError("registry down (test)")
        return self.accounts.get(name)

    async def get_key_owner(self, app_key: str) -> KeyOwner | None:
        if self.fail:
            raise RegistryError("registry down (test)")
        return self.owners.get(app_key)

    def factory(self) -> Callable[[EdgeSettings], Any]:
        @asynccontextmanager
        async def make(_settings: EdgeSettings):  # type: ignore[no-untyped-def]
            yield self

        return make


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: dict[str, list[str]]
    body: bytes
    assertion: pa.Assertion | None
    assertion_error: str | None


@dataclass
class FakeStore:
    region: str
    name: str
    seen: list[Seen] = field(default_factory=list)
    probes: int = 0
    ready: bool = True
    delay: float = 0.0
    status: int = 200
    gzip_body: bool = False
    fail_assertion_with_401: bool = True
    error: str | None = None  # answer {"error": error} (with ``status``) instead of the echo
    retry_after: str | None = None  # a Retry-After header on every data answer

    def app(self) -> web.Application:
        app = web.Application(handler_args={"auto_decompress": False})

        async def readyz(_r: web.Request) -> web.Response:
            self.probes += 1
            return web.Response(status=200 if self.ready else 503)

        async def any_(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            headers: dict[str, list[str]] = {}
            for k, v in request.headers.items():
                headers.setdefault(k.lower(), []).append(v)
            asrt, err = None, None
            try:
                asrt = pa.verify(
                    request.headers.get(ASSERTION_HEADER),
                    key=SECRETS[self.region],
                    region=self.region,
                    method=request.method,
                    target=request.raw_path,
                    max_age_s=30,
                )
            except pa.AssertionError_ as exc:
                err = exc.code
            self.seen.append(Seen(request.method, request.raw_path, headers, body, asrt, err))
            if err and self.fail_assertion_with_401:
                return web.json_response({"error": err}, status=401)
            if self.delay:
                await asyncio.sleep(self.delay)
            payload = json.dumps(
                {"instance": self.name, "raw_path": request.raw_path, "body_len": len(body)}
            ).encode()
            if self.error is not None:
                payload = json.dumps({"error": self.error, "message": "test"}).encode()
            resp_headers = {
                "Content-Type": "application/json",
                "X-Store-Instance": self.name,
                "Connection": "keep-alive, X-Hop",
                "X-Hop": "1",
                "Keep-Alive": "timeout=5",
            }
            if self.retry_after is not None:
                resp_headers["Retry-After"] = self.retry_after
            if self.gzip_body:
                payload = gzip.compress(payload)
                resp_headers["Content-Encoding"] = "gzip"
            return web.Response(status=self.status, body=payload, headers=resp_headers)

        app.router.add_get("/readyz", readyz)
        app.router.add_route("*", "/{tail:.*}", any_)
        return app

    @property
    def proxied(self) -> int:
        return len(self.seen)


async def wait_until(pred: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll a condition with a bounded deadline (never sleep as synchronisation)."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


def count_calls(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> list[int]:
    """Wrap ``cls.name`` (a method taking only self) so each call appends to the list."""
    calls: list[int] = []
    original = getattr(cls, name)

    def counting(self: Any) -> None:
        calls.append(1)
        original(self)

    monkeypatch.setattr(cls, name, counting)
    return calls


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


# -- the component tier: fake stores behind the real edge (``test_component_*``) ----------------

P = "/api/storage/profile-system"
EU_KEY = Key("vtexappkey-acme-A1", "token-acme-0123456789", frozenset({"read", "write"}))
US_KEY = Key("vtexappkey-bolt-B1", "token-bolt-0123456789", frozenset({"read"}))


def auth(key: Key) -> dict[str, str]:
    return {"X-VTEX-API-AppKey": key.app_key, "X-VTEX-API-AppToken": key.token}


@dataclass
class Stack:
    edge: Any  # TestClient for the public app
    admin: Any  # TestClient for the admin app
    app: web.Application
    stores: dict[str, list[FakeStore]]
    servers: dict[str, list[Any]]
    registry: FakeRegistry

    async def get(self, path: str, key: Key | None = EU_KEY, **kw: Any) -> aiohttp.ClientResponse:
        headers = {**(auth(key) if key else {}), **kw.pop("headers", {})}
        return await self.edge.get(URL(path, encoded=True), headers=headers, **kw)

    async def metrics(self) -> str:
        resp = await self.admin.get("/metrics")
        return await resp.text()


Layout = dict[str, list[str | FakeStore]]


async def serve_layout(
    aiohttp_server: Any, registry: FakeRegistry, layout: Layout | None
) -> tuple[dict[str, list[FakeStore]], dict[str, list[Any]], dict[str, list[str]]]:
    """The component stacks' stores: the two demo accounts registered, and per region each
    item of ``layout`` served (``"store"`` or a ``FakeStore``), left dead (``"dead"``) or
    taken as given (an ``http://`` URL). The stores, their servers, the instance URLs."""
    layout = layout or {"eu-west-1": ["store", "store"], "us-east-1": ["store"]}
    registry.add("acme", "eu-west-1", [EU_KEY])
    registry.add("bolt", "us-east-1", [US_KEY])
    stores: dict[str, list[FakeStore]] = {}
    servers: dict[str, list[Any]] = {}
    urls: dict[str, list[str]] = {}
    for region, items in layout.items():
        for i, item in enumerate(items):
            if item == "dead" or (isinstance(item, str) and item.startswith("http://")):
                urls.setdefault(region, []).append(dead_url() if item == "dead" else item)
                continue
            store = item if isinstance(item, FakeStore) else FakeStore(region, f"{region}-{i}")
            server = await aiohttp_server(store.app())
            stores.setdefault(region, []).append(store)
            servers.setdefault(region, []).append(server)
            urls.setdefault(region, []).append(f"http://127.0.0.1:{server.port}")
    return stores, servers, urls


@pytest.fixture
def build(aiohttp_server, aiohttp_client, registry: FakeRegistry):  # type: ignore[no-untyped-def]
    """``make(layout, **settings)``: a ``Stack``, the real edge in front of fake stores laid out
    per region (``serve_layout``). ``test_listener`` overrides it to serve the edge through the
    production listener."""

    async def make(layout: Layout | None = None, **over: Any) -> Stack:
        stores, servers, urls = await serve_layout(aiohttp_server, registry, layout)
        app = create_app(make_settings(urls, **over), registry_factory=registry.factory())
        edge = await aiohttp_client(app, auto_decompress=False)
        admin = await aiohttp_client(create_admin_app(app))
        return Stack(edge, admin, app, stores, servers, registry)

    return make
