"""The store's side of an account move, behind one door: ``/_residency/transfer/*`` (role ``move``).

The mover copies an account from one region's store to another's through these endpoints
(the contract: ``docs/move_contract.md``); nothing else in the store calls them, and they are
the only routes exempt from the fence (``fence.py``: import and purge check the state they
need instead). Inside:

- ``handlers``: the HTTP of the endpoints, bodies validated completely before anything runs,
  and ``TRANSFER_ROUTES``;
- ``service``: ``Transfer``, what each endpoint does: set the fence, export (data keys
  re-wrapped for the destination), import, digests, purge, the move's audit records;
- ``scan``: one account's items a parallel Scan page at a time, and a purge's sweep;
- ``items``: an item's JSON form as it travels, its kind and its digest (pure);
- ``key_pair``: the region's RSA transfer key pair that data keys cross regions under;
- ``change_feed``: the account's keys changed since a checkpoint, from the table's Stream.

Its errors are in the store's one tree (``errors.py``). ``app.py`` imports what it wires from
here.
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
