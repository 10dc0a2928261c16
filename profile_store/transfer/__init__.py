"""The store's side of an account move, behind one door: ``/_residency/transfer/*`` (role move).

::

    handlers.py      the endpoints' HTTP: bodies checked whole before anything runs; the routes
    service.py       Transfer: fence, export, import, digests, purge, the move's audit records
    scan.py          one account's items, a parallel Scan page at a time; a purge's sweep
    items.py         an item as it travels: its JSON form, its kind, its digest (pure)
    key_pair.py      the region's RSA transfer key pair that data keys cross regions under
    change_feed.py   the account's keys changed since a checkpoint, from the table's Stream

The mover drives them (the contract: ``docs/move_contract.md``); nothing else in the store
calls them, and they are the only routes exempt from the fence (``fence.py``): import and purge
check the state they need instead. Their errors are in the store's one tree (``errors.py``);
``app.py`` wires what this door exports.
"""

from __future__ import annotations

from .change_feed import ChangeFeed
from .handlers import CHANGE_FEED, MAX_BODY, TRANSFER, TRANSFER_ROUTES
from .key_pair import load_key_pair
from .service import Transfer

__all__ = [
    "CHANGE_FEED",
    "MAX_BODY",
    "TRANSFER",
    "TRANSFER_ROUTES",
    "ChangeFeed",
    "Transfer",
    "load_key_pair",
]
