"""Tier (b): real aiohttp servers on 127.0.0.1 -- fake stores behind the real edge. Metrics and
logs: request, upstream and registry metrics on the admin app, one JSON access-log line per
request, no account or e-mail in the metrics and no e-mail in the logs, and the admin app's
health endpoints.
"""

from __future__ import annotations

import json

from .conftest import P


async def test_metrics_and_access_log(build, caplog) -> None:  # type: ignore[no-untyped-def]
    st = await build(access_log=True)
    caplog.set_level("INFO", logger="edge_router.access")
    email_path = f"{P}/profiles/jane.roe%40example.com?an=acme&alternativeKey=email"
    assert (await st.get(email_path)).status == 200
    assert (await st.get("/nope?an=acme")).status == 404
    text = await st.metrics()
    assert (
        'edge_requests_total{method="GET",region="eu-west-1",'
        'route="/api/storage/profile-system/profiles/{profileId}",status_class="2xx"} 1.0'
    ) in text
    assert (
        'edge_requests_total{method="GET",region="none",route="other",status_class="4xx"} 1.0'
        in text
    )
    for name in (
        "edge_request_duration_seconds_bucket",
        "edge_upstream_duration_seconds_bucket",
        "edge_upstream_healthy",
        "edge_region_healthy_instances",
        "edge_registry_lookups_total",
        "edge_in_flight_requests",
        "edge_cross_region_refusals_total",
        "edge_upstream_retries_total",
        "edge_rate_limited_total",
    ):
        assert name in text, name
    assert "jane" not in text and "acme" not in text
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "edge_router.access"]
    assert len(lines) == 2
    first = lines[0]
    assert first["route"] == "/api/storage/profile-system/profiles/{profileId}"
    assert first["account"] == "acme" and first["region"] == "eu-west-1" and first["status"] == 200
    assert first["upstream"].startswith("eu-west-1-") and first["request_id"]
    assert all("jane" not in r.getMessage() for r in caplog.records)
    health = await st.admin.get("/healthz")
    assert health.status == 200
    assert (await st.admin.get("/readyz")).status == 200
