"""Probes, metrics, cost per operation, DynamoDB outages, concurrency, provisioning, CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from profile_store.__main__ import main
from profile_store.app import create_app
from profile_store.provisioning import PitrRequired, PitrState, check_pitr
from residency_dev.dynamodb_local import free_port

from .conftest import BASE, Api, make_settings, metric_value, scan_all, unique_profile


async def test_probes_and_metrics_need_no_assertion(client: TestClient) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200 and (await resp.json())["status"] == "ok"
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200, body
    assert body["pitr"] == "unsupported-endpoint" and body["status"] == "ready"
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert "profile_store_requests_total" in await resp.text()


async def test_cost_get_is_one_read_and_writes_one_transaction(
    api: Api, client: TestClient
) -> None:
    created = await api.create_profile()  # also creates the account salt
    second = await api.create_profile()
    pid = second["id"]
    await api.call("GET", f"{BASE}/profiles/{pid}")
    await api.call("PATCH", f"{BASE}/profiles/{pid}", json_body={"a": 1})
    text = await (await client.get("/metrics")).text()

    def calls(operation: str, call: str) -> float:
        return metric_value(
            text, "profile_store_dynamodb_calls_total", operation=operation, call=call
        )

    assert calls("GetProfile", "get_item") == 1
    assert metric_value(text, "profile_store_dynamodb_calls_total", operation="GetProfile") == 1
    # Two creates and the account's salt (a transaction too: it carries the fence check).
    assert calls("CreateClientProfile", "transact_write_items") == 3
    assert calls("UpdateClientProfile", "transact_write_items") == 1
    assert calls("UpdateClientProfile", "get_item") == 1
    assert (
        metric_value(text, "profile_store_dynamodb_capacity_units_total", operation="GetProfile")
        > 0
    )
    assert (
        metric_value(
            text,
            "profile_store_requests_total",
            region="eu-west-1",
            instance="store-test",
            operation="GetProfile",
            status_class="2xx",
        )
        == 1
    )
    assert created["id"] != pid


async def test_dynamodb_unreachable_is_a_quick_json_503(
    aiohttp_client: Any, master_key_file: Path
) -> None:
    settings = make_settings(
        f"http://127.0.0.1:{free_port()}",
        "profiles-unreachable",
        master_key_file,
        ddb_connect_timeout_s=0.5,
        ddb_max_attempts=1,
    )
    client = await aiohttp_client(create_app(settings))
    api = Api(client)
    started = time.monotonic()
    status, body, headers = await api.call("GET", f"{BASE}/profiles/{uuid.uuid4()}")
    assert time.monotonic() - started < 5
    assert status == 503 and body["error"] == "dynamodb_unavailable"
    assert headers["Retry-After"] == "1"
    status, body, _ = await api.call("POST", f"{BASE}/profiles", json_body=unique_profile())
    assert status == 503 and body["error"] == "dynamodb_unavailable"
    resp = await client.get("/readyz")
    assert resp.status == 503 and (await resp.json())["dynamodb"] == "unavailable"


async def test_twenty_concurrent_patches_lose_nothing(api: Api, ddb: Any, table: str) -> None:
    pid = (await api.create_profile())["id"]
    results = await asyncio.wait_for(
        asyncio.gather(
            *(
                api.call("PATCH", f"{BASE}/profiles/{pid}", json_body={f"field{i}": i})
                for i in range(20)
            )
        ),
        timeout=60,
    )
    assert [r[0] for r in results] == [200] * 20, [r[1] for r in results if r[0] != 200]
    status, body, _ = await api.call("GET", f"{BASE}/profiles/{pid}")
    assert status == 200
    for i in range(20):
        assert body[0]["document"][f"field{i}"] == i
    versions = [
        i
        for i in await scan_all(ddb, table)
        if i["pk"]["S"] == f"A#acme#P#{pid}" and i["sk"]["S"].startswith("V#")
    ]
    assert len(versions) == 21


async def test_concurrent_patches_through_two_instances_lose_nothing(
    aiohttp_client: Any, settings: Any, ddb: Any, table: str
) -> None:
    # Two store instances on one table: the in-process lock cannot serialise them, so this
    # exercises the conditional write and the server-side retry of a lost race.
    first = Api(await aiohttp_client(create_app(settings)))
    second = Api(await aiohttp_client(create_app(settings)))
    pid = (await first.create_profile())["id"]
    results = await asyncio.wait_for(
        asyncio.gather(
            *(
                (first if i % 2 else second).call(
                    "PATCH", f"{BASE}/profiles/{pid}", json_body={f"field{i}": i}
                )
                for i in range(20)
            )
        ),
        timeout=60,
    )
    assert [r[0] for r in results] == [200] * 20, [r[1] for r in results if r[0] != 200]
    status, body, _ = await first.call("GET", f"{BASE}/profiles/{pid}")
    assert status == 200
    assert {k: v for k, v in body[0]["document"].items() if k.startswith("field")} == {
        f"field{i}": i for i in range(20)
    }
    versions = [
        i
        for i in await scan_all(ddb, table)
        if i["pk"]["S"] == f"A#acme#P#{pid}" and i["sk"]["S"].startswith("V#")
    ]
    assert len(versions) == 21


class _FakeClient:
    def __init__(self, status: str | None) -> None:
        self.status = status

    async def describe_continuous_backups(self, **_: Any) -> dict[str, Any]:
        return {
            "ContinuousBackupsDescription": {
                "PointInTimeRecoveryDescription": {"PointInTimeRecoveryStatus": self.status}
            }
        }


async def test_pitr_check_decisions(ddb: Any, table: str, caplog: Any) -> None:
    assert await check_pitr(ddb, table, require_pitr=True) is PitrState.UNSUPPORTED
    warnings = [r for r in caplog.records if "DescribeContinuousBackups" in r.getMessage()]
    assert len(warnings) == 1
    assert await check_pitr(_FakeClient("ENABLED"), "t", require_pitr=True) is PitrState.ENABLED
    with pytest.raises(PitrRequired, match="point-in-time recovery is disabled"):
        await check_pitr(_FakeClient("DISABLED"), "t", require_pitr=True)
    assert await check_pitr(_FakeClient("DISABLED"), "t", require_pitr=False) is PitrState.DISABLED


async def test_table_provisioning(ddb: Any, table: str) -> None:
    described = (await ddb.describe_table(TableName=table))["Table"]
    assert {k["AttributeName"]: k["KeyType"] for k in described["KeySchema"]} == {
        "pk": "HASH",
        "sk": "RANGE",
    }
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = (await ddb.describe_time_to_live(TableName=table))["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expiresAt" and ttl["TimeToLiveStatus"] == "ENABLED"


def test_cli_create_table(ddb_endpoint: str, capsys: Any) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    args = ["create-table", "--region", "eu-west-1", "--table", name, "--endpoint", ddb_endpoint]
    assert main(args) == 0
    assert '"table": "created"' in capsys.readouterr().out
    assert main(args) == 0  # idempotent
    assert '"table": "exists"' in capsys.readouterr().out
    assert main(["create-table", "--region", "nowhere"]) == 2


def test_serve_refuses_to_start_without_a_master_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROFILE_STORE_REGION", "eu-west-1")
    monkeypatch.setenv("PROFILE_STORE_TABLE", "profiles")
    monkeypatch.setenv("PROFILE_STORE_ASSERTION_SECRET", "a-long-enough-secret-value")
    assert main(["serve"]) == 2
    assert "PROFILE_STORE_LOCAL_MASTER_KEY_FILE" in capsys.readouterr().err


def test_serve_command_starts_and_reports_readiness(
    ddb_endpoint: str, table: str, tmp_path: Any, master_key_file: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PROFILE_STORE_REGION": "eu-west-1",
        "PROFILE_STORE_TABLE": table,
        "PROFILE_STORE_DYNAMODB_ENDPOINT": ddb_endpoint,
        "PROFILE_STORE_ASSERTION_SECRET": "a-long-enough-secret-value",
        "PROFILE_STORE_PORT": str(port),
        "PROFILE_STORE_LOCAL_MASTER_KEY_FILE": str(master_key_file),
    }
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "profile_store", "serve"], env=env, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 30
        body: dict[str, Any] | None = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    body = json.loads(r.read())
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        assert body is not None, log_path.read_text()
        assert body["pitr"] == "unsupported-endpoint" and body["status"] == "ready"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    output = log_path.read_text()
    assert output.count("DescribeContinuousBackups") == 1
