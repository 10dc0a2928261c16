"""Every way the edge can refuse a request, as one exception tree, turned into JSON in one place.

Policy steps raise; only the pipeline and the listener's parser boundary catch, and only
``error_response`` below turns an error into an answer, so every refusal looks the same on the
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
        ├── UpstreamFailed          502  upstream_failed: one attempt at an instance failed,
        │   │                            from the pool (``wire``) to the answer, one type
        │   ├── ConnectFailed       502  nothing was sent (may go to another instance; none
        │   │   │                        left to try: 503 region_unavailable)
        │   │   └── ConnectTimedOut 502  no connection within connect_timeout_s
        │   ├── ConnectionBroken    502  broken after (maybe) sending; ``answered``
        │   └── UpstreamTimeout     504  upstream_timeout: the store silent, the deadline
        │       └── PoolTimeout     504  no socket to the instance free before the deadline
        ├── Unavailable             503  overloaded, region_unavailable, registry_unavailable,
        │                                region_not_configured (Retry-After)
        └── VersionNotSupported     505  http_version_not_supported

    RegistryError                   internal: the registry could not be read (botocore errors
                                    are converted to it in ``registry/table.py``); the cache
                                    turns it into stale data or
                                    ``Unavailable("registry_unavailable")``. (The operators'
                                    writer adds ``RegistryConflict``: ``residency_ops``.)
"""

from __future__ import annotations

import json
from typing import TypeVar

from .headers import DATA_REGION, REQUEST_ID, Block


class EdgeError(Exception):
    status = 500
    code = "internal_error"
    # The label a refused credential is counted under in ``edge_auth_failures_total`` (finer
    # than ``code``, never sent to the client); "" counts it under its code. See ``refusal``.
    reason = ""

    def __init__(self, code: str | None = None, message: str = "", retry_after: int | None = None):
        super().__init__(message or code or self.code)
        if code is not None:
            self.code = code
        self.message = message or self.code.replace("_", " ")
        self.retry_after = retry_after


E = TypeVar("E", bound=EdgeError)


def refusal(cls: type[E], code: str, reason: str, message: str) -> E:
    """``cls(code, message)`` counted under ``reason``: how ``auth`` and ``user_token`` refuse."""
    exc = cls(code, message)
    exc.reason = reason
    return exc


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
    """An attempt at an instance of the home region failed: raised where it happens (the pool
    and its connections, ``wire``), judged by ``routing.may_retry`` (another instance of the
    same region?), and, not retried, the answer as it is. ``detail`` says what happened, for
    logs; the client only ever sees the class's fixed message."""

    status = 502
    code = "upstream_failed"
    public = "the home region's instance failed to answer"

    def __init__(self, detail: str = "") -> None:
        super().__init__(self.code, self.public)
        self.detail = detail or self.public
        self.args = (self.detail,)


class ConnectFailed(UpstreamFailed):
    """The TCP connection could not be made: nothing was sent."""


class ConnectTimedOut(ConnectFailed):
    """No connection within ``connect_timeout_s``: the instance unreachable, or this edge's
    loop too busy to see the connection made (a long pause looks the same from here)."""


class ConnectionBroken(UpstreamFailed):
    """The connection failed after (maybe) sending; ``answered``: had a byte of the answer
    arrived?"""

    def __init__(self, detail: str, answered: bool) -> None:
        super().__init__(detail)
        self.answered = answered


class UpstreamTimeout(UpstreamFailed):
    """The store went silent for the read timeout, or the request's deadline passed."""

    status = 504
    code = "upstream_timeout"
    public = "the home region did not answer in time"


class PoolTimeout(UpstreamTimeout):
    """No connection to the instance could be had before the request's deadline."""


class Unavailable(ServiceFailure):
    status = 503
    code = "unavailable"


class VersionNotSupported(ServiceFailure):
    status = 505
    code = "http_version_not_supported"


class RegistryError(Exception):
    """The account registry could not be read (network, throttling, missing table...)."""


JSON_CONTENT_TYPE = "application/json; charset=utf-8"


class ErrorAnswer:
    """A refusal as both front ends write it: status, header block (``headers.Block``), body."""

    __slots__ = ("block", "body", "status")

    def __init__(self, status: int, block: Block, body: bytes) -> None:
        self.status = status
        self.block = block
        self.body = body


def error_response(exc: EdgeError, request_id: str, region: str = "none") -> ErrorAnswer:
    """The single place where an error becomes an HTTP answer: its status, a JSON body
    ``{"error": code, "message": ...}``, and the headers every refusal carries (the request
    id; the account's region once known; ``Retry-After`` when the error has one)."""
    body = json.dumps({"error": exc.code, "message": exc.message}, separators=(",", ":"))
    block = f"\r\nContent-Type: {JSON_CONTENT_TYPE}\r\n{REQUEST_ID}: {request_id}"
    if region != "none":
        block += f"\r\n{DATA_REGION}: {region}"
    if exc.retry_after is not None:
        block += f"\r\nRetry-After: {exc.retry_after}"
    return ErrorAnswer(exc.status, block, body.encode())
