"""Masking and alternative-key normalisation: pure decision tables."""

from __future__ import annotations

import pytest

from profile_store import altkeys, masking


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("John", "J***"),
        ("john.doe@example.com", "j***.d**@e******.c**"),
        ("12345678900", "1**********"),
        ("20200-000", "2****-0**"),
        ("Jane Doe", "J*** D**"),
        ("", ""),
        ("São Paulo", "S** P****"),
    ],
)
def test_mask_text(value: str, masked: str) -> None:
    assert masking.mask_text(value) == masked


def test_mask_profile_keeps_non_pii_and_nulls() -> None:
    doc = {"firstName": "John", "documentType": "CPF", "homePhone": None, "custom": "x", "n": 5}
    assert masking.mask_profile(doc, custom_pii={"n"}) == {
        "firstName": "J***",
        "documentType": "CPF",
        "homePhone": None,
        "custom": "x",
        "n": "5",
    }


def test_mask_prospect_is_deep() -> None:
    doc = {"contacts": [{"email": "a@b.co", "contactId": "0"}], "invoiceSubject": {"phone": "12"}}
    assert masking.mask_prospect(doc) == {
        "contacts": [{"email": "a@b.c*", "contactId": "0"}],
        "invoiceSubject": {"phone": "1*"},
    }


@pytest.mark.parametrize(
    ("kind", "a", "b"),
    [
        ("email", " John.Doe@Example.com ", "john.doe@example.com"),
        ("document", "123.456.789-00", "12345678900"),
        ("document", " 123 456 ", "123456"),
    ],
)
def test_alternative_key_normalisation(kind: altkeys.Kind, a: str, b: str) -> None:
    salt = b"s" * 32
    assert altkeys.digest(salt, kind, a) == altkeys.digest(salt, kind, b)
    assert altkeys.digest(b"t" * 32, kind, a) != altkeys.digest(salt, kind, b)
