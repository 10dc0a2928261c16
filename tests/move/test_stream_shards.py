"""Reading changes across shards: a checkpointed shard that closed is read to its end and its
children (new since the checkpoint) from their start; a page bound leaves the rest for the
next call. DynamoDB Local never splits a shard, so a small in-memory stream stands in for
DynamoDB Streams here (the same API calls, the same iterator rules)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from profile_store.transfer.change_feed import CLOSED, ChangeFeed

ARN = "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/x"


def record(seq: int, pk: str) -> dict[str, Any]:
    return {"dynamodb": {"SequenceNumber": str(seq), "Keys": {"pk": {"S": pk}, "sk": {"S": "CUR"}}}}


class Stream:
    def __init__(self, shards: dict[str, tuple[str | None, bool, list[dict[str, Any]]]]) -> None:
        self.shards = shards  # id -> (parent, closed, records)
        self.expired: set[str] = set()

    async def describe_table(self) -> dict[str, Any]:
        return {"LatestStreamArn": ARN, "StreamSpecification": {"StreamEnabled": True}}

    async def describe_stream(self, **kw: Any) -> dict[str, Any]:
        shards = []
        for shard_id, (parent, closed, records) in self.shards.items():
            seq_range: dict[str, str] = {"StartingSequenceNumber": "0"}
            if closed:
                seq_range["EndingSequenceNumber"] = records[-1]["dynamodb"]["SequenceNumber"]
            shard = {"ShardId": shard_id, "SequenceNumberRange": seq_range}
            if parent:
                shard["ParentShardId"] = parent
            shards.append(shard)
        return {"StreamDescription": {"Shards": shards}}

    async def get_shard_iterator(self, **kw: Any) -> dict[str, Any]:
        records = self.shards[kw["ShardId"]][2]
        start = 0
        if kw["ShardIteratorType"] == "LATEST":
            start = len(records)
        if kw["ShardIteratorType"] == "AFTER_SEQUENCE_NUMBER":
            seqs = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
            start = sum(1 for s in seqs if s <= int(kw["SequenceNumber"]))
        return {"ShardIterator": f"{kw['ShardId']}|{start}"}

    async def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        if ShardIterator in self.expired:
            raise ClientError(
                {"Error": {"Code": "ExpiredIteratorException", "Message": "expired"}}, "GetRecords"
            )
        shard_id, raw = ShardIterator.split("|")
        start = int(raw)
        _, closed, records = self.shards[shard_id]
        page = records[start : start + Limit]
        end = start + len(page)
        answer: dict[str, Any] = {"Records": page}
        if not (closed and end >= len(records)):
            answer["NextShardIterator"] = f"{shard_id}|{end}"
        return answer


def checkpoint(shards: dict[str, str | None]) -> dict[str, Any]:
    return {"v": 1, "stream": ARN, "since": 0.0, "shards": shards}


async def test_a_split_shard_is_read_to_its_end_and_its_children_from_their_start() -> None:
    stream = Stream(
        {
            "s1": (None, True, [record(n, f"A#acme#P#{n}") for n in range(1, 9)]),
            "s2": ("s1", False, [record(20, "A#acme#P#20"), record(21, "A#other#P#21")]),
            "s3": ("s1", False, [record(30, "A#acme#P#30")]),
        }
    )
    feed = ChangeFeed(stream, stream)  # type: ignore[arg-type]
    found = await feed.changes("acme", checkpoint({"s1": "5"}), max_records=100)
    assert [pk for pk, _ in found.keys] == [f"A#acme#P#{n}" for n in (6, 7, 8, 20, 30)]
    assert found.checkpoint["shards"] == {"s1": CLOSED, "s2": "21", "s3": "30"}
    assert not found.more
    again = await feed.changes("acme", found.checkpoint, max_records=100)
    assert again.keys == [] and again.checkpoint["shards"] == found.checkpoint["shards"]


async def test_a_bounded_call_says_more_and_the_next_one_goes_on() -> None:
    stream = Stream({"s1": (None, False, [record(n, f"A#acme#P#{n}") for n in range(1, 8)])})
    feed = ChangeFeed(stream, stream)  # type: ignore[arg-type]
    first = await feed.changes("acme", checkpoint({"s1": None}), max_records=3)
    assert first.more and [pk for pk, _ in first.keys] == [f"A#acme#P#{n}" for n in (1, 2, 3)]
    seen = [pk for pk, _ in first.keys]
    cp = first.checkpoint
    for _ in range(10):
        page = await feed.changes("acme", cp, max_records=3)
        seen += [pk for pk, _ in page.keys]
        cp = page.checkpoint
        if not page.more:
            break
    assert seen == [f"A#acme#P#{n}" for n in range(1, 8)]


async def test_start_marks_closed_shards_done_and_open_ones_from_their_start() -> None:
    stream = Stream(
        {
            "old": (None, True, [record(1, "A#acme#P#1")]),
            "new": ("old", False, [record(2, "A#acme#P#2")]),
        }
    )
    feed = ChangeFeed(stream, stream)  # type: ignore[arg-type]
    started = await feed.start()
    assert started["shards"] == {"old": CLOSED, "new": {"iter": "new|1"}}


async def test_from_start_only_what_came_after_it_and_an_idle_shard_keeps_its_place() -> None:
    records = [record(1, "A#acme#P#1")]
    stream = Stream({"s1": (None, False, records)})
    feed = ChangeFeed(stream, stream)  # type: ignore[arg-type]
    started = await feed.start()
    idle = await feed.changes("acme", started, max_records=100)
    assert idle.keys == [] and idle.checkpoint["shards"] == {"s1": {"iter": "s1|1"}}
    records.append(record(2, "A#acme#P#2"))
    found = await feed.changes("acme", idle.checkpoint, max_records=100)
    assert found.keys == [["A#acme#P#2", "CUR"]]
    assert found.checkpoint["shards"] == {"s1": "2"}


async def test_an_expired_start_iterator_falls_back_to_the_whole_shard() -> None:
    """Nothing is missed when the mover comes back after 15 minutes: more keys, not fewer."""
    records = [record(1, "A#acme#P#1")]
    stream = Stream({"s1": (None, False, records)})
    feed = ChangeFeed(stream, stream)  # type: ignore[arg-type]
    started = await feed.start()
    records.append(record(2, "A#acme#P#2"))
    stream.expired.add(started["shards"]["s1"]["iter"])
    found = await feed.changes("acme", started, max_records=100)
    assert [pk for pk, _ in found.keys] == ["A#acme#P#1", "A#acme#P#2"]
    assert found.checkpoint["shards"] == {"s1": "2"}
