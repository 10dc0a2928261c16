"""The admin app: ``/metrics``, ``/healthz`` (the process is alive), ``/readyz`` (it can serve:
an available instance in some region, and a registry that answers or a cache that knows),
``/registry/changes`` (this worker's change-log poller: its pid, polls, errors and the last
changes applied with their lag -- per worker, unlike /metrics, which sums the workers)."""

from __future__ import annotations

import os

from aiohttp import web

from .app import CHANGE_POLLER, METRICS, STATE
from .metrics import CONTENT_TYPE


def create_admin_app(edge: web.Application) -> web.Application:
    """/metrics, /healthz (process alive), /readyz (can serve: a healthy region + registry)."""
    admin = web.Application()
    metrics = edge[METRICS]

    async def metrics_view(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        st = edge.get(STATE)
        if st is None:
            return web.json_response({"status": "starting"}, status=503)
        upstream_ok = st.pools.has_available()
        registry_ok = st.accounts.last_ok or len(st.accounts) > 0
        ok = upstream_ok and registry_ok
        return web.json_response(
            {
                "status": "ready" if ok else "not_ready",
                "upstream": upstream_ok,
                "registry": registry_ok,
            },
            status=200 if ok else 503,
        )

    async def registry_changes(_request: web.Request) -> web.Response:
        poller = edge.get(CHANGE_POLLER)
        if poller is None:
            return web.json_response({"pid": os.getpid(), "enabled": False, "recent": []})
        st = poller.status
        state = edge.get(STATE)
        return web.json_response(
            {
                "pid": os.getpid(),
                "enabled": True,
                "cached_accounts": len(state.accounts) if state is not None else 0,
                "polls": st.polls,
                "errors": st.errors,
                "applied": st.applied,
                "last_ok_at": st.last_ok_at,
                "recent": [
                    {"id": a.id, "kind": a.kind, "lag_s": a.lag_s, "reloaded": a.reloaded}
                    for a in st.recent
                ],
            }
        )

    admin.router.add_get("/metrics", metrics_view)
    admin.router.add_get("/registry/changes", registry_changes)
    admin.router.add_get("/healthz", healthz)
    admin.router.add_get("/readyz", readyz)
    return admin
