"""The store's side of an account move: fence, export, import, digests, purge, move audit.

The mover (the operators' ``account move``) drives these through ``handlers.py`` (the
contract between the two sides: ``docs/move_contract.md``). Every operation works on one
account's items, the keys under the contract's ``data_prefix(account)``, found by a parallel
Scan (``scan.py``: segments run by the mover, or all at once for a purge). Nothing here goes
through the fence: import and purge check the fence state they need instead, and write with
``Repository.transfer_batch_write``.

Data keys never leave this process in clear nor under this region's provider: an export
unwraps each with this region's ``KeyProvider`` and wraps it for the recipient's transfer key
(``key_pair.py``); an import unwraps with this region's transfer private key and wraps with
this region's provider (``KeyContext`` of this region). Documents travel as ciphertext, marked
with the region they were sealed in (``crypto.SEALED_IN_ATTRIBUTE``); ``items.py`` is their
JSON form, kind and digest.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from residency_contract.tables import data_prefix, moved_pk, moved_sk

from ..audit import AuditEvent, audit_item
from ..crypto import (
    DOC_ATTRIBUTE,
    SEALED_IN_ATTRIBUTE,
    CryptoError,
    DataKeyStore,
    EnvelopeCodec,
)
from ..errors import (
    BadRequest,
    ConditionFailed,
    MalformedItem,
    NotIncoming,
    StaleGeneration,
    TransferItemError,
    TransferKeyUnavailable,
    WrongFenceState,
)
from ..fence import Fence, FenceCache, FenceState, fence_key
from ..key_providers import KeyConfigError, KeyContext, KeyServiceUnavailable
from ..layout import Item, key, n, s
from ..repository import Repository
from .items import (
    REGION_BOUND,
    TRANSFER_KID,
    TRANSFER_WRAPPED,
    data_key_digest,
    data_key_subject,
    digest_key,
    doc_subject,
    from_json,
    key_of,
    kind_of,
    parse_key,
    plain_digest,
    sealed_digest,
    to_json,
)
from .key_pair import Recipient, TransferKeyPair
from .scan import Page, Segment, Sweep, scan_page, sweep_page


class Transfer:
    def __init__(
        self,
        repo: Repository,
        keys: DataKeyStore,
        fences: FenceCache,
        *,
        region: str,
        key_pair: Callable[[], TransferKeyPair],
    ) -> None:
        self.repo = repo
        self.keys = keys
        self.codec = EnvelopeCodec(keys)
        self.fences = fences
        self.region = region
        self._load_key_pair = key_pair
        self._key_pair: TransferKeyPair | None = None
        self._key_lock = asyncio.Lock()

    async def key_pair(self) -> TransferKeyPair:
        """The region's transfer key pair, loaded (a dev one generated) on first use: a store
        that never takes part in a move never spends the RSA key generation."""
        async with self._key_lock:
            if self._key_pair is None:
                try:
                    self._key_pair = await asyncio.to_thread(self._load_key_pair)
                except KeyConfigError as exc:
                    raise TransferKeyUnavailable(str(exc)) from None
            return self._key_pair

    # ---- fence --------------------------------------------------------------------------------

    async def set_fence(
        self, account: str, state: str, generation: int, peer: str | None
    ) -> dict[str, Any]:
        """Put (or, for "none", delete) the marker, unless it carries a higher generation."""
        condition = "attribute_not_exists(pk) OR generation <= :g"
        values = {":g": n(generation)}
        try:
            if state == "none":
                await self.repo.call(
                    "delete_item",
                    TableName=self.repo.table,
                    Key=fence_key(account),
                    ConditionExpression=condition,
                    ExpressionAttributeValues=values,
                )
            else:
                item = {
                    **fence_key(account),
                    "state": s(state),
                    "generation": n(generation),
                    "peer": s(peer or ""),
                    "account": s(account),
                    "updatedAt": s(_now()),
                }
                await self.repo.call(
                    "put_item",
                    TableName=self.repo.table,
                    Item=item,
                    ConditionExpression=condition,
                    ExpressionAttributeValues=values,
                )
        except ConditionFailed:
            raise StaleGeneration(
                "the fence carries a higher generation than this request's"
            ) from None
        finally:
            self.fences.forget(account)
        return {"state": state, "generation": generation}

    async def require(self, account: str, state: FenceState, generation: int | None) -> Fence:
        fence = await self.repo.read_fence(account)
        if (
            fence is None
            or fence.state is not state
            or (generation is not None and fence.generation != generation)
        ):
            raise (NotIncoming if state is FenceState.INCOMING else WrongFenceState)(
                f"this needs the account's fence in state {state.value}"
                + ("" if generation is None else f" with generation {generation}")
            )
        return fence

    async def scan_page(self, account: str, at: Segment) -> Page:
        return await scan_page(self.repo, data_prefix(account), at)

    # ---- export -------------------------------------------------------------------------------

    async def export_item(self, account: str, item: Item, recipient: Recipient) -> Item:
        await asyncio.sleep(0)  # as in _digest: a page must not hold the instance's loop
        pk, sk = key_of(item)
        subject = data_key_subject(account, pk, sk)
        if subject is not None:
            plaintext = await self._unwrap_here(account, subject, item)
            moved = {k: v for k, v in item.items() if k not in REGION_BOUND}
            moved[TRANSFER_WRAPPED] = {
                "B": recipient.wrap(plaintext, account=account, subject=subject)
            }
            moved[TRANSFER_KID] = s(recipient.kid)
            return to_json(moved)  # type: ignore[no-any-return]
        if DOC_ATTRIBUTE in item and SEALED_IN_ATTRIBUTE not in item:
            item = {**item, SEALED_IN_ATTRIBUTE: s(self.region)}
        return to_json(item)  # type: ignore[no-any-return]

    async def _unwrap_here(self, account: str, subject: str, item: Item) -> bytes:
        provider = self.keys.provider
        try:
            wrapped = bytes(item["wrapped"]["B"])
            key_id = str(item["keyId"]["S"])
            name = str(item["provider"]["S"])
        except (KeyError, TypeError):
            raise TransferItemError("a data-key item of the account is malformed") from None
        if name != provider.name:
            raise TransferItemError("a data-key item was wrapped by another provider")
        ctx = KeyContext(region=self.region, account=account, subject=subject)
        return await provider.unwrap_data_key(wrapped, ctx, key_id=key_id)

    async def export(
        self, account: str, page: Page, recipient: Recipient
    ) -> tuple[list[Item], dict[str, int]]:
        items = [await self.export_item(account, i, recipient) for i in page.items]
        return items, _counts(account, page.items)

    async def export_keys(
        self, account: str, keys: list[tuple[str, str]], recipient: Recipient
    ) -> tuple[list[Item], list[list[str]]]:
        items: list[Item] = []
        missing: list[list[str]] = []
        async for pk, sk, item in self._current(keys):
            if item is None:
                missing.append([pk, sk])
            else:
                items.append(await self.export_item(account, item, recipient))
        return items, missing

    async def _current(
        self, keys: list[tuple[str, str]]
    ) -> AsyncIterator[tuple[str, str, Item | None]]:
        """Each key with its item as stored now (consistent reads, 100 keys a call), ``None``
        for a key that is gone."""
        for start in range(0, len(keys), 100):
            chunk = keys[start : start + 100]
            found = await self.repo.get_many([key(pk, sk) for pk, sk in chunk])
            for (pk, sk), item in zip(chunk, found, strict=True):
                yield pk, sk, item

    # ---- import -------------------------------------------------------------------------------

    async def import_items(
        self, account: str, raw_items: list[Any], raw_deletes: list[Any]
    ) -> dict[str, int]:
        """Validate everything (and re-wrap every data key) first, then write: a bad body
        stores nothing."""
        await self.require(account, FenceState.INCOMING, None)
        try:
            items = [from_json(raw, account) for raw in raw_items]
            deletes = [parse_key(raw, account) for raw in raw_deletes]
        except MalformedItem as exc:
            raise BadRequest(str(exc), code="invalid_item") from None
        keys = [key_of(i) for i in items]
        if len(set(keys)) != len(keys) or len(set(deletes)) != len(deletes):
            raise BadRequest("a key appears twice in one import", code="invalid_item")
        if set(keys) & set(deletes):
            raise BadRequest("a key is both written and deleted", code="invalid_item")
        stored = [await self._import_item(account, item) for item in items]
        requests = [{"PutRequest": {"Item": item}} for item in stored]
        requests += [{"DeleteRequest": {"Key": key(pk, sk)}} for pk, sk in deletes]
        await self.repo.transfer_batch_write(requests)
        for pk, sk in [*keys, *deletes]:
            subject = data_key_subject(account, pk, sk)
            if subject is not None:
                self.keys.forget(account, subject)
        return {"written": len(stored), "deleted": len(deletes)}

    async def _import_item(self, account: str, item: Item) -> Item:
        await asyncio.sleep(0)  # as in _digest (a data key costs an RSA decryption here)
        pk, sk = key_of(item)
        subject = data_key_subject(account, pk, sk)
        if subject is None:
            if any(name in item for name in REGION_BOUND):
                raise BadRequest("only data-key items carry key material", code="invalid_item")
            return item
        try:
            wrapped = bytes(item[TRANSFER_WRAPPED]["B"])
            kid = str(item[TRANSFER_KID]["S"])
        except (KeyError, TypeError):
            raise BadRequest(
                "a data-key item must carry transferWrapped (B) and transferKid (S)",
                code="invalid_item",
            ) from None
        pair = await self.key_pair()
        if kid != pair.kid:
            raise BadRequest(
                "a data key was wrapped for another transfer key", code="invalid_transfer_key"
            )
        try:
            plaintext = pair.unwrap(wrapped, account=account, subject=subject)
        except CryptoError:
            raise BadRequest(
                "a transfer-wrapped data key does not unwrap here", code="invalid_transfer_key"
            ) from None
        ctx = KeyContext(region=self.region, account=account, subject=subject)
        provider = self.keys.provider
        rewrapped = await provider.wrap_data_key(plaintext, ctx)
        kept = {k: v for k, v in item.items() if k not in REGION_BOUND}
        return {
            **kept,
            "wrapped": {"B": rewrapped},
            "provider": s(provider.name),
            "keyId": s(provider.key_id),
        }

    # ---- digests ------------------------------------------------------------------------------

    async def digests(self, account: str, page: Page) -> tuple[dict[str, str], dict[str, int]]:
        out: dict[str, str] = {}
        for item in page.items:
            pk, sk = key_of(item)
            out[digest_key(pk, sk)] = await self._digest(account, pk, sk, item)
        return out, _counts(account, page.items)

    async def digests_of(
        self, account: str, keys: list[tuple[str, str]]
    ) -> tuple[dict[str, str], dict[str, str], list[list[str]]]:
        """The digests' keys form: the current digest of each present key (consistent reads,
        the same digest as a scan's), the kind of every asked key (a function of the key),
        and the keys that are gone. The mover re-digests only what changed since its scan."""
        found: dict[str, str] = {}
        missing: list[list[str]] = []
        async for pk, sk, item in self._current(keys):
            if item is None:
                missing.append([pk, sk])
            else:
                found[digest_key(pk, sk)] = await self._digest(account, pk, sk, item)
        kinds = {digest_key(pk, sk): kind_of(account, pk, sk) for pk, sk in keys}
        return found, kinds, missing

    async def _digest(self, account: str, pk: str, sk: str, item: Item) -> str:
        # A page is up to 1000 decryptions with cached keys, which never wait: yield per item
        # so the instance's live requests and health probes are not held behind the page.
        await asyncio.sleep(0)
        subject = data_key_subject(account, pk, sk)
        if subject is not None:
            return data_key_digest(subject)
        if DOC_ATTRIBUTE not in item:
            return plain_digest(item)
        owner = doc_subject(account, pk, item)
        doc = None
        if owner is not None:
            try:
                doc = await self.codec.open(
                    account=account, subject_id=owner, entity_id=sk, item=item
                )
            except KeyServiceUnavailable:
                raise
            except CryptoError:
                doc = None  # erased subject or foreign ciphertext: compared by ciphertext
        return sealed_digest(item, doc)

    # ---- purge --------------------------------------------------------------------------------

    async def purge(
        self, account: str, *, generation: int, role: str, cursor: str | None, limit: int
    ) -> tuple[dict[str, int], str | None]:
        """One bounded step of the account's purge: crypto-shred (every data key first, in
        every segment), then delete every other item. Returns what this step deleted and the
        cursor of the next step (``None``: nothing of the account is left). The fence marker
        is outside the account's prefix and stays."""
        sweep = Sweep.decode(cursor)
        if role == "source":
            await self.require(account, FenceState.MOVED_OUT, generation)
        else:
            await self.require(account, FenceState.INCOMING, None)
        deleted: Counter[str] = Counter()

        async def delete(items: list[Item]) -> None:
            keys = [key_of(i) for i in items]
            await self.repo.transfer_batch_write(
                [{"DeleteRequest": {"Key": key(pk, sk)}} for pk, sk in keys]
            )
            for pk, sk in keys:
                deleted[kind_of(account, pk, sk)] += 1
                subject = data_key_subject(account, pk, sk)
                if subject is not None:
                    self.keys.evict(account, subject)

        following = await sweep_page(self.repo, account, sweep, delete, limit=limit)
        self.repo.forget_account(account)
        return dict(deleted), None if following is None else following.encode()

    # ---- audit --------------------------------------------------------------------------------

    async def audit(
        self,
        account: str,
        *,
        event: str,
        generation: int,
        peer: str,
        counts: dict[str, int],
        job: str,
        principal: str,
        request_id: str,
    ) -> None:
        """``move_in`` goes to the account's audit trail; ``move_out`` and ``move_aborted`` to
        ``MOVED#{account}``, which a purge of the account keeps."""
        record = AuditEvent(
            principal=principal,
            account=account,
            entity_type="account",
            entity_id=job,
            action=event,
            reason=f"account move generation {generation} peer {peer}",
            request_id=request_id,
        )
        item = audit_item(record, pk=None if event == "move_in" else moved_pk(account))
        item["generation"] = n(generation)
        item["peer"] = s(peer)
        item["counts"] = {"M": {k: n(v) for k, v in sorted(counts.items())}}
        item["moveId"] = s(str(uuid.uuid4()))
        # One record per job and event: a mover that crashed after this call and before
        # saving its job asks again, and the marker (outside the account, like the fence)
        # makes the repeat a no-op.
        marker = {**key(moved_pk(account), moved_sk(job, event)), "time": s(_now())}
        try:
            await self.repo.transfer_transact(
                [
                    {"Put": {"Item": marker, "ConditionExpression": "attribute_not_exists(pk)"}},
                    {"Put": {"Item": item}},
                ]
            )
        except ConditionFailed as exc:
            if exc.indexes != (0,) or exc.contention:
                raise


def _counts(account: str, items: list[Item]) -> dict[str, int]:
    return dict(Counter(kind_of(account, *key_of(i)) for i in items))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
