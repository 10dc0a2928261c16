"""deploy/ validated offline with the tools operators use: cfn-lint, promtool, k8s schemas."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
BIN = Path(sys.executable).parent


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def test_cloudformation_templates_pass_cfn_lint() -> None:
    templates = sorted((DEPLOY / "cloudformation").glob("*.yaml"))
    assert len(templates) >= 2
    done = run([str(BIN / "cfn-lint"), *map(str, templates)])
    assert done.returncode == 0, done.stdout + done.stderr


def test_profile_table_template_keeps_residency_properties() -> None:
    text = (DEPLOY / "cloudformation" / "profile-table.yaml").read_text()
    # CloudFormation short-form tags (!Ref ...) are not plain YAML: read them as strings.
    loader = type("CfnLoader", (yaml.SafeLoader,), {})
    loader.add_multi_constructor("!", lambda ld, suffix, node: f"!{suffix}")
    doc = yaml.load(text, Loader=loader)  # noqa: S506 (SafeLoader subclass)
    table = doc["Resources"]["ProfileTable"]["Properties"]
    key = doc["Resources"]["ProfileKey"]["Properties"]
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["DeletionProtectionEnabled"] is True
    assert table["SSESpecification"]["SSEType"] == "KMS"
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiresAt", "Enabled": True}
    assert key["MultiRegion"] is False


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) missing")
def test_prometheus_config_and_rules_pass_promtool() -> None:
    for argv in (
        ["promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        ["promtool", "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
    ):
        done = run(argv)
        assert done.returncode == 0, done.stdout + done.stderr


def test_kubernetes_manifests_validate_against_schemas() -> None:
    manifests = sorted((DEPLOY / "k8s").rglob("*.yaml"))
    assert {m.parent.name for m in manifests} >= {"us-east-1", "eu-west-1", "edge"}
    done = run([str(BIN / "kubernetes-validate"), "--strict", "--quiet", *map(str, manifests)])
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_store_manifest_pins_its_own_region() -> None:
    for region in ("us-east-1", "eu-west-1"):
        docs = list(
            yaml.safe_load_all((DEPLOY / "k8s" / region / "profile-store.yaml").read_text())
        )
        kinds = {d["kind"] for d in docs}
        assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["PROFILE_STORE_REGION"] == region
        assert env["PROFILE_STORE_REQUIRE_PITR"] == "true"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["resources"]["requests"]


def test_dashboard_is_valid_json_with_prometheus_targets() -> None:
    dash = json.loads((DEPLOY / "grafana" / "edge-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert exprs and all("edge_" in e for e in exprs)
