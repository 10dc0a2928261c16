"""User tokens (``VtexIdclientAutCookie``), the issuers' settings: ``EDGE_TOKEN_ISSUERS_JSON``
read into ``IssuerSettings`` (asymmetric algorithms by default), and every bad issuer refused
with a message that names what is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge_router.config import ConfigError, EdgeSettings, IssuerSettings

from .user_token import ISS_X


def _env(issuers: Any) -> dict[str, str]:
    region = {"instances": ["http://127.0.0.1:1"], "assertion_secret": "x" * 20, "table": "p"}
    return {
        "EDGE_REGIONS_JSON": json.dumps({"eu-west-1": {**region, "table": "profiles"}}),
        "EDGE_TOKEN_ISSUERS_JSON": json.dumps(issuers),
    }


def test_issuer_settings(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": []}')
    s = EdgeSettings.from_env(
        _env({"idp": {"issuer": ISS_X, "audience": "a", "jwks_file": str(jwks)}})
    )
    assert s.token_issuers == (
        IssuerSettings("idp", ISS_X, ("a",), jwks_file=str(jwks), algorithms=("RS256", "ES256")),
    )
    assert EdgeSettings.from_env(_env({})).token_issuers == ()
    bad = {
        "no issuer": ({"audiences": ["a"], "jwks_file": str(jwks)}, "issuer"),
        "no audience": ({"issuer": ISS_X, "jwks_file": str(jwks)}, "audiences"),
        "both sources": (
            {"issuer": ISS_X, "audiences": ["a"], "jwks_file": str(jwks), "jwks_url": "http://x"},
            "exactly one",
        ),
        "no source": ({"issuer": ISS_X, "audiences": ["a"]}, "exactly one"),
        "missing file": (
            {"issuer": ISS_X, "audiences": ["a"], "jwks_file": str(tmp_path / "nope")},
            "not a readable file",
        ),
        "url scheme": ({"issuer": ISS_X, "audiences": ["a"], "jwks_url": "ftp://x"}, "http"),
        "alg none": (
            {"issuer": ISS_X, "audiences": ["a"], "jwks_url": "http://x", "algorithms": ["none"]},
            "asymmetric only",
        ),
        "claim name": (
            {"issuer": ISS_X, "audiences": ["a"], "jwks_url": "http://x", "user_claim": "a b"},
            "user_claim",
        ),
    }
    for spec, message in bad.values():
        with pytest.raises(ConfigError, match=message):
            EdgeSettings.from_env(_env({"idp": spec}))
    twice = {"a": {"issuer": ISS_X, "audiences": ["a"], "jwks_url": "http://x"}}
    twice["b"] = twice["a"]
    with pytest.raises(ConfigError, match="twice"):
        EdgeSettings.from_env(_env(twice))
