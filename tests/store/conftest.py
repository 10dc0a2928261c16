"""Store fixtures: a fresh table per test (made by our own provisioning), an app, a signing client.

End-to-end tier: everything runs against Amazon's DynamoDB Local (session fixture in the root
conftest). Requests are signed exactly as the edge does, over the raw target the client sends.
The app seals every document with the envelope codec under a local master key made per test.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from aiobotocore.session import get_session
from aiohttp.test_utils import TestClient
from yarl import URL

from profile_store.app import create_app
from profile_store.config import StoreSettings
from profile_store.key_providers import generate_local_master_key
from profile_store.provisioning import create_table
from residency_contract.assertion import sign
from residency_contract.protocol import ASSERTION_HEADER

SECRET = b"test-secret-eu-west-1-0123456789"
REGION = "eu-west-1"
BASE = "/api/storage/profile-system"
ALL_ROLES = frozenset({"read", "write", "delete", "unmask"})  # not erase: asked for explicitly

PROFILE = {
    "firstName": "John",
    "lastName": "Doe",
    "email": "john.doe@example.com",
    "birthDate": "1925-11-17",
    "document": "12345678900",
    "documentType": "CPF",
}
ADDRESS = {
    "postalCode": "20200-000",
    "countryName": "Brasil",
    "countryCode": "BR",
    "administrativeAreaLevel1": "RJ",
    "locality": "Locality",
    "localityAreaLevel1": "locality area",
    "route": "51",
    "streetNumber": "999",
    "contactId": "1",
}
PROSPECT = {
    "availableAddresses": [
        {
            "disposable": True,
            "addressName": "Home",
            "addressType": "residential",
            "postalCode": "32137",
            "city": "Palm Coast",
            "country": "USA",
            "street": "Fifth St.",
            "number": "9538",
            "complement": "",
            "receiverName": "Jane Doe",
            "geoCoordinate": [],
        }
    ],
    "contacts": [{"contactId": "0", "email": "", "firstName": "Jane", "lastName": "Doe"}],
    "invoiceSubject": {"invoiceSubjectId": "0", "email": "jane@mail.com", "firstName": "Jane"},
    "email": "jane@mail.com",
    "firstName": "Jane",
    "lastName": "Doe",
    "document": "98765432100",
    "cellPhone": "12345678910",
    "isPJ": False,
}
PURCHASE_INFO = {
    "paymentData": {
        "availableAccounts": [{"accountId": "D09F", "cardNumber": "************1111"}],
        "availableTokens": [],
        "transactions": None,
    },
    "clientPreferences": {"localeDefault": "pt-BR", "isNewsletterOptIn": True},
    "isToSavePersonalData": True,
    "lastUserPurchases": [{"orderId": "1370990595750-01", "value": 3498}],
    "lastPurchasesAddressId": "db267dcc53c14fb2b9a985532dd287bc",
}


def make_settings(endpoint: str, table: str, key_file: Path, **overrides: Any) -> StoreSettings:
    values: dict[str, Any] = {
        "region": REGION,
        "table": table,
        "dynamodb_endpoint": endpoint,
        "assertion_secret": SECRET,
        "instance_id": "store-test",
        "ddb_connect_timeout_s": 1.0,
        "ddb_read_timeout_s": 3.0,
        "key_provider": "local",
        "local_master_key_file": str(key_file),
        **overrides,
    }
    return StoreSettings(**values)


def target(path: str, params: dict[str, Any] | None = None) -> str:
    """The raw request target, percent-encoded once, exactly as it goes on the wire."""
    raw = quote(path, safe="/-_.~@:+")
    if params:
        raw += "?" + urlencode(params)
    return raw


class Api:
    """A test client that signs each request as the edge would."""

    def __init__(self, client: TestClient, *, account: str = "acme") -> None:
        self.client = client
        self.account = account

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        account: str | None = None,
        roles: Iterable[str] = ALL_ROLES,
        region: str = REGION,
        key: bytes = SECRET,
        assertion: str | None = None,
        signed: bool = True,
    ) -> tuple[int, Any, dict[str, str]]:
        raw = target(path, params)
        url = URL(raw, encoded=True)
        all_headers = {"Accept": "application/json", **(headers or {})}
        if signed:
            all_headers[ASSERTION_HEADER] = assertion or sign(
                key,
                account=account or self.account,
                region=region,
                principal="tester",
                roles=frozenset(roles),
                method=method,
                target=str(url.raw_path_qs),
            )
        body = data
        if json_body is not None:
            body = json.dumps(json_body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        async with self.client.request(method, url, data=body, headers=all_headers) as resp:
            text = await resp.text()
            parsed = json.loads(text) if text else None
            return resp.status, parsed, dict(resp.headers)

    async def create_profile(self, doc: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        status, body, _ = await self.call(
            "POST", f"{BASE}/profiles", json_body=doc or unique_profile(), **kw
        )
        assert status == 201, body
        return body  # type: ignore[no-any-return]


def unique_profile(**fields: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    return {
        **PROFILE,
        "email": f"user.{tag}@example.com",
        "document": f"{int(tag, 16) % 10**11:011d}",
        **fields,
    }


@pytest.fixture
async def ddb(ddb_endpoint: str) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "dynamodb", region_name=REGION, endpoint_url=ddb_endpoint
    ) as client:
        yield client


@pytest.fixture
async def table(ddb: Any) -> str:
    name = f"profiles-{uuid.uuid4().hex[:12]}"
    await create_table(ddb, name, wait_s=30)
    return name


@pytest.fixture
def master_key_file(tmp_path: Path) -> Path:
    return generate_local_master_key(tmp_path / "master.key")


@pytest.fixture
def settings(ddb_endpoint: str, table: str, master_key_file: Path) -> StoreSettings:
    return make_settings(ddb_endpoint, table, master_key_file)


@pytest.fixture
async def client(aiohttp_client: Any, settings: StoreSettings) -> TestClient:
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


@pytest.fixture
def api(client: TestClient) -> Api:
    return Api(client)


async def scan_all(ddb: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table}
    while True:
        resp = await ddb.scan(**kwargs)
        items.extend(resp["Items"])
        if "LastEvaluatedKey" not in resp:
            return items
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


def metric_value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
