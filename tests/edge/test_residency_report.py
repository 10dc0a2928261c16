"""``residency-ops residency report`` against DynamoDB Local: two regions' store tables (the
emulator keeps one namespace per region name, as AWS keeps one per region) and the registry.

Items are put straight into the tables with the store's key layout (``A#{account}#...``), so
the report is checked against exactly what a store would hold, including the move markers
(``FENCE#``, ``MOVED#``) that are reported but never count as data.
"""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from prometheus_client.parser import text_string_to_metric_families

from residency_contract.tables import PK_SK_KEYS
from residency_ops import report as residency_report
from residency_ops.__main__ import main as ops_main
from residency_ops.commands import residency as residency_cli
from residency_ops.report import classify

from .conftest import SECRETS

REGIONS = ("eu-west-1", "us-east-1")


def _ddb(endpoint: str, region: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=endpoint, region_name=region)


def _put(endpoint: str, region: str, table: str, pk: str, sk: str, **attrs: str) -> None:
    item = {"pk": {"S": pk}, "sk": {"S": sk}, **{k: {"S": v} for k, v in attrs.items()}}
    _ddb(endpoint, region).put_item(TableName=table, Item=item)


@pytest.fixture
def stack(ddb_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    tables = {r: f"profiles-{r}-{uuid.uuid4().hex[:8]}" for r in REGIONS}
    for region, table in tables.items():
        _ddb(ddb_endpoint, region).create_table(
            TableName=table, BillingMode="PAY_PER_REQUEST", **PK_SK_KEYS
        )
    regions = {
        r: {
            "instances": [f"http://127.0.0.1:{i + 1}"],  # never called
            "table": tables[r],
            "assertion_secret": SECRETS[r].decode(),
            "dynamodb_endpoint": ddb_endpoint,
        }
        for i, r in enumerate(REGIONS)
    }
    monkeypatch.setenv("EDGE_REGISTRY_ENDPOINT", ddb_endpoint)
    monkeypatch.setenv("EDGE_REGISTRY_TABLE", f"registry-{uuid.uuid4().hex[:10]}")
    monkeypatch.setenv("EDGE_REGIONS_JSON", json.dumps(regions))
    assert ops_main(["registry", "create-table"]) == 0
    assert ops_main(["registry", "create-account", "shop", "--region", "eu-west-1"]) == 0
    assert ops_main(["registry", "create-account", "other", "--region", "us-east-1"]) == 0
    put = lambda region, pk, sk="S", **a: _put(ddb_endpoint, region, tables[region], pk, sk, **a)  # noqa: E731
    for i in range(40):  # more than a page (PAGE_LIMIT is lowered below): segments page
        put("eu-west-1", f"A#shop#P#p{i}", "PROFILE")
    put("eu-west-1", "A#shop#META", "SALT")
    put("eu-west-1", "A#shop#K#email#00ff", "K")
    put("eu-west-1", "A#shop#DK#p1", "DK")
    for i in range(5):
        put("us-east-1", f"A#other#P#q{i}", "PROFILE")
    # Markers of moves, and an item of no account: reported, never data.
    put("us-east-1", "FENCE#shop", "F", state="incoming")
    put("eu-west-1", "MOVED#other", "3")
    put("eu-west-1", "CUR#x", "CUR")
    monkeypatch.setattr(residency_report, "PAGE_LIMIT", 7)
    return {"put": put, "tables": tables}


def _report(
    capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, list[dict[str, Any]], str]:
    code = ops_main(["residency", "report", *args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


def _metrics(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }


def test_classify() -> None:
    assert classify("A#shop#P#p1") == ("data", "shop", "P")
    assert classify("A#shop#META") == ("data", "shop", "META")
    assert classify("FENCE#shop") == ("fence", "shop", "fence")
    assert classify("MOVED#shop") == ("moved", "shop", "moved")
    assert classify("A#") == ("other", "", "other")
    assert classify("CUR#1") == ("other", "", "other")


def test_report_proves_residency_and_finds_a_foreign_item(
    stack: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    metrics = tmp_path / "residency.prom"
    code, lines, err = _report(capsys, "--segments", "3", "--metrics-file", str(metrics))
    assert code == 0, err
    by_account = {o["account"]: o for o in lines if "account" in o}
    shop, other = by_account["shop"], by_account["other"]
    assert shop["home"] == "eu-west-1" and shop["regions"] == {"eu-west-1": 43}
    assert shop["kinds"] == {"eu-west-1": {"DK": 1, "K": 1, "META": 1, "P": 40}}
    assert shop["fences"] == {"us-east-1": "incoming"} and shop["ok"]
    assert other["regions"] == {"us-east-1": 5} and other["moved_records"] == {"eu-west-1": 1}
    summary = lines[-1]["summary"]
    assert summary["items_scanned"] == {"eu-west-1": 45, "us-east-1": 6}
    assert summary["other_items"] == {"eu-west-1": 1}
    assert summary["foreign_items"] == 0 and summary["ok"]
    # progress as JSON lines on stderr (not a terminal): the final count of each region
    progress = [json.loads(line)["progress"] for line in err.splitlines() if line.strip()]
    assert {p["region"]: p["items"] for p in progress[-2:]} == {"eu-west-1": 45, "us-east-1": 6}
    m = _metrics(metrics)
    assert m[("residency_foreign_items", (("region", "eu-west-1"),))] == 0
    assert m[("residency_foreign_items", (("region", "us-east-1"),))] == 0
    assert m[("residency_items", (("region", "eu-west-1"),))] == 43
    assert m[("residency_move_markers", (("kind", "fence"), ("region", "us-east-1")))] == 1
    assert m[("residency_report_accounts_scanned", ())] == 2

    # One item of shop in us-east-1 (not its home), and one of an account nobody registered.
    stack["put"]("us-east-1", "A#shop#P#stray", "PROFILE")
    stack["put"]("eu-west-1", "A#ghost#P#g1", "PROFILE")
    code, lines, _ = _report(capsys, "--metrics-file", str(metrics))
    assert code == 1
    by_account = {o["account"]: o for o in lines if "account" in o}
    assert by_account["shop"]["foreign"] == {"us-east-1": 1} and not by_account["shop"]["ok"]
    assert by_account["ghost"]["home"] is None
    assert by_account["ghost"]["foreign"] == {"eu-west-1": 1}
    summary = lines[-1]["summary"]
    assert summary["foreign_by_region"] == {"eu-west-1": 1, "us-east-1": 1}
    assert (summary["accounts_foreign"], summary["accounts_unregistered"]) == (2, 1)
    m = _metrics(metrics)
    assert m[("residency_foreign_items", (("region", "us-east-1"),))] == 1
    assert m[("residency_report_accounts_foreign", ())] == 2

    # One account: only its items are looked at.
    code, lines, _ = _report(capsys, "--account", "other")
    assert code == 0 and [o["account"] for o in lines if "account" in o] == ["other"]
    code, lines, _ = _report(capsys, "--account", "shop")
    assert code == 1 and lines[0]["foreign"] == {"us-east-1": 1}
    assert lines[-1]["summary"]["items_scanned"] == {"eu-west-1": 43, "us-east-1": 2}


def test_report_without_proof_exits_2(
    stack: dict[str, Any], capsys: pytest.CaptureFixture[str], ddb_endpoint: str
) -> None:
    _ddb(ddb_endpoint, "us-east-1").delete_table(TableName=stack["tables"]["us-east-1"])
    code, lines, err = _report(capsys)
    assert code == 2 and lines == []
    assert "cannot scan us-east-1" in err and "ResourceNotFoundException" in err
    assert _report(capsys, "--account", "Not_Valid")[0] == 2


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_people_get_bars_and_lines(stack: dict[str, Any]) -> None:
    import asyncio

    from edge_router.config import EdgeSettings

    stack["put"]("us-east-1", "A#shop#P#stray", "PROFILE")
    settings = EdgeSettings.from_env()
    bars = _Terminal()
    progress = residency_cli._Progress([r.name for r in settings.regions], bars)
    findings = asyncio.run(
        residency_report.scan(
            settings.regions,
            {"shop": "eu-west-1", "other": "us-east-1"},
            progress=progress,
            on_total=progress.total,
        )
    )
    progress.close()
    assert "eu-west-1" in bars.getvalue() and "items" in bars.getvalue()
    out = _Terminal()
    residency_cli._text(findings, out)
    text = out.getvalue()
    assert "FOREIGN us-east-1: 1" in text and "fence[us-east-1]=incoming" in text
    assert text.rstrip().endswith("RESIDENCY VIOLATED")
