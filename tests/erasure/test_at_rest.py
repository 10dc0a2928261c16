"""Encryption at rest: after a mixed workload no PII is anywhere in the raw table."""

from __future__ import annotations

import uuid
from typing import Any

from tests.store.conftest import ADDRESS, BASE, PROSPECT, PURCHASE_INFO, Api, scan_all

from .conftest import item_text


def _person(tag: str) -> dict[str, Any]:
    return {
        "firstName": f"Firstname{tag}",
        "lastName": f"Lastname{tag}",
        "email": f"person.{tag}@example.com",
        "birthDate": "1980-01-02",
        "document": f"DOC{tag}",
        "documentType": "CPF",
        "homePhone": f"+55-21-{tag}",
    }


async def test_mixed_workload_leaves_no_plaintext_pii(api: Api, ddb: Any, table: str) -> None:
    secrets: set[str] = set()
    for _ in range(2):
        tag = uuid.uuid4().hex[:12]
        person = _person(tag)
        secrets |= {person[k] for k in ("firstName", "lastName", "email", "document", "homePhone")}
        pid = (await api.create_profile(person))["id"]
        status, _, _ = await api.call(
            "PATCH", f"{BASE}/profiles/{pid}", json_body={"lastName": f"Renamed{tag}"}
        )
        assert status == 200
        secrets.add(f"Renamed{tag}")
        street = f"Street{tag}"
        secrets.add(street)
        status, address, _ = await api.call(
            "POST", f"{BASE}/profiles/{pid}/addresses", json_body={**ADDRESS, "route": street}
        )
        assert status == 201, address
        status, _, _ = await api.call(
            "PATCH",
            f"{BASE}/profiles/{pid}/addresses/{address['id']}",
            json_body={"locality": f"Town{tag}"},
        )
        assert status == 200
        secrets.add(f"Town{tag}")
        holder = f"Holder{tag}"
        secrets.add(holder)
        pi = {**PURCHASE_INFO, "paymentData": {"cardHolder": holder}}
        status, _, _ = await api.call("POST", f"{BASE}/profiles/{pid}/purchase-info", json_body=pi)
        assert status == 200
        status, _, _ = await api.call(
            "PATCH",
            f"{BASE}/profiles/{pid}/purchase-info",
            json_body={"clientPreferences": {"note": f"Pref{tag}"}},
        )
        assert status == 200
        secrets.add(f"Pref{tag}")
        prospect = {
            **PROSPECT,
            "email": f"prospect.{tag}@example.com",
            "firstName": f"Prospectname{tag}",
            "document": f"PDOC{tag}",
        }
        secrets |= {prospect["email"], prospect["firstName"], prospect["document"]}
        status, created, _ = await api.call("POST", f"{BASE}/prospects", json_body=prospect)
        assert status == 201
        status, _, _ = await api.call(
            "PATCH", f"{BASE}/prospects/{created['id']}", json_body={"cellPhone": f"CELL{tag}"}
        )
        assert status == 200
        secrets.add(f"CELL{tag}")
        status, shown, _ = await api.call(
            "GET", f"{BASE}/profiles/{pid}/unmask", params={"reason": "check"}
        )
        assert status == 200 and shown[0]["document"]["email"] == person["email"]

    items = await scan_all(ddb, table)
    assert len(items) > 20
    assert any(i["pk"]["S"].split("#")[2:3] == ["DK"] for i in items)  # per-subject keys exist
    for item in items:
        if "doc" in item:
            assert "B" in item["doc"], item["sk"]  # sealed, never a plain string
        text = item_text(item)
        lowered = text.lower()
        for secret in secrets:
            assert secret not in text and secret.lower() not in lowered, (item["pk"], item["sk"])
