"""An account's items as they travel between regions: their JSON form, kind and digest.

Pure (no I/O). The JSON form of an item is DynamoDB's attribute-value JSON with binary values
as base64 (``{"B": "..."}``, ``{"BS": [...]}``): exactly what is stored, so sealed documents
stay ciphertext. ``from_json`` validates an incoming item completely (types, nesting, sizes)
before anything is written; what it refuses is ``errors.MalformedItem``.

Kinds (``kind_of``) follow the key layout of ``layout.py``; the digest of an item
(``digest``) is sha256 of a canonical form (sorted-key compact JSON) computed in each region
with its own keys: the decrypted document for sealed items, a constant marker and the subject id
for data keys (never key material), the attributes minus region-bound ones otherwise.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import Any

from residency_contract.tables import data_prefix, salt_pk

from ..crypto import DATA_KEY_SK, DOC_ATTRIBUTE, SEALED_IN_ATTRIBUTE
from ..errors import MalformedItem

Item = dict[str, Any]

KINDS = (
    "profile",
    "version",
    "address",
    "purchase_info",
    "prospect",
    "altkey",
    "schema",
    "salt",
    "audit",
    "suppression",
    "erasure",
    "idempotency",
    "data_key",
    "other",
)
# Attributes that differ between regions by construction (the wrapped key and its wrapping).
REGION_BOUND = frozenset({"wrapped", "provider", "keyId", "transferWrapped", "transferKid"})
TRANSFER_WRAPPED = "transferWrapped"
TRANSFER_KID = "transferKid"
_MAX_DEPTH = 32
_NUMBER = re.compile(r"^-?(0|[1-9][0-9]{0,37})(\.[0-9]{1,38})?([eE][+-]?[0-9]{1,3})?$")
_MAX_ITEM_BYTES = 400 * 1024  # DynamoDB's item size limit


def key_of(item: Item) -> tuple[str, str]:
    return str(item["pk"]["S"]), str(item["sk"]["S"])


def kind_of(account: str, pk: str, sk: str) -> str:
    rest = pk[len(data_prefix(account)) :]
    head = rest.split("#", 1)[0]
    if head == "P":
        if sk == "CUR":
            return "profile"
        if sk.startswith(("V#", "ADDRV#", "PIV#")):
            return "version"
        if sk.startswith("ADDR#"):
            return "address"
        if sk == "PI":
            return "purchase_info"
        return "other"
    if head == "R":
        return "prospect" if sk.startswith("CUR#") else "version"
    if pk == salt_pk(account):
        return "salt"
    return {
        "K": "altkey",
        "SCHEMA": "schema",
        "AUDIT": "audit",
        "SUPPRESS": "suppression",
        "ERASURE": "erasure",
        "IDEM": "idempotency",
        "DK": "data_key" if sk == DATA_KEY_SK else "other",
    }.get(head, "other")


def data_key_subject(account: str, pk: str, sk: str) -> str | None:
    """The subject of a data-key item; None for any other item."""
    prefix = data_prefix(account) + "DK#"
    if sk != DATA_KEY_SK or not pk.startswith(prefix) or len(pk) == len(prefix):
        return None
    return pk[len(prefix) :]


def doc_subject(account: str, pk: str, item: Item) -> str | None:
    """Whose data key seals the item's document: the profile (its partition) or the prospect."""
    rest = pk[len(data_prefix(account)) :]
    if rest.startswith("P#"):
        return rest[2:] or None
    if rest == "R":
        value = item.get("id", {})
        return str(value["S"]) if isinstance(value, dict) and value.get("S") else None
    return None


# ---- JSON form --------------------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """A stored attribute value (or item) as JSON: bytes as base64."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


def _b64(raw: Any) -> bytes:
    if not isinstance(raw, str):
        raise MalformedItem("a binary value must be a base64 string")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedItem("a binary value is not valid base64") from None


def _value(raw: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise MalformedItem("an attribute value is nested too deeply")
    if not isinstance(raw, dict) or len(raw) != 1:
        raise MalformedItem("an attribute value must be an object with exactly one type")
    ((kind, v),) = raw.items()
    if kind == "S" and isinstance(v, str):
        return {"S": v}
    if kind == "N" and isinstance(v, str) and _NUMBER.match(v):
        return {"N": v}
    if kind == "B":
        return {"B": _b64(v)}
    if kind == "BOOL" and isinstance(v, bool):
        return {"BOOL": v}
    if kind == "NULL" and v is True:
        return {"NULL": True}
    if kind in {"SS", "NS"} and isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        if len(set(v)) == len(v) and (kind == "SS" or all(_NUMBER.match(x) for x in v)):
            return {kind: list(v)}
    if kind == "BS" and isinstance(v, list) and v:
        values = [_b64(x) for x in v]
        if len(set(values)) == len(values):
            return {"BS": values}
    if kind == "L" and isinstance(v, list):
        return {"L": [_value(x, depth + 1) for x in v]}
    if kind == "M" and isinstance(v, dict) and all(isinstance(k, str) for k in v):
        return {"M": {k: _value(x, depth + 1) for k, x in v.items()}}
    raise MalformedItem(f"unsupported attribute value type {kind[:8]!r}")


def parse_key(raw: Any, account: str) -> tuple[str, str]:
    """A ``[pk, sk]`` pair of the account (anything else is refused)."""
    if not (
        isinstance(raw, list)
        and len(raw) == 2
        and all(isinstance(x, str) and 0 < len(x) <= 1024 for x in raw)
    ):
        raise MalformedItem("a key must be [pk, sk], two non-empty strings")
    if not raw[0].startswith(data_prefix(account)):
        raise MalformedItem("a key is outside the account")
    return raw[0], raw[1]


def from_json(raw: Any, account: str) -> Item:
    """An item of the account from its JSON form; ``MalformedItem`` if it is anything else."""
    if not isinstance(raw, dict) or not raw:
        raise MalformedItem("an item must be a non-empty object")
    item = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not 0 < len(name) <= 255:
            raise MalformedItem("attribute names must be 1-255 characters")
        item[name] = _value(value, 0)
    pk, sk = item.get("pk", {}).get("S"), item.get("sk", {}).get("S")
    if not isinstance(pk, str) or not isinstance(sk, str) or not sk:
        raise MalformedItem("an item needs string attributes pk and sk")
    parse_key([pk, sk], account)
    if len(canonical(item)) > _MAX_ITEM_BYTES * 2:  # base64 and JSON overhead: a loose bound
        raise MalformedItem("an item is larger than DynamoDB stores")
    return item


# ---- digests ----------------------------------------------------------------------------------


def canonical(value: Any) -> bytes:
    return json.dumps(
        to_json(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()


def plain_attributes(item: Item) -> Item:
    """The attributes that must be equal in both regions, as stored (no doc, no key wrapping)."""
    drop = REGION_BOUND | {DOC_ATTRIBUTE, SEALED_IN_ATTRIBUTE}
    return {k: v for k, v in item.items() if k not in drop}


def data_key_digest(subject: str) -> str:
    return hashlib.sha256(b"data_key\x00" + subject.encode()).hexdigest()


def sealed_digest(item: Item, doc: dict[str, Any] | None) -> str:
    """``doc``: the decrypted document, or None when it cannot be opened here (then the
    ciphertext's digest, so two regions that both fail still compare)."""
    if doc is None:
        blob = item.get(DOC_ATTRIBUTE, {}).get("B", b"")
        body = {"attrs": plain_attributes(item), "unreadable": hashlib.sha256(blob).hexdigest()}
    else:
        body = {"attrs": plain_attributes(item), "doc": doc}
    return hashlib.sha256(canonical(body)).hexdigest()


def plain_digest(item: Item) -> str:
    return hashlib.sha256(canonical({"attrs": plain_attributes(item)})).hexdigest()


def digest_key(pk: str, sk: str) -> str:
    return f"{pk}\u0000{sk}"
