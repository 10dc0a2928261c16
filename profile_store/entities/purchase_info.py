"""A profile's purchase information: at most one per profile (``PI``), with versions (``PIV#``).

A second create is 409 ``already_exists`` (use PATCH); every write checks, in its transaction,
that the profile is alive. A PATCH body is checked as a whole purchase-information document.
"""

from __future__ import annotations

import uuid
from typing import Any

from .. import masking
from ..altkeys import Kind
from ..layout import profile_pk
from .core import Core
from .family import Change, Family, Place, always, merging
from .profiles import Profiles
from .values import Caller, Record, Reveal, conform, require_object

PURCHASE_INFO = Family(
    "purchaseInfo",
    style="expiring",
    missing="purchase information not found",
    masker=always(masking.mask_purchase_info),
    create_lost=(
        "purchase information already exists for this profile; use PATCH",
        "already_exists",
    ),
)


def _place(caller: Caller, pid: str) -> Place:
    return Place(
        profile_pk(caller.account, pid), "PI", "PIV#", subject=pid, eid=pid, profile_id=pid
    )


class PurchaseInfo:
    def __init__(self, core: Core, profiles: Profiles) -> None:
        self.core = core
        self.profiles = profiles

    async def create(self, caller: Caller, ref: str, kind: Kind | None, body: Any) -> Record:
        doc = require_object(body, "purchase information")
        conform("purchase_info", doc)

        async def attempt() -> Record:
            pid = await self.profiles.resolve(caller, ref, kind)
            return await self.core.commit(caller, PURCHASE_INFO, _place(caller, pid), Change(doc))

        return await self.core.create(caller, PURCHASE_INFO, f"create|{uuid.uuid4()}", attempt)

    async def get(
        self, caller: Caller, ref: str, kind: Kind | None, reveal: Reveal | None
    ) -> list[Record]:
        pid = await self.profiles.resolve(caller, ref, kind)
        return await self.core.read(
            caller,
            PURCHASE_INFO,
            _place(caller, pid).lookup(),
            reveal,
            subject=pid,
            audit_as=("purchaseInfo", pid),
        )

    async def update(
        self, caller: Caller, ref: str, kind: Kind | None, body: Any, if_match: str | None
    ) -> Record:
        patch = require_object(body, "purchase information")
        conform("purchase_info", patch)
        pid = await self.profiles.resolve(caller, ref, kind)
        return await self.core.update(
            caller, PURCHASE_INFO, _place(caller, pid), if_match, merging(patch)
        )

    async def delete(self, caller: Caller, ref: str, kind: Kind | None) -> None:
        pid = await self.profiles.resolve(caller, ref, kind)
        await self.core.remove(caller, PURCHASE_INFO, _place(caller, pid))
