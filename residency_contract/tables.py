"""The key layout of every table of the project, defined once: the schema and the key builders.

Two kinds of table, each with a string partition key ``pk`` and a string sort key ``sk``
(``PK_SK_KEYS``; a store's ``create-table`` and ``registry create-table`` both build from it):

The account registry (one, global; the edge reads it, the operator tools write it)::

    pk ACCOUNT#{account}   sk META                 region, status, generation, moving
                           sk KEY#{app_key}        tokenHash, roles, status
                           sk USER#{user_hash}     roles, status
    pk APPKEY#{app_key}    sk KEY                  the owner index: account, tokenHash, status
    pk MOVE#{account}      sk JOB                  an account move's job record
    pk CHANGES             sk {ms:013d}#{8 hex}    the change log the edges poll

A regional profile table (one per region; the stores write it, the operator tools read it)::

    pk A#{account}#...                             every item of the account's data
    pk A#{account}#META    sk SALT                 the account's salt: the account has data
    pk FENCE#{account}     sk F                    a move's fence (outside the account's data)
    pk MOVED#{account}     sk JOB#{job}#{event}    the record of a move (kept by purge)

Everything that reads or writes these items builds its keys here; nothing spells a prefix as a
literal (``tests/test_contract_literals.py``).
"""

from __future__ import annotations

from typing import Any

Key = dict[str, dict[str, str]]

# A string partition key ``pk`` and a string sort key ``sk``.
PK_SK_KEYS: dict[str, Any] = {
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
    ],
    "KeySchema": [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ],
}


def item_key(pk: str, sk: str) -> Key:
    """The DynamoDB key of the item at (``pk``, ``sk``)."""
    return {"pk": {"S": pk}, "sk": {"S": sk}}


# --- the account registry ---------------------------------------------------------------------

ACCOUNT_PREFIX = "ACCOUNT#"
META_SK = "META"
KEY_SK_PREFIX = "KEY#"
USER_SK_PREFIX = "USER#"
APPKEY_PREFIX = "APPKEY#"
APPKEY_SK = "KEY"
MOVE_PREFIX = "MOVE#"
MOVE_SK = "JOB"
CHANGES_PK = "CHANGES"


def account_pk(account: str) -> str:
    return f"{ACCOUNT_PREFIX}{account}"


def account_of_pk(pk: str) -> str:
    """The account named by an ``ACCOUNT#`` partition key."""
    return pk[len(ACCOUNT_PREFIX) :]


def meta_key(account: str) -> Key:
    return item_key(account_pk(account), META_SK)


def key_sk(app_key: str) -> str:
    return f"{KEY_SK_PREFIX}{app_key}"


def user_sk(user_hash: str) -> str:
    return f"{USER_SK_PREFIX}{user_hash}"


def appkey_owner_key(app_key: str) -> Key:
    return item_key(f"{APPKEY_PREFIX}{app_key}", APPKEY_SK)


def move_job_key(account: str) -> Key:
    return item_key(f"{MOVE_PREFIX}{account}", MOVE_SK)


# --- a regional profile table -----------------------------------------------------------------

DATA_PREFIX = "A#"
SALT_SK = "SALT"
FENCE_PREFIX = "FENCE#"
FENCE_SK = "F"
MOVED_PREFIX = "MOVED#"


def data_prefix(account: str) -> str:
    """The prefix of the partition key of every item of ``account``'s data."""
    return f"{DATA_PREFIX}{account}#"


def salt_pk(account: str) -> str:
    """The partition of the account's salt item (``salt_key``)."""
    return f"{data_prefix(account)}META"


def salt_key(account: str) -> Key:
    """The account's salt item: a store writes it with the account's first item, so an account
    whose region holds this item has data there."""
    return item_key(salt_pk(account), SALT_SK)


def fence_pk(account: str) -> str:
    return f"{FENCE_PREFIX}{account}"


def fence_key(account: str) -> Key:
    return item_key(fence_pk(account), FENCE_SK)


def moved_pk(account: str) -> str:
    """Where the source keeps the record of a move: outside the account, so purge keeps it."""
    return f"{MOVED_PREFIX}{account}"


def moved_sk(job: str, event: str) -> str:
    return f"JOB#{job}#{event}"
