"""The account registry as the edge holds it: read-only, behind a cache, kept fresh by a poller.

::

    records.py    what an account partition holds, as frozen records; ``parse_account`` (pure)
    table.py      ``RegistryTable``: the hot-path reads (account, key owner, change log) of the
                  DynamoDB table; botocore errors become ``RegistryError`` there
    changelog.py  the change log's item format (one change item per registry write)
    poller.py     ``ChangePoller``: reads the change log a few times a second, drops what changed
    cache.py      ``CachedLookup``: fresh / stale / negative answers, single flight
    breaker.py    ``Breaker``: the circuit around registry reads (pure bookkeeping)

The key layout is ``residency_contract.tables``. The operators' writes (accounts, keys,
grants, the mover's job) are ``residency_ops.registry_writer``, a subclass of ``RegistryTable``
that the edge never imports.
"""

from .breaker import Breaker
from .cache import CachedLookup
from .changelog import Change
from .poller import ChangePoller
from .records import (
    ACTIVE,
    REVOKED,
    SUSPENDED,
    AccountRecord,
    ApiKey,
    KeyOwner,
    RegistryReader,
    UserGrant,
    parse_account,
    token_hash,
    user_hash,
)
from .table import RegistryTable

__all__ = [
    "ACTIVE",
    "REVOKED",
    "SUSPENDED",
    "AccountRecord",
    "ApiKey",
    "Breaker",
    "CachedLookup",
    "Change",
    "ChangePoller",
    "KeyOwner",
    "RegistryReader",
    "RegistryTable",
    "UserGrant",
    "parse_account",
    "token_hash",
    "user_hash",
]
