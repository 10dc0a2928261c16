"""The profile schema: the fixed default (the spec's full-schema example) plus custom fields.

Each account may declare custom profile fields with ``PUT /schemas/profileSystem/custom``; the
body replaces the previous declaration (``{}`` removes them all). A field is declared as
``{"type": [...], "sensitive": bool, "pii": bool}``; a field with ``pii: true`` is masked on
reads like the built-in PII fields. The reserved top-level key ``documentTTL`` (days, positive
integer) sets the default time-to-live of profiles written without a ``ttl`` parameter.

Everything here is pure: parsing and validating declarations, merging them into the full schema
and checking a profile document's field types against it.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

PROFILE_REQUIRED = ("firstName", "lastName", "email", "document", "documentType")

_NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}

# The spec's full-schema example, plus birthDate (the Profile schema's spelling of the field).
DEFAULT_PROPERTIES: dict[str, dict[str, Any]] = {
    "firstName": {**_NULLABLE_STRING, "sensitive": True, "pii": True},
    "lastName": {**_NULLABLE_STRING, "sensitive": True, "pii": True},
    "email": {"type": "string", "sensitive": True, "pii": True},
    "corporateName": {**_NULLABLE_STRING, "sensitive": False, "pii": False},
    "fancyName": {**_NULLABLE_STRING, "sensitive": False, "pii": False},
    "document": {**_NULLABLE_STRING, "sensitive": True, "pii": True},
    "businessDocument": {**_NULLABLE_STRING, "sensitive": False, "pii": False},
    "documentType": {**_NULLABLE_STRING, "sensitive": False, "pii": False},
    "homePhone": {**_NULLABLE_STRING, "sensitive": True, "pii": True},
    "cellPhone": {**_NULLABLE_STRING, "sensitive": True, "pii": True},
    "businessPhone": {**_NULLABLE_STRING, "sensitive": False, "pii": False},
    "gender": {**_NULLABLE_STRING, "sensitive": True, "pii": False},
    "birthdate": {**_NULLABLE_STRING, "sensitive": True, "pii": True},
    "birthDate": {**_NULLABLE_STRING, "sensitive": True, "pii": True},
    "priceTable": {"type": "string", "sensitive": False, "pii": False},
    "tags": {
        "type": ["array", "null"],
        "items": {"type": "string", "maxLength": 50},
        "sensitive": False,
        "pii": False,
    },
    "customerCode": {**_NULLABLE_STRING, "sensitive": True, "pii": True},
}

TYPE_NAMES = frozenset({"string", "number", "integer", "boolean", "array", "object", "null"})
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_CUSTOM_FIELDS = 200
MAX_TTL_DAYS = 36500


class SchemaError(ValueError):
    """A schema declaration or a document does not fit; the message names only field names."""


@dataclass(frozen=True, slots=True)
class CustomSchema:
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    document_ttl_days: int | None = None
    version: int = 0

    @property
    def pii_fields(self) -> frozenset[str]:
        return frozenset(name for name, spec in self.fields.items() if spec.get("pii") is True)


EMPTY = CustomSchema()


def parse_custom(body: Any) -> tuple[dict[str, dict[str, Any]], int | None]:
    """Validate a PUT body; return (field declarations, documentTTL days or None)."""
    if not isinstance(body, dict):
        raise SchemaError("the custom schema must be a JSON object")
    fields: dict[str, dict[str, Any]] = {}
    ttl: int | None = None
    for name, spec in body.items():
        if name == "documentTTL":
            if spec is None:
                continue
            if isinstance(spec, bool) or not isinstance(spec, int) or not 0 < spec <= MAX_TTL_DAYS:
                raise SchemaError(f"documentTTL must be an integer between 1 and {MAX_TTL_DAYS}")
            ttl = spec
            continue
        if not _FIELD_NAME.match(name):
            raise SchemaError("custom field names must match [A-Za-z_][A-Za-z0-9_]{0,63}")
        if not isinstance(spec, dict):
            raise SchemaError(f"custom field {name!r} must be an object")
        types = spec.get("type")
        type_list = [types] if isinstance(types, str) else types
        if (
            not isinstance(type_list, list)
            or not type_list
            or not all(isinstance(t, str) and t in TYPE_NAMES for t in type_list)
        ):
            raise SchemaError(f"custom field {name!r}: type must list JSON types such as string")
        for flag in ("sensitive", "pii"):
            if not isinstance(spec.get(flag), bool):
                raise SchemaError(f"custom field {name!r}: {flag} must be true or false")
        declared: dict[str, Any] = {
            "type": types,
            "sensitive": spec["sensitive"],
            "pii": spec["pii"],
        }
        if isinstance(spec.get("items"), dict):
            declared["items"] = spec["items"]
        fields[name] = declared
    if len(fields) > MAX_CUSTOM_FIELDS:
        raise SchemaError(f"at most {MAX_CUSTOM_FIELDS} custom fields")
    return fields, ttl


def custom_view(schema: CustomSchema) -> dict[str, Any]:
    """Body of ``GET /schemas/profileSystem/custom`` (shape of the spec's example)."""
    body: dict[str, Any] = {
        "title": "Client profile schema.",
        "type": "object",
        "description": "This schema describes a b2c customer profile.",
        "required": list(PROFILE_REQUIRED),
        "properties": copy.deepcopy(schema.fields),
        "version": schema.version,
        "v-indexed": ["email", "document"],
        "v-unique": ["email", "document"],
    }
    if schema.document_ttl_days is not None:
        body["documentTTL"] = schema.document_ttl_days
    return body


def full_view(schema: CustomSchema) -> dict[str, Any]:
    """Body of ``GET /schemas/profileSystem``: the default schema with custom fields merged."""
    properties = copy.deepcopy(DEFAULT_PROPERTIES)
    for name, spec in schema.fields.items():
        # A custom declaration never weakens a built-in PII field.
        if properties.get(name, {}).get("pii") is True:
            continue
        properties[name] = copy.deepcopy(spec)
    body: dict[str, Any] = {
        "title": "Profile System Profile Schema",
        "description": "Profile schema of this account: default fields and custom fields",
        "type": "object",
        "properties": properties,
        "required": list(PROFILE_REQUIRED),
        "additionalProperties": True,
        "v-indexed": ["email", "document"],
        "v-unique": ["email", "document"],
    }
    if schema.document_ttl_days is not None:
        body["documentTTL"] = schema.document_ttl_days
    return body


def _type_ok(value: Any, allowed: list[str]) -> bool:
    for t in allowed:
        if (
            (t == "null" and value is None)
            or (t == "string" and isinstance(value, str))
            or (t == "boolean" and isinstance(value, bool))
            or (t == "integer" and isinstance(value, int) and not isinstance(value, bool))
            or (t == "number" and isinstance(value, int | float) and not isinstance(value, bool))
            or (t == "array" and isinstance(value, list))
            or (t == "object" and isinstance(value, dict))
        ):
            return True
    return False


def check_profile_fields(doc: dict[str, Any], schema: CustomSchema) -> None:
    """Type-check the declared fields present in ``doc``; undeclared fields pass as custom."""
    for name, value in doc.items():
        spec = DEFAULT_PROPERTIES.get(name) or schema.fields.get(name)
        if spec is None:
            continue
        types = spec["type"]
        allowed = [types] if isinstance(types, str) else list(types)
        if not _type_ok(value, allowed):
            raise SchemaError(f"field {name!r} must be of type {'|'.join(allowed)}")
        if name == "tags" and isinstance(value, list):
            if not all(isinstance(t, str) and len(t) <= 50 for t in value):
                raise SchemaError("field 'tags' must be strings of at most 50 characters")
