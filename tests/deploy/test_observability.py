"""The shipped dashboard and alerts name only metrics the edge exports, and the shipped scrape
config works: a real Prometheus server (Debian's package) scrapes a test edge and answers a
query for the edge's request counter."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.metrics_core import Metric

from edge_router.admin import create_admin_app
from edge_router.app import create_app
from edge_router.metrics import EdgeMetrics
from residency_dev.dynamodb_local import free_port
from tests.edge.conftest import FakeRegistry, FakeStore, Key, make_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def exported_series_names() -> set[str]:
    names: set[str] = set()
    family: Metric
    for family in EdgeMetrics().registry.collect():
        names.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
    return names


def queried_metric_names() -> set[str]:
    exprs = [
        t["expr"]
        for p in json.loads((DEPLOY / "grafana" / "edge-dashboard.json").read_text())["panels"]
        for t in p["targets"]
    ]
    for group in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]:
        exprs += [rule["expr"] for rule in group["rules"]]
    return {m for e in exprs for m in re.findall(r"\b(edge_[a-z_]+)", e)}


def test_dashboard_and_alerts_query_only_exported_edge_metrics() -> None:
    exported = exported_series_names()
    queried = queried_metric_names()
    assert len(queried) >= 8
    assert queried - exported == set(), f"not exported by the edge: {queried - exported}"


async def poll(check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.2)


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is missing")
async def test_real_prometheus_scrapes_the_edge(aiohttp_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key = Key("vtexappkey-acme-TEST", "token-acme-test", frozenset({"read"}))
    registry = FakeRegistry()
    registry.add("acme", "eu-west-1", [key])
    store = await aiohttp_server(FakeStore("eu-west-1", "eu-0").app())
    settings = make_settings({"eu-west-1": [f"http://127.0.0.1:{store.port}"]})
    edge_app = create_app(settings, registry_factory=registry.factory())
    edge = await aiohttp_server(edge_app)
    admin = await aiohttp_server(create_admin_app(edge_app))

    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["edge"]["static_configs"] = [{"targets": [f"127.0.0.1:{admin.port}"]}]
    config["scrape_configs"] = [jobs["edge"]]
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    prom = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    try:
        async with aiohttp.ClientSession() as http:
            headers = {"X-VTEX-API-AppKey": key.app_key, "X-VTEX-API-AppToken": key.token}
            for _ in range(3):
                url = f"http://127.0.0.1:{edge.port}/api/storage/profile-system/profiles/x?an=acme"
                async with http.get(url, headers=headers) as resp:
                    assert resp.status == 200

            api = f"http://127.0.0.1:{port}/api/v1"

            async def query() -> list[dict[str, Any]] | None:
                try:
                    async with http.get(
                        f"{api}/query", params={"query": "sum(edge_requests_total)"}
                    ) as r:
                        data = await r.json()
                except aiohttp.ClientError:
                    return None
                result = data.get("data", {}).get("result", [])
                return result if result and float(result[0]["value"][1]) >= 3 else None

            result = await poll(query, timeout=60)
            assert float(result[0]["value"][1]) >= 3

            async with http.get(f"{api}/rules") as r:
                groups = (await r.json())["data"]["groups"]
            alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
            assert sum(len(g["rules"]) for g in groups) == sum(
                len(g["rules"]) for g in alerts["groups"]
            ), "Prometheus did not load every rule of alerts.yml"
    finally:
        prom.terminate()
        prom.wait(timeout=20)
