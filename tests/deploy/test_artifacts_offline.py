"""deploy/ validated offline with the tools operators use: cfn-lint, promtool, k8s schemas."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def test_compose_stack_is_consistent_with_its_edge_config(tmp_path: Path) -> None:
    from edge_router.config import EdgeSettings

    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    edge_toml = DEPLOY / "local" / "compose-edge.toml"
    settings = EdgeSettings.from_env({"EDGE_CONFIG": str(edge_toml)})
    assert {r.name for r in settings.regions} == {"us-east-1", "eu-west-1"}
    for region in settings.regions:
        for instance in region.instances:
            host = instance.url.split("//", 1)[1].split(":", 1)[0]
            env = services[host]["environment"]
            assert env["PROFILE_STORE_REGION"] == region.name
            assert env["PROFILE_STORE_ASSERTION_SECRET"].encode() == region.assertion_secret
            assert env["PROFILE_STORE_LOCAL_MASTER_KEY_FILE"].endswith(f"{region.name}.key")
            assert env["PROFILE_STORE_DYNAMODB_ENDPOINT"] == region.dynamodb_endpoint
    named = {v.split(":", 1)[0] for s in services.values() for v in s.get("volumes", [])}
    assert {n for n in named if not n.startswith(".")} <= set(compose["volumes"])


def test_kubernetes_edge_config_is_a_valid_edge_config(tmp_path: Path) -> None:
    from edge_router.config import EdgeSettings

    docs = yaml.safe_load_all((DEPLOY / "k8s" / "edge" / "edge.yaml").read_text())
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    (tmp_path / "edge.toml").write_text(config_map["data"]["edge.toml"])
    secrets = {  # what the Deployment injects from Secrets
        "EDGE_REGION_SECRET_US_EAST_1": "s" * 32,
        "EDGE_REGION_SECRET_EU_WEST_1": "t" * 32,
    }
    settings = EdgeSettings.from_env({"EDGE_CONFIG": str(tmp_path / "edge.toml"), **secrets})
    assert {r.name for r in settings.regions} == {"us-east-1", "eu-west-1"}


def dockerfile_stages() -> dict[str, dict[str, Any]]:
    """Stages of deploy/Dockerfile: base, repo paths COPY'd in, stages COPY'd --from, CMD, and
    the stage's own lines (``text``)."""
    stages: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] = {}
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        words = raw.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "FROM":
            name = words[3] if len(words) >= 4 and words[2].upper() == "AS" else words[1]
            current = stages[name] = {
                "base": words[1],
                "sources": set(),
                "from": set(),
                "cmd": [],
                "text": "",
            }
        current["text"] += raw + "\n"
        if words[0] == "FROM":
            continue
        if words[0] == "COPY":
            flags = [w for w in words[1:] if w.startswith("--")]
            paths = [w for w in words[1:] if not w.startswith("--")][:-1]
            sources = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            if sources is None:
                current["sources"].update(p.rstrip("/") for p in paths)
            else:
                current["from"].add(sources)
        elif words[0] == "CMD":
            current["cmd"] = json.loads(raw.split(None, 1)[1])
    return stages


def copied_into(target: str, stages: dict[str, dict[str, Any]]) -> set[str]:
    """Every repo path that ends up in ``target``'s image, through bases and COPY --from."""
    seen, todo, sources = set(), [target], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in stages:
            continue
        seen.add(name)
        stage = stages[name]
        sources |= stage["sources"]
        todo.extend([stage["base"], *stage["from"]])
    return sources


# What each image holds of this repo's packages, and the command it runs.
IMAGES = {
    "edge": ({"edge_router", "residency_contract"}, ["edge-router", "serve"]),
    "store": ({"profile_store", "residency_contract"}, ["profile-store", "serve"]),
    "ops": ({"edge_router", "residency_ops", "residency_contract"}, ["residency-ops"]),
}
PACKAGES = {"edge_router", "profile_store", "residency_contract", "residency_ops", "residency_dev"}


def console_scripts() -> dict[str, str]:
    """script -> the top-level package it runs (pyproject's [project.scripts])."""
    import tomllib

    pyproject = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())
    return {k: v.split(".")[0] for k, v in pyproject["project"]["scripts"].items()}


def test_dockerfile_builds_each_image_with_its_own_packages_only() -> None:
    stages = dockerfile_stages()
    for target, (packages, cmd) in IMAGES.items():
        copied = copied_into(target, stages)
        assert copied & PACKAGES == packages, target
        assert stages[target]["cmd"][: len(cmd)] == cmd, target
        # the console scripts of packages the image lacks are removed (they could only fail)
        (build,) = stages[target]["from"]
        for script, package in console_scripts().items():
            if package not in packages:
                assert f"/install/bin/{script}" in stages[build]["text"], (target, script)
    # residency_dev (the demo issuer, the DynamoDB Local launcher) is in no image at all
    assert all("residency_dev" not in stage["sources"] for stage in stages.values())
    assert list(stages)[-1] == "edge"  # `docker build` without --target gives the edge


@pytest.mark.parametrize(
    ("target", "entry_points"),
    [
        ("edge", ("edge_router.app", "edge_router.server", "edge_router.__main__")),
        (
            "ops",
            (
                "residency_ops.__main__",
                "residency_ops.commands.registry",
                "residency_ops.commands.account",
                "residency_ops.commands.residency",
            ),
        ),
    ],
)
def test_an_images_sources_alone_run_its_entry_points(
    tmp_path: Path, target: str, entry_points: tuple[str, ...]
) -> None:
    # What the target copies, and nothing else, must import every entry point: a stray import
    # of profile_store (or of the ops or dev tools, from the edge) would only show up in
    # production otherwise.
    root = DEPLOY.parent
    copied = copied_into(target, dockerfile_stages())
    for name in copied:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, tmp_path / name)
    absent = sorted(PACKAGES - copied)
    probe = (
        "import importlib, sys\n"
        # the dev venv's editable install would find the whole checkout: not in the image
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]\n"
        f"for name in {list(entry_points)!r}:\n"
        "    importlib.import_module(name)\n"
        f"for name in {absent!r}:\n"
        "    assert importlib.util.find_spec(name) is None, name\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_compose_builds_each_service_from_its_own_target() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    stages = dockerfile_stages()
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        target = service["build"]["target"]
        assert target in stages, name
        command = " ".join(map(str, service.get("command", stages[target]["cmd"])))
        # A service runs only its image's command (the others are not installed there).
        for other, (_packages, cmd) in IMAGES.items():
            if other != target:
                assert cmd[0] not in command, name
