"""The signed assertion contract: a table of accept/refuse cases, no I/O."""

from __future__ import annotations

import pytest

from residency_contract import assertion as a

KEY = b"k" * 32


def mint(**over: object) -> str:
    args: dict[str, object] = dict(
        account="acme",
        region="eu-west-1",
        principal="key-1",
        roles={"read"},
        method="GET",
        target="/api/x?y=1",
        now=1000,
    )
    args.update(over)
    key = args.pop("key", KEY)
    return a.sign(key, **args)  # type: ignore[arg-type]


def check(header: str | None, **over: object) -> a.Assertion:
    args: dict[str, object] = dict(
        key=KEY, region="eu-west-1", method="GET", target="/api/x?y=1", max_age_s=30, now=1000
    )
    args.update(over)
    return a.verify(header, **args)  # type: ignore[arg-type]


def test_valid_assertion_round_trips() -> None:
    got = check(mint(roles={"read", "unmask"}))
    assert got.account == "acme" and got.principal == "key-1"
    assert got.roles == frozenset({"read", "unmask"})


@pytest.mark.parametrize(
    ("header", "over", "error"),
    [
        (None, {}, a.MissingAssertion),
        ("", {}, a.MissingAssertion),
        ("v1;acme", {}, a.BadAssertion),
        (mint(key=b"x" * 32), {}, a.BadAssertion),
        (mint(), {"method": "DELETE"}, a.BadAssertion),
        (mint(), {"target": "/api/x?y=2"}, a.BadAssertion),
        (mint(now=900), {}, a.StaleAssertion),
        (mint(now=1100), {}, a.StaleAssertion),
        (mint(region="us-east-1"), {}, a.WrongRegion),
        (mint().replace("acme", "evil"), {}, a.BadAssertion),
        (mint().replace(";read;", ";read,unmask;"), {}, a.BadAssertion),
    ],
)
def test_refused(header: str | None, over: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        check(header, **over)


@pytest.mark.parametrize("bad", ["ac;me", "a b", "", "x" * 200])
def test_sign_rejects_unsafe_fields(bad: str) -> None:
    with pytest.raises(ValueError):
        mint(account=bad)
