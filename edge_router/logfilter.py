"""Keep request bytes out of the logs when aiohttp's parser rejects a malformed request.

aiohttp answers an unparseable request with 400 and logs it on ``aiohttp.server`` at ERROR with
the exception attached; the exception's message quotes the offending line of the request (a
request line holding an e-mail used as a profile id, a header value ...). That is PII in logs,
and a client can make us write it at will. ``RedactParserErrors`` keeps the record (so bad
traffic stays visible) but replaces the exception with its class name and status.
"""

from __future__ import annotations

import logging

from .wire import HttpProcessingError


class RedactParserErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = "rejected a malformed request: %s (status %s)"
            record.args = (type(exc).__name__, exc.code)
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def install() -> None:
    """Attach the filter to aiohttp's server logger (idempotent)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, RedactParserErrors) for f in logger.filters):
        logger.addFilter(RedactParserErrors())
