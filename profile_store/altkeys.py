"""Alternative keys (email, document): normalised, salted, hashed; never stored in clear.

A profile can be addressed by its email or document instead of its id. The lookup item's key is
``A#{account}#K#{kind}#{hex}`` where ``hex = SHA-256(account salt || normalised value)``: the
per-account random salt makes the hash useless for joining across accounts or against a
dictionary built elsewhere, and the plaintext never appears in a key or index attribute.

Normalisation is what makes ``John.Doe@Example.com `` and ``john.doe@example.com`` the same key:
emails are stripped and lower-cased; documents are stripped and lose spaces, dots and dashes.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

Kind = Literal["email", "document"]
KINDS: tuple[Kind, ...] = ("email", "document")

_DOC_NOISE = re.compile(r"[\s.\-]")


def normalise(kind: Kind, value: str) -> str:
    if kind == "email":
        return value.strip().lower()
    return _DOC_NOISE.sub("", value.strip())


def digest(salt: bytes, kind: Kind, value: str) -> str:
    return hashlib.sha256(salt + normalise(kind, value).encode("utf-8")).hexdigest()


def parse_kind(raw: str | None) -> Kind | None:
    """``alternativeKey`` query value -> kind; None when absent; ValueError when unknown."""
    if raw is None:
        return None
    if raw == "email":
        return "email"
    if raw == "document":
        return "document"
    raise ValueError("alternativeKey must be email or document")
