"""Masking of reads: pure functions that hide PII the way the Profile System examples do.

Each alphanumeric run keeps its first character and the rest become ``*``; separators stay, so
a masked value keeps its shape (``john.doe@example.com`` -> ``j***.d**@e******.c**``). Which
keys are PII is per entity type (from the spec's examples and the full schema's ``pii: true``),
plus the account's custom fields declared ``pii: true``. Empty strings and nulls stay as they
are; numbers in a PII field are masked as their decimal text, because a phone number sent as a
number is still a phone number. Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_RUN = re.compile(r"[^\W_]+")

# Top-level keys of a profile document (the full schema's pii:true fields, both spellings of
# the birth date because the Profile schema calls it birthDate and the full schema birthdate).
PROFILE_PII = frozenset(
    {
        "firstName",
        "lastName",
        "email",
        "document",
        "homePhone",
        "cellPhone",
        "birthdate",
        "birthDate",
        "customerCode",
    }
)
# Address fields the spec's masked example hides, plus the receiver's name.
ADDRESS_PII = frozenset(
    {"postalCode", "countryName", "locality", "receiverName", "complement", "reference"}
)
# Applied at every depth of a prospect (contacts, invoiceSubject, availableAddresses, ...).
PROSPECT_PII = frozenset(
    {
        "email",
        "firstName",
        "lastName",
        "document",
        "cellPhone",
        "phone",
        "homePhone",
        "postalCode",
        "city",
        "street",
        "number",
        "receiverName",
        "complement",
        "birthDate",
        "birthdate",
    }
)
# Purchase info carries card and payment data already masked by the payment gateway; the card
# holder's name is the one personal value that can appear in it.
PURCHASE_INFO_PII = frozenset({"cardHolder"})


def mask_text(value: str) -> str:
    return _RUN.sub(lambda m: m.group(0)[0] + "*" * (len(m.group(0)) - 1), value)


def mask_value(value: Any) -> Any:
    """Mask every string inside ``value``; keep null, booleans and empty strings."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return mask_text(str(value))
    if isinstance(value, list):
        return [mask_value(v) for v in value]
    if isinstance(value, dict):
        return {k: mask_value(v) for k, v in value.items()}
    return value


def mask_top_level(doc: dict[str, Any], pii: Iterable[str]) -> dict[str, Any]:
    keys = frozenset(pii)
    return {k: (mask_value(v) if k in keys else v) for k, v in doc.items()}


def mask_deep(value: Any, pii: frozenset[str]) -> Any:
    """Mask PII keys wherever they appear in nested objects and arrays."""
    if isinstance(value, dict):
        return {
            k: (mask_value(v) if k in pii and not isinstance(v, dict | list) else mask_deep(v, pii))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask_deep(v, pii) for v in value]
    return value


def mask_profile(doc: dict[str, Any], custom_pii: Iterable[str] = ()) -> dict[str, Any]:
    return mask_top_level(doc, PROFILE_PII | frozenset(custom_pii))


def mask_address(doc: dict[str, Any]) -> dict[str, Any]:
    return mask_top_level(doc, ADDRESS_PII)


def mask_prospect(doc: dict[str, Any]) -> dict[str, Any]:
    return mask_deep(doc, PROSPECT_PII)  # type: ignore[no-any-return]


def mask_purchase_info(doc: dict[str, Any]) -> dict[str, Any]:
    return mask_deep(doc, PURCHASE_INFO_PII)  # type: ignore[no-any-return]
