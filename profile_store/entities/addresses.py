"""A profile's addresses: many per profile, each with its own versions, under the profile's key.

Items ``ADDR#{id}`` (current) and ``ADDRV#{id}#{version}`` in the profile's partition; every
write also checks, in its transaction, that the profile is alive.
"""

from __future__ import annotations

import uuid
from typing import Any

from .. import masking
from ..altkeys import Kind
from ..errors import NotFound
from ..layout import profile_pk
from .core import Core
from .family import Change, Family, Lookup, Place, always, merging
from .profiles import Profiles
from .values import ID, Caller, Record, Reveal, conform, require_object

ADDRESS = Family(
    "address", style="address", missing="address not found", masker=always(masking.mask_address)
)


def _place(caller: Caller, pid: str, aid: str) -> Place:
    return Place(
        profile_pk(caller.account, pid),
        f"ADDR#{aid}",
        f"ADDRV#{aid}#",
        subject=pid,
        eid=aid,
        profile_id=pid,
    )


class Addresses:
    def __init__(self, core: Core, profiles: Profiles) -> None:
        self.core = core
        self.profiles = profiles

    async def create(self, caller: Caller, ref: str, kind: Kind | None, body: Any) -> Record:
        doc = dict(require_object(body, "address"))
        conform("address", doc)
        aid = str(uuid.uuid4())

        async def attempt() -> Record:
            pid = await self.profiles.resolve(caller, ref, kind)
            place = _place(caller, pid, aid)
            return await self.core.commit(caller, ADDRESS, place, Change({**doc, "profileId": pid}))

        return await self.core.create(caller, ADDRESS, f"address|{aid}", attempt)

    async def list_all(
        self, caller: Caller, ref: str, kind: Kind | None, reveal: Reveal | None
    ) -> list[Record]:
        pid = await self.profiles.resolve(caller, ref, kind)
        lookup = Lookup(profile_pk(caller.account, pid), prefix="ADDR#", under_profile=True)
        return await self.core.read(
            caller, ADDRESS, lookup, reveal, subject=pid, audit_as=("addresses", pid)
        )

    async def get(
        self,
        caller: Caller,
        ref: str,
        kind: Kind | None,
        aid: str,
        reveal: Reveal | None,
        vid: str | None = None,
    ) -> Record:
        pid = await self.profiles.resolve(caller, ref, kind)
        if not ID.match(aid) or (vid is not None and not ID.match(vid)):
            raise NotFound("address not found")
        place = _place(caller, pid, aid)
        sk = place.current_sk if vid is None else f"{place.version_prefix}{vid}"
        lookup = Lookup(place.pk, sk, under_profile=True)
        [shown] = await self.core.read(
            caller, ADDRESS, lookup, reveal, subject=pid, audit_as=("address", aid)
        )
        return shown

    async def update(
        self,
        caller: Caller,
        ref: str,
        kind: Kind | None,
        aid: str,
        body: Any,
        if_match: str | None,
    ) -> Record:
        patch = dict(require_object(body, "address"))
        patch.pop("profileId", None)
        conform("address", patch, partial=True)
        pid = await self.profiles.resolve(caller, ref, kind)
        if not ID.match(aid):
            raise NotFound("address not found")
        return await self.core.update(
            caller, ADDRESS, _place(caller, pid, aid), if_match, merging(patch)
        )

    async def delete(self, caller: Caller, ref: str, kind: Kind | None, aid: str) -> None:
        pid = await self.profiles.resolve(caller, ref, kind)
        if not ID.match(aid):
            raise NotFound("address not found")
        await self.core.remove(caller, ADDRESS, _place(caller, pid, aid))
