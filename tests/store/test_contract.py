"""Request bodies are checked with the spec's own schemas; the vendored copy cannot drift."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from profile_store import contract

from .conftest import BASE, Api, scan_all, unique_profile

SPEC = Path(__file__).resolve().parents[3] / "shared" / "spec" / "vtex-profile-system.openapi.json"


def test_vendored_schemas_equal_the_spec() -> None:
    if not SPEC.is_file():
        pytest.skip(f"{SPEC} not present beside the repo")
    fresh = contract.extract(json.loads(SPEC.read_text()))
    assert json.loads(contract.SCHEMAS_FILE.read_text()) == fresh


@pytest.mark.parametrize(
    ("entity", "body", "partial", "field"),
    [
        ("profile", {"firstName": "x"}, False, "lastName"),
        ("profile", {"email": ["secret@example.com"]}, True, "email"),
        ("profile", {"{customField}": 7}, True, "{customField}"),
        ("prospect", {"contacts": [{"email": {"a": "secret@example.com"}}]}, True, "contacts.0"),
        ("prospect", {"availableAddresses": [{"postalCode": 12345}]}, False, "postalCode"),
        ("purchase_info", {"lastUserPurchases": [{"value": "many"}]}, False, "value"),
        ("address", {"route": 51}, True, "route"),
    ],
)
def test_contract_violations_name_the_field_not_the_value(
    entity: str, body: dict[str, Any], partial: bool, field: str
) -> None:
    with pytest.raises(contract.ContractViolation) as info:
        contract.check(entity, body, partial=partial)
    assert field in str(info.value)
    assert "secret@example.com" not in str(info.value) and "12345" not in str(info.value)


async def test_nested_wrong_type_is_400_and_nothing_is_stored(
    api: Api, ddb: Any, table: str
) -> None:
    before = len(await scan_all(ddb, table))
    prospect = {"email": "p@example.com", "contacts": [{"email": {"nested": "p@example.com"}}]}
    status, body, _ = await api.call("POST", f"{BASE}/prospects", json_body=prospect)
    assert status == 400 and body["error"] == "invalid_field", body
    status, body, _ = await api.call(
        "POST", f"{BASE}/profiles", json_body=unique_profile(**{"{customField}": {"x": 1}})
    )
    assert status == 400, body
    assert len(await scan_all(ddb, table)) == before


def _property_names(node: Any) -> set[str]:
    names: set[str] = set()
    if isinstance(node, dict):
        names |= set(node.get("properties", {}))
        for value in node.values():
            names |= _property_names(value)
    elif isinstance(node, list):
        for value in node:
            names |= _property_names(value)
    return names


def _json_values(rng: random.Random, names: list[str], depth: int = 0) -> Any:
    """A JSON value whose object keys are mostly the schemas' own property names, so types,
    nesting, arrays and required fields are all exercised, valid and not."""
    scalars: list[Any] = [
        "",
        "text",
        0,
        7,
        -3,
        2.5,
        3.0,
        True,
        False,
        None,
    ]
    roll = rng.random()
    if depth >= 3 or roll < 0.45:
        return rng.choice(scalars)
    if roll < 0.7:
        return [_json_values(rng, names, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = rng.sample(names, rng.randint(0, min(6, len(names))))
    if rng.random() < 0.2:
        keys.append("notInTheSchema")
    return {k: _json_values(rng, names, depth + 1) for k in keys}


_SCALAR_OF = {"string": "s", "integer": 4, "number": 1.5, "boolean": True, "null": None}


def _from_schema(
    rng: random.Random, node: dict[str, Any], defs: dict[str, Any], depth: int = 0
) -> Any:
    """A value shaped by ``node`` (deep paths reached), each part wrong now and then."""
    if "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[-1]]
    if rng.random() < 0.08 or depth > 6:
        return rng.choice(["s", 4, 4.0, 1.5, True, None, [], {}])
    kinds = node.get("type", "object")
    kind = rng.choice(kinds) if isinstance(kinds, list) else kinds
    if kind == "integer" and rng.random() < 0.3:
        return rng.choice([4.0, 4.5])
    if kind == "object":
        props = node.get("properties", {})
        keys = [k for k in props if rng.random() < 0.5] + list(node.get("required", ()))
        if rng.random() < 0.1 and node.get("required"):
            keys.remove(rng.choice(node["required"]))
        return {k: _from_schema(rng, props.get(k, {}), defs, depth + 1) for k in keys}
    if kind == "array":
        item = node.get("items", {})
        return [_from_schema(rng, item, defs, depth + 1) for _ in range(rng.randint(0, 3))]
    return _SCALAR_OF[kind]


def test_compiled_predicate_agrees_with_jsonschema() -> None:
    """The fast path passes exactly the bodies jsonschema passes (anything else goes to
    jsonschema for its error), on every request schema, complete and partial."""
    definitions = json.loads(contract.SCHEMAS_FILE.read_text())["definitions"]
    names = sorted(_property_names(definitions))
    validators = contract._validators()
    predicates = contract._predicates()
    rng = random.Random(19)
    for key, validator in validators.items():
        valid = predicates[key]
        assert valid is not None, f"{key} fell back to jsonschema alone"
        own = sorted(_property_names(definitions[contract.ENTITIES[key[0]]]))
        seen = {True: 0, False: 0}
        for n in range(4000):
            if n % 2:
                body = _from_schema(rng, validator.schema, definitions)
            else:
                body = _json_values(rng, own if n % 4 else names)
            expected = next(iter(validator.iter_errors(body)), None) is None
            assert valid(body) is expected, (key, body)
            seen[expected] += 1
        assert min(seen.values()) > 100, (key, seen)


def test_compile_refuses_keywords_it_does_not_implement() -> None:
    with pytest.raises(contract.NotCompilable):
        contract.compile_predicate({"type": "string", "maxLength": 3}, {})
    with pytest.raises(contract.NotCompilable):
        contract.compile_predicate({"$ref": "https://example.com/schema"}, {})
