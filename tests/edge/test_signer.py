"""The edge's cached signer produces exactly what ``residency_contract.assertion.sign`` does."""

from __future__ import annotations

import pytest

from residency_contract import assertion as pa
from residency_contract.signer import Signer

KEY = b"test-secret-eu-west-1-0000"


@pytest.mark.parametrize(
    ("principal", "roles", "method", "target"),
    [
        ("vtexappkey-a", {"read"}, "GET", "/api/storage/profile-system/profiles/p1?an=acme"),
        ("k:1.2_3", {"write", "read", "unmask"}, "patch", "/api/x/%2Fy?e=%C3%A9&z"),
        ("k", set(), "DELETE", "/"),
    ],
)
def test_signer_matches_sign_and_verifies(principal, roles, method, target) -> None:  # type: ignore[no-untyped-def]
    signer = Signer({"eu-west-1": KEY})
    for now in (1_700_000_000, 1_700_000_001):
        for _ in range(2):  # first call fills the cache, second uses it
            got = signer.sign(
                account="acme",
                region="eu-west-1",
                principal=principal,
                roles=frozenset(roles),
                method=method,
                target=target,
                now=now,
            )
            ref = pa.sign(
                KEY,
                account="acme",
                region="eu-west-1",
                principal=principal,
                roles=frozenset(roles),
                method=method,
                target=target,
                now=now,
            )
            assert got == ref
    a = pa.verify(
        signer.sign(
            account="acme",
            region="eu-west-1",
            principal=principal,
            roles=frozenset(roles),
            method=method,
            target=target,
        ),
        key=KEY,
        region="eu-west-1",
        method=method.upper(),
        target=target,
        max_age_s=30,
    )
    assert a.principal == principal and a.roles == frozenset(roles)


def test_signer_refuses_bad_fields_like_sign() -> None:
    signer = Signer({"eu-west-1": KEY})
    with pytest.raises(ValueError):
        signer.sign(
            account="acme",
            region="eu-west-1",
            principal="bad principal",
            roles=frozenset({"read"}),
            method="GET",
            target="/",
        )
    with pytest.raises(ValueError):
        signer.sign(
            account="acme",
            region="eu-west-1",
            principal="k",
            roles=frozenset({"root"}),
            method="GET",
            target="/",
        )
