"""The edge forwards the erasure status read-back like the erasure itself (pure path rules)."""

from __future__ import annotations

from edge_router import api_paths


def test_erasure_status_path_is_routed_and_named() -> None:
    target = "/api/user-rights/requests/3e2f53dc-b099-4dc8-9727-581b2a97f39c?an=acme"
    path = api_paths.split_target(target)
    assert api_paths.RouteTable().match(path) == "/api/user-rights/requests/{requestId}"
    assert "/api/user-rights/requests/{requestId}" not in api_paths.TEMPLATES  # not a spec path
