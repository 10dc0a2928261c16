"""User tokens (``VtexIdclientAutCookie``), where the token is found and what crosses: the
header, then the account's cookie, then the plain cookie (an empty one counts as absent); token
cookies are cut from the ``Cookie`` header however cookies are joined, others kept, and through
the edge no part of a token cookie reaches a store.
"""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from edge_router.headers import strip_token_cookies
from edge_router.user_token import find_token

from .conftest import EU_KEY, P
from .tokens import TestIssuer
from .user_token import (  # noqa: F401  (edge_fixture, idp_fixture: the edge and idp fixtures)
    EMAIL,
    USER,
    edge_fixture,
    idp_fixture,
)


def _headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_find_token_header_then_account_cookie_then_cookie() -> None:
    assert find_token(_headers(("VtexIdclientAutCookie", "h")), "acme") == "h"
    assert find_token(_headers(("vtexidclientautcookie", "h")), "acme") == "h"
    both = ("Cookie", "a=1; VtexIdclientAutCookie=g; VtexIdclientAutCookie_acme=s; b=2")
    assert find_token(_headers(both), "acme") == "s"
    assert find_token(_headers(both), "bolt") == "g"
    assert find_token(_headers(("Cookie", "VtexIdclientAutCookie_bolt=x")), "acme") is None
    assert (
        find_token(_headers(("Cookie", "a=1"), ("Cookie", "VtexIdclientAutCookie=g")), "x") == "g"
    )
    assert find_token(_headers(("VtexIdclientAutCookie", "h"), both), "acme") == "h"
    assert find_token(_headers(("Cookie", "a=1")), "acme") is None


def test_token_cookies_are_stripped_others_kept() -> None:
    assert strip_token_cookies("a=1; VtexIdclientAutCookie=t; b=2") == "a=1; b=2"
    assert strip_token_cookies("VtexIdclientAutCookie_acme=t") == ""
    assert strip_token_cookies("a=1;b=2") == "a=1;b=2"


def test_token_cookies_are_stripped_however_cookies_are_joined() -> None:
    """Cookies joined with ", " (a proxy merging two Cookie headers) hid the token from a
    split on ";" only: it was forwarded whole."""
    cases = {
        "a=1, VtexIdclientAutCookie=SECRET": "a=1",
        "a=1,VtexIdclientAutCookie=SECRET": "a=1",
        "VtexIdclientAutCookie=SECRET, a=1": "a=1",
        "a=1, VtexIdclientAutCookie_acme=SECRET; b=2": "a=1; b=2",
        "a=1; b=2, VtexIdclientAutCookie=SECRET,c=3": "a=1; b=2,c=3",
        "a=x,y; VtexIdclientAutCookie=SECRET": "a=x,y",
        "x=1 VtexIdclientAutCookie=SECRET": "",  # not separated at all: nothing kept
        " vtexidclientautcookie=SECRET ,": "",
        "a=1, b=2": "a=1, b=2",  # nothing to cut: left as it came
    }
    for cookie, kept in cases.items():
        assert strip_token_cookies(cookie) == kept, cookie
    # find_token reads the same cookies as the ones cut out
    assert find_token(_headers(("Cookie", "a=1, VtexIdclientAutCookie=g")), "acme") == "g"
    assert find_token(_headers(("Cookie", "a=1,VtexIdclientAutCookie_acme=s")), "acme") == "s"
    # Whatever the separator, no part of a token cookie is left.
    for sep in (";", ",", ", ", " ,", "\t,", ";,", ",;"):
        got = strip_token_cookies(f"a=1{sep}VtexIdclientAutCookie=SECRET{sep}b=2")
        assert "SECRET" not in got and "vtexidclientautcookie" not in got.lower(), sep
        assert "a=1" in got and "b=2" in got, sep


async def test_joined_token_cookies_never_reach_the_store(edge, idp: TestIssuer) -> None:  # type: ignore[no-untyped-def]
    client, _admin, stores = await edge()
    token = idp.mint("rsa-1", idp.claims("acme", USER, EMAIL))
    deciding = [
        {"X-VTEX-API-AppKey": EU_KEY.app_key, "X-VTEX-API-AppToken": EU_KEY.token},
        {"VtexIdclientAutCookie": token},
    ]
    for headers in deciding:
        for cookie in (
            "a=1, VtexIdclientAutCookie=SECRET",
            "a=1,VtexIdclientAutCookie_acme=SECRET",
            "VtexIdclientAutCookie_acme=SECRET, a=1",
        ):
            resp = await client.get(
                URL(f"{P}/profiles/p1?an=acme", encoded=True),
                headers={**headers, "Cookie": cookie},
            )
            assert resp.status == 200, await resp.text()
            seen = stores["eu-west-1"].seen[-1]
            assert seen.headers.get("cookie") == ["a=1"], cookie
            assert not any("SECRET" in v for vs in seen.headers.values() for v in vs)


def test_an_empty_token_is_no_token() -> None:
    """An empty ``VtexIdclientAutCookie_{account}`` cookie blocked the fallback to the plain
    cookie (401 missing_credentials) while an empty header fell back: empty = absent."""
    for headers in (
        [("Cookie", "VtexIdclientAutCookie_acme=; VtexIdclientAutCookie=g")],
        [("Cookie", 'VtexIdclientAutCookie_acme=""; VtexIdclientAutCookie=g')],
        [("Cookie", "VtexIdclientAutCookie=g; VtexIdclientAutCookie_acme= ")],
        [("Cookie", "VtexIdclientAutCookie_acme="), ("Cookie", "VtexIdclientAutCookie=g")],
        [("VtexIdclientAutCookie", ""), ("Cookie", "VtexIdclientAutCookie=g")],
        [("VtexIdclientAutCookie", "  "), ("Cookie", "VtexIdclientAutCookie=g")],
    ):
        assert find_token(_headers(*headers), "acme") == "g", headers
    for headers in (
        [("VtexIdclientAutCookie", " ")],
        [("Cookie", "VtexIdclientAutCookie_acme=; VtexIdclientAutCookie=")],
        [("Cookie", 'VtexIdclientAutCookie=""')],
    ):
        assert find_token(_headers(*headers), "acme") is None, headers


async def test_an_empty_account_cookie_falls_back_through_the_edge(edge, idp: TestIssuer) -> None:  # type: ignore[no-untyped-def]
    client, _admin, stores = await edge()
    token = idp.mint("rsa-1", idp.claims("acme", USER, EMAIL))
    resp = await client.get(
        URL(f"{P}/profiles/p1?an=acme", encoded=True),
        headers={"Cookie": f"VtexIdclientAutCookie_acme=; VtexIdclientAutCookie={token}"},
    )
    assert resp.status == 200, await resp.text()
    assert stores["eu-west-1"].seen[-1].assertion.principal == f"user:{USER}"  # type: ignore[union-attr]
    resp = await client.get(
        URL(f"{P}/profiles/p1?an=acme", encoded=True),
        headers={"Cookie": "VtexIdclientAutCookie_acme=; VtexIdclientAutCookie="},
    )
    assert resp.status == 401 and (await resp.json())["error"] == "missing_credentials"
