"""The store's aiohttp application: one instance serves one region's table.

``create_app(settings)`` wires the routes (``handlers.ROUTES``, one per spec operation), three
middlewares that run as small named steps, and the shared state under typed ``web.AppKey``s:

1. ``observe``: request id, the operation name (for metrics and the DynamoDB call labels), the
   request counter and one log line per request (operation, status, time; never the path, which
   holds an email or a document on alternative-key routes);
2. ``errors``: the one place any error becomes JSON ``{"error", "message"}`` (our StoreError
   tree, the envelope-encryption tree via ``errors.from_crypto``, aiohttp's own 404/405/413,
   and a last-resort 500 without a traceback);
3. ``authenticate``: edge assertion and role (``auth``), for every path except the probes; a
   write request also gets its ``idempotency.WriteIntent`` (token source: ``Idempotency-Key``
   or the request id) on the ``Caller``.

Routes: the spec's Profile System operations (``handlers.ROUTES``), erasure, its status and the
admin audit listing (``rights_handlers.RIGHTS_ROUTES``), and the account-move transfer endpoints
(``transfer.TRANSFER_ROUTES``, role ``move``). Every other authenticated route passes
the account's fence first (``fence.py``: 421 for an account that moved away or has not arrived,
503 for a write while it is frozen).

The DynamoDB client is created once per process in ``cleanup_ctx`` (closed on shutdown), with
the key provider that wraps subjects' data keys: ``LocalKeyProvider`` from
``local_master_key_file`` (dev/tests; missing -> ConfigError naming
PROFILE_STORE_LOCAL_MASTER_KEY_FILE) or ``KmsKeyProvider`` with a KMS client for the store's own
region. The PITR check runs there too: a real table without PITR stops the start when
require_pitr.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiobotocore.session import get_session
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from residency_contract.protocol import REQUEST_ID_HEADER

from . import auth, idempotency
from .config import StoreSettings
from .crypto import CryptoError, DataKeyStore
from .domain import Caller, ProfileService
from .erasure import Eraser
from .errors import AccountMoving, ResidencyMismatch, StoreError, from_crypto
from .fence import Fence, FenceCache
from .handlers import CALLER, ROUTES, SERVICE, Handler, dumps
from .key_providers import KeyProvider, provider_from_settings
from .metrics import CURRENT_OPERATION, StoreMetrics
from .provisioning import PitrState, check_pitr, describe_pitr, warn_without_stream
from .repository import Repository, client_config
from .rights_handlers import ERASER, RIGHTS_ROUTES
from .transfer import (
    CHANGE_FEED,
    MAX_BODY,
    TRANSFER,
    TRANSFER_ROUTES,
    ChangeFeed,
    Transfer,
    load_key_pair,
)

log = logging.getLogger("profile_store")


@dataclass(slots=True)
class Readiness:
    pitr: PitrState = PitrState.UNKNOWN


SETTINGS: web.AppKey[StoreSettings] = web.AppKey("settings", StoreSettings)
METRICS: web.AppKey[StoreMetrics] = web.AppKey("metrics", StoreMetrics)
KEYS: web.AppKey[DataKeyStore] = web.AppKey("data_keys", DataKeyStore)
REPOSITORY: web.AppKey[Repository] = web.AppKey("repository", Repository)
READINESS: web.AppKey[Readiness] = web.AppKey("readiness", Readiness)
# Every account's fence marker, cached (``fence.py``): ``authenticate`` admits each request
# through it, and the transfer service forgets an account's entry when it sets the fence.
FENCES: web.AppKey[FenceCache] = web.AppKey("fences", FenceCache)
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_HTTP_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


def _json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None):
    return web.json_response(
        {"error": code, "message": message}, status=status, headers=headers, dumps=dumps
    )


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = incoming if _REQUEST_ID.match(incoming) else str(uuid.uuid4())
    request[REQUEST_ID] = request_id
    route = request.match_info.route
    operation = (
        route.name if request.match_info.http_exception is None and route.name else "unmatched"
    )
    token = CURRENT_OPERATION.set(operation)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers[REQUEST_ID_HEADER] = request_id
        return response
    finally:
        CURRENT_OPERATION.reset(token)
        request.app[METRICS].request(operation, status)
        log.info(
            "request op=%s status=%d ms=%.1f rid=%s",
            operation,
            status,
            (time.perf_counter() - started) * 1000,
            request_id,
        )


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except StoreError as exc:
        if isinstance(exc, AccountMoving | ResidencyMismatch):
            write = request.method in idempotency.WRITE_METHODS
            request.app[METRICS].fence_refusal(exc.code, write=write)
        # exc.body(): {"error", "message"}, and what a class adds (AccountMoving: "refused")
        return web.json_response(exc.body(), status=exc.status, headers=exc.headers, dumps=dumps)
    except CryptoError as exc:
        mapped = from_crypto(exc)
        if mapped.status >= 500:
            # The type only: crypto messages name subjects and keys.
            log.error("%s in %s", type(exc).__name__, CURRENT_OPERATION.get())
        return _json_error(mapped.status, mapped.code, mapped.message, mapped.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        message = {
            404: "no such resource",
            405: "method not allowed on this resource",
            413: "request body is larger than the store accepts",
        }.get(exc.status, exc.reason)
        return _json_error(exc.status, code, message, headers)
    except Exception as exc:
        # The message of an arbitrary exception may quote data: log its type only.
        log.error("unhandled %s in %s", type(exc).__name__, CURRENT_OPERATION.get())
        return _json_error(500, "internal_error", "internal error")


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in auth.PUBLIC_PATHS:
        return await handler(request)
    settings = request.app[SETTINGS]
    assertion = auth.authenticate(
        request.headers.get(auth.ASSERTION_HEADER),
        settings,
        method=request.method,
        target=request.raw_path,
    )
    write = None
    if request.match_info.http_exception is None:
        operation = request.match_info.route.name or ""
        auth.authorize(assertion, auth.required_roles(request.method, operation))
        if request.method in idempotency.WRITE_METHODS:
            write = idempotency.intent(
                account=assertion.account,
                operation=operation,
                path=request.rel_url.raw_path,
                query=tuple(sorted(request.query.items())),
                key=idempotency.parse_key(request.headers.get(idempotency.HEADER)),
                request_id=request[REQUEST_ID],
            )
        if not auth.is_transfer(operation):
            # Refused here on the cached view (reads); writes check it again atomically.
            await request.app[FENCES].admit(
                assertion.account, write=request.method in idempotency.WRITE_METHODS
            )
    request[CALLER] = Caller(assertion.account, assertion.principal, request[REQUEST_ID], write)
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    return web.json_response(
        {"status": "ok", "region": settings.region, "instance": settings.instance_id}
    )


async def readyz(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    repo = request.app[REPOSITORY]
    readiness = request.app[READINESS]
    body: dict[str, object] = {
        "region": settings.region,
        "instance": settings.instance_id,
        "table": settings.table,
    }
    try:
        table = await repo.describe_table()
        body["dynamodb"] = "ok"
        body["tableStatus"] = table.get("TableStatus", "UNKNOWN")
        if readiness.pitr is PitrState.UNKNOWN:
            readiness.pitr = await describe_pitr(repo.client, settings.table)
    except StoreError as exc:
        body["dynamodb"] = "unavailable"
        body["error"] = exc.code
    except Exception as exc:  # describe_pitr talks to the client directly
        body["dynamodb"] = "unavailable"
        body["error"] = type(exc).__name__
    body["pitr"] = readiness.pitr.value
    ready = (
        body.get("dynamodb") == "ok"
        and body.get("tableStatus") in {"ACTIVE", "UPDATING"}
        and readiness.pitr is not PitrState.UNKNOWN
        and not (readiness.pitr is PitrState.DISABLED and settings.require_pitr)
    )
    body["status"] = "ready" if ready else "not_ready"
    return web.json_response(body, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def _read_fence(repo: Repository, account: str) -> Fence | None:
    # Counted as its own operation: at most one read per account and second, whichever
    # request happens to miss the cache.
    token = CURRENT_OPERATION.set("Fence")
    try:
        return await repo.read_fence(account)
    finally:
        CURRENT_OPERATION.reset(token)


def _store_context(
    key_provider: KeyProvider | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def store_context(app: web.Application) -> AsyncIterator[None]:
        """One DynamoDB client (and KMS client) for the life of the process; key provider
        checked and PITR checked before serving."""
        settings = app[SETTINGS]
        session = get_session()
        config = client_config(settings)
        async with AsyncExitStack() as stack:

            async def aws(service: str, endpoint: str | None) -> Any:
                # The store's own region only: PII and its keys never leave the data's region.
                return await stack.enter_async_context(
                    session.create_client(
                        service, region_name=settings.region, endpoint_url=endpoint, config=config
                    )
                )

            client = await aws("dynamodb", settings.dynamodb_endpoint)
            provider = key_provider
            if provider is None:
                kms = None
                if settings.key_provider == "kms":
                    kms = await aws("kms", settings.kms_endpoint)
                provider = provider_from_settings(settings, kms_client=kms)
            await provider.start()
            repo = Repository(
                client,
                settings.table,
                app[METRICS],
                write_attempts=settings.write_attempts,
                write_budget_s=settings.write_budget_s,
            )
            keys = DataKeyStore(client, settings.table, provider, region=settings.region)
            app[REPOSITORY] = repo
            app[KEYS] = keys
            app[SERVICE] = ProfileService(
                repo,
                keys,
                update_retries=settings.update_retries,
                idempotency_ttl_s=settings.idempotency_ttl_s,
            )
            app[ERASER] = Eraser(repo, keys)
            fences = FenceCache(partial(_read_fence, repo), ttl_s=settings.fence_cache_s)
            app[FENCES] = fences
            app[TRANSFER] = Transfer(
                repo,
                keys,
                fences,
                region=settings.region,
                key_pair=partial(
                    load_key_pair,
                    transfer_key_file=settings.transfer_key_file,
                    local_master_key_file=settings.local_master_key_file,
                    key_provider=settings.key_provider,
                ),
            )
            streams = await aws("dynamodbstreams", settings.dynamodb_endpoint)
            app[CHANGE_FEED] = ChangeFeed(repo, streams)
            token = CURRENT_OPERATION.set("startup")
            try:
                app[READINESS].pitr = await check_pitr(
                    client, settings.table, require_pitr=settings.require_pitr
                )
                await warn_without_stream(client, settings.table)
            finally:
                CURRENT_OPERATION.reset(token)
            yield

    return store_context


def create_app(
    settings: StoreSettings, *, key_provider: KeyProvider | None = None
) -> web.Application:
    """The store's application; ``key_provider`` replaces the one built from ``settings``
    (tests use it to inject a failing or counting provider)."""
    app = web.Application(
        middlewares=[observe, errors, authenticate], client_max_size=settings.max_body_bytes
    )
    app[SETTINGS] = settings
    app[METRICS] = StoreMetrics(region=settings.region, instance=settings.instance_id)
    app[READINESS] = Readiness()
    app.router.add_get("/healthz", healthz, name="healthz", allow_head=False)
    app.router.add_get("/readyz", readyz, name="readyz", allow_head=False)
    app.router.add_get("/metrics", metrics, name="metrics", allow_head=False)
    app[MAX_BODY] = settings.transfer_max_body_bytes
    for method, path, name, handler in (*ROUTES, *RIGHTS_ROUTES, *TRANSFER_ROUTES):
        app.router.add_route(method, path, handler, name=name)
    app.cleanup_ctx.append(_store_context(key_provider))
    return app
