"""Addresses, purchase information and prospects: every operation, shapes, masking, versions."""

from __future__ import annotations

from typing import Any

from .conftest import ADDRESS, BASE, PROSPECT, PURCHASE_INFO, Api, scan_all


async def test_address_lifecycle(api: Api) -> None:
    pid = (await api.create_profile())["id"]
    base = f"{BASE}/profiles/{pid}/addresses"
    status, created, _ = await api.call("POST", base, json_body=ADDRESS)
    assert status == 201
    aid, v1 = created["id"], created["meta"]["version"]
    assert created["document"] == {**ADDRESS, "profileId": pid}
    assert set(created["meta"]) == {"version", "author", "creationDate", "lastUpdateDate"}

    status, listed, _ = await api.call("GET", base)
    assert status == 200 and isinstance(listed, list) and len(listed) == 1
    masked = listed[0]["document"]
    assert masked["postalCode"] == "2****-0**"
    assert masked["countryName"] == "B*****"
    assert masked["locality"] == "L*******"
    assert masked["administrativeAreaLevel1"] == "RJ"
    assert masked["profileId"] == pid

    # The spec declares no reason on addresses/unmask: accepted without one (and audited).
    status, clear, _ = await api.call("GET", f"{base}/unmask")
    assert status == 200 and clear[0]["document"]["postalCode"] == "20200-000"

    status, one, _ = await api.call("GET", f"{base}/{aid}")
    assert status == 200 and isinstance(one, dict) and one["document"]["postalCode"] == "2****-0**"
    status, one, _ = await api.call("GET", f"{base}/{aid}/unmask", params={"reason": "r"})
    assert status == 200 and one["document"]["postalCode"] == "20200-000"
    status, body, _ = await api.call("GET", f"{base}/{aid}/unmask")
    assert status == 400 and body["error"] == "missing_reason"

    status, patched, _ = await api.call(
        "PATCH", f"{base}/{aid}", json_body={"route": "34", "streetNumber": "333"}
    )
    assert status == 200 and patched["document"]["route"] == "34"
    assert patched["meta"]["version"] != v1

    status, old, _ = await api.call("GET", f"{base}/{aid}/versions/{v1}")
    assert status == 200 and old["document"]["route"] == "51"
    assert old["document"]["postalCode"] == "2****-0**"
    status, old, _ = await api.call(
        "GET", f"{base}/{aid}/versions/{v1}/unmask", params={"reason": "r"}
    )
    assert status == 200 and old["document"]["postalCode"] == "20200-000"

    status, body, _ = await api.call("PATCH", f"{base}/{aid}", json_body={"route": 34})
    assert status == 400 and body["error"] == "invalid_field"
    status, body, _ = await api.call("POST", base, json_body={"postalCode": "1"})
    assert status == 400 and body["error"] == "invalid_field"

    status, _, _ = await api.call("DELETE", f"{base}/{aid}")
    assert status == 204
    status, _, _ = await api.call("GET", f"{base}/{aid}")
    assert status == 404
    status, _, _ = await api.call("GET", f"{base}/{aid}/versions/{v1}")
    assert status == 404
    status, _, _ = await api.call("DELETE", f"{base}/{aid}")
    assert status == 404


async def test_address_on_unknown_profile_is_404(api: Api) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    status, body, _ = await api.call(
        "POST", f"{BASE}/profiles/{missing}/addresses", json_body=ADDRESS
    )
    assert status == 404 and body["error"] == "not_found"
    status, _, _ = await api.call("GET", f"{BASE}/profiles/{missing}/addresses")
    assert status == 404


async def test_address_by_alternative_key(api: Api) -> None:
    created = await api.create_profile()
    email = created["document"]["email"]
    status, body, _ = await api.call(
        "POST",
        f"{BASE}/profiles/{email}/addresses",
        params={"alternativeKey": "email"},
        json_body=ADDRESS,
    )
    assert status == 201 and body["document"]["profileId"] == created["id"]


async def test_purchase_info_lifecycle(api: Api) -> None:
    pid = (await api.create_profile())["id"]
    path = f"{BASE}/profiles/{pid}/purchase-info"
    status, created, _ = await api.call("POST", path, json_body=PURCHASE_INFO)
    assert status == 200  # the spec's answer for this POST
    assert created["id"] == pid and created["document"] == PURCHASE_INFO
    assert set(created["meta"]) == {
        "version",
        "author",
        "creationDate",
        "lastUpdateDate",
        "expirationDate",
    }
    status, body, _ = await api.call("POST", path, json_body=PURCHASE_INFO)
    assert status == 409 and body["error"] == "already_exists"

    status, listed, _ = await api.call("GET", path)
    assert status == 200 and isinstance(listed, list) and listed[0]["id"] == pid
    status, body, _ = await api.call("GET", f"{path}/unmask")
    assert status == 400 and body["error"] == "missing_reason"
    status, clear, _ = await api.call("GET", f"{path}/unmask", params={"reason": "r"})
    assert status == 200 and isinstance(clear, list) and clear[0]["document"] == PURCHASE_INFO

    status, patched, _ = await api.call("PATCH", path, json_body={"isToSavePersonalData": False})
    assert status == 200 and isinstance(patched, dict)
    assert patched["document"]["isToSavePersonalData"] is False
    assert patched["document"]["paymentData"] == PURCHASE_INFO["paymentData"]
    status, body, _ = await api.call("PATCH", path, json_body={"isToSavePersonalData": "no"})
    assert status == 400

    status, _, _ = await api.call("DELETE", path)
    assert status == 204
    status, _, _ = await api.call("GET", path)
    assert status == 404


async def test_prospect_lifecycle(api: Api, ddb: Any, table: str) -> None:
    path = f"{BASE}/prospects"
    status, created, _ = await api.call("POST", path, json_body=PROSPECT)
    assert status == 201 and created["document"] == PROSPECT
    rid = created["id"]

    status, listed, _ = await api.call("GET", path)
    assert status == 200 and isinstance(listed, list)
    masked = next(p for p in listed if p["id"] == rid)["document"]
    assert masked["email"] == "j***@m***.c**"
    assert masked["cellPhone"] == "1**********"
    assert masked["invoiceSubject"]["email"] == "j***@m***.c**"
    assert masked["contacts"][0]["firstName"] == "J***" and masked["contacts"][0]["email"] == ""
    address = masked["availableAddresses"][0]
    assert address["receiverName"] == "J*** D**" and address["country"] == "USA"
    assert address["complement"] == "" and masked["isPJ"] is False

    status, clear, _ = await api.call("GET", f"{path}/unmask")  # spec: no reason parameter
    assert status == 200 and next(p for p in clear if p["id"] == rid)["document"] == PROSPECT

    status, one, _ = await api.call("GET", f"{path}/{rid}")
    assert status == 200 and isinstance(one, dict) and one["document"]["firstName"] == "J***"
    status, one, _ = await api.call("GET", f"{path}/{rid}/unmask", params={"reason": "r"})
    assert status == 200 and one["document"]["firstName"] == "Jane"
    status, body, _ = await api.call("GET", f"{path}/{rid}/unmask")
    assert status == 400 and body["error"] == "missing_reason"

    status, patched, _ = await api.call(
        "PATCH", f"{path}/{rid}", json_body={"email": "other@mail.com"}
    )
    assert status == 200 and patched["document"]["email"] == "other@mail.com"
    assert patched["meta"]["version"] != created["meta"]["version"]
    status, body, _ = await api.call("PATCH", f"{path}/{rid}", json_body={"contacts": "x"})
    assert status == 400

    items = [i for i in await scan_all(ddb, table) if i["sk"]["S"] == f"CUR#{rid}"]
    assert len(items) == 1 and len(items[0]["emailHash"]["S"]) == 64
    versions = [i for i in await scan_all(ddb, table) if i["sk"]["S"].startswith(f"VER#{rid}#")]
    assert len(versions) == 2

    status, _, _ = await api.call("DELETE", f"{path}/{rid}")
    assert status == 204
    status, _, _ = await api.call("GET", f"{path}/{rid}")
    assert status == 404
    assert not [i for i in await scan_all(ddb, table) if rid in i["sk"]["S"]]
