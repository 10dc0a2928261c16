"""Export -> import across regions: what arrives reads back equal, no data key travels in a
form the source's keys open, digests agree, the changes since a checkpoint are found, purge
shreds keys first and leaves nothing of the account."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from profile_store.key_providers import CryptoError, KeyContext, LocalKeyProvider
from tests.move import steps
from tests.move.conftest import ACCOUNT, DEST, SOURCE, Region
from tests.store.conftest import (
    ADDRESS,
    BASE,
    PROSPECT,
    PURCHASE_INFO,
    scan_all,
    unique_profile,
)

ERASE = "/api/user-rights/createAndProcessDeleteUserData"
REASON = {"reason": "move-test"}
CUSTOM = {"loyaltyId": {"type": ["string", "null"], "sensitive": True, "pii": True}}


async def fill(region: Region) -> dict[str, Any]:
    """An account with every kind of item; returns what its unmasked reads answer."""
    got, _, _ = await region.call("PUT", f"{BASE}/schemas/profileSystem/custom", json_body=CUSTOM)
    assert got == 201
    pids = []
    for n in range(3):
        pid = (await region.create_profile(unique_profile(loyaltyId=f"L{n}")))["id"]
        pids.append(pid)
        for path, body, want in (
            (f"{BASE}/profiles/{pid}/addresses", ADDRESS, 201),
            (f"{BASE}/profiles/{pid}/purchase-info", PURCHASE_INFO, 200),
        ):
            got, answer, _ = await region.call("POST", path, json_body=body)
            assert got == want, answer
        got, _, _ = await region.call(
            "PATCH", f"{BASE}/profiles/{pid}", json_body={"firstName": f"V{n}"}
        )
        assert got == 200
    got, _, _ = await region.call(
        "POST",
        f"{BASE}/profiles",
        json_body=unique_profile(),
        headers={"Idempotency-Key": "create-once"},
    )
    assert got == 201
    got, answer, _ = await region.call("POST", f"{BASE}/prospects", json_body=PROSPECT)
    assert got == 201, answer
    erased = unique_profile()
    await region.create_profile(erased)
    got, answer, _ = await region.call(
        "POST",
        ERASE,
        params={"an": ACCOUNT},
        json_body={"email": erased["email"]},
        roles=frozenset({"erase"}),
    )
    assert got == 200 and answer["status"] == "Completed", answer
    return {"pids": pids, "erased_email": erased["email"], "reads": await reads(region, pids)}


async def reads(region: Region, pids: list[str]) -> dict[str, Any]:
    """The account's data as a normal (unmask) caller reads it through the store's API."""
    out: dict[str, Any] = {}
    paths = [f"{BASE}/prospects/unmask", f"{BASE}/schemas/profileSystem/custom"]
    for pid in pids:
        paths += [
            f"{BASE}/profiles/{pid}/unmask",
            f"{BASE}/profiles/{pid}/addresses/unmask",
            f"{BASE}/profiles/{pid}/purchase-info/unmask",
        ]
    for path in paths:
        got, body, _ = await region.call("GET", path, params=REASON)
        assert got == 200, (path, body)
        out[path] = body
    return out


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


async def test_round_trip_reads_back_equal_in_the_destination(source: Region, dest: Region) -> None:
    written = await fill(source)
    await steps.copy(source, dest)
    source_digests, source_counts = await steps.digests_of(source)
    dest_digests, dest_counts = await steps.digests_of(dest)
    assert dest_digests == source_digests
    assert dest_counts == source_counts
    for kind in ("profile", "version", "address", "purchase_info", "prospect", "altkey"):
        assert source_counts.get(kind, 0) > 0, kind
    for kind in ("schema", "salt", "audit", "suppression", "erasure", "idempotency", "data_key"):
        assert source_counts.get(kind, 0) > 0, kind
    # The flip: the source is fenced for good, the destination serves.
    await steps.fence(source, "moved_out", 1, DEST)
    await steps.fence(dest, "none", 1, None)
    assert await reads(dest, written["pids"]) == written["reads"]
    # The erased email stays suppressed in its new region.
    got, body, _ = await dest.call(
        "POST", f"{BASE}/profiles", json_body=unique_profile(email=written["erased_email"])
    )
    assert (got, body["error"]) == (409, "subject_suppressed")
    # A change in the destination shows in its digests (and only for that item).
    pid = written["pids"][0]
    got, _, _ = await dest.call("PATCH", f"{BASE}/profiles/{pid}", json_body={"lastName": "New"})
    assert got == 200
    changed, _ = await steps.digests_of(dest)
    current = f"A#{ACCOUNT}#P#{pid}\u0000CUR"
    assert changed[current] != source_digests[current]
    assert {k for k in source_digests if changed.get(k) != source_digests[k]} == {current}


async def test_no_data_key_travels_in_a_form_the_source_can_open(
    source: Region, dest: Region
) -> None:
    await fill(source)
    recipient = await steps.public_key(dest)
    exported = await steps.export_all(source, recipient)
    text = json.dumps(exported)
    provider = LocalKeyProvider(source.settings.local_master_key_file or "")
    data_keys = [i for i in await source.items() if i["sk"]["S"] == "DK"]
    assert len(data_keys) >= 4
    for item in data_keys:
        subject = item["pk"]["S"].split("#DK#", 1)[1]
        wrapped = bytes(item["wrapped"]["B"])
        plain = await provider.unwrap_data_key(
            wrapped, KeyContext(SOURCE, ACCOUNT, subject), key_id=item["keyId"]["S"]
        )
        for needle in (b64(wrapped), b64(plain), plain.hex(), b64(plain).rstrip("=")):
            assert needle not in text
    moved = [i for i in exported if i["sk"]["S"] == "DK"]
    assert len(moved) == len(data_keys)
    for item in moved:
        assert "wrapped" not in item and item["transferKid"]["S"] == recipient["kid"]
        subject = item["pk"]["S"].split("#DK#", 1)[1]
        with pytest.raises(CryptoError):
            await provider.unwrap_data_key(
                base64.b64decode(item["transferWrapped"]["B"]),
                KeyContext(SOURCE, ACCOUNT, subject),
                key_id=provider.key_id,
            )
    # Documents stay ciphertext: no value written in clear is in the export.
    assert "john.doe" not in text.lower() and PROSPECT["email"] not in text


async def test_changes_since_a_checkpoint_are_the_accounts_writes_after_it(
    source: Region,
) -> None:
    await source.create_profile()  # before the checkpoint
    checkpoint = (await source.ok(f"/{ACCOUNT}/changes/start"))["checkpoint"]
    keys, checkpoint = await steps.changed_keys(source, checkpoint)
    pid = (await source.create_profile())["id"]
    got, _, _ = await source.call(
        "POST", f"{BASE}/profiles", json_body=unique_profile(), account="other"
    )
    assert got == 201
    keys, checkpoint = await steps.changed_keys(source, checkpoint)
    assert [f"A#{ACCOUNT}#P#{pid}", "CUR"] in keys
    assert all(pk.startswith(f"A#{ACCOUNT}#") for pk, _ in keys)
    # Read again from the new checkpoint: nothing new.
    again, _ = await steps.changed_keys(source, checkpoint)
    assert again == []


async def purge_all(
    region: Region, body: dict[str, Any], *, limit: int = 1000
) -> tuple[dict[str, int], int]:
    """Purge step after step until the cursor is null: what was deleted, and the steps."""
    deleted: dict[str, int] = {}
    cursor, steps_taken = None, 0
    while True:
        answer = await region.ok(f"/{ACCOUNT}/purge", {**body, "cursor": cursor, "limit": limit})
        steps_taken += 1
        for kind, n in answer["deleted"].items():
            deleted[kind] = deleted.get(kind, 0) + n
        cursor = answer["cursor"]
        if cursor is None:
            return deleted, steps_taken
        assert steps_taken < 10_000, "the purge's cursor never ends"


async def test_purge_shreds_keys_first_and_leaves_only_the_markers(
    source: Region, dest: Region
) -> None:
    await fill(source)
    await steps.copy(source, dest, generation=7)
    for body in ({"generation": 7, "role": "source"}, {"generation": 6, "role": "source"}):
        got, answer, _ = await source.move(f"/{ACCOUNT}/purge", body)
        assert (got, answer["error"]) == (409, "wrong_fence_state"), body  # frozen, not moved_out
    await steps.fence(source, "moved_out", 7, DEST)
    sent: list[dict[str, Any]] = []
    repo = source.repo
    real = repo.transfer_batch_write

    async def recording(requests: list[dict[str, Any]]) -> None:
        sent.extend(requests)
        await real(requests)

    repo.transfer_batch_write = recording  # type: ignore[method-assign]
    before = len(await source.items())
    # Small steps: the account takes many, each one request whatever the account's size.
    deleted, taken = await purge_all(source, {"generation": 7, "role": "source"}, limit=3)
    assert sum(deleted.values()) == before and deleted["data_key"] >= 4
    assert taken > 4
    kinds = ["DK" if r["DeleteRequest"]["Key"]["sk"]["S"] == "DK" else "x" for r in sent]
    assert kinds == sorted(kinds)  # "DK" < "x": every data key before any other item
    assert await source.items() == []
    again, _ = await purge_all(source, {"generation": 7, "role": "source"})
    assert again == {}
    audit = {"event": "move_out", "generation": 7, "peer": DEST, "counts": deleted, "job": "j-1"}
    for _ in range(2):  # asked again (a mover resumed after a crash): still one record
        got, answer, _ = await source.move(f"/{ACCOUNT}/audit", audit)
        assert (got, answer) == (201, {"event": "move_out", "generation": 7})
    left = [i for i in await _all(source) if ACCOUNT in i["pk"]["S"]]
    assert sorted(i["pk"]["S"] for i in left) == [f"FENCE#{ACCOUNT}"] + [f"MOVED#{ACCOUNT}"] * 2
    (record,) = [i for i in left if i.get("action", {}).get("S") == "move_out"]
    assert {k: int(v["N"]) for k, v in record["counts"]["M"].items()} == deleted


async def test_pages_end_on_other_accounts_items(source: Region, dest: Region) -> None:
    """A Scan page's cursor is the last item it evaluated: in a shared table that is often
    another account's item or a marker, and it must be taken back as a position."""
    await fill(source)
    for _ in range(6):
        got, answer, _ = await source.call(
            "POST", f"{BASE}/profiles", json_body=unique_profile(), account="other"
        )
        assert got == 201, answer
    await steps.fence(source, "frozen", 3, DEST)  # a marker outside the account, too
    mine = {(i["pk"]["S"], i["sk"]["S"]) for i in await source.items()}
    recipient = await steps.public_key(dest)
    seen: set[tuple[str, str]] = set()
    foreign_positions = 0
    for segment in range(2):
        cursor = None
        for _ in range(steps.BOUND_CALLS):
            body = {"segment": segment, "total_segments": 2, "cursor": cursor, "limit": 2}
            page = await source.ok(f"/{ACCOUNT}/export", {**body, "recipient": recipient})
            seen |= {(i["pk"]["S"], i["sk"]["S"]) for i in page["items"]}
            cursor = page["cursor"]
            if cursor is None:
                break
            at = json.loads(base64.urlsafe_b64decode(cursor))
            foreign_positions += not at["pk"].startswith(f"A#{ACCOUNT}#")
    assert seen == mine
    assert foreign_positions > 0  # the case this test is for did happen


async def test_a_purge_cursor_is_checked(source: Region, dest: Region) -> None:
    await fill(source)
    await steps.copy(source, dest, generation=3)

    def b64(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode()

    bad_segment = {"stage": "items", "segments": [None, None, None, b64({"pk": 1, "sk": "D"})]}
    for cursor in (
        "not-base64!",
        b64(bad_segment),
        b64([]),
        b64({"stage": "all", "segments": [None] * 4}),
        b64({"stage": "keys", "segments": [None]}),
        b64({"stage": "keys", "segments": [5, None, None, None]}),
        b64({"stage": "keys", "segments": {"0": None}}),
    ):
        body = {"generation": 3, "role": "destination", "cursor": cursor}
        got, answer, _ = await dest.move(f"/{ACCOUNT}/purge", body)
        assert (got, answer["error"]) == (400, "invalid_cursor"), cursor
    assert len(await dest.items()) == len(await source.items())  # nothing deleted


async def test_abort_purges_the_destination_and_leaves_the_source(
    source: Region, dest: Region
) -> None:
    await fill(source)
    before = sorted(map(str, await source.items()))
    await steps.copy(source, dest, generation=2)
    got, answer, _ = await dest.move(f"/{ACCOUNT}/purge", {"generation": 2, "role": "source"})
    assert (got, answer["error"]) == (409, "wrong_fence_state")
    await purge_all(dest, {"generation": 2, "role": "destination"})
    assert await dest.items() == []
    await steps.fence(source, "none", 2, None)
    assert sorted(map(str, await source.items())) == before
    got, answer, _ = await dest.move(f"/{ACCOUNT}/import", {"items": [], "delete": []})
    assert got == 200  # still incoming until the mover lifts it
    await steps.fence(dest, "none", 2, None)
    got, answer, _ = await dest.move(f"/{ACCOUNT}/import", {"items": [], "delete": []})
    assert (got, answer["error"]) == (409, "not_incoming")


async def test_move_in_is_in_the_destinations_audit_trail(dest: Region) -> None:
    await dest.ok(
        f"/{ACCOUNT}/audit",
        {"event": "move_in", "generation": 3, "peer": SOURCE, "counts": {"profile": 2}, "job": "j"},
    )
    got, body, _ = await dest.call(
        "GET", "/admin/audit", params={"account": ACCOUNT}, roles=frozenset({"unmask"})
    )
    assert got == 200
    [entry] = body["items"]
    assert entry["action"] == "move_in" and entry["entityId"] == "j"


async def _all(region: Region) -> list[dict[str, Any]]:
    return await scan_all(region.ddb, region.table)


async def test_writes_during_the_copy_are_replayed_deletes_too(
    source: Region, dest: Region
) -> None:
    written = await fill(source)
    recipient = await steps.public_key(dest)
    await steps.fence(dest, "incoming", 1, SOURCE)
    checkpoint = (await source.ok(f"/{ACCOUNT}/changes/start"))["checkpoint"]
    await steps.import_all(dest, await steps.export_all(source, recipient))
    # Live writes after the bulk copy: an update, a create, a delete.
    first, second = written["pids"][:2]
    got, _, _ = await source.call("PATCH", f"{BASE}/profiles/{first}", json_body={"x": 1})
    assert got == 200
    late = (await source.create_profile())["id"]
    got, _, _ = await source.call("DELETE", f"{BASE}/profiles/{second}")
    assert got == 204
    await steps.fence(source, "frozen", 1, DEST)
    keys, _ = await steps.changed_keys(source, checkpoint)
    await steps.replay(source, dest, keys, recipient)
    assert (await steps.digests_of(dest)) == (await steps.digests_of(source))
    await steps.fence(source, "moved_out", 1, DEST)
    await steps.fence(dest, "none", 1, None)
    got, body, _ = await dest.call("GET", f"{BASE}/profiles/{first}/unmask", params=REASON)
    assert got == 200 and body[0]["document"]["x"] == 1, body
    got, _, _ = await dest.call("GET", f"{BASE}/profiles/{late}")
    assert got == 200
    got, _, _ = await dest.call("GET", f"{BASE}/profiles/{second}")
    assert got == 404
    assert not [i for i in await dest.items() if f"#P#{second}" in i["pk"]["S"]]


async def test_digests_keys_form_equals_the_scan_for_exactly_those_keys(
    source: Region, dest: Region
) -> None:
    """The mover re-digests only the keys changed since its scan (inside the freeze): the
    keys form must give the scan's digest for each present key, a kind for every asked key
    and the gone keys as missing, and refuse keys of another account."""
    await fill(source)
    scanned, _ = await steps.digests_of(source)
    asked = sorted(scanned)[:40]
    gone = [f"A#{ACCOUNT}#P#no-such-profile", "CUR"]
    keys = [k.split("\0") for k in asked] + [gone]
    page = await source.ok(f"/{ACCOUNT}/digests", {"keys": keys})
    assert page["digests"] == {k: scanned[k] for k in asked}
    assert set(page["kinds"]) == {*asked, "\0".join(gone)}
    assert page["kinds"]["\0".join(gone)] == "profile"
    assert page["missing"] == [gone]
    foreign = [["A#someone-else#P#x", "CUR"]]
    status, body, _ = await source.move(f"/{ACCOUNT}/digests", {"keys": foreign})
    assert (status, body["error"]) == (400, "invalid_key")
    status, body, _ = await source.move(f"/{ACCOUNT}/digests", {"keys": [["x"]] * 1001})
    assert status == 400
