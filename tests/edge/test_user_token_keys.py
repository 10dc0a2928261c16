"""User tokens (``VtexIdclientAutCookie``), the issuer's JWK set: keys rotated in and out (an
unknown kid re-reads the set, at most once per interval; a set too old is re-read in the
background), a missing file stops the start, and a set fetched from a URL is bounded by its
timeout and survives a provider that hangs or is down.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from edge_router.config import ConfigError, IssuerSettings
from edge_router.user_token import TokenVerifier

from .tokens import TestIssuer
from .user_token import (  # noqa: F401  (idp_fixture: the idp fixture)
    EMAIL,
    USER,
    idp_fixture,
    refusal,
    settings_for,
    started,
)


async def test_key_rotation_new_kid_accepted_removed_kid_refused(idp: TestIssuer) -> None:
    v = await started(settings_for(idp.settings()))
    old = idp.mint("rsa-1", idp.claims("acme", USER, EMAIL))
    assert (await v.verify(old)).user_id == USER  # cached from now on
    # The provider publishes a new key and signs with it: the unknown kid re-reads the set.
    idp.add_key("rsa-2", "RS256")
    new = idp.mint("rsa-2", idp.claims("acme", USER, EMAIL))
    assert (await v.verify(new)).user_id == USER
    # The provider drops the old key; the next unknown kid re-reads the set, which forgets
    # every cached verification: the old key's token is refused although it was cached.
    idp.remove_key("rsa-1")
    idp.add_key("ec-2", "ES256")
    assert (await v.verify(idp.mint("ec-2", idp.claims("acme", USER, EMAIL)))).user_id == USER
    assert await refusal(v, old) == (401, "bad_signature", "unknown_key")
    assert (await v.verify(new)).user_id == USER
    await v.close()


async def test_unknown_kids_re_read_the_set_at_most_once_per_interval(idp: TestIssuer) -> None:
    clock = [1000.0]
    v = TokenVerifier(settings_for(idp.settings(), jwks_refresh_min_s=60, jwks_max_age_s=3600))
    await v.start()
    reads = 0
    ks = v.keysets[idp.iss]
    ks._clock = lambda: clock[0]  # type: ignore[method-assign]
    ks.loaded_at = ks._last_attempt = clock[0]
    original = ks.load

    async def counting() -> None:
        nonlocal reads
        reads += 1
        await original()

    ks.load = counting  # type: ignore[method-assign]
    for i in range(5):
        token = idp.mint("rsa-1", idp.claims("acme", USER, EMAIL), kid=f"unknown-{i}")
        assert (await refusal(v, token))[1] == "bad_signature"
    assert reads == 0  # the start's read was just now: no re-read within the interval
    clock[0] += 61
    for i in range(3):
        token = idp.mint("rsa-1", idp.claims("acme", USER, EMAIL), kid=f"later-{i}")
        assert (await refusal(v, token))[1] == "bad_signature"
    assert reads == 1  # one re-read, then the interval again
    await v.close()


async def test_a_removed_key_is_refused_once_the_set_is_old(idp: TestIssuer) -> None:
    """Without any unknown kid: a set older than jwks_max_age_s is re-read in the background."""
    clock = [1000.0]
    s = settings_for(idp.settings(), jwks_max_age_s=60, token_cache_ttl_s=3600)
    v = TokenVerifier(s)
    await v.start()
    ks = v.keysets[idp.iss]
    ks._clock = lambda: clock[0]  # type: ignore[method-assign]
    # Both instants on the test's clock: the start's read stamped them with the real monotonic
    # clock, whose value (the host's uptime) must not decide the test.
    ks.loaded_at = ks._last_attempt = clock[0]
    token = idp.mint("rsa-1", idp.claims("acme", USER, EMAIL))
    assert (await v.verify(token)).user_id == USER
    idp.remove_key("rsa-1")
    clock[0] += 61
    other = idp.mint("ec-1", idp.claims("acme", USER, "b@acme.example"))
    assert (await v.verify(other)).user_id == USER  # old set still used; re-read started
    assert ks._background is not None
    await ks._background
    assert await refusal(v, token) == (401, "bad_signature", "unknown_key")
    await v.close()


async def test_a_missing_jwks_file_stops_the_start(tmp_path: Path) -> None:
    issuer = IssuerSettings("x", "https://x", ("a",), jwks_file=str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match=r"token_issuers\.x\.jwks_file"):
        await started(settings_for(issuer))


async def test_jwks_url_fetched_with_a_bound_and_rotated(aiohttp_server, idp: TestIssuer) -> None:  # type: ignore[no-untyped-def]
    from aiohttp import web

    state = {"hang": False, "fetches": 0}

    async def jwks(_request: web.Request) -> web.Response:
        state["fetches"] += 1
        if state["hang"]:
            await asyncio.sleep(30)
        return web.Response(body=idp.path.read_bytes(), content_type="application/json")

    app = web.Application()
    app.router.add_get("/jwks.json", jwks)
    server = await aiohttp_server(app)
    url = f"http://127.0.0.1:{server.port}/jwks.json"
    issuer = IssuerSettings("url-idp", idp.iss, (idp.aud,), jwks_url=url)
    # A fetch bound a loaded machine cannot miss where the fetches must succeed (a 0.3 s one
    # could time out the start's fetch: a third fetch, a refused token).
    v = await started(settings_for(issuer, jwks_timeout_s=10.0))
    assert (await v.verify(idp.mint("rsa-1", idp.claims("acme", USER, EMAIL)))).user_id == USER
    idp.add_key("rsa-2", "RS256")
    assert (await v.verify(idp.mint("rsa-2", idp.claims("acme", USER, EMAIL)))).user_id == USER
    assert state["fetches"] == 2
    # a provider that does not answer: known keys keep working (no fetch for a known kid)
    state["hang"] = True
    idp.add_key("rsa-3", "RS256")
    assert (await v.verify(idp.mint("rsa-1", idp.claims("acme", USER, "c@acme.example")))).user_id
    assert state["fetches"] == 2
    await v.close()
    # and, with a short fetch bound, an unknown kid is refused within it, not after the hang
    short = await started(settings_for(issuer, jwks_timeout_s=0.3))  # its own fetch hangs too
    t0 = time.monotonic()
    token = idp.mint("rsa-3", idp.claims("acme", USER, EMAIL))
    assert await refusal(short, token) == (401, "bad_signature", "unknown_key")
    assert time.monotonic() - t0 < 10  # the hang is 30 s
    await short.close()


async def test_jwks_url_down_at_start_is_not_fatal(idp: TestIssuer) -> None:
    from residency_dev.dynamodb_local import free_port

    url = f"http://127.0.0.1:{free_port()}/jwks.json"
    v = await started(settings_for(IssuerSettings("down", idp.iss, (idp.aud,), jwks_url=url)))
    token = idp.mint("rsa-1", idp.claims("acme", USER, EMAIL))
    assert await refusal(v, token) == (401, "bad_signature", "unknown_key")
    await v.close()
