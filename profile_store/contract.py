"""Request bodies checked against the public spec's own schemas.

The Profile System spec is the contract, so request bodies are validated with the spec's
component schemas (``Profile``, ``CreateAddress``, ``Prospect``, ``PurchaseInfo`` and what they
reference), not with a hand-written copy of them. The schemas are vendored in
``contract_schemas.json`` so the service does not read ``../shared`` at run time; a test checks
that the vendored file equals a fresh extraction from the spec, and
``python -m profile_store.contract SPEC`` refreshes it.

OpenAPI 3.0 ``nullable: true`` is not JSON Schema; extraction turns it into a ``"null"`` type.
Validators are compiled once, on first use. Error messages name the field and the expected type,
never the offending value (it may be personal data).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError

SCHEMAS_FILE = Path(__file__).with_name("contract_schemas.json")
# Request-body schemas of the spec, by the name this module validates them under.
ENTITIES = {
    "profile": "Profile",
    "address": "CreateAddress",
    "prospect": "Prospect",
    "purchase_info": "PurchaseInfo",
}


class ContractViolation(ValueError):
    """A request body does not match the spec's schema; the message holds no value."""


def _convert(node: Any) -> Any:
    """OpenAPI 3.0 schema → JSON Schema: nullable becomes a null type, refs stay local."""
    if isinstance(node, list):
        return [_convert(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _convert(v) for k, v in node.items() if k not in {"nullable", "example"}}
    if "$ref" in out:
        out["$ref"] = out["$ref"].replace("#/components/schemas/", "#/definitions/")
    if node.get("nullable") and "type" in out:
        kinds = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*kinds, "null"]
    return out


def _refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref.rsplit("/", 1)[-1]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def extract(spec: dict[str, Any]) -> dict[str, Any]:
    """The request-body schemas (and everything they reference) from the OpenAPI document."""
    components = spec["components"]["schemas"]
    wanted = list(ENTITIES.values())
    seen: dict[str, Any] = {}
    while wanted:
        name = wanted.pop()
        if name in seen:
            continue
        seen[name] = _convert(components[name])
        wanted.extend(_refs(components[name]))
    return {"definitions": dict(sorted(seen.items()))}


@functools.cache
def _validators() -> dict[tuple[str, bool], Draft7Validator]:
    definitions = json.loads(SCHEMAS_FILE.read_text())["definitions"]
    out: dict[tuple[str, bool], Draft7Validator] = {}
    for entity, name in ENTITIES.items():
        full = {**definitions[name], "definitions": definitions}
        Draft7Validator.check_schema(full)
        # A PATCH sends a subset: same types, no top-level required fields.
        partial = {k: v for k, v in full.items() if k != "required"}
        out[entity, False] = Draft7Validator(full)
        out[entity, True] = Draft7Validator(partial)
    return out


def _describe(error: ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "body"
    if error.validator == "type":
        expected = error.validator_value
        kinds = "|".join(expected) if isinstance(expected, list) else expected
        return f"field {where!r} must be of type {kinds}"
    if error.validator == "required":
        missing = [r for r in error.validator_value if r not in (error.instance or {})]
        return f"field {'.'.join([*map(str, error.absolute_path), missing[0]])!r} is required"
    return f"field {where!r} does not match the API schema ({error.validator})"


def check(entity: str, body: dict[str, Any], *, partial: bool = False) -> None:
    """Raise ContractViolation when ``body`` breaks the spec's schema for ``entity``."""
    error = next(iter(_validators()[entity, partial].iter_errors(body)), None)
    if error is not None:
        raise ContractViolation(_describe(error))


if __name__ == "__main__":
    # python -m profile_store.contract ../shared/spec/vtex-profile-system.openapi.json
    source = json.loads(Path(sys.argv[1]).read_text())
    SCHEMAS_FILE.write_text(json.dumps(extract(source), indent=1, sort_keys=True) + "\n")
    print(f"wrote {SCHEMAS_FILE}")
