"""Request bodies are checked with the spec's own schemas; the vendored copy cannot drift."""

from __future__ import annotations

import json
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
