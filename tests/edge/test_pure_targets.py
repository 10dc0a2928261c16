"""Tier (a), pure decision tables (no I/O, no servers): what a request target names -- the
account (from the Host or ``an``), the route template it matches, the path policy that refuses
traversal and foreign paths, and the origin form of an absolute target.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from yarl import URL

from edge_router import api_paths
from edge_router.errors import BadRequest, NotFound
from edge_router.resolve import AccountResolver
from edge_router.wire import origin_form

RESOLVER = AccountResolver(["vtexcommercestable.com.br", "localhost"])


@pytest.mark.parametrize(
    ("host", "an", "expected"),
    [
        ("acme.vtexcommercestable.com.br", [], "acme"),
        ("ACME.vtexcommercestable.com.br:443", [], "acme"),
        ("acme.localhost:8080", [], "acme"),
        ("acme.localhost.", [], "acme"),
        ("api.vtex.com", ["acme"], "acme"),
        ("127.0.0.1:8080", ["acme-2"], "acme-2"),
        ("localhost:8080", ["acme"], "acme"),
        ("acme.localhost", ["acme"], "acme"),
        (None, ["a"], "a"),
        ("[::1]:8080", ["acme"], "acme"),
        ("", ["acme"], "acme"),  # an empty Host: a valid, empty authority (RFC 9112 §3.2)
    ],
)
def test_account_resolution_accepts(host: str | None, an: list[str], expected: str) -> None:
    assert RESOLVER.resolve(host, an) == expected


@pytest.mark.parametrize(
    ("host", "an", "code"),
    [
        ("acme.localhost", ["other"], "ambiguous_account"),
        ("127.0.0.1", ["a", "b"], "ambiguous_account"),
        ("127.0.0.1", [], "missing_account"),
        (None, [], "missing_account"),
        ("localhost", [], "missing_account"),
        ("127.0.0.1", ["Acme"], "invalid_account"),
        ("127.0.0.1", ["-acme"], "invalid_account"),
        ("127.0.0.1", [""], "invalid_account"),
        ("127.0.0.1", ["a" * 64], "invalid_account"),
        ("127.0.0.1", ["ac_me"], "invalid_account"),
        ("a.b.localhost", [], "invalid_account"),
        ("-x.localhost", [], "invalid_account"),
        ("bad host", ["acme"], "invalid_host"),
        ("user@acme.localhost", [], "invalid_host"),
        ("acme.localhost/x", [], "invalid_host"),
        ("acme.localhost:80x", [], "invalid_host"),
        ("\u00e9.localhost", ["acme"], "invalid_host"),
    ],
)
def test_account_resolution_refuses(host: str | None, an: list[str], code: str) -> None:
    with pytest.raises(BadRequest) as err:
        RESOLVER.resolve(host, an)
    assert err.value.code == code
    assert err.value.status == 400


P = "/api/storage/profile-system"


@pytest.mark.parametrize(
    ("target", "template"),
    [
        (f"{P}/profiles", f"{P}/profiles"),
        (f"{P}/profiles?an=x", f"{P}/profiles"),
        (f"{P}/profiles/jane%40example.com?alternativeKey=email", f"{P}/profiles/{{profileId}}"),
        (f"{P}/profiles/abc/unmask?reason=x", f"{P}/profiles/{{profileId}}/unmask"),
        (f"{P}/profiles/abc/addresses/unmask", f"{P}/profiles/{{profileId}}/addresses/unmask"),
        (
            f"{P}/profiles/a/addresses/b/versions/c/unmask",
            f"{P}/profiles/{{profileId}}/addresses/{{addressId}}/versions/{{addressVersionId}}/unmask",
        ),
        (f"{P}/prospects/unmask", f"{P}/prospects/unmask"),
        (f"{P}/prospects/p1", f"{P}/prospects/{{prospectId}}"),
        (f"{P}/schemas/profileSystem/custom", f"{P}/schemas/profileSystem/custom"),
        ("/api/user-rights/createAndProcessDeleteUserData?an=x", api_paths.TEMPLATES[-1]),
        (f"{P}/unknown/thing", "other"),
        (f"{P}/profiles//unmask", "other"),
        (f"{P}/profiles/a/b/c/d/e/f/g", "other"),
    ],
)
def test_route_templates(target: str, template: str) -> None:
    table = api_paths.RouteTable()
    assert table.match(api_paths.split_target(target)) == template


@pytest.mark.parametrize(
    ("target", "exc", "code"),
    [
        (f"{P}/../admin", BadRequest, "invalid_path"),
        (f"{P}/profiles/%2e%2e/x", BadRequest, "invalid_path"),
        (f"{P}/profiles/%2E%2e", BadRequest, "invalid_path"),
        (f"{P}/profiles/.%2e/x", BadRequest, "invalid_path"),
        (f"{P}/./profiles", BadRequest, "invalid_path"),
        (f"{P}/profiles/a%2Fb", BadRequest, "invalid_path"),
        (f"{P}/profiles/a%5cb", BadRequest, "invalid_path"),
        (f"{P}/profiles/a\\b", BadRequest, "invalid_path"),
        ("http://evil/api/user-rights/x", BadRequest, "invalid_path"),
        ("//api/user-rights/x", BadRequest, "invalid_path"),
        (f"{P}/profiles#x", BadRequest, "invalid_path"),
        (f"{P}/profiles?an=acme#x", BadRequest, "invalid_path"),  # no fragment in a query either
        ("*", BadRequest, "invalid_path"),
        ("api.example.com:443", BadRequest, "invalid_path"),
        ("/api/other/profiles", NotFound, "not_found"),
        ("/", NotFound, "not_found"),
        ("/api/storage/profile-systemX/profiles", NotFound, "not_found"),
        ("/api/storage/profile-system", NotFound, "not_found"),
    ],
)
def test_path_policy_refuses(target: str, exc: type, code: str) -> None:
    with pytest.raises(exc) as err:
        api_paths.split_target(target)
    assert err.value.code == code


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (f"{P}/profiles?an=x", (f"{P}/profiles?an=x", None)),
        (f"http://acme.localhost{P}/profiles?an=x", (f"{P}/profiles?an=x", "acme.localhost")),
        ("http://acme.localhost:8080", ("/", "acme.localhost:8080")),
        ("api.example.com:443", ("api.example.com:443", None)),  # CONNECT: not absolute form
        ("*", ("*", None)),
    ],
)
def test_origin_form(target: str, expected: tuple[str, str | None]) -> None:
    assert origin_form(target, URL(target, encoded=True)) == expected


def test_dots_inside_a_segment_are_fine() -> None:
    assert api_paths.split_target(f"{P}/profiles/jane.doe..x") == f"{P}/profiles/jane.doe..x"


def test_route_table_matches_the_specs() -> None:
    spec_dir = Path(__file__).resolve().parents[3] / "shared" / "spec"  # ../shared beside the repo
    if not spec_dir.is_dir():
        pytest.skip("spec files not available on this machine")
    paths = set()
    for f in spec_dir.glob("*.openapi.json"):
        paths |= set(json.loads(f.read_text())["paths"])
    assert paths == set(api_paths.TEMPLATES)
