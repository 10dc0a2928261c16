"""The edge's HTTP/1.1 on the wire, behind one door: everything else imports from here.

::

    listener.py    one client connection: llhttp on a bare protocol, the exchange's Sink; the
                   Service it serves (the pipeline, handed over by the app)
    runner.py      the protocol factory (timeout sweep, shutdown) and the web.BaseRunner
    accept.py      the listening socket, accepted in batches
    connection.py  one keep-alive socket to a store, its watchdog
    pool.py        the capped, ordered pool of those sockets per instance
    answer.py      the store's answer, and the whole-answer reader
    framing.py     what a request message may be before any policy step
    linger.py      the lingering close after a connection's last answer (both front ends)
    compat.py      every private aiohttp name the above rely on, and only there

The listener knows nothing of the upstream side nor of the pipeline: the app hands it a
``Service`` (under ``SERVICE``), the forwarder asks a pool for a connection.
"""

from .accept import BatchAcceptSite
from .answer import Answer, parse_whole_answer
from .compat import HttpProcessingError, StreamReader, take_connection
from .connection import UpstreamConnection
from .framing import asks_continue, check_message, origin_form
from .linger import linger
from .listener import EdgeProtocol
from .pool import ConnectionPool
from .runner import SERVICE, EdgeRunner, EdgeServer, Service

__all__ = [
    "SERVICE",
    "Answer",
    "BatchAcceptSite",
    "ConnectionPool",
    "EdgeProtocol",
    "EdgeRunner",
    "EdgeServer",
    "HttpProcessingError",
    "Service",
    "StreamReader",
    "UpstreamConnection",
    "asks_continue",
    "check_message",
    "linger",
    "origin_form",
    "parse_whole_answer",
    "take_connection",
]
