"""Every way the edge can refuse a request, as one exception tree, turned into JSON in one place.

Policy steps raise; only the handler boundary (``app.py``) catches, and only
``error_response`` below turns an error into bytes, so every refusal looks the same on the
wire: ``{"error": "<stable_code>", "message": "..."}``. Nothing is sent as JSON once a proxied
response has started streaming: after that the connection is cut instead.

::

    EdgeError                       status, stable code, optional Retry-After
    ├── RequestRejected             the client's request cannot be served (4xx)
    │   ├── BadRequest              400  invalid_path, invalid_account, ambiguous_account, ...
    │   ├── Unauthorized            401  missing_credentials, invalid_credentials
    │   ├── Forbidden               403  key_not_for_account, account_suspended
    │   ├── NotFound                404  not_found (outside the routed APIs), unknown_account
    │   ├── RequestTimeout          408  request_timeout (head or body not received in time)
    │   ├── PayloadTooLarge         413  payload_too_large
    │   ├── UriTooLong              414  uri_too_long
    │   ├── RateLimited             429  rate_limited (Retry-After)
    │   ├── HeadersTooLarge         431  too_many_headers, header_too_large
    │   └── ClientClosed            499  client_closed (logged and counted, never sent)
    └── ServiceFailure              the edge or the home region cannot serve now (5xx)
        ├── NotImplementedByEdge    501  unsupported_transfer_coding
        ├── UpstreamFailed          502  upstream_failed
        ├── Unavailable             503  overloaded, region_unavailable, registry_unavailable,
        │                                region_not_configured (Retry-After)
        ├── UpstreamTimeout         504  upstream_timeout
        └── VersionNotSupported     505  http_version_not_supported

    RegistryError                   internal: the registry could not be read (botocore errors
                                    are converted to it in ``registry.py``); the cache turns it
                                    into stale data or ``Unavailable("registry_unavailable")``.
"""

from __future__ import annotations

import json

from aiohttp import web


class EdgeError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, code: str | None = None, message: str = "", retry_after: int | None = None):
        super().__init__(message or code or self.code)
        if code is not None:
            self.code = code
        self.message = message or self.code.replace("_", " ")
        self.retry_after = retry_after


class RequestRejected(EdgeError):
    status = 400


class BadRequest(RequestRejected):
    status = 400
    code = "bad_request"


class Unauthorized(RequestRejected):
    status = 401
    code = "invalid_credentials"


class Forbidden(RequestRejected):
    status = 403
    code = "forbidden"


class NotFound(RequestRejected):
    status = 404
    code = "not_found"


class RequestTimeout(RequestRejected):
    status = 408
    code = "request_timeout"


class PayloadTooLarge(RequestRejected):
    status = 413
    code = "payload_too_large"


class UriTooLong(RequestRejected):
    status = 414
    code = "uri_too_long"


class RateLimited(RequestRejected):
    status = 429
    code = "rate_limited"


class HeadersTooLarge(RequestRejected):
    status = 431
    code = "too_many_headers"


class ClientClosed(RequestRejected):
    """The client went away before its answer: nginx's 499, so a client giving up is neither
    a 500 nor an alert. Raised into the request body stream, so whatever awaits it stops."""

    status = 499
    code = "client_closed"


class ServiceFailure(EdgeError):
    status = 500


class NotImplementedByEdge(ServiceFailure):
    status = 501
    code = "not_implemented"


class UpstreamFailed(ServiceFailure):
    status = 502
    code = "upstream_failed"


class Unavailable(ServiceFailure):
    status = 503
    code = "unavailable"


class UpstreamTimeout(ServiceFailure):
    status = 504
    code = "upstream_timeout"


class VersionNotSupported(ServiceFailure):
    status = 505
    code = "http_version_not_supported"


class RegistryError(Exception):
    """The account registry could not be read (network, throttling, missing table...)."""


JSON_CONTENT_TYPE = "application/json; charset=utf-8"


def error_parts(
    exc: EdgeError, extra_headers: dict[str, str] | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    """The single place where an error becomes an HTTP answer: status, headers, JSON body.

    Both front ends render these parts (``error_response`` for aiohttp.web, the raw listener
    writes them itself), so every refusal is the same on the wire."""
    body = json.dumps({"error": exc.code, "message": exc.message}, separators=(",", ":"))
    headers = [("Content-Type", JSON_CONTENT_TYPE)]
    if extra_headers:
        headers.extend(extra_headers.items())
    if exc.retry_after is not None:
        headers.append(("Retry-After", str(exc.retry_after)))
    return exc.status, headers, body.encode()


def error_response(exc: EdgeError, extra_headers: dict[str, str] | None = None) -> web.Response:
    status, headers, body = error_parts(exc, extra_headers)
    return web.Response(status=status, body=body, headers=dict(headers))
