"""Shared pieces of the user-token tests (``test_user_token_*``): real RS256/ES256 tokens made in
the test (``tokens.TestIssuer``), checked by the verifier alone or by the real edge in front of
fake stores of both regions.

The fixtures are declared under their own names (``idp``, ``edge``) and imported by the test
modules as ``idp_fixture`` and ``edge_fixture``, so a test's ``idp`` or ``edge`` argument does
not shadow an import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_router.admin import create_admin_app
from edge_router.app import create_app
from edge_router.config import EdgeSettings, IssuerSettings
from edge_router.errors import EdgeError
from edge_router.user_token import TokenVerifier

from .conftest import EU_KEY, US_KEY, FakeRegistry, FakeStore, make_settings
from .test_listener import EdgeTestServer
from .tokens import TestIssuer

ISS_X = "https://id.example"
USER = "8f1c7a52-2f4e-4c1e-9d43-5b3c0c1d2e3f"
EMAIL = "ops.person@acme.example"


def settings_for(*issuers: IssuerSettings, **over: Any) -> EdgeSettings:
    over.setdefault("jwks_refresh_min_s", 0.0)
    return make_settings({"eu-west-1": ["http://127.0.0.1:1"]}, token_issuers=issuers, **over)


@pytest.fixture(name="idp")
def idp_fixture(tmp_path: Path) -> TestIssuer:
    issuer = TestIssuer(tmp_path / "jwks.json")
    issuer.add_key("rsa-1", "RS256")
    issuer.add_key("ec-1", "ES256")
    return issuer


async def started(settings: EdgeSettings, **kw: Any) -> TokenVerifier:
    v = TokenVerifier(settings, **kw)
    await v.start()
    return v


async def refusal(v: TokenVerifier, token: str) -> tuple[int, str, str]:
    with pytest.raises(EdgeError) as info:
        await v.verify(token)
    exc = info.value
    return exc.status, exc.code, exc.reason


@pytest.fixture(name="edge")
def edge_fixture(aiohttp_server, aiohttp_client, registry: FakeRegistry, idp: TestIssuer):  # type: ignore[no-untyped-def]
    async def make(front: str = "web", **over: Any) -> tuple[Any, Any, dict[str, FakeStore]]:
        """``front``: "web" (``web_front``) or "wire" (the production listener)."""
        registry.add("acme", "eu-west-1", [EU_KEY])
        registry.add("bolt", "us-east-1", [US_KEY])
        registry.grant("acme", EMAIL, frozenset({"read", "unmask"}))
        registry.grant("bolt", EMAIL, frozenset({"read", "write"}))
        stores, urls = {}, {}
        for region in ("eu-west-1", "us-east-1"):
            stores[region] = FakeStore(region, f"{region}-0")
            server = await aiohttp_server(stores[region].app())
            urls[region] = [f"http://127.0.0.1:{server.port}"]
        settings = make_settings(urls, token_issuers=(idp.settings(),), **over)
        app = create_app(settings, registry_factory=registry.factory())
        client = await aiohttp_client(app if front == "web" else EdgeTestServer(app))
        return client, await aiohttp_client(create_admin_app(app)), stores

    return make
