"""Envelope codec and data-key storage, end to end on DynamoDB Local (keys wrapped locally)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from botocore.exceptions import ClientError

from profile_store.crypto import (
    DataKeyStore,
    DecryptionFailed,
    EnvelopeCodec,
    KeyServiceUnavailable,
    SubjectErased,
    data_key_item_key,
)
from profile_store.key_providers import KmsKeyProvider, LocalKeyProvider
from residency_dev.dynamodb_local import free_port

from .conftest import REGION, aws_client

DOC = {"firstName": "Zoë", "email": "zoe@example.com", "tags": ["vip"], "n": 3}


def profile_item(account: str, subject: str, entity: str, sealed: dict[str, Any]) -> dict:
    return {"pk": {"S": f"A#{account}#P#{subject}"}, "sk": {"S": entity}, **sealed}


async def save_and_fetch(ddb: Any, table: str, item: dict[str, Any]) -> dict[str, Any]:
    await ddb.put_item(TableName=table, Item=item)
    key = {"pk": item["pk"], "sk": item["sk"]}
    return (await ddb.get_item(TableName=table, Key=key, ConsistentRead=True))["Item"]


def fresh(store: DataKeyStore) -> EnvelopeCodec:
    """Another instance of the Profile System: same table and master key, empty cache."""
    return EnvelopeCodec(DataKeyStore(store.client, store.table, store.provider, region=REGION))


async def test_round_trip_through_the_table(codec: EnvelopeCodec, ddb: Any, key_table: str) -> None:
    sealed = await codec.seal(account="acme", subject_id="p-1", entity_id="PROFILE", doc=DOC)
    assert set(sealed) == {"doc"}
    assert b"zoe@example.com" not in sealed["doc"]["B"] and sealed["doc"]["B"][0] == 1
    item = await save_and_fetch(ddb, key_table, profile_item("acme", "p-1", "PROFILE", sealed))
    args = {"account": "acme", "subject_id": "p-1", "entity_id": "PROFILE", "item": item}
    assert await codec.open(**args) == DOC
    assert await fresh(codec.keys).open(**args) == DOC


async def test_key_item_is_stored_wrapped(
    codec: EnvelopeCodec, ddb: Any, key_table: str, local_provider: LocalKeyProvider
) -> None:
    await codec.seal(account="acme", subject_id="p-1", entity_id="PROFILE", doc=DOC)
    item = (await ddb.get_item(TableName=key_table, Key=data_key_item_key("acme", "p-1")))["Item"]
    assert item["pk"] == {"S": "A#acme#DK#p-1"} and item["sk"] == {"S": "DK"}
    assert item["provider"] == {"S": "local"} and item["keyId"] == {"S": local_provider.key_id}
    assert item["createdAt"]["S"].endswith("Z") and len(item["wrapped"]["B"]) == 1 + 12 + 32 + 16
    assert "expiresAt" not in item  # a data key must never expire on its own


async def test_seal_is_randomised(codec: EnvelopeCodec) -> None:
    args = {"account": "acme", "subject_id": "p-1", "entity_id": "PROFILE", "doc": DOC}
    assert (await codec.seal(**args))["doc"] != (await codec.seal(**args))["doc"]


@pytest.mark.parametrize(
    ("account", "subject", "entity"),
    [
        ("acme", "p-1", "ADDR#a-1"),  # copied onto another entity of the same subject
        ("acme", "p-2", "PROFILE"),  # copied to another shopper
        ("other", "p-1", "PROFILE"),  # copied to another account, same profile id
    ],
    ids=["other-entity", "other-subject", "other-account"],
)
async def test_ciphertext_is_bound_to_its_item(
    codec: EnvelopeCodec, account: str, subject: str, entity: str
) -> None:
    sealed = await codec.seal(account="acme", subject_id="p-1", entity_id="PROFILE", doc=DOC)
    # Give the destination subject a key of its own, so the refusal is the AAD's, not a
    # missing key's.
    await codec.seal(account=account, subject_id=subject, entity_id="X", doc={})
    with pytest.raises(DecryptionFailed):
        await codec.open(account=account, subject_id=subject, entity_id=entity, item=sealed)


async def test_ciphertext_is_bound_to_its_region(codec: EnvelopeCodec) -> None:
    sealed = await codec.seal(account="acme", subject_id="p-1", entity_id="PROFILE", doc=DOC)
    keys = codec.keys
    elsewhere = EnvelopeCodec(
        DataKeyStore(keys.client, keys.table, keys.provider, region="us-east-1")
    )
    with pytest.raises(DecryptionFailed):
        await elsewhere.open(account="acme", subject_id="p-1", entity_id="PROFILE", item=sealed)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda b: b"\x02" + b[1:],  # unknown version
        lambda b: b[:5] + bytes([b[5] ^ 1]) + b[6:],  # nonce
        lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:],  # ciphertext
        lambda b: b[:-1] + bytes([b[-1] ^ 1]),  # tag
        lambda b: b[:-1],  # truncated tag
        lambda b: b[:10],  # truncated to nothing useful
        lambda b: b"",
    ],
    ids=["version", "nonce", "ciphertext", "tag", "truncated", "short", "empty"],
)
async def test_tampering_is_detected(codec: EnvelopeCodec, tamper: Any) -> None:
    sealed = await codec.seal(account="acme", subject_id="p-1", entity_id="PROFILE", doc=DOC)
    item = {"doc": {"B": tamper(sealed["doc"]["B"])}}
    with pytest.raises(DecryptionFailed):
        await codec.open(account="acme", subject_id="p-1", entity_id="PROFILE", item=item)


@pytest.mark.parametrize("item", [{}, {"doc": {"S": "plain"}}, {"doc": "x"}])
async def test_item_without_sealed_doc_is_refused(codec: EnvelopeCodec, item: dict) -> None:
    with pytest.raises(DecryptionFailed):
        await codec.open(account="acme", subject_id="p-1", entity_id="PROFILE", item=item)


async def test_tampered_wrapped_key_is_detected(
    codec: EnvelopeCodec, ddb: Any, key_table: str
) -> None:
    sealed = await codec.seal(account="acme", subject_id="p-1", entity_id="PROFILE", doc=DOC)
    key = data_key_item_key("acme", "p-1")
    item = (await ddb.get_item(TableName=key_table, Key=key))["Item"]
    wrapped = bytearray(item["wrapped"]["B"])
    wrapped[-3] ^= 0x80
    item["wrapped"] = {"B": bytes(wrapped)}
    await ddb.put_item(TableName=key_table, Item=item)
    with pytest.raises(DecryptionFailed):
        await fresh(codec.keys).open(
            account="acme", subject_id="p-1", entity_id="PROFILE", item=sealed
        )


async def test_crypto_shredding(codec: EnvelopeCodec, ddb: Any, key_table: str) -> None:
    store = codec.keys
    sealed = await codec.seal(account="acme", subject_id="p-1", entity_id="PROFILE", doc=DOC)
    saved = await save_and_fetch(ddb, key_table, profile_item("acme", "p-1", "PROFILE", sealed))
    args = {"account": "acme", "subject_id": "p-1", "entity_id": "PROFILE", "item": saved}
    assert await codec.open(**args) == DOC  # key now cached

    assert await store.delete("acme", "p-1") is True
    with pytest.raises(SubjectErased):
        await codec.open(**args)  # the cache was evicted by delete
    store.clear_cache()
    with pytest.raises(SubjectErased):
        await codec.open(**args)
    with pytest.raises(SubjectErased):
        await fresh(store).open(**args)  # another instance with a cold cache

    # A later write for the same id gets a brand-new key; the old data stays noise.
    await codec.seal(account="acme", subject_id="p-1", entity_id="X", doc={})
    with pytest.raises(DecryptionFailed):
        await fresh(store).open(**args)
    assert await store.delete("acme", "p-1") is True
    assert await store.delete("acme", "p-1") is False


async def test_erasure_wins_over_a_key_learned_after_it(store: DataKeyStore) -> None:
    await store.get_or_create("acme", "p-1")
    prepared = await store.prepare_new("acme", "p-1")
    await store.delete("acme", "p-1")
    store.remember(prepared)  # e.g. a create that raced the erasure finishing late
    with pytest.raises(SubjectErased):
        await store.load("acme", "p-1")


async def test_load_of_unknown_subject_is_erased(store: DataKeyStore) -> None:
    with pytest.raises(SubjectErased):
        await store.load("acme", "never-existed")


async def test_losing_a_create_race_uses_the_winners_key(store: DataKeyStore) -> None:
    rival = DataKeyStore(store.client, store.table, store.provider, region=REGION)
    winner = await rival.create("acme", "p-1")
    mine = await store.create("acme", "p-1")  # conditional put fails -> reads the winner's
    nonce = b"n" * 12
    assert mine.aead.decrypt(nonce, winner.aead.encrypt(nonce, b"x", None), None) == b"x"


async def test_concurrent_first_writes_agree_on_one_key(store: DataKeyStore) -> None:
    stores = [
        DataKeyStore(store.client, store.table, store.provider, region=REGION) for _ in range(4)
    ]
    codecs = [EnvelopeCodec(s) for s in stores]
    sealed = await asyncio.gather(
        *(
            c.seal(account="acme", subject_id="p-9", entity_id=f"E{i}", doc={"i": i})
            for i, c in enumerate(codecs)
        )
    )
    reader = fresh(store)
    for i, s in enumerate(sealed):
        got = await reader.open(account="acme", subject_id="p-9", entity_id=f"E{i}", item=s)
        assert got == {"i": i}


async def test_create_in_one_transaction(codec: EnvelopeCodec, ddb: Any, key_table: str) -> None:
    store = codec.keys
    new = await store.prepare_new("acme", "p-1")
    sealed = await codec.seal(
        account="acme", subject_id="p-1", entity_id="PROFILE", doc=DOC, new_key=new
    )
    item = profile_item("acme", "p-1", "PROFILE", sealed)
    await ddb.transact_write_items(
        TransactItems=[new.put, {"Put": {"TableName": key_table, "Item": item}}]
    )
    store.remember(new)
    args = {"account": "acme", "subject_id": "p-1", "entity_id": "PROFILE", "item": item}
    assert await fresh(store).open(**args) == DOC

    # A second "create" of the same subject must not replace its key (that would shred it).
    again = await store.prepare_new("acme", "p-1")
    with pytest.raises(ClientError) as info:
        await ddb.transact_write_items(TransactItems=[again.put])
    assert info.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert await fresh(store).open(**args) == DOC


async def test_new_key_for_another_subject_is_refused(codec: EnvelopeCodec) -> None:
    new = await codec.keys.prepare_new("acme", "p-1")
    with pytest.raises(ValueError, match="another subject"):
        await codec.seal(account="acme", subject_id="p-2", entity_id="P", doc={}, new_key=new)


class CountingClient:
    """Delegates to the real client and counts GetItem calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.get_items = 0

    async def get_item(self, **kw: Any) -> Any:
        self.get_items += 1
        return await self.inner.get_item(**kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_keys_are_cached_and_evicted(store: DataKeyStore) -> None:
    await store.get_or_create("acme", "p-1")
    counting = CountingClient(store.client)
    reader = DataKeyStore(counting, store.table, store.provider, region=REGION)
    for _ in range(3):
        await reader.load("acme", "p-1")
    assert counting.get_items == 1
    reader.evict("acme", "p-1")
    await reader.load("acme", "p-1")
    assert counting.get_items == 2


async def test_cache_entries_expire(store: DataKeyStore) -> None:
    await store.get_or_create("acme", "p-1")
    counting = CountingClient(store.client)
    reader = DataKeyStore(counting, store.table, store.provider, region=REGION, cache_ttl_s=60)
    await reader.load("acme", "p-1")
    reader._cache.expire(reader._cache.timer() + 61)  # no sleeping: move the cache's clock
    await reader.load("acme", "p-1")
    assert counting.get_items == 2


@pytest.mark.parametrize(("account", "subject"), [("a#b", "p"), ("a", "p#DK"), ("", "p")])
async def test_ids_that_could_name_another_item_are_refused(
    store: DataKeyStore, account: str, subject: str
) -> None:
    with pytest.raises(ValueError, match="must not contain"):
        await store.get_or_create(account, subject)


async def test_table_unreachable_is_unavailable(local_provider: LocalKeyProvider) -> None:
    async with aws_client("dynamodb", f"http://127.0.0.1:{free_port()}") as client:
        store = DataKeyStore(client, "profiles", local_provider, region=REGION)
        with pytest.raises(KeyServiceUnavailable):
            await store.load("acme", "p-1")
        with pytest.raises(KeyServiceUnavailable):
            await store.delete("acme", "p-1")


async def test_kms_backed_store_end_to_end(ddb: Any, key_table: str, kms: Any) -> None:
    arn = (await kms.create_key())["KeyMetadata"]["Arn"]
    provider = KmsKeyProvider(arn, REGION, kms)
    await provider.start()
    codec = EnvelopeCodec(DataKeyStore(ddb, key_table, provider, region=REGION))
    sealed = await codec.seal(account="acme", subject_id="p-1", entity_id="PROFILE", doc=DOC)
    item = (await ddb.get_item(TableName=key_table, Key=data_key_item_key("acme", "p-1")))["Item"]
    assert item["provider"] == {"S": "kms"} and item["keyId"] == {"S": arn}
    args = {"account": "acme", "subject_id": "p-1", "entity_id": "PROFILE", "item": sealed}
    assert await fresh(codec.keys).open(**args) == DOC
    await codec.keys.delete("acme", "p-1")
    with pytest.raises(SubjectErased):
        await fresh(codec.keys).open(**args)
