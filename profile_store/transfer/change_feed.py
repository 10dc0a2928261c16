"""The keys of one account changed since a checkpoint, read from the table's DynamoDB Stream.

An account move copies the account while it stays writable, then replays what changed
meanwhile: ``start`` marks where the stream is now, ``changes`` returns the account's keys
changed since a checkpoint and the checkpoint after them, with bounded work per call (``more``
when a bound was hit). The checkpoint is opaque JSON to the mover::

    {"v": 1, "stream": arn, "since": epoch seconds, "shards": {shard id: position}}

    position: a sequence number (read up to it)   {"iter": shard iterator}   null   "closed"

``start`` takes a ``LATEST`` iterator of every open shard (closed ones are ``"closed"``:
nothing new can appear there). A shard iterator is the only position DynamoDB Streams can give
for "now" without reading the whole shard, but it expires after 15 minutes; a read from it
turns it into a sequence number (``AFTER_SEQUENCE_NUMBER`` from then on), or into the next
iterator while the shard is idle. An iterator that expired unused falls back to ``null``: the
shard from ``TRIM_HORIZON``, keeping records created after ``since`` minus a minute of slack
(slower, never misses a write: extra keys cost the mover a re-export). Shards new since the
checkpoint (the children of a split or closed shard) are read from ``TRIM_HORIZON``; a shard
read to its end becomes ``"closed"``. A sequence number older than the stream's 24-hour trim
horizon means changes may have been lost: 409 ``checkpoint_trimmed`` (restart the copy).

Only keys (``KEYS_ONLY`` is enough, provisioning enables it) of the account's items (under
``data_prefix(account)``) are returned, deduplicated; the mover reads their current state
with ``export-keys``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import botocore.exceptions

from residency_contract.tables import data_prefix

from ..errors import BadRequest, CheckpointTrimmed, StreamUnavailable, client_error_code
from ..repository import Repository

CLOSED = "closed"
SINCE_SLACK_S = 60.0
_EMPTY_READS = 2  # an open shard answering nothing this many times in a row is caught up


class _IteratorExpired(Exception):
    """A stored shard iterator is older than DynamoDB's 15 minutes."""


Position = str | dict[str, str] | None


@dataclass(slots=True)
class Changes:
    keys: list[list[str]]
    checkpoint: dict[str, Any]
    more: bool


@dataclass(slots=True)
class _Budget:
    records: int
    calls: int
    exhausted: bool = False

    def spend(self, records: int) -> None:
        self.records -= records
        self.calls -= 1
        if self.records <= 0 or self.calls <= 0:
            self.exhausted = True


@dataclass(slots=True)
class _Shard:
    shard_id: str
    closed: bool


@dataclass(slots=True)
class _Reader:
    prefix: str
    since: float
    found: dict[tuple[str, str], None] = field(default_factory=dict)

    def take(self, records: list[dict[str, Any]]) -> str | None:
        """Keep the account's keys; the last sequence number read."""
        last = None
        for record in records:
            data = record.get("dynamodb", {})
            last = data.get("SequenceNumber", last)
            keys = data.get("Keys", {})
            pk, sk = keys.get("pk", {}).get("S"), keys.get("sk", {}).get("S")
            if not isinstance(pk, str) or not isinstance(sk, str) or not pk.startswith(self.prefix):
                continue
            created = data.get("ApproximateCreationDateTime")
            if isinstance(created, datetime) and created.timestamp() < self.since - SINCE_SLACK_S:
                continue
            self.found[(pk, sk)] = None
        return last


def parse_checkpoint(raw: Any) -> dict[str, Any]:
    bad = BadRequest("checkpoint is not one this store returned", code="invalid_checkpoint")
    if not isinstance(raw, dict) or raw.get("v") != 1:
        raise bad
    stream, since, shards = raw.get("stream"), raw.get("since"), raw.get("shards")
    if not isinstance(stream, str) or not isinstance(since, int | float) or isinstance(since, bool):
        raise bad
    if not isinstance(shards, dict) or not all(
        isinstance(k, str) and _is_position(v) for k, v in shards.items()
    ):
        raise bad
    return {"v": 1, "stream": stream, "since": float(since), "shards": dict(shards)}


def _is_position(value: Any) -> bool:
    if value is None or isinstance(value, str):
        return True
    return isinstance(value, dict) and set(value) == {"iter"} and isinstance(value["iter"], str)


class ChangeFeed:
    def __init__(self, repo: Repository, streams: Any) -> None:
        self.repo = repo
        self.streams = streams

    async def _stream_arn(self) -> str:
        table = await self.repo.describe_table()
        arn = table.get("LatestStreamArn")
        if not arn or not table.get("StreamSpecification", {}).get("StreamEnabled"):
            raise StreamUnavailable(
                "the table has no DynamoDB Stream; run 'profile-store create-table' to enable it"
            )
        return str(arn)

    async def _call(self, name: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response: dict[str, Any] = await getattr(self.streams, name)(**kwargs)
        except botocore.exceptions.ClientError as exc:
            code = client_error_code(exc)
            if code == "ExpiredIteratorException":
                raise _IteratorExpired from None
            if code == "TrimmedDataAccessException":
                raise CheckpointTrimmed(
                    "the stream no longer holds every change since this checkpoint; "
                    "restart the copy"
                ) from None
            raise StreamUnavailable(f"DynamoDB Streams refused {name} ({code})") from None
        except (botocore.exceptions.BotoCoreError, OSError, TimeoutError):
            raise StreamUnavailable(f"DynamoDB Streams is unreachable ({name})") from None
        return response

    async def _shards(self, arn: str) -> list[_Shard]:
        shards: list[_Shard] = []
        kwargs: dict[str, Any] = {"StreamArn": arn}
        while True:
            description = (await self._call("describe_stream", **kwargs))["StreamDescription"]
            for shard in description.get("Shards", []):
                ending = shard.get("SequenceNumberRange", {}).get("EndingSequenceNumber")
                shards.append(_Shard(shard["ShardId"], closed=ending is not None))
            last = description.get("LastEvaluatedShardId")
            if not last:
                return shards
            kwargs["ExclusiveStartShardId"] = last

    async def start(self) -> dict[str, Any]:
        arn = await self._stream_arn()
        since = time.time()
        positions: dict[str, Position] = {}
        for shard in await self._shards(arn):
            if shard.closed:
                positions[shard.shard_id] = CLOSED
                continue
            answer = await self._call(
                "get_shard_iterator",
                StreamArn=arn,
                ShardId=shard.shard_id,
                ShardIteratorType="LATEST",
            )
            iterator = answer.get("ShardIterator")
            positions[shard.shard_id] = {"iter": iterator} if iterator else CLOSED
        return {"v": 1, "stream": arn, "since": since, "shards": positions}

    async def changes(
        self, account: str, checkpoint: dict[str, Any], *, max_records: int, max_calls: int = 64
    ) -> Changes:
        arn = await self._stream_arn()
        if arn != checkpoint["stream"]:
            raise CheckpointTrimmed("the table's stream changed since this checkpoint")
        positions: dict[str, Position] = checkpoint["shards"]
        reader = _Reader(data_prefix(account), checkpoint["since"])
        budget = _Budget(max_records, max_calls)
        current = await self._shards(arn)
        after: dict[str, Position] = {}
        for shard in current:
            position = positions.get(shard.shard_id)
            if position == CLOSED or budget.exhausted:
                after[shard.shard_id] = position
                continue
            after[shard.shard_id] = await self._read_shard(arn, shard, position, reader, budget)
        # Shards gone from the stream (trimmed after 24 h) are dropped from the checkpoint.
        keys = [[pk, sk] for pk, sk in reader.found]
        new_checkpoint = {**checkpoint, "shards": after}
        return Changes(keys=keys, checkpoint=new_checkpoint, more=budget.exhausted)

    async def _iterator(self, arn: str, shard_id: str, position: Position) -> str | None:
        if isinstance(position, dict):
            return position["iter"]
        kwargs: dict[str, Any] = {"StreamArn": arn, "ShardId": shard_id}
        if position is None:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            kwargs["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
            kwargs["SequenceNumber"] = position
        answer = await self._call("get_shard_iterator", **kwargs)
        return answer.get("ShardIterator")

    async def _read_shard(
        self, arn: str, shard: _Shard, position: Position, reader: _Reader, budget: _Budget
    ) -> Position:
        iterator = await self._iterator(arn, shard.shard_id, position)
        empty = 0
        while iterator and not budget.exhausted:
            try:
                response = await self._call(
                    "get_records", ShardIterator=iterator, Limit=max(1, min(1000, budget.records))
                )
            except _IteratorExpired:
                if not isinstance(position, dict):
                    raise CheckpointTrimmed(
                        "a shard iterator expired while it was read; call changes again"
                    ) from None
                position = None  # from the shard's start, filtered by time
                iterator = await self._iterator(arn, shard.shard_id, None)
                continue
            records = response.get("Records", [])
            budget.spend(len(records))
            last = reader.take(records)
            iterator = response.get("NextShardIterator")
            if last is not None:
                position = last
            elif iterator and not isinstance(position, str):
                position = {"iter": iterator}  # everything before it is read
            empty = 0 if records else empty + 1
            if not shard.closed and empty >= _EMPTY_READS:
                return position
        if not iterator:
            return CLOSED  # read to its end: a closed shard has nothing more
        return position
