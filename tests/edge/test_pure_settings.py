"""Tier (a), pure decision tables (no I/O, no servers): the edge's settings -- read from a TOML
file and the environment (``EDGE_*``, ``EDGE_REGIONS_JSON``), and every bad value refused with a
message that names it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_router.config import ConfigError, EdgeSettings


def test_settings_from_toml_and_env(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        'port = 8081\nhost_suffixes = ["localhost", "vtexcommercestable.com.br"]\n'
        '[regions."eu-west-1"]\ninstances = ["http://127.0.0.1:8101", '
        '{name = "eu-b", url = "http://127.0.0.1:8102"}]\ntable = "profiles"\n'
    )
    env = {
        "EDGE_CONFIG": str(cfg),
        "EDGE_REGION_SECRET_EU_WEST_1": "x" * 20,
        "EDGE_CACHE_TTL_S": "9",
    }
    s = EdgeSettings.from_env(env)
    assert s.port == 8081 and s.cache_ttl_s == 9.0
    assert s.stale_while_revalidate_s is None  # unset: as long as stale_if_error_s
    assert (s.registry_breaker_failures, s.registry_breaker_open_s) == (3, 5.0)
    s3 = EdgeSettings.from_env(
        {**env, "EDGE_STALE_WHILE_REVALIDATE_S": "0", "EDGE_REGISTRY_BREAKER_OPEN_S": "2.5"}
    )
    assert (s3.stale_while_revalidate_s, s3.registry_breaker_open_s) == (0.0, 2.5)
    assert (s.registry_poll_interval_s, s.registry_change_overlap_s) == (0.25, 10.0)
    off = EdgeSettings.from_env({**env, "EDGE_REGISTRY_POLL_INTERVAL_S": "0"})
    assert off.registry_poll_interval_s == 0.0  # the change log is not read: TTL only
    eu = s.region("eu-west-1")
    assert eu is not None and [i.name for i in eu.instances] == ["127.0.0.1:8101", "eu-b"]
    assert eu.assertion_secret == b"x" * 20
    js = json.dumps(
        {"us-east-1": {"instances": ["http://h:1"], "table": "t-x", "assertion_secret": "y" * 16}}
    )
    s2 = EdgeSettings.from_env({"EDGE_REGIONS_JSON": js})
    assert [r.name for r in s2.regions] == ["us-east-1"]


S16 = "s" * 16


def _rj(**spec: object) -> dict[str, str]:
    return {"EDGE_REGIONS_JSON": json.dumps({"eu-west-1": spec})}


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({}, "regions"),
        ({"EDGE_REGIONS_JSON": "{"}, "EDGE_REGIONS_JSON"),
        ({"EDGE_REGIONS_JSON": '{"mars-1": {}}'}, "regions"),
        (_rj(instances=[], table="ttt"), "instances"),
        (_rj(instances=["ftp://x:1"], table="ttt", assertion_secret=S16), "instances[0]"),
        (_rj(instances=["http://x:1/p"], table="ttt", assertion_secret=S16), "path"),
        (_rj(instances=["http://x:1"], table="ttt"), "EDGE_REGION_SECRET_EU_WEST_1"),
        (_rj(instances=["http://x:1"], table="ttt", assertion_secret="short"), "assertion_secret"),
        (_rj(instances=["http://x:1"], assertion_secret=S16), "table"),
        ({"EDGE_PORT": "0"}, "EDGE_PORT"),
        ({"EDGE_MAX_BODY_BYTES": "abc"}, "EDGE_MAX_BODY_BYTES"),
        ({"EDGE_HOST_SUFFIXES": "bad host!"}, "EDGE_HOST_SUFFIXES"),
        ({"EDGE_BUFFER_BODY_BYTES": "999999999"}, "buffer_body_bytes"),
        ({"EDGE_STALE_WHILE_REVALIDATE_S": "-1"}, "EDGE_STALE_WHILE_REVALIDATE_S"),
        ({"EDGE_STALE_WHILE_REVALIDATE_S": "nan"}, "EDGE_STALE_WHILE_REVALIDATE_S"),
        (
            {"EDGE_STALE_WHILE_REVALIDATE_S": "400", "EDGE_STALE_IF_ERROR_S": "300"},
            "stale_while_revalidate_s",
        ),
        ({"EDGE_REGISTRY_BREAKER_FAILURES": "0"}, "EDGE_REGISTRY_BREAKER_FAILURES"),
        ({"EDGE_REGISTRY_BREAKER_OPEN_S": "0"}, "EDGE_REGISTRY_BREAKER_OPEN_S"),
        ({"EDGE_REGISTRY_MAX_ATTEMPTS": "0"}, "EDGE_REGISTRY_MAX_ATTEMPTS"),
        ({"EDGE_REGISTRY_WAIT_S": "0"}, "EDGE_REGISTRY_WAIT_S"),
        ({"EDGE_LISTENER": "uvicorn"}, "EDGE_LISTENER"),
        ({"EDGE_REGISTRY_POLL_INTERVAL_S": "-0.1"}, "EDGE_REGISTRY_POLL_INTERVAL_S"),
        ({"EDGE_REGISTRY_POLL_INTERVAL_S": "61"}, "EDGE_REGISTRY_POLL_INTERVAL_S"),
        ({"EDGE_REGISTRY_CHANGE_OVERLAP_S": "0.5"}, "EDGE_REGISTRY_CHANGE_OVERLAP_S"),
        (
            {"EDGE_REGISTRY_POLL_INTERVAL_S": "3", "EDGE_REGISTRY_CHANGE_OVERLAP_S": "5"},
            "EDGE_REGISTRY_CHANGE_OVERLAP_S",
        ),
        ({"EDGE_REGISTRY_POLL_MAX_BACKOFF_S": "0.1"}, "EDGE_REGISTRY_POLL_MAX_BACKOFF_S"),
    ],
)
def test_settings_refuse_bad_config(env: dict[str, str], fragment: str) -> None:
    base = (
        '{"eu-west-1": {"instances": ["http://x:1"], "table": "ttt", "assertion_secret": "%s"}}'
        % ("s" * 16)
    )
    if "EDGE_REGIONS_JSON" not in env and env:
        env = {**env, "EDGE_REGIONS_JSON": base}
    with pytest.raises(ConfigError) as err:
        EdgeSettings.from_env(env)
    assert fragment in str(err.value)
