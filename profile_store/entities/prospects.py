"""Prospects: shoppers without a profile yet, each a data subject of its own.

All of an account's prospects share one partition (``A#{account}#R``: ``CUR#{id}``,
``VER#{id}#{version}``), each sealed under its own data key (made in its create's transaction,
deleted in its delete's). The email's salted hash is kept as ``emailHash`` so an erasure by
email finds the prospect, and a write with a suppressed email is 409 ``subject_suppressed``.
"""

from __future__ import annotations

import uuid
from typing import Any

from .. import masking
from ..errors import NotFound
from ..layout import Item, prospects_pk, s
from .core import Core
from .family import Change, Family, Lookup, Place, always
from .profiles import alt_hash
from .values import ID, Caller, Record, Reveal, conform, require_object

PROSPECT = Family(
    "prospect",
    style="expiring",
    missing="prospect not found",
    masker=always(masking.mask_prospect),
)


def _place(caller: Caller, rid: str) -> Place:
    if not ID.match(rid):
        raise NotFound("prospect not found")
    return Place(prospects_pk(caller.account), f"CUR#{rid}", f"VER#{rid}#", subject=rid, eid=rid)


class Prospects:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.repo = core.repo

    async def _change(self, caller: Caller, doc: dict[str, Any]) -> Change:
        salt = await self.repo.salt(caller.account, create=True)
        assert salt is not None
        email_hex = alt_hash(salt, "email", doc)
        change = Change(doc, email_hex=email_hex)
        if email_hex:
            change.attrs["emailHash"] = s(email_hex)
        return change

    async def create(self, caller: Caller, body: Any) -> Record:
        doc = require_object(body, "prospect")
        conform("prospect", doc)
        place = _place(caller, str(uuid.uuid4()))

        async def attempt() -> Record:
            change = await self._change(caller, doc)
            change.new_key = await self.core.keys.prepare_new(caller.account, place.subject)
            return await self.core.commit(caller, PROSPECT, place, change)

        return await self.core.create(caller, PROSPECT, f"{place.pk}|{place.current_sk}", attempt)

    async def list_all(self, caller: Caller, reveal: Reveal | None) -> list[Record]:
        lookup = Lookup(prospects_pk(caller.account), prefix="CUR#")
        return await self.core.read(
            caller, PROSPECT, lookup, reveal, subject=None, audit_as=("prospects", "*")
        )

    async def get(self, caller: Caller, rid: str, reveal: Reveal | None) -> Record:
        place = _place(caller, rid)
        [shown] = await self.core.read(
            caller, PROSPECT, place.lookup(), reveal, subject=rid, audit_as=("prospect", rid)
        )
        return shown

    async def update(self, caller: Caller, rid: str, body: Any, if_match: str | None) -> Record:
        patch = require_object(body, "prospect")
        conform("prospect", patch)

        async def revise(item: Item, old_doc: dict[str, Any]) -> Change:
            return await self._change(caller, {**old_doc, **patch})

        return await self.core.update(caller, PROSPECT, _place(caller, rid), if_match, revise)

    async def delete(self, caller: Caller, rid: str) -> None:
        await self.core.remove(caller, PROSPECT, _place(caller, rid), shred=True)
