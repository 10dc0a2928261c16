"""Running the edge: one process per worker, all sharing the port through SO_REUSEPORT.

Each worker has its own event loop (uvloop when installed), its own registry cache and its own
upstream connection pools -- nothing is shared but the listening port, so workers never contend
on a lock. The public port is served by ``wire.EdgeRunner`` (aiohttp's C parser on a bare
protocol); the admin port by plain ``aiohttp.web``. The listen backlog (``backlog``, default
2048) absorbs a burst of simultaneous connects; Linux silently caps it at
``net.core.somaxconn``, so the worker logs a warning when that cap bites.

With more than one worker the parent only supervises: it forwards SIGTERM/SIGINT and waits.
Metrics of all workers are aggregated through prometheus_client's multiprocess directory (a
fresh temporary one per run), so any worker's /metrics shows the whole process group.

Shutdown (SIGTERM/SIGINT): stop accepting, let in-flight requests finish within
``shutdown_timeout_s``, then close the upstream connection pools, the health checker and the
registry client (``cleanup_ctx``), then the admin listener.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile

from aiohttp import web

from .config import EdgeSettings

log = logging.getLogger("edge_router")
GC_GEN0_THRESHOLD = 20_000


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("edge_router.access")
    access.handlers[:] = [handler]
    access.propagate = False
    access.setLevel(logging.INFO)
    logging.basicConfig(
        level=level,
        format='{"ts":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s",'
        '"message":"%(message)s"}',
        stream=sys.stderr,
    )


async def run_worker(settings: EdgeSettings, index: int = 0) -> None:
    from .admin import create_admin_app
    from .app import create_app
    from .wire import BatchAcceptSite, EdgeRunner

    app = create_app(settings)
    admin = create_admin_app(app)
    reuse = settings.workers > 1
    web_listener = settings.listener == "web"
    runner: web.BaseRunner = (
        web.AppRunner(app, access_log=None, shutdown_timeout=settings.shutdown_timeout_s)
        if web_listener
        else EdgeRunner(app, shutdown_timeout=settings.shutdown_timeout_s)
    )
    cap = somaxconn()
    if cap is not None and settings.backlog > cap:
        log.warning(
            "backlog %d is capped by the kernel at net.core.somaxconn=%d", settings.backlog, cap
        )
    admin_runner = web.AppRunner(admin, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await admin_runner.setup()
    try:
        site = web.TCPSite if web_listener else BatchAcceptSite
        await site(
            runner, settings.host, settings.port, backlog=settings.backlog, reuse_port=reuse
        ).start()
        await web.TCPSite(
            admin_runner, settings.admin_host, settings.admin_port, reuse_port=reuse
        ).start()
        log.info("edge worker %d listening on %s:%d", index, settings.host, settings.port)
        tune_gc()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("edge worker %d draining", index)
    finally:
        await runner.cleanup()
        await admin_runner.cleanup()


def tune_gc() -> None:
    """Keep the cyclic GC off the request path.

    Everything alive once the worker is up (modules, botocore's models, the app) is frozen
    into the permanent generation, so full collections no longer walk it -- on the bench
    machine such a walk stalled the worker for ~100+ ms at a time. The gen-0 threshold is
    raised because a proxied request allocates many short-lived containers (and frees them
    by reference counting); collecting every 700 allocations was measurable per request."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 100)


def somaxconn() -> int | None:
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _run_loop(coro_factory) -> None:  # type: ignore[no-untyped-def]
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(coro_factory())


def serve(
    settings: EdgeSettings, workers: int | None = None, worker_index: int | None = None
) -> int:
    configure_logging(settings.log_level)
    n = workers or settings.workers
    if worker_index is not None or n == 1:
        _run_loop(lambda: run_worker(settings, worker_index or 0))
        return 0
    return _supervise(n)


def _supervise(n: int) -> int:
    metrics_dir = tempfile.mkdtemp(prefix="edge-metrics-")
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=metrics_dir, EDGE_WORKERS=str(n))
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "edge_router", "serve", "--worker-index", str(i)], env=env
        )
        for i in range(n)
    ]
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    try:
        while children:
            for child in list(children):
                try:
                    rc = child.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    continue
                children.remove(child)
                if not stopping:
                    # A worker died on its own: stop the rest and let the orchestrator restart us.
                    log.error("worker exited with %s; stopping", rc)
                    code = 1
                    forward(signal.SIGTERM, None)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return code
